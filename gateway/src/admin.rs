//! Offline administration: operations on the store that run without a gateway
//! (`syspush-gateway app add`).
//!
//! They open the store directly; redb's file lock makes them fail with
//! [`StoreError::Locked`] while a gateway runs on the same data dir, instead of
//! two processes writing one file.

use crate::config::Config;
use crate::ids::{self, RandomError};
use crate::store::{AppRecord, CLASSES, Store, StoreError};
use crate::store_redb::RedbStore;

/// Longest accepted app id.
pub const MAX_APP_ID_LEN: usize = 255;

/// Errors of admin operations.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The app id is empty, too long, or has whitespace/control characters.
    #[error("invalid app id {0:?}: 1-255 characters, no whitespace or control characters")]
    InvalidAppId(String),
    /// An unknown message class was named.
    #[error("unknown class {0:?} (expected one of: system, important, operational)")]
    UnknownClass(String),
    /// The store failed or is in use.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The RNG failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Creates the app `app_id` (or replaces it, retiring its previous key) and
/// returns its new API key. Only the key's SHA-256 is stored.
///
/// `allowed_classes` names the classes the app may send besides "operational",
/// which every app may send: e.g. `["system", "important"]`.
pub fn add_app(
    config: &Config,
    app_id: &str,
    allowed_classes: &[String],
) -> Result<String, AdminError> {
    validate_app_id(app_id)?;
    let mut classes: Vec<String> = Vec::new();
    for class in allowed_classes {
        let class = class.trim();
        if !CLASSES.contains(&class) {
            return Err(AdminError::UnknownClass(class.to_owned()));
        }
        if !classes.iter().any(|c| c == class) {
            classes.push(class.to_owned());
        }
    }
    let store = RedbStore::open(&config.store_path())?;
    let key = ids::new_secret()?;
    let replaced = store.app(app_id)?.is_some();
    store.put_app(&AppRecord {
        app_id: app_id.to_owned(),
        key_hash: ids::hash_secret(&key),
        allowed_classes: classes.clone(),
    })?;
    tracing::info!(app_id, ?classes, replaced, "app added");
    Ok(key)
}

/// Checks an app id: printable, no whitespace, bounded.
pub fn validate_app_id(app_id: &str) -> Result<(), AdminError> {
    let ok = !app_id.is_empty()
        && app_id.len() <= MAX_APP_ID_LEN
        && !app_id.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(AdminError::InvalidAppId(app_id.to_owned()))
    }
}

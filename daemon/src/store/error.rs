//! The store's error type, and the one conversion every table access uses.

use std::path::PathBuf;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or file could not be prepared.
    #[error("state {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process (a second syspushd?) holds the store.
    #[error("store {0} is in use by another process")]
    Locked(PathBuf),
    /// The database failed.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// The database could not be reopened after an I/O failure (disk still
    /// full?); the next call tries again.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// An ack named a message of an app the caller may not act for.
    #[error("not allowed to ack messages of app {0:?}")]
    PermissionDenied(String),
}

impl StoreError {
    /// An I/O failure (disk full?) or a store that could not be reopened
    /// after one: the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Db(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }
}

pub(super) fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

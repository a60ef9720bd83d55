//! The tables of the store file and the small helpers that more than one part
//! of the store uses inside a transaction. A leaf: every other store module
//! reads its tables from here, so the file's layout is in one place.

use redb::{ReadableTable, TableDefinition};

use super::error::{StoreError, dberr};
use crate::settings::Settings;

pub(super) const META_U64: TableDefinition<&str, u64> = TableDefinition::new("meta_u64");
pub(super) const META_STR: TableDefinition<&str, &str> = TableDefinition::new("meta_str");
pub(super) const INBOX: TableDefinition<(&str, u64), (u64, &str, &[u8])> =
    TableDefinition::new("inbox");
pub(super) const BY_ID: TableDefinition<&str, (&str, u64)> = TableDefinition::new("by_id");
pub(super) const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
pub(super) const SEEN_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("seen_expiry");
pub(super) const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");

pub(super) const SETTINGS: TableDefinition<(&str, &str), (bool, bool, bool, u8)> =
    TableDefinition::new("settings");
pub(super) const REVOKED: TableDefinition<&str, &str> = TableDefinition::new("revoked");
pub(super) const COLLAPSE: TableDefinition<(&str, &str), u64> = TableDefinition::new("collapse");

pub(super) const NETWORKS: TableDefinition<&str, (u64, u64, u64)> =
    TableDefinition::new("networks");

pub(super) const LAST_COMMITTED_SEQ: &str = "last_committed_seq";
pub(super) const NEXT_ARRIVAL: &str = "next_arrival";
pub(super) const DEVICE_ID: &str = "device_id";
pub(super) const DEVICE_SECRET: &str = "device_secret";

/// How long an id without expiry is remembered for de-duplication: the
/// gateway's maximum ttl (28 days), past which it cannot resend it.
pub(super) const SEEN_WITHOUT_EXPIRY_MS: u64 = 2_419_200 * 1000;

pub(super) const DROPS_PREFIX: &str = "drops.";

/// Adds `n` to the drop counter of `reason` inside a write transaction.
pub(super) fn add_drop(
    meta: &mut redb::Table<'_, &'static str, u64>,
    reason: &str,
    n: u64,
) -> Result<(), StoreError> {
    if n == 0 {
        return Ok(());
    }
    let key = format!("{DROPS_PREFIX}{reason}");
    let old = meta
        .get(key.as_str())
        .map_err(dberr)?
        .map_or(0, |v| v.value());
    meta.insert(key.as_str(), old.saturating_add(n))
        .map_err(dberr)?;
    Ok(())
}

/// The app-wide and channel settings for a message, read in any transaction.
pub(super) fn lookup(
    t: &impl ReadableTable<(&'static str, &'static str), (bool, bool, bool, u8)>,
    app_id: &str,
    channel_id: &str,
) -> Result<(Settings, Settings), StoreError> {
    let get = |ch: &str| -> Result<Settings, StoreError> {
        Ok(t.get((app_id, ch))
            .map_err(dberr)?
            .map_or_else(Settings::default, |v| Settings::unpack(v.value())))
    };
    let app = get("")?;
    let channel = if channel_id.is_empty() {
        Settings::default()
    } else {
        get(channel_id)?
    };
    Ok((app, channel))
}

/// Removes every pending message of `app_id` (inbox and id index) inside
/// `txn`; returns how many. Shared by logout and forced logout, which differ
/// only in what else they record.
pub(super) fn purge_inbox(txn: &redb::WriteTransaction, app_id: &str) -> Result<u64, StoreError> {
    let mut inbox = txn.open_table(INBOX).map_err(dberr)?;
    let mut by_id = txn.open_table(BY_ID).map_err(dberr)?;
    let ids: Vec<String> = inbox
        .extract_from_if((app_id, 0)..=(app_id, u64::MAX), |_, _| true)
        .map_err(dberr)?
        .map(|r| r.map(|(_, v)| v.value().1.to_string()))
        .collect::<Result<_, _>>()
        .map_err(dberr)?;
    for id in &ids {
        by_id.remove(id.as_str()).map_err(dberr)?;
    }
    Ok(ids.len() as u64)
}

/// Creates every table, so readers never meet a missing one.
pub(super) fn create_all(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META_U64).map_err(dberr)?;
    txn.open_table(META_STR).map_err(dberr)?;
    txn.open_table(INBOX).map_err(dberr)?;
    txn.open_table(BY_ID).map_err(dberr)?;
    txn.open_table(SEEN).map_err(dberr)?;
    txn.open_table(SEEN_EXPIRY).map_err(dberr)?;
    txn.open_table(TOKENS).map_err(dberr)?;
    txn.open_table(NETWORKS).map_err(dberr)?;
    txn.open_table(SETTINGS).map_err(dberr)?;
    txn.open_table(REVOKED).map_err(dberr)?;
    txn.open_table(COLLAPSE).map_err(dberr)?;
    Ok(())
}

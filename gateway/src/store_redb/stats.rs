//! The "why did it not arrive" side of the redb store: drop counters per
//! (device, app, reason), per-app pending counts, and revocations a device
//! has not been told about yet (it was offline when the app server revoked).
//!
//! Kept out of `store_redb/mod.rs` so that file stays about the queue itself.
//! Functions on the open [`Database`], called by the `Store` impl.

use redb::{Database, ReadableDatabase, ReadableTable};

use super::tables::{DROPS, QUEUE, REVOCATIONS, decode_notification};
use crate::store::StoreError;

/// Adds `n` to a drop counter inside an open write transaction.
pub(super) fn add_drop(
    txn: &redb::WriteTransaction,
    device_id: &str,
    app_id: &str,
    reason: &str,
    n: u64,
) -> Result<(), StoreError> {
    if n == 0 {
        return Ok(());
    }
    let mut drops = txn.open_table(DROPS)?;
    let key = (device_id, app_id, reason);
    let old = drops.get(key)?.map(|g| g.value()).unwrap_or(0);
    drops.insert(key, old.saturating_add(n))?;
    Ok(())
}

pub(super) fn count_drop(
    db: &Database,
    device_id: &str,
    app_id: &str,
    reason: &str,
    n: u64,
) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    add_drop(&txn, device_id, app_id, reason, n)?;
    txn.commit()?;
    Ok(())
}

pub(super) fn drops(
    db: &Database,
    device_id: &str,
    app_id: &str,
) -> Result<Vec<(String, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let drops = txn.open_table(DROPS)?;
    let mut out = Vec::new();
    for entry in drops.range((device_id, app_id, "")..(device_id, app_id, "\u{10FFFF}"))? {
        let (k, v) = entry?;
        out.push((k.value().2.to_owned(), v.value()));
    }
    Ok(out)
}

pub(super) fn pending_for(db: &Database, device_id: &str, app_id: &str) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let queue = txn.open_table(QUEUE)?;
    let mut n = 0;
    // The queue is keyed by device, not app: decode to tell apps apart.
    // This answers a diagnostic request, not the send path.
    for entry in queue.range((device_id, 0)..=(device_id, u64::MAX))? {
        let (_, v) = entry?;
        if decode_notification(v.value())?.app_id == app_id {
            n += 1;
        }
    }
    Ok(n)
}

pub(super) fn add_revocation(
    db: &Database,
    device_id: &str,
    app_id: &str,
    token: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(REVOCATIONS)?
        .insert((device_id, token), (app_id, reason))?;
    txn.commit()?;
    Ok(())
}

pub(super) fn revocations(
    db: &Database,
    device_id: &str,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let txn = db.begin_read()?;
    let t = txn.open_table(REVOCATIONS)?;
    let mut out = Vec::new();
    for entry in t.range((device_id, "")..(device_id, "\u{10FFFF}"))? {
        let (k, v) = entry?;
        let (app_id, reason) = v.value();
        out.push((app_id.to_owned(), k.value().1.to_owned(), reason.to_owned()));
    }
    Ok(out)
}

pub(super) fn clear_revocation(
    db: &Database,
    device_id: &str,
    token: &str,
) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(REVOCATIONS)?.remove((device_id, token))?;
    txn.commit()?;
    Ok(())
}

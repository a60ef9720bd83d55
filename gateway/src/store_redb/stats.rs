//! The "why did it not arrive" side of the redb store: drop counters per
//! (device, app, reason), per-app pending counts, and revocations a device
//! has not been told about yet (it was offline when the app server revoked).
//!
//! Counters are exact whenever they are read: a queued message already past
//! its expiry counts as `expired` (not `pending`) even before a read of the
//! queue deletes it, so no periodic sweep is needed.
//!
//! Kept out of `store_redb/mod.rs` so that file stays about the queue itself.
//! Functions on the open [`Database`] or an open write transaction, called by
//! the `Store` impl.

use redb::{Database, ReadableDatabase, ReadableTable};

use super::tables::{DROPS, QUEUE, REVOCATIONS, decode_notification};
use crate::store::{StoreError, is_expired};

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

pub(super) fn drops(
    db: &Database,
    device_id: &str,
    app_id: &str,
    now_ms: u64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let txn = db.begin_read()?;
    let drops = txn.open_table(DROPS)?;
    let mut out = Vec::new();
    for entry in drops.range((device_id, app_id, "")..(device_id, app_id, "\u{10FFFF}"))? {
        let (k, v) = entry?;
        out.push((k.value().2.to_owned(), v.value()));
    }
    let (_, unswept) = scan_queue(&txn, device_id, app_id, now_ms)?;
    if unswept > 0 {
        match out.iter_mut().find(|(reason, _)| reason == "expired") {
            Some((_, n)) => *n = n.saturating_add(unswept),
            None => out.push(("expired".to_owned(), unswept)),
        }
    }
    Ok(out)
}

pub(super) fn pending_for(
    db: &Database,
    device_id: &str,
    app_id: &str,
    now_ms: u64,
) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    Ok(scan_queue(&txn, device_id, app_id, now_ms)?.0)
}

/// (unexpired, expired) messages of one app in a device's queue at `now_ms`.
fn scan_queue(
    txn: &redb::ReadTransaction,
    device_id: &str,
    app_id: &str,
    now_ms: u64,
) -> Result<(u64, u64), StoreError> {
    let queue = txn.open_table(QUEUE)?;
    let (mut pending, mut expired) = (0, 0);
    // The queue is keyed by device, not app: decode to tell apps apart.
    // This answers a diagnostic request, not the send path.
    for entry in queue.range((device_id, 0)..=(device_id, u64::MAX))? {
        let (_, v) = entry?;
        let n = decode_notification(v.value())?;
        if n.app_id != app_id {
            continue;
        }
        if is_expired(&n, now_ms) {
            expired += 1;
        } else {
            pending += 1;
        }
    }
    Ok((pending, expired))
}

/// Remembers a revocation for the device inside an open write transaction.
pub(super) fn record_revocation(
    txn: &redb::WriteTransaction,
    device_id: &str,
    app_id: &str,
    token: &str,
    reason: &str,
) -> Result<(), StoreError> {
    txn.open_table(REVOCATIONS)?
        .insert((device_id, token), (app_id, reason))?;
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

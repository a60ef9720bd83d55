//! The send path of the redb store: one write transaction that answers a
//! retried idempotency key, counts a message expired on arrival, takes the
//! daily quota, and appends the message together with its key. A crash leaves
//! all of it or none (no quota spent on nothing, no key without its message,
//! no message without its key), and a send costs one fsync.

use prost::Message;
use redb::{ReadableTable, WriteTransaction};
use syspush_proto::common::Notification;

use super::stats;
use super::tables::{COLLAPSE, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, LAST_SEQ, QUEUE, QUOTA};
use crate::store::{
    DailyQuota, Enqueued, IDEMPOTENCY_WINDOW_MS, IdempotencyKey, StoreError, Submit, Submitted,
};

/// Most expired idempotency keys one write prunes: a send's cost stays
/// bounded, and a backlog (after a quiet day) drains over the next sends.
const PRUNE_BATCH: usize = 64;

/// [`crate::store::Store::submit`] inside an open write transaction.
pub(super) fn submit(
    txn: &WriteTransaction,
    device_id: &str,
    n: &Notification,
    how: &Submit,
) -> Result<Submitted, StoreError> {
    let now_ms = n.sent_at_ms;
    prune_keys(txn, now_ms)?;
    let earlier = match &how.idempotency {
        Some(key) => lookup(txn, &n.app_id, key, now_ms)?,
        None => None,
    };
    if let Some(earlier) = earlier {
        return Ok(earlier);
    }
    let outcome = if how.expired_on_arrival {
        stats::add_drop(txn, device_id, &n.app_id, "expired", 1)?;
        Submitted::Expired
    } else {
        let over_quota = match how.quota {
            Some(quota) => !take_quota(txn, &n.app_id, device_id, quota)?,
            None => false,
        };
        if over_quota {
            // Refused, not created: the key stays free for a later retry.
            stats::add_drop(txn, device_id, &n.app_id, "quota", 1)?;
            return Ok(Submitted::OverQuota);
        }
        Submitted::Queued(append(txn, device_id, n)?)
    };
    if let Some(key) = &how.idempotency {
        let expired = outcome == Submitted::Expired;
        let record = (
            now_ms,
            n.message_id.as_str(),
            key.fingerprint.as_slice(),
            expired,
        );
        let app_key = (n.app_id.as_str(), key.key.as_str());
        txn.open_table(IDEMPOTENCY)?.insert(app_key, record)?;
        txn.open_table(IDEMPOTENCY_EXPIRY)?
            .insert((now_ms, app_key.0, app_key.1), ())?;
    }
    Ok(outcome)
}

/// What an earlier use of `key` by `app_id` within the window answers; a
/// stale entry is deleted (the key is free again) and answers nothing.
fn lookup(
    txn: &WriteTransaction,
    app_id: &str,
    key: &IdempotencyKey,
    now_ms: u64,
) -> Result<Option<Submitted>, StoreError> {
    let mut table = txn.open_table(IDEMPOTENCY)?;
    let found = table.get((app_id, key.key.as_str()))?.map(|g| {
        let (created_ms, message_id, fingerprint, expired) = g.value();
        let same = fingerprint == key.fingerprint.as_slice();
        (created_ms, message_id.to_owned(), same, expired)
    });
    let Some((created_ms, message_id, same, expired)) = found else {
        return Ok(None);
    };
    if created_ms.saturating_add(IDEMPOTENCY_WINDOW_MS) > now_ms {
        return Ok(Some(if same {
            Submitted::Replayed {
                message_id,
                expired,
            }
        } else {
            Submitted::KeyReused
        }));
    }
    table.remove((app_id, key.key.as_str()))?;
    txn.open_table(IDEMPOTENCY_EXPIRY)?
        .remove((created_ms, app_id, key.key.as_str()))?;
    Ok(None)
}

/// Forgets up to [`PRUNE_BATCH`] keys older than the window, oldest first.
fn prune_keys(txn: &WriteTransaction, now_ms: u64) -> Result<(), StoreError> {
    let Some(cutoff) = now_ms.checked_sub(IDEMPOTENCY_WINDOW_MS) else {
        return Ok(());
    };
    let mut by_age = txn.open_table(IDEMPOTENCY_EXPIRY)?;
    let mut stale = Vec::new();
    for entry in by_age.range(..(cutoff + 1, "", ""))?.take(PRUNE_BATCH) {
        let (k, _) = entry?;
        let (created_ms, app_id, key) = k.value();
        stale.push((created_ms, app_id.to_owned(), key.to_owned()));
    }
    if stale.is_empty() {
        return Ok(());
    }
    let mut keys = txn.open_table(IDEMPOTENCY)?;
    for (created_ms, app_id, key) in &stale {
        by_age.remove((*created_ms, app_id.as_str(), key.as_str()))?;
        keys.remove((app_id.as_str(), key.as_str()))?;
    }
    Ok(())
}

/// Takes one unit of `app_id`'s quota on `device_id`; `false` (nothing
/// taken) when the day's limit is reached. Earlier days are forgotten.
fn take_quota(
    txn: &WriteTransaction,
    app_id: &str,
    device_id: &str,
    quota: DailyQuota,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(QUOTA)?;
    table.retain_in(
        (app_id, device_id, 0)..(app_id, device_id, quota.day),
        |_, _| false,
    )?;
    let key = (app_id, device_id, quota.day);
    let used = table.get(key)?.map(|g| g.value()).unwrap_or(0);
    if used >= quota.limit {
        return Ok(false);
    }
    table.insert(key, used + 1)?;
    Ok(true)
}

/// Appends `n` to the device's queue under the next seq; a non-empty
/// collapse key replaces the pending message of the same app and key
/// (counted `collapsed`).
pub(super) fn append(
    txn: &WriteTransaction,
    device_id: &str,
    n: &Notification,
) -> Result<Enqueued, StoreError> {
    let mut last = txn.open_table(LAST_SEQ)?;
    let seq = last.get(device_id)?.map(|g| g.value()).unwrap_or(0) + 1;
    last.insert(device_id, seq)?;
    let mut queue = txn.open_table(QUEUE)?;
    let mut replaced = None;
    if !n.collapse_key.is_empty() {
        let mut collapse = txn.open_table(COLLAPSE)?;
        let key = (device_id, n.app_id.as_str(), n.collapse_key.as_str());
        let old = collapse.insert(key, seq)?.map(|g| g.value());
        if let Some(old) = old {
            replaced = queue.remove((device_id, old))?.map(|_| old);
        }
        if replaced.is_some() {
            stats::add_drop(txn, device_id, &n.app_id, "collapsed", 1)?;
        }
    }
    queue.insert((device_id, seq), n.encode_to_vec().as_slice())?;
    Ok(Enqueued { seq, replaced })
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::store::{Store, StoreError};
    use crate::store_redb::RedbStore;

    fn keyed(key: &str) -> Submit {
        Submit {
            idempotency: Some(IdempotencyKey {
                key: key.into(),
                fingerprint: [0; 32],
            }),
            ..Submit::default()
        }
    }

    fn keys(store: &RedbStore) -> Result<(u64, u64), StoreError> {
        let txn = store.db.begin_write()?;
        let n = (
            txn.open_table(IDEMPOTENCY)?.len()?,
            txn.open_table(IDEMPOTENCY_EXPIRY)?.len()?,
        );
        txn.abort()?;
        Ok(n)
    }

    #[test]
    fn keys_past_the_window_are_pruned_by_later_writes() -> Result<(), StoreError> {
        let dir = tempfile::tempdir()?;
        let store = RedbStore::open(&dir.path().join("gw.redb"))?;
        let n = |id: &str, at: u64| Notification {
            message_id: id.into(),
            app_id: "a".into(),
            sent_at_ms: at,
            ..Notification::default()
        };
        for i in 0..(PRUNE_BATCH as u64 + 1) {
            store.submit("dev", &n("m", 1 + i), &keyed(&format!("k{i}")))?;
        }
        assert_eq!(
            keys(&store)?,
            (PRUNE_BATCH as u64 + 1, PRUNE_BATCH as u64 + 1)
        );
        // A day later any write prunes a bounded batch, oldest first...
        let later = 2 + PRUNE_BATCH as u64 + IDEMPOTENCY_WINDOW_MS;
        store.submit("dev", &n("x", later), &Submit::default())?;
        assert_eq!(keys(&store)?, (1, 1));
        // ...and the next one the rest.
        store.submit("dev", &n("y", later), &Submit::default())?;
        assert_eq!(keys(&store)?, (0, 0));
        Ok(())
    }
}

//! [`Store`] on redb, the embedded engine of a single-process gateway.
//!
//! Owns the table layout. Every mutating call is one write transaction committed
//! with redb's default (immediate, fsync'd) durability before it returns, which
//! is what lets the HTTP API answer 200 only for messages that survive a crash.
//! Records that need more than one field are JSON; notifications are stored as
//! their protobuf encoding so the link can send them without re-encoding rules.
//!
//! The table layout and record decoding are in `tables`, the send path (quota,
//! idempotency keys, append) in `submit`, the diagnostic counters and pending
//! revocations in `stats`; this file is the rest of the queue and the token
//! lifecycle.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};
use syspush_proto::common::Notification;

use crate::store::{
    AppRecord, Batch, SecretHash, Store, StoreError, Submit, Submitted, TokenRecord, TokenState,
    is_expired,
};

mod stats;
mod submit;
mod tables;

use tables::{
    APP_KEYS, APPS, COLLAPSE, DEVICES, DROPS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, LAST_SEQ,
    LIVE_TOKENS, QUEUE, QUOTA, REVOCATIONS, TOKENS, corrupt, decode_hash, decode_notification,
};

/// The redb-backed store.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (creating if needed) the database at `path`, creating its parent
    /// directory. Fails with [`StoreError::Locked`] if another process has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::create(path)?;
        // Create every table up front so read transactions never see a missing one.
        let txn = db.begin_write()?;
        txn.open_table(DEVICES)?;
        txn.open_table(APPS)?;
        txn.open_table(APP_KEYS)?;
        txn.open_table(TOKENS)?;
        txn.open_table(LIVE_TOKENS)?;
        txn.open_table(QUEUE)?;
        txn.open_table(LAST_SEQ)?;
        txn.open_table(COLLAPSE)?;
        txn.open_table(QUOTA)?;
        txn.open_table(DROPS)?;
        txn.open_table(REVOCATIONS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(IDEMPOTENCY_EXPIRY)?;
        txn.commit()?;
        Ok(Self { db })
    }

    /// Appends a message with no quota and no key (what the unit tests need).
    #[cfg(test)]
    pub(crate) fn enqueue(
        &self,
        device_id: &str,
        n: &Notification,
    ) -> Result<crate::store::Enqueued, StoreError> {
        let txn = self.db.begin_write()?;
        let enqueued = submit::append(&txn, device_id, n)?;
        txn.commit()?;
        Ok(enqueued)
    }

    /// Marks `token` revoked and removes it as the live token of (device, app)
    /// if it is that.
    fn mark_revoked(
        txn: &redb::WriteTransaction,
        device_id: &str,
        app_id: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let rec = TokenRecord {
            device_id: device_id.to_owned(),
            app_id: app_id.to_owned(),
            state: TokenState::Revoked,
        };
        let json = serde_json::to_vec(&rec).map_err(|e| corrupt("tokens", e))?;
        txn.open_table(TOKENS)?.insert(token, json.as_slice())?;
        let mut live = txn.open_table(LIVE_TOKENS)?;
        let is_live = live
            .get((device_id, app_id))?
            .is_some_and(|g| g.value() == token);
        if is_live {
            live.remove((device_id, app_id))?;
        }
        Ok(())
    }

    /// Deletes a device's queued messages for one app, and the app's collapse keys.
    fn drop_app_messages(
        txn: &redb::WriteTransaction,
        device_id: &str,
        app_id: &str,
    ) -> Result<u64, StoreError> {
        let mut doomed = Vec::new();
        {
            let queue = txn.open_table(QUEUE)?;
            for entry in queue.range((device_id, 0)..=(device_id, u64::MAX))? {
                let (k, v) = entry?;
                if decode_notification(v.value())?.app_id == app_id {
                    doomed.push(k.value().1);
                }
            }
        }
        Self::delete_seqs(txn, device_id, &doomed)?;
        // Forget the app's collapse keys so the index does not grow with dead
        // registrations. (A key starting with U+10FFFF escapes this range; such
        // a straggler only points at a deleted seq, which is harmless.)
        let mut collapse = txn.open_table(COLLAPSE)?;
        collapse.retain_in(
            (device_id, app_id, "")..(device_id, app_id, "\u{10FFFF}"),
            |_, _| false,
        )?;
        let n = doomed.len() as u64;
        stats::add_drop(txn, device_id, app_id, "revoked", n)?;
        Ok(n)
    }

    /// Deletes queued seqs of a device inside an open write transaction.
    fn delete_seqs(
        txn: &redb::WriteTransaction,
        device_id: &str,
        seqs: &[u64],
    ) -> Result<(), StoreError> {
        let mut queue = txn.open_table(QUEUE)?;
        for &seq in seqs {
            queue.remove((device_id, seq))?;
        }
        Ok(())
    }
}

impl Store for RedbStore {
    fn create_device(&self, device_id: &str, secret_hash: &SecretHash) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(DEVICES)?
            .insert(device_id, secret_hash.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn device_secret_hash(&self, device_id: &str) -> Result<Option<SecretHash>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let found = table.get(device_id)?;
        found.map(|g| decode_hash("devices", g.value())).transpose()
    }

    fn put_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        let json = serde_json::to_vec(app).map_err(|e| corrupt("apps", e))?;
        let txn = self.db.begin_write()?;
        {
            let mut apps = txn.open_table(APPS)?;
            let mut keys = txn.open_table(APP_KEYS)?;
            // Replacing an app retires its old key.
            let old = apps
                .insert(app.app_id.as_str(), json.as_slice())?
                .map(|g| g.value().to_vec());
            if let Some(old) = old {
                let old: AppRecord =
                    serde_json::from_slice(&old).map_err(|e| corrupt("apps", e))?;
                keys.remove(old.key_hash.as_slice())?;
            }
            keys.insert(app.key_hash.as_slice(), app.app_id.as_str())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn app(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(APPS)?;
        let found = table.get(app_id)?;
        found
            .map(|g| serde_json::from_slice(g.value()).map_err(|e| corrupt("apps", e)))
            .transpose()
    }

    fn app_by_key_hash(&self, key_hash: &SecretHash) -> Result<Option<AppRecord>, StoreError> {
        let app_id = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(APP_KEYS)?;
            let found = table.get(key_hash.as_slice())?;
            match found {
                Some(g) => g.value().to_owned(),
                None => return Ok(None),
            }
        };
        self.app(&app_id)
    }

    fn register_token(
        &self,
        device_id: &str,
        app_id: &str,
        candidate: &str,
    ) -> Result<String, StoreError> {
        let txn = self.db.begin_write()?;
        let token = {
            let mut live = txn.open_table(LIVE_TOKENS)?;
            let existing = live.get((device_id, app_id))?.map(|g| g.value().to_owned());
            match existing {
                Some(t) => t,
                None => {
                    let rec = TokenRecord {
                        device_id: device_id.to_owned(),
                        app_id: app_id.to_owned(),
                        state: TokenState::Live,
                    };
                    let json = serde_json::to_vec(&rec).map_err(|e| corrupt("tokens", e))?;
                    txn.open_table(TOKENS)?.insert(candidate, json.as_slice())?;
                    live.insert((device_id, app_id), candidate)?;
                    candidate.to_owned()
                }
            }
        };
        txn.commit()?;
        Ok(token)
    }

    fn revoke_token(&self, device_id: &str, app_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_write()?;
        let token = txn
            .open_table(LIVE_TOKENS)?
            .get((device_id, app_id))?
            .map(|g| g.value().to_owned());
        if let Some(token) = &token {
            Self::mark_revoked(&txn, device_id, app_id, token)?;
        }
        // Drop the app's queued messages whether or not a token was live: a
        // message cannot outlive the registration it was sent to.
        Self::drop_app_messages(&txn, device_id, app_id)?;
        txn.commit()?;
        Ok(token)
    }

    fn revoke_exact(&self, token: &str, reason: &str) -> Result<Option<TokenRecord>, StoreError> {
        let txn = self.db.begin_write()?;
        let record = txn
            .open_table(TOKENS)?
            .get(token)?
            .map(|g| serde_json::from_slice::<TokenRecord>(g.value()))
            .transpose()
            .map_err(|e| corrupt("tokens", e))?;
        let Some(record) = record.filter(|r| r.state == TokenState::Live) else {
            txn.abort()?;
            return Ok(None);
        };
        let (device_id, app_id) = (record.device_id.as_str(), record.app_id.as_str());
        Self::mark_revoked(&txn, device_id, app_id, token)?;
        Self::drop_app_messages(&txn, device_id, app_id)?;
        stats::record_revocation(&txn, device_id, app_id, token, reason)?;
        txn.commit()?;
        Ok(Some(record))
    }

    fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        let found = table.get(token)?;
        found
            .map(|g| serde_json::from_slice(g.value()).map_err(|e| corrupt("tokens", e)))
            .transpose()
    }

    fn submit(
        &self,
        device_id: &str,
        notification: &Notification,
        how: &Submit,
    ) -> Result<Submitted, StoreError> {
        let txn = self.db.begin_write()?;
        let outcome = submit::submit(&txn, device_id, notification, how)?;
        if matches!(outcome, Submitted::Replayed { .. } | Submitted::KeyReused) {
            // Nothing changed but maybe a pruned key: not worth an fsync.
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(outcome)
    }

    fn read_after(
        &self,
        device_id: &str,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        let mut expired = Vec::new();
        if after < u64::MAX {
            let txn = self.db.begin_read()?;
            let queue = txn.open_table(QUEUE)?;
            for entry in queue.range((device_id, after + 1)..=(device_id, u64::MAX))? {
                if batch.messages.len() >= limit {
                    batch.more = true;
                    break;
                }
                let (k, v) = entry?;
                let seq = k.value().1;
                let n = decode_notification(v.value())?;
                if is_expired(&n, now_ms) {
                    expired.push((seq, n.app_id));
                } else {
                    batch.messages.push((seq, n));
                }
            }
        }
        if !expired.is_empty() {
            tracing::debug!(
                device_id,
                count = expired.len(),
                "dropping expired messages"
            );
            let txn = self.db.begin_write()?;
            let seqs: Vec<u64> = expired.iter().map(|(seq, _)| *seq).collect();
            Self::delete_seqs(&txn, device_id, &seqs)?;
            for (_, app_id) in &expired {
                stats::add_drop(&txn, device_id, app_id, "expired", 1)?;
            }
            txn.commit()?;
        }
        Ok(batch)
    }

    fn ack(&self, device_id: &str, seq: u64) -> Result<usize, StoreError> {
        if seq == 0 {
            return Ok(0);
        }
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        {
            let mut queue = txn.open_table(QUEUE)?;
            for entry in queue.extract_from_if((device_id, 0)..=(device_id, seq), |_, _| true)? {
                entry?;
                removed += 1;
            }
        }
        if removed == 0 {
            // Nothing changed: skip the commit (and its fsync).
            txn.abort()?;
        } else {
            txn.commit()?;
        }
        Ok(removed)
    }

    fn last_seq(&self, device_id: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LAST_SEQ)?;
        Ok(table.get(device_id)?.map(|g| g.value()).unwrap_or(0))
    }

    fn drops(
        &self,
        device_id: &str,
        app_id: &str,
        now_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        stats::drops(&self.db, device_id, app_id, now_ms)
    }

    fn pending_for(&self, device_id: &str, app_id: &str, now_ms: u64) -> Result<u64, StoreError> {
        stats::pending_for(&self.db, device_id, app_id, now_ms)
    }

    fn quota_used(&self, app_id: &str, device_id: &str, day: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let quota = txn.open_table(QUOTA)?;
        Ok(quota
            .get((app_id, device_id, day))?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    fn revocations(&self, device_id: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        stats::revocations(&self.db, device_id)
    }

    fn clear_revocation(&self, device_id: &str, token: &str) -> Result<(), StoreError> {
        stats::clear_revocation(&self.db, device_id, token)
    }

    fn queue_len(&self, device_id: &str) -> Result<usize, StoreError> {
        let txn = self.db.begin_read()?;
        let queue = txn.open_table(QUEUE)?;
        let mut n = 0;
        for entry in queue.range((device_id, 0)..=(device_id, u64::MAX))? {
            entry?;
            n += 1;
        }
        Ok(n)
    }
}

//! The inbox proper: committing a batch of deliveries with the resume point,
//! listing an app's pending messages, acks, and logout's purge.

use prost::Message;
use redb::ReadableTable;
use syspush_proto::common::Notification;

use super::db::Store;
use super::error::{StoreError, dberr};
use super::schema::*;

/// A message as stored, with its arrival position in the app's inbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Arrival number: increases per commit across all apps.
    pub arrival: u64,
    /// The message.
    pub notification: Notification,
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Newly stored messages: (app id, arrival).
    pub stored: Vec<(String, u64)>,
    /// Dropped as already seen.
    pub duplicates: usize,
    /// Dropped as already expired on arrival.
    pub expired: usize,
    /// Pending messages replaced by a newer one with the same collapse key.
    pub collapsed: usize,
    /// Stored, but the device's settings hide them (counted "disabled").
    pub disabled: usize,
    /// Arrivals of `disable_push` messages: delivered, but never wake the app.
    pub silent: Vec<u64>,
    /// The committed resume point.
    pub last_committed_seq: u64,
}
impl Store {
    /// Highest sequence committed (0 if none).
    pub fn last_committed_seq(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META_U64).map_err(dberr)?;
        Ok(t.get(LAST_COMMITTED_SEQ)
            .map_err(dberr)?
            .map(|v| v.value())
            .unwrap_or(0))
    }
    /// Commits a batch of deliveries and the new resume point in one
    /// transaction. Duplicates (by message id) and messages already expired
    /// (`expires_at_ms < now_ms`) are dropped, but their seqs still count.
    pub fn commit(
        &self,
        batch: &[(u64, Option<Notification>)],
        now_ms: u64,
    ) -> Result<CommitOutcome, StoreError> {
        let mut out = CommitOutcome::default();
        let txn = self.write()?;
        {
            let mut meta = txn.open_table(META_U64).map_err(dberr)?;
            let mut inbox = txn.open_table(INBOX).map_err(dberr)?;
            let mut by_id = txn.open_table(BY_ID).map_err(dberr)?;
            let mut seen = txn.open_table(SEEN).map_err(dberr)?;
            let mut seen_exp = txn.open_table(SEEN_EXPIRY).map_err(dberr)?;
            let mut collapse = txn.open_table(COLLAPSE).map_err(dberr)?;
            let settings = txn.open_table(SETTINGS).map_err(dberr)?;
            let mut last = meta
                .get(LAST_COMMITTED_SEQ)
                .map_err(dberr)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut next = meta
                .get(NEXT_ARRIVAL)
                .map_err(dberr)?
                .map(|v| v.value())
                .unwrap_or(1);

            // Forget ids whose remembrance period is over.
            let old: Vec<(u64, String)> = seen_exp
                .range::<(u64, &str)>(..(now_ms, ""))
                .map_err(dberr)?
                .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_string())))
                .collect::<Result<_, _>>()
                .map_err(dberr)?;
            for (at, id) in &old {
                seen_exp.remove((*at, id.as_str())).map_err(dberr)?;
                seen.remove(id.as_str()).map_err(dberr)?;
            }

            for (seq, n) in batch {
                last = last.max(*seq);
                let Some(n) = n else { continue };
                let mut n = n.clone();
                if n.message_id.is_empty() {
                    // The gateway always sets one; without it the message could
                    // be neither acked nor de-duplicated, so give it a stable one.
                    n.message_id = format!("seq-{seq}");
                }
                if seen.get(n.message_id.as_str()).map_err(dberr)?.is_some() {
                    out.duplicates += 1;
                    continue;
                }
                if n.expires_at_ms != 0 && n.expires_at_ms < now_ms {
                    out.expired += 1;
                    continue;
                }
                let keep_until = if n.expires_at_ms != 0 {
                    n.expires_at_ms
                } else {
                    now_ms
                        .max(n.sent_at_ms)
                        .saturating_add(SEEN_WITHOUT_EXPIRY_MS)
                };
                let arrival = next;
                next += 1;
                let bytes = n.encode_to_vec();
                inbox
                    .insert(
                        (n.app_id.as_str(), arrival),
                        (n.expires_at_ms, n.message_id.as_str(), bytes.as_slice()),
                    )
                    .map_err(dberr)?;
                by_id
                    .insert(n.message_id.as_str(), (n.app_id.as_str(), arrival))
                    .map_err(dberr)?;
                seen.insert(n.message_id.as_str(), keep_until)
                    .map_err(dberr)?;
                seen_exp
                    .insert((keep_until, n.message_id.as_str()), ())
                    .map_err(dberr)?;
                out.stored.push((n.app_id.clone(), arrival));
                if n.disable_push {
                    out.silent.push(arrival);
                }
                let (app_s, ch_s) = lookup(&settings, &n.app_id, &n.channel_id)?;
                if crate::display::decide(&n, &app_s, &ch_s).hidden_by_settings {
                    out.disabled += 1;
                }
                // A newer message with the same key replaces the pending older one.
                if !n.collapse_key.is_empty() {
                    let old = collapse
                        .insert((n.app_id.as_str(), n.collapse_key.as_str()), arrival)
                        .map_err(dberr)?
                        .map(|v| v.value());
                    let gone = match old {
                        Some(old) => inbox
                            .remove((n.app_id.as_str(), old))
                            .map_err(dberr)?
                            .map(|v| v.value().1.to_string()),
                        None => None,
                    };
                    if let Some(old_id) = gone {
                        by_id.remove(old_id.as_str()).map_err(dberr)?;
                        out.collapsed += 1;
                    }
                }
            }
            add_drop(&mut meta, "expired", out.expired as u64)?;
            add_drop(&mut meta, "collapsed", out.collapsed as u64)?;
            add_drop(&mut meta, "disabled", out.disabled as u64)?;
            meta.insert(LAST_COMMITTED_SEQ, last).map_err(dberr)?;
            meta.insert(NEXT_ARRIVAL, next).map_err(dberr)?;
            out.last_committed_seq = last;
        }
        self.finish(txn.commit())?;
        Ok(out)
    }

    /// Up to `limit` of `app_id`'s messages with arrival > `after`, oldest
    /// first. Expired ones are deleted on the way (lazy expiry).
    pub fn list(
        &self,
        app_id: &str,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut out = Vec::new();
        let mut expired = Vec::new();
        {
            let txn = self.read()?;
            let inbox = txn.open_table(INBOX).map_err(dberr)?;
            let start = after.saturating_add(1);
            for entry in inbox
                .range((app_id, start)..=(app_id, u64::MAX))
                .map_err(dberr)?
            {
                let (k, v) = entry.map_err(dberr)?;
                let (_, arrival) = k.value();
                let (expires, id, bytes) = v.value();
                if expires != 0 && expires < now_ms {
                    expired.push((arrival, id.to_string()));
                    continue;
                }
                let notification = Notification::decode(bytes)
                    .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
                out.push(Stored {
                    arrival,
                    notification,
                });
                if out.len() >= limit {
                    break;
                }
            }
        }
        if !expired.is_empty() {
            let txn = self.write()?;
            {
                let mut inbox = txn.open_table(INBOX).map_err(dberr)?;
                let mut by_id = txn.open_table(BY_ID).map_err(dberr)?;
                for (arrival, id) in &expired {
                    inbox.remove((app_id, *arrival)).map_err(dberr)?;
                    by_id.remove(id.as_str()).map_err(dberr)?;
                }
                let mut meta = txn.open_table(META_U64).map_err(dberr)?;
                add_drop(&mut meta, "expired", expired.len() as u64)?;
            }
            self.finish(txn.commit())?;
            tracing::debug!(app_id, count = expired.len(), "dropped expired messages");
        }
        Ok(out)
    }

    /// How many unexpired messages wait for `app_id`.
    pub fn pending_count(&self, app_id: &str, now_ms: u64) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let inbox = txn.open_table(INBOX).map_err(dberr)?;
        let mut n = 0;
        for entry in inbox
            .range((app_id, 0)..=(app_id, u64::MAX))
            .map_err(dberr)?
        {
            let (_, v) = entry.map_err(dberr)?;
            let (expires, _, _) = v.value();
            if expires == 0 || expires >= now_ms {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The app a pending message belongs to.
    pub fn app_of(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(BY_ID).map_err(dberr)?;
        Ok(t.get(message_id)
            .map_err(dberr)?
            .map(|v| v.value().0.to_string()))
    }

    /// Deletes acked messages; returns how many were pending. If any id
    /// belongs to an app `may_act` refuses, nothing is deleted.
    pub fn ack(
        &self,
        message_ids: &[String],
        may_act: impl Fn(&str) -> bool,
    ) -> Result<u32, StoreError> {
        let txn = self.write()?;
        let mut removed = 0;
        {
            let mut inbox = txn.open_table(INBOX).map_err(dberr)?;
            let mut by_id = txn.open_table(BY_ID).map_err(dberr)?;
            for id in message_ids {
                let Some((app, arrival)) = by_id
                    .get(id.as_str())
                    .map_err(dberr)?
                    .map(|v| (v.value().0.to_string(), v.value().1))
                else {
                    continue;
                };
                if !may_act(&app) {
                    // Dropping the transaction aborts it: all or nothing.
                    return Err(StoreError::PermissionDenied(app));
                }
                by_id.remove(id.as_str()).map_err(dberr)?;
                if inbox
                    .remove((app.as_str(), arrival))
                    .map_err(dberr)?
                    .is_some()
                {
                    removed += 1;
                }
            }
        }
        self.finish(txn.commit())?;
        Ok(removed)
    }
    /// Drops an app's pending messages and token (after unregister). The
    /// dropped messages count as `revoked`, as for a forced logout: logout is
    /// the app revoking its own token.
    pub fn drop_app(&self, app_id: &str) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let n = purge_inbox(&txn, app_id)?;
        txn.open_table(TOKENS)
            .map_err(dberr)?
            .remove(app_id)
            .map_err(dberr)?;
        add_drop(&mut txn.open_table(META_U64).map_err(dberr)?, "revoked", n)?;
        self.finish(txn.commit())?;
        Ok(n)
    }
}

//! The durable inbox: one redb file, `state_dir/syspushd.redb` (0600, dir 0700).
//!
//! What it holds, and why each table exists:
//! - `meta_u64` / `meta_str`: `last_committed_seq` (the resume point sent in
//!   ClientHello), the arrival counter, and enrolled credentials;
//! - `inbox`: `(app_id, arrival)` -> `(expires_at_ms, message_id, encoded
//!   Notification)`, so an app's messages list in arrival order with one range
//!   scan and expiry is checked without decoding;
//! - `by_id`: message id -> `(app_id, arrival)`, for acks;
//! - `seen` + `seen_expiry`: ids already accepted, kept past the app's ack so a
//!   redelivery is still recognised; pruned by expiry inside each commit (a
//!   range scan over the expiry index, not a table walk);
//! - `tokens`: app id -> push token;
//! - `networks`: what the heartbeat learned per network ([`networks`]);
//! - settings, pending revocations, collapse keys and drop counters ([`extras`]).
//!
//! A batch of deliveries and the new `last_committed_seq` go in ONE write
//! transaction: either the gateway may forget them (we ack after this returns)
//! or the next ClientHello asks for them again. Calls are synchronous and short
//! (one fsync per commit); the daemon calls them inline.
//!
//! The database handle is swappable ([`handle`]): after an I/O error (disk
//! full) redb refuses the open handle until the file is reopened, so the store
//! reopens it on the next use, serving reads again and committing once space
//! returns.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{ReadableTable, TableDefinition};
use syspush_proto::common::Notification;

const META_U64: TableDefinition<&str, u64> = TableDefinition::new("meta_u64");
const META_STR: TableDefinition<&str, &str> = TableDefinition::new("meta_str");
const INBOX: TableDefinition<(&str, u64), (u64, &str, &[u8])> = TableDefinition::new("inbox");
const BY_ID: TableDefinition<&str, (&str, u64)> = TableDefinition::new("by_id");
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
const SEEN_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("seen_expiry");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");

pub mod extras;
mod handle;
pub mod networks;
use extras::{COLLAPSE, REVOKED, SETTINGS, add_drop};

const LAST_COMMITTED_SEQ: &str = "last_committed_seq";
const NEXT_ARRIVAL: &str = "next_arrival";
const DEVICE_ID: &str = "device_id";
const DEVICE_SECRET: &str = "device_secret";

/// How long an id without expiry is remembered for de-duplication: the
/// gateway's maximum ttl (28 days), past which it cannot resend it.
const SEEN_WITHOUT_EXPIRY_MS: u64 = 2_419_200 * 1000;

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

fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// Removes every pending message of `app_id` (inbox and id index) inside
/// `txn`; returns how many. Shared by logout and forced logout, which differ
/// only in what else they record.
pub(crate) fn purge_inbox(txn: &redb::WriteTransaction, app_id: &str) -> Result<u64, StoreError> {
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

/// The store. Cheap to share behind an `Arc`; redb serialises writers.
#[derive(Debug)]
pub struct Store {
    handle: handle::Handle,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `dir/syspushd.redb` with private permissions.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        } else if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "state directory is accessible to other users; expected 0700");
        }
        let path = dir.join("syspushd.redb");
        // Create the file ourselves so it is born 0600 (redb would use the umask).
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(|source| {
            StoreError::Io {
                path: path.clone(),
                source,
            }
        })?;
        let db = handle::open_db(&path)?;
        let txn = db.begin_write().map_err(dberr)?;
        {
            txn.open_table(META_U64).map_err(dberr)?;
            txn.open_table(META_STR).map_err(dberr)?;
            txn.open_table(INBOX).map_err(dberr)?;
            txn.open_table(BY_ID).map_err(dberr)?;
            txn.open_table(SEEN).map_err(dberr)?;
            txn.open_table(SEEN_EXPIRY).map_err(dberr)?;
            txn.open_table(TOKENS).map_err(dberr)?;
            txn.open_table(networks::NETWORKS).map_err(dberr)?;
            txn.open_table(SETTINGS).map_err(dberr)?;
            txn.open_table(REVOKED).map_err(dberr)?;
            txn.open_table(COLLAPSE).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)?;
        Ok(Self {
            handle: handle::Handle::new(db),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Highest sequence committed (0 if none).
    pub fn last_committed_seq(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META_U64).map_err(dberr)?;
        Ok(t.get(LAST_COMMITTED_SEQ)
            .map_err(dberr)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Stored credentials (device id, secret).
    pub fn credentials(&self) -> Result<Option<(String, String)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(META_STR).map_err(dberr)?;
        let id = t
            .get(DEVICE_ID)
            .map_err(dberr)?
            .map(|v| v.value().to_string());
        let secret = t
            .get(DEVICE_SECRET)
            .map_err(dberr)?
            .map(|v| v.value().to_string());
        Ok(id.zip(secret))
    }

    /// Stores enrolled credentials. A new identity means a new sequence space,
    /// so the resume point starts over.
    pub fn set_credentials(&self, device_id: &str, secret: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut t = txn.open_table(META_STR).map_err(dberr)?;
            t.insert(DEVICE_ID, device_id).map_err(dberr)?;
            t.insert(DEVICE_SECRET, secret).map_err(dberr)?;
            let mut m = txn.open_table(META_U64).map_err(dberr)?;
            m.insert(LAST_COMMITTED_SEQ, 0).map_err(dberr)?;
        }
        self.finish(txn.commit())
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
                let (app_s, ch_s) = extras::lookup(&settings, &n.app_id, &n.channel_id)?;
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

    /// Drops an app's pending messages and token (after unregister).
    pub fn drop_app(&self, app_id: &str) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let n = purge_inbox(&txn, app_id)?;
        txn.open_table(TOKENS)
            .map_err(dberr)?
            .remove(app_id)
            .map_err(dberr)?;
        self.finish(txn.commit())?;
        Ok(n)
    }

    /// Stores an app's token.
    pub fn set_token(&self, app_id: &str, token: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(TOKENS)
            .map_err(dberr)?
            .insert(app_id, token)
            .map_err(dberr)?;
        self.finish(txn.commit())
    }

    /// Removes an app's token if it is `token` (or any, with `None`).
    pub fn remove_token(&self, app_id: &str, token: Option<&str>) -> Result<bool, StoreError> {
        let txn = self.write()?;
        let removed = {
            let mut t = txn.open_table(TOKENS).map_err(dberr)?;
            let current = t.get(app_id).map_err(dberr)?.map(|v| v.value().to_string());
            match (current, token) {
                (Some(cur), Some(want)) if cur != want => false,
                (Some(_), _) => {
                    t.remove(app_id).map_err(dberr)?;
                    true
                }
                (None, _) => false,
            }
        };
        self.finish(txn.commit())?;
        Ok(removed)
    }

    /// An app's token.
    pub fn token(&self, app_id: &str) -> Result<Option<String>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(TOKENS).map_err(dberr)?;
        Ok(t.get(app_id).map_err(dberr)?.map(|v| v.value().to_string()))
    }

    /// Every app id with a token or pending messages, sorted.
    pub fn known_apps(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.read()?;
        let mut apps = std::collections::BTreeSet::new();
        let tokens = txn.open_table(TOKENS).map_err(dberr)?;
        for entry in tokens.iter().map_err(dberr)? {
            apps.insert(entry.map_err(dberr)?.0.value().to_string());
        }
        // Skip-scan the inbox: one lookup per app, not one per message.
        let inbox = txn.open_table(INBOX).map_err(dberr)?;
        let mut next = inbox
            .first()
            .map_err(dberr)?
            .map(|(k, _)| k.value().0.to_string());
        while let Some(app) = next {
            next = inbox
                .range::<(&str, u64)>((
                    std::ops::Bound::Excluded((app.as_str(), u64::MAX)),
                    std::ops::Bound::Unbounded,
                ))
                .map_err(dberr)?
                .next()
                .transpose()
                .map_err(dberr)?
                .map(|(k, _)| k.value().0.to_string());
            apps.insert(app);
        }
        Ok(apps.into_iter().collect())
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

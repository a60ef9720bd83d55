//! The gateway's durable state, behind the [`Store`] trait.
//!
//! Owns the data model — devices and their credential hashes, apps with their
//! API-key hashes and allowed classes, tokens, and the per-device message queue —
//! but no storage engine: implementations live next to it (redb for a single
//! process, see the crate docs), and a clustered backend (Redis, NATS
//! JetStream) implements the same trait without touching the protocol or the
//! HTTP API. This module depends on none of them.
//!
//! Every method is synchronous and may block on disk I/O (a commit is an fsync);
//! async callers run them on tokio's blocking pool so runtime threads never stall.

use std::sync::Arc;

use syspush_proto::common::Notification;

pub use crate::ids::SecretHash;

/// Errors of a store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database (redb takes a file lock).
    #[error("the store is in use by another process (is a gateway running on this data_dir?)")]
    Locked,
    /// The storage engine failed.
    #[error("storage engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored record does not decode: the database is corrupt or from another version.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// What failed.
        detail: String,
    },
    /// Creating the data directory failed.
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task running a store call panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Message classes, from the least to the most privileged.
pub const CLASSES: [&str; 3] = ["operational", "important", "system"];

/// An app that may send through the gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppRecord {
    /// The app id (e.g. `com.example.chat`).
    pub app_id: String,
    /// SHA-256 of its API key.
    pub key_hash: SecretHash,
    /// Classes it may send (names from [`CLASSES`]); "operational" is always allowed.
    pub allowed_classes: Vec<String>,
}

impl AppRecord {
    /// Whether the app may send messages of class `class` (a name from [`CLASSES`]).
    pub fn allows(&self, class: &str) -> bool {
        class == "operational" || self.allowed_classes.iter().any(|c| c == class)
    }
}

/// Whether a token still routes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Sends are accepted.
    Live,
    /// Unregistered (logout) or revoked: sends answer 404.
    Revoked,
}

/// What a token points at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// The device holding the token.
    pub device_id: String,
    /// The app it was issued for.
    pub app_id: String,
    /// Live or revoked.
    pub state: TokenState,
}

/// One batch read from a device's queue by [`Store::read_after`].
#[derive(Debug, Default)]
pub struct Batch {
    /// Unexpired messages in seq order.
    pub messages: Vec<(u64, Notification)>,
    /// Whether the queue may hold more after the last returned message.
    pub more: bool,
}

/// The result of [`Store::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The per-device sequence assigned to the message.
    pub seq: u64,
    /// Seq of a pending message with the same collapse key that this one replaced.
    pub replaced: Option<u64>,
}

/// How long an idempotency key is remembered: a retry within this window
/// answers the first message id; after it, the key is free again.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// An app server's `Idempotency-Key` on a send, scoped to the sending app
/// (the notification's `app_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as the app server sent it.
    pub key: String,
    /// SHA-256 of the request it came with (token and message), so a retry
    /// (the same request) can be told from a reuse (another request).
    pub fingerprint: SecretHash,
}

/// One unit of an app's daily quota on a device, to take with a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyQuota {
    /// UTC day number (unix ms / 86 400 000).
    pub day: u64,
    /// Units allowed that day.
    pub limit: u64,
}

/// What [`Store::submit`] decides and records about a message, in one commit.
#[derive(Debug, Clone, Default)]
pub struct Submit {
    /// Take one unit of this quota; past it the message is refused and counted
    /// as a `quota` drop. Per app and device: one noisy app cannot exhaust
    /// another device's allowance, and a device is protected from one app's spam.
    pub quota: Option<DailyQuota>,
    /// Remember the send under this key for [`IDEMPOTENCY_WINDOW_MS`].
    pub idempotency: Option<IdempotencyKey>,
    /// ttl 0 and the device offline: count the message `expired` instead of
    /// queueing it ("now or never" met "not now").
    pub expired_on_arrival: bool,
}

/// The outcome of [`Store::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Appended to the device's queue.
    Queued(Enqueued),
    /// Counted as expired on arrival; nothing queued.
    Expired,
    /// Over the daily quota: counted as a `quota` drop; nothing queued and the
    /// key (if any) not remembered, so a retry on another day can succeed.
    OverQuota,
    /// The key was used before for the same request: nothing was created.
    Replayed {
        /// The message id the first request was given.
        message_id: String,
        /// Whether that first message expired on arrival.
        expired: bool,
    },
    /// The key was used before (within the window) for another request.
    KeyReused,
}

/// Durable gateway state. See the module doc.
pub trait Store: Send + Sync + 'static {
    /// Creates a device with its secret hash. Fails only on engine errors; ids are
    /// random, so a collision is not expected (an existing id is overwritten).
    fn create_device(&self, device_id: &str, secret_hash: &SecretHash) -> Result<(), StoreError>;

    /// The secret hash of a device, `None` if unknown.
    fn device_secret_hash(&self, device_id: &str) -> Result<Option<SecretHash>, StoreError>;

    /// Creates or replaces an app. Replacing invalidates its previous key.
    fn put_app(&self, app: &AppRecord) -> Result<(), StoreError>;

    /// Looks an app up by id.
    fn app(&self, app_id: &str) -> Result<Option<AppRecord>, StoreError>;

    /// Looks an app up by the hash of its API key.
    fn app_by_key_hash(&self, key_hash: &SecretHash) -> Result<Option<AppRecord>, StoreError>;

    /// Returns the live token of (device, app) if there is one; otherwise stores
    /// `candidate` as the live token and returns it. Idempotent register.
    fn register_token(
        &self,
        device_id: &str,
        app_id: &str,
        candidate: &str,
    ) -> Result<String, StoreError>;

    /// Revokes the live token of (device, app), if any, and drops the device's
    /// queued messages for that app. Returns the revoked token.
    fn revoke_token(&self, device_id: &str, app_id: &str) -> Result<Option<String>, StoreError>;

    /// Revokes exactly `token` if it is live (forced logout by the app server),
    /// drops the device's queued messages for its app (counted `revoked`) and
    /// remembers the revocation for the device (see [`Store::revocations`]),
    /// all in one commit, so a crash cannot revoke without telling the
    /// device. Returns the record as it was, `None` if the token is unknown or
    /// already revoked.
    fn revoke_exact(&self, token: &str, reason: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// What a token points at (live or revoked), `None` if never issued.
    fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Durably decides a send in one commit: answers a retry of an
    /// idempotency key, or counts an expired-on-arrival message, or takes the
    /// quota, and appends the message to the device's queue under the next
    /// sequence number (stored as is), remembering its key with it. A
    /// non-empty `collapse_key` replaces a pending message of the same app
    /// with the same key. `notification.sent_at_ms` is "now" for the key window.
    fn submit(
        &self,
        device_id: &str,
        notification: &Notification,
        how: &Submit,
    ) -> Result<Submitted, StoreError>;

    /// Up to `limit` unexpired messages with seq > `after`, in order. Messages
    /// that [`is_expired`] at `now_ms` are deleted instead of returned.
    fn read_after(
        &self,
        device_id: &str,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Batch, StoreError>;

    /// Deletes every queued message of the device with seq <= `seq` (cumulative ack).
    /// Returns how many were deleted.
    fn ack(&self, device_id: &str, seq: u64) -> Result<usize, StoreError>;

    /// The highest sequence ever assigned to the device (0 if none).
    fn last_seq(&self, device_id: &str) -> Result<u64, StoreError>;

    /// Number of messages queued for the device.
    fn queue_len(&self, device_id: &str) -> Result<usize, StoreError>;

    /// Drop counts of (device, app) by reason (one of [`DROP_REASONS`]; reasons
    /// never counted are absent), so the token status can say why something
    /// never arrived. Exact at `now_ms`: queued messages already past their
    /// expiry count as `expired` even before a read of the queue deletes them.
    fn drops(
        &self,
        device_id: &str,
        app_id: &str,
        now_ms: u64,
    ) -> Result<Vec<(String, u64)>, StoreError>;

    /// Unexpired messages (at `now_ms`) queued for one app on a device.
    fn pending_for(&self, device_id: &str, app_id: &str, now_ms: u64) -> Result<u64, StoreError>;

    /// Operational messages of `app_id` for `device_id` accepted on UTC day `day`.
    fn quota_used(&self, app_id: &str, device_id: &str, day: u64) -> Result<u64, StoreError>;

    /// Revocations the device has not been told about: (app id, token, reason),
    /// recorded by [`Store::revoke_exact`] and kept until
    /// [`Store::clear_revocation`], so a device offline at the time learns
    /// them at its next hello.
    fn revocations(&self, device_id: &str) -> Result<Vec<(String, String, String)>, StoreError>;

    /// The device was told about `token`'s revocation.
    fn clear_revocation(&self, device_id: &str, token: &str) -> Result<(), StoreError>;
}

/// Why a message was dropped: past its ttl, replaced by a newer one with the
/// same collapse key, refused over the daily quota, or its token was revoked.
pub const DROP_REASONS: [&str; 4] = ["expired", "collapsed", "quota", "revoked"];

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Lifetime of a ttl-0 ("now or never") message: long enough for the connection
/// that was live at send time (and the daemon) to deliver it, no longer. Its
/// `expires_at_ms` is `sent_at_ms` plus this, so every hop expires it the same way.
pub const TTL0_GRACE_MS: u64 = 30_000;

/// Whether a queued notification has expired at `now_ms` (0 = never expires).
pub fn is_expired(n: &Notification, now_ms: u64) -> bool {
    n.expires_at_ms != 0 && now_ms > n.expires_at_ms
}

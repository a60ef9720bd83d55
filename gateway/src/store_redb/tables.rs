//! The redb table layout of the `RedbStore` and the decoding
//! of stored records: table definitions, the mapping of redb's errors to
//! [`StoreError`], and the "corrupt record" helpers. A leaf of `store_redb`.

use prost::Message;
use redb::TableDefinition;
use syspush_proto::common::Notification;

use crate::store::{SecretHash, StoreError};

/// device_id -> SHA-256 of the device secret.
pub(super) const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// app_id -> JSON [`AppRecord`](crate::store::AppRecord).
pub(super) const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
/// SHA-256 of an API key -> app_id.
pub(super) const APP_KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("app_keys");
/// token -> JSON [`TokenRecord`](crate::store::TokenRecord). Revoked tokens stay so a send can tell "revoked".
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// (device_id, app_id) -> the live token.
pub(super) const LIVE_TOKENS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("live_tokens");
/// (device_id, seq) -> protobuf `Notification`.
pub(super) const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// device_id -> highest seq assigned.
pub(super) const LAST_SEQ: TableDefinition<&str, u64> = TableDefinition::new("last_seq");
/// (device_id, app_id, collapse_key) -> seq of the latest message with that key.
/// Entries may point at already-acked seqs; removing a missing seq is harmless
/// and seqs are never reused.
pub(super) const COLLAPSE: TableDefinition<(&str, &str, &str), u64> =
    TableDefinition::new("collapse");
/// (app id, device id, UTC day) -> operational messages accepted.
pub(super) const QUOTA: TableDefinition<(&str, &str, u64), u64> =
    TableDefinition::new("quota_app_device");

/// (app_id, idempotency key) -> (created_ms, message_id, request fingerprint,
/// expired on arrival): sends an app server may retry. Pruned through
/// [`IDEMPOTENCY_EXPIRY`] once older than `IDEMPOTENCY_WINDOW_MS`.
pub(super) const IDEMPOTENCY: TableDefinition<(&str, &str), KeyRecord> =
    TableDefinition::new("idempotency");
/// A value of [`IDEMPOTENCY`]: (created_ms, message_id, fingerprint, expired on arrival).
pub(super) type KeyRecord = (u64, &'static str, &'static [u8], bool);
/// (created_ms, app_id, idempotency key) -> (): [`IDEMPOTENCY`] in age order,
/// so writes prune the oldest keys with a range scan.
pub(super) const IDEMPOTENCY_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");

/// (device_id, app_id, reason) -> messages dropped for that reason.
pub(super) const DROPS: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("drops");
/// (device_id, token) -> (app_id, reason): revocations not yet sent to the device.
pub(super) const REVOCATIONS: TableDefinition<(&str, &str), (&str, &str)> =
    TableDefinition::new("revocations");

macro_rules! engine_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
engine_errors!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            other => StoreError::Engine(Box::new(redb::Error::from(other))),
        }
    }
}

pub(super) fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

pub(super) fn decode_hash(table: &'static str, bytes: &[u8]) -> Result<SecretHash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| corrupt(table, format!("hash of {} bytes", bytes.len())))
}

pub(super) fn decode_notification(bytes: &[u8]) -> Result<Notification, StoreError> {
    Notification::decode(bytes).map_err(|e| corrupt("queue", e))
}

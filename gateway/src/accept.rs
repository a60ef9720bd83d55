//! Accepting a message for a device: the one way into a device's queue, shared
//! by the HTTP send (`POST /v1/messages`) and the device's test push.
//!
//! Assigns the message id and timestamps, applies the ttl-0 ("now or never"),
//! daily-quota and idempotency-key rules, commits the message to the store
//! (all of it in one [`Store::submit`](crate::store::Store::submit)
//! transaction) and only then pokes the device's connection, so an accepted
//! message survives a gateway crash and a crash never leaves half a decision.
//! A leaf: it knows the store and the registry, not HTTP or the link protocol.

use syspush_proto::common::{MessageClass, Notification, Priority};

use crate::ids::{self, RandomError};
use crate::registry::Poke;
use crate::state::Shared;
use crate::store::{DailyQuota, IdempotencyKey, StoreError, Submit, Submitted, TTL0_GRACE_MS};

/// What became of an accepted message (its id is in the notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Committed to the device's queue.
    Queued,
    /// ttl 0 and the device was not connected: expired on arrival.
    DroppedOffline,
    /// A retry of an idempotency key: nothing was created; the notification
    /// carries the first request's message id.
    Replayed {
        /// Whether the first message was dropped as "device offline".
        dropped_offline: bool,
    },
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    /// The app's daily quota of operational messages for the device is used up.
    #[error("app {app_id} used its daily quota of {limit} operational messages for this device")]
    QuotaExhausted {
        /// The sending app.
        app_id: String,
        /// The configured daily limit.
        limit: u64,
    },
    /// The idempotency key was used (within its window) for another request.
    #[error("idempotency key {0:?} was already used for a different request")]
    KeyReused(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The RNG failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Assigns id, timestamps and seq, commits the message to the device's queue
/// (with its idempotency key, if any), then pokes the device's connection.
/// ttl 0 ("now or never") is queued only when the device is connected at
/// send time.
pub(crate) async fn accept(
    shared: &Shared,
    app_id: &str,
    device_id: &str,
    n: &mut Notification,
    idempotency: Option<IdempotencyKey>,
) -> Result<Accepted, AcceptError> {
    n.message_id = ids::new_id()?;
    n.app_id = app_id.to_owned();
    n.sent_at_ms = ids::now_ms();
    // ttl 0 gets a short lifetime rather than none (see TTL0_GRACE_MS).
    let lifetime_ms = match n.ttl {
        0 => TTL0_GRACE_MS,
        ttl => u64::from(ttl) * 1000,
    };
    n.expires_at_ms = n.sent_at_ms + lifetime_ms;
    let high_priority = n.priority == Priority::High as i32;
    let limit = shared
        .config
        .operational_daily_quota
        .filter(|_| n.class == MessageClass::ClassOperational as i32);
    let key = idempotency.as_ref().map(|k| k.key.clone());
    let how = Submit {
        quota: limit.map(|limit| DailyQuota {
            day: n.sent_at_ms / 86_400_000,
            limit,
        }),
        idempotency,
        // "Now or never" met "not now": it expires on arrival.
        expired_on_arrival: n.ttl == 0 && !shared.registry.is_connected(device_id),
    };
    let (device, stored) = (device_id.to_owned(), n.clone());
    let submitted = shared
        .store(move |s| s.submit(&device, &stored, &how))
        .await?;
    let message_id = n.message_id.as_str();
    match submitted {
        Submitted::Queued(enqueued) => {
            let poked = shared
                .registry
                .poke(device_id, Poke::Message { high_priority });
            tracing::info!(
                device_id,
                app_id,
                message_id,
                seq = enqueued.seq,
                replaced = enqueued.replaced,
                online = poked,
                "message accepted"
            );
            Ok(Accepted::Queued)
        }
        Submitted::Expired => {
            tracing::debug!(
                device_id,
                app_id,
                message_id,
                "ttl 0 and device offline: dropped"
            );
            Ok(Accepted::DroppedOffline)
        }
        Submitted::OverQuota => Err(AcceptError::QuotaExhausted {
            app_id: app_id.to_owned(),
            limit: limit.unwrap_or_default(),
        }),
        Submitted::Replayed {
            message_id,
            expired,
        } => {
            tracing::info!(
                device_id,
                app_id,
                message_id,
                "retry of an idempotency key: nothing created"
            );
            n.message_id = message_id;
            Ok(Accepted::Replayed {
                dropped_offline: expired,
            })
        }
        Submitted::KeyReused => Err(AcceptError::KeyReused(key.unwrap_or_default())),
    }
}

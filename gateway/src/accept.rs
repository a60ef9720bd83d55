//! Accepting a message for a device: the one way into a device's queue, shared
//! by the HTTP send (`POST /v1/messages`) and the device's test push.
//!
//! Assigns the message id and timestamps, applies the ttl-0 ("now or never")
//! and daily-quota rules, commits the message to the store and only then pokes
//! the device's connection, so an accepted message survives a gateway crash.
//! A leaf: it knows the store and the registry, not HTTP or the link protocol.

use syspush_proto::common::{MessageClass, Notification, Priority};

use crate::ids::{self, RandomError};
use crate::registry::Poke;
use crate::state::Shared;
use crate::store::{StoreError, TTL0_GRACE_MS};

/// What became of an accepted message (its id is in the notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// Committed to the device's queue.
    Queued,
    /// ttl 0 and the device was not connected: expired on arrival.
    DroppedOffline,
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
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The RNG failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Assigns id, timestamps and seq, commits the message to the device's queue,
/// then pokes the device's connection. ttl 0 ("now or never") is queued only
/// when the device is connected at send time.
pub(crate) async fn accept(
    shared: &Shared,
    app_id: &str,
    device_id: &str,
    n: &mut Notification,
) -> Result<Accepted, AcceptError> {
    let message_id = ids::new_id()?;
    n.message_id = message_id.clone();
    n.app_id = app_id.to_owned();
    n.sent_at_ms = ids::now_ms();
    // ttl 0 gets a short lifetime rather than none (see TTL0_GRACE_MS).
    let lifetime_ms = match n.ttl {
        0 => TTL0_GRACE_MS,
        ttl => u64::from(ttl) * 1000,
    };
    n.expires_at_ms = n.sent_at_ms + lifetime_ms;
    let high_priority = n.priority == Priority::High as i32;

    if n.ttl == 0 && !shared.registry.is_connected(device_id) {
        // "Now or never" met "not now": it expired on arrival.
        let (d, a) = (device_id.to_owned(), app_id.to_owned());
        shared
            .store(move |s| s.count_drop(&d, &a, "expired", 1))
            .await?;
        tracing::debug!(
            device_id,
            app_id,
            message_id,
            "ttl 0 and device offline: dropped"
        );
        return Ok(Accepted::DroppedOffline);
    }
    let quota = shared.config.operational_daily_quota;
    if let Some(limit) = quota.filter(|_| n.class == MessageClass::ClassOperational as i32) {
        let (app, dev, day) = (
            app_id.to_owned(),
            device_id.to_owned(),
            n.sent_at_ms / 86_400_000,
        );
        if !shared
            .store(move |s| s.take_quota(&app, &dev, day, limit))
            .await?
        {
            let (d, a) = (device_id.to_owned(), app_id.to_owned());
            shared
                .store(move |s| s.count_drop(&d, &a, "quota", 1))
                .await?;
            return Err(AcceptError::QuotaExhausted {
                app_id: app_id.to_owned(),
                limit,
            });
        }
    }
    let stored = n.clone();
    let device = device_id.to_owned();
    let enqueued = shared.store(move |s| s.enqueue(&device, &stored)).await?;
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

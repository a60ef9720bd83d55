//! Feeding one subscribed connection from the store.
//!
//! Deliveries are never queued per connection: the connection keeps a cursor
//! (the last arrival number it sent) and, when the hub says its app has new
//! messages, reads the next small batch from the store, writes it, and only
//! then reads the next one. A slow app therefore costs one batch of memory
//! and catches up from the store, and a fast one gets messages as soon as
//! they are committed.

use futures_util::SinkExt;
use syspush_proto::app::{self, DaemonMessage, daemon_message};
use syspush_proto::common::Notification;

use super::context::AppContext;
use super::reply::{Conn, msg};
use crate::hub::{AppEvent, Subscription};
use crate::store::Store;

/// Deliveries read from the store and written per batch.
pub(crate) const FEED_BATCH: usize = 32;

/// A connection's subscription to its app (after Hello).
pub(crate) struct Feed {
    pub(crate) sub: Subscription,
    /// Arrival number of the last message written.
    pub(crate) cursor: u64,
    /// More stored messages may wait after the cursor.
    pub(crate) backlog: bool,
}

/// What the hub said about the connection's app.
pub(crate) enum Signal {
    /// New messages were committed.
    Data,
    /// A control event (token revoked).
    Event(AppEvent),
}

/// The next signal for `feed`; pending forever without a subscription.
pub(crate) async fn next_signal(feed: &mut Option<Feed>) -> Signal {
    let Some(f) = feed else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            r = f.sub.data.changed() => {
                if r.is_ok() {
                    return Signal::Data;
                }
                return std::future::pending().await;
            }
            r = f.sub.events.recv() => match r {
                Ok(ev) => return Signal::Event(ev),
                // Lagged: only rare control events live here; skip ahead.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return std::future::pending().await,
            },
        }
    }
}

/// The Delivery for a stored notification under the device's current
/// settings for its app and channel (see [`crate::display`]).
pub fn delivery(store: &Store, n: Notification) -> app::Delivery {
    let (app_s, ch_s) = store
        .display_settings(&n.app_id, &n.channel_id)
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read notification settings; using defaults");
            Default::default()
        });
    let d = crate::display::decide(&n, &app_s, &ch_s);
    crate::display::delivery(n, d)
}

/// Writes the next batch of stored messages after the cursor.
pub(crate) async fn feed_batch(
    ctx: &AppContext,
    f: &mut Feed,
    conn: &mut Conn,
) -> Result<(), String> {
    let batch = match ctx.store.list(
        f.sub.app_id(),
        f.cursor,
        FEED_BATCH,
        ctx.gateway_clock.now_ms(),
    ) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(app_id = f.sub.app_id(), error = %e, "cannot read inbox");
            f.backlog = false;
            return Ok(());
        }
    };
    f.backlog = batch.len() == FEED_BATCH;
    if !batch.is_empty() {
        ctx.journal
            .record_delivery(f.sub.app_id(), ctx.gateway_clock.now_ms());
    }
    for s in batch {
        f.cursor = s.arrival;
        conn.feed(msg(
            0,
            daemon_message::Body::Notification(delivery(&ctx.store, s.notification)),
        ))
        .await
        .map_err(|e| e.to_string())?;
    }
    SinkExt::<DaemonMessage>::flush(conn)
        .await
        .map_err(|e| e.to_string())
}

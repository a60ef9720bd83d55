//! One app connection, served by its own task: reads request frames, answers
//! them (see [`super::requests`]), writes the answers of gateway requests as
//! they come back, and feeds deliveries from the store (see [`super::feed`]).
//!
//! Per connection, nothing grows without bound: one inbound frame of at most
//! `MAX_FRAME_LEN` (64 KiB; a larger announced length closes the connection
//! before anything is buffered), one outbound batch of `FEED_BATCH`
//! deliveries, written with back-pressure (an app that stops reading stalls
//! only its own task, and its messages wait in the store), and
//! [`MAX_IN_FLIGHT`] gateway requests.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use syspush_proto::CodecError;
use syspush_proto::app::{self, DaemonMessage, ErrorCode, daemon_message};
use syspush_proto::app_codec::DelimitedCodec;
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::context::AppContext;
use super::feed::{Feed, Signal, feed_batch, next_signal};
use super::limits::ConnSlot;
use super::reply::{Conn, error, msg};
use super::requests::{MAX_IN_FLIGHT, handle};
use crate::hub::AppEvent;

/// The peer, as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) uid: u32,
    pub(crate) pid: i32,
}

/// Serves one connection until the app leaves, a write fails, or `shutdown`.
pub(crate) async fn connection(
    stream: UnixStream,
    peer: Peer,
    // Held for the task's life: dropping it frees the connection's slot.
    _slot: ConnSlot,
    ctx: Arc<AppContext>,
    shutdown: CancellationToken,
) {
    let Peer { uid, pid } = peer;
    tracing::debug!(uid, pid, "app connected");
    let mut conn: Conn = Framed::new(stream, DelimitedCodec::new());
    let (out_tx, mut out_rx) = mpsc::channel::<DaemonMessage>(MAX_IN_FLIGHT * 2);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut feed: Option<Feed> = None;
    let result: Result<(), String> = async {
        loop {
            let backlog = feed.as_ref().is_some_and(|f| f.backlog);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                Some(m) = out_rx.recv() => conn.send(m).await.map_err(|e| e.to_string())?,
                req = conn.next() => match req {
                    None => return Ok(()),
                    Some(Ok(req)) => {
                        handle(&ctx, uid, req, &mut conn, &mut feed, &out_tx, &permits).await?;
                    }
                    Some(Err(CodecError::Io(e))) => return Err(e.to_string()),
                    Some(Err(e)) => {
                        tracing::info!(uid, pid, error = %e, "bad frame from app; closing its connection");
                        let _ = conn.send(error(0, ErrorCode::ErrorBadFrame, e.to_string())).await;
                        return Ok(());
                    }
                },
                _ = std::future::ready(()), if backlog => {
                    if let Some(f) = feed.as_mut() {
                        feed_batch(&ctx, f, &mut conn).await?;
                    }
                }
                sig = next_signal(&mut feed) => match sig {
                    Signal::Data => {
                        if let Some(f) = feed.as_mut() {
                            f.backlog = true;
                        }
                    }
                    Signal::Event(AppEvent::TokenRevoked { reason }) => {
                        let app_id = feed.as_ref().map(|f| f.sub.app_id().to_string()).unwrap_or_default();
                        conn.send(msg(0, daemon_message::Body::TokenRevoked(app::TokenRevoked { app_id, reason })))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                },
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(uid, pid, "app disconnected"),
        Err(e) => tracing::debug!(uid, pid, error = %e, "app connection ended"),
    }
}

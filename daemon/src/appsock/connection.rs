//! One app connection, served by its own task: reads request frames, answers
//! them (see [`super::requests`]), writes the answers of gateway requests as
//! they come back, and feeds deliveries from the store (see [`super::feed`]).
//!
//! Deadlines (values in [`super::limits`]): while not subscribed and with no
//! answer pending, the connection must send a request within the idle
//! deadline; a frame that has begun must complete within the frame deadline.
//! Either way it gets an `Error` frame and is closed. There is one deadline
//! at a time, on one timerfd created only while a deadline is armed, and
//! none at all for a subscribed app waiting for messages.
//!
//! Per connection, nothing grows without bound: one inbound frame of at most
//! `MAX_FRAME_LEN` (64 KiB; a larger announced length closes the connection
//! before anything is buffered), one outbound batch of `FEED_BATCH`
//! deliveries, written with back-pressure (an app that stops reading stalls
//! only its own task, and its messages wait in the store), and
//! [`MAX_IN_FLIGHT`](super::requests::MAX_IN_FLIGHT) gateway requests in flight.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use syspush_proto::CodecError;
use syspush_proto::app::{self, AppRequest, ErrorCode, daemon_message};
use syspush_proto::app_codec::DelimitedCodec;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::caller::Peer;
use super::context::AppContext;
use super::feed::{Feed, Signal, feed_batch, next_signal};
use super::limits::{ConnSlot, Limits};
use super::reply::{Conn, error, msg};
use super::requests::{Handled, InFlight, handle};
use crate::clock::{self, Timer};
use crate::hub::AppEvent;

/// Which deadline a connection is under (see `limits.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Not subscribed, no answer pending: closed when no request comes.
    Idle,
    /// A frame started: closed when it does not complete.
    Frame,
}

/// What reading from the app gave.
enum Inbound {
    /// A frame, an error, or the end (None).
    Frame(Option<Result<AppRequest, CodecError>>),
    /// The first bytes of a frame came in; the rest has not yet.
    Started,
}

/// The next frame from `conn`; also returns [`Inbound::Started`] once when a
/// frame has begun but not completed (`started`: already reported), so the
/// connection can put a deadline on it.
fn read(conn: &mut Conn, started: bool) -> impl Future<Output = Inbound> + '_ {
    poll_fn(move |cx| match conn.poll_next_unpin(cx) {
        Poll::Ready(r) => Poll::Ready(Inbound::Frame(r)),
        // Framed keeps the partial frame in its buffer (and has registered
        // for more input): report it, then wait on.
        Poll::Pending if !started && !conn.read_buffer().is_empty() => {
            Poll::Ready(Inbound::Started)
        }
        Poll::Pending => Poll::Pending,
    })
}

/// Completes when `deadline` passes; never without one. The timer (one
/// timerfd) exists only while the connection is under a deadline.
async fn expiry(timer: &mut Option<Timer>, deadline: Option<(Duration, Deadline)>) -> Deadline {
    let Some((at, which)) = deadline else {
        return std::future::pending().await;
    };
    if timer.is_none() {
        match Timer::new() {
            Ok(t) => *timer = Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a timerfd; connection without a deadline");
                return std::future::pending().await;
            }
        }
    }
    let Some(t) = timer.as_mut() else {
        return std::future::pending().await;
    };
    match t.sleep_until(at).await {
        Ok(()) => which,
        Err(e) => {
            tracing::warn!(error = %e, "connection timer failed; no deadline");
            std::future::pending().await
        }
    }
}

/// Serves one connection until the app leaves, a write fails, a deadline
/// passes, or `shutdown`.
pub(crate) async fn connection(
    stream: UnixStream,
    peer: Peer,
    // Held for the task's life: dropping it frees the connection's slot.
    _slot: ConnSlot,
    ctx: Arc<AppContext>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let Peer { uid, pid, .. } = peer;
    tracing::debug!(uid, pid, class = peer.class.as_str(), "app connected");
    let mut conn: Conn = Framed::new(stream, DelimitedCodec::new());
    let mut in_flight = InFlight::default();
    let mut feed: Option<Feed> = None;
    // Boot time the current frame began (None: between frames), and of the
    // last request or answer.
    let mut frame_started: Option<Duration> = None;
    let mut last_activity = clock::now();
    let mut timer: Option<Timer> = None;
    let result: Result<(), String> = async {
        loop {
            let backlog = feed.as_ref().is_some_and(|f| f.backlog);
            let deadline = match frame_started {
                Some(t) => Some((t + limits.frame, Deadline::Frame)),
                None if feed.is_none() && in_flight.waiting() == 0 => {
                    Some((last_activity + limits.idle, Deadline::Idle))
                }
                None => None,
            };
            if deadline.is_none() {
                // A subscribed app waiting for messages holds no timerfd.
                timer = None;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    // Requests already taken are answered (serve bounds
                    // how long that may take); no new ones are read.
                    while in_flight.waiting() > 0 {
                        let m = in_flight.next_answer().await;
                        conn.send(m).await.map_err(|e| e.to_string())?;
                    }
                    return Ok(());
                }
                m = in_flight.next_answer() => {
                    last_activity = clock::now();
                    conn.send(m).await.map_err(|e| e.to_string())?;
                }
                inbound = read(&mut conn, frame_started.is_some()) => match inbound {
                    Inbound::Started => frame_started = Some(clock::now()),
                    Inbound::Frame(None) => return Ok(()),
                    Inbound::Frame(Some(Ok(req))) => {
                        let now = clock::now();
                        last_activity = now;
                        // Bytes after this frame: the next one has begun.
                        frame_started = (!conn.read_buffer().is_empty()).then_some(now);
                        if let Handled::Answered = handle(&ctx, peer, req, &mut conn, &mut feed, &mut in_flight).await? {
                            last_activity = clock::now();
                        }
                    }
                    Inbound::Frame(Some(Err(CodecError::Io(e)))) => return Err(e.to_string()),
                    Inbound::Frame(Some(Err(e))) => {
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
                which = expiry(&mut timer, deadline) => {
                    let (code, why) = match which {
                        Deadline::Idle => (
                            ErrorCode::ErrorUnavailable,
                            format!(
                                "closing an idle connection: no Hello and no request for {} s",
                                limits.idle.as_secs_f32()
                            ),
                        ),
                        Deadline::Frame => (
                            ErrorCode::ErrorBadFrame,
                            format!("frame not completed within {} s", limits.frame.as_secs_f32()),
                        ),
                    };
                    tracing::debug!(uid, pid, reason = why, "closing app connection");
                    // Without waiting: a peer that does not read must not
                    // hold the task (the reply is small, the buffer empty).
                    if let Ok(bytes) = syspush_proto::app_codec::to_vec(&error(0, code, why)) {
                        let _ = conn.get_ref().try_write(&bytes);
                    }
                    return Ok(());
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::debug!(uid, pid, "app disconnected"),
        Err(e) => tracing::debug!(uid, pid, error = %e, "app connection ended"),
    }
}

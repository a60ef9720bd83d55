//! [`Listener`]: an app's stream of notifications, once each, across daemon
//! restarts.
//!
//! The listener says `Hello{app_id}` and then streams `Delivery` frames. When
//! the connection goes away (daemon restart, crash, upgrade) it reconnects by
//! itself with a bounded backoff, and the daemon then redelivers everything the
//! app has not acked. To keep "each message once" for the app, the listener
//! remembers the ids it handed out (`dedup::SeenIds`):
//! - a redelivered id the app already acked is re-acked silently (the first ack
//!   was lost, or the daemon crashed before committing it);
//! - a redelivered id handed out but not yet acked is dropped (the app has it
//!   and will ack it; its ack deletes the message whichever connection carries
//!   it, because acks are per app, not per connection).
//!
//! Acks come in two kinds. [`Listener::ack`] sends one Ack and waits for the
//! daemon's answer. [`Listener::handled`] only records the id: the listener
//! sends the recorded ids as ONE Ack frame (one store transaction in the
//! daemon) when [`next`](Listener::next) would otherwise wait for the socket,
//! when [`ACK_BATCH`] ids are recorded, or when the oldest has waited
//! [`ACK_DELAY`] while frames keep arriving; [`Listener::flush_acks`] sends
//! them at once (call it before exiting). A crash before the batch is sent
//! loses nothing: the daemon redelivers the unacked ids, and the app handles
//! them again (it never saw them acked), exactly as with one ack per message.
//!
//! A refusal that retrying cannot fix (`ErrorPermissionDenied`,
//! `ErrorBadRequest`) is returned from [`Listener::next`] instead of being
//! retried forever.

use std::collections::VecDeque;

use futures_util::FutureExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use syspush_proto::app::app_request::Body;
use syspush_proto::app::daemon_message::Body as Msg;
use syspush_proto::app::{AckRequest, DaemonMessage, Delivery, ErrorCode, Hello};

use crate::conn::Conn;
use crate::dedup::{Seen, SeenIds};
use crate::error::ClientError;

/// First reconnect delay after a failed attempt or a connection that died young.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Reconnect delays double up to this. Not lower: every attempt wakes the
/// app's process, and a daemon that stays down (stopped, not restarting)
/// must not cost each app a wake-up every few seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Age after which a connection counts as stable: its loss is then retried at
/// once (most likely a daemon restart).
const STABLE_AGE: Duration = Duration::from_secs(2);
/// Default number of message ids remembered for de-duplication.
pub const DEFAULT_DEDUP_MEMORY: usize = 100_000;
/// Most ids [`Listener::handled`] collects before they are sent as one Ack.
pub const ACK_BATCH: usize = 256;
/// Longest a [`Listener::handled`] id waits for its batch while frames keep
/// arriving (when none is waiting, the batch goes at once).
pub const ACK_DELAY: Duration = Duration::from_millis(20);

/// What [`Listener::next`] yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
// Events are handed out one at a time, never stored in bulk, so boxing the
// notification would only cost an allocation and an awkward pattern per message.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A notification for the app, with the daemon's display flags. Ack its
    /// `notification.message_id` with [`Listener::ack`] once handled.
    Notification(Delivery),
    /// The app server revoked the app's token (forced logout): no more pushes
    /// until the app registers again.
    TokenRevoked {
        /// The app whose token died.
        app_id: String,
        /// Why, as the gateway reported it.
        reason: String,
    },
}

/// An app's subscription to its notifications: Hello, automatic reconnect,
/// and de-duplication of redeliveries, so the app sees each message once.
#[derive(Debug)]
pub struct Listener {
    path: PathBuf,
    app_id: String,
    conn: Option<Conn>,
    /// When the current connection was established (for the backoff policy).
    connected_at: Option<Instant>,
    /// Frames read while [`Listener::ack`] waited for its reply; handled first.
    queue: VecDeque<DaemonMessage>,
    next_id: u64,
    seen: SeenIds,
    /// Wait before the next connection attempt (zero: at once).
    delay: Duration,
    connects: u64,
    /// Ids recorded by [`Listener::handled`] and not sent yet.
    pending_acks: Vec<String>,
    /// When the oldest of `pending_acks` was recorded.
    pending_since: Option<Instant>,
}

impl Listener {
    /// A listener for `app_id` on the daemon socket at `path`. Does no I/O: the
    /// first [`next`](Self::next) connects, retrying until the daemon is up.
    pub fn new(path: impl Into<PathBuf>, app_id: impl Into<String>) -> Listener {
        Listener {
            path: path.into(),
            app_id: app_id.into(),
            conn: None,
            connected_at: None,
            queue: VecDeque::new(),
            next_id: 1,
            seen: SeenIds::new(DEFAULT_DEDUP_MEMORY),
            delay: Duration::ZERO,
            connects: 0,
            pending_acks: Vec::new(),
            pending_since: None,
        }
    }

    /// Like [`new`](Self::new), but connects and says Hello once right away, so
    /// a missing daemon or a refused app id is reported now instead of being
    /// retried. Later connection losses are retried by [`next`](Self::next).
    pub async fn connect(
        path: impl Into<PathBuf>,
        app_id: impl Into<String>,
    ) -> Result<Listener, ClientError> {
        let mut l = Listener::new(path, app_id);
        l.attach().await?;
        Ok(l)
    }

    /// Sets how many message ids are remembered for de-duplication (default
    /// [`DEFAULT_DEDUP_MEMORY`]). Forgets what was remembered so far.
    pub fn with_dedup_memory(mut self, ids: usize) -> Listener {
        self.seen = SeenIds::new(ids);
        self
    }

    /// The app id this listener subscribes to.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The daemon socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// How many times the listener re-established its connection after losing it.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }

    /// The next event: a notification the app has not seen before, or a token
    /// revocation. Reconnects as needed; returns an error only for refusals
    /// that retrying cannot fix (see [`ClientError::is_permission_denied`]).
    ///
    /// Cancel-safe while waiting for a frame (usable in `select!`): a dropped
    /// call loses no message.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            if self.batch_due() {
                self.send_pending_acks().await;
            }
            let msg = match self.queue.pop_front() {
                Some(m) => m,
                None => {
                    self.ensure_connected().await?;
                    let Some(conn) = self.conn.as_mut() else {
                        continue;
                    };
                    // A frame already here is taken without waiting; before
                    // waiting, the recorded acks go out (the app is idle).
                    let ready = if self.pending_acks.is_empty() {
                        None
                    } else {
                        conn.recv().now_or_never()
                    };
                    let got = match ready {
                        Some(r) => r,
                        None => {
                            self.send_pending_acks().await;
                            let Some(conn) = self.conn.as_mut() else {
                                continue;
                            };
                            conn.recv().await
                        }
                    };
                    match got {
                        Ok(m) => m,
                        Err(e) => {
                            self.lost(&e);
                            continue;
                        }
                    }
                }
            };
            if let Some(ev) = self.handle(msg).await? {
                return Ok(ev);
            }
        }
    }

    /// Acks `ids` (the app has handled them; the daemon deletes them) and waits
    /// for the daemon's answer; returns how many were still pending there.
    ///
    /// The ids are remembered as acked before anything is sent, so even when
    /// this fails (the daemon is down) a later redelivery of them is re-acked,
    /// not shown again. If not connected, one connection attempt is made.
    pub async fn ack<S: AsRef<str>>(&mut self, ids: &[S]) -> Result<u32, ClientError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = ids.iter().map(|s| s.as_ref().to_owned()).collect();
        for id in &ids {
            self.seen.acked(id);
        }
        if self.conn.is_none() {
            self.attach().await?;
        }
        let id = self.take_id();
        let res = self.ack_on_conn(id, ids).await;
        // A daemon refusal leaves the connection usable; anything else broke it.
        if let Err(e) = &res
            && !matches!(e, ClientError::Daemon { .. })
        {
            self.lost(e);
        }
        res
    }

    /// Records that the app has handled `id`: it is acked with others in one
    /// frame (see the module doc for when), and a redelivery of it is re-acked,
    /// never shown again. Does no I/O.
    pub fn handled(&mut self, id: impl Into<String>) {
        let id = id.into();
        if id.is_empty() {
            return;
        }
        self.seen.acked(&id);
        self.pending_acks.push(id);
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Sends the ids recorded by [`handled`](Self::handled) now and waits for
    /// the daemon's answer (how many were still pending there). Call before
    /// exiting: ids recorded but not sent are redelivered to the app's next
    /// listener.
    pub async fn flush_acks(&mut self) -> Result<u32, ClientError> {
        let ids = std::mem::take(&mut self.pending_acks);
        self.pending_since = None;
        self.ack(&ids).await
    }

    /// Whether the recorded acks must go now even though frames are waiting.
    fn batch_due(&self) -> bool {
        self.pending_acks.len() >= ACK_BATCH
            || self.pending_since.is_some_and(|t| t.elapsed() >= ACK_DELAY)
    }

    /// Sends the recorded acks as one Ack frame without waiting for the
    /// answer (it is read, and ignored, like any other frame). If the daemon
    /// is unreachable they are dropped: the ids are already remembered as
    /// acked, so their redelivery is re-acked.
    async fn send_pending_acks(&mut self) {
        if self.pending_acks.is_empty() {
            return;
        }
        let message_ids = std::mem::take(&mut self.pending_acks);
        self.pending_since = None;
        let id = self.take_id();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn
            .send_reading(id, Body::Ack(AckRequest { message_ids }), &mut self.queue)
            .await
        {
            self.lost(&e);
        }
    }

    /// Sends the Ack and reads until its reply, queueing whatever else arrives.
    async fn ack_on_conn(&mut self, id: u64, message_ids: Vec<String>) -> Result<u32, ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::Closed);
        };
        conn.send_reading(id, Body::Ack(AckRequest { message_ids }), &mut self.queue)
            .await?;
        loop {
            let msg = conn.recv().await?;
            if msg.request_id != id {
                self.queue.push_back(msg);
                continue;
            }
            return match msg.body {
                Some(Msg::AckOk(ok)) => Ok(ok.removed),
                Some(Msg::Error(e)) => Err(ClientError::from_wire(e)),
                other => Err(ClientError::Unexpected(format!(
                    "wanted AckOk, got {other:?}"
                ))),
            };
        }
    }

    /// Handles one frame: `Some(event)` for the app, `None` when it was consumed
    /// here (duplicate, reply to an abandoned request, ...).
    async fn handle(&mut self, msg: DaemonMessage) -> Result<Option<Event>, ClientError> {
        match msg.body {
            Some(Msg::Notification(d)) => Ok(self.on_delivery(d).await),
            Some(Msg::TokenRevoked(t)) => Ok(Some(Event::TokenRevoked {
                app_id: t.app_id,
                reason: t.reason,
            })),
            Some(Msg::Error(e)) => {
                let err = ClientError::from_wire(e);
                if is_fatal(&err) {
                    return Err(err);
                }
                // Bad frame etc.: the daemon closes the connection after it and
                // the next read reconnects.
                tracing::warn!(app_id = %self.app_id, error = %err, "syspushd reported an error");
                Ok(None)
            }
            other => {
                // Replies to acks whose caller was cancelled, a second HelloOk, ...
                tracing::debug!(request_id = msg.request_id, ?other, "ignoring frame");
                Ok(None)
            }
        }
    }

    /// De-duplicates a delivery; re-acks one the app already acked.
    async fn on_delivery(&mut self, d: Delivery) -> Option<Event> {
        let Some(n) = d.notification.as_ref() else {
            tracing::warn!(app_id = %self.app_id, "delivery without a notification, ignored");
            return None;
        };
        if n.message_id.is_empty() {
            // Cannot be de-duplicated (the daemon always sets ids); pass it on.
            return Some(Event::Notification(d));
        }
        match self.seen.get(&n.message_id) {
            Seen::New => {
                self.seen.handed_out(&n.message_id);
                Some(Event::Notification(d))
            }
            Seen::HandedOut => {
                tracing::debug!(message_id = %n.message_id, "dropping redelivery of an unacked message");
                None
            }
            Seen::Acked => {
                tracing::debug!(message_id = %n.message_id, "re-acking redelivered message");
                let id = self.take_id();
                let body = Body::Ack(AckRequest {
                    message_ids: vec![n.message_id.clone()],
                });
                if let Some(conn) = self.conn.as_mut() {
                    // The AckOk comes back as a frame with this id and is
                    // ignored by `handle`. If sending fails, the connection is
                    // gone and the daemon redelivers (and we re-ack) next time.
                    if let Err(e) = conn.send_reading(id, body, &mut self.queue).await {
                        self.lost(&e);
                    }
                }
                None
            }
        }
    }

    /// Connects (retrying with backoff) unless already connected.
    async fn ensure_connected(&mut self) -> Result<(), ClientError> {
        while self.conn.is_none() {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            match self.attach().await {
                Ok(()) => {}
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    self.delay = next_delay(self.delay);
                    tracing::debug!(app_id = %self.app_id, error = %e, retry_in = ?self.delay, "syspushd not reachable");
                }
            }
        }
        Ok(())
    }

    /// One attempt: connect, send Hello, wait for HelloOk. Frames other than
    /// the reply (deliveries may follow HelloOk in the same read) are queued.
    async fn attach(&mut self) -> Result<(), ClientError> {
        let mut conn = Conn::open(&self.path).await?;
        let id = self.take_id();
        conn.send(
            id,
            Body::Hello(Hello {
                app_id: self.app_id.clone(),
            }),
        )
        .await?;
        loop {
            let msg = conn.recv().await?;
            if msg.request_id != id {
                self.queue.push_back(msg);
                continue;
            }
            match msg.body {
                Some(Msg::HelloOk(ok)) => {
                    tracing::debug!(app_id = %self.app_id, pending = ok.pending, "subscribed");
                    break;
                }
                Some(Msg::Error(e)) => return Err(ClientError::from_wire(e)),
                other => {
                    return Err(ClientError::Unexpected(format!(
                        "wanted HelloOk, got {other:?}"
                    )));
                }
            }
        }
        self.conn = Some(conn);
        self.connected_at = Some(Instant::now());
        self.connects += 1;
        Ok(())
    }

    /// Drops a broken connection and decides how soon to retry: at once after a
    /// long-lived connection (a daemon restart is the likely cause), with a
    /// growing delay when connections keep dying young (a crash loop).
    fn lost(&mut self, err: &ClientError) {
        tracing::info!(app_id = %self.app_id, error = %err, "connection to syspushd lost");
        self.conn = None;
        let stable = self
            .connected_at
            .take()
            .is_some_and(|t| t.elapsed() >= STABLE_AGE);
        self.delay = if stable {
            Duration::ZERO
        } else {
            next_delay(self.delay)
        };
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Refusals that reconnecting cannot fix: returned to the app, not retried.
fn is_fatal(err: &ClientError) -> bool {
    match err {
        ClientError::Daemon { code, .. } => {
            matches!(
                code,
                ErrorCode::ErrorPermissionDenied | ErrorCode::ErrorBadRequest
            )
        }
        // The socket's directory or file is not accessible to this uid.
        ClientError::Connect { source, .. } => {
            source.kind() == std::io::ErrorKind::PermissionDenied
        }
        _ => false,
    }
}

/// 0 -> 50 ms -> 100 ms -> ... -> 2 s.
fn next_delay(d: Duration) -> Duration {
    if d.is_zero() {
        BACKOFF_MIN
    } else {
        (d * 2).min(BACKOFF_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..12 {
            d = next_delay(d);
            seen.push(d.as_millis());
        }
        assert_eq!(
            seen,
            vec![
                50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000
            ]
        );
    }
}

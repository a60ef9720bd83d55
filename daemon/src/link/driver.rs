//! The link driver: it moves bytes and timers, nothing else. One select loop
//! waits on the boot-time timer, the WebSocket, app requests, network changes
//! and shutdown; it feeds what arrives to the sans-I/O [`Session`], hands the
//! session's application events to [`Effects`], drops the transport when the
//! session says so ([`DriverEvent::Disconnect`]; with a TCP reset on
//! [`DriverEvent::Abort`]) and flushes the frames it queued, bounded by the
//! session's next deadline.
//!
//! Frames that are already readable when one arrives are drained and handled
//! together: their deliveries go into ONE store transaction with the new
//! `last_committed_seq`, then ONE cumulative Ack goes out while the radio is
//! still awake from the incoming data. Only after that are the app
//! connections told (through the hub) that there is something to read.

use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use syspush_proto::device_codec;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Timer};
use crate::session::{DriverEvent, Session};

use super::connect::{Dialer, Ws};
use super::effects::Effects;
use super::error::{LinkError, ProtocolError, Shared, TransportError};
use super::handle::LinkCommand;
use super::network::Network;

/// Most frames handled (and committed) as one batch.
const MAX_BATCH: usize = 256;
/// How long shutdown waits to deliver the GoAway.
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

/// The link's moving parts.
pub(super) struct Driver {
    pub(super) session: Session,
    pub(super) effects: Effects,
    pub(super) network: Network,
    pub(super) dialer: Dialer,
    pub(super) timer: Timer,
    pub(super) commands: mpsc::Receiver<LinkCommand>,
    pub(super) shutdown: CancellationToken,
}

/// How a connection ended for the outer loop.
enum Ended {
    Disconnected,
    Shutdown,
}

impl Driver {
    /// Runs until shutdown: dial, serve the session, redial with backoff.
    pub(super) async fn run(mut self) -> Result<(), LinkError> {
        loop {
            // Wait for the dial time (or, offline, for a network), taking
            // app requests meanwhile (the session keeps them for the session).
            while !self.session.wants_dial(clock::now()) {
                if self.session.is_stopped() {
                    return Ok(());
                }
                let at = self.session.poll_timeout();
                if at.is_none() {
                    self.timer.disarm().map_err(LinkError::Timer)?;
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    r = self.timer.sleep_until(at.unwrap_or_default()), if at.is_some() => {
                        r.map_err(LinkError::Timer)?
                    }
                    Some(cmd) = self.commands.recv() => {
                        self.effects.replies.submit(&mut self.session, cmd)
                    }
                    n = self.network.changed() => self.network.apply(&mut self.session, n),
                }
                self.publish_status();
            }
            self.session.dial_started(clock::now());
            // Requests whose callers gave up are not sent on the new session.
            self.effects.replies.forget_abandoned(&mut self.session);
            let Some(deadline) = self.session.poll_timeout() else {
                return Ok(());
            };
            tracing::debug!(gateway = %self.dialer.config.gateway, "dialing");
            let dialed = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                r = self.dialer.connect() => r,
                r = self.timer.sleep_until(deadline) => {
                    r.map_err(LinkError::Timer)?;
                    self.session.handle_timeout(clock::now());
                    self.process();
                    continue;
                }
                // The dial was on the old network (or on none): start over.
                n = self.network.changed() => {
                    self.network.apply(&mut self.session, n);
                    self.process();
                    continue;
                }
            };
            match dialed {
                Err(e) => {
                    self.session.transport_failed(clock::now(), e);
                    self.process();
                }
                Ok((mut ws, hello)) => {
                    self.session.transport_open(clock::now(), hello);
                    let ended = self.serve(&mut ws).await?;
                    self.publish_status();
                    if let Ended::Shutdown = ended {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Serves one connection until the session drops it or shutdown.
    async fn serve(&mut self, ws: &mut Ws) -> Result<Ended, LinkError> {
        loop {
            // Events first: committing deliveries queues the Ack and submitting
            // requests queues their frames; both must go out now, not with the
            // next heartbeat.
            self.process();
            if let Some(teardown) = self.teardown_requested() {
                if teardown == DriverEvent::Abort {
                    abort(ws);
                }
                return Ok(Ended::Disconnected);
            }
            if let Err(e) = self.flush(ws).await {
                self.session.transport_failed(clock::now(), e);
                continue;
            }
            let Some(deadline) = self.session.poll_timeout() else {
                return Ok(Ended::Disconnected);
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.goodbye(ws).await;
                    return Ok(Ended::Shutdown);
                }
                first = ws.next() => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match ws.next().now_or_never() {
                            Some(m) => batch.push(m),
                            None => break,
                        }
                    }
                    let now = clock::now();
                    for m in batch {
                        if !self.on_ws_message(now, m) {
                            break;
                        }
                    }
                }
                r = self.timer.sleep_until(deadline) => {
                    r.map_err(LinkError::Timer)?;
                    self.session.handle_timeout(clock::now());
                }
                Some(cmd) = self.commands.recv() => {
                    self.effects.replies.submit(&mut self.session, cmd)
                }
                n = self.network.changed() => self.network.apply(&mut self.session, n),
            }
        }
    }

    /// Hands the session's application events to the effects (every wake-up
    /// passes here).
    fn process(&mut self) {
        self.effects
            .process(&mut self.session, self.network.current());
    }

    fn publish_status(&self) {
        self.effects
            .publish_status(&self.session, self.network.current());
    }

    /// Drains the driver's own events: whether (and how) the transport must
    /// be dropped.
    fn teardown_requested(&mut self) -> Option<DriverEvent> {
        let mut teardown = None;
        while let Some(ev) = self.session.poll_driver_event() {
            match ev {
                DriverEvent::Disconnect | DriverEvent::Abort => teardown = Some(ev),
            }
        }
        debug_assert_eq!(teardown.is_some(), self.session.is_disconnected());
        teardown
    }

    /// Feeds one WebSocket message to the session; false once the transport is done.
    fn on_ws_message(
        &mut self,
        now: Duration,
        m: Option<Result<Message, tungstenite::Error>>,
    ) -> bool {
        let failure = match m {
            Some(Ok(Message::Binary(bytes))) => {
                match device_codec::decode(&bytes) {
                    Ok(frame) => self.session.handle_frame(now, frame),
                    Err(e) => self
                        .session
                        .handle_malformed(now, ProtocolError::BadFrame(Shared::new(e))),
                }
                return !self.session.is_disconnected();
            }
            // Answered by tungstenite itself; not our heartbeat.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return true,
            Some(Ok(Message::Text(_))) => {
                self.session
                    .handle_malformed(now, ProtocolError::UnexpectedText);
                return !self.session.is_disconnected();
            }
            Some(Ok(Message::Close(c))) => TransportError::closed(c),
            Some(Err(e)) => TransportError::Receive(Shared::new(e)),
            None => TransportError::Eof,
        };
        self.session.transport_failed(now, failure);
        false
    }

    /// Sends what the session queued. Bounded by the session's next deadline:
    /// a write that cannot complete by then means the link is dead.
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), TransportError> {
        let mut frames = Vec::new();
        while let Some(f) = self.session.poll_transmit() {
            frames.push(
                device_codec::encode(&f).map_err(|e| TransportError::Encode(Shared::new(e)))?,
            );
        }
        if frames.is_empty() {
            return Ok(());
        }
        let deadline = self
            .session
            .poll_timeout()
            .unwrap_or_else(|| clock::now() + GOAWAY_GRACE);
        let send = async {
            for f in frames {
                ws.feed(Message::Binary(f.into())).await?;
            }
            ws.flush().await
        };
        tokio::select! {
            r = send => r.map_err(|e| TransportError::Send(Shared::new(e))),
            _ = self.timer.sleep_until(deadline) => Err(TransportError::SendStalled),
        }
    }

    /// Shutdown: GoAway to the gateway and a clean close, within a grace period.
    async fn goodbye(&mut self, ws: &mut Ws) {
        let goaway = self.session.shutdown();
        let mut frames = Vec::new();
        while let Some(f) = self.session.poll_transmit() {
            if let Ok(b) = device_codec::encode(&f) {
                frames.push(b);
            }
        }
        let _ = clock::timeout(GOAWAY_GRACE, async {
            for f in frames {
                ws.feed(Message::Binary(f.into())).await?;
            }
            ws.close(None).await
        })
        .await;
        tracing::info!(goaway, "link closed for shutdown");
    }
}

/// Makes dropping `ws` reset the TCP connection (zero linger) instead of
/// closing it: the kernel discards what is unsent or unacknowledged — the
/// unanswered Ping — rather than retransmitting it into a dead NAT mapping for
/// minutes, and the socket does not linger in FIN_WAIT.
fn abort(ws: &Ws) {
    let (tcp, _) = ws.get_ref().get_ref();
    match tcp.set_zero_linger() {
        Ok(()) => tracing::debug!("resetting the silent connection"),
        Err(e) => tracing::warn!(error = %e, "cannot reset the silent connection; closing it"),
    }
}

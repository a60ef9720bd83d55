//! The protocol session of one device link: everything between the socket
//! (`transport`) and the store.
//!
//! Owns hello and authentication, claiming the device in the
//! [`Registry`](crate::registry::Registry) (which gives the session its poke
//! channel and its "replaced" signal), resuming after the device's
//! `last_committed_seq`, delivering new messages when poked, cumulative acks,
//! ping, idle holding, and closing with `GoAway` when replaced or shutting
//! down. The device's requests (register, token status, ...) are answered in
//! `requests`.
//!
//! Delivery is ack-gated: at most [`WINDOW`] messages are in flight unacked, and
//! the queue is read [`WINDOW`] entries at a time, so a device with a huge
//! backlog costs bounded memory. Messages are deleted only on the device's ack,
//! so a dropped connection loses nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use syspush_proto::PROTOCOL_VERSION;
use syspush_proto::device::{self, ErrorCode, Frame, frame::Body};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::error::LinkError;
use super::requests;
use super::transport::Transport;
use crate::ids;
use crate::registry::{Claim, ConnHandle, POKE_CAPACITY, Poke};
use crate::state::{Shared, stopping};

/// The device must send its `ClientHello` within this time.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most unacked `Deliver`s in flight, and the replay batch size.
pub const WINDOW: usize = 256;

/// How the session loop should go on after handling one input.
enum Next {
    Continue,
    Stop,
}

/// Runs one session on an upgraded connection, from the hello to the close.
pub(super) async fn run(shared: Arc<Shared>, mut link: Transport) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, link.read_frame()).await {
        Err(_) => {
            tracing::debug!("no ClientHello in time");
            return link.close().await;
        }
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => return link.fail(error).await,
    };
    let Some(Body::ClientHello(hello)) = hello.body else {
        return link
            .fail(LinkError::Unexpected(
                "a frame other than ClientHello first",
            ))
            .await;
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let msg = format!(
            "protocol version {} unsupported; this gateway speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        );
        let _ = link
            .send_error(ErrorCode::ErrorUnsupportedVersion, &msg, 0)
            .await;
        return link.close().await;
    }
    match authenticate(&shared, &hello).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(device_id = %hello.device_id, "device authentication failed");
            let _ = link
                .send_error(ErrorCode::ErrorUnauthenticated, "bad device credentials", 0)
                .await;
            return link.close().await;
        }
        Err(error) => return link.fail(error).await,
    }
    link.device_id = hello.device_id.clone();

    // Claim the device before reading its queue: a send committed before the
    // claim is found by the replay below, one committed after it pokes us.
    let registry = Arc::clone(&shared.registry);
    let (pokes_tx, pokes) = mpsc::channel(POKE_CAPACITY);
    let replaced = Arc::new(Notify::new());
    let generation = registry.next_generation();
    let handle = ConnHandle {
        generation,
        pokes: pokes_tx,
        replaced: Arc::clone(&replaced),
    };
    if let Claim::Superseded = registry.claim(&link.device_id, handle) {
        let _ = link.go_away("replaced").await;
        return link.close().await;
    }
    tracing::info!(device_id = %link.device_id, generation, idle = hello.idle, "device connected");
    let mut session = Session {
        link,
        shared,
        pokes,
        replaced,
        idle: hello.idle,
        cursor: 0,
        acked: 0,
        in_flight: VecDeque::new(),
        pending: true,
        held: false,
        hold_until: None,
    };
    let result = session.serve(hello.last_committed_seq).await;
    registry.release(&session.link.device_id, generation);
    match result {
        Ok(()) => session.link.close().await,
        Err(error) => session.link.fail(error).await,
    }
}

/// Checks the hello's credentials against the stored secret hash.
async fn authenticate(shared: &Shared, hello: &device::ClientHello) -> Result<bool, LinkError> {
    if hello.device_id.is_empty() || hello.secret.is_empty() {
        return Ok(false);
    }
    let device_id = hello.device_id.clone();
    let stored = shared
        .store(move |s| s.device_secret_hash(&device_id))
        .await?;
    Ok(stored.is_some_and(|h| ids::hashes_equal(&h, &ids::hash_secret(&hello.secret))))
}

/// A claimed, authenticated session: delivery state and the main loop.
struct Session {
    link: Transport,
    shared: Arc<Shared>,
    pokes: mpsc::Receiver<Poke>,
    replaced: Arc<Notify>,
    /// The device said it is idle: normal-priority messages wait for its next
    /// ping (its radio is awake then) or a high-priority message.
    idle: bool,
    /// Highest seq sent (or known committed by the device).
    cursor: u64,
    /// Highest seq acked.
    acked: u64,
    /// Seqs sent and not yet acked, oldest first (at most [`WINDOW`]).
    in_flight: VecDeque<u64>,
    /// The queue may hold messages after `cursor`.
    pending: bool,
    /// Pending messages are being held because the device is idle.
    held: bool,
    /// When held messages go out even without a heartbeat
    /// (`idle_max_hold_s`); `None` while nothing is held or no limit is set.
    hold_until: Option<Instant>,
}

impl Session {
    async fn serve(&mut self, last_committed_seq: u64) -> Result<(), LinkError> {
        let shared = Arc::clone(&self.shared);
        let device_id = self.link.device_id.clone();
        let hello = device::ServerHello {
            session_id: ids::new_id()?,
            heartbeat_min_s: shared.config.heartbeat_min_s,
            heartbeat_max_s: shared.config.heartbeat_max_s,
            server_time_ms: ids::now_ms(),
        };
        self.link.send(Body::ServerHello(hello)).await?;

        // The device has everything up to last_committed_seq. Clamp to what was
        // ever assigned, so a device ahead of this gateway's store (restored
        // backup) does not make us skip new messages.
        let id = device_id.clone();
        let committed = shared
            .store(move |s| {
                let committed = last_committed_seq.min(s.last_seq(&id)?);
                s.ack(&id, committed)?;
                Ok(committed)
            })
            .await?;
        self.cursor = committed;
        self.acked = committed;
        // Right after hello the radio is awake: replay regardless of idle.
        self.flush().await?;
        // Revocations the device missed while offline.
        requests::send_revocations(&mut self.link, &self.shared).await?;

        // A silent peer (NAT dropped the mapping) is given up after this long.
        let max_silence =
            Duration::from_secs(u64::from(shared.config.heartbeat_max_s) * 3 / 2 + 30);
        let mut deadline = Instant::now() + max_silence;
        let mut shutdown = shared.shutdown.clone();
        let mut pokes_open = true;
        loop {
            tokio::select! {
                () = self.replaced.notified() => {
                    tracing::info!(device_id, "replaced by a newer connection");
                    self.link.go_away("replaced").await?;
                    return Ok(());
                }
                () = stopping(&mut shutdown) => {
                    self.link.go_away("shutdown").await?;
                    return Ok(());
                }
                frame = self.link.read_frame() => {
                    deadline = Instant::now() + max_silence;
                    self.shared.saw(&self.link.device_id);
                    let Some(frame) = frame? else {
                        tracing::info!(device_id, "device disconnected");
                        return Ok(());
                    };
                    if let Next::Stop = self.on_frame(frame).await? {
                        return Ok(());
                    }
                }
                poke = self.pokes.recv(), if pokes_open => match poke {
                    Some(poke) => self.on_poke(poke, true).await?,
                    // The registry dropped our handle: `replaced` fires too.
                    None => pokes_open = false,
                },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::info!(device_id, "no traffic from the device; closing");
                    return Ok(());
                }
                // Only armed while something is held and a limit is configured:
                // an idle link with nothing held has no timer here.
                () = sleep_until_opt(self.hold_until), if self.hold_until.is_some() => {
                    tracing::debug!(device_id, "idle hold limit reached; sending held messages");
                    self.flush().await?;
                }
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<Next, LinkError> {
        let Some(body) = frame.body else {
            return Err(LinkError::Unexpected("an empty frame"));
        };
        match body {
            Body::Ack(ack) => self.on_ack(ack.seq).await?,
            Body::Ping(ping) => {
                // A heartbeat: the radio is up, so deliver everything waiting —
                // held messages and any poke not yet looked at — before the Pong,
                // and the exchange stays one burst.
                while let Ok(poke) = self.pokes.try_recv() {
                    self.on_poke(poke, false).await?;
                }
                if self.pending {
                    self.flush().await?;
                }
                self.link
                    .send(Body::Pong(device::Pong { nonce: ping.nonce }))
                    .await?;
            }
            Body::SetIdle(set) => {
                self.idle = set.idle;
                if !self.idle && self.pending {
                    self.flush().await?;
                }
            }
            Body::Register(req) => requests::register(&mut self.link, &self.shared, req).await?,
            Body::TokenStatusRequest(req) => {
                requests::token_status(&mut self.link, &self.shared, req).await?
            }
            Body::TestPushRequest(req) => {
                requests::test_push(&mut self.link, &self.shared, req).await?
            }
            Body::Unregister(req) => {
                requests::unregister(&mut self.link, &self.shared, req).await?
            }
            Body::Pong(_) => {}
            Body::Error(error) => {
                tracing::warn!(device_id = %self.link.device_id, code = error.code, message = %error.message, "device reported an error");
            }
            Body::Goaway(away) => {
                tracing::info!(device_id = %self.link.device_id, reason = %away.reason, "device is going away");
                return Ok(Next::Stop);
            }
            Body::ClientHello(_) => return Err(LinkError::Unexpected("a second ClientHello")),
            Body::ServerHello(_)
            | Body::Deliver(_)
            | Body::Registered(_)
            | Body::Unregistered(_)
            | Body::TokenStatusReply(_)
            | Body::TestPushReply(_)
            | Body::TokenRevoked(_) => return Err(LinkError::Unexpected("a gateway-only frame")),
        }
        Ok(Next::Continue)
    }

    /// A poke from the send path. `deliver_now`: flush unless held by idle
    /// (otherwise the caller flushes).
    async fn on_poke(&mut self, poke: Poke, deliver_now: bool) -> Result<(), LinkError> {
        match poke {
            Poke::Message { high_priority } => {
                self.pending = true;
                if self.idle && !high_priority {
                    self.held = true;
                    if self.hold_until.is_none() {
                        self.hold_until = self
                            .shared
                            .config
                            .idle_max_hold_s
                            .map(|s| Instant::now() + Duration::from_secs(s));
                    }
                } else if deliver_now {
                    self.flush().await?;
                }
            }
            Poke::TokenRevoked {
                app_id,
                token,
                reason,
            } => {
                requests::send_revocation(&mut self.link, &self.shared, app_id, token, reason)
                    .await?
            }
        }
        Ok(())
    }

    /// Cumulative ack: deletes everything <= seq. An ack beyond what was sent
    /// is clamped, so a confused device cannot delete messages it never saw.
    async fn on_ack(&mut self, seq: u64) -> Result<(), LinkError> {
        let seq = seq.min(self.cursor);
        if seq <= self.acked {
            return Ok(());
        }
        let id = self.link.device_id.clone();
        self.shared.store(move |s| s.ack(&id, seq)).await?;
        self.acked = seq;
        while self.in_flight.front().is_some_and(|s| *s <= seq) {
            self.in_flight.pop_front();
        }
        // The window reopened: continue a replay that was waiting for it.
        if self.pending && !self.held {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends queued messages after `cursor` until the queue is drained or the
    /// window is full.
    async fn flush(&mut self) -> Result<(), LinkError> {
        self.held = false;
        self.hold_until = None;
        while self.pending && self.in_flight.len() < WINDOW {
            let room = WINDOW - self.in_flight.len();
            let (id, after) = (self.link.device_id.clone(), self.cursor);
            let batch = self
                .shared
                .store(move |s| s.read_after(&id, after, room, ids::now_ms()))
                .await?;
            self.pending = batch.more;
            for (seq, notification) in batch.messages {
                self.cursor = seq;
                self.in_flight.push_back(seq);
                let message_id = notification.message_id.clone();
                self.link
                    .send(Body::Deliver(device::Deliver {
                        seq,
                        notification: Some(notification),
                    }))
                    .await?;
                tracing::debug!(device_id = %self.link.device_id, seq, message_id, "delivered");
            }
        }
        Ok(())
    }
}

/// Sleeps until `at`; never completes for `None` (the select arm is disabled then).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

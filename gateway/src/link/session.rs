//! The device link: one WebSocket session per connected device (`GET /v1/device`).
//!
//! Owns the gateway side of the device protocol (contracts.md, "Device link"):
//! hello and authentication, claiming the device in the [`Registry`](crate::registry::Registry), replaying
//! the queue after the device's `last_committed_seq`, delivering new messages
//! when poked, cumulative acks, register/unregister, ping, idle holding, and
//! closing with `GoAway` when replaced or shutting down.
//!
//! Delivery is ack-gated: at most [`WINDOW`] messages are in flight unacked, and
//! the queue is read [`WINDOW`] entries at a time, so a device with a huge
//! backlog costs bounded memory. Messages are deleted only on the device's ack,
//! so a dropped connection loses nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use syspush_proto::device::{self, ErrorCode, Frame, frame::Body};
use syspush_proto::{CodecError, MAX_FRAME_LEN, PROTOCOL_VERSION, device_codec};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::Shared;
use crate::ids::{self, RandomError};
use crate::registry::{Claim, ConnHandle, POKE_CAPACITY, Poke};
use crate::store::StoreError;

mod requests;

/// The device must send its `ClientHello` within this time.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most unacked `Deliver`s in flight, and the replay batch size.
pub const WINDOW: usize = 256;
/// A frame that cannot be written within this time ends the session.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// WebSocket message cap: a little above the frame cap so an oversized frame
/// still reaches our codec and gets a proper `ERROR_BAD_FRAME`.
const WS_MAX_MESSAGE: usize = MAX_FRAME_LEN + 4096;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The WebSocket failed (I/O, protocol, size cap).
    #[error("websocket: {0}")]
    Ws(#[source] axum::Error),
    /// The peer did not take a frame within [`WRITE_TIMEOUT`].
    #[error("write timed out")]
    WriteTimeout,
    /// A frame did not decode.
    #[error("bad frame: {0}")]
    BadFrame(#[source] CodecError),
    /// A frame that the device must not send, or a text message.
    #[error("unexpected {0} from the device")]
    Unexpected(&'static str),
    /// A frame we built does not encode (cannot happen within the API's limits).
    #[error("cannot encode frame: {0}")]
    Encode(#[source] CodecError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The RNG failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// `GET /v1/device`: upgrades to the device link.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => ws
            .max_message_size(WS_MAX_MESSAGE)
            .max_frame_size(WS_MAX_MESSAGE)
            .on_upgrade(move |socket| run(shared, socket)),
        Err(rejection) => {
            let body =
                serde_json::json!({ "error": format!("websocket upgrade required: {rejection}") });
            (rejection.status(), axum::Json(body)).into_response()
        }
    }
}

/// How the session loop should go on after handling one input.
enum Next {
    Continue,
    Stop,
}

async fn run(shared: Arc<Shared>, socket: WebSocket) {
    let mut link = Link {
        socket,
        shared,
        device_id: String::new(),
    };
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
    match authenticate(&link.shared, &hello).await {
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
    let registry = Arc::clone(&link.shared.registry);
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

/// The socket plus what every phase of a session needs.
struct Link {
    socket: WebSocket,
    shared: Arc<Shared>,
    device_id: String,
}

impl Link {
    /// Next protocol frame; `None` when the peer closed. WebSocket pings are
    /// answered by the library and skipped here.
    async fn read_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            match self.socket.recv().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(error)) => return Err(LinkError::Ws(error)),
                Some(Ok(Message::Binary(bytes))) => {
                    return device_codec::decode(&bytes)
                        .map(Some)
                        .map_err(LinkError::BadFrame);
                }
                Some(Ok(Message::Text(_))) => return Err(LinkError::Unexpected("a text message")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }

    async fn send(&mut self, body: Body) -> Result<(), LinkError> {
        let bytes = device_codec::encode(&device_codec::frame(body)).map_err(LinkError::Encode)?;
        // A peer that stops reading must not pin this task (and shutdown) forever.
        match tokio::time::timeout(
            WRITE_TIMEOUT,
            self.socket.send(Message::Binary(bytes.into())),
        )
        .await
        {
            Ok(sent) => sent.map_err(LinkError::Ws),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }

    async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        request_id: u64,
    ) -> Result<(), LinkError> {
        let body = Body::Error(device::Error {
            code: code as i32,
            message: message.to_owned(),
            request_id,
        });
        self.send(body).await
    }

    async fn go_away(&mut self, reason: &str) -> Result<(), LinkError> {
        self.send(Body::Goaway(device::GoAway {
            reason: reason.to_owned(),
            retry_after_s: 0,
        }))
        .await
    }

    /// Best-effort close handshake; the connection is dropped afterwards anyway.
    async fn close(mut self) {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(Message::Close(None))).await;
    }

    /// Ends a session that failed: tells the device why when the protocol says
    /// so, logs, closes.
    async fn fail(mut self, error: LinkError) {
        match &error {
            LinkError::BadFrame(_) | LinkError::Unexpected(_) => {
                tracing::info!(device_id = %self.device_id, %error, "closing link: bad frame");
                let _ = self
                    .send_error(ErrorCode::ErrorBadFrame, &error.to_string(), 0)
                    .await;
            }
            LinkError::WriteTimeout => {
                tracing::info!(device_id = %self.device_id, "closing link: the device stopped reading");
                return;
            }
            LinkError::Ws(_) => {
                // Usually the connection is gone and this send fails silently;
                // when the peer exceeded the WebSocket size cap it is still up
                // and deserves the protocol's answer.
                tracing::debug!(device_id = %self.device_id, %error, "link dropped");
                let _ = self
                    .send_error(ErrorCode::ErrorBadFrame, &error.to_string(), 0)
                    .await;
            }
            LinkError::Store(_) | LinkError::Random(_) | LinkError::Encode(_) => {
                tracing::error!(device_id = %self.device_id, %error, "closing link: internal error");
                let _ = self
                    .send_error(ErrorCode::ErrorInternal, "internal error", 0)
                    .await;
            }
        }
        self.close().await
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
    link: Link,
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
        let shared = Arc::clone(&self.link.shared);
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
        self.send_revocations().await?;

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
                () = crate::stopping(&mut shutdown) => {
                    self.link.go_away("shutdown").await?;
                    return Ok(());
                }
                frame = self.link.read_frame() => {
                    deadline = Instant::now() + max_silence;
                    self.seen();
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
            Body::Register(req) => self.on_register(req).await?,
            Body::TokenStatusRequest(req) => self.on_token_status(req).await?,
            Body::TestPushRequest(req) => self.on_test_push(req).await?,
            Body::Unregister(req) => self.on_unregister(req).await?,
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
                            .link
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
            } => self.send_revocation(app_id, token, reason).await?,
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
        self.link.shared.store(move |s| s.ack(&id, seq)).await?;
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
                .link
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

    async fn on_register(&mut self, req: device::Register) -> Result<(), LinkError> {
        let (device_id, app_id) = (self.link.device_id.clone(), req.app_id.clone());
        let candidate = ids::new_secret()?;
        let result = self
            .link
            .shared
            .store(move |s| match s.app(&app_id)? {
                None => Ok(None),
                Some(_) => s.register_token(&device_id, &app_id, &candidate).map(Some),
            })
            .await;
        match result {
            Ok(Some(token)) => {
                tracing::info!(device_id = %self.link.device_id, app_id = %req.app_id, "registered");
                let reply = device::Registered {
                    request_id: req.request_id,
                    app_id: req.app_id,
                    token,
                };
                self.link.send(Body::Registered(reply)).await
            }
            Ok(None) => {
                let msg = format!("unknown app {:?}", req.app_id);
                self.link
                    .send_error(ErrorCode::ErrorBadRequest, &msg, req.request_id)
                    .await
            }
            Err(error) => {
                tracing::error!(device_id = %self.link.device_id, %error, "register failed");
                self.link
                    .send_error(ErrorCode::ErrorInternal, "internal error", req.request_id)
                    .await
            }
        }
    }

    async fn on_unregister(&mut self, req: device::Unregister) -> Result<(), LinkError> {
        let (device_id, app_id) = (self.link.device_id.clone(), req.app_id.clone());
        match self
            .link
            .shared
            .store(move |s| s.revoke_token(&device_id, &app_id))
            .await
        {
            Ok(revoked) => {
                tracing::info!(device_id = %self.link.device_id, app_id = %req.app_id, had_token = revoked.is_some(), "unregistered");
                let reply = device::Unregistered {
                    request_id: req.request_id,
                    app_id: req.app_id,
                };
                self.link.send(Body::Unregistered(reply)).await
            }
            Err(error) => {
                tracing::error!(device_id = %self.link.device_id, %error, "unregister failed");
                self.link
                    .send_error(ErrorCode::ErrorInternal, "internal error", req.request_id)
                    .await
            }
        }
    }
}

/// Sleeps until `at`; never completes for `None` (the select arm is disabled then).
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

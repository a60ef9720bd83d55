//! The gateway link driver: owns the TLS WebSocket and feeds the sans-I/O
//! [`Session`] — bytes in, frames out, timer deadlines on `CLOCK_BOOTTIME` —
//! and carries out what it decides: dial (enrolling first if needed), commit
//! deliveries to the store, ack, wake apps, answer register/unregister.
//!
//! Frames that are already readable when one arrives are drained and handled
//! together: their deliveries go into ONE store transaction with the new
//! `last_committed_seq`, then ONE cumulative Ack goes out while the radio is
//! still awake from the incoming data. Only after that are the app
//! connections told (through the [`Hub`]) that there is something to read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use rustls::ClientConfig;
use syspush_proto::MAX_FRAME_LEN;
use syspush_proto::common::Notification;
use syspush_proto::device_codec;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Timer};
use crate::config::{Config, Endpoint};
use crate::hub::{AppEvent, Hub};
use crate::netwatch::{Netwatch, NetwatchError};
use crate::notify::Notifier;
use crate::session::{CloseReason, Event, Hello, Session, SessionConfig};
use crate::store::Store;
use crate::wake::Waker;
use crate::{enroll, tls};

mod handle;
use handle::lock;
pub use handle::{LinkCommand, LinkHandle, LinkStatus, RequestError};

/// Most frames handled (and committed) as one batch.
const MAX_BATCH: usize = 256;
/// How long shutdown waits to deliver the GoAway.
const GOAWAY_GRACE: Duration = Duration::from_secs(2);
/// Network identity when none can be read (no netlink).
const UNKNOWN_NETWORK: &str = "unknown";
/// Queued register/unregister commands from apps.
const COMMAND_QUEUE: usize = 64;

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Fatal errors of the link task.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The boot-time timer could not be created or armed.
    #[error("link timer: {0}")]
    Timer(#[source] std::io::Error),
    /// Randomness for the backoff jitter is unavailable.
    #[error("no system randomness")]
    Random,
    /// The configured gateway cannot be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

enum Reply {
    Register(oneshot::Sender<Result<String, RequestError>>),
    Unregister(oneshot::Sender<Result<(), RequestError>>),
    TokenStatus(oneshot::Sender<Result<syspush_proto::device::TokenStatusReply, RequestError>>),
    TestPush(oneshot::Sender<Result<String, RequestError>>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Register(r) => r.is_closed(),
            Reply::Unregister(r) => r.is_closed(),
            Reply::TokenStatus(r) => r.is_closed(),
            Reply::TestPush(r) => r.is_closed(),
        }
    }

    fn fail(self, err: RequestError) {
        match self {
            Reply::Register(r) => drop(r.send(Err(err))),
            Reply::Unregister(r) => drop(r.send(Err(err))),
            Reply::TokenStatus(r) => drop(r.send(Err(err))),
            Reply::TestPush(r) => drop(r.send(Err(err))),
        }
    }
}

/// What the link needs and never changes.
struct Ctx {
    config: Arc<Config>,
    endpoint: Endpoint,
    tls: Arc<ClientConfig>,
    store: Arc<Store>,
    hub: Arc<Hub>,
    notifier: Arc<Notifier>,
    /// Set from each ServerHello; read for message expiry.
    gateway_clock: clock::GatewayClock,
    status: Arc<Mutex<LinkStatus>>,
    shutdown: CancellationToken,
}

/// The link task. Build with [`Link::new`], run with [`Link::run`].
pub struct Link {
    ctx: Ctx,
    commands: mpsc::Receiver<LinkCommand>,
    waker: Waker,
}

/// Mutable driver state.
struct Driver {
    session: Session,
    queued: Vec<LinkCommand>,
    replies: HashMap<u64, Reply>,
    waker: Waker,
    /// Identity of the network the device is on (the key of what is learned).
    network: String,
}

/// How a connection ended for the outer loop.
enum Ended {
    Disconnected,
    Shutdown,
}

impl Link {
    /// Prepares the link (nothing is dialed until [`Link::run`]).
    pub fn new(
        config: Arc<Config>,
        tls: Arc<ClientConfig>,
        store: Arc<Store>,
        hub: Arc<Hub>,
        notifier: Arc<Notifier>,
        gateway_clock: clock::GatewayClock,
        shutdown: CancellationToken,
    ) -> Result<(Self, LinkHandle), LinkError> {
        let endpoint = config.endpoint().clone();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let status = Arc::new(Mutex::new(LinkStatus::default()));
        let waker = Waker::from_apps(&config.apps);
        let ctx_system_uids: Arc<[u32]> = config.system_uids.clone().into();
        let ctx = Ctx {
            config,
            endpoint,
            tls,
            store,
            hub,
            notifier,
            gateway_clock,
            status: status.clone(),
            shutdown,
        };
        Ok((
            Self {
                ctx,
                commands: rx,
                waker,
            },
            LinkHandle {
                commands: tx,
                status,
                system_uids: ctx_system_uids,
            },
        ))
    }

    /// Runs until shutdown: dial, serve the session, redial with backoff.
    pub async fn run(self) -> Result<(), LinkError> {
        let Link {
            ctx,
            mut commands,
            waker,
        } = self;
        let mut timer = Timer::new().map_err(LinkError::Timer)?;
        let cfg = SessionConfig {
            heartbeat: ctx.config.heartbeat_config(),
            pong_timeout: Duration::from_secs(ctx.config.pong_timeout_s.into()),
            ..SessionConfig::default()
        };
        let mut d = Driver {
            session: Session::new(cfg, clock::now(), seed()?),
            queued: Vec::new(),
            replies: HashMap::new(),
            waker,
            network: UNKNOWN_NETWORK.to_string(),
        };
        let mut netwatch = match Netwatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the network; assuming it is always up");
                None
            }
        };
        let initial = match &netwatch {
            Some(w) => Ok(w.current().map(str::to_string)),
            None => Ok(Some(UNKNOWN_NETWORK.to_string())),
        };
        d.on_network(&ctx, &mut netwatch, initial);
        loop {
            // Wait for the dial time (or, offline, for a network), collecting
            // app commands meanwhile.
            while !d.session.wants_dial(clock::now()) {
                if d.session.is_stopped() {
                    return Ok(());
                }
                let at = d.session.poll_timeout();
                if at.is_none() {
                    timer.disarm().map_err(LinkError::Timer)?;
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    r = timer.sleep_until(at.unwrap_or_default()), if at.is_some() => {
                        r.map_err(LinkError::Timer)?
                    }
                    Some(cmd) = commands.recv() => d.on_command(cmd),
                    n = next_network(&mut netwatch) => d.on_network(&ctx, &mut netwatch, n),
                }
                d.publish_status(&ctx);
            }
            d.session.dial_started(clock::now());
            // Requests whose callers gave up are not sent on the new session.
            d.replies.retain(|id, r| {
                let keep = !r.is_closed();
                if !keep {
                    d.session.cancel(*id);
                }
                keep
            });
            let Some(deadline) = d.session.poll_timeout() else {
                return Ok(());
            };
            tracing::debug!(gateway = %ctx.config.gateway, "dialing");
            let dialed = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ok(()),
                r = connect(&ctx) => r,
                r = timer.sleep_until(deadline) => {
                    r.map_err(LinkError::Timer)?;
                    d.session.handle_timeout(clock::now());
                    d.process_events(&ctx);
                    continue;
                }
                // The dial was on the old network (or on none): start over.
                n = next_network(&mut netwatch) => {
                    d.on_network(&ctx, &mut netwatch, n);
                    d.process_events(&ctx);
                    continue;
                }
            };
            match dialed {
                Err(e) => {
                    lock(&ctx.status).last_error = Some(e.clone());
                    d.session.transport_failed(clock::now(), e);
                    d.process_events(&ctx);
                }
                Ok((mut ws, hello)) => {
                    d.session.transport_open(clock::now(), hello);
                    let ended = d
                        .serve(&ctx, &mut ws, &mut timer, &mut commands, &mut netwatch)
                        .await?;
                    d.publish_status(&ctx);
                    if let Ended::Shutdown = ended {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The next change of network identity; never, without a watcher.
async fn next_network(nw: &mut Option<Netwatch>) -> Result<Option<String>, NetwatchError> {
    match nw {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

fn seed() -> Result<u64, LinkError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| LinkError::Random)?;
    Ok(u64::from_le_bytes(b))
}

fn ws_config() -> WebSocketConfig {
    // Frames are capped at 64 KiB by the protocol; refuse bigger ones before buffering them.
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Credentials (enrolling if needed), then TCP + TLS + WebSocket.
async fn connect(ctx: &Ctx) -> Result<(Ws, Hello), String> {
    let (device_id, secret) = credentials(ctx).await?;
    lock(&ctx.status).device_id = device_id.clone();
    let last_committed_seq = ctx.store.last_committed_seq().map_err(|e| e.to_string())?;
    let stream = tls::dial(&ctx.tls, &ctx.endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("wss://{}/v1/device", ctx.endpoint.authority());
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok((
        ws,
        Hello {
            device_id,
            secret,
            last_committed_seq,
        },
    ))
}

async fn credentials(ctx: &Ctx) -> Result<(String, String), String> {
    let stored = ctx.store.credentials().map_err(|e| e.to_string())?;
    if let (Some(id), Some(secret)) = (&ctx.config.device_id, &ctx.config.device_secret) {
        // A different identity has its own sequence space: record it so the
        // resume point starts over instead of skipping the new device's messages.
        if stored.as_ref().is_none_or(|(sid, _)| sid != id) {
            ctx.store
                .set_credentials(id, secret.expose())
                .map_err(|e| e.to_string())?;
            tracing::info!(device_id = %id, "using the configured device credentials");
        }
        return Ok((id.clone(), secret.expose().to_string()));
    }
    if let Some(c) = stored {
        return Ok(c);
    }
    let Some(key) = &ctx.config.enrollment_key else {
        return Err("no credentials: set enrollment_key or device_id + device_secret".into());
    };
    let e = enroll::enroll(&ctx.tls, &ctx.endpoint, key.expose())
        .await
        .map_err(|e| e.to_string())?;
    ctx.store
        .set_credentials(&e.device_id, &e.secret)
        .map_err(|e| e.to_string())?;
    tracing::info!(device_id = %e.device_id, "enrolled with the gateway");
    Ok((e.device_id, e.secret))
}

impl Driver {
    /// Serves one connection until the session drops it or shutdown.
    async fn serve(
        &mut self,
        ctx: &Ctx,
        ws: &mut Ws,
        timer: &mut Timer,
        commands: &mut mpsc::Receiver<LinkCommand>,
        netwatch: &mut Option<Netwatch>,
    ) -> Result<Ended, LinkError> {
        loop {
            // Events first: committing deliveries queues the Ack and submitting
            // requests queues their frames; both must go out now, not with the
            // next heartbeat.
            self.process_events(ctx);
            if self.session.is_disconnected() {
                return Ok(Ended::Disconnected);
            }
            if let Err(e) = self.flush(ws, timer).await {
                self.session.transport_failed(clock::now(), e);
                continue;
            }
            let Some(deadline) = self.session.poll_timeout() else {
                return Ok(Ended::Disconnected);
            };
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => {
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
                r = timer.sleep_until(deadline) => {
                    r.map_err(LinkError::Timer)?;
                    self.session.handle_timeout(clock::now());
                }
                Some(cmd) = commands.recv() => self.on_command(cmd),
                n = next_network(netwatch) => self.on_network(ctx, netwatch, n),
            }
        }
    }

    /// The network identity changed (None: no default route), or the watcher failed.
    fn on_network(
        &mut self,
        ctx: &Ctx,
        netwatch: &mut Option<Netwatch>,
        change: Result<Option<String>, NetwatchError>,
    ) {
        let now = clock::now();
        match change {
            Ok(Some(network)) => {
                let learned = ctx.store.learned(&network).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the learned heartbeat");
                    None
                });
                tracing::info!(
                    network,
                    known = learned.is_some(),
                    "on a network; dialing now"
                );
                self.network = network;
                if self.session.is_offline() {
                    ctx.notifier.offline(false);
                }
                self.session.network_up(now, learned);
            }
            Ok(None) => {
                tracing::info!("no default route; not dialing until there is one");
                self.session.network_lost(now);
                ctx.notifier.offline(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "network watch failed; assuming the network stays up");
                *netwatch = None;
                if self.session.is_offline() {
                    ctx.notifier.offline(false);
                    self.session.network_up(now, None);
                }
            }
        }
    }

    /// Feeds one WebSocket message to the session; false once the transport is done.
    fn on_ws_message(
        &mut self,
        now: Duration,
        m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> bool {
        match m {
            Some(Ok(Message::Binary(bytes))) => match device_codec::decode(&bytes) {
                Ok(frame) => {
                    self.session.handle_frame(now, frame);
                    !self.session.is_disconnected()
                }
                Err(e) => {
                    self.session
                        .transport_failed(now, format!("bad frame from gateway: {e}"));
                    false
                }
            },
            // Answered by tungstenite itself; not our heartbeat.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => true,
            Some(Ok(Message::Text(_))) => {
                self.session
                    .transport_failed(now, "unexpected text message from gateway");
                false
            }
            Some(Ok(Message::Close(c))) => {
                let why = c
                    .map(|c| format!("{} {}", c.code, c.reason))
                    .unwrap_or_default();
                self.session
                    .transport_failed(now, format!("closed by gateway {why}").trim_end());
                false
            }
            Some(Err(e)) => {
                self.session.transport_failed(now, e.to_string());
                false
            }
            None => {
                self.session
                    .transport_failed(now, "connection closed by gateway");
                false
            }
        }
    }

    /// Sends what the session queued. Bounded by the session's next deadline:
    /// a write that cannot complete by then means the link is dead.
    async fn flush(&mut self, ws: &mut Ws, timer: &mut Timer) -> Result<(), String> {
        let mut frames = Vec::new();
        while let Some(f) = self.session.poll_transmit() {
            frames.push(device_codec::encode(&f).map_err(|e| format!("encode: {e}"))?);
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
            r = send => r.map_err(|e| format!("send: {e}")),
            _ = timer.sleep_until(deadline) => Err("send stalled".into()),
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

    fn on_command(&mut self, cmd: LinkCommand) {
        if let LinkCommand::SetIdle { idle } = cmd {
            // Not queued: the session keeps the flag for the next hello.
            tracing::info!(idle, "idle mode");
            self.session.set_idle(idle);
            return;
        }
        if self.session.is_live() {
            self.submit(cmd);
        } else {
            self.queued.retain(|c| !c.is_abandoned());
            self.queued.push(cmd);
        }
    }

    fn submit(&mut self, cmd: LinkCommand) {
        if cmd.is_abandoned() {
            return;
        }
        match cmd {
            LinkCommand::Register { app_id, reply } => {
                let id = self.session.register(app_id);
                self.replies.insert(id, Reply::Register(reply));
            }
            LinkCommand::Unregister { app_id, reply } => {
                let id = self.session.unregister(app_id);
                self.replies.insert(id, Reply::Unregister(reply));
            }
            LinkCommand::TokenStatus {
                app_id,
                token,
                reply,
            } => {
                let id = self.session.token_status(app_id, token);
                self.replies.insert(id, Reply::TokenStatus(reply));
            }
            LinkCommand::TestPush {
                app_id,
                token,
                reply,
            } => {
                let id = self.session.test_push(app_id, token);
                self.replies.insert(id, Reply::TestPush(reply));
            }
            LinkCommand::SetIdle { idle } => self.session.set_idle(idle),
        }
    }

    /// Acts on everything the session decided, committing deliveries in one batch.
    fn process_events(&mut self, ctx: &Ctx) {
        // Every wake-up of the loop passes here: the watchdog rides on it.
        ctx.notifier.watchdog();
        let mut batch: Vec<(u64, Option<Notification>)> = Vec::new();
        loop {
            while let Some(ev) = self.session.poll_event() {
                self.on_event(ctx, ev, &mut batch);
            }
            if batch.is_empty() {
                break;
            }
            self.commit(ctx, std::mem::take(&mut batch));
            // A failed commit closes the session: handle that event too.
        }
        self.publish_status(ctx);
    }

    fn on_event(&mut self, ctx: &Ctx, ev: Event, batch: &mut Vec<(u64, Option<Notification>)>) {
        match ev {
            Event::Established {
                session_id,
                heartbeat,
                server_time_ms,
            } => {
                if server_time_ms != 0 {
                    let offset_ms = ctx.gateway_clock.set_offset(server_time_ms);
                    if offset_ms.abs() > 60_000 {
                        tracing::warn!(
                            offset_ms,
                            "device clock differs from the gateway's; message expiry uses gateway time"
                        );
                    }
                }
                tracing::info!(
                    session_id,
                    heartbeat_s = heartbeat.as_secs(),
                    reconnects = self.session.reconnects(),
                    "link up"
                );
                ctx.notifier
                    .status(&format!("connected to {}", ctx.config.gateway));
                for cmd in std::mem::take(&mut self.queued) {
                    self.submit(cmd);
                }
            }
            Event::Deliver { seq, notification } => batch.push((seq, notification)),
            Event::Registered {
                request_id,
                app_id,
                token,
            } => {
                let result = ctx
                    .store
                    .set_token(&app_id, &token)
                    .map(|_| token)
                    .map_err(|e| RequestError::Store(e.to_string()));
                tracing::info!(app_id, ok = result.is_ok(), "registered");
                // A new token: an old revocation is no news any more.
                if let Err(e) = ctx.store.clear_revocation(&app_id) {
                    tracing::warn!(app_id, error = %e, "cannot clear a revocation");
                }
                if let Some(Reply::Register(r)) = self.replies.remove(&request_id) {
                    let _ = r.send(result);
                }
            }
            Event::Unregistered { request_id, app_id } => {
                let result = ctx
                    .store
                    .drop_app(&app_id)
                    .map(|_| ())
                    .map_err(|e| RequestError::Store(e.to_string()));
                tracing::info!(app_id, ok = result.is_ok(), "unregistered");
                if let Some(Reply::Unregister(r)) = self.replies.remove(&request_id) {
                    let _ = r.send(result);
                }
            }
            Event::RequestFailed {
                request_id,
                code,
                message,
            } => {
                tracing::warn!(request_id, code, message, "gateway refused a request");
                let err = RequestError::Rejected { code, message };
                if let Some(r) = self.replies.remove(&request_id) {
                    r.fail(err);
                }
            }
            Event::TokenStatus { request_id, reply } => {
                if let Some(Reply::TokenStatus(r)) = self.replies.remove(&request_id) {
                    let _ = r.send(Ok(reply));
                }
            }
            Event::TestPushSent {
                request_id,
                message_id,
            } => {
                if let Some(Reply::TestPush(r)) = self.replies.remove(&request_id) {
                    let _ = r.send(Ok(message_id));
                }
            }
            Event::TokenRevoked {
                app_id,
                token,
                reason,
            } => {
                // Token, pending messages and the "tell the app" note go in
                // one transaction; a connected app is told now, another at its
                // next hello (the note stays until then).
                match ctx.store.revoke(&app_id, &token, &reason) {
                    Ok(Some(dropped)) => {
                        tracing::info!(app_id, reason, dropped, "token revoked by the gateway");
                        if ctx.hub.connected(&app_id) {
                            ctx.hub.event(&app_id, AppEvent::TokenRevoked { reason });
                            if let Err(e) = ctx.store.clear_revocation(&app_id) {
                                tracing::warn!(app_id, error = %e, "cannot clear a revocation");
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(
                            app_id,
                            "revocation of a token that is not current; ignored"
                        )
                    }
                    Err(e) => tracing::error!(app_id, error = %e, "cannot drop revoked token"),
                }
            }
            Event::Learned(learned) => {
                tracing::info!(
                    network = %self.network,
                    good_s = learned.good.map(|d| d.as_secs()),
                    ceiling_s = learned.ceiling.map(|d| d.as_secs()),
                    state = self.session.heartbeat_state().as_str(),
                    "heartbeat learned"
                );
                if let Err(e) = ctx.store.set_learned(&self.network, learned) {
                    tracing::warn!(error = %e, "cannot remember the learned heartbeat");
                }
            }
            Event::Closed {
                reason,
                redial_at: None,
            } => {
                tracing::info!(reason = ?reason, "link down; waiting for a network");
                ctx.notifier.status("no network; waiting");
            }
            Event::Closed {
                reason,
                redial_at: Some(redial_at),
            } => {
                let redial_in_ms = redial_at.saturating_sub(clock::now()).as_millis() as u64;
                match &reason {
                    CloseReason::Rejected { code, message } => {
                        lock(&ctx.status).last_error =
                            Some(format!("gateway rejected the session: {message}"));
                        tracing::error!(code, message, redial_in_ms, "gateway rejected the session")
                    }
                    other => tracing::warn!(reason = ?other, redial_in_ms, "link down"),
                }
                ctx.notifier.status("disconnected; reconnecting");
            }
        }
    }

    fn commit(&mut self, ctx: &Ctx, batch: Vec<(u64, Option<Notification>)>) {
        let now = clock::now();
        match ctx.store.commit(&batch, ctx.gateway_clock.now_ms()) {
            Ok(out) => {
                self.session.committed(out.last_committed_seq);
                tracing::debug!(
                    frames = batch.len(),
                    stored = out.stored.len(),
                    duplicates = out.duplicates,
                    expired = out.expired,
                    collapsed = out.collapsed,
                    disabled = out.disabled,
                    seq = out.last_committed_seq,
                    "committed"
                );
                for (app_id, arrival) in &out.stored {
                    // disable_push: delivered if the app is connected, kept
                    // for it otherwise, but never a reason to wake it.
                    if !ctx.hub.publish(app_id, *arrival) && !out.silent.contains(arrival) {
                        self.waker.wake(app_id, now);
                    }
                }
            }
            Err(e) => {
                // Not acked: the gateway keeps the messages and resends them.
                tracing::error!(error = %e, "cannot commit deliveries; dropping the link");
                self.session.transport_failed(now, format!("store: {e}"));
            }
        }
    }

    fn publish_status(&self, ctx: &Ctx) {
        let mut s = lock(&ctx.status);
        s.connected = self.session.is_live();
        s.live_since = self.session.live_since();
        s.heartbeat = self.session.heartbeat();
        s.last_rx = self.session.last_rx();
        s.reconnects = self.session.reconnects();
        s.heartbeat_state = Some(self.session.heartbeat_state());
        s.network = Some(self.network.clone()).filter(|_| !self.session.is_offline());
        s.idle = self.session.idle();
    }
}

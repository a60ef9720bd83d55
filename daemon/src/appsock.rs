//! The local app socket: a stream Unix socket (mode 0666: the kernel-reported
//! peer uid, not file permissions, decides what a caller may do) speaking
//! varint length-delimited `AppRequest` / `DaemonMessage` frames.
//!
//! Each connection is one task. Deliveries are never queued per connection:
//! the connection keeps a cursor (the last arrival number it sent) and, when
//! the hub says its app has new messages, reads the next small batch from the
//! store, writes it, and only then reads the next one. A slow app therefore
//! costs one batch of memory and catches up from the store, and a fast one
//! gets messages as soon as they are committed. Register/unregister wait on
//! the gateway (up to 10 s) in a spawned task so the connection keeps
//! delivering meanwhile; their answers come back through a small bounded
//! queue.
//!
//! Caps, so that no client can grow the daemon's memory without bound:
//! - per connection: one inbound frame of at most `MAX_FRAME_LEN` (64 KiB;
//!   a larger announced length closes the connection before anything is
//!   buffered), one outbound batch of `FEED_BATCH` (32) deliveries, written
//!   with back-pressure (an app that stops reading stalls only its own task,
//!   and its messages wait in the store), and [`MAX_IN_FLIGHT`] gateway
//!   requests;
//! - connections: at most [`MAX_APP_CONNECTIONS`] in total and
//!   [`MAX_CONNECTIONS_PER_UID`] per uid (so one uid cannot take every slot).
//!   A connection over a cap gets `Error{ERROR_UNAVAILABLE}` and is closed;
//!   the refusal is logged (a warning per streak of refusals, then a count).

use std::collections::{BTreeSet, HashMap};
use std::fs::{DirBuilder, Permissions};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use syspush_proto::CodecError;
use syspush_proto::app::{self, AppRequest, DaemonMessage, ErrorCode, app_request, daemon_message};
use syspush_proto::app_codec::DelimitedCodec;
use syspush_proto::common::Notification;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::hub::{AppEvent, Hub, Subscription};
use crate::link::{LinkHandle, RequestError};
use crate::policy::Policy;
use crate::store::Store;

/// How long register/unregister wait for the gateway.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries read from the store and written per batch.
const FEED_BATCH: usize = 32;
/// Concurrent register/unregister requests per connection.
pub const MAX_IN_FLIGHT: usize = 4;
/// App connections served at once; more are refused (see the module docs).
/// At roughly 150 KiB of buffers per busy connection this bounds the socket's
/// memory to tens of MiB, and it stays far below a typical fd limit.
pub const MAX_APP_CONNECTIONS: usize = 256;
/// App connections one uid may hold at once (root included: a runaway tool
/// running as root must not lock every app out either).
pub const MAX_CONNECTIONS_PER_UID: usize = 64;

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum AppSockError {
    /// File system trouble around the socket path.
    #[error("app socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something that is not a socket sits at the path.
    #[error("app socket {0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// Another daemon answers on the path.
    #[error("app socket {0} is in use by a running process")]
    InUse(PathBuf),
}

/// What connections share.
#[derive(Debug)]
pub struct AppContext {
    /// The inbox.
    pub store: Arc<Store>,
    /// Commit notifications.
    pub hub: Arc<Hub>,
    /// uid -> app ids.
    pub policy: Policy,
    /// The gateway link.
    pub link: LinkHandle,
    /// For Status.
    pub gateway_url: String,
    /// Configured heartbeat (shown while no session is up).
    pub heartbeat_s: u64,
    /// Configured device id, if any (shown before the link knows one).
    pub device_id: Option<String>,
    /// The gateway's wall clock (shared with the link), for expiry.
    pub gateway_clock: clock::GatewayClock,
    /// Last delivery and error per app, for doctor.
    pub journal: crate::diag::DeliveryJournal,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AppSockError + '_ {
    move |source| AppSockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the socket: creates the parent directory, removes a stale socket
/// (one nobody answers on), binds and makes it 0666.
pub fn bind(path: &Path) -> Result<UnixListener, AppSockError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(AppSockError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_err(path))?;
        }
        Ok(_) => return Err(AppSockError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o666)).map_err(io_err(path))?;
    Ok(listener)
}

/// Live connections, in total and per uid, for the connection caps.
#[derive(Debug, Default)]
struct ConnLimits {
    total: usize,
    per_uid: HashMap<u32, usize>,
    /// Connections refused since the last one admitted (for the log).
    refused: u64,
}

/// A connection's place under the caps; given back when its task ends.
struct ConnSlot {
    limits: Arc<Mutex<ConnLimits>>,
    uid: u32,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut l = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        l.total = l.total.saturating_sub(1);
        if let Some(n) = l.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                l.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Takes a slot for a connection of `uid`; None when a cap is reached.
fn admit(limits: &Arc<Mutex<ConnLimits>>, uid: u32, pid: i32) -> Option<ConnSlot> {
    let mut l = limits.lock().unwrap_or_else(|e| e.into_inner());
    let of_uid = l.per_uid.get(&uid).copied().unwrap_or(0);
    let full = if l.total >= MAX_APP_CONNECTIONS {
        Some(format!("{MAX_APP_CONNECTIONS} app connections"))
    } else if of_uid >= MAX_CONNECTIONS_PER_UID {
        Some(format!(
            "{MAX_CONNECTIONS_PER_UID} connections of uid {uid}"
        ))
    } else {
        None
    };
    if let Some(cap) = full {
        // One warning per streak: a client hammering the socket must not
        // flood the journal as well.
        if l.refused == 0 {
            tracing::warn!(
                uid,
                pid,
                "connection cap reached ({cap}); refusing new app connections"
            );
        } else {
            tracing::debug!(uid, pid, "connection refused ({cap})");
        }
        l.refused += 1;
        return None;
    }
    if l.refused > 0 {
        tracing::info!(refused = l.refused, "accepting app connections again");
        l.refused = 0;
    }
    l.total += 1;
    *l.per_uid.entry(uid).or_default() += 1;
    Some(ConnSlot {
        limits: limits.clone(),
        uid,
    })
}

/// Tells a connection over a cap why it is closed. The socket was just
/// accepted, so its send buffer is empty and one small non-blocking write
/// goes through; if it does not, the close alone says enough.
fn refuse(stream: UnixStream) {
    let reply = error(
        0,
        ErrorCode::ErrorUnavailable,
        "too many connections to syspushd; try again later",
    );
    if let (Ok(bytes), Ok(mut s)) = (syspush_proto::app_codec::to_vec(&reply), stream.into_std()) {
        use std::io::Write as _;
        let _ = s.write(&bytes);
    }
}

/// Accepts connections until shutdown; each is served by its own task.
/// Returns once accepting has stopped (connections end on their own).
pub async fn serve(listener: UnixListener, ctx: Arc<AppContext>, shutdown: CancellationToken) {
    let limits = Arc::new(Mutex::new(ConnLimits::default()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let creds = match getsockopt(&stream, PeerCredentials) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "no peer credentials; closing");
                            continue;
                        }
                    };
                    match admit(&limits, creds.uid(), creds.pid()) {
                        Some(slot) => {
                            let conn = connection(stream, creds.uid(), creds.pid(), slot, ctx.clone(), shutdown.clone());
                            tokio::spawn(conn);
                        }
                        None => refuse(stream),
                    }
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

type Conn = Framed<UnixStream, DelimitedCodec<AppRequest>>;

struct Feed {
    sub: Subscription,
    cursor: u64,
    backlog: bool,
}

enum Signal {
    Data,
    Event(AppEvent),
}

async fn next_signal(feed: &mut Option<Feed>) -> Signal {
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

pub(crate) fn msg(request_id: u64, body: daemon_message::Body) -> DaemonMessage {
    DaemonMessage {
        request_id,
        body: Some(body),
    }
}

pub(crate) fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> DaemonMessage {
    msg(
        request_id,
        daemon_message::Body::Error(app::Error {
            code: code as i32,
            message: message.into(),
        }),
    )
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

async fn connection(
    stream: UnixStream,
    uid: u32,
    pid: i32,
    // Held for the task's life: dropping it frees the connection's slot.
    _slot: ConnSlot,
    ctx: Arc<AppContext>,
    shutdown: CancellationToken,
) {
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

/// Writes the next batch of stored messages after the cursor.
async fn feed_batch(ctx: &AppContext, f: &mut Feed, conn: &mut Conn) -> Result<(), String> {
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

async fn handle(
    ctx: &Arc<AppContext>,
    uid: u32,
    req: AppRequest,
    conn: &mut Conn,
    feed: &mut Option<Feed>,
    out: &mpsc::Sender<DaemonMessage>,
    permits: &Arc<Semaphore>,
) -> Result<(), String> {
    use app_request::Body;
    let id = req.request_id;
    let denied = |app_id: &str| {
        error(
            id,
            ErrorCode::ErrorPermissionDenied,
            format!("uid {uid} may not act for app {app_id:?}"),
        )
    };
    let reply = match req.body {
        None => error(id, ErrorCode::ErrorBadRequest, "empty or unknown request"),
        Some(Body::Hello(h)) => {
            if !ctx.policy.may_act(uid, &h.app_id) {
                denied(&h.app_id)
            } else if let Some(f) = feed.as_ref() {
                error(
                    id,
                    ErrorCode::ErrorBadRequest,
                    format!(
                        "already subscribed to {:?} on this connection",
                        f.sub.app_id()
                    ),
                )
            } else {
                // Subscribe before counting so nothing committed in between is missed.
                let sub = ctx.hub.subscribe(&h.app_id);
                match ctx
                    .store
                    .pending_count(&h.app_id, ctx.gateway_clock.now_ms())
                {
                    Ok(pending) => {
                        tracing::debug!(uid, app_id = h.app_id, pending, "app subscribed");
                        *feed = Some(Feed {
                            sub,
                            cursor: 0,
                            backlog: pending > 0,
                        });
                        let pending = u32::try_from(pending).unwrap_or(u32::MAX);
                        let ok = msg(
                            id,
                            daemon_message::Body::HelloOk(app::HelloOk {
                                app_id: h.app_id.clone(),
                                pending,
                            }),
                        );
                        // A forced logout that happened while the app was away.
                        if let Ok(Some(reason)) = ctx.store.pending_revocation(&h.app_id) {
                            conn.send(ok).await.map_err(|e| e.to_string())?;
                            // Forget the revocation only once the app has been
                            // told: if this write fails (the app died), it is
                            // told at its next hello instead of never.
                            let told = msg(
                                0,
                                daemon_message::Body::TokenRevoked(app::TokenRevoked {
                                    app_id: h.app_id.clone(),
                                    reason,
                                }),
                            );
                            conn.send(told).await.map_err(|e| e.to_string())?;
                            let _ = ctx.store.clear_revocation(&h.app_id);
                            return Ok(());
                        } else {
                            ok
                        }
                    }
                    Err(e) => error(id, ErrorCode::ErrorInternal, e.to_string()),
                }
            }
        }
        Some(Body::SetIdle(r)) => {
            if !ctx.link.may_set_idle(uid) {
                error(
                    id,
                    ErrorCode::ErrorPermissionDenied,
                    format!("uid {uid} may not switch idle mode (root or system_uids only)"),
                )
            } else {
                match ctx.link.set_idle(r.idle).await {
                    Ok(()) => msg(
                        id,
                        daemon_message::Body::IdleSet(app::IdleSet { idle: r.idle }),
                    ),
                    Err(e) => error(id, ErrorCode::ErrorUnavailable, e.to_string()),
                }
            }
        }
        Some(Body::Ack(a)) => match ctx
            .store
            .ack(&a.message_ids, |app| ctx.policy.may_act(uid, app))
        {
            Ok(removed) => msg(id, daemon_message::Body::AckOk(app::AckOk { removed })),
            Err(crate::store::StoreError::PermissionDenied(app)) => denied(&app),
            // Disk full and the like: transient, so the app keeps the ack and
            // re-acks when the message is redelivered (it stays stored).
            Err(e) if e.is_transient() => error(id, ErrorCode::ErrorUnavailable, e.to_string()),
            Err(e) => error(id, ErrorCode::ErrorInternal, e.to_string()),
        },
        Some(Body::Status(_)) => msg(id, daemon_message::Body::Status(status(ctx, uid))),
        Some(Body::Settings(r)) => crate::diag::settings(ctx, uid, id, r),
        Some(Body::Doctor(_)) => msg(
            id,
            daemon_message::Body::Doctor(crate::diag::doctor(ctx, uid).await),
        ),
        Some(Body::TestPush(r)) => crate::diag::test_push(ctx, uid, id, r).await,
        Some(Body::Register(r)) => {
            if !ctx.policy.may_act(uid, &r.app_id) {
                denied(&r.app_id)
            } else {
                spawn_request(ctx, id, Request::Register(r.app_id), out, permits).await;
                return Ok(());
            }
        }
        Some(Body::Unregister(u)) => {
            if !ctx.policy.may_act(uid, &u.app_id) {
                denied(&u.app_id)
            } else {
                spawn_request(ctx, id, Request::Unregister(u.app_id), out, permits).await;
                return Ok(());
            }
        }
    };
    conn.send(reply).await.map_err(|e| e.to_string())
}

enum Request {
    Register(String),
    Unregister(String),
}

fn request_error(id: u64, e: RequestError) -> DaemonMessage {
    match e {
        RequestError::Unavailable => error(
            id,
            ErrorCode::ErrorUnavailable,
            "gateway not reachable; try again",
        ),
        RequestError::Rejected { message, .. } => error(id, ErrorCode::ErrorBadRequest, message),
        RequestError::Store(m) => error(id, ErrorCode::ErrorInternal, m),
    }
}

/// Runs a gateway request in its own task (at most MAX_IN_FLIGHT per
/// connection: beyond that, this waits, which pauses reading from the app).
async fn spawn_request(
    ctx: &Arc<AppContext>,
    id: u64,
    req: Request,
    out: &mpsc::Sender<DaemonMessage>,
    permits: &Arc<Semaphore>,
) {
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return;
    };
    let (link, out) = (ctx.link.clone(), out.clone());
    tokio::spawn(async move {
        let reply = match req {
            Request::Register(app_id) => {
                match clock::timeout(REQUEST_TIMEOUT, link.register(&app_id)).await {
                    Ok(Ok(token)) => msg(
                        id,
                        daemon_message::Body::Registered(app::Registered { app_id, token }),
                    ),
                    Ok(Err(e)) => request_error(id, e),
                    Err(_) => request_error(id, RequestError::Unavailable),
                }
            }
            Request::Unregister(app_id) => {
                match clock::timeout(REQUEST_TIMEOUT, link.unregister(&app_id)).await {
                    Ok(Ok(())) => msg(
                        id,
                        daemon_message::Body::Unregistered(app::Unregistered { app_id }),
                    ),
                    Ok(Err(e)) => request_error(id, e),
                    Err(_) => request_error(id, RequestError::Unavailable),
                }
            }
        };
        let _ = out.send(reply).await;
        drop(permit);
    });
}

/// The Status answer for `uid`: root sees every app, others their own.
pub fn status(ctx: &AppContext, uid: u32) -> app::Status {
    let link = ctx.link.status();
    let now = clock::now();
    let wall = ctx.gateway_clock.now_ms();
    let mut apps: BTreeSet<String> = ctx.policy.apps_of(uid).into_iter().collect();
    if uid == 0 {
        match ctx.store.known_apps() {
            Ok(known) => apps.extend(known),
            Err(e) => tracing::warn!(error = %e, "cannot list apps"),
        }
    }
    let apps = apps
        .into_iter()
        .map(|app_id| app::AppStatus {
            pending: ctx.store.pending_count(&app_id, wall).unwrap_or(0),
            connected: ctx.hub.connected(&app_id),
            registered: ctx.store.token(&app_id).ok().flatten().is_some(),
            app_id,
        })
        .collect();
    let device_id = if !link.device_id.is_empty() {
        link.device_id.clone()
    } else {
        ctx.device_id
            .clone()
            .or_else(|| ctx.store.credentials().ok().flatten().map(|(id, _)| id))
            .unwrap_or_default()
    };
    app::Status {
        connected: link.connected,
        gateway_url: ctx.gateway_url.clone(),
        session_uptime_s: link
            .live_since
            .map(|t| now.saturating_sub(t).as_secs())
            .unwrap_or(0),
        heartbeat_interval_s: link
            .heartbeat
            .map(|h| h.as_secs())
            .unwrap_or(ctx.heartbeat_s),
        last_pong_age_s: link.last_rx.map(|t| now.saturating_sub(t).as_secs()),
        reconnects: link.reconnects,
        apps,
        device_id,
        last_committed_seq: ctx.store.last_committed_seq().unwrap_or(0),
        network: link.network.clone().unwrap_or_default(),
        heartbeat_state: link
            .heartbeat_state
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        learned: learned_intervals(ctx),
        idle: link.idle,
        drops: ctx.store.drops().unwrap_or_default().into_iter().collect(),
    }
}

/// What the heartbeat learned per network, for Status.
fn learned_intervals(ctx: &AppContext) -> Vec<app::LearnedInterval> {
    match ctx.store.all_learned() {
        Ok(all) => all
            .into_iter()
            .map(|(network, l)| app::LearnedInterval {
                network,
                interval_s: l.good.map_or(0, |d| d.as_secs()),
                ceiling_s: l.ceiling.map(|d| d.as_secs()),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list learned heartbeats");
            Vec::new()
        }
    }
}

#[cfg(test)]
#[path = "appsock_tests.rs"]
mod tests;

//! One app request, answered: routing by request kind, the permission check
//! each needs, and the requests that talk to the gateway.
//!
//! Register/unregister wait on the gateway (up to [`REQUEST_TIMEOUT`]) in a
//! spawned task so the connection keeps delivering meanwhile; their answers
//! come back through the connection's small bounded queue, and at most
//! [`MAX_IN_FLIGHT`] run per connection. Settings, doctor and test push are
//! answered by [`super::diag`], status by [`super::status`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use syspush_proto::app::{self, AppRequest, DaemonMessage, ErrorCode, app_request, daemon_message};
use tokio::sync::{Semaphore, mpsc};

use super::context::AppContext;
use super::diag;
use super::feed::Feed;
use super::reply::{Conn, error, msg};
use super::status::status;
use crate::clock;
use crate::link::RequestError;

/// How long register/unregister wait for the gateway.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent register/unregister requests per connection.
pub const MAX_IN_FLIGHT: usize = 4;

/// Answers `req` from `uid` on `conn`. `feed` is the connection's
/// subscription (set by Hello); `out` and `permits` carry the answers of
/// gateway requests running in their own tasks. An error ends the connection.
pub(crate) async fn handle(
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
            } else {
                return hello(ctx, uid, id, h.app_id, conn, feed).await;
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
        Some(Body::Settings(r)) => diag::settings(ctx, uid, id, r),
        Some(Body::Doctor(_)) => msg(
            id,
            daemon_message::Body::Doctor(diag::doctor(ctx, uid).await),
        ),
        Some(Body::TestPush(r)) => diag::test_push(ctx, uid, id, r).await,
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

/// Hello (already permitted): subscribes the connection to `app_id` and
/// answers with what is pending, then any revocation the app missed.
async fn hello(
    ctx: &AppContext,
    uid: u32,
    id: u64,
    app_id: String,
    conn: &mut Conn,
    feed: &mut Option<Feed>,
) -> Result<(), String> {
    if let Some(f) = feed.as_ref() {
        let reply = error(
            id,
            ErrorCode::ErrorBadRequest,
            format!(
                "already subscribed to {:?} on this connection",
                f.sub.app_id()
            ),
        );
        return conn.send(reply).await.map_err(|e| e.to_string());
    }
    // Subscribe before counting so nothing committed in between is missed.
    let sub = ctx.hub.subscribe(&app_id);
    let pending = match ctx.store.pending_count(&app_id, ctx.gateway_clock.now_ms()) {
        Ok(pending) => pending,
        Err(e) => {
            let reply = error(id, ErrorCode::ErrorInternal, e.to_string());
            return conn.send(reply).await.map_err(|e| e.to_string());
        }
    };
    tracing::debug!(uid, app_id, pending, "app subscribed");
    *feed = Some(Feed {
        sub,
        cursor: 0,
        backlog: pending > 0,
    });
    let pending = u32::try_from(pending).unwrap_or(u32::MAX);
    let ok = msg(
        id,
        daemon_message::Body::HelloOk(app::HelloOk {
            app_id: app_id.clone(),
            pending,
        }),
    );
    // A forced logout that happened while the app was away.
    let revoked = ctx.store.pending_revocation(&app_id);
    conn.send(ok).await.map_err(|e| e.to_string())?;
    if let Ok(Some(reason)) = revoked {
        // Forget the revocation only once the app has been told: if this
        // write fails (the app died), it is told at its next hello instead
        // of never.
        let told = msg(
            0,
            daemon_message::Body::TokenRevoked(app::TokenRevoked {
                app_id: app_id.clone(),
                reason,
            }),
        );
        conn.send(told).await.map_err(|e| e.to_string())?;
        let _ = ctx.store.clear_revocation(&app_id);
    }
    Ok(())
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

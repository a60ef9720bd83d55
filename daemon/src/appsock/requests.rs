//! One app request, answered: routing by request kind, the permission check
//! each needs, and the requests that talk to the gateway.
//!
//! Register/unregister (up to [`REQUEST_TIMEOUT`]), doctor and test push wait
//! on the gateway: they run in flight ([`InFlight`], at most
//! [`MAX_IN_FLIGHT`] per connection) while the connection keeps reading and
//! delivering, and each answer is written when it is ready.
//! Settings and test push are answered by [`super::diag`], doctor by
//! [`super::doctor`], status by [`super::status`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use syspush_proto::app::{self, AppRequest, DaemonMessage, ErrorCode, app_request, daemon_message};

use super::caller::Peer;
use super::context::AppContext;
use super::diag;
use super::doctor;
use super::feed::Feed;
use super::reply::{Conn, error, msg};
use super::status::status;
use crate::clock;
use crate::link::{LinkHandle, RequestError};

/// How long register/unregister wait for the gateway.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent register/unregister requests per connection.
pub const MAX_IN_FLIGHT: usize = 4;

/// Whether a request was answered on the spot or waits in [`InFlight`].
pub(crate) enum Handled {
    /// The answer has been written.
    Answered,
    /// Answered later, from [`InFlight`].
    InFlight,
}

/// The requests of one connection that wait on the gateway: at most
/// [`MAX_IN_FLIGHT`] at once, each a future polled by the connection's own
/// task (so they end with it: an aborted connection leaves nothing behind).
#[derive(Default)]
pub(crate) struct InFlight(FuturesUnordered<BoxFuture<'static, DaemonMessage>>);

impl InFlight {
    /// Requests whose answers are still owed (the connection has no idle
    /// deadline while one is).
    pub(crate) fn waiting(&self) -> usize {
        self.0.len()
    }

    /// The next answer; pending while none is owed (cancel-safe).
    pub(crate) async fn next_answer(&mut self) -> DaemonMessage {
        match self.0.next().await {
            Some(m) => m,
            None => std::future::pending().await,
        }
    }

    /// Adds a request; when MAX_IN_FLIGHT run already, first waits for one
    /// of them and writes its answer (which pauses reading from the app).
    async fn push(
        &mut self,
        conn: &mut Conn,
        answer: impl Future<Output = DaemonMessage> + Send + 'static,
    ) -> Result<(), String> {
        if self.0.len() >= MAX_IN_FLIGHT {
            let done = self.next_answer().await;
            conn.send(done).await.map_err(|e| e.to_string())?;
        }
        self.0.push(Box::pin(answer));
        Ok(())
    }
}

/// Answers `req` from `peer` on `conn`. `feed` is the connection's
/// subscription (set by Hello); requests that wait on the gateway run in
/// `in_flight`. An error ends the connection.
pub(crate) async fn handle(
    ctx: &Arc<AppContext>,
    peer: Peer,
    req: AppRequest,
    conn: &mut Conn,
    feed: &mut Option<Feed>,
    in_flight: &mut InFlight,
) -> Result<Handled, String> {
    use app_request::Body;
    let uid = peer.uid;
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
                hello(ctx, uid, id, h.app_id, conn, feed).await?;
                return Ok(Handled::Answered);
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
        Some(Body::Status(_)) => msg(
            id,
            daemon_message::Body::Status(status(ctx, uid, peer.class)),
        ),
        Some(Body::Settings(r)) => diag::settings(ctx, uid, id, r),
        // Doctor and test push wait on the gateway: in flight, so the
        // connection keeps delivering meanwhile.
        Some(Body::Doctor(_)) => {
            let ctx = ctx.clone();
            in_flight
                .push(conn, async move {
                    msg(
                        id,
                        daemon_message::Body::Doctor(doctor::doctor(&ctx, peer).await),
                    )
                })
                .await?;
            return Ok(Handled::InFlight);
        }
        Some(Body::TestPush(r)) => {
            let ctx = ctx.clone();
            in_flight
                .push(conn, async move { diag::test_push(&ctx, uid, id, r).await })
                .await?;
            return Ok(Handled::InFlight);
        }
        Some(Body::Register(r)) => {
            if !ctx.policy.may_act(uid, &r.app_id) {
                denied(&r.app_id)
            } else {
                let link = ctx.link.clone();
                in_flight.push(conn, register(link, id, r.app_id)).await?;
                return Ok(Handled::InFlight);
            }
        }
        Some(Body::Unregister(u)) => {
            if !ctx.policy.may_act(uid, &u.app_id) {
                denied(&u.app_id)
            } else {
                let link = ctx.link.clone();
                in_flight.push(conn, unregister(link, id, u.app_id)).await?;
                return Ok(Handled::InFlight);
            }
        }
    };
    conn.send(reply).await.map_err(|e| e.to_string())?;
    Ok(Handled::Answered)
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

/// Register (already permitted), answered when the gateway answers.
async fn register(link: LinkHandle, id: u64, app_id: String) -> DaemonMessage {
    match clock::timeout(REQUEST_TIMEOUT, link.register(&app_id)).await {
        Ok(Ok(token)) => msg(
            id,
            daemon_message::Body::Registered(app::Registered { app_id, token }),
        ),
        Ok(Err(e)) => request_error(id, e),
        Err(_) => request_error(id, RequestError::Unavailable),
    }
}

/// Unregister (already permitted), answered when the gateway answers.
async fn unregister(link: LinkHandle, id: u64, app_id: String) -> DaemonMessage {
    match clock::timeout(REQUEST_TIMEOUT, link.unregister(&app_id)).await {
        Ok(Ok(())) => msg(
            id,
            daemon_message::Body::Unregistered(app::Unregistered { app_id }),
        ),
        Ok(Err(e)) => request_error(id, e),
        Err(_) => request_error(id, RequestError::Unavailable),
    }
}

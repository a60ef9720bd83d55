//! The device's requests on the link, each answered with its reply frame or
//! an `Error` carrying the request id (the link stays up): register and
//! unregister an app's token, and the two that answer "why did it not arrive"
//! — token status (for `syspushctl doctor`) and the test push (`syspushctl
//! test`). Also telling the device about revocations, now or at its next hello.

use syspush_proto::common::{MessageClass, Notification, Priority};
use syspush_proto::device::{self, ErrorCode, frame::Body};

use super::error::LinkError;
use super::transport::Transport;
use crate::accept::accept;
use crate::ids;
use crate::state::Shared;
use crate::store::TokenState;

/// Title of the gateway's test push (the daemon and `syspushctl test` look for it).
pub const TEST_TITLE: &str = "syspush test";
/// ttl of a test push: a diagnostic is useless later.
const TEST_TTL_S: u32 = 60;

/// `Register`: issues (or returns the existing) token of an app on this device.
pub(super) async fn register(
    link: &mut Transport,
    shared: &Shared,
    req: device::Register,
) -> Result<(), LinkError> {
    let (device_id, app_id) = (link.device_id.clone(), req.app_id.clone());
    let candidate = ids::new_secret()?;
    let result = shared
        .store(move |s| match s.app(&app_id)? {
            None => Ok(None),
            Some(_) => s.register_token(&device_id, &app_id, &candidate).map(Some),
        })
        .await;
    match result {
        Ok(Some(token)) => {
            tracing::info!(device_id = %link.device_id, app_id = %req.app_id, "registered");
            let reply = device::Registered {
                request_id: req.request_id,
                app_id: req.app_id,
                token,
            };
            link.send(Body::Registered(reply)).await
        }
        Ok(None) => {
            let msg = format!("unknown app {:?}", req.app_id);
            link.send_error(ErrorCode::ErrorBadRequest, &msg, req.request_id)
                .await
        }
        Err(error) => {
            tracing::error!(device_id = %link.device_id, %error, "register failed");
            link.send_error(ErrorCode::ErrorInternal, "internal error", req.request_id)
                .await
        }
    }
}

/// `Unregister`: revokes the app's token on this device and drops its queue.
pub(super) async fn unregister(
    link: &mut Transport,
    shared: &Shared,
    req: device::Unregister,
) -> Result<(), LinkError> {
    let (device_id, app_id) = (link.device_id.clone(), req.app_id.clone());
    match shared
        .store(move |s| s.revoke_token(&device_id, &app_id))
        .await
    {
        Ok(revoked) => {
            tracing::info!(device_id = %link.device_id, app_id = %req.app_id, had_token = revoked.is_some(), "unregistered");
            let reply = device::Unregistered {
                request_id: req.request_id,
                app_id: req.app_id,
            };
            link.send(Body::Unregistered(reply)).await
        }
        Err(error) => {
            tracing::error!(device_id = %link.device_id, %error, "unregister failed");
            link.send_error(ErrorCode::ErrorInternal, "internal error", req.request_id)
                .await
        }
    }
}

/// Sends a revocation and forgets it (the device acts on it at once).
pub(super) async fn send_revocation(
    link: &mut Transport,
    shared: &Shared,
    app_id: String,
    token: String,
    reason: String,
) -> Result<(), LinkError> {
    let frame = device::TokenRevoked {
        app_id,
        token: token.clone(),
        reason,
    };
    link.send(Body::TokenRevoked(frame)).await?;
    let id = link.device_id.clone();
    shared
        .store(move |s| s.clear_revocation(&id, &token))
        .await?;
    Ok(())
}

/// Every revocation the device has not been told about.
pub(super) async fn send_revocations(
    link: &mut Transport,
    shared: &Shared,
) -> Result<(), LinkError> {
    let id = link.device_id.clone();
    let pending = shared.store(move |s| s.revocations(&id)).await?;
    for (app_id, token, reason) in pending {
        tracing::info!(device_id = %link.device_id, app_id, "telling the device about a revocation it missed");
        send_revocation(link, shared, app_id, token, reason).await?;
    }
    Ok(())
}

/// `TokenStatusRequest`: is this device's token of the app live, and how much
/// is queued for the app.
pub(super) async fn token_status(
    link: &mut Transport,
    shared: &Shared,
    req: device::TokenStatusRequest,
) -> Result<(), LinkError> {
    let (device_id, app_id, token) = (
        link.device_id.clone(),
        req.app_id.clone(),
        req.token.clone(),
    );
    let (record, pending) = shared
        .store(move |s| {
            let pending = s.pending_for(&device_id, &app_id, ids::now_ms())?;
            Ok((s.token(&token)?, pending))
        })
        .await?;
    // Another device's or app's token looks unknown, as on the HTTP API.
    let state = match record.filter(|r| r.device_id == link.device_id && r.app_id == req.app_id) {
        Some(r) if r.state == TokenState::Live => "live",
        Some(_) => "revoked",
        None => "unknown",
    };
    let reply = device::TokenStatusReply {
        request_id: req.request_id,
        app_id: req.app_id,
        valid: state == "live",
        state: state.to_owned(),
        pending,
    };
    link.send(Body::TokenStatusReply(reply)).await
}

/// `TestPushRequest`: queues a normal message to the app's live token, as an
/// app server would, so the test covers the whole path (store, poke, delivery).
pub(super) async fn test_push(
    link: &mut Transport,
    shared: &Shared,
    req: device::TestPushRequest,
) -> Result<(), LinkError> {
    let t = req.token.clone();
    let record = shared.store(move |s| s.token(&t)).await?;
    let live = record.is_some_and(|r| {
        r.state == TokenState::Live && r.device_id == link.device_id && r.app_id == req.app_id
    });
    if !live {
        let msg = format!("no live token for {:?} on this device", req.app_id);
        return link
            .send_error(ErrorCode::ErrorBadRequest, &msg, req.request_id)
            .await;
    }
    // Important, not operational: a diagnostic must not eat the app's quota.
    let mut n = Notification {
        title: TEST_TITLE.to_owned(),
        desc: "test push from the gateway".to_owned(),
        ext: "syspush-test".to_owned(),
        priority: Priority::High as i32,
        class: MessageClass::ClassImportant as i32,
        ttl: TEST_TTL_S,
        ..Notification::default()
    };
    let device_id = link.device_id.clone();
    match accept(shared, &req.app_id, &device_id, &mut n, None).await {
        Ok(_) => {
            tracing::info!(device_id, app_id = %req.app_id, message_id = %n.message_id, "test push queued");
            let reply = device::TestPushReply {
                request_id: req.request_id,
                app_id: req.app_id,
                message_id: n.message_id,
            };
            link.send(Body::TestPushReply(reply)).await
        }
        Err(error) => {
            tracing::error!(device_id, %error, "test push failed");
            link.send_error(ErrorCode::ErrorInternal, "internal error", req.request_id)
                .await
        }
    }
}

//! "Finding out why": the app-socket requests behind `syspushctl settings`
//! and `syspushctl test` (doctor has its own file, `doctor.rs`).
//! [`super::requests`] only routes them here.

use std::time::Duration;

use syspush_proto::app::{self, ErrorCode, daemon_message};

use super::context::AppContext;
use super::reply::{error, msg};
use crate::clock;
use crate::settings::Settings;

/// How long a test push request waits for the gateway when the request
/// names no bound of its own.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait a test push request may ask for.
const MAX_TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `uid` may change settings: root or a configured system uid.
fn may_change(ctx: &AppContext, uid: u32) -> bool {
    ctx.link.may_set_idle(uid)
}

/// `SettingsRequest`: applies the changes (if any) and answers the settings.
pub fn settings(
    ctx: &AppContext,
    uid: u32,
    id: u64,
    r: app::SettingsRequest,
) -> app::DaemonMessage {
    let privileged = may_change(ctx, uid);
    if r.app_id.is_empty() {
        return error(id, ErrorCode::ErrorBadRequest, "app id required");
    }
    if !r.changes.is_empty() && !privileged {
        return error(
            id,
            ErrorCode::ErrorPermissionDenied,
            format!("uid {uid} may not change notification settings (root or system_uids only)"),
        );
    }
    if !privileged && !ctx.policy.may_act(uid, &r.app_id) {
        return error(
            id,
            ErrorCode::ErrorPermissionDenied,
            format!("uid {uid} may not see settings of {:?}", r.app_id),
        );
    }
    if !r.changes.is_empty() {
        let current = ctx
            .store
            .app_settings(&r.app_id)
            .unwrap_or_default()
            .into_iter()
            .find(|(ch, _)| *ch == r.channel_id)
            .map_or_else(Settings::default, |(_, s)| s);
        let mut next = current;
        for (k, v) in &r.changes {
            if let Err(e) = next.apply(k, v) {
                return error(id, ErrorCode::ErrorBadRequest, e.to_string());
            }
        }
        if let Err(e) = ctx.store.set_settings(&r.app_id, &r.channel_id, next) {
            return error(id, ErrorCode::ErrorInternal, e.to_string());
        }
        tracing::info!(
            uid,
            app_id = r.app_id,
            channel = r.channel_id,
            ?next,
            "notification settings changed"
        );
    }
    let stored = match ctx.store.app_settings(&r.app_id) {
        Ok(s) => s,
        Err(e) => return error(id, ErrorCode::ErrorInternal, e.to_string()),
    };
    let app_level = stored
        .iter()
        .find(|(ch, _)| ch.is_empty())
        .map_or_else(Settings::default, |(_, s)| *s);
    let channels = stored
        .iter()
        .filter(|(ch, _)| !ch.is_empty())
        .map(|(ch, s)| s.to_proto(ch))
        .collect();
    msg(
        id,
        daemon_message::Body::Settings(app::SettingsReply {
            app_id: r.app_id,
            app: Some(app_level.to_proto("")),
            channels,
        }),
    )
}

/// `TestPushRequest`: asks the gateway for a test push to the app's token.
pub async fn test_push(
    ctx: &AppContext,
    uid: u32,
    id: u64,
    r: app::TestPushRequest,
) -> app::DaemonMessage {
    if !ctx.policy.may_act(uid, &r.app_id) {
        return error(
            id,
            ErrorCode::ErrorPermissionDenied,
            format!("uid {uid} may not act for app {:?}", r.app_id),
        );
    }
    let token = match ctx.store.token(&r.app_id) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error(
                id,
                ErrorCode::ErrorBadRequest,
                format!(
                    "{} is not registered on this device (syspushctl register)",
                    r.app_id
                ),
            );
        }
        Err(e) => return error(id, ErrorCode::ErrorInternal, e.to_string()),
    };
    // The caller's bound (syspushctl test --timeout), so that the request
    // does not outlive the command waiting for it.
    let bound = r
        .timeout_ms
        .map_or(TEST_TIMEOUT, |ms| Duration::from_millis(ms.into()))
        .min(MAX_TEST_TIMEOUT);
    match clock::timeout(bound, ctx.link.test_push(&r.app_id, &token)).await {
        Ok(Ok(message_id)) => msg(
            id,
            daemon_message::Body::TestPushSent(app::TestPushSent {
                app_id: r.app_id,
                message_id,
            }),
        ),
        Ok(Err(e)) => {
            ctx.journal
                .record_error(&r.app_id, format!("test push: {e}"));
            error(id, ErrorCode::ErrorUnavailable, e.to_string())
        }
        Err(_) => error(
            id,
            ErrorCode::ErrorUnavailable,
            format!(
                "gateway not reachable within {} s; try again",
                bound.as_secs_f32()
            ),
        ),
    }
}

//! "Finding out why": the app-socket requests behind `syspushctl settings`,
//! `syspushctl doctor` and `syspushctl test`. [`super::requests`] only routes
//! them here; doctor reads the per-app last delivery and last error from the
//! context's [`super::journal::DeliveryJournal`].

use std::collections::BTreeSet;
use std::time::Duration;

use syspush_proto::app::{self, DoctorCheck, ErrorCode, daemon_message};

use super::context::AppContext;
use super::reply::{error, msg};
use crate::clock;
use crate::link::{LinkFailure, TlsFailure};
use crate::settings::Settings;

/// How long doctor waits for the gateway's answer about one token.
const TOKEN_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test push request waits for the gateway.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

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
    match clock::timeout(TEST_TIMEOUT, ctx.link.test_push(&r.app_id, &token)).await {
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
            "gateway not reachable; try again",
        ),
    }
}

fn check(name: &str, ok: bool, detail: impl Into<String>, hint: &str) -> DoctorCheck {
    DoctorCheck {
        name: name.to_string(),
        ok,
        detail: detail.into(),
        hint: if ok { String::new() } else { hint.to_string() },
    }
}

fn age(ms: Option<u64>, now_ms: u64) -> String {
    match ms {
        Some(t) => format!("{} s ago", now_ms.saturating_sub(t) / 1000),
        None => "never (since the daemon started)".into(),
    }
}

/// `DoctorRequest`: every check, each with a hint when it fails.
pub async fn doctor(ctx: &AppContext, uid: u32) -> app::DoctorReport {
    let link = ctx.link.status();
    let now = clock::now();
    let last_error = link
        .last_error
        .as_ref()
        .map_or_else(|| "none".into(), |e| e.to_string());
    let mut checks = vec![check(
        "config valid",
        true,
        "loaded and validated at startup (syspushd does not start otherwise)",
        "",
    )];
    checks.push(match ctx.store.probe_write(ctx.gateway_clock.now_ms()) {
        Ok(()) => check(
            "store writable",
            true,
            ctx.store.path().display().to_string(),
            "",
        ),
        Err(e) => check(
            "store writable",
            false,
            e.to_string(),
            "check state_dir: free space, permissions, and that no other syspushd holds it",
        ),
    });
    // The gateway's certificate (or key) was refused, as rustls said it.
    let tls_error = link
        .last_error
        .as_ref()
        .and_then(LinkFailure::tls_failure)
        .is_some_and(TlsFailure::is_certificate);
    checks.push(check(
        "gateway reachable",
        link.connected,
        if link.connected {
            ctx.gateway_url.clone()
        } else {
            format!("{}: last error: {last_error}", ctx.gateway_url)
        },
        "check the gateway URL in the config, the network, and that the gateway runs",
    ));
    checks.push(check(
        "TLS verified",
        link.connected && !tls_error,
        if link.connected {
            "the gateway's certificate was verified".to_string()
        } else {
            format!("not connected; last error: {last_error}")
        },
        "check ca_file (or pin_spki_sha256) against the gateway's certificate and the device clock",
    ));
    checks.push(check(
        "connected",
        link.connected,
        format!("device {}, {} reconnects", link.device_id, link.reconnects),
        "see the checks above and the daemon's log",
    ));
    let hb = link
        .heartbeat
        .unwrap_or(Duration::from_secs(ctx.heartbeat_s));
    let rx_age = link.last_rx.map(|t| now.saturating_sub(t));
    let hb_ok = link.connected && rx_age.is_some_and(|a| a <= hb * 2 + Duration::from_secs(10));
    checks.push(check(
        "heartbeat answered recently",
        hb_ok,
        match rx_age {
            Some(a) => format!("last frame from the gateway {} s ago (heartbeat {} s)", a.as_secs(), hb.as_secs()),
            None => "nothing received from the gateway yet".into(),
        },
        "the network may drop idle connections faster than the heartbeat; see status --json learned",
    ));
    let mut apps: BTreeSet<String> = ctx.policy.apps_of(uid).into_iter().collect();
    if uid == 0 {
        apps.extend(ctx.store.known_apps().unwrap_or_default());
    }
    let wall = ctx.gateway_clock.now_ms();
    for app_id in apps {
        let token = ctx.store.token(&app_id).ok().flatten();
        let Some(token) = token else {
            checks.push(check(
                &format!("{app_id}: token"),
                false,
                "not registered on this device",
                "the app registers at login (syspushctl register APP_ID)",
            ));
            continue;
        };
        let (ok, detail) = if !link.connected {
            (false, "cannot ask the gateway: not connected".to_string())
        } else {
            match clock::timeout(TOKEN_CHECK_TIMEOUT, ctx.link.token_status(&app_id, &token)).await
            {
                Ok(Ok(r)) => (
                    r.valid,
                    format!("{} at the gateway, {} queued there", r.state, r.pending),
                ),
                Ok(Err(e)) => (false, format!("gateway: {e}")),
                Err(_) => (false, "gateway did not answer in time".to_string()),
            }
        };
        checks.push(check(
            &format!("{app_id}: token valid at the gateway"),
            ok,
            detail,
            "register again (the token was revoked or the gateway lost it) and report the new token to the app server",
        ));
        let pending = ctx.store.pending_count(&app_id, wall).unwrap_or(0);
        let (last_delivery, last_err) = ctx.journal.get(&app_id);
        checks.push(check(
            &format!("{app_id}: delivery"),
            last_err.is_none(),
            format!(
                "{pending} pending, connected: {}, last delivery: {}, last error: {}",
                ctx.hub.connected(&app_id),
                age(last_delivery, wall),
                last_err.as_deref().unwrap_or("none")
            ),
            "see the last error; the app must say hello and ack what it receives",
        ));
    }
    app::DoctorReport { checks }
}

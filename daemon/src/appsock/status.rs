//! The `Status` answer (`syspushctl status`): the link's state, the apps the
//! caller may see with what waits for them, and what the heartbeat learned —
//! as much of it as the caller's class may see (see [`status`]).

use std::collections::BTreeSet;

use syspush_proto::app::{self, StatusScope};

use super::caller::Class;
use super::context::AppContext;
use crate::clock;

/// The Status answer for `uid` of `class`: root and `system_uids` see
/// everything and every app; a uid that owns apps sees its own apps and the
/// link's health, nothing that identifies the device; any other uid only
/// that the daemon is alive and whether it is connected. The answer's
/// `scope` says which.
pub fn status(ctx: &AppContext, uid: u32, class: Class) -> app::Status {
    let link = ctx.link.status();
    let scope = match class {
        Class::Privileged => StatusScope::Full,
        Class::App => StatusScope::Apps,
        Class::Stranger => {
            return app::Status {
                connected: link.connected,
                scope: StatusScope::Liveness as i32,
                ..Default::default()
            };
        }
    };
    let now = clock::now();
    let wall = ctx.gateway_clock.now_ms();
    let mut apps: BTreeSet<String> = ctx.policy.apps_of(uid).into_iter().collect();
    if scope == StatusScope::Full {
        apps.extend(ctx.policy.configured_apps().map(str::to_string));
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
    let health = app::Status {
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
        heartbeat_state: link
            .heartbeat_state
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        idle: link.idle,
        scope: scope as i32,
        ..Default::default()
    };
    if scope != StatusScope::Full {
        return health;
    }
    let device_id = if !link.device_id.is_empty() {
        link.device_id.clone()
    } else {
        ctx.device_id
            .clone()
            .or_else(|| ctx.store.credentials().ok().flatten().map(|(id, _)| id))
            .unwrap_or_default()
    };
    app::Status {
        device_id,
        last_committed_seq: ctx.store.last_committed_seq().unwrap_or(0),
        network: link.network.clone().unwrap_or_default(),
        learned: learned_intervals(ctx),
        drops: ctx
            .store
            .drops(ctx.gateway_clock.now_ms())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..health
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

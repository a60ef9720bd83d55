//! The `DoctorRequest` answer (`syspushctl doctor`): every check, each PASS,
//! FAIL with a hint, or SKIP when it could not run — with the real cause
//! (a TLS check cannot run while TCP to the gateway is refused; a token
//! cannot be asked about while the link is down), never a hint for a
//! problem nobody saw.
//!
//! The per-app token checks ask the gateway concurrently (at most
//! [`TOKEN_CHECKS_AT_ONCE`] at a time, each bounded by
//! [`TOKEN_CHECK_TIMEOUT`]), so doctor takes about one round trip, not one
//! per app. What a caller is shown follows its class, as for Status: store
//! path and device id only to root and `system_uids`, the gateway only to
//! those and app uids. Per-app last delivery and last error come from the
//! context's [`super::journal::DeliveryJournal`].

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use syspush_proto::app::{self, DoctorCheck};

use super::caller::{Class, Peer};
use super::context::AppContext;
use crate::clock;
use crate::link::{DialFailure, LinkFailure, TlsFailure};

/// How long doctor waits for the gateway's answer about one token.
const TOKEN_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Token checks asked of the gateway at once.
const TOKEN_CHECKS_AT_ONCE: usize = 8;

fn check(name: &str, ok: bool, detail: impl Into<String>, hint: &str) -> DoctorCheck {
    DoctorCheck {
        name: name.to_string(),
        ok,
        detail: detail.into(),
        hint: if ok { String::new() } else { hint.to_string() },
        skipped: false,
    }
}

/// A check that could not run: not passed, shown as SKIP, no hint (the
/// check that failed has it).
fn skipped(name: &str, why: impl Into<String>) -> DoctorCheck {
    DoctorCheck {
        name: name.to_string(),
        ok: false,
        detail: format!("cannot check: {}", why.into()),
        hint: String::new(),
        skipped: true,
    }
}

fn age(ms: Option<u64>, now_ms: u64) -> String {
    match ms {
        Some(t) => format!("{} s ago", now_ms.saturating_sub(t) / 1000),
        None => "never (since the daemon started)".into(),
    }
}

/// Why the link is down, as far as the checks that need it care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Down {
    /// No dial failure recorded (still dialing, or the session just ended).
    Unknown,
    /// TCP to the gateway failed (refused, unreachable, timed out): TLS was
    /// never tried.
    Unreachable(String),
    /// The gateway's certificate (or its key) was refused.
    Certificate(String),
    /// Anything else (TLS alert, WebSocket, session rejected, store).
    Other(String),
}

impl Down {
    /// Classifies the link's last failure by its type (never by its text).
    fn of(last_error: Option<&LinkFailure>) -> Down {
        let Some(e) = last_error else {
            return Down::Unknown;
        };
        if let LinkFailure::Transport(t) = e
            && let Some(DialFailure::Connect(_)) = t.dial_failure()
        {
            // The OS's words ("Connection refused"), not the whole chain.
            let mut cause: &dyn std::error::Error = e;
            let mut io = None;
            while let Some(next) = cause.source() {
                if let Some(i) = next.downcast_ref::<std::io::Error>() {
                    io = Some(i.to_string());
                }
                cause = next;
            }
            return Down::Unreachable(io.unwrap_or_else(|| e.to_string()));
        }
        if e.tls_failure().is_some_and(TlsFailure::is_certificate) {
            return Down::Certificate(e.to_string());
        }
        Down::Other(e.to_string())
    }

    /// Why a check that needs the gateway cannot run.
    fn why(&self) -> String {
        match self {
            Down::Unknown => "not connected to the gateway".into(),
            Down::Unreachable(io) => format!("gateway unreachable ({io})"),
            Down::Certificate(e) | Down::Other(e) => format!("not connected ({e})"),
        }
    }
}

/// `DoctorRequest`: every check the caller's class may see.
pub async fn doctor(ctx: &AppContext, peer: Peer) -> app::DoctorReport {
    let privileged = peer.class == Class::Privileged;
    let link = ctx.link.status();
    let now = clock::now();
    let down = (!link.connected).then(|| Down::of(link.last_error.as_ref()));
    let mut checks = vec![check(
        "config valid",
        true,
        "loaded and validated at startup (syspushd does not start otherwise)",
        "",
    )];
    checks.push(match peer.class {
        // Probing writes to the store: not for any uid that asks.
        Class::Stranger => skipped(
            "store writable",
            "checked for root, system_uids and app uids only",
        ),
        _ => match ctx.store.probe_write(ctx.gateway_clock.now_ms()) {
            Ok(()) => check(
                "store writable",
                true,
                if privileged {
                    ctx.store.path().display().to_string()
                } else {
                    "writable".to_string()
                },
                "",
            ),
            Err(e) => check(
                "store writable",
                false,
                e.to_string(),
                "check state_dir: free space, permissions, and that no other syspushd holds it",
            ),
        },
    });
    let gateway = if peer.class == Class::Stranger {
        "the gateway".to_string()
    } else {
        ctx.gateway_url.clone()
    };
    checks.push(check(
        "gateway reachable",
        link.connected,
        match &down {
            None => gateway.clone(),
            Some(Down::Unknown) => format!("{gateway}: not connected"),
            Some(d) if peer.class == Class::Stranger => format!("{gateway}: {}", d.why()),
            Some(_) => format!(
                "{gateway}: last error: {}",
                link.last_error
                    .as_ref()
                    .map_or_else(|| "none".to_string(), ToString::to_string)
            ),
        },
        "check the gateway URL in the config, the network, and that the gateway runs",
    ));
    checks.push(match &down {
        None => check("TLS verified", true, "the gateway's certificate was verified", ""),
        Some(Down::Certificate(e)) => check(
            "TLS verified",
            false,
            format!("not connected; last error: {e}"),
            "check ca_file (or pin_spki_sha256) against the gateway's certificate and the device clock",
        ),
        Some(d) => skipped("TLS verified", d.why()),
    });
    checks.push(check(
        "connected",
        link.connected,
        if privileged {
            format!("device {}, {} reconnects", link.device_id, link.reconnects)
        } else {
            format!("{} reconnects", link.reconnects)
        },
        "see the checks above and the daemon's log",
    ));
    let hb = link
        .heartbeat
        .unwrap_or(Duration::from_secs(ctx.heartbeat_s));
    let rx_age = link.last_rx.map(|t| now.saturating_sub(t));
    checks.push(match (&down, rx_age) {
        (Some(d), _) => skipped("heartbeat answered recently", d.why()),
        (None, rx_age) => check(
            "heartbeat answered recently",
            rx_age.is_some_and(|a| a <= hb * 2 + Duration::from_secs(10)),
            match rx_age {
                Some(a) => format!("last frame from the gateway {} s ago (heartbeat {} s)", a.as_secs(), hb.as_secs()),
                None => "nothing received from the gateway yet".into(),
            },
            "the network may drop idle connections faster than the heartbeat; see status --json learned",
        ),
    });
    let mut apps: BTreeSet<String> = ctx.policy.apps_of(peer.uid).into_iter().collect();
    if privileged {
        apps.extend(ctx.policy.configured_apps().map(str::to_string));
        apps.extend(ctx.store.known_apps().unwrap_or_default());
    }
    // One round trip for all apps, not one per app; in the apps' order.
    let per_app: Vec<Vec<DoctorCheck>> = futures_util::stream::iter(apps)
        .map(|app_id| app_checks(ctx, app_id, down.as_ref()))
        .buffered(TOKEN_CHECKS_AT_ONCE)
        .collect()
        .await;
    checks.extend(per_app.into_iter().flatten());
    app::DoctorReport { checks }
}

/// The checks of one app: its token (asked of the gateway) and its delivery.
async fn app_checks(ctx: &AppContext, app_id: String, down: Option<&Down>) -> Vec<DoctorCheck> {
    let wall = ctx.gateway_clock.now_ms();
    let mut checks = Vec::with_capacity(2);
    let name = format!("{app_id}: token valid at the gateway");
    match ctx.store.token(&app_id).ok().flatten() {
        None => checks.push(check(
            &format!("{app_id}: token"),
            false,
            "not registered on this device",
            "the app registers at login (syspushctl register APP_ID)",
        )),
        Some(_) if down.is_some() => {
            checks.push(skipped(&name, down.map(Down::why).unwrap_or_default()))
        }
        Some(token) => checks.push(
            match clock::timeout(TOKEN_CHECK_TIMEOUT, ctx.link.token_status(&app_id, &token)).await
            {
                Ok(Ok(r)) => check(
                    &name,
                    r.valid,
                    format!("{} at the gateway, {} queued there", r.state, r.pending),
                    "register again (the token was revoked or the gateway lost it) and report the new token to the app server",
                ),
                Ok(Err(e)) => skipped(&name, format!("gateway: {e}")),
                Err(_) => skipped(
                    &name,
                    format!(
                        "the gateway did not answer within {} s",
                        TOKEN_CHECK_TIMEOUT.as_secs()
                    ),
                ),
            },
        ),
    }
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
    checks
}

/// Typed link failures as the link records them, for tests.
#[cfg(test)]
pub(super) mod samples {
    use crate::link::{LinkFailure, TransportError};
    use crate::tls::TlsError;

    /// TCP connect refused.
    pub fn refused() -> LinkFailure {
        TransportError::from(TlsError::Connect {
            addr: "127.0.0.1:9".into(),
            source: std::io::Error::from_raw_os_error(111),
        })
        .into()
    }

    /// The gateway's certificate is from an unknown CA.
    pub fn unknown_issuer() -> LinkFailure {
        TransportError::from(TlsError::Handshake {
            addr: "127.0.0.1:9".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
        })
        .into()
    }

    /// The gateway refused the session.
    pub fn rejected() -> LinkFailure {
        LinkFailure::Rejected {
            code: 1,
            message: "bad secret".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    #[test]
    fn the_link_failure_names_the_cause() {
        assert_eq!(Down::of(None), Down::Unknown);
        let refused = Down::of(Some(&refused()));
        assert_eq!(
            refused.why(),
            "gateway unreachable (Connection refused (os error 111))"
        );
        assert!(matches!(
            Down::of(Some(&unknown_issuer())),
            Down::Certificate(_)
        ));
        assert!(matches!(Down::of(Some(&rejected())), Down::Other(_)));
    }
}

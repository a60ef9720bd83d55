//! The local app socket: a stream Unix socket (mode 0666: the kernel-reported
//! peer uid, not file permissions, decides what a caller may do) speaking
//! varint length-delimited `AppRequest` / `DaemonMessage` frames. The socket
//! itself comes from [`crate::activation`] (inherited from init, or bound
//! there); this module only serves it.
//!
//! Each connection is one task (`connection.rs`); the parts:
//!
//! | file            | owns                                                        |
//! |-----------------|-------------------------------------------------------------|
//! | `mod.rs`        | [`serve`]: the accept loop and the graceful stop            |
//! | `context.rs`    | [`AppContext`], what every connection shares                |
//! | `caller.rs`     | [`Class`]: privileged, app or stranger, by the peer's uid   |
//! | `limits.rs`     | [`Limits`]: connection budgets per class, deadlines, refusal |
//! | `connection.rs` | one connection: frames in, answers and deliveries out       |
//! | `feed.rs`       | deliveries from the store, a batch at a time, by cursor     |
//! | `requests.rs`   | answering each request (hello, ack, idle, register, ...)    |
//! | `status.rs`     | the Status answer                                           |
//! | `diag.rs`       | settings and test push                                      |
//! | `doctor.rs`     | doctor: its checks, PASS / FAIL / SKIP with the real cause  |
//! | `journal.rs`    | [`DeliveryJournal`]: last delivery and error per app        |
//! | `reply.rs`      | the framed connection type and reply builders (a leaf)      |
//!
//! Caps, so that no client can grow the daemon's memory without bound: per
//! connection see `connection.rs`; connections: budgets per caller class
//! (root and `system_uids` have reserved slots, app uids their own share,
//! uids that own no app a small pool), [`MAX_APP_CONNECTIONS`] in all, and
//! deadlines for idle unsubscribed connections and half-sent frames, so
//! that a crowd of strangers cannot lock the apps or the platform out (see
//! `limits.rs`).
//!
//! Stopping (as mini-redis does): on shutdown [`serve`] stops accepting, and
//! returns only once every connection task has finished, so that nothing
//! still writes to an app or holds the store when the daemon says "stopped".
//! Connections notice the shutdown at their next step; one stuck longer (a
//! doctor waiting on the gateway, an app that stopped reading) is aborted
//! after [`STOP_GRACE`], so the daemon still stops well inside the 2 s a
//! supervisor allows.

mod caller;
mod connection;
mod context;
mod diag;
mod doctor;
mod feed;
mod journal;
mod limits;
mod reply;
mod requests;
mod status;

use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use caller::Class;
pub use context::AppContext;
pub use feed::delivery;
pub use journal::DeliveryJournal;
pub use limits::{
    FRAME_DEADLINE, IDLE_DEADLINE, Limits, MAX_APP_CONNECTIONS, MAX_CONNECTIONS_PER_APP_UID,
    MAX_CONNECTIONS_PER_STRANGER, MAX_CONNECTIONS_PER_UID, MAX_STRANGER_CONNECTIONS,
    PRIVILEGED_RESERVE,
};
pub use requests::{MAX_IN_FLIGHT, REQUEST_TIMEOUT};
pub use status::status;

use crate::clock;
use caller::Peer;
use connection::connection;
use limits::{ConnLimits, MAX_LINGERING_REFUSALS, refuse, refuse_now};

/// How long [`serve`] waits, after shutdown, for connection tasks still busy
/// before aborting them. Well under the daemon's 2 s stop: the link's GoAway
/// runs meanwhile.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until shutdown; each is served by its own task.
/// Returns once accepting has stopped and every connection task has ended
/// (those still running after [`STOP_GRACE`] are aborted).
pub async fn serve(listener: UnixListener, ctx: Arc<AppContext>, shutdown: CancellationToken) {
    serve_with(listener, ctx, Limits::default(), shutdown).await;
}

/// [`serve`] under other budgets and deadlines than the default ones
/// (tests shorten the deadlines).
pub async fn serve_with(
    listener: UnixListener,
    ctx: Arc<AppContext>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let budgets = ConnLimits::new(limits);
    let mut tasks = JoinSet::new();
    // Refused connections, each kept up to REFUSAL_LINGER (see limits.rs).
    let mut refusals = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished tasks as they end, so the set stays as small as
            // the number of live connections.
            Some(r) = tasks.join_next(), if !tasks.is_empty() => log_end(r),
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let creds = match getsockopt(&stream, PeerCredentials) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "no peer credentials; closing");
                            continue;
                        }
                    };
                    let (uid, pid) = (creds.uid(), creds.pid());
                    let class = Class::of(&ctx, uid);
                    match budgets.admit(uid, pid, class) {
                        Ok(slot) => {
                            let peer = Peer { uid, pid, class };
                            tasks.spawn(connection(stream, peer, slot, ctx.clone(), limits, shutdown.clone()));
                        }
                        Err(cap) if refusals.len() < MAX_LINGERING_REFUSALS => {
                            refusals.spawn(refuse(stream, cap));
                        }
                        Err(cap) => refuse_now(stream, &cap),
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
    // No new connections from here on: the listener goes with this task.
    drop(listener);
    refusals.shutdown().await;
    let drained = clock::timeout(STOP_GRACE, async {
        while let Some(r) = tasks.join_next().await {
            log_end(r);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "app connections still busy at shutdown; aborting them"
        );
        // Aborts them and waits until each is dropped (its slot and context
        // released), which takes one poll each.
        tasks.shutdown().await;
    }
}

/// Logs a connection task that did not end normally.
fn log_end(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r
        && e.is_panic()
    {
        tracing::error!(error = %e, "app connection task panicked");
    }
}

#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod tests;

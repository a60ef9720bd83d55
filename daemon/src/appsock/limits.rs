//! The connection budgets and deadlines ([`Limits`]), and the refusal of a
//! connection over a budget.
//!
//! Budgets, by the caller's [`Class`], so that a crowd of strangers (on
//! Android: any installed apps) cannot lock the platform or the apps out:
//!
//! | class                        | per uid                          | together                                   |
//! |------------------------------|----------------------------------|--------------------------------------------|
//! | privileged (root, system_uids) | [`MAX_CONNECTIONS_PER_UID`] (64) | the last [`PRIVILEGED_RESERVE`] (32) slots are theirs alone |
//! | app (owns an app id)         | [`MAX_CONNECTIONS_PER_APP_UID`] (32) | apps + strangers at most 256 - 32          |
//! | stranger (owns none)         | [`MAX_CONNECTIONS_PER_STRANGER`] (4) | [`MAX_STRANGER_CONNECTIONS`] (16)          |
//!
//! and [`MAX_APP_CONNECTIONS`] (256) in all. A refused connection gets
//! `Error{ERROR_UNAVAILABLE}` saying which budget is full; the refusal is
//! logged (a warning per streak of refusals, then a count).
//!
//! Deadlines (enforced by the connection, see `connection.rs`): a connection
//! that has not subscribed (Hello) and waits for no answer is closed
//! [`IDLE_DEADLINE`] after its last request; a frame whose first byte came
//! in must be complete within [`FRAME_DEADLINE`]. A subscribed app waiting
//! for messages has no deadline at all (an IM app holds its listener for days).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use syspush_proto::app::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::caller::Class;
use super::reply::error;
use crate::clock;

/// App connections served at once; more are refused (see the module docs).
/// At roughly 150 KiB of buffers per busy connection this bounds the socket's
/// memory to tens of MiB, and it stays far below a typical fd limit.
pub const MAX_APP_CONNECTIONS: usize = 256;
/// Connections one privileged uid may hold at once (root included: a runaway
/// tool running as root must not take every privileged slot either).
pub const MAX_CONNECTIONS_PER_UID: usize = 64;
/// Slots only root and `system_uids` may take: apps and strangers together
/// hold at most `MAX_APP_CONNECTIONS - PRIVILEGED_RESERVE`.
pub const PRIVILEGED_RESERVE: usize = 32;
/// Connections one app uid may hold at once (an app needs one listener per
/// app id and a few for requests).
pub const MAX_CONNECTIONS_PER_APP_UID: usize = 32;
/// Connections all uids that own no app may hold together: they can only ask
/// Status and doctor.
pub const MAX_STRANGER_CONNECTIONS: usize = 16;
/// Connections one uid that owns no app may hold at once.
pub const MAX_CONNECTIONS_PER_STRANGER: usize = 4;
/// A connection not subscribed and waiting for no answer is closed this long
/// after its last request (with `Error{ERROR_UNAVAILABLE}`).
pub const IDLE_DEADLINE: Duration = Duration::from_secs(10);
/// A frame must be complete this long after its first byte came in
/// (otherwise `Error{ERROR_BAD_FRAME}` and the connection is closed).
pub const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// How long a refused connection is kept to read what its client already
/// sent, so that the client reads the refusal instead of a reset.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Refused connections kept lingering at once; beyond, one is refused and
/// closed at once (its client may then see a reset instead of the error).
pub const MAX_LINGERING_REFUSALS: usize = 32;

/// The budgets and deadlines of the app socket. [`Limits::default`] is what
/// the daemon uses (the constants above); tests shorten the deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections in all.
    pub total: usize,
    /// Slots only privileged uids may take.
    pub privileged_reserve: usize,
    /// Per privileged uid.
    pub per_privileged_uid: usize,
    /// Per app uid.
    pub per_app_uid: usize,
    /// All strangers together.
    pub strangers: usize,
    /// Per stranger uid.
    pub per_stranger_uid: usize,
    /// See [`IDLE_DEADLINE`].
    pub idle: Duration,
    /// See [`FRAME_DEADLINE`].
    pub frame: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            total: MAX_APP_CONNECTIONS,
            privileged_reserve: PRIVILEGED_RESERVE,
            per_privileged_uid: MAX_CONNECTIONS_PER_UID,
            per_app_uid: MAX_CONNECTIONS_PER_APP_UID,
            strangers: MAX_STRANGER_CONNECTIONS,
            per_stranger_uid: MAX_CONNECTIONS_PER_STRANGER,
            idle: IDLE_DEADLINE,
            frame: FRAME_DEADLINE,
        }
    }
}

/// Live connections, by class and per uid; shared by the accept loop (which
/// takes slots) and the connection tasks (whose slots give them back).
#[derive(Debug, Clone)]
pub(crate) struct ConnLimits {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    privileged: usize,
    strangers: usize,
    per_uid: HashMap<u32, usize>,
    /// Connections refused since the last one admitted (for the log).
    refused: u64,
}

/// A connection's place under the budgets; given back when its task ends.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    limits: ConnLimits,
    uid: u32,
    class: Class,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut l = self.limits.lock();
        l.total = l.total.saturating_sub(1);
        match self.class {
            Class::Privileged => l.privileged = l.privileged.saturating_sub(1),
            Class::Stranger => l.strangers = l.strangers.saturating_sub(1),
            Class::App => {}
        }
        if let Some(n) = l.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                l.per_uid.remove(&self.uid);
            }
        }
    }
}

impl ConnLimits {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection of `uid` in `class`; otherwise the
    /// budget that is full, as the refusal tells it.
    pub(crate) fn admit(&self, uid: u32, pid: i32, class: Class) -> Result<ConnSlot, String> {
        let m = self.limits;
        let mut l = self.lock();
        let of_uid = l.per_uid.get(&uid).copied().unwrap_or(0);
        let unprivileged = l.total - l.privileged;
        let shared = m.total.saturating_sub(m.privileged_reserve);
        let full = if l.total >= m.total {
            Some(format!("{} app connections", m.total))
        } else {
            match class {
                Class::Privileged if of_uid >= m.per_privileged_uid => {
                    Some(format!("{} connections of uid {uid}", m.per_privileged_uid))
                }
                Class::Privileged => None,
                Class::App if of_uid >= m.per_app_uid => {
                    Some(format!("{} connections of app uid {uid}", m.per_app_uid))
                }
                Class::Stranger if of_uid >= m.per_stranger_uid => Some(format!(
                    "{} connections of uid {uid}, which owns no app",
                    m.per_stranger_uid
                )),
                Class::Stranger if l.strangers >= m.strangers => Some(format!(
                    "{} connections of uids that own no app",
                    m.strangers
                )),
                Class::App | Class::Stranger if unprivileged >= shared => {
                    Some(format!("{shared} connections of unprivileged uids"))
                }
                Class::App | Class::Stranger => None,
            }
        };
        if let Some(cap) = full {
            // One warning per streak: a client hammering the socket must not
            // flood the journal as well.
            if l.refused == 0 {
                tracing::warn!(
                    uid,
                    pid,
                    class = class.as_str(),
                    "connection cap reached ({cap}); refusing new app connections"
                );
            } else {
                tracing::debug!(
                    uid,
                    pid,
                    class = class.as_str(),
                    "connection refused ({cap})"
                );
            }
            l.refused += 1;
            return Err(cap);
        }
        if l.refused > 0 {
            tracing::info!(refused = l.refused, "accepting app connections again");
            l.refused = 0;
        }
        l.total += 1;
        match class {
            Class::Privileged => l.privileged += 1,
            Class::Stranger => l.strangers += 1,
            Class::App => {}
        }
        *l.per_uid.entry(uid).or_default() += 1;
        Ok(ConnSlot {
            limits: self.clone(),
            uid,
            class,
        })
    }
}

fn refusal_bytes(cap: &str) -> Vec<u8> {
    let reply = error(
        0,
        ErrorCode::ErrorUnavailable,
        format!("too many connections to syspushd ({cap}); try again later"),
    );
    syspush_proto::app_codec::to_vec(&reply).unwrap_or_default()
}

/// Tells a connection over a budget why it is closed, and keeps it for at
/// most [`REFUSAL_LINGER`] reading (and discarding) what the client sent:
/// closing a socket with unread input makes the client's next read fail with
/// "connection reset", and a client that had written its request before the
/// refusal came would never see it.
pub(crate) async fn refuse(mut stream: UnixStream, cap: String) {
    let bytes = refusal_bytes(&cap);
    let _ = clock::timeout(REFUSAL_LINGER, async {
        stream.write_all(&bytes).await?;
        // EOF for the client once it read the error...
        stream.shutdown().await?;
        // ...and we read until it closes its end (or the linger ends).
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Like [`refuse`], without lingering (when too many refusals linger
/// already). The socket was just accepted, so its send buffer is empty and
/// one small non-blocking write goes through.
pub(crate) fn refuse_now(stream: UnixStream, cap: &str) {
    // Through the std socket: tokio's `try_write` would wait for a
    // readiness event the reactor has not seen yet for a fresh socket.
    if let Ok(mut s) = stream.into_std() {
        use std::io::Write as _;
        let _ = s.write(&refusal_bytes(cap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_cannot_take_the_slots_of_apps_or_the_platform() {
        let l = ConnLimits::new(Limits::default());
        let mut held = Vec::new();
        // A crowd of strangers gets 16 slots in all, 4 per uid.
        for uid in 2000..2010 {
            for _ in 0..64 {
                if let Ok(s) = l.admit(uid, 1, Class::Stranger) {
                    held.push(s);
                }
            }
        }
        assert_eq!(held.len(), MAX_STRANGER_CONNECTIONS);
        assert!(
            l.admit(2000, 1, Class::Stranger)
                .unwrap_err()
                .contains("of uid 2000")
        );
        assert!(
            l.admit(2100, 1, Class::Stranger)
                .unwrap_err()
                .contains("own no app")
        );
        // Apps fill the unprivileged share, 32 per uid...
        for uid in 1000..1010 {
            for _ in 0..32 {
                if let Ok(s) = l.admit(uid, 1, Class::App) {
                    held.push(s);
                }
            }
        }
        assert_eq!(held.len(), MAX_APP_CONNECTIONS - PRIVILEGED_RESERVE);
        assert!(
            l.admit(1100, 1, Class::App)
                .unwrap_err()
                .contains("unprivileged")
        );
        // ...and root still gets the reserve.
        for _ in 0..PRIVILEGED_RESERVE {
            held.push(l.admit(0, 1, Class::Privileged).expect("reserved slot"));
        }
        assert!(
            l.admit(0, 1, Class::Privileged)
                .unwrap_err()
                .contains("256 app connections")
        );
        // Slots come back when connections end.
        held.truncate(0);
        assert!(l.admit(2000, 1, Class::Stranger).is_ok());
        let root: Vec<_> = (0..64)
            .map(|_| l.admit(0, 1, Class::Privileged).expect("root slot"))
            .collect();
        assert!(
            l.admit(0, 1, Class::Privileged)
                .unwrap_err()
                .contains("64 connections of uid 0")
        );
        drop(root);
    }
}

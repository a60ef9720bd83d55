//! The connection caps: at most [`MAX_APP_CONNECTIONS`] app connections in
//! total and [`MAX_CONNECTIONS_PER_UID`] per uid (so one uid cannot take
//! every slot). A connection over a cap gets `Error{ERROR_UNAVAILABLE}` and is
//! closed; the refusal is logged (a warning per streak of refusals, then a
//! count).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use syspush_proto::app::ErrorCode;
use tokio::net::UnixStream;

use super::reply::error;

/// App connections served at once; more are refused (see the module docs).
/// At roughly 150 KiB of buffers per busy connection this bounds the socket's
/// memory to tens of MiB, and it stays far below a typical fd limit.
pub const MAX_APP_CONNECTIONS: usize = 256;
/// App connections one uid may hold at once (root included: a runaway tool
/// running as root must not lock every app out either).
pub const MAX_CONNECTIONS_PER_UID: usize = 64;

/// Live connections, in total and per uid; shared by the accept loop (which
/// takes slots) and the connection tasks (whose slots give them back).
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnLimits(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
    /// Connections refused since the last one admitted (for the log).
    refused: u64,
}

/// A connection's place under the caps; given back when its task ends.
pub(crate) struct ConnSlot {
    limits: ConnLimits,
    uid: u32,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut l = self.limits.lock();
        l.total = l.total.saturating_sub(1);
        if let Some(n) = l.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                l.per_uid.remove(&self.uid);
            }
        }
    }
}

impl ConnLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection of `uid`; None when a cap is reached.
    pub(crate) fn admit(&self, uid: u32, pid: i32) -> Option<ConnSlot> {
        let mut l = self.lock();
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
            limits: self.clone(),
            uid,
        })
    }
}

/// Tells a connection over a cap why it is closed. The socket was just
/// accepted, so its send buffer is empty and one small non-blocking write
/// goes through; if it does not, the close alone says enough.
pub(crate) fn refuse(stream: UnixStream) {
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

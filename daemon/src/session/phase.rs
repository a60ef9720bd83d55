//! Where the session is in a connection's life: waiting to dial, dialing,
//! handshaking, live (with its heartbeat bookkeeping), offline or stopped.

use std::time::Duration;

/// A live session.
#[derive(Debug, Clone)]
pub(super) struct Live {
    pub(super) since: Duration,
    pub(super) last_rx: Duration,
    /// The outstanding Ping, if any: when it was sent, and the silence before it.
    pub(super) ping: Option<(Duration, Duration)>,
}

/// The connection's phase.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    Waiting {
        dial_at: Duration,
    },
    Dialing {
        deadline: Duration,
    },
    Handshaking {
        deadline: Duration,
    },
    Live(Live),
    /// No network: wait for `Session::network_up`, no timer.
    Offline,
    Stopped,
}

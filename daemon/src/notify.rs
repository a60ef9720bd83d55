//! systemd readiness protocol (`sd_notify`) without libsystemd: datagrams like
//! `READY=1`, `STATUS=...`, `STOPPING=1` to `$NOTIFY_SOCKET`, which is a path
//! or, when it starts with `@`, a Linux abstract socket name. Without the
//! variable every call is a no-op; failures are logged, never fatal (the
//! supervisor may be gone, e.g. a test that only waited for READY). Sends
//! are non-blocking: a supervisor that stopped reading must not stall the
//! event loop (a full datagram queue would otherwise block `sendto`).
//!
//! Watchdog (`WATCHDOG_USEC`): [`Notifier::watchdog`] is called by the event
//! loop each time it wakes anyway and sends `WATCHDOG=1` when enough time has
//! passed since the last ping. There is deliberately no timer of its own: a
//! timer would wake an idle device just to say it is alive. This works
//! because the unit's `WatchdogSec=1h` exceeds the longest sleep of the loop,
//! one heartbeat (at most 28 min, the gateway's `heartbeat_max_s`) plus the
//! pong timeout; disconnected, the reconnect backoff caps at 5 min.
//!
//! The ping is rate-limited to one per quarter of the watchdog interval, not
//! half as `sd_watchdog_enabled(3)` suggests for timer-driven pings: with
//! wake-driven pings the worst gap between two is the limit plus the longest
//! sleep: 30 + 28 = 58 of 60 minutes at one half (two minutes from a kill),
//! 15 + 28 = 43 at one quarter. A ping costs one local datagram while
//! the CPU is awake anyway, so pinging more often costs nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::time::Duration;

use crate::clock;

/// Watchdog pings are sent at most once per `interval / WATCHDOG_DIVISOR`.
const WATCHDOG_DIVISOR: u32 = 4;

/// Sends notifications to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Watchdog>,
}

/// When the last `WATCHDOG=1` went out.
#[derive(Debug)]
struct Watchdog {
    interval: Duration,
    min_gap: Duration,
    last: Mutex<Duration>,
}

/// The watchdog timeout announced while the device has no network: the
/// daemon then sleeps with no timer at all (nothing to heartbeat), so the
/// event loop cannot prove it is alive by waking; 30 days in µs.
const OFFLINE_WATCHDOG_USEC: u64 = 30 * 24 * 3600 * 1_000_000;

impl Watchdog {
    fn new(interval: Duration, now: Duration) -> Self {
        Self {
            interval,
            min_gap: interval / WATCHDOG_DIVISOR,
            last: Mutex::new(now),
        }
    }

    /// Whether a ping is due at `now`; if so, records it as sent.
    fn due(&self, now: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_sub(*last) >= self.min_gap {
            *last = now;
            true
        } else {
            false
        }
    }
}

/// The watchdog interval from `WATCHDOG_USEC`, if it is meant for this
/// process (`WATCHDOG_PID` unset or ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(me)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let mut n = match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::to(&v.to_string_lossy()),
            _ => Self::disabled(),
        };
        let interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        if let Some(i) = interval
            && n.target.is_some()
        {
            tracing::debug!(watchdog_s = i.as_secs(), "watchdog enabled");
            n = n.with_watchdog(i);
        }
        n
    }

    /// Adds watchdog pings every `interval / 4` at most (see the module docs).
    pub fn with_watchdog(mut self, interval: Duration) -> Self {
        self.watchdog = Some(Watchdog::new(interval, clock::now()));
        self
    }

    /// Notifier for an explicit address (`/path` or `@abstract`).
    pub fn to(addr: &str) -> Self {
        let parsed = match addr.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(addr),
        };
        let sock = UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s));
        let target = match (parsed, sock) {
            (Ok(a), Ok(sock)) => Some((sock, a)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(addr, error = %e, "NOTIFY_SOCKET unusable; readiness will not be reported");
                None
            }
        };
        Self {
            target,
            watchdog: None,
        }
    }

    /// A notifier that does nothing.
    pub fn disabled() -> Self {
        Self {
            target: None,
            watchdog: None,
        }
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(msg.as_bytes(), addr)
        {
            tracing::debug!(error = %e, msg, "sd_notify failed");
        }
    }

    /// `READY=1`: the store is open and the app socket listens.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=started\n");
    }

    /// `STATUS=...` (newlines are replaced: they separate assignments).
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}\n", text.replace('\n', " ")));
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }

    /// The device lost (true) or regained (false) its network. Offline the
    /// daemon has no timer and may not wake for hours, so the watchdog timeout
    /// is stretched (`WATCHDOG_USEC=`, systemd >= 236) instead of adding a
    /// timer only to ping it; back online the configured one is restored.
    pub fn offline(&self, offline: bool) {
        if let Some(w) = &self.watchdog {
            let usec = if offline {
                OFFLINE_WATCHDOG_USEC
            } else {
                u64::try_from(w.interval.as_micros()).unwrap_or(u64::MAX)
            };
            self.send(&format!("WATCHDOG=1\nWATCHDOG_USEC={usec}\n"));
            *w.last.lock().unwrap_or_else(|e| e.into_inner()) = clock::now();
        }
    }

    /// Called whenever the event loop wakes: `WATCHDOG=1` if the watchdog is
    /// on and the last ping is at least a quarter interval old.
    pub fn watchdog(&self) {
        if let Some(w) = &self.watchdog
            && w.due(clock::now())
        {
            self.send("WATCHDOG=1\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&path.to_string_lossy());
        n.ready();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).expect("recv");
        assert!(
            String::from_utf8_lossy(&buf[..len])
                .lines()
                .any(|l| l == "READY=1")
        );

        let name = format!("syspushd-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        Notifier::to(&format!("@{name}")).status("connected\nto x");
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"STATUS=connected to x\n");
        Notifier::disabled().stopping();
    }

    #[test]
    fn offline_stretches_and_online_restores_the_watchdog_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&path.to_string_lossy()).with_watchdog(Duration::from_secs(3600));
        let mut buf = [0u8; 256];
        n.offline(true);
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(
            &buf[..len],
            format!("WATCHDOG=1\nWATCHDOG_USEC={OFFLINE_WATCHDOG_USEC}\n").as_bytes()
        );
        n.offline(false);
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1\nWATCHDOG_USEC=3600000000\n");
        // Without a watchdog nothing is sent.
        Notifier::to(&path.to_string_lossy()).offline(true);
        rx.set_nonblocking(true).expect("nonblocking");
        assert!(rx.recv(&mut buf).is_err());
    }

    #[test]
    fn watchdog_interval_from_env_values() {
        assert_eq!(
            watchdog_interval(Some("3600000000"), None, 7),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            watchdog_interval(Some("1000000"), Some("7"), 7),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[test]
    fn watchdog_pings_on_wakeups_at_most_once_per_quarter_interval() {
        let s = Duration::from_secs;
        let w = Watchdog::new(s(3600), s(100));
        assert!(!w.due(s(100)), "just started");
        assert!(!w.due(s(100 + 899)), "quarter not yet passed");
        assert!(w.due(s(100 + 900)));
        assert!(!w.due(s(100 + 901)), "rate-limited after a ping");
        // A wake-up after a long sleep (one 28-minute heartbeat) pings at once.
        assert!(w.due(s(100 + 900 + 1680)));
    }

    #[test]
    fn watchdog_sends_to_the_socket_and_never_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::to(&path.to_string_lossy()).with_watchdog(Duration::ZERO);
        n.watchdog();
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        // Nobody reads: the queue fills and sends fail with EAGAIN instead of blocking.
        for _ in 0..10_000 {
            n.watchdog();
        }
    }
}

//! Where the daemon's logs go: the platform's own log.
//!
//! - Linux: stderr, which systemd connects to journald (a service's stderr is
//!   the journal by default; the unit needs nothing). Structured fields are
//!   written as `key=value` by `tracing`'s formatter and stay searchable with
//!   `journalctl -u syspushd`. Colours only at a terminal.
//! - Android: logcat, tag `syspushd`. Android init connects a service's stdio
//!   to /dev/null (or, with `stdio_to_kmsg`, to the kernel log, not logcat),
//!   so stderr would be lost. Instead of linking liblog (which needs the NDK
//!   at build time) or a crate wrapping it, each event is sent as one
//!   datagram to logd's writer socket `/dev/socket/logdw`, in the packet
//!   format liblog itself uses (`logd_writer.cpp`). Every domain may write
//!   there under the platform SELinux policy. If the socket cannot be opened
//!   the daemon falls back to stderr.
//!
//! The filter is `RUST_LOG` in the simple form of `tracing_subscriber`'s
//! `Targets`: comma-separated `LEVEL` (everything) and `TARGET=LEVEL`
//! directives, e.g. `debug`, `syspushd=debug`, `info,syspushd::link=trace`.
//! `EnvFilter`'s span and field directives (`[span{field=value}]`) and
//! regular expressions are not supported (its regex engine would be a large
//! part of the binary): a value that does not parse, or none, means `info`.
//!
//! The logd path is compiled everywhere and unit-tested on Linux against a
//! datagram socket standing in for logd; it has not run against a real logd.

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// logd's writer socket.
pub const LOGDW: &str = "/dev/socket/logdw";
/// The logcat tag.
pub const TAG: &str = "syspushd";
/// `LOGGER_ENTRY_MAX_PAYLOAD` minus the priority byte, tag and NULs.
const MAX_MESSAGE: usize = 4068 - 1 - TAG.len() - 2;
/// `LOG_ID_MAIN`.
const LOG_ID_MAIN: u8 = 0;

/// Installs the global subscriber: `RUST_LOG` (default `info`) to the
/// platform's log.
pub fn init() {
    let filter = || filter(std::env::var("RUST_LOG").ok().as_deref());
    #[cfg(target_os = "android")]
    if let Ok(logd) = Logd::connect(Path::new(LOGDW)) {
        tracing_subscriber::registry()
            .with(filter())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(logd)
                    .with_ansi(false)
                    // logcat stamps each entry itself.
                    .without_time(),
            )
            .init();
        return;
    }
    // Under systemd, stderr is a stream to journald (JOURNAL_STREAM names
    // it): write native journal entries instead, so every tracing field is a
    // real journal field (`session_id` becomes SYSPUSH_SESSION_ID, queryable
    // with `journalctl SYSPUSH_SESSION_ID=...`) and warnings/errors get their
    // syslog priority.
    if stderr_is_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(
                journal
                    .with_syslog_identifier(TAG.to_string())
                    .with_field_prefix(Some("SYSPUSH".to_string())),
            )
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a person at a terminal, not in journald or files.
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// The filter a `RUST_LOG` value asks for; `info` when unset or unparsable.
fn filter(rust_log: Option<&str>) -> Targets {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO))
}

/// A connection to logd's writer socket; a `tracing` writer factory.
#[derive(Debug)]
#[cfg_attr(not(target_os = "android"), allow(dead_code))]
pub struct Logd {
    sock: UnixDatagram,
}

#[cfg_attr(not(target_os = "android"), allow(dead_code))]
impl Logd {
    /// Connects to `path` (normally [`LOGDW`]); non-blocking, like liblog:
    /// a busy logd drops log lines rather than stalling the daemon.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        sock.set_nonblocking(true)?;
        Ok(Self { sock })
    }
}

/// Android log priorities (`android_LogPriority`).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::TRACE => 2,
        Level::DEBUG => 3,
        Level::INFO => 4,
        Level::WARN => 5,
        Level::ERROR => 6,
    }
}

/// One log entry being formatted; sent to logd when dropped.
#[derive(Debug)]
pub struct Entry<'a> {
    sock: &'a UnixDatagram,
    priority: u8,
    buf: Vec<u8>,
}

impl Write for Entry<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The datagram liblog sends: header (id u8, tid u16, realtime sec u32 +
/// nsec u32, packed, little-endian), then priority, tag\0, message\0.
fn packet(priority: u8, tid: u32, now: SystemTime, message: &[u8]) -> Vec<u8> {
    let t = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut msg = message.strip_suffix(b"\n").unwrap_or(message);
    msg = &msg[..msg.len().min(MAX_MESSAGE)];
    let mut p = Vec::with_capacity(11 + 1 + TAG.len() + 1 + msg.len() + 1);
    p.push(LOG_ID_MAIN);
    p.extend_from_slice(&(tid as u16).to_le_bytes());
    p.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
    p.extend_from_slice(&t.subsec_nanos().to_le_bytes());
    p.push(priority);
    p.extend_from_slice(TAG.as_bytes());
    p.push(0);
    // An interior NUL would end the message early in logcat; show it instead.
    p.extend(msg.iter().map(|&c| if c == 0 { b'?' } else { c }));
    p.push(0);
    p
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let tid = nix::unistd::gettid().as_raw() as u32;
        // Nowhere left to report a failed log write; logd drops under load too.
        let _ = self
            .sock
            .send(&packet(self.priority, tid, SystemTime::now(), &self.buf));
    }
}

impl<'a> MakeWriter<'a> for Logd {
    type Writer = Entry<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Entry {
            sock: &self.sock,
            priority: priority(&Level::INFO),
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Entry {
            sock: &self.sock,
            priority: priority(meta.level()),
            buf: Vec::new(),
        }
    }
}

/// True when stderr is the journal stream systemd set up for this service
/// (`JOURNAL_STREAM=DEV:INODE` matches stderr), the check sd_journal's docs
/// prescribe so a child whose stderr was redirected does not log natively.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rust_log_simple_directives_filter_by_target() {
        use tracing_subscriber::filter::LevelFilter;
        let all_debug = filter(Some("debug"));
        assert!(all_debug.would_enable("syspushd::link", &Level::DEBUG));
        assert!(!all_debug.would_enable("syspushd::link", &Level::TRACE));
        let ours = filter(Some("syspushd=debug"));
        assert!(ours.would_enable("syspushd::link", &Level::DEBUG));
        assert!(!ours.would_enable("rustls::client", &Level::ERROR));
        for fallback in [None, Some(""), Some("[span{x=1}]=debug")] {
            let f = filter(fallback);
            assert_eq!(f.default_level(), Some(LevelFilter::INFO), "{fallback:?}");
            assert!(!f.would_enable("syspushd", &Level::DEBUG));
        }
    }

    #[test]
    fn packet_has_liblogs_layout() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        let p = packet(6, 0x1_0203, at, b"link down reason=x\n");
        assert_eq!(p[0], LOG_ID_MAIN);
        assert_eq!(
            &p[1..3],
            &0x0203u16.to_le_bytes(),
            "tid truncated to 16 bits"
        );
        assert_eq!(&p[3..7], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&p[7..11], &123u32.to_le_bytes());
        assert_eq!(p[11], 6);
        assert_eq!(&p[12..], b"syspushd\0link down reason=x\0");
        let long = packet(4, 1, at, &vec![b'a'; 10_000]);
        assert!(
            long.len() <= 11 + 4068,
            "fits one logd entry: {}",
            long.len()
        );
    }

    #[test]
    fn events_arrive_at_the_logd_socket_with_their_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logdw");
        let rx = UnixDatagram::bind(&path).expect("bind");
        let logd = Logd::connect(&path).expect("connect");
        let sub = tracing_subscriber::fmt()
            .with_writer(logd)
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(sub, || tracing::warn!(seq = 7, "commit failed"));
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(buf[11], 5, "WARN");
        let text = String::from_utf8_lossy(&buf[12..n]);
        assert!(text.starts_with("syspushd\0"), "{text:?}");
        assert!(text.contains("commit failed seq=7"), "{text:?}");
    }
}

//! systemd readiness protocol (`sd_notify`) without libsystemd: datagrams like
//! `READY=1`, `STATUS=...`, `STOPPING=1` to `$NOTIFY_SOCKET`, which is a path
//! or, when it starts with `@`, a Linux abstract socket name. Without the
//! variable every call is a no-op; failures are logged, never fatal (the
//! supervisor may be gone, e.g. a test that only waited for READY).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends notifications to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::to(&v.to_string_lossy()),
            _ => Self { target: None },
        }
    }

    /// Notifier for an explicit address (`/path` or `@abstract`).
    pub fn to(addr: &str) -> Self {
        let parsed = match addr.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(addr),
        };
        let target = match (parsed, UnixDatagram::unbound()) {
            (Ok(a), Ok(sock)) => Some((sock, a)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(addr, error = %e, "NOTIFY_SOCKET unusable; readiness will not be reported");
                None
            }
        };
        Self { target }
    }

    /// A notifier that does nothing.
    pub fn disabled() -> Self {
        Self { target: None }
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
}

//! What the session is given: its tunables ([`SessionConfig`]) and, per
//! connection, the credentials and resume point of the ClientHello ([`Hello`]).

use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::heartbeat::HeartbeatConfig;

/// Tunables of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// The heartbeat policy's tunables (narrowed to the gateway's bounds).
    pub heartbeat: HeartbeatConfig,
    /// How long to wait for any frame after a Ping before declaring the link dead.
    pub pong_timeout: Duration,
    /// Dial + TLS + WebSocket + ServerHello must finish within this.
    pub handshake_timeout: Duration,
    /// A connection up this long resets the backoff.
    pub stable_after: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat: HeartbeatConfig::default(),
            pong_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
        }
    }
}

/// Credentials and resume point for the ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Enrolled device id.
    pub device_id: String,
    /// Enrolled secret.
    pub secret: String,
    /// Highest sequence durably committed.
    pub last_committed_seq: u64,
}

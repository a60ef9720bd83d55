//! What the session hands out besides frames, in two queues as in
//! quinn-proto: [`DriverEvent`]s for the I/O driver (what to do with the
//! transport) and [`Event`]s for the application side (what to commit, whom
//! to answer, what to show). The driver never filters one out of the other.

use std::time::Duration;

use syspush_proto::common::Notification;
use syspush_proto::device;

use crate::heartbeat::Learned;
use crate::link::error::{ProtocolError, TransportError};

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// No frame arrived within the pong timeout after a Ping.
    PongTimeout,
    /// Dial or handshake took longer than the handshake timeout.
    HandshakeTimeout,
    /// The transport failed or was closed (as the driver saw it).
    Transport(TransportError),
    /// The gateway said goodbye.
    GoAway {
        /// Gateway's reason.
        reason: String,
        /// Minimum wait before redialing.
        retry_after: Duration,
    },
    /// The gateway answered with an error frame (bad credentials, version, ...).
    Rejected {
        /// `device::ErrorCode` value.
        code: i32,
        /// Gateway's message.
        message: String,
    },
    /// The gateway broke the protocol (its bytes arrived: the path is alive).
    Protocol(ProtocolError),
    /// The default route went away: nothing to dial until it is back.
    NetworkLost,
    /// The device moved to another network: redial on it at once.
    NetworkChanged,
}

impl CloseReason {
    /// How the driver drops the transport closed for this reason: with a
    /// reset when the gateway went silent (what was sent is unanswered, and a
    /// normal close would keep it retransmitted into a likely dead mapping).
    pub(super) fn teardown(&self) -> DriverEvent {
        match self {
            CloseReason::PongTimeout
            | CloseReason::HandshakeTimeout
            | CloseReason::Transport(TransportError::SendStalled) => DriverEvent::Abort,
            _ => DriverEvent::Disconnect,
        }
    }
}

/// Something the I/O driver must do with the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverEvent {
    /// The connection is over: drop the transport (frames still queued for it
    /// were discarded). When to dial again is [`super::Session::poll_timeout`].
    Disconnect,
    /// The connection is over because the gateway went silent (a Ping, the
    /// handshake or a write went unanswered): drop the transport with a
    /// reset (zero linger). The path is most likely dead — a NAT that forgot
    /// the mapping — and a normal close would leave the kernel retransmitting
    /// the unanswered bytes into it for minutes.
    Abort,
}

/// Something the application side must act on: messages to commit, answers
/// to requests, revocations, and changes of the link's state.
// Deliver carries a whole Notification inline: events live for one drain of
// a short queue, so boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// ServerHello received: the session is up.
    Established {
        /// Gateway's session id.
        session_id: String,
        /// Heartbeat interval in force for this session.
        heartbeat: Duration,
        /// Gateway wall clock at ServerHello, unix ms (0: not given).
        server_time_ms: u64,
    },
    /// A message to commit; after committing call [`super::Session::committed`].
    Deliver {
        /// Per-device sequence number.
        seq: u64,
        /// The message (None if the gateway sent an empty Deliver; its seq still counts).
        notification: Option<Notification>,
    },
    /// Answer to [`super::Session::register`].
    Registered {
        /// Id returned by `register`.
        request_id: u64,
        /// App id.
        app_id: String,
        /// The app's push token.
        token: String,
    },
    /// Answer to [`super::Session::unregister`].
    Unregistered {
        /// Id returned by `unregister`.
        request_id: u64,
        /// App id.
        app_id: String,
    },
    /// Answer to [`super::Session::token_status`].
    TokenStatus {
        /// Id of the request.
        request_id: u64,
        /// The gateway's answer.
        reply: device::TokenStatusReply,
    },
    /// Answer to [`super::Session::test_push`]: the test message is queued.
    TestPushSent {
        /// Id of the request.
        request_id: u64,
        /// Its message id.
        message_id: String,
    },
    /// The gateway refused a request.
    RequestFailed {
        /// Id of the request.
        request_id: u64,
        /// `device::ErrorCode` value.
        code: i32,
        /// Gateway's message.
        message: String,
    },
    /// The gateway revoked a token (forced logout).
    TokenRevoked {
        /// App id.
        app_id: String,
        /// The dead token.
        token: String,
        /// Why.
        reason: String,
    },
    /// The connection is over (the driver was told to drop the transport).
    /// Redial at `redial_at`.
    Closed {
        /// Why.
        reason: CloseReason,
        /// Boot time of the next dial; None while there is no network.
        redial_at: Option<Duration>,
    },
    /// The heartbeat learned something about the current network: persist it.
    Learned(Learned),
}

//! The link's errors: [`LinkError`] stops the link task; [`TransportError`]
//! ends one connection (the session redials). A transport failure is
//! classified where it is seen — [`DialFailure`], [`TlsFailure`] — from the
//! io, rustls, tungstenite and store error types, never from their text, and
//! the original error is kept as the source (its text is what the log and
//! doctor show). [`ProtocolError`] ends one connection too, but bytes did
//! arrive: the gateway, not the path, is at fault. [`LinkFailure`] is the
//! last failure the status keeps.
//!
//! A leaf: the session (for its close reasons), the status and doctor use
//! these types; nothing here uses the rest of the link.

use std::fmt;
use std::io;
use std::sync::Arc;

use syspush_proto::CodecError;
use syspush_proto::device::frame::Body;
use tokio_tungstenite::tungstenite;

use crate::enroll::EnrollError;
use crate::store::StoreError;
use crate::tls::{self, TlsError};

/// Fatal errors of the link task.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The boot-time timer could not be created or armed.
    #[error("link timer: {0}")]
    Timer(#[source] std::io::Error),
    /// Randomness for the backoff jitter is unavailable.
    #[error("no system randomness")]
    Random,
}

/// An error kept by both the session's close reason and the status snapshot
/// (io and tungstenite errors cannot be cloned). Equal only to itself: the
/// same failure seen twice, not two failures alike.
#[derive(Debug)]
pub struct Shared<E>(Arc<E>);

impl<E> Shared<E> {
    /// Wraps `e`.
    pub fn new(e: E) -> Self {
        Self(Arc::new(e))
    }

    /// The error itself.
    pub fn get(&self) -> &E {
        &self.0
    }
}

impl<E> Clone for Shared<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E> PartialEq for Shared<E> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<E> Eq for Shared<E> {}

impl<E: fmt::Display> fmt::Display for Shared<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Shared<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

type WsError = tungstenite::Error;

/// Why one connection to the gateway failed (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Neither stored nor configured credentials, and no enrollment key.
    #[error("no credentials: set enrollment_key or device_id + device_secret")]
    NoCredentials,
    /// The store could not be read or written before dialing (credentials,
    /// resume point).
    #[error("{0}")]
    Store(#[source] Shared<StoreError>),
    /// Enrollment failed; `dial` says how when TCP or TLS was the reason.
    #[error("{source}")]
    Enroll {
        /// How the connection for enrolling failed, if it did.
        dial: Option<DialFailure>,
        /// The enrollment error.
        #[source]
        source: Shared<EnrollError>,
    },
    /// TCP or TLS to the gateway failed.
    #[error("{source}")]
    Dial {
        /// How.
        failure: DialFailure,
        /// The dial error.
        #[source]
        source: Shared<TlsError>,
    },
    /// The WebSocket upgrade failed.
    #[error("WebSocket handshake: {0}")]
    WebSocketHandshake(#[source] Shared<WsError>),
    /// Reading from the WebSocket failed.
    #[error("{0}")]
    Receive(#[source] Shared<WsError>),
    /// Writing to the WebSocket failed.
    #[error("send: {0}")]
    Send(#[source] Shared<WsError>),
    /// A write did not complete by the session's next deadline: the link is dead.
    #[error("send stalled")]
    SendStalled,
    /// A frame to send could not be encoded.
    #[error("encode: {0}")]
    Encode(#[source] Shared<CodecError>),
    /// The gateway closed the WebSocket (with a close frame, if `code` is set).
    #[error("{}", closed_text(*code, reason))]
    ClosedByGateway {
        /// WebSocket close code.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// The connection ended without a close frame.
    #[error("connection closed by gateway")]
    Eof,
    /// Deliveries could not be committed: they are not acked, the gateway
    /// resends them on the next connection.
    #[error("store: {0}")]
    Commit(#[source] Shared<StoreError>),
}

/// How the gateway broke the protocol. Bytes from it did arrive — the path
/// is alive, unlike with a [`TransportError`] — but not ones the session may
/// act on, so the connection ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A binary message that does not decode as a frame.
    #[error("bad frame from gateway: {0}")]
    BadFrame(#[source] Shared<CodecError>),
    /// A text message (the protocol is binary).
    #[error("unexpected text message from gateway")]
    UnexpectedText,
    /// A frame that has no place at this point of the session.
    #[error("expected {expected}, got {got}")]
    UnexpectedFrame {
        /// What the session waited for.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
}

impl ProtocolError {
    /// `got` came where only `expected` may.
    pub fn unexpected(expected: &'static str, got: &Body) -> Self {
        ProtocolError::UnexpectedFrame {
            expected,
            got: body_name(got),
        }
    }
}

fn body_name(b: &Body) -> &'static str {
    match b {
        Body::ClientHello(_) => "ClientHello",
        Body::ServerHello(_) => "ServerHello",
        Body::Deliver(_) => "Deliver",
        Body::Ack(_) => "Ack",
        Body::Register(_) => "Register",
        Body::Registered(_) => "Registered",
        Body::Unregister(_) => "Unregister",
        Body::Unregistered(_) => "Unregistered",
        Body::Ping(_) => "Ping",
        Body::Pong(_) => "Pong",
        Body::Goaway(_) => "GoAway",
        Body::Error(_) => "Error",
        Body::SetIdle(_) => "SetIdle",
        Body::TokenRevoked(_) => "TokenRevoked",
        Body::TokenStatusRequest(_) => "TokenStatusRequest",
        Body::TokenStatusReply(_) => "TokenStatusReply",
        Body::TestPushRequest(_) => "TestPushRequest",
        Body::TestPushReply(_) => "TestPushReply",
    }
}

fn closed_text(code: Option<u16>, reason: &str) -> String {
    match code {
        Some(code) => format!("closed by gateway {code} {reason}")
            .trim_end()
            .to_string(),
        None => "closed by gateway".to_string(),
    }
}

impl TransportError {
    /// How dialing failed, when that is what failed (for the link or for enrolling).
    pub fn dial_failure(&self) -> Option<DialFailure> {
        match self {
            TransportError::Dial { failure, .. } => Some(*failure),
            TransportError::Enroll { dial, .. } => *dial,
            _ => None,
        }
    }

    /// Reading the store failed.
    pub fn store(e: StoreError) -> Self {
        TransportError::Store(Shared::new(e))
    }

    /// Committing deliveries failed.
    pub fn commit(e: StoreError) -> Self {
        TransportError::Commit(Shared::new(e))
    }

    /// Whether the failure is a message from the gateway (a WebSocket
    /// close): bytes arrived, so the path to it was alive.
    pub fn came_from_gateway(&self) -> bool {
        matches!(self, TransportError::ClosedByGateway { .. })
    }

    /// The gateway ended the WebSocket with `frame` (None: no close frame).
    pub fn closed(frame: Option<tungstenite::protocol::CloseFrame>) -> Self {
        match frame {
            Some(f) => TransportError::ClosedByGateway {
                code: Some(f.code.into()),
                reason: f.reason.to_string(),
            },
            None => TransportError::ClosedByGateway {
                code: None,
                reason: String::new(),
            },
        }
    }
}

impl From<TlsError> for TransportError {
    fn from(e: TlsError) -> Self {
        TransportError::Dial {
            failure: DialFailure::of(&e),
            source: Shared::new(e),
        }
    }
}

impl From<EnrollError> for TransportError {
    fn from(e: EnrollError) -> Self {
        let dial = match &e {
            EnrollError::Tls(t) => Some(DialFailure::of(t)),
            _ => None,
        };
        TransportError::Enroll {
            dial,
            source: Shared::new(e),
        }
    }
}

/// How dialing (TCP, then TLS) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialFailure {
    /// The gateway host is not a valid TLS server name.
    ServerName,
    /// TCP connect (or resolving the host) failed.
    Connect(ConnectFailure),
    /// The TLS handshake failed.
    Tls(TlsFailure),
    /// The TLS client could not be set up (not returned by a dial today).
    Setup,
}

impl DialFailure {
    fn of(e: &TlsError) -> Self {
        match e {
            TlsError::ServerName(_) => DialFailure::ServerName,
            TlsError::Connect { source, .. } => DialFailure::Connect(ConnectFailure::of(source)),
            TlsError::Handshake { source, .. } => DialFailure::Tls(TlsFailure::of(source)),
            // CA file, rustls configuration, verifier: setting up, not dialing.
            _ => DialFailure::Setup,
        }
    }

    /// How TLS failed, if it did.
    pub fn tls(self) -> Option<TlsFailure> {
        match self {
            DialFailure::Tls(t) => Some(t),
            _ => None,
        }
    }
}

/// How a TCP connect failed, from its [`io::ErrorKind`]. (Name resolution
/// failures carry no kind of their own: they are [`ConnectFailure::Other`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Nothing listens there (or a firewall rejects).
    Refused,
    /// No route to the network or host.
    Unreachable,
    /// No answer in time.
    TimedOut,
    /// Anything else.
    Other(io::ErrorKind),
}

impl ConnectFailure {
    fn of(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
                ConnectFailure::Unreachable
            }
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            other => ConnectFailure::Other(other),
        }
    }
}

/// How a TLS handshake failed, from the [`rustls::Error`] inside the io error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate chain is not from a trusted CA.
    UnknownIssuer,
    /// The certificate is not for the gateway's host name.
    BadName,
    /// The certificate has expired (or the device clock is ahead).
    Expired,
    /// The certificate is not valid yet (or the device clock is behind).
    NotYetValid,
    /// The chain is valid but its key is not one of `pin_spki_sha256`.
    PinMismatch,
    /// Another problem with the gateway's certificate.
    BadCertificate,
    /// The handshake failed for another reason (alert, protocol, reset).
    Other,
}

impl TlsFailure {
    fn of(e: &io::Error) -> Self {
        // tokio-rustls hands rustls' error over inside the io error.
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return TlsFailure::Other;
        };
        use rustls::CertificateError as C;
        match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => TlsFailure::UnknownIssuer,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::BadName,
                C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
                C::Other(o) if o.0.downcast_ref::<tls::NotPinned>().is_some() => {
                    TlsFailure::PinMismatch
                }
                _ => TlsFailure::BadCertificate,
            },
            rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_) => TlsFailure::BadCertificate,
            _ => TlsFailure::Other,
        }
    }

    /// Whether the gateway's certificate (or its key) was refused.
    pub fn is_certificate(self) -> bool {
        !matches!(self, TlsFailure::Other)
    }
}

/// The last thing that kept the link down, for the status and doctor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkFailure {
    /// Dialing (or enrolling) failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The gateway refused the session (credentials, protocol version).
    #[error("gateway rejected the session: {message}")]
    Rejected {
        /// `device::ErrorCode` value.
        code: i32,
        /// Gateway's message.
        message: String,
    },
}

impl LinkFailure {
    /// How TLS failed, if that is why.
    pub fn tls_failure(&self) -> Option<TlsFailure> {
        match self {
            LinkFailure::Transport(t) => t.dial_failure().and_then(DialFailure::tls),
            LinkFailure::Rejected { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_frame_is_shown_as_before() {
        use tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
        let closed = |code, reason: &'static str| {
            TransportError::closed(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
            .to_string()
        };
        assert_eq!(
            closed(CloseCode::Away, "restart"),
            "closed by gateway 1001 restart"
        );
        assert_eq!(closed(CloseCode::Normal, ""), "closed by gateway 1000");
        assert_eq!(
            TransportError::closed(None).to_string(),
            "closed by gateway"
        );
    }

    #[test]
    fn tls_failures_are_classified_from_rustls_errors() {
        use rustls::CertificateError as C;
        let tls = |e: rustls::Error| {
            let io = io::Error::new(io::ErrorKind::InvalidData, e);
            TlsFailure::of(&io)
        };
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(C::UnknownIssuer)),
            TlsFailure::UnknownIssuer
        );
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(C::Expired)),
            TlsFailure::Expired
        );
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(C::NotValidForName)),
            TlsFailure::BadName
        );
        let other = tls(rustls::Error::InvalidCertificate(C::Other(
            rustls::OtherError(Arc::new(io::Error::other("not a pin"))),
        )));
        assert_eq!(other, TlsFailure::BadCertificate);
        assert!(other.is_certificate());
        let alert = tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(alert, TlsFailure::Other);
        assert!(!alert.is_certificate());
        // A reset during the handshake is not about certificates.
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(TlsFailure::of(&reset), TlsFailure::Other);
    }

    /// A CA named `name` (PEM) and a TLS server for 127.0.0.1 with a leaf it signed.
    fn ca_and_server(name: &str) -> (String, tokio_rustls::TlsAcceptor) {
        let s = crate::tls::test_server::new(name);
        (s.ca_pem, s.acceptor)
    }

    /// Dials a fresh server trusting `ca` (the server's own if None) with
    /// `pins`; how the dial failed.
    async fn dial_failure(ca: Option<&str>, pins: &[String]) -> DialFailure {
        let dir = tempfile::tempdir().expect("tempdir");
        let (own_ca, acceptor) = ca_and_server("the gateway's CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.unwrap_or(&own_ca)).expect("write ca");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ep = crate::endpoint::Endpoint {
            host: "127.0.0.1".into(),
            port: listener.local_addr().expect("addr").port(),
        };
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let _ = acceptor.accept(tcp).await;
        });
        let trust = tls::Trust::load(Some(&ca_file), pins).expect("trust");
        let config = tls::client_config(&trust).expect("client config");
        let e = tls::dial(&config, &ep)
            .await
            .map(drop)
            .expect_err("the dial must fail");
        let _ = server.await;
        TransportError::from(e)
            .dial_failure()
            .expect("a dial failure")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn real_handshake_failures_are_classified() {
        let (other_ca, _) = ca_and_server("someone else's CA");
        assert_eq!(
            dial_failure(Some(&other_ca), &[]).await,
            DialFailure::Tls(TlsFailure::UnknownIssuer)
        );
        let pin = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        assert_eq!(
            dial_failure(None, &[pin]).await,
            DialFailure::Tls(TlsFailure::PinMismatch)
        );
        // A port held by a socket that does not listen: refused.
        let held = tokio::net::TcpSocket::new_v4().expect("socket");
        held.bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let ep = crate::endpoint::Endpoint {
            host: "127.0.0.1".into(),
            port: held.local_addr().expect("addr").port(),
        };
        let trust = tls::Trust::load(None, &[]).expect("trust");
        let config = tls::client_config(&trust).expect("client config");
        let e = tls::dial(&config, &ep)
            .await
            .map(drop)
            .expect_err("refused");
        assert_eq!(
            TransportError::from(e).dial_failure(),
            Some(DialFailure::Connect(ConnectFailure::Refused))
        );
    }

    #[test]
    fn text_that_mentions_a_pin_is_not_a_tls_failure() {
        // Doctor used to look for "pin" in the text: "mapping" and "ping" matched.
        let e = LinkFailure::Rejected {
            code: 2,
            message: "stale mapping; ping again".into(),
        };
        assert_eq!(e.tls_failure(), None);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ConnectFailure::of(&refused),
            ConnectFailure::Refused,
            "typed from the io error kind"
        );
    }
}

//! The daemon against a scripted fake gateway (TLS WebSocket on loopback):
//! ClientHello contents, one commit + one cumulative Ack for frames that
//! arrive together (sent at once, not with the next heartbeat), delivery to
//! an app, register, heartbeat and a dead link, resume from the committed
//! seq, and GoAway on shutdown; a gateway gone silent gets a TCP reset.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use syspush_proto::app::{
    AppRequest, DaemonMessage, Hello, RegisterRequest, app_request, daemon_message,
};
use syspush_proto::app_codec::DelimitedCodec;
use syspush_proto::common::Notification;
use syspush_proto::device::{self, frame::Body};
use syspush_proto::device_codec::{decode, encode, frame};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::codec::Framed;

type Ws = WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

/// Bound on every wait, so a broken daemon fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(20);

async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    syspushd::clock::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A CA and a server certificate for 127.0.0.1 signed by it; writes ca.pem.
fn tls(dir: &Path) -> TlsAcceptor {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

async fn accept(listener: &TcpListener, tls: &TlsAcceptor) -> Ws {
    let (tcp, _) = bounded("a connection", listener.accept())
        .await
        .expect("accept");
    let stream = tls.accept(tcp).await.expect("tls accept");
    tokio_tungstenite::accept_async(stream)
        .await
        .expect("ws accept")
}

async fn recv(ws: &mut Ws) -> Body {
    loop {
        match bounded("a frame", ws.next()).await {
            Some(Ok(Message::Binary(b))) => {
                return decode(&b).expect("valid frame").body.expect("body");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, frames: Vec<Body>) {
    for b in frames {
        ws.feed(Message::Binary(encode(&frame(b)).expect("encode").into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
}

/// ServerHello whose bounds force the heartbeat to `heartbeat_s`.
fn server_hello(heartbeat_s: u32) -> Body {
    Body::ServerHello(device::ServerHello {
        session_id: "s".into(),
        heartbeat_min_s: heartbeat_s,
        heartbeat_max_s: heartbeat_s,
        server_time_ms: 0,
    })
}

/// A heartbeat no test waits for: frames in such a session must flow by themselves.
const NEVER: u32 = 3600;

fn deliver(seq: u64, id: &str) -> Body {
    Body::Deliver(device::Deliver {
        seq,
        notification: Some(Notification {
            message_id: id.into(),
            app_id: "chat".into(),
            title: format!("t{seq}"),
            ..Default::default()
        }),
    })
}

type App = Framed<UnixStream, DelimitedCodec<DaemonMessage>>;

async fn app_recv(app: &mut App) -> daemon_message::Body {
    bounded("a daemon message", app.next())
        .await
        .expect("open")
        .expect("valid")
        .body
        .expect("body")
}

/// A daemon (heartbeat 1 s, pong timeout 1 s, given credentials) started
/// in-process against a fake gateway on a fresh port: its temp dir, the
/// gateway's TLS side and listener, the stop sender and the daemon's task.
async fn start_daemon() -> (
    tempfile::TempDir,
    TlsAcceptor,
    TcpListener,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), syspushd::DaemonError>>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let acceptor = tls(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let text = format!(
        "gateway = \"https://{addr}\"\nca_file = \"ca.pem\"\ndevice_id = \"dev-1\"\ndevice_secret = \"s3cret\"\n\
         state_dir = \"state\"\nsocket_path = \"d.sock\"\nheartbeat_s = 1\npong_timeout_s = 1\n"
    );
    let config = syspushd::config::Config::from_toml(&text, dir.path()).expect("config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(syspushd::run(config, async {
        let _ = stop_rx.await;
    }));
    (dir, acceptor, listener, stop_tx, daemon)
}

#[tokio::test(flavor = "current_thread")]
async fn link_commits_acks_heartbeats_resumes_and_says_goodbye() {
    let (dir, acceptor, listener, stop_tx, daemon) = start_daemon().await;
    let socket = dir.path().join("d.sock");

    // Session 1 (no heartbeat due): hello, three deliveries at once -> one Ack.
    let mut ws = accept(&listener, &acceptor).await;
    match recv(&mut ws).await {
        Body::ClientHello(h) => {
            assert_eq!(
                (h.device_id.as_str(), h.secret.as_str()),
                ("dev-1", "s3cret")
            );
            assert_eq!(h.protocol_version, syspush_proto::PROTOCOL_VERSION);
            assert_eq!(h.last_committed_seq, 0);
        }
        other => panic!("expected ClientHello, got {other:?}"),
    }
    send(
        &mut ws,
        vec![
            server_hello(NEVER),
            deliver(1, "m1"),
            deliver(2, "m2"),
            deliver(3, "m3"),
        ],
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        Body::Ack(device::Ack { seq: 3 }),
        "one cumulative ack for the batch"
    );

    // The app gets the three committed messages.
    let mut app: App = Framed::new(
        UnixStream::connect(&socket).await.expect("app socket"),
        DelimitedCodec::new(),
    );
    let hello = app_request::Body::Hello(Hello {
        app_id: "chat".into(),
    });
    app.send(AppRequest {
        request_id: 1,
        body: Some(hello),
    })
    .await
    .expect("hello");
    assert!(matches!(app_recv(&mut app).await, daemon_message::Body::HelloOk(h) if h.pending == 3));
    for want in ["m1", "m2", "m3"] {
        match app_recv(&mut app).await {
            daemon_message::Body::Notification(d) => {
                assert_eq!(d.notification.expect("n").message_id, want);
                assert!(d.display);
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    // Register goes over the link and the token comes back.
    let mut ctl: App = Framed::new(
        UnixStream::connect(&socket).await.expect("app socket"),
        DelimitedCodec::new(),
    );
    let reg = app_request::Body::Register(RegisterRequest {
        app_id: "chat".into(),
    });
    ctl.send(AppRequest {
        request_id: 9,
        body: Some(reg),
    })
    .await
    .expect("register");
    let request_id = match recv(&mut ws).await {
        Body::Register(r) => {
            assert_eq!(r.app_id, "chat");
            r.request_id
        }
        other => panic!("expected Register, got {other:?}"),
    };
    send(
        &mut ws,
        vec![Body::Registered(device::Registered {
            request_id,
            app_id: "chat".into(),
            token: "tok".into(),
        })],
    )
    .await;
    assert!(
        matches!(app_recv(&mut ctl).await, daemon_message::Body::Registered(r) if r.token == "tok")
    );

    // The gateway drops the connection: the daemon comes back and resumes.
    drop(ws);
    let mut ws = accept(&listener, &acceptor).await;
    match recv(&mut ws).await {
        Body::ClientHello(h) => {
            assert_eq!(h.last_committed_seq, 3, "resumes after what it committed")
        }
        other => panic!("expected ClientHello, got {other:?}"),
    }
    // Session 2 with a 1 s heartbeat: a Ping when idle; answer it.
    send(&mut ws, vec![server_hello(1)]).await;
    let nonce = match recv(&mut ws).await {
        Body::Ping(p) => p.nonce,
        other => panic!("expected Ping, got {other:?}"),
    };
    send(&mut ws, vec![Body::Pong(device::Pong { nonce })]).await;
    // The next Ping goes unanswered: the daemon declares the link dead and redials.
    assert!(matches!(recv(&mut ws).await, Body::Ping(_)));
    let mut ws2 = accept(&listener, &acceptor).await;
    match recv(&mut ws2).await {
        Body::ClientHello(h) => assert_eq!(h.last_committed_seq, 3),
        other => panic!("expected ClientHello, got {other:?}"),
    }
    drop(ws);
    // A redelivered message is dropped as a duplicate but still acked; a new one arrives.
    send(
        &mut ws2,
        vec![server_hello(NEVER), deliver(4, "m3"), deliver(5, "m5")],
    )
    .await;
    assert_eq!(recv(&mut ws2).await, Body::Ack(device::Ack { seq: 5 }));
    match app_recv(&mut app).await {
        daemon_message::Body::Notification(d) => {
            assert_eq!(d.notification.expect("n").message_id, "m5")
        }
        other => panic!("expected m5, got {other:?}"),
    }

    // Shutdown: GoAway to the gateway, then the daemon returns cleanly.
    stop_tx.send(()).expect("stop");
    match recv(&mut ws2).await {
        Body::Goaway(g) => assert_eq!(g.reason, "shutdown"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    bounded("the daemon to stop", daemon)
        .await
        .expect("join")
        .expect("clean exit");
    assert!(!socket.exists(), "socket removed on exit");
}

/// A gateway that stops answering (a NAT that forgot the mapping) gets a
/// reset once the Ping times out, not an orderly close: with a FIN, the
/// kernel would keep retransmitting the unanswered Ping into the dead mapping.
#[tokio::test(flavor = "current_thread")]
async fn a_silent_gateway_gets_a_reset_after_the_pong_timeout() {
    let (_dir, acceptor, listener, stop_tx, daemon) = start_daemon().await;

    let mut ws = accept(&listener, &acceptor).await;
    assert!(matches!(recv(&mut ws).await, Body::ClientHello(_)));
    send(&mut ws, vec![server_hello(1)]).await;
    assert!(matches!(recv(&mut ws).await, Body::Ping(_)));
    // No Pong: after the pong timeout the daemon gives up on the connection.
    match bounded("the daemon to drop the connection", ws.next()).await {
        Some(Err(tungstenite::Error::Io(e))) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "a reset, not an orderly close: {e}"
        ),
        other => panic!("expected a connection reset, got {other:?}"),
    }

    stop_tx.send(()).expect("stop");
    bounded("the daemon to stop", daemon)
        .await
        .expect("join")
        .expect("clean exit");
}

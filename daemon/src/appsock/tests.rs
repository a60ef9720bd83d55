//! App socket tests over a real Unix socket in a temp dir, with a fake link
//! (the test answers the link commands) and, for the policy, a client
//! process running as another uid.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use syspush_proto::app::{self, AppRequest, DaemonMessage, ErrorCode, app_request, daemon_message};
use syspush_proto::app_codec::DelimitedCodec;
use syspush_proto::common::Notification;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::{AppContext, Limits, serve_with};
use crate::activation::bind;
use crate::clock;
use crate::config::AppConfig;
use crate::hub::Hub;
use crate::link::{LinkCommand, LinkHandle};
use crate::policy::Policy;
use crate::store::Store;
use app::{AckRequest, Hello, RegisterRequest, StatusRequest};
use daemon_message::Body as Out;

pub(super) struct Rig {
    _dir: tempfile::TempDir,
    pub(super) store: Arc<Store>,
    pub(super) hub: Arc<Hub>,
    pub(super) path: PathBuf,
    pub(super) link_rx: Option<mpsc::Receiver<crate::link::LinkCommand>>,
    pub(super) cancel: CancellationToken,
    pub(super) ctx: Arc<AppContext>,
    pub(super) server: tokio::task::JoinHandle<()>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub(super) fn app_cfg(id: &str, uids: &[u32]) -> AppConfig {
    AppConfig {
        id: id.into(),
        uids: uids.to_vec(),
        wake_command: None,
        wake_min_interval_s: 30,
    }
}

fn rig(apps: &[AppConfig]) -> Rig {
    rig_with(apps, Limits::default())
}

/// A rig whose socket runs under `limits` (tests shorten the deadlines).
pub(super) fn rig_with(apps: &[AppConfig], limits: Limits) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reachable by the other-uid client process.
    std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).expect("chmod");
    let store = Arc::new(Store::open(&dir.path().join("state")).expect("store"));
    let hub = Hub::new();
    let (link, link_rx) = LinkHandle::channel();
    let path = dir.path().join("run").join("syspushd.sock");
    let listener = bind(&path).expect("bind");
    let ctx = Arc::new(AppContext {
        store: store.clone(),
        hub: hub.clone(),
        policy: Policy::from_apps(apps),
        link,
        gateway_url: "https://gw.example:443".into(),
        heartbeat_s: 270,
        device_id: None,
        gateway_clock: Default::default(),
        journal: Default::default(),
    });
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve_with(listener, ctx.clone(), limits, cancel.clone()));
    Rig {
        _dir: dir,
        store,
        hub,
        path,
        link_rx: Some(link_rx),
        cancel,
        ctx,
        server,
    }
}

pub(super) struct Client(pub(super) Framed<UnixStream, DelimitedCodec<DaemonMessage>>);

impl Client {
    pub(super) async fn connect(path: &Path) -> Self {
        Self(Framed::new(
            UnixStream::connect(path).await.expect("connect"),
            DelimitedCodec::new(),
        ))
    }
    pub(super) async fn send(&mut self, request_id: u64, body: app_request::Body) {
        self.0
            .send(AppRequest {
                request_id,
                body: Some(body),
            })
            .await
            .expect("send");
    }
    /// Next message; a bound only so that a broken daemon fails the test instead of hanging it.
    pub(super) async fn recv(&mut self) -> Option<DaemonMessage> {
        clock::timeout(Duration::from_secs(10), self.0.next())
            .await
            .expect("daemon answered in time")
            .map(|r| r.expect("valid frame"))
    }
    pub(super) async fn body(&mut self) -> (u64, Out) {
        let m = self.recv().await.expect("a message");
        (m.request_id, m.body.expect("body"))
    }
}

pub(super) fn note(id: &str, app: &str, title: &str) -> Option<Notification> {
    Some(Notification {
        message_id: id.into(),
        app_id: app.into(),
        title: title.into(),
        ..Default::default()
    })
}

pub(super) fn delivered(b: Out) -> (String, bool) {
    match b {
        Out::Notification(d) => (d.notification.expect("notification").message_id, d.display),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn hello_gets_pending_then_live_deliveries_and_ack_removes() {
    let r = rig(&[app_cfg("chat", &[])]);
    let now = clock::wall_ms();
    r.store
        .commit(
            &[
                (1, note("m1", "chat", "hi")),
                (2, note("m2", "chat", "")),
                (3, note("x", "other", "t")),
            ],
            now,
        )
        .expect("commit");

    let mut a = Client::connect(&r.path).await;
    a.send(
        7,
        app_request::Body::Hello(Hello {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert_eq!(
        a.body().await,
        (
            7,
            Out::HelloOk(app::HelloOk {
                app_id: "chat".into(),
                pending: 2
            })
        )
    );
    assert_eq!(delivered(a.body().await.1), ("m1".into(), true));
    assert_eq!(
        delivered(a.body().await.1),
        ("m2".into(), false),
        "data-only is silent"
    );

    // A live one: committed, then announced through the hub.
    let out = r
        .store
        .commit(&[(4, note("m3", "chat", "live"))], now)
        .expect("commit");
    assert!(r.hub.publish("chat", out.stored[0].1));
    let (rid, b) = a.body().await;
    assert_eq!((rid, delivered(b)), (0, ("m3".into(), true)));

    // A second subscriber gets every pending message too.
    let mut b = Client::connect(&r.path).await;
    b.send(
        1,
        app_request::Body::Hello(Hello {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert!(matches!(
        b.body().await.1,
        Out::HelloOk(app::HelloOk { pending: 3, .. })
    ));
    for want in ["m1", "m2", "m3"] {
        assert_eq!(delivered(b.body().await.1).0, want);
    }

    a.send(
        8,
        app_request::Body::Ack(AckRequest {
            message_ids: vec!["m1".into(), "m2".into(), "zz".into()],
        }),
    )
    .await;
    assert_eq!(a.body().await, (8, Out::AckOk(app::AckOk { removed: 2 })));
    assert_eq!(r.store.pending_count("chat", now).expect("count"), 1);

    // A second Hello on one connection is refused, the connection lives on.
    a.send(
        9,
        app_request::Body::Hello(Hello {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert!(
        matches!(a.body().await, (9, Out::Error(e)) if e.code == ErrorCode::ErrorBadRequest as i32)
    );
    a.send(10, app_request::Body::Status(StatusRequest {}))
        .await;
    match a.body().await {
        (10, Out::Status(s)) => {
            assert!(!s.connected);
            assert_eq!(s.heartbeat_interval_s, 270);
            assert_eq!(s.last_pong_age_s, None);
            assert_eq!(s.last_committed_seq, 4);
            let chat = s
                .apps
                .iter()
                .find(|a| a.app_id == "chat")
                .expect("chat listed");
            assert_eq!(
                (chat.pending, chat.connected, chat.registered),
                (1, true, false)
            );
            assert!(
                s.apps.iter().any(|a| a.app_id == "other"),
                "root sees every app"
            );
        }
        other => panic!("expected status, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = rig(&[]);
    let mut good = Client::connect(&r.path).await;
    for bad in [
        vec![3u8, 0xff, 0xff, 0xff],
        vec![0x80, 0x80, 0x40],
        vec![0xff; 11],
    ] {
        let mut s = UnixStream::connect(&r.path).await.expect("connect");
        s.write_all(&bad).await.expect("write");
        let mut buf = Vec::new();
        clock::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("closed in time")
            .expect("read");
        let mut bytes = bytes::BytesMut::from(&buf[..]);
        let reply: DaemonMessage = syspush_proto::app_codec::try_decode(&mut bytes)
            .expect("decodes")
            .expect("one message");
        assert!(
            matches!(&reply.body, Some(Out::Error(e)) if e.code == ErrorCode::ErrorBadFrame as i32),
            "{bad:?}: {reply:?}"
        );
        assert!(
            bytes.is_empty(),
            "nothing after the error: the connection is closed"
        );
    }
    good.send(1, app_request::Body::Status(StatusRequest {}))
        .await;
    assert!(matches!(good.body().await, (1, Out::Status(_))));
    // An empty request is a bad request, not a bad frame.
    good.0
        .send(AppRequest {
            request_id: 2,
            body: None,
        })
        .await
        .expect("send");
    assert!(
        matches!(good.body().await, (2, Out::Error(e)) if e.code == ErrorCode::ErrorBadRequest as i32)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn register_and_unregister_go_through_the_link() {
    let mut r = rig(&[]);
    let mut link_rx = r.link_rx.take().expect("link rx");
    let store = r.store.clone();
    // The fake link answers like the real one: token stored, then reply.
    let fake = tokio::spawn(async move {
        while let Some(cmd) = link_rx.recv().await {
            match cmd {
                LinkCommand::Register { app_id, reply } => {
                    store.set_token(&app_id, "tok-1").expect("token");
                    let _ = reply.send(Ok("tok-1".into()));
                }
                LinkCommand::Unregister { app_id, reply } => {
                    store.drop_app(&app_id).expect("drop");
                    let _ = reply.send(Ok(()));
                    return;
                }
                LinkCommand::SetIdle { .. }
                | LinkCommand::TokenStatus { .. }
                | LinkCommand::TestPush { .. } => {}
            }
        }
    });
    let mut c = Client::connect(&r.path).await;
    c.send(
        5,
        app_request::Body::Register(RegisterRequest {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert_eq!(
        c.body().await,
        (
            5,
            Out::Registered(app::Registered {
                app_id: "chat".into(),
                token: "tok-1".into()
            })
        )
    );
    c.send(
        6,
        app_request::Body::Unregister(app::UnregisterRequest {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert_eq!(
        c.body().await,
        (
            6,
            Out::Unregistered(app::Unregistered {
                app_id: "chat".into()
            })
        )
    );
    fake.await.expect("fake link");
    assert_eq!(r.store.token("chat").expect("token"), None);
    // The link is gone now: unavailable, not a hang.
    c.send(
        7,
        app_request::Body::Register(RegisterRequest {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert!(
        matches!(c.body().await, (7, Out::Error(e)) if e.code == ErrorCode::ErrorUnavailable as i32)
    );
}

/// Skips a test that cannot run here, except under `CI=true`, where a skip
/// would hide a check that was meant to run: there it fails with the reason.
fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("cannot run: {reason} (CI=true: a skipped test is a failure)");
    }
    eprintln!("skipped: {reason}");
}

const PEER_ENV: &str = "SYSPUSHD_TEST_PEER_SOCKET";
const NOBODY: u32 = 65534;

#[tokio::test(flavor = "current_thread")]
async fn another_uid_acts_only_for_its_own_apps() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root to run a client as another uid");
        return;
    }
    let r = rig(&[app_cfg("chat", &[1000]), app_cfg("own", &[NOBODY])]);
    r.store
        .commit(&[(1, note("c1", "chat", "secret"))], clock::wall_ms())
        .expect("commit");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = tokio::process::Command::new(exe);
    child
        .args([
            "--exact",
            "appsock::tests::peer_as_nobody",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_ENV, &r.path)
        .as_std_mut()
        .uid(NOBODY)
        .gid(NOBODY);
    let out = child.output().await.expect("run client as nobody");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client as uid {NOBODY} failed:\n{text}"
    );
    assert!(
        text.contains("peer checks passed"),
        "the helper did not run:\n{text}"
    );
    assert_eq!(
        r.store
            .pending_count("chat", clock::wall_ms())
            .expect("count"),
        1,
        "refused ack removed nothing"
    );
}

/// Runs only as the child of `another_uid_acts_only_for_its_own_apps`.
#[tokio::test(flavor = "current_thread")]
async fn peer_as_nobody() {
    let Some(path) = std::env::var_os(PEER_ENV) else {
        return;
    };
    assert_eq!(nix::unistd::getuid().as_raw(), NOBODY);
    let mut c = Client::connect(Path::new(&path)).await;
    let denied = |b: &(u64, Out), id: u64| matches!(b, (rid, Out::Error(e)) if *rid == id && e.code == ErrorCode::ErrorPermissionDenied as i32);
    c.send(
        1,
        app_request::Body::Hello(Hello {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert!(denied(&c.body().await, 1));
    c.send(
        2,
        app_request::Body::Register(RegisterRequest {
            app_id: "chat".into(),
        }),
    )
    .await;
    assert!(denied(&c.body().await, 2));
    c.send(
        3,
        app_request::Body::Ack(AckRequest {
            message_ids: vec!["c1".into()],
        }),
    )
    .await;
    assert!(denied(&c.body().await, 3));
    c.send(4, app_request::Body::Status(StatusRequest {})).await;
    match c.body().await {
        (4, Out::Status(s)) => {
            let ids: Vec<_> = s.apps.iter().map(|a| a.app_id.as_str()).collect();
            assert_eq!(ids, ["own"], "a non-root caller sees only its own apps");
        }
        other => panic!("expected status, got {other:?}"),
    }
    c.send(
        5,
        app_request::Body::Hello(Hello {
            app_id: "own".into(),
        }),
    )
    .await;
    assert!(matches!(c.body().await, (5, Out::HelloOk(_))));
    eprintln!("peer checks passed");
}

/// An app with a token and a connection that asked for a test push, which
/// the fake link holds unanswered: the connection task is busy in a request.
async fn busy_connection(
    r: &mut Rig,
) -> (
    Client,
    tokio::sync::oneshot::Sender<Result<String, crate::link::RequestError>>,
) {
    r.store.set_token("chat", "tok-1").expect("token");
    let mut c = Client::connect(&r.path).await;
    c.send(
        1,
        app_request::Body::TestPush(app::TestPushRequest {
            app_id: "chat".into(),
            timeout_ms: None,
        }),
    )
    .await;
    let link_rx = r.link_rx.as_mut().expect("link rx");
    let reply = loop {
        match link_rx.recv().await.expect("a link command") {
            LinkCommand::TestPush { reply, .. } => break reply,
            _ => continue,
        }
    };
    (c, reply)
}

#[tokio::test(flavor = "current_thread")]
async fn serve_returns_only_after_its_connection_tasks_end() {
    let mut r = rig(&[app_cfg("chat", &[nix::unistd::geteuid().as_raw()])]);
    let (mut c, reply) = busy_connection(&mut r).await;
    r.cancel.cancel();
    // The accept loop sees the shutdown within a few polls; serve must stay
    // pending while the connection is still answering.
    for _ in 0..100 {
        tokio::task::yield_now().await;
        assert!(
            !r.server.is_finished(),
            "serve returned while a connection task was busy"
        );
    }
    // The connection finishes its request (the answer still reaches the app),
    // then ends; only then does serve return.
    reply.send(Ok("m-1".into())).expect("connection waits");
    assert!(matches!(c.body().await, (1, Out::TestPushSent(_))));
    assert!(c.recv().await.is_none(), "closed after the answer");
    clock::timeout(Duration::from_secs(10), &mut r.server)
        .await
        .expect("serve returned")
        .expect("serve task");
    assert_eq!(
        Arc::strong_count(&r.ctx),
        1,
        "no connection task holds the context any more"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_stuck_connection_does_not_hold_the_stop_past_the_grace() {
    let mut r = rig(&[app_cfg("chat", &[nix::unistd::geteuid().as_raw()])]);
    // The link never answers (its test push would wait 10 s).
    let (mut c, _reply) = busy_connection(&mut r).await;
    let t = clock::now();
    r.cancel.cancel();
    clock::timeout(Duration::from_secs(10), &mut r.server)
        .await
        .expect("serve returned")
        .expect("serve task");
    let took = clock::now().saturating_sub(t);
    assert!(
        took >= super::STOP_GRACE,
        "serve waited for the busy connection ({took:?})"
    );
    assert!(
        took < Duration::from_secs(2),
        "the stuck connection was aborted after the grace ({took:?})"
    );
    assert_eq!(
        Arc::strong_count(&r.ctx),
        1,
        "the aborted task released the context"
    );
    assert!(c.recv().await.is_none(), "its connection is closed");
}

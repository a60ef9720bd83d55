//! The client library against a scripted fake daemon: a tokio `UnixListener`
//! speaking the real app codec in a temp dir. Each test plays the daemon's side
//! of one conversation step by step, so ordering is deterministic and nothing
//! waits on a sleep (a timeout only guards against a hang turning into a stuck
//! test run).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use syspush_client::{Client, ClientError, ErrorCode, Event, Listener, Notification};
use syspush_proto::app::app_request::Body as Req;
use syspush_proto::app::daemon_message::Body as Msg;
use syspush_proto::app::{
    AckOk, AppRequest, DaemonMessage, Delivery, Error as WireError, HelloOk, Registered, Status,
    TokenRevoked, Unregistered,
};
use syspush_proto::app_codec::DelimitedCodec;
use tempfile::TempDir;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::Framed;

type Server = Framed<UnixStream, DelimitedCodec<AppRequest>>;

/// A socket in a fresh temp dir.
struct Fake {
    _dir: TempDir,
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syspushd.sock");
        let listener = Some(UnixListener::bind(&path).unwrap());
        Fake {
            _dir: dir,
            path,
            listener,
        }
    }

    async fn accept(&self) -> Server {
        let (s, _) = self.listener.as_ref().unwrap().accept().await.unwrap();
        Framed::new(s, DelimitedCodec::new())
    }

    /// The daemon goes away entirely: socket closed and removed.
    fn stop(&mut self) {
        self.listener = None;
        std::fs::remove_file(&self.path).unwrap();
    }

    /// ... and comes back on the same path.
    fn restart(&mut self) {
        self.listener = Some(UnixListener::bind(&self.path).unwrap());
    }
}

async fn recv(s: &mut Server) -> (u64, Req) {
    let r = s.next().await.expect("client closed").unwrap();
    (r.request_id, r.body.expect("empty request"))
}

async fn send(s: &mut Server, request_id: u64, body: Msg) {
    s.send(DaemonMessage {
        request_id,
        body: Some(body),
    })
    .await
    .unwrap();
}

/// Expects a Hello for `app` and answers HelloOk.
async fn hello(s: &mut Server, app: &str, pending: u32) {
    match recv(s).await {
        (id, Req::Hello(h)) if h.app_id == app => {
            send(
                s,
                id,
                Msg::HelloOk(HelloOk {
                    app_id: app.into(),
                    pending,
                }),
            )
            .await;
        }
        other => panic!("wanted Hello, got {other:?}"),
    }
}

/// Expects an Ack and answers AckOk; returns the acked ids.
async fn ack(s: &mut Server) -> Vec<String> {
    match recv(s).await {
        (id, Req::Ack(a)) => {
            let n = a.message_ids.len() as u32;
            send(s, id, Msg::AckOk(AckOk { removed: n })).await;
            a.message_ids
        }
        other => panic!("wanted Ack, got {other:?}"),
    }
}

fn delivery(id: &str) -> Msg {
    Msg::Notification(Delivery {
        notification: Some(Notification {
            message_id: id.into(),
            app_id: "app".into(),
            ..Default::default()
        }),
        display: true,
        ..Default::default()
    })
}

fn event_id(ev: Event) -> String {
    match ev {
        Event::Notification(d) => d.notification.unwrap().message_id,
        other => panic!("wanted a notification, got {other:?}"),
    }
}

async fn guarded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test hung")
}

#[tokio::test]
async fn replies_are_matched_by_request_id() {
    let fake = Fake::new();
    let daemon = async {
        let mut s = fake.accept().await;
        let (r1, body) = recv(&mut s).await;
        assert!(
            matches!(body, Req::Register(ref r) if r.app_id == "app"),
            "{body:?}"
        );
        // Noise first: a stale reply to some other request and a pushed event.
        send(
            &mut s,
            r1 + 100,
            Msg::Registered(Registered {
                app_id: "app".into(),
                token: "stale".into(),
            }),
        )
        .await;
        send(
            &mut s,
            0,
            Msg::TokenRevoked(TokenRevoked {
                app_id: "app".into(),
                reason: "x".into(),
            }),
        )
        .await;
        send(
            &mut s,
            r1,
            Msg::Registered(Registered {
                app_id: "app".into(),
                token: "tok-1".into(),
            }),
        )
        .await;

        let (r2, body) = recv(&mut s).await;
        assert!(matches!(body, Req::Status(_)));
        assert!(r2 > r1, "request ids must increase: {r1} then {r2}");
        let status = Status {
            device_id: "dev".into(),
            last_pong_age_s: Some(3),
            ..Default::default()
        };
        send(&mut s, r2, Msg::Status(status)).await;

        let (r3, body) = recv(&mut s).await;
        assert!(matches!(body, Req::Unregister(ref r) if r.app_id == "app"));
        assert!(r3 > r2);
        send(
            &mut s,
            r3,
            Msg::Unregistered(Unregistered {
                app_id: "app".into(),
            }),
        )
        .await;
    };
    let client = async {
        let mut c = Client::connect(&fake.path).await.unwrap();
        assert_eq!(c.register("app").await.unwrap(), "tok-1");
        let st = c.status().await.unwrap();
        assert_eq!(
            (st.device_id.as_str(), st.last_pong_age_s),
            ("dev", Some(3))
        );
        c.unregister("app").await.unwrap();
    };
    guarded(async { tokio::join!(daemon, client) }).await;
}

#[tokio::test]
async fn daemon_errors_are_mapped() {
    let fake = Fake::new();
    let daemon = async {
        let mut s = fake.accept().await;
        let (id, _) = recv(&mut s).await;
        let err = WireError {
            code: ErrorCode::ErrorPermissionDenied as i32,
            message: "uid 1000 may not".into(),
        };
        send(&mut s, id, Msg::Error(err)).await;
        let (id, _) = recv(&mut s).await;
        send(
            &mut s,
            id,
            Msg::Error(WireError {
                code: ErrorCode::ErrorUnavailable as i32,
                message: "no link".into(),
            }),
        )
        .await;
        // A reply of the wrong kind.
        let (id, _) = recv(&mut s).await;
        send(
            &mut s,
            id,
            Msg::Unregistered(Unregistered {
                app_id: "app".into(),
            }),
        )
        .await;
        // Then the daemon hangs up mid-request.
        let _ = recv(&mut s).await;
    };
    let client = async {
        let mut c = Client::connect(&fake.path).await.unwrap();
        let e = c.register("app").await.unwrap_err();
        assert!(e.is_permission_denied(), "{e:?}");
        match &e {
            ClientError::Daemon { code, message } => {
                assert_eq!(*code, ErrorCode::ErrorPermissionDenied);
                assert_eq!(message, "uid 1000 may not");
            }
            other => panic!("{other:?}"),
        }
        let e = c.register("app").await.unwrap_err();
        assert_eq!(e.daemon_code(), Some(ErrorCode::ErrorUnavailable));
        assert!(matches!(
            c.register("app").await,
            Err(ClientError::Unexpected(_))
        ));
        let e = c.status().await.unwrap_err();
        assert!(matches!(e, ClientError::Closed), "{e:?}");
    };
    guarded(async { tokio::join!(daemon, client) }).await;

    let missing = fake.path.with_file_name("nope.sock");
    match Client::connect(&missing).await {
        Err(e @ ClientError::Connect { .. }) => {
            assert!(
                std::error::Error::source(&e).is_some(),
                "io error kept as source"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn listener_sees_each_message_once_across_reconnect() {
    let fake = Fake::new();
    let (tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let daemon = async {
        // First connection: two pending messages; the app acks m1 only.
        let mut s = fake.accept().await;
        hello(&mut s, "app", 2).await;
        send(&mut s, 0, delivery("m1")).await;
        send(&mut s, 0, delivery("m2")).await;
        tx.send(ack(&mut s).await).unwrap();
        // Crash: the connection drops (say the ack was never committed).
        drop(s);

        // Second connection: everything is redelivered, plus a new one.
        let mut s = fake.accept().await;
        hello(&mut s, "app", 3).await;
        send(&mut s, 0, delivery("m1")).await; // acked: must be re-acked, not shown
        send(&mut s, 0, delivery("m2")).await; // handed out, unacked: dropped
        send(&mut s, 0, delivery("m3")).await; // new
        send(
            &mut s,
            0,
            Msg::TokenRevoked(TokenRevoked {
                app_id: "app".into(),
                reason: "logout".into(),
            }),
        )
        .await;
        tx.send(ack(&mut s).await).unwrap(); // the silent re-ack of m1
        tx.send(ack(&mut s).await).unwrap(); // the app's ack of m2 + m3
        s
    };
    let app = async {
        let mut l = Listener::connect(&fake.path, "app").await.unwrap();
        assert_eq!(event_id(l.next().await.unwrap()), "m1");
        assert_eq!(event_id(l.next().await.unwrap()), "m2");
        assert_eq!(l.ack(&["m1"]).await.unwrap(), 1);
        assert_eq!(event_id(l.next().await.unwrap()), "m3");
        assert_eq!(
            l.next().await.unwrap(),
            Event::TokenRevoked {
                app_id: "app".into(),
                reason: "logout".into()
            }
        );
        assert_eq!(l.ack(&["m2", "m3"]).await.unwrap(), 2);
        assert_eq!(l.reconnects(), 1);
    };
    let (_s, ()) = guarded(async { tokio::join!(daemon, app) }).await;
    assert_eq!(acks.recv().await.unwrap(), vec!["m1"]);
    assert_eq!(acks.recv().await.unwrap(), vec!["m1"]);
    assert_eq!(acks.recv().await.unwrap(), vec!["m2", "m3"]);
}

#[tokio::test]
async fn listener_waits_out_a_daemon_restart() {
    let mut fake = Fake::new();
    let mut l = Listener::new(&fake.path, "app");
    let s = {
        let daemon = async {
            let mut s = fake.accept().await;
            hello(&mut s, "app", 1).await;
            send(&mut s, 0, delivery("m1")).await;
            s
        };
        let (s, ev) = guarded(async { tokio::join!(daemon, l.next()) }).await;
        assert_eq!(event_id(ev.unwrap()), "m1");
        s
    };
    // The daemon stops: socket gone, connection closed. The listener keeps
    // retrying (with backoff) until it is back.
    fake.stop();
    drop(s);
    fake.restart();
    let daemon = async {
        let mut s = fake.accept().await;
        hello(&mut s, "app", 2).await;
        send(&mut s, 0, delivery("m1")).await;
        send(&mut s, 0, delivery("m2")).await;
        s
    };
    let (_s, ev) = guarded(async { tokio::join!(daemon, l.next()) }).await;
    assert_eq!(event_id(ev.unwrap()), "m2");
}

#[tokio::test]
async fn listener_does_not_retry_permission_denied() {
    let fake = Fake::new();
    let deny = |mut s: Server| async move {
        let (id, body) = recv(&mut s).await;
        assert!(matches!(body, Req::Hello(_)));
        let err = WireError {
            code: ErrorCode::ErrorPermissionDenied as i32,
            message: "not yours".into(),
        };
        send(&mut s, id, Msg::Error(err)).await;
        s
    };
    // Eager connect reports it at once.
    let (_s, res) = guarded(async {
        tokio::join!(
            async { deny(fake.accept().await).await },
            Listener::connect(&fake.path, "x")
        )
    })
    .await;
    assert!(res.unwrap_err().is_permission_denied());
    // A lazy listener returns it from next() instead of reconnecting forever
    // (the fake accepts once; a retry would hang on connect and trip the guard).
    let mut l = Listener::new(&fake.path, "x");
    let (_s, res) =
        guarded(async { tokio::join!(async { deny(fake.accept().await).await }, l.next()) }).await;
    assert!(res.unwrap_err().is_permission_denied());
}

#[tokio::test]
async fn lazy_listener_waits_for_the_daemon_to_come_up() {
    let mut fake = Fake::new();
    fake.stop();
    let mut l = Listener::new(&fake.path, "app");
    let daemon = async {
        // Let the listener fail its first attempt (no socket yet) and back off;
        // whatever the interleaving, it must end up connected.
        tokio::task::yield_now().await;
        fake.restart();
        let mut s = fake.accept().await;
        hello(&mut s, "app", 1).await;
        send(&mut s, 0, delivery("m1")).await;
        s
    };
    let (_s, ev) = guarded(async { tokio::join!(daemon, l.next()) }).await;
    assert_eq!(event_id(ev.unwrap()), "m1");
    assert_eq!(l.reconnects(), 0);
}

#[tokio::test]
async fn handled_ids_go_out_in_batches_of_at_most_ack_batch() {
    const N: usize = 300;
    let fake = Fake::new();
    let daemon = async {
        let mut s = fake.accept().await;
        hello(&mut s, "app", N as u32).await;
        // The whole backlog in one write, as the daemon's feed does.
        for i in 0..N {
            s.feed(DaemonMessage {
                request_id: 0,
                body: Some(delivery(&format!("m{i}"))),
            })
            .await
            .unwrap();
        }
        SinkExt::<DaemonMessage>::flush(&mut s).await.unwrap();
        let mut frames = Vec::new();
        while frames.iter().map(Vec::len).sum::<usize>() < N {
            frames.push(ack(&mut s).await);
        }
        // The listener goes on reading while its acks are answered.
        send(&mut s, 0, delivery("last")).await;
        (s, frames)
    };
    let app = async {
        let mut l = Listener::connect(&fake.path, "app").await.unwrap();
        for i in 0..N {
            assert_eq!(event_id(l.next().await.unwrap()), format!("m{i}"));
            l.handled(format!("m{i}"));
        }
        // Waiting for the next frame sends what was handled.
        assert_eq!(event_id(l.next().await.unwrap()), "last");
        l
    };
    let ((mut s, frames), mut l) = guarded(async { tokio::join!(daemon, app) }).await;
    let all: Vec<String> = frames.iter().flatten().cloned().collect();
    let want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(all, want, "every handled id acked once, in order");
    assert!(
        frames.iter().all(|f| f.len() <= syspush_client::ACK_BATCH),
        "{:?}",
        frames.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        frames.len() <= 10,
        "not batched: {} Ack frames",
        frames.len()
    );
    // flush_acks sends the rest now and waits for the answer.
    l.handled("last");
    let (acked, removed) = guarded(async { tokio::join!(ack(&mut s), l.flush_acks()) }).await;
    assert_eq!(acked, ["last"]);
    assert_eq!(removed.unwrap(), 1);
}

#[tokio::test]
async fn handled_but_unsent_acks_are_redelivered_to_the_next_listener() {
    let mut fake = Fake::new();
    let daemon = async {
        let mut s = fake.accept().await;
        hello(&mut s, "app", 2).await;
        send(&mut s, 0, delivery("m1")).await;
        send(&mut s, 0, delivery("m2")).await;
        s
    };
    let app = async {
        let mut l = Listener::connect(&fake.path, "app").await.unwrap();
        assert_eq!(event_id(l.next().await.unwrap()), "m1");
        l.handled("m1");
        assert_eq!(event_id(l.next().await.unwrap()), "m2");
        l.handled("m2");
        // The app dies here: nothing was sent.
        drop(l);
    };
    let (mut s, ()) = guarded(async { tokio::join!(daemon, app) }).await;
    assert!(
        guarded(s.next()).await.is_none(),
        "a dropped listener sent an Ack it never flushed"
    );
    fake.stop();
    fake.restart();
    // A new listener (a restarted app) gets both again.
    let daemon = async {
        let mut s = fake.accept().await;
        hello(&mut s, "app", 2).await;
        send(&mut s, 0, delivery("m1")).await;
        send(&mut s, 0, delivery("m2")).await;
        ack(&mut s).await
    };
    let app = async {
        let mut l = Listener::connect(&fake.path, "app").await.unwrap();
        assert_eq!(event_id(l.next().await.unwrap()), "m1");
        assert_eq!(event_id(l.next().await.unwrap()), "m2");
        l.handled("m1");
        l.handled("m2");
        l.flush_acks().await.unwrap()
    };
    let (acked, removed) = guarded(async { tokio::join!(daemon, app) }).await;
    assert_eq!(acked, ["m1", "m2"]);
    assert_eq!(removed, 2);
}

//! `syspushctl` (the built binary) against a scripted fake daemon: what it
//! prints on stdout, that it acks after printing, and that failures go to
//! stderr with a non-zero exit.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use syspush_proto::app::app_request::Body as Req;
use syspush_proto::app::daemon_message::Body as Msg;
use syspush_proto::app::{
    AckOk, AppRequest, AppStatus, DaemonMessage, Delivery, ErrorCode, HelloOk, Registered, Status,
};
use syspush_proto::app_codec::DelimitedCodec;
use syspush_proto::common::Notification;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::Framed;

type Server = Framed<UnixStream, DelimitedCodec<AppRequest>>;

async fn ctl(socket: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_syspushctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SYSPUSH_SOCKET")
        .output()
        .await
        .unwrap()
}

async fn accept(l: &UnixListener) -> Server {
    Framed::new(l.accept().await.unwrap().0, DelimitedCodec::new())
}

async fn recv(s: &mut Server) -> (u64, Req) {
    let r = s.next().await.unwrap().unwrap();
    (r.request_id, r.body.unwrap())
}

async fn send(s: &mut Server, request_id: u64, body: Msg) {
    s.send(DaemonMessage {
        request_id,
        body: Some(body),
    })
    .await
    .unwrap();
}

async fn guarded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test hung")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test]
async fn register_status_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let l = UnixListener::bind(&path).unwrap();

    let daemon = async {
        let mut s = accept(&l).await;
        let (id, _) = recv(&mut s).await;
        send(
            &mut s,
            id,
            Msg::Registered(Registered {
                app_id: "app".into(),
                token: "tok-xyz".into(),
            }),
        )
        .await;
    };
    let (_, out) = guarded(async { tokio::join!(daemon, ctl(&path, &["register", "app"])) }).await;
    assert_eq!(stdout(&out), "tok-xyz\n");

    let daemon = async {
        let mut s = accept(&l).await;
        let (id, _) = recv(&mut s).await;
        let apps = vec![AppStatus {
            app_id: "app".into(),
            pending: 2,
            connected: false,
            registered: true,
        }];
        let st = Status {
            connected: true,
            device_id: "dev".into(),
            apps,
            ..Default::default()
        };
        send(&mut s, id, Msg::Status(st)).await;
    };
    let (_, out) = guarded(async { tokio::join!(daemon, ctl(&path, &["status", "--json"])) }).await;
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["device_id"], "dev");
    assert_eq!(v["last_pong_age_s"], serde_json::Value::Null);
    assert_eq!(v["apps"][0]["pending"], 2);

    let daemon = async {
        let mut s = accept(&l).await;
        let (id, _) = recv(&mut s).await;
        let err = syspush_proto::app::Error {
            code: ErrorCode::ErrorPermissionDenied as i32,
            message: "uid 1000 may not act for app".into(),
        };
        send(&mut s, id, Msg::Error(err)).await;
    };
    let (_, out) =
        guarded(async { tokio::join!(daemon, ctl(&path, &["unregister", "app"])) }).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 1000 may not act for app") && err.contains("PERMISSION_DENIED"),
        "{err}"
    );

    let out = ctl(&dir.path().join("missing.sock"), &["status"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to syspushd"), "{err}");
}

#[tokio::test]
async fn listen_prints_then_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let l = UnixListener::bind(&path).unwrap();
    let daemon = async {
        let mut s = accept(&l).await;
        let (id, body) = recv(&mut s).await;
        assert!(matches!(body, Req::Hello(ref h) if h.app_id == "app"));
        send(
            &mut s,
            id,
            Msg::HelloOk(HelloOk {
                app_id: "app".into(),
                pending: 3,
            }),
        )
        .await;
        let mut acked = vec![];
        for m in ["m1", "m2", "m3"] {
            let n = Notification {
                message_id: m.into(),
                title: "t".into(),
                data: vec![1, 2].into(),
                ..Default::default()
            };
            send(
                &mut s,
                0,
                Msg::Notification(Delivery {
                    notification: Some(n),
                    ..Default::default()
                }),
            )
            .await;
        }
        // --count 2: m1 and m2 acked (in one Ack frame or two: the listener
        // batches), never m3, then the command exits.
        while acked.len() < 2 {
            let (id, body) = recv(&mut s).await;
            let Req::Ack(a) = body else {
                panic!("wanted Ack, got {body:?}")
            };
            let n = a.message_ids.len() as u32;
            acked.extend(a.message_ids);
            send(&mut s, id, Msg::AckOk(AckOk { removed: n })).await;
        }
        assert!(
            s.next().await.is_none(),
            "syspushctl should exit after --count"
        );
        acked
    };
    let (acked, out) =
        guarded(async { tokio::join!(daemon, ctl(&path, &["listen", "app", "--count", "2"])) })
            .await;
    assert_eq!(acked, vec!["m1", "m2"]);
    let text = stdout(&out);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["message_id"], "m1");
    assert_eq!(lines[1]["message_id"], "m2");
    assert_eq!(lines[0]["data"], "AQI=");
    assert_eq!(lines[0]["priority"], "normal");
}

//! Issue 11 regressions on the app socket, in-process with a fake link (the
//! rig of `tests.rs`): the deadlines of idle and half-sent connections,
//! requests that wait on the gateway without holding deliveries, doctor's
//! concurrent token checks and its SKIP with the real cause.

use std::time::Duration;

use syspush_proto::app::{self, DaemonMessage, ErrorCode, Hello, StatusRequest, app_request};
use tokio::io::AsyncWriteExt;

use super::Limits;
use super::tests::{Client, Rig, app_cfg, delivered, note, rig_with};
use crate::clock;
use crate::link::LinkCommand;
use syspush_proto::app::daemon_message::Body as Out;

/// Deadlines short enough for a test, far apart enough to tell apart.
fn short() -> Limits {
    Limits {
        idle: Duration::from_millis(400),
        frame: Duration::from_millis(200),
        ..Limits::default()
    }
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn error_code(m: &DaemonMessage) -> Option<ErrorCode> {
    match &m.body {
        Some(Out::Error(e)) => ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

/// The next frame must be an error with `code`, and then the end.
async fn closed_with(c: &mut Client, code: ErrorCode, what: &str) {
    let m = c
        .recv()
        .await
        .unwrap_or_else(|| panic!("{what}: closed without an error"));
    assert_eq!(error_code(&m), Some(code), "{what}: {m:?}");
    assert!(
        c.recv().await.is_none(),
        "{what}: still open after the error"
    );
}

fn hello(app_id: &str) -> app_request::Body {
    app_request::Body::Hello(Hello {
        app_id: app_id.into(),
    })
}

#[tokio::test(flavor = "current_thread")]
async fn idle_and_half_sent_connections_are_closed_with_an_error_and_subscribers_stay() {
    let r = rig_with(&[app_cfg("chat", &[me()])], short());
    let mut subscribed = Client::connect(&r.path).await;
    subscribed.send(1, hello("chat")).await;
    assert!(matches!(subscribed.body().await, (1, Out::HelloOk(_))));

    let mut idle = Client::connect(&r.path).await;
    let mut asked = Client::connect(&r.path).await;
    asked
        .send(1, app_request::Body::Status(StatusRequest {}))
        .await;
    assert!(matches!(asked.body().await, (1, Out::Status(_))));
    // Two bytes of a five-byte frame, never the rest.
    let mut half = Client::connect(&r.path).await;
    half.0.get_mut().write_all(&[5, 0x08]).await.expect("write");

    closed_with(&mut half, ErrorCode::ErrorBadFrame, "half-sent frame").await;
    closed_with(&mut idle, ErrorCode::ErrorUnavailable, "idle connection").await;
    closed_with(
        &mut asked,
        ErrorCode::ErrorUnavailable,
        "idle after a request",
    )
    .await;

    // The subscriber outlived every deadline, and still works...
    subscribed
        .send(2, app_request::Body::Status(StatusRequest {}))
        .await;
    assert!(matches!(subscribed.body().await, (2, Out::Status(_))));
    // ...but a frame it leaves half-sent has the same deadline.
    subscribed
        .0
        .get_mut()
        .write_all(&[9, 0x08])
        .await
        .expect("write");
    closed_with(
        &mut subscribed,
        ErrorCode::ErrorBadFrame,
        "subscriber's half frame",
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_waiting_for_the_gateway_is_not_idle() {
    let mut r = rig_with(&[app_cfg("chat", &[me()])], short());
    let mut link_rx = r.link_rx.take().expect("link rx");
    let mut c = Client::connect(&r.path).await;
    c.send(
        1,
        app_request::Body::Register(app::RegisterRequest {
            app_id: "chat".into(),
        }),
    )
    .await;
    let reply = match link_rx.recv().await.expect("a link command") {
        LinkCommand::Register { reply, .. } => reply,
        other => panic!("{other:?}"),
    };
    // Another connection's idle deadline passes meanwhile; this one, owed
    // an answer, stays.
    let mut idle = Client::connect(&r.path).await;
    closed_with(&mut idle, ErrorCode::ErrorUnavailable, "idle connection").await;
    reply.send(Ok("tok-1".into())).expect("connection waits");
    assert!(matches!(c.body().await, (1, Out::Registered(_))));
}

/// An app with a token, subscribed on `c`, which then asks for a test push
/// that the fake link holds; returns the held reply.
async fn pending_test_push(
    r: &mut Rig,
    c: &mut Client,
    timeout_ms: Option<u32>,
) -> tokio::sync::oneshot::Sender<Result<String, crate::link::RequestError>> {
    r.store.set_token("chat", "tok-1").expect("token");
    c.send(1, hello("chat")).await;
    assert!(matches!(c.body().await, (1, Out::HelloOk(_))));
    c.send(
        2,
        app_request::Body::TestPush(app::TestPushRequest {
            app_id: "chat".into(),
            timeout_ms,
        }),
    )
    .await;
    let link_rx = r.link_rx.as_mut().expect("link rx");
    loop {
        if let LinkCommand::TestPush { reply, .. } = link_rx.recv().await.expect("a link command") {
            return reply;
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_test_push_waiting_on_the_gateway_does_not_hold_deliveries() {
    let mut r = rig_with(&[app_cfg("chat", &[me()])], Limits::default());
    let mut c = Client::connect(&r.path).await;
    let reply = pending_test_push(&mut r, &mut c, None).await;
    let out = r
        .store
        .commit(&[(1, note("m1", "chat", "hi"))], clock::wall_ms())
        .expect("commit");
    assert!(r.hub.publish("chat", out.stored[0].1));
    let (rid, b) = c.body().await;
    assert_eq!(
        (rid, delivered(b).0),
        (0, "m1".to_string()),
        "delivered while the test push waits"
    );
    reply.send(Ok("t-1".into())).expect("connection waits");
    assert!(matches!(c.body().await, (2, Out::TestPushSent(_))));
}

#[tokio::test(flavor = "current_thread")]
async fn a_test_push_waits_for_the_gateway_as_long_as_the_caller_does() {
    let mut r = rig_with(&[app_cfg("chat", &[me()])], Limits::default());
    let mut c = Client::connect(&r.path).await;
    let t = clock::now();
    let _held = pending_test_push(&mut r, &mut c, Some(300)).await;
    let m = c.recv().await.expect("an answer");
    assert_eq!(error_code(&m), Some(ErrorCode::ErrorUnavailable), "{m:?}");
    let took = clock::now().saturating_sub(t);
    assert!(
        took < Duration::from_secs(5),
        "the daemon waited {took:?}, not the 300 ms asked for"
    );
}

/// Runs doctor on a new connection and returns its checks by name.
async fn doctor(r: &Rig) -> Vec<app::DoctorCheck> {
    let mut c = Client::connect(&r.path).await;
    c.send(9, app_request::Body::Doctor(app::DoctorRequest {}))
        .await;
    match c.body().await {
        (9, Out::Doctor(d)) => d.checks,
        other => panic!("expected a doctor report, got {other:?}"),
    }
}

fn find<'a>(checks: &'a [app::DoctorCheck], name: &str) -> &'a app::DoctorCheck {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {checks:?}"))
}

#[tokio::test(flavor = "current_thread")]
async fn doctor_asks_about_every_token_at_once() {
    const APPS: [&str; 3] = ["a1", "a2", "a3"];
    let mut r = rig_with(&APPS.map(|a| app_cfg(a, &[me()])), Limits::default());
    for a in APPS {
        r.store.set_token(a, &format!("tok-{a}")).expect("token");
    }
    r.ctx.link.update_status(|s| s.connected = true);
    // The fake gateway answers only once it was asked about all three: a
    // doctor asking one after the other would wait 5 s per app.
    let mut link_rx = r.link_rx.take().expect("link rx");
    let fake = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < APPS.len() {
            if let Some(LinkCommand::TokenStatus { reply, .. }) = link_rx.recv().await {
                held.push(reply);
            }
        }
        for reply in held {
            let _ = reply.send(Ok(syspush_proto::device::TokenStatusReply {
                valid: true,
                state: "live".into(),
                ..Default::default()
            }));
        }
    });
    let t = clock::now();
    let checks = doctor(&r).await;
    let took = clock::now().saturating_sub(t);
    for a in APPS {
        let c = find(&checks, &format!("{a}: token valid at the gateway"));
        assert!(c.ok, "{c:?}");
    }
    assert!(took < Duration::from_secs(5), "doctor took {took:?}");
    fake.await.expect("fake gateway");
}

#[tokio::test(flavor = "current_thread")]
async fn doctor_skips_what_it_cannot_check_and_names_the_real_cause() {
    let r = rig_with(&[app_cfg("chat", &[me()])], Limits::default());
    r.store.set_token("chat", "tok-1").expect("token");
    r.ctx.link.update_status(|s| {
        s.connected = false;
        s.last_error = Some(super::doctor::samples::refused());
    });
    let checks = doctor(&r).await;
    let reachable = find(&checks, "gateway reachable");
    assert!(!reachable.ok && !reachable.skipped, "{reachable:?}");
    let tls = find(&checks, "TLS verified");
    assert!(tls.skipped && !tls.ok, "{tls:?}");
    assert!(
        tls.detail.contains("cannot check: gateway unreachable")
            && tls.detail.contains("Connection refused"),
        "{tls:?}"
    );
    assert!(!tls.hint.contains("ca_file"), "{tls:?}");
    let token = find(&checks, "chat: token valid at the gateway");
    assert!(
        token.skipped && token.detail.contains("cannot check"),
        "{token:?}"
    );
    assert!(!token.hint.contains("register again"), "{token:?}");

    // A refused certificate is a TLS failure, with the ca_file hint.
    r.ctx.link.update_status(|s| {
        s.last_error = Some(super::doctor::samples::unknown_issuer());
    });
    let checks = doctor(&r).await;
    let tls = find(&checks, "TLS verified");
    assert!(
        !tls.ok && !tls.skipped && tls.hint.contains("ca_file"),
        "{tls:?}"
    );
}

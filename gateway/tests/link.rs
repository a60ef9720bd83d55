//! Device-link tests over real TLS WebSockets: delivery, ack, resume, register
//! and unregister, replacement, idle holding, ttl 0, bad frames, shutdown.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{APP, Creds, TestGateway};
use futures_util::SinkExt as _;
use hyper::StatusCode;
use serde_json::json;
use syspush_proto::device::{self, ErrorCode, frame::Body};
use tokio_tungstenite::tungstenite::Message;

async fn send_ok(gw: &TestGateway, body: serde_json::Value) -> String {
    let (status, resp) = gw.send(body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp.get("dropped").is_none(), "{resp}");
    resp["message_id"].as_str().unwrap().to_owned()
}

fn expect_error(body: Body, code: ErrorCode) -> device::Error {
    match body {
        Body::Error(e) if e.code == code as i32 => e,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_ack_resume_unregister() {
    let gw = TestGateway::start().await;
    let (creds, mut link, token) = gw.device().await;

    // Idempotent register.
    assert_eq!(link.register(2, APP).await, token);
    assert!(token.len() >= 22);

    let m1 = send_ok(
        &gw,
        json!({"token": token, "title": "one", "sender": {"id": "u1", "nickname": "Ann"}}),
    )
    .await;
    let d1 = link.deliver().await;
    let n1 = d1.notification.unwrap();
    assert_eq!(
        (
            d1.seq,
            n1.message_id.as_str(),
            n1.app_id.as_str(),
            n1.title.as_str()
        ),
        (1, m1.as_str(), APP, "one")
    );
    assert_eq!(n1.sender.unwrap().nickname, "Ann");
    assert!(n1.sent_at_ms > 0);
    assert_eq!(n1.expires_at_ms, n1.sent_at_ms + 2_419_200_000);
    link.ack(1).await;

    let m2 = send_ok(&gw, json!({"token": token, "desc": "two"})).await;
    let m3 = send_ok(&gw, json!({"token": token, "desc": "three", "ttl": 60})).await;
    let d2 = link.deliver().await;
    let d3 = link.deliver().await;
    assert_eq!((d2.seq, d3.seq), (2, 3));
    assert_eq!(d2.notification.unwrap().message_id, m2);
    assert_eq!(d3.notification.unwrap().message_id, m3);
    // The device commits 2 but the connection dies before it acks.
    drop(link);

    // Reconnect with last_committed_seq = 2: only 3 is resent, then new ones.
    let mut link = gw.connect().await;
    link.hello(&creds, 2, false).await;
    let again = link.deliver().await;
    assert_eq!(again.seq, 3);
    assert_eq!(again.notification.unwrap().message_id, m3);
    let m4 = send_ok(&gw, json!({"token": token})).await;
    let d4 = link.deliver().await;
    assert_eq!((d4.seq, d4.notification.unwrap().message_id), (4, m4));
    link.ack(4).await;
    assert!(link.sync(1).await.is_empty());

    // Reconnect after the ack: nothing is resent.
    drop(link);
    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    assert!(link.sync(2).await.is_empty());

    // Unregister: the token dies, queued messages for it are dropped, a new
    // register issues a new token.
    link.send(Body::Unregister(device::Unregister {
        request_id: 7,
        app_id: APP.into(),
    }))
    .await;
    match link.body().await {
        Body::Unregistered(u) => assert_eq!((u.request_id, u.app_id.as_str()), (7, APP)),
        other => panic!("expected Unregistered, got {other:?}"),
    }
    let (status, _) = gw.send(json!({"token": token})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let new_token = link.register(8, APP).await;
    assert_ne!(new_token, token);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_wait_and_expire() {
    let gw = TestGateway::start().await;
    let (creds, link, token) = gw.device().await;
    drop(link);
    // Wait until the gateway noticed the disconnect: ttl-0 sends say "dropped".
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let (status, resp) = gw.send(json!({"token": token, "ttl": 0})).await;
        assert_eq!(status, StatusCode::OK);
        if resp["dropped"] == "device offline" {
            assert!(resp["message_id"].is_string());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "device still counted as connected"
        );
        tokio::task::yield_now().await;
    }
    let kept = send_ok(
        &gw,
        json!({"token": token, "ttl": 3600, "collapse_key": "c"}),
    )
    .await;
    let _ = kept;
    let newest = send_ok(
        &gw,
        json!({"token": token, "collapse_key": "c", "desc": "newer"}),
    )
    .await;
    let plain = send_ok(&gw, json!({"token": token})).await;

    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    let got: Vec<String> = link
        .sync(1)
        .await
        .into_iter()
        .map(|b| match b {
            Body::Deliver(d) => d.notification.unwrap().message_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // The collapse key replaced the older pending message; no ttl-0 message was queued.
    assert_eq!(got, vec![newest, plain]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl0_delivered_when_connected() {
    let gw = TestGateway::start().await;
    let (_creds, mut link, token) = gw.device().await;
    let id = send_ok(&gw, json!({"token": token, "ttl": 0})).await;
    let d = link.deliver().await;
    let n = d.notification.unwrap();
    assert_eq!((n.message_id, n.ttl), (id, 0));
    // "Now or never" still needs a moment to reach the app: a 30 s lifetime.
    assert_eq!(
        n.expires_at_ms,
        n.sent_at_ms + syspush_gateway::store::TTL0_GRACE_MS
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_normal_priority_until_heartbeat() {
    let gw = TestGateway::start().await;
    let (device_id, secret) = gw.enroll().await;
    let creds = Creds { device_id, secret };
    let mut link = gw.connect().await;
    link.hello(&creds, 0, true).await;
    let token = link.register(1, APP).await;

    let normal = send_ok(&gw, json!({"token": token})).await;
    let high = send_ok(
        &gw,
        json!({"token": token, "priority": "high", "class": "important"}),
    )
    .await;
    // The high-priority one flushes everything pending, in seq order.
    let d1 = link.deliver().await;
    let d2 = link.deliver().await;
    assert_eq!(d1.notification.unwrap().message_id, normal);
    assert_eq!(d2.notification.unwrap().message_id, high);
    link.ack(2).await;

    // Held: the Ping (heartbeat) releases it, before the Pong.
    let held = send_ok(&gw, json!({"token": token})).await;
    let before_pong = link.sync(5).await;
    assert!(
        matches!(&before_pong[..], [Body::Deliver(d)] if d.notification.as_ref().unwrap().message_id == held)
    );

    // SetIdle(false): delivered at once again.
    link.send(Body::SetIdle(device::SetIdle { idle: false }))
        .await;
    let awake = send_ok(&gw, json!({"token": token})).await;
    assert_eq!(link.deliver().await.notification.unwrap().message_id, awake);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_replaces_first() {
    let gw = TestGateway::start().await;
    let (creds, mut first, token) = gw.device().await;
    let mut second = gw.connect().await;
    second.hello(&creds, 0, false).await;
    match first.body().await {
        Body::Goaway(g) => assert_eq!(g.reason, "replaced"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    assert!(first.next().await.is_none());
    let id = send_ok(&gw, json!({"token": token})).await;
    assert_eq!(second.deliver().await.notification.unwrap().message_id, id);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_errors() {
    let gw = TestGateway::start().await;
    let (device_id, secret) = gw.enroll().await;

    let mut link = gw.connect().await;
    link.hello_raw(&device_id, "wrong", 1).await;
    expect_error(link.body().await, ErrorCode::ErrorUnauthenticated);
    assert!(link.next().await.is_none());

    let mut link = gw.connect().await;
    link.hello_raw("nobody", &secret, 1).await;
    expect_error(link.body().await, ErrorCode::ErrorUnauthenticated);

    let mut link = gw.connect().await;
    link.hello_raw(&device_id, &secret, 99).await;
    expect_error(link.body().await, ErrorCode::ErrorUnsupportedVersion);
    assert!(link.next().await.is_none());

    // Something other than a hello first.
    let mut link = gw.connect().await;
    link.ack(1).await;
    expect_error(link.body().await, ErrorCode::ErrorBadFrame);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_without_losing_messages() {
    let gw = TestGateway::start().await;
    let (creds, mut link, token) = gw.device().await;
    let id = send_ok(&gw, json!({"token": token})).await;
    assert_eq!(link.deliver().await.seq, 1);
    // Garbage: BAD_FRAME and close; the unacked message stays queued.
    link.ws
        .send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
        .await
        .unwrap();
    expect_error(link.body().await, ErrorCode::ErrorBadFrame);
    assert!(link.next().await.is_none());

    // Oversized.
    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    assert_eq!(link.deliver().await.notification.unwrap().message_id, id);
    link.ws
        .send(Message::Binary(
            vec![0u8; syspush_proto::MAX_FRAME_LEN + 1].into(),
        ))
        .await
        .unwrap();
    expect_error(link.body().await, ErrorCode::ErrorBadFrame);

    // WebSocket-level pings are answered by the library.
    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    link.ws
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut link.ws))
            .await
            .unwrap()
        {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(p.as_ref(), b"are you there");
                break;
            }
            Some(Ok(Message::Binary(_))) => {}
            other => panic!("expected Pong, got {other:?}"),
        }
    }

    // Text, and register for an unknown app (an error, but the link stays up).
    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    assert_eq!(link.deliver().await.seq, 1);
    link.send(Body::Register(device::Register {
        request_id: 42,
        app_id: "no.such.app".into(),
    }))
    .await;
    let e = expect_error(link.body().await, ErrorCode::ErrorBadRequest);
    assert_eq!(e.request_id, 42);
    assert!(link.sync(3).await.is_empty());
    link.ws.send(Message::Text("hello".into())).await.unwrap();
    expect_error(link.body().await, ErrorCode::ErrorBadFrame);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_backlog_is_replayed_in_ack_gated_batches() {
    let gw = TestGateway::start().await;
    let (creds, link, token) = gw.device().await;
    drop(link);
    let window = syspush_gateway::link::WINDOW;
    let total = window + 144;
    for _ in 0..total {
        let (status, _) = gw.send(json!({"token": token})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    // One window, then nothing until an ack.
    let first = link.sync(1).await;
    assert_eq!(first.len(), window);
    assert!(link.sync(2).await.is_empty());
    // Acking 100 opens 100 slots.
    link.ack(100).await;
    let more = link.sync(3).await;
    assert_eq!(more.len(), 100);
    assert!(matches!(&more[0], Body::Deliver(d) if d.seq == window as u64 + 1));
    // Acking everything sent releases the rest.
    link.ack((window + 100) as u64).await;
    let rest = link.sync(4).await;
    assert_eq!(rest.len(), 44);
    assert!(matches!(rest.last(), Some(Body::Deliver(d)) if d.seq == total as u64));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_restart_keeps_messages() {
    let mut gw = TestGateway::start().await;
    let (creds, mut link, token) = gw.device().await;
    let id = send_ok(&gw, json!({"token": token})).await;
    assert_eq!(link.deliver().await.seq, 1);
    gw.restart().await;
    match link.body().await {
        Body::Goaway(g) => assert_eq!(g.reason, "shutdown"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    let mut link = gw.connect().await;
    link.hello(&creds, 0, false).await;
    let d = link.deliver().await;
    assert_eq!((d.seq, d.notification.unwrap().message_id), (1, id));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_hold_is_bounded_by_idle_max_hold() {
    let gw = TestGateway::start_with(|c| c.idle_max_hold_s = Some(1)).await;
    let (device_id, secret) = gw.enroll().await;
    let creds = Creds { device_id, secret };
    let mut link = gw.connect().await;
    link.hello(&creds, 0, true).await;
    let token = link.register(1, APP).await;
    // Idle and no heartbeat from the device: the message still goes out once
    // the configured maximum hold has passed, not before.
    let sent = std::time::Instant::now();
    let id = send_ok(&gw, json!({"token": token})).await;
    assert_eq!(link.deliver().await.notification.unwrap().message_id, id);
    let held = sent.elapsed();
    assert!(
        held >= std::time::Duration::from_millis(900),
        "released after {held:?}, before the 1 s hold"
    );
    gw.shutdown().await;
}

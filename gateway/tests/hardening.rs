//! Issue 11's gateway items, each pinned by a test: every field that reaches
//! the device counts toward the payload limit (the title after its fallback
//! too), request heads are capped (431), a retried send with the same
//! `Idempotency-Key` creates nothing, and the token status counts every drop
//! (logout drops as `revoked`, expired messages as soon as they expire).

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{APP, OTHER_APP, TestGateway, WAIT};
use hyper::{Method, StatusCode};
use serde_json::json;
use syspush_proto::device::{self, frame::Body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_that_reaches_the_device_counts_toward_the_payload_limit() {
    let gw = TestGateway::start().await;
    let (_creds, _link, token) = gw.device().await;
    let big = "n".repeat(12_000);
    // The title falls back to the nickname: the limit applies to what is sent.
    for body in [
        json!({"token": token, "sender": {"nickname": big}}),
        json!({"token": token, "sender": {"id": big}}),
        json!({"token": token, "collapse_key": big}),
        json!({"token": token, "channel_id": big}),
    ] {
        let (status, resp) = gw.send(body.clone()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
        assert!(resp["error"].is_string());
    }
    // Short fields within their caps still count toward the 4096 bytes.
    let title = "t".repeat(4000);
    let (status, resp) = gw
        .send(json!({"token": token, "title": title, "collapse_key": "c".repeat(100)}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    // A message with every field, within the limits, is fine.
    let (status, resp) = gw
        .send(json!({
            "token": token, "title": "t".repeat(3000), "collapse_key": "c".repeat(64),
            "channel_id": "chat", "sender": {"id": "u1", "nickname": "Ann"}
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    gw.shutdown().await;
}

/// Sends a GET whose head carries one header of `size` bytes; returns the status.
async fn get_with_header_of(gw: &TestGateway, size: usize) -> u16 {
    let tls = gw.tls().await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-filler: {}\r\nconnection: close\r\n\r\n",
        "f".repeat(size)
    );
    // Written from its own task: the gateway may answer (and stop reading)
    // before the whole head is sent.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut out)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:.200}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_16_kib_get_431() {
    let gw = TestGateway::start().await;
    assert_eq!(get_with_header_of(&gw, 300 * 1024).await, 431);
    assert_eq!(get_with_header_of(&gw, 15 * 1024).await, 200);
    // The gateway keeps serving.
    let (status, _) = gw.request(Method::GET, "/healthz", None, b"").await;
    assert_eq!(status, StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_creates_nothing() {
    let gw = TestGateway::start().await;
    let (_creds, mut link, token) = gw.device().await;
    let other_token = link.register(2, OTHER_APP).await;
    let body = json!({"token": token, "title": "pay", "desc": "42"});
    let (status, first) = gw.send_keyed("order-7", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = gw.send_keyed("order-7", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "a retry answers the first message_id");
    // The same key with another request is refused, not merged.
    let (status, resp) = gw
        .send_keyed(
            "order-7",
            json!({"token": token, "title": "pay", "desc": "43"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    // Keys are per app: another app's "order-7" is its own message.
    let (status, other) = gw
        .request_with(
            Method::POST,
            "/v1/messages",
            Some(&gw.other_key),
            &[("idempotency-key", "order-7")],
            json!({"token": other_token}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{other}");
    assert_ne!(other["message_id"], first["message_id"]);
    // Without a key, the same body is a new message.
    let (status, plain) = gw.send(body).await;
    assert_eq!(status, StatusCode::OK);
    // The device got exactly three messages: the keyed one once.
    let got: Vec<String> = link
        .sync(9)
        .await
        .into_iter()
        .filter_map(|b| match b {
            Body::Deliver(d) => Some(d.notification.unwrap().message_id),
            _ => None,
        })
        .collect();
    let want: Vec<String> = [&first, &other, &plain]
        .iter()
        .map(|v| v["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want);
    // Keys must be 1..=255 visible ASCII characters.
    for bad in ["", &"k".repeat(256), "two words"] {
        let (status, resp) = gw.send_keyed(bad, json!({"token": token})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {resp}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl0_drop_is_replayed_too() {
    let gw = TestGateway::start().await;
    let (_creds, link, token) = gw.device().await;
    drop(link);
    let body = json!({"token": token, "ttl": 0});
    // Wait until the gateway noticed the disconnect (a keyless probe).
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw.send(body.clone()).await.1["dropped"] != "device offline" {
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::task::yield_now().await;
    }
    let (status, first) = gw.send_keyed("now-1", body.clone()).await;
    assert_eq!(
        (status, &first["dropped"]),
        (StatusCode::OK, &json!("device offline"))
    );
    let (_, again) = gw.send_keyed("now-1", body).await;
    assert_eq!(again, first);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_dropped_by_a_logout_count_as_revoked() {
    let gw = TestGateway::start().await;
    let (_creds, mut link, token) = gw.device().await;
    for i in 0..3 {
        let (status, _) = gw
            .send(json!({"token": token, "title": format!("m{i}")}))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Delivered, never acked: still the gateway's to drop.
    link.sync(1).await;
    link.send(Body::Unregister(device::Unregister {
        request_id: 2,
        app_id: APP.into(),
    }))
    .await;
    assert!(matches!(link.body().await, Body::Unregistered(_)));
    let status = gw.token_status(&token).await;
    assert_eq!(status["state"], "revoked");
    assert_eq!(status["pending"], 0);
    assert_eq!(status["drops"]["revoked"], 3, "{status}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_counted_without_waiting_for_a_sweep() {
    let gw = TestGateway::start().await;
    let (_creds, link, token) = gw.device().await;
    drop(link);
    let (status, _) = gw.send(json!({"token": token, "ttl": 1})).await;
    assert_eq!(status, StatusCode::OK);
    // Nothing reads the device's queue (it is away): the count must still
    // move from pending to expired once the second is over.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = gw.token_status(&token).await;
        let (pending, expired) = (&status["pending"], &status["drops"]["expired"]);
        assert_eq!(
            pending.as_u64().unwrap() + expired.as_u64().unwrap(),
            1,
            "{status}"
        );
        if expired == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}

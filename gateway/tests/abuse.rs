//! Hostile clients of the gateway's HTTPS port: wrong and borrowed keys,
//! replayed enrollment, bodies far over the limit, slow-loris headers and TLS
//! handshakes that never finish. Each is refused with the right status or cut
//! off by a timeout, without the gateway buffering what the client claims,
//! while well-behaved requests keep being served.
//!
//! The timeouts are set to 1 s here (`tls_handshake_timeout_s`,
//! `header_read_timeout_s`) so the tests run in a few seconds; the defaults
//! are 10 s and 30 s.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestGateway, WAIT};
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn short_timeouts() -> TestGateway {
    TestGateway::start_with(|c| {
        c.tls_handshake_timeout_s = 1;
        c.header_read_timeout_s = 1;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_borrowed_keys_are_refused() {
    let gw = TestGateway::start().await;
    let (_creds, _link, token) = gw.device().await;
    let msg = json!({"token": token, "title": "hi"});

    // No key, a wrong key, a key with the wrong scheme: 401 with a challenge.
    for auth in [
        None,
        Some("Bearer not-a-key"),
        Some(&*format!("Basic {}", gw.app_key)),
    ] {
        let (status, body) = raw_request(&gw, "/v1/messages", auth, &msg.to_string()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
    }
    // Another app's valid key, aimed at this app's token: 404, exactly like
    // an unknown token, so a key cannot probe which tokens exist.
    let (status, body) = gw.send_as(&gw.other_key, msg.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, unknown) = gw.send_as(&gw.other_key, json!({"token": "no-such"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body, unknown,
        "another app's token is distinguishable from none"
    );
    // Nor may it revoke the token.
    let path = format!("/v1/tokens/{token}");
    let (status, _) = gw
        .request(Method::DELETE, &path, Some(&gw.other_key), b"")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The owner still can send: nothing above touched the token.
    let (status, body) = gw.send(msg).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gw.shutdown().await;
}

/// What "replayed enrollment" means here: the enrollment key is a shared
/// bootstrap secret, not a one-time ticket, so presenting it again (a device
/// that lost its credentials, or anyone who copied the key) mints a NEW
/// identity — it never returns or resets an existing device's secret, so a
/// replay cannot take over a device or read its queue. A wrong key is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_enrollment_gets_a_new_identity_and_a_wrong_key_401() {
    let gw = TestGateway::start().await;
    let (creds, mut link, token) = gw.device().await;
    let (status, body) = gw
        .request(Method::POST, "/v1/devices", Some("enroll-me-not"), b"")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (again_id, again_secret) = gw.enroll().await;
    assert_ne!(again_id, creds.device_id);
    assert_ne!(again_secret, creds.secret);
    // The first device is unaffected: its token still delivers to it.
    let (status, body) = gw
        .send(json!({"token": token, "title": "still mine"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        link.deliver().await.notification.unwrap().title,
        "still mine"
    );
    // The new identity's secret does not open the old device.
    let mut other = gw.connect().await;
    other
        .hello_raw(
            &creds.device_id,
            &again_secret,
            syspush_proto::PROTOCOL_VERSION,
        )
        .await;
    match other.body().await {
        syspush_proto::device::frame::Body::Error(e) => assert_eq!(
            e.code,
            syspush_proto::device::ErrorCode::ErrorUnauthenticated as i32
        ),
        b => panic!("hello with another identity's secret: {b:?}"),
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_without_being_buffered() {
    let gw = TestGateway::start().await;
    let (_creds, _link, token) = gw.device().await;

    // A 1 GiB Content-Length with only a few bytes sent: refused from the
    // header alone (a gateway that waited for the body would time out here).
    let mut tls = gw.tls().await;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 1073741824\r\n\r\n{{\"token\":",
        gw.app_key
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let status = read_status(&mut tls).await;
    assert_eq!(status, 413, "1 GiB content-length");

    // Chunked, no length announced: cut off once the limit is crossed, after
    // 16 KiB and a chunk, not after the 1 GiB the client would send.
    let mut tls = gw.tls().await;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        gw.app_key
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
        let mut sent = 0usize;
        // Up to 1 MiB; a refused body stops us with a write error first.
        while sent < 1024 * 1024 {
            if wr.write_all(chunk.as_bytes()).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            sent += 0x1000;
        }
        sent
    });
    let status = read_status(&mut rd).await;
    assert_eq!(status, 413, "chunked body over the limit");
    // The answer came while the client was still sending (or had been cut
    // off): the gateway did not wait for the whole body.
    writer.abort();

    // Still serving.
    let (status, body) = gw.send(json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_headers_are_cut_off_while_others_are_served() {
    let gw = short_timeouts().await;
    let tls = gw.tls().await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    // 200 bytes of request head at one byte per 100 ms would take 20 s.
    let head = format!(
        "GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-padding: {}\r\n\r\n",
        "p".repeat(140)
    );
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for b in head.as_bytes() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            sent += 1;
            // The slow client's own pace: this is the behaviour under test.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });
    // Meanwhile a normal client is served at once.
    for _ in 0..3 {
        let (status, _) = gw.request(Method::GET, "/healthz", None, b"").await;
        assert_eq!(status, StatusCode::OK);
    }
    // The gateway closes the slow connection (EOF, an error, or a 408 and then EOF).
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(WAIT, rd.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(
        closed.is_ok(),
        "slow-loris connection still open after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "cut after {elapsed:?}, header timeout is 1 s"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "slow request was served: {text}");
    let sent = trickle.await.unwrap();
    assert!(sent < 60, "{sent} bytes trickled before the cut");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_body_gets_408() {
    let gw = short_timeouts().await;
    let (_creds, _link, token) = gw.device().await;
    let body = json!({"token": token, "title": "t".repeat(100)}).to_string();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        gw.app_key,
        body.len()
    );
    let (mut rd, mut wr) = tokio::io::split(gw.tls().await);
    wr.write_all(head.as_bytes()).await.unwrap();
    wr.flush().await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in body.as_bytes() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                break;
            }
            // The slow client's own pace: the behaviour under test.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(read_status(&mut rd).await, 408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_that_never_finish_are_cut_off() {
    let gw = short_timeouts().await;
    let started = Instant::now();
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        if i % 2 == 1 {
            // Half of them start a TLS record and stall inside it.
            tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .unwrap();
        }
        idle.push(tcp);
    }
    // A real client is served while they hang.
    let (status, _) = gw.request(Method::GET, "/healthz", None, b"").await;
    assert_eq!(status, StatusCode::OK);
    for mut tcp in idle {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await;
        // EOF or a reset: either way the gateway let go of it.
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "idle handshake not cut: {r:?}"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "cut after {elapsed:?}, handshake timeout is 1 s"
    );
    gw.shutdown().await;
}

/// One HTTP/1.1 request with a raw Authorization header value.
async fn raw_request(
    gw: &TestGateway,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut tls = gw.tls().await;
    let auth = auth
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tls.read_to_end(&mut out))
        .await
        .unwrap()
        .ok();
    let text = String::from_utf8_lossy(&out).to_string();
    let code: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json_ok = text.contains("\"error\"");
    assert!(json_ok || code < 400, "error without a JSON body: {text}");
    (StatusCode::from_u16(code).unwrap(), text)
}

/// Reads up to the end of a status line and returns the status code.
async fn read_status<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> u16 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(WAIT, async {
        while !buf.ends_with(b"\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => buf.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("no status line in time");
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

//! HTTP API tests against a started gateway: enrollment, the send API's status
//! codes, JSON errors, admin while running.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::{APP, TestGateway, b64};
use hyper::{Method, StatusCode};
use serde_json::json;
use syspush_gateway::admin;
use syspush_gateway::store::StoreError;

// Current-thread runtime on purpose: the quick start runs the gateway that way.
#[tokio::test]
async fn health_and_unknown_route() {
    let gw = TestGateway::start().await;
    let (status, _) = gw.request(Method::GET, "/healthz", None, b"").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = gw.request(Method::GET, "/nope", None, b"").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
    let (status, body) = gw.request(Method::GET, "/v1/messages", None, b"").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string());
    // A plain GET on the WebSocket endpoint is refused with a JSON error.
    let (status, body) = gw.request(Method::GET, "/v1/device", None, b"").await;
    assert!(status.is_client_error(), "{status}");
    assert!(body["error"].is_string());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment() {
    let gw = TestGateway::start().await;
    let (d1, s1) = gw.enroll().await;
    let (d2, _) = gw.enroll().await;
    assert_ne!(d1, d2);
    assert!(d1.len() >= 22 && s1.len() >= 43);
    for key in [None, Some("wrong")] {
        let (status, body) = gw.request(Method::POST, "/v1/devices", key, b"").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"].is_string());
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_status_codes() {
    let gw = TestGateway::start().await;
    let (_creds, mut link, token) = gw.device().await;

    // 200
    let (status, body) = gw
        .send(json!({"token": token, "title": "hi", "data": b64(b"\x00\x01")}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["message_id"].as_str().unwrap().to_owned();
    let d = link.deliver().await;
    assert_eq!(d.notification.as_ref().unwrap().message_id, id);
    assert_eq!(d.notification.as_ref().unwrap().data.as_ref(), b"\x00\x01");

    // 401: missing or wrong key.
    let (status, _) = gw
        .request(
            Method::POST,
            "/v1/messages",
            None,
            json!({"token": token}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = gw.send_as("not-a-key", json!({"token": token})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].is_string());

    // 400: malformed JSON, missing token, unknown field, bad base64, bad enum, ttl over max.
    let (status, body) = gw
        .request(Method::POST, "/v1/messages", Some(&gw.app_key), b"{nope")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    for bad in [
        json!({"title": "no token"}),
        json!({"token": token, "bogus": 1}),
        json!({"token": token, "data": "***"}),
        json!({"token": token, "priority": "urgent"}),
        json!({"token": token, "class": "spam"}),
        json!({"token": token, "ttl": 2_419_201}),
        json!({"token": token, "ttl": -1}),
        json!({"token": token, "disable_push": "yes"}),
    ] {
        let (status, body) = gw.send(bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} -> {body}");
        assert!(body["error"].is_string());
    }

    // 404: unknown token, another app's token.
    let (status, _) = gw.send(json!({"token": "no-such-token"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw.send_as(&gw.other_key, json!({"token": token})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // 413: payload over 4096 bytes (counting decoded data), and a huge body.
    let (status, body) = gw
        .send(json!({"token": token, "title": "x".repeat(96), "data": b64(&[7u8; 4001])}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].is_string());
    let (status, _) = gw
        .send(json!({"token": token, "title": "x".repeat(96), "data": b64(&[7u8; 4000])}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = gw
        .send(json!({"token": token, "ext": "y".repeat(20_000)}))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].is_string());

    // 403: a class the app was not allowed; allowed ones pass.
    let (status, body) = gw.send(json!({"token": token, "class": "system"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = gw
        .send(json!({"token": token, "class": "important", "priority": "high"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // Revoked token: 404.
    link.send(syspush_proto::device::frame::Body::Unregister(
        syspush_proto::device::Unregister {
            request_id: 9,
            app_id: APP.into(),
        },
    ))
    .await;
    loop {
        if let syspush_proto::device::frame::Body::Unregistered(u) = link.body().await {
            assert_eq!(u.request_id, 9);
            break;
        }
    }
    let (status, _) = gw.send(json!({"token": token})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_while_running_and_works_after_shutdown() {
    let gw = TestGateway::start().await;
    let config = gw.config.clone();
    let err = admin::add_app(&config, "late.app", &[]).unwrap_err();
    assert!(
        matches!(err, admin::AdminError::Store(StoreError::Locked)),
        "{err}"
    );
    assert!(matches!(
        admin::add_app(&config, "bad id", &[]),
        Err(admin::AdminError::InvalidAppId(_))
    ));
    assert!(matches!(
        admin::add_app(&config, "x", &["vip".into()]),
        Err(admin::AdminError::UnknownClass(_))
    ));
    let _dir = {
        let TestGateway { gateway, dir, .. } = gw;
        gateway.unwrap().shutdown().await;
        dir
    };
    // shutdown() returned: the store is closed.
    let key = admin::add_app(&config, "late.app", &["system".into()]).unwrap();
    assert!(key.len() >= 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_quota() {
    let gw = TestGateway::start_with(|c| c.operational_daily_quota = Some(2)).await;
    let (_creds, _link, token) = gw.device().await;
    for _ in 0..2 {
        let (status, _) = gw.send(json!({"token": token})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = gw
        .send(json!({"token": token, "class": "operational"}))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body["error"].is_string());
    // Other classes are not counted.
    let (status, _) = gw.send(json!({"token": token, "class": "important"})).await;
    assert_eq!(status, StatusCode::OK);
    // The quota is per app and device: the same app on another device has its own.
    let (_creds2, _link2, token2) = gw.device().await;
    let (status, body) = gw.send(json!({"token": token2})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_server_revokes_a_token() {
    use syspush_proto::device::frame::Body;
    let gw = TestGateway::start().await;
    let (_creds, mut link, token) = gw.device().await;
    let path = format!("/v1/tokens/{token}");
    // Only the token's own app may revoke it.
    let (status, _) = gw
        .request(Method::DELETE, &path, Some(&gw.other_key), b"")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw.request(Method::DELETE, &path, None, b"").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = gw
        .request(Method::DELETE, &path, Some(&gw.app_key), b"")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    match link.body().await {
        Body::TokenRevoked(t) => {
            assert_eq!((t.app_id.as_str(), t.token.as_str()), (APP, token.as_str()))
        }
        other => panic!("expected TokenRevoked, got {other:?}"),
    }
    let (status, _) = gw.send(json!({"token": token})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw
        .request(Method::DELETE, &path, Some(&gw.app_key), b"")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The device can register again and gets a new token.
    assert_ne!(link.register(5, APP).await, token);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume() {
    let gw = TestGateway::start().await;
    // Same client config (and so session cache) for both connections.
    let (status, _) = gw.request(Method::GET, "/healthz", None, b"").await;
    assert_eq!(status, StatusCode::OK);
    let tls = gw.tls().await;
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    gw.shutdown().await;
}

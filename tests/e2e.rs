//! End-to-end: app server -> gateway -> syspushd -> app, every part a real
//! process over real TLS, a real store and a real Unix socket (see `syspush::testkit`).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, ensure};
use base64::Engine;
use serde_json::json;
use syspush::testkit::{AppPolicy, Stack, raw_exchange, require_root};

const BOUND: Duration = Duration::from_secs(60);
const APP: &str = "com.example.chat";

#[test]
fn push_arrives_at_listening_app_with_every_field() -> Result<()> {
    let s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    ensure!(
        token.len() >= 22,
        "token {token:?} too short to hold 128 bits"
    );
    let listen = s.daemon.listen(APP, Some(1), None)?;
    let data = base64::engine::general_purpose::STANDARD.encode(b"\x00\x01opaque");
    let r = s.app.send(&json!({
        "token": token, "title": "Ann", "desc": "see you at 8", "ext": "chat:42",
        "data": data, "priority": "high", "class": "important", "ttl": 3600,
        "collapse_key": "c1", "channel_id": "messages", "disable_push": false,
        "sender": {"id": "u1", "nickname": "Ann"}
    }))?;
    ensure!(r.status == 200, "send: {} {}", r.status, r.body);
    let n = listen.next(BOUND)?;
    assert_eq!(n["message_id"], r.body["message_id"]);
    assert_eq!(n["app_id"], APP);
    assert_eq!(n["title"], "Ann");
    assert_eq!(n["desc"], "see you at 8");
    assert_eq!(n["ext"], "chat:42");
    assert_eq!(n["data"], data);
    assert_eq!(n["priority"], "high");
    assert_eq!(n["class"], "important");
    assert_eq!(n["ttl"], 3600);
    assert_eq!(n["collapse_key"], "c1");
    assert_eq!(n["channel_id"], "messages");
    assert_eq!(n["disable_push"], false);
    assert_eq!(n["sender"]["id"], "u1");
    assert_eq!(n["sender"]["nickname"], "Ann");
    ensure!(
        n["sent_at_ms"].as_u64().unwrap_or(0) > 0,
        "sent_at_ms missing: {n}"
    );
    let (st, err) = listen.finish()?;
    ensure!(st.success(), "listen failed: {err}");
    Ok(())
}

fn pending_for(s: &Stack, app: &str) -> Result<u64> {
    let out = s.daemon.ctl(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let apps = v["apps"].as_array().cloned().unwrap_or_default();
    Ok(apps
        .iter()
        .find(|a| a["app_id"] == app)
        .and_then(|a| a["pending"].as_u64())
        .unwrap_or(0))
}

#[test]
fn push_waits_for_a_disconnected_app() -> Result<()> {
    let s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let id = s.push(&token, "while you were away")?;
    // No app is connected: the daemon holds it in its store until one says hello.
    let listen = s.daemon.listen(APP, Some(1), None)?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["message_id"], id.as_str());
    assert_eq!(n["title"], "while you were away");
    listen.finish()?;
    // Acked by the app: gone from the daemon's store.
    assert_eq!(pending_for(&s, APP)?, 0);
    Ok(())
}

#[test]
fn push_sent_while_daemon_is_down_arrives_after_it_starts() -> Result<()> {
    let mut s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let st = s.daemon.stop()?;
    ensure!(
        st.success(),
        "daemon exit on SIGTERM: {st}; log: {}",
        s.daemon.log()
    );
    let id = s.push(&token, "sent while the daemon was down")?;
    s.daemon.start()?;
    let listen = s.daemon.listen(APP, Some(1), None)?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["message_id"], id.as_str());
    Ok(())
}

fn collect(
    listen: &syspush::testkit::Listen,
    n: usize,
    mut at: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        at(i)?;
        let v = listen.next(BOUND)?;
        ids.push(v["message_id"].as_str().unwrap_or_default().to_string());
    }
    Ok(ids)
}

fn check_exactly_once(sent: &[String], got: &[String]) -> Result<()> {
    let sent_set: HashSet<&String> = sent.iter().collect();
    let got_set: HashSet<&String> = got.iter().collect();
    ensure!(
        sent_set.len() == sent.len(),
        "gateway issued a duplicate id"
    );
    ensure!(
        got_set.len() == got.len(),
        "app saw {} duplicates",
        got.len() - got_set.len()
    );
    let lost: Vec<_> = sent_set.difference(&got_set).collect();
    ensure!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let extra: Vec<_> = got_set.difference(&sent_set).collect();
    ensure!(extra.is_empty(), "{} unexpected ids", extra.len());
    Ok(())
}

#[test]
fn sigkill_of_the_daemon_mid_stream_loses_and_duplicates_nothing() -> Result<()> {
    const N: usize = 2000;
    let mut s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, Some(N), None)?;
    let app = s.app.clone();
    let sender = std::thread::spawn(move || -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(N);
        for i in 0..N {
            let r = app.send(&json!({"token": token, "title": format!("m{i}"), "desc": "x"}))?;
            ensure!(r.status == 200, "send {i}: {} {}", r.status, r.body);
            ids.push(
                r.body["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        Ok(ids)
    });
    let got = collect(&listen, N, |i| {
        if i == 300 || i == 1100 {
            s.daemon.kill();
            s.daemon.start()?;
        }
        Ok(())
    })?;
    let sent = sender.join().expect("sender thread")?;
    check_exactly_once(&sent, &got)?;
    let (st, err) = listen.finish()?;
    ensure!(st.success(), "listen: {err}");
    Ok(())
}

#[test]
fn gateway_restart_mid_stream_loses_and_duplicates_nothing() -> Result<()> {
    const N: usize = 2000;
    let mut s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, Some(N), None)?;
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        if i == 700 || i == 1400 {
            // Killed while its queue still holds messages the daemon has not acked.
            s.gateway.kill();
            s.gateway.start()?;
            s.app = s.gateway.app_server(&s.app_key)?;
        }
        let r = s
            .app
            .send(&json!({"token": token, "title": format!("m{i}"), "desc": "x"}))?;
        ensure!(r.status == 200, "send {i}: {} {}", r.status, r.body);
        sent.push(
            r.body["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let got = collect(&listen, N, |_| Ok(()))?;
    check_exactly_once(&sent, &got)?;
    Ok(())
}

#[test]
fn an_app_uid_not_allowed_for_an_app_id_is_refused() -> Result<()> {
    if !require_root("switches to uid 65534") {
        return Ok(());
    }
    let nobody = 65534;
    let other = AppPolicy {
        id: "org.example.nobodys".into(),
        uids: vec![nobody],
    };
    let s = Stack::new(APP, std::slice::from_ref(&other))?;
    // The socket is reachable for that uid: it may act for its own app...
    let own = std::process::Command::new(syspush::testkit::bin("syspushctl"))
        .arg("--socket")
        .arg(&s.daemon.socket)
        .args(["register", &other.id])
        .uid(nobody)
        .gid(nobody)
        .output()?;
    ensure!(
        own.status.success(),
        "own app refused: {}",
        String::from_utf8_lossy(&own.stderr)
    );
    // ...but not for another uid's app: neither listen nor register.
    let listen = s.daemon.listen(APP, Some(1), Some(nobody))?;
    let (st, err) = listen.finish()?;
    ensure!(
        !st.success(),
        "listen as uid {nobody} for {APP} was allowed"
    );
    ensure!(
        err.to_lowercase().contains("permission"),
        "unclear refusal: {err}"
    );
    let reg = std::process::Command::new(syspush::testkit::bin("syspushctl"))
        .arg("--socket")
        .arg(&s.daemon.socket)
        .args(["register", APP])
        .uid(nobody)
        .gid(nobody)
        .output()?;
    ensure!(
        !reg.status.success(),
        "register as uid {nobody} for {APP} was allowed"
    );
    Ok(())
}

use std::os::unix::process::CommandExt;

fn decode_daemon_reply(bytes: &[u8]) -> Result<syspush_proto::app::DaemonMessage> {
    let mut buf = bytes::BytesMut::from(bytes);
    let msg = syspush_proto::app_codec::try_decode::<syspush_proto::app::DaemonMessage>(&mut buf)?;
    msg.ok_or_else(|| anyhow::anyhow!("daemon answered nothing ({} bytes)", bytes.len()))
}

#[test]
fn garbage_and_oversized_frames_on_the_app_socket_get_an_error_and_others_are_served() -> Result<()>
{
    use syspush_proto::app::{ErrorCode, daemon_message::Body};
    let s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    // A well-behaved app is connected throughout.
    let listen = s.daemon.listen(APP, Some(2), None)?;
    let first = s.push(&token, "before")?;
    assert_eq!(listen.next(BOUND)?["message_id"], first.as_str());

    // A frame that claims 4 GiB.
    let reply = decode_daemon_reply(&raw_exchange(
        &s.daemon.socket,
        &[0x80, 0x80, 0x80, 0x80, 0x10],
    )?)?;
    match reply.body {
        Some(Body::Error(e)) => assert_eq!(e.code, ErrorCode::ErrorBadFrame as i32, "{e:?}"),
        other => anyhow::bail!("expected an error for an oversized frame, got {other:?}"),
    }
    // Bytes that are not a protobuf message.
    let reply = decode_daemon_reply(&raw_exchange(
        &s.daemon.socket,
        &[5, 0xff, 0xff, 0xff, 0xff, 0xff],
    )?)?;
    ensure!(
        matches!(reply.body, Some(Body::Error(ref e)) if e.code == ErrorCode::ErrorBadFrame as i32),
        "{reply:?}"
    );

    let second = s.push(&token, "after")?;
    assert_eq!(listen.next(BOUND)?["message_id"], second.as_str());
    Ok(())
}

#[test]
fn garbage_on_the_device_websocket_is_refused_and_devices_are_still_served() -> Result<()> {
    let s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let reply = ws_exchange(&s, &[0xff, 0x01, 0x02, 0x03])?;
    ensure!(!reply.is_empty(), "gateway closed without an error frame");
    let f = syspush_proto::device_codec::decode(&reply)?;
    ensure!(
        matches!(f.body, Some(syspush_proto::device::frame::Body::Error(_))),
        "{f:?}"
    );
    // An oversized frame.
    let reply = ws_exchange(&s, &vec![0u8; syspush_proto::MAX_FRAME_LEN + 10])?;
    if !reply.is_empty() {
        let f = syspush_proto::device_codec::decode(&reply)?;
        ensure!(
            matches!(f.body, Some(syspush_proto::device::frame::Body::Error(_))),
            "{f:?}"
        );
    }
    let listen = s.daemon.listen(APP, Some(1), None)?;
    let id = s.push(&token, "still fine")?;
    assert_eq!(listen.next(BOUND)?["message_id"], id.as_str());
    Ok(())
}

/// Opens the device WebSocket over TLS, sends `payload` as one binary message, and
/// returns the first binary message the gateway answers (empty if it just closed).
fn ws_exchange(s: &Stack, payload: &[u8]) -> Result<Vec<u8>> {
    use std::sync::Arc;
    let pem = std::fs::read(&s.gateway.ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = s.gateway.url();
    let hostport = url.trim_start_matches("https://").to_string();
    let tcp = std::net::TcpStream::connect(&hostport)?;
    tcp.set_read_timeout(Some(BOUND))?;
    let conn = rustls::ClientConnection::new(Arc::new(cfg), "127.0.0.1".try_into()?)?;
    let tls = rustls::StreamOwned::new(conn, tcp);
    let (mut ws, _) = tungstenite::client(format!("wss://{hostport}/v1/device"), tls)
        .map_err(|e| anyhow::anyhow!("ws handshake: {e}"))?;
    ws.send(tungstenite::Message::Binary(payload.to_vec().into()))?;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => return Ok(b.to_vec()),
            Ok(tungstenite::Message::Close(_)) | Err(_) => return Ok(Vec::new()),
            Ok(_) => continue,
        }
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

#[test]
fn unregister_kills_the_token_and_register_again_issues_a_new_one() -> Result<()> {
    let s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    s.push(&token, "while logged in")?;
    let out = s.daemon.ctl(&["unregister", APP])?;
    ensure!(
        out.status.success(),
        "unregister: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = s
        .app
        .send(&json!({"token": token, "title": "after logout"}))?;
    assert_eq!(r.status, 404, "{}", r.body);
    ensure!(r.body["error"].is_string(), "error body: {}", r.body);
    let again = s.daemon.register(APP)?;
    assert_ne!(again, token, "a new login must get a new token");
    Ok(())
}

#[test]
fn gateway_http_api_errors_are_json_with_the_right_status() -> Result<()> {
    let s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let bad_key = s.gateway.app_server("not-a-key")?;
    assert_eq!(bad_key.send(&json!({"token": token}))?.status, 401);
    assert_eq!(
        s.app.send(&json!({"token": token, "nonsense": 1}))?.status,
        400
    );
    assert_eq!(s.app.send(&json!({"token": "no-such-token"}))?.status, 404);
    let big = "x".repeat(4097);
    let r = s.app.send(&json!({"token": token, "desc": big}))?;
    assert_eq!(r.status, 413);
    ensure!(r.body["error"].is_string(), "{}", r.body);
    Ok(())
}

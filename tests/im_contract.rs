//! The IM offline-push contract end to end (issue 5): what a message means
//! (title fallback, data-only, disable_push, class, ttl, collapse_key), who
//! may receive it (forced logout, re-register, per-app settings on the
//! device), and how to find out why one did not arrive (`GET /v1/tokens`,
//! drop counters, `syspushctl doctor`, `syspushctl test`). Every part is a
//! real process: gateway, syspushd, and `syspushctl listen` as the app.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde_json::{Value, json};
use syspush::testkit::{AppPolicy, Daemon, Gateway, Stack, shared_tempdir};

const BOUND: Duration = Duration::from_secs(60);
const APP: &str = "com.example.chat";

/// A stack whose gateway has `gateway_extra` config and whose daemon lets
/// this uid change settings (`system_uids`).
fn stack(gateway_extra: &str) -> Result<Stack> {
    let dir = shared_tempdir()?;
    let mut gateway = Gateway::new(&dir.path().join("gateway"))?;
    gateway.extra_config = gateway_extra.to_string();
    let app_key = gateway.add_app(APP, &["system", "important"])?;
    gateway.start()?;
    let me = nix::unistd::getuid().as_raw();
    let apps = [AppPolicy {
        id: APP.into(),
        uids: vec![me],
    }];
    let extra = format!("system_uids = [{me}]");
    let mut daemon = Daemon::new(&dir.path().join("daemon"), &gateway, &apps, &extra)?;
    daemon.start()?;
    let app = gateway.app_server(&app_key)?;
    Ok(Stack {
        daemon,
        gateway,
        app,
        app_key,
        app_id: APP.into(),
        dir,
    })
}

fn send(s: &Stack, body: Value) -> Result<syspush::appserver::Reply> {
    Ok(s.app.send(&body)?)
}

fn sent(s: &Stack, body: Value) -> Result<String> {
    let r = send(s, body)?;
    ensure!(r.status == 200, "send answered {}: {}", r.status, r.body);
    Ok(r.body["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn status(s: &Stack) -> Result<Value> {
    let out = s.daemon.ctl(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn pending(s: &Stack) -> Result<u64> {
    let v = status(s)?;
    Ok(v["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["app_id"] == APP)
        .and_then(|a| a["pending"].as_u64())
        .unwrap_or(0))
}

/// Re-reads the daemon's status until `pred` holds (a bounded poll of real
/// state, not a sleep).
fn until(s: &Stack, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let start = Instant::now();
    loop {
        let v = status(s)?;
        if pred(&v) {
            return Ok(v);
        }
        if start.elapsed() > BOUND {
            bail!("{what} not reached within {BOUND:?}; status {v}");
        }
        std::thread::yield_now();
    }
}

fn ctl_ok(s: &Stack, args: &[&str]) -> Result<String> {
    let out = s.daemon.ctl(args)?;
    ensure!(
        out.status.success(),
        "syspushctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn message_meaning_title_fallback_data_only_disable_push() -> Result<()> {
    let s = stack("")?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, Some(3), None)?;
    sent(
        &s,
        json!({"token": token, "desc": "hi", "sender": {"id": "u1", "nickname": "Ann"}}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["title"], "Ann", "{n}");
    assert_eq!(n["display"], true, "{n}");
    assert_eq!(n["lockscreen"], true, "{n}");
    assert_eq!(n["sound"], true, "{n}");
    sent(
        &s,
        json!({"token": token, "data": "AAEC", "ext": "route:1"}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["display"], false, "data-only must be silent: {n}");
    assert_eq!(n["data"], "AAEC");
    sent(
        &s,
        json!({"token": token, "title": "t", "desc": "d", "disable_push": true}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["display"], false, "disable_push must not display: {n}");
    assert_eq!(n["sound"], false);
    listen.finish()?;
    Ok(())
}

#[test]
fn device_settings_decide_display_but_data_still_arrives() -> Result<()> {
    let s = stack("")?;
    let token = s.daemon.register(APP)?;
    let shown = ctl_ok(&s, &["settings", APP])?;
    ensure!(
        shown.contains("allow=true") && shown.contains("min_class=operational"),
        "{shown}"
    );
    ctl_ok(&s, &["settings", APP, "allow=false"])?;
    let listen = s.daemon.listen(APP, Some(4), None)?;
    sent(
        &s,
        json!({"token": token, "title": "hidden", "class": "system"}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["title"], "hidden");
    assert_eq!(n["display"], false, "app disabled: {n}");

    ctl_ok(&s, &["settings", APP, "allow=true", "min_class=important"])?;
    sent(
        &s,
        json!({"token": token, "title": "promo", "class": "operational"}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["display"], false, "below min class: {n}");
    sent(
        &s,
        json!({"token": token, "title": "chat", "class": "important"}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["display"], true, "{n}");

    ctl_ok(
        &s,
        &[
            "settings",
            APP,
            "--channel",
            "quiet",
            "sound=false",
            "lockscreen=false",
        ],
    )?;
    sent(
        &s,
        json!({"token": token, "title": "q", "class": "important", "channel_id": "quiet"}),
    )?;
    let n = listen.next(BOUND)?;
    assert_eq!(
        (
            n["display"].clone(),
            n["sound"].clone(),
            n["lockscreen"].clone()
        ),
        (json!(true), json!(false), json!(false)),
        "{n}"
    );
    listen.finish()?;

    let v: Value = serde_json::from_str(&ctl_ok(&s, &["settings", APP, "--json"])?)?;
    assert_eq!(v["app"]["min_class"], "important", "{v}");
    assert_eq!(v["channels"][0]["channel_id"], "quiet", "{v}");
    let st = status(&s)?;
    assert_eq!(st["drops"]["disabled"], 2, "{st}");
    // Settings survive a restart (stored durably).
    let mut s = s;
    s.daemon.stop()?;
    s.daemon.start()?;
    ensure!(ctl_ok(&s, &["settings", APP])?.contains("min_class=important"));
    ensure!(
        !s.daemon
            .ctl(&["settings", APP, "colour=red"])?
            .status
            .success(),
        "an unknown key must be refused"
    );
    Ok(())
}

#[test]
fn forced_logout_reaches_the_app_and_the_token_is_dead() -> Result<()> {
    let s = stack("")?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, None, None)?;
    // A message first, so the listener is surely subscribed before the revocation.
    sent(&s, json!({"token": token, "title": "before"}))?;
    assert_eq!(listen.next(BOUND)?["title"], "before");
    let r = s.app.request(
        "DELETE",
        &format!("/v1/tokens/{token}"),
        Some(&json!({"reason": "logged in elsewhere"})),
    )?;
    ensure!(r.status == 200, "revoke: {} {}", r.status, r.body);
    let ev = listen.next(BOUND)?;
    assert_eq!(ev["event"], "token_revoked", "{ev}");
    assert_eq!(ev["reason"], "logged in elsewhere");
    let r = send(&s, json!({"token": token, "title": "after"}))?;
    assert_eq!(r.status, 404, "{}", r.body);
    let st = s.app.request("GET", &format!("/v1/tokens/{token}"), None)?;
    assert_eq!(st.body["state"], "revoked", "{}", st.body);
    // Registering again issues a new token that works.
    let token2 = s.daemon.register(APP)?;
    ensure!(token2 != token, "re-register returned the revoked token");
    sent(&s, json!({"token": token2, "title": "new session"}))?;
    assert_eq!(listen.next(BOUND)?["title"], "new session");
    Ok(())
}

#[test]
fn logout_and_reregister_issue_a_new_token() -> Result<()> {
    let s = stack("")?;
    let token = s.daemon.register(APP)?;
    ctl_ok(&s, &["unregister", APP])?;
    assert_eq!(send(&s, json!({"token": token, "title": "x"}))?.status, 404);
    let token2 = s.daemon.register(APP)?;
    ensure!(token2 != token, "same token after logout");
    Ok(())
}

#[test]
fn revocation_while_offline_is_told_at_reconnect_and_hello() -> Result<()> {
    let mut s = stack("")?;
    let token = s.daemon.register(APP)?;
    s.daemon.stop()?;
    let r = s
        .app
        .request("DELETE", &format!("/v1/tokens/{token}"), None)?;
    ensure!(r.status == 200, "revoke: {} {}", r.status, r.body);
    s.daemon.start()?;
    // The app connects after the daemon learnt it (or before: then live).
    let listen = s.daemon.listen(APP, None, None)?;
    let ev = listen.next(BOUND)?;
    assert_eq!(ev["event"], "token_revoked", "{ev}");
    until(&s, "token dropped", |v| {
        v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|a| a["registered"] == false)
    })?;
    Ok(())
}

#[test]
fn collapse_key_replaces_pending_message_in_the_daemon_store() -> Result<()> {
    let s = stack("")?;
    let token = s.daemon.register(APP)?;
    // No app connected: the first message waits in the daemon's store.
    sent(
        &s,
        json!({"token": token, "title": "3 new messages", "collapse_key": "unread"}),
    )?;
    until(&s, "first message stored", |v| {
        v["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["pending"] == 1)
    })?;
    let newer = sent(
        &s,
        json!({"token": token, "title": "4 new messages", "collapse_key": "unread"}),
    )?;
    until(&s, "collapsed", |v| v["drops"]["collapsed"] == 1)?;
    assert_eq!(pending(&s)?, 1);
    let listen = s.daemon.listen(APP, Some(1), None)?;
    let n = listen.next(BOUND)?;
    assert_eq!(n["message_id"], newer.as_str());
    assert_eq!(n["title"], "4 new messages");
    listen.finish()?;
    assert_eq!(pending(&s)?, 0);
    Ok(())
}

#[test]
fn gateway_rules_quota_class_ttl_and_token_status() -> Result<()> {
    let mut s = stack("operational_daily_quota = 2")?;
    let token = s.daemon.register(APP)?;
    let st = s.app.request("GET", &format!("/v1/tokens/{token}"), None)?;
    assert_eq!(st.status, 200, "{}", st.body);
    assert_eq!(st.body["state"], "registered");
    assert_eq!(st.body["device_online"], true, "{}", st.body);
    assert_eq!(st.body["quota_left_today"], 2);
    ensure!(st.body["last_seen_ms"].as_u64().is_some(), "{}", st.body);

    sent(&s, json!({"token": token, "title": "1"}))?;
    sent(&s, json!({"token": token, "title": "2"}))?;
    let r = send(&s, json!({"token": token, "title": "3"}))?;
    assert_eq!(r.status, 429, "{}", r.body);
    ensure!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("quota")),
        "{}",
        r.body
    );
    // Important is not counted against the quota.
    sent(
        &s,
        json!({"token": token, "title": "4", "class": "important"}),
    )?;
    let r = send(&s, json!({"token": token, "ttl": 2_419_201}))?;
    assert_eq!(r.status, 400, "ttl over 28 days: {}", r.body);
    sent(
        &s,
        json!({"token": token, "title": "max ttl", "class": "important", "ttl": 2_419_200}),
    )?;

    // ttl 0 to an offline device: dropped, counted as expired.
    s.daemon.stop()?;
    let r = send(
        &s,
        json!({"token": token, "title": "now or never", "ttl": 0, "class": "important"}),
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    ensure!(
        r.body["dropped"].is_string(),
        "ttl 0 offline must be dropped: {}",
        r.body
    );
    sent(
        &s,
        json!({"token": token, "title": "queued", "class": "important"}),
    )?;
    let st = s.app.request("GET", &format!("/v1/tokens/{token}"), None)?;
    assert_eq!(st.body["device_online"], false, "{}", st.body);
    // "queued" at least (an earlier one may not have been acked before the stop).
    ensure!(st.body["pending"].as_u64() >= Some(1), "{}", st.body);
    assert_eq!(st.body["quota_left_today"], 0, "{}", st.body);
    assert_eq!(st.body["drops"]["quota"], 1, "{}", st.body);
    assert_eq!(st.body["drops"]["expired"], 1, "{}", st.body);

    // A class the app was not granted: 403.
    s.daemon.start()?;
    let dir = shared_tempdir()?;
    let mut gw2 = Gateway::new(&dir.path().join("gw2"))?;
    let key = gw2.add_app("com.example.plain", &[])?;
    gw2.start()?;
    let r = gw2
        .app_server(&key)?
        .send(&json!({"token": "whatever", "class": "system"}))?;
    assert_eq!(r.status, 403, "{}", r.body);
    Ok(())
}

#[test]
fn doctor_passes_healthy_and_fails_without_gateway() -> Result<()> {
    let mut s = stack("")?;
    s.daemon.register(APP)?;
    let out = s.daemon.ctl(&["doctor"])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "doctor failed on a healthy stack:\n{text}"
    );
    ensure!(
        text.contains("PASS connected") && text.contains("token valid at the gateway"),
        "{text}"
    );
    s.gateway.stop()?;
    let start = Instant::now();
    loop {
        let out = s.daemon.ctl(&["doctor"])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            ensure!(
                text.contains("FAIL connected") && text.contains("hint:"),
                "{text}"
            );
            return Ok(());
        }
        ensure!(
            start.elapsed() < BOUND,
            "doctor still passes with the gateway stopped:\n{text}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn syspushctl_test_reports_arrival_and_latency() -> Result<()> {
    let s = stack("")?;
    s.daemon.register(APP)?;
    let out = ctl_ok(&s, &["test", APP])?;
    ensure!(out.contains("arrived in") && out.contains(" ms"), "{out}");
    // Acked by the command: nothing left pending.
    assert_eq!(pending(&s)?, 0);
    Ok(())
}

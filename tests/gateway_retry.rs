//! A send retried with the same `Idempotency-Key` after the gateway was
//! SIGKILLed between committing the message and answering it: the retry gets
//! the first message id and the app gets the message once (issue 11, item 3).
//!
//! The kill point is made exact by the gateway's test fault hook
//! (`SYSPUSH_GATEWAY_FAULT=stall_before_answer`: a keyed send is committed and
//! its device poked, then never answered): the app receiving the message is
//! the signal that the commit happened, the still-open request that the answer
//! did not, and the test SIGKILLs the gateway then. It restarts on the same
//! data dir and port without the hook, as `tests/faults/kill.rs` does.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use syspush::testkit::{Lines, READY_BOUND, Stack, bin};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

const APP: &str = "com.example.chat";
const BOUND: Duration = Duration::from_secs(60);

/// An HTTPS client trusting the gateway's CA; statuses are not errors.
fn agent(ca: &Path) -> Result<ureq::Agent> {
    let pem = std::fs::read(ca)?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(certs)))
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into())
}

/// `POST /v1/messages` with an `Idempotency-Key`: (status, JSON body).
fn send_keyed(
    agent: &ureq::Agent,
    base: &str,
    app_key: &str,
    key: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let mut resp = agent
        .post(format!("{base}/v1/messages"))
        .header("Authorization", format!("Bearer {app_key}"))
        .header("Idempotency-Key", key)
        .send_json(body)?;
    let text = resp.body_mut().read_to_string()?;
    Ok((resp.status().as_u16(), serde_json::from_str(&text)?))
}

#[test]
fn a_send_retried_after_a_sigkill_between_commit_and_answer_arrives_once() -> Result<()> {
    let mut s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, None, None)?;
    let (base, app_key) = (s.gateway.url(), s.app_key.clone());
    let agent = agent(&s.gateway.ca)?;

    // The same gateway (config, data dir, port), with the fault hook armed.
    s.gateway.stop()?;
    let mut faulty = Lines::spawn(
        Command::new(bin("syspush-gateway"))
            .args(["serve", "--config"])
            .arg(s.gateway.config())
            .env("SYSPUSH_GATEWAY_FAULT", "stall_before_answer"),
    )?;
    let ready = faulty.lines.recv_timeout(READY_BOUND)?;
    ensure!(ready.starts_with("listening on"), "gateway said {ready:?}");

    let body = json!({"token": token, "title": "once", "desc": "pay 42"});
    let first = {
        let (agent, base, app_key, body) =
            (agent.clone(), base.clone(), app_key.clone(), body.clone());
        std::thread::spawn(move || send_keyed(&agent, &base, &app_key, "order-7", &body))
    };
    // Committed (the app has it), not answered (the request is still open).
    let got = listen.next(BOUND).context("the first attempt")?;
    ensure!(got["title"] == "once", "got {got}");
    ensure!(!first.is_finished(), "the first attempt was answered");
    faulty.child.kill()?;
    let (_, log) = faulty.finish()?;
    ensure!(log.contains("fault hook"), "the hook did not fire:\n{log}");
    let first = first.join().expect("sender thread");
    ensure!(first.is_err(), "the killed gateway answered: {first:?}");

    // The app server retries with the same key: same id, nothing new.
    s.gateway.start()?;
    let (status, retry) = send_keyed(&agent, &base, &app_key, "order-7", &body)?;
    ensure!(status == 200, "retry: {status} {retry}");
    ensure!(
        retry["message_id"] == got["message_id"],
        "retry answered {retry}, the app got {}",
        got["message_id"]
    );
    // The key with another request is refused.
    let other = json!({"token": token, "title": "once", "desc": "pay 43"});
    let (status, resp) = send_keyed(&agent, &base, &app_key, "order-7", &other)?;
    ensure!(status == 422, "reuse: {status} {resp}");
    // Delivery is in order: the next thing the app gets is the sentinel.
    s.push(&token, "end")?;
    let next = listen.next(BOUND).context("the sentinel")?;
    ensure!(next["title"] == "end", "a second copy arrived: {next}");
    Ok(())
}

//! Tests through a NAT that forgets idle mappings silently, like a carrier's
//! (`syspush::netns::NatLab`): the gateway runs in one network namespace, the
//! daemon in another, a masquerading router with a short conntrack timeout
//! between them. Needs root, `ip` and `nft`; prints "skipped: ..." otherwise.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use syspush::netns::NatLab;
use syspush::testkit::{AppPolicy, Daemon, Gateway, shared_tempdir};

const APP: &str = "com.example.chat";
const BOUND: Duration = Duration::from_secs(60);

fn status(d: &Daemon) -> Result<serde_json::Value> {
    let out = d.ctl(&["status", "--json"])?;
    ensure!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn a_silently_expired_nat_mapping_is_detected_and_redialled_without_loss() -> Result<()> {
    if let Some(why) = syspush::netns::unavailable() {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    // Mappings die after 4 s of silence; the daemon's heartbeat is 10 s, so the
    // first heartbeat after a quiet spell meets a NAT that has forgotten it.
    let nat_timeout = 4;
    let lab = NatLab::new(nat_timeout)?;
    let dir = shared_tempdir()?;
    let mut gw = Gateway::new_at(&dir.path().join("gateway"), lab.gateway_ip(), Some(&lab.gateway))?;
    let key = gw.add_app(APP, &[])?;
    // Let the daemon's short test heartbeat through the gateway's bounds.
    gw.extra_config = "heartbeat_min_s = 1".into();
    gw.start()?;
    let me = nix::unistd::getuid().as_raw();
    let apps = [AppPolicy { id: APP.into(), uids: vec![me] }];
    let mut daemon = Daemon::new(&dir.path().join("daemon"), &gw, &apps, "heartbeat_s = 10\npong_timeout_s = 2")?;
    daemon.netns = Some(lab.device.clone());
    daemon.start()?;
    let token = daemon.register(APP)?;

    // The app server reaches the gateway from the gateway's own namespace.
    let send = |title: &str| -> Result<String> {
        let body = serde_json::json!({"token": token, "title": title, "desc": "through the NAT"}).to_string();
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.gateway, "curl", "-sS", "--cacert"])
            .arg(&gw.ca)
            .args(["-H", &format!("Authorization: Bearer {key}"), "-H", "Content-Type: application/json", "-d", &body])
            .arg(format!("{}/v1/messages", gw.url()))
            .output()?;
        ensure!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["message_id"].as_str().unwrap_or_default().to_string())
    };
    let listen = daemon.listen(APP, Some(2), None)?;
    let first = send("first")?;
    assert_eq!(listen.next(BOUND)?["message_id"], first.as_str());
    let before = status(&daemon)?["reconnects"].as_u64().unwrap_or(0);

    // Stay quiet past the NAT timeout: the mapping is gone, nobody was told.
    // (This wait is the scenario under test, not a wait for readiness.)
    std::thread::sleep(Duration::from_secs(u64::from(nat_timeout) + 2));
    let sent_at = Instant::now();
    let second = send("after the mapping expired")?;
    assert_eq!(listen.next(BOUND)?["message_id"], second.as_str());
    let took = sent_at.elapsed();
    let after = status(&daemon)?["reconnects"].as_u64().unwrap_or(0);
    ensure!(after > before, "the daemon never redialled (reconnects {before} -> {after}); log:\n{}", daemon.log());
    // The old mapping could not carry it: it came over the redialled link.
    ensure!(took > Duration::from_secs(1), "delivered in {took:?}: the NAT did not drop the stale mapping");
    eprintln!("redelivered over a new mapping {took:?} after the send");
    Ok(())
}

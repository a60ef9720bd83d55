//! Tests through a NAT that forgets idle mappings silently, like a carrier's
//! (`syspush::netns::NatLab`): the gateway runs in one network namespace, the
//! daemon in another, a masquerading router with a short conntrack timeout
//! between them. Needs root, `ip` and `nft`; prints "skipped: ..." otherwise
//! (fails under `CI=true`: see `syspush::testkit::skip`).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use syspush::netns::NatLab;
use syspush::testkit::{AppPolicy, Daemon, Gateway, shared_tempdir, skip};

const APP: &str = "com.example.chat";
const BOUND: Duration = Duration::from_secs(60);

fn status(d: &Daemon) -> Result<serde_json::Value> {
    let out = d.ctl(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn a_silently_expired_nat_mapping_is_detected_and_redialled_without_loss() -> Result<()> {
    if let Some(why) = syspush::netns::unavailable() {
        skip(&why);
        return Ok(());
    }
    // Mappings die after 4 s of silence; the daemon's heartbeat is 10 s, so the
    // first heartbeat after a quiet spell meets a NAT that has forgotten it.
    let nat_timeout = 4;
    let lab = NatLab::new(nat_timeout)?;
    let st = LabStack::new(
        &lab,
        "heartbeat_s = 10\nheartbeat_min_s = 10\nheartbeat_max_s = 10\npong_timeout_s = 2",
    )?;
    let daemon = &st.daemon;
    let send = |title: &str| st.send(&lab, title, "normal");
    let listen = daemon.listen(APP, Some(2), None)?;
    let first = send("first")?;
    assert_eq!(listen.next(BOUND)?["message_id"], first.as_str());
    let before = status(daemon)?["reconnects"].as_u64().unwrap_or(0);

    // Stay quiet past the NAT timeout: the mapping is gone, nobody was told.
    // (This wait is the scenario under test, not a wait for readiness.)
    std::thread::sleep(Duration::from_secs(u64::from(nat_timeout) + 2));
    let sent_at = Instant::now();
    let second = send("after the mapping expired")?;
    assert_eq!(listen.next(BOUND)?["message_id"], second.as_str());
    let took = sent_at.elapsed();
    let after = status(daemon)?["reconnects"].as_u64().unwrap_or(0);
    ensure!(
        after > before,
        "the daemon never redialled (reconnects {before} -> {after}); log:\n{}",
        daemon.log()
    );
    // The old mapping could not carry it: it came over the redialled link.
    ensure!(
        took > Duration::from_secs(1),
        "delivered in {took:?}: the NAT did not drop the stale mapping"
    );
    eprintln!("redelivered over a new mapping {took:?} after the send");
    Ok(())
}

/// A gateway in the lab's gateway namespace and a daemon in its device
/// namespace, with `daemon_extra` config lines; the app registered.
struct LabStack {
    daemon: Daemon,
    gw: Gateway,
    key: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl LabStack {
    fn new(lab: &NatLab, daemon_extra: &str) -> Result<Self> {
        let dir = shared_tempdir()?;
        let mut gw = Gateway::new_at(
            &dir.path().join("gateway"),
            lab.gateway_ip(),
            Some(&lab.gateway),
        )?;
        let key = gw.add_app(APP, &[])?;
        gw.extra_config = "heartbeat_min_s = 1".into();
        gw.start()?;
        let me = nix::unistd::getuid().as_raw();
        let apps = [AppPolicy {
            id: APP.into(),
            uids: vec![me],
        }];
        let mut daemon = Daemon::new(&dir.path().join("daemon"), &gw, &apps, daemon_extra)?;
        daemon.netns = Some(lab.device.clone());
        daemon.start()?;
        let token = daemon.register(APP)?;
        Ok(Self {
            daemon,
            gw,
            key,
            token,
            _dir: dir,
        })
    }

    /// Sends a push from inside the gateway's namespace (curl), returns its id.
    fn send(&self, lab: &NatLab, title: &str, priority: &str) -> Result<String> {
        let body = serde_json::json!({"token": self.token, "title": title, "desc": "d", "priority": priority}).to_string();
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.gateway, "curl", "-sS", "--cacert"])
            .arg(&self.gw.ca)
            .args([
                "-H",
                &format!("Authorization: Bearer {}", self.key),
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
            ])
            .arg(format!("{}/v1/messages", self.gw.url()))
            .output()?;
        ensure!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["message_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("send: {v}"))
    }
}

#[test]
fn the_heartbeat_learns_the_nat_timeout_and_then_never_loses_the_link() -> Result<()> {
    if let Some(why) = syspush::netns::unavailable() {
        skip(&why);
        return Ok(());
    }
    // T = 20 s, the policy's bounds scaled to match (start at 6 s, 3..60 s).
    let t = 20.0;
    let lab = NatLab::new(20)?;
    let s = LabStack::new(
        &lab,
        "heartbeat_s = 6\nheartbeat_min_s = 3\nheartbeat_max_s = 60\npong_timeout_s = 2",
    )?;
    let started = Instant::now();
    // Learning takes real idle time (each probe is one interval of silence), so
    // the state is sampled while it happens; the bound is a failure bound.
    let stable = loop {
        let st = status(&s.daemon)?;
        if st["heartbeat_state"] == "stable" {
            break st;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(480),
            "not stable after 480 s: {st}\n{}",
            s.daemon.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let learned = stable["heartbeat_interval_s"].as_f64().unwrap_or(0.0);
    let failures = stable["reconnects"].as_u64().unwrap_or(0);
    eprintln!(
        "learned {learned} s (T = {t} s) in {:?} with {failures} failed probes",
        started.elapsed()
    );
    ensure!(
        learned >= 0.75 * t && learned <= t,
        "learned {learned} s, want within [{}, {t}]",
        0.75 * t
    );
    ensure!(failures <= 4, "{failures} failed probes to learn");
    // After that the link is never lost: three more heartbeats, no redial.
    std::thread::sleep(Duration::from_secs_f64(3.0 * learned + 3.0));
    let later = status(&s.daemon)?;
    assert_eq!(
        later["reconnects"], stable["reconnects"],
        "the link was lost after learning: {later}"
    );
    assert_eq!(later["connected"], true);
    Ok(())
}

#[test]
fn link_down_and_up_reconnects_within_a_second_of_the_link_coming_back() -> Result<()> {
    if let Some(why) = syspush::netns::unavailable() {
        skip(&why);
        return Ok(());
    }
    let lab = NatLab::new(600)?;
    let s = LabStack::new(&lab, "heartbeat_s = 300\npong_timeout_s = 5")?;
    let listen = s.daemon.listen(APP, Some(2), None)?;
    let first = s.send(&lab, "before", "normal")?;
    assert_eq!(listen.next(BOUND)?["message_id"], first.as_str());
    lab.device_link_down()?;
    // Down long enough that a daemon without network awareness would be stuck
    // behind TCP retransmission backoff on its old connection.
    std::thread::sleep(Duration::from_secs(5));
    let id = s.send(&lab, "sent while the device was offline", "normal")?;
    lab.device_link_up()?;
    let up = Instant::now();
    assert_eq!(listen.next(BOUND)?["message_id"], id.as_str());
    let took = up.elapsed();
    eprintln!("delivered {took:?} after the link came back");
    ensure!(
        took < Duration::from_secs(1),
        "took {took:?} after the link came back; log:\n{}",
        s.daemon.log()
    );
    Ok(())
}

#[test]
fn while_idle_normal_priority_waits_for_the_heartbeat_and_high_goes_at_once() -> Result<()> {
    if let Some(why) = syspush::netns::unavailable() {
        skip(&why);
        return Ok(());
    }
    let lab = NatLab::new(600)?;
    // A fixed 8 s heartbeat (min = max) so its timing is known.
    let hb = 8.0;
    let s = LabStack::new(
        &lab,
        "heartbeat_s = 8\nheartbeat_min_s = 8\nheartbeat_max_s = 8",
    )?;
    let out = s.daemon.ctl(&["idle", "on"])?;
    ensure!(
        out.status.success(),
        "idle on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listen = s.daemon.listen(APP, Some(3), None)?;
    // The first normal message rides the next heartbeat, whenever that is...
    let n1 = s.send(&lab, "normal 1", "normal")?;
    assert_eq!(listen.next(BOUND)?["message_id"], n1.as_str());
    // ...so a heartbeat has just happened: the next is `hb` away, and a normal
    // message sent now must wait for it.
    let sent = Instant::now();
    let n2 = s.send(&lab, "normal 2", "normal")?;
    assert_eq!(listen.next(BOUND)?["message_id"], n2.as_str());
    let held = sent.elapsed().as_secs_f64();
    ensure!(
        held > hb - 3.0 && held < hb + 3.0,
        "normal message took {held:.2} s while idle; heartbeat {hb} s"
    );
    // A heartbeat has just happened again: a high-priority message goes at once.
    let sent = Instant::now();
    let h = s.send(&lab, "high", "high")?;
    assert_eq!(listen.next(BOUND)?["message_id"], h.as_str());
    let took = sent.elapsed().as_secs_f64();
    ensure!(
        took < 1.0,
        "high-priority message took {took:.2} s while idle"
    );
    eprintln!("idle: normal held {held:.2} s (heartbeat {hb} s), high delivered in {took:.3} s");
    Ok(())
}

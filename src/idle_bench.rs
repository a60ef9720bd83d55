//! Idle-cost benchmark through a NAT with a silent idle timeout
//! (`syspush::netns::NatLab`, default T = 60 s):
//! `cargo build --release --workspace && sudo target/release/syspush-idle-bench`.
//!
//! It lets syspushd learn the NAT's timeout (until its heartbeat state is
//! stable), then measures an idle window, and prints per hour: heartbeats
//! (data segments the client sent), process wake-ups (voluntary + involuntary
//! context switches from /proc/PID/status), and bytes on the wire both ways
//! (nftables counters in the device's namespace) — beside the same figures for
//! `mosquitto_sub` with its default keepalive, run in the same lab over the
//! same window against a `mosquitto` broker in the gateway's namespace.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use syspush::netns::NatLab;
use syspush::testkit::{AppPolicy, Daemon, Gateway, proc_status};

/// Idle cost of syspushd vs mosquitto_sub through a NAT.
#[derive(Parser)]
struct Args {
    /// NAT idle timeout T, seconds.
    #[arg(long, default_value_t = 60)]
    nat_timeout: u32,
    /// Length of the measured idle window, seconds.
    #[arg(long, default_value_t = 600)]
    window: u64,
    /// Give up learning after this many seconds.
    #[arg(long, default_value_t = 1800)]
    learn_bound: u64,
}

fn ctx_switches(pid: u32) -> u64 {
    ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
        .into_iter()
        .filter_map(|f| proc_status(pid, f))
        .sum()
}

/// nftables counters in the device namespace: per server port, packets with
/// data sent (PSH), bytes sent and bytes received.
fn install_meter(ns: &str, ports: &[u16]) -> Result<()> {
    let mut rules = String::from(
        "table inet spmeter {\n chain outbound {\n  type filter hook output priority filter; policy accept;\n",
    );
    for p in ports {
        rules.push_str(&format!(
            "  tcp dport {p} tcp flags & psh == psh counter comment \"psh {p}\"\n"
        ));
        rules.push_str(&format!("  tcp dport {p} counter comment \"out {p}\"\n"));
    }
    rules.push_str(
        " }\n chain inbound {\n  type filter hook input priority filter; policy accept;\n",
    );
    for p in ports {
        rules.push_str(&format!("  tcp sport {p} counter comment \"in {p}\"\n"));
    }
    rules.push_str(" }\n}\n");
    let f = tempfile::NamedTempFile::new()?;
    std::fs::write(f.path(), rules)?;
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f"])
        .arg(f.path())
        .status()?;
    if !st.success() {
        bail!("nft meter rules failed");
    }
    Ok(())
}

/// (packets, bytes) of the counter with `comment` in the device namespace.
fn counter(ns: &str, comment: &str) -> Result<(u64, u64)> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "spmeter",
        ])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for item in v["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        if rule["comment"] == comment {
            for e in rule["expr"].as_array().into_iter().flatten() {
                if let Some(c) = e.get("counter") {
                    return Ok((
                        c["packets"].as_u64().unwrap_or(0),
                        c["bytes"].as_u64().unwrap_or(0),
                    ));
                }
            }
        }
    }
    bail!("no counter {comment:?}")
}

struct Snapshot {
    heartbeats: u64,
    wakeups: u64,
    bytes: u64,
}

fn snapshot(ns: &str, port: u16, pid: u32) -> Result<Snapshot> {
    let (heartbeats, _) = counter(ns, &format!("psh {port}"))?;
    let (_, out) = counter(ns, &format!("out {port}"))?;
    let (_, inb) = counter(ns, &format!("in {port}"))?;
    Ok(Snapshot {
        heartbeats,
        wakeups: ctx_switches(pid),
        bytes: out + inb,
    })
}

fn status(d: &Daemon) -> Result<serde_json::Value> {
    let out = d.ctl(&["status", "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(clippy::print_stdout)]
fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(why) = syspush::netns::unavailable() {
        bail!("the idle bench {why}");
    }
    let lab = NatLab::new(args.nat_timeout)?;
    let dir = tempfile::tempdir()?;
    let mut gw = Gateway::new_at(
        &dir.path().join("gateway"),
        lab.gateway_ip(),
        Some(&lab.gateway),
    )?;
    gw.add_app("bench.app", &[])?;
    gw.extra_config = "heartbeat_min_s = 10".into();
    gw.start()?;
    let gw_port: u16 = gw.url().rsplit(':').next().unwrap_or_default().parse()?;
    let me = nix::unistd::getuid().as_raw();
    // Start below T so learning has something to find from below; the policy's
    // defaults (growth, bisection, precision) are the product's.
    let mut daemon = Daemon::new(
        &dir.path().join("daemon"),
        &gw,
        &[AppPolicy {
            id: "bench.app".into(),
            uids: vec![me],
        }],
        "heartbeat_s = 30\nheartbeat_min_s = 15\n",
    )?;
    daemon.netns = Some(lab.device.clone());
    daemon.start()?;
    daemon.register("bench.app")?;
    let pid = daemon.pid().context("daemon pid")?;

    // mosquitto broker in the gateway's namespace, mosquitto_sub on the device.
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        "listener 1883 10.231.2.2\nallow_anonymous true\npersistence false\n",
    )?;
    let _broker = Killer(
        Command::new("ip")
            .args(["netns", "exec", &lab.gateway, "mosquitto", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto (Debian package mosquitto)")?,
    );
    install_meter(&lab.device, &[gw_port, 1883])?;

    println!("NAT idle timeout T = {} s; learning...", args.nat_timeout);
    let t0 = Instant::now();
    loop {
        let s = status(&daemon)?;
        if s["heartbeat_state"] == "stable" {
            println!(
                "learned heartbeat {} s after {:.0} s ({} reconnects)",
                s["heartbeat_interval_s"],
                t0.elapsed().as_secs_f64(),
                s["reconnects"]
            );
            break;
        }
        if t0.elapsed() > Duration::from_secs(args.learn_bound) {
            bail!("not stable after {} s: {s}", args.learn_bound);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    // The broker listens once its process runs; the client retries on its own.
    let sub = Killer(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.device,
                "mosquitto_sub",
                "-h",
                "10.231.2.2",
                "-t",
                "bench/#",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mosquitto_sub (Debian package mosquitto-clients)")?,
    );
    let sub_pid = sub.0.id();
    // Let the subscriber connect before the window opens.
    std::thread::sleep(Duration::from_secs(5));
    let reconnects_before = status(&daemon)?["reconnects"].as_u64().unwrap_or(0);
    let (d0, m0) = (
        snapshot(&lab.device, gw_port, pid)?,
        snapshot(&lab.device, 1883, sub_pid)?,
    );
    println!("measuring an idle window of {} s...", args.window);
    std::thread::sleep(Duration::from_secs(args.window));
    let (d1, m1) = (
        snapshot(&lab.device, gw_port, pid)?,
        snapshot(&lab.device, 1883, sub_pid)?,
    );
    let s = status(&daemon)?;
    let per_h = |a: u64, b: u64| (b - a) as f64 * 3600.0 / args.window as f64;
    println!(
        "\nper hour, idle, through a NAT with T = {} s (window {} s):",
        args.nat_timeout, args.window
    );
    println!(
        "{:<24} {:>12} {:>12} {:>14}",
        "", "heartbeats", "wake-ups", "bytes on wire"
    );
    println!(
        "{:<24} {:>12.1} {:>12.1} {:>14.0}",
        format!("syspushd ({} s)", s["heartbeat_interval_s"]),
        per_h(d0.heartbeats, d1.heartbeats),
        per_h(d0.wakeups, d1.wakeups),
        per_h(d0.bytes, d1.bytes)
    );
    println!(
        "{:<24} {:>12.1} {:>12.1} {:>14.0}",
        "mosquitto_sub (60 s)",
        per_h(m0.heartbeats, m1.heartbeats),
        per_h(m0.wakeups, m1.wakeups),
        per_h(m0.bytes, m1.bytes)
    );
    let lost = s["reconnects"].as_u64().unwrap_or(0) - reconnects_before;
    println!(
        "syspushd link lost during the window: {lost} times; learned: {}",
        s["learned"]
    );
    Ok(())
}

//! Latency benchmark: `cargo build --release --workspace && target/release/syspush-bench`.
//!
//! Runs the real gateway and daemon binaries (next to this one), sends N pushes
//! one after another through the whole path (HTTP POST -> gateway -> TLS
//! WebSocket -> daemon commit -> Unix socket -> app, using the client library),
//! and prints p50/p90/p99/max latency from just before the HTTP request to the
//! app receiving it, plus the daemon's RSS (now and peak).
//!
//! Then the drain: `--drain N` messages are stored while no app listens, and
//! the backlog is drained twice, timed: by `syspushctl listen --count N`
//! (prints each line, acks in batches) and by the `Listener` API
//! (`handled` + batched acks). Figures: messages per second.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use syspush::testkit::{Stack, proc_status_kib};
use syspush_client::{Event, Listener};

/// Push latency through the real path.
#[derive(Parser)]
struct Args {
    /// Pushes to send, one after another.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Backlog drained after the latency run (0: skip the drain).
    #[arg(long, default_value_t = 10_000)]
    drain: usize,
}

/// Messages waiting in the daemon for `app`.
async fn pending(socket: &std::path::Path, app: &str) -> Result<u64> {
    let status = syspush_client::Client::connect(socket)
        .await?
        .status()
        .await?;
    Ok(status
        .apps
        .iter()
        .find(|a| a.app_id == app)
        .map_or(0, |a| a.pending))
}

/// Sends `n` pushes and waits until the daemon holds all of them.
fn backlog(
    s: &Stack,
    rt: &tokio::runtime::Runtime,
    token: &str,
    app: &str,
    n: usize,
) -> Result<()> {
    for i in 0..n {
        let r = s
            .app
            .send(&json!({"token": token, "title": format!("drain {i}"), "desc": "backlog"}))?;
        if r.status != 200 {
            bail!("send {i}: {} {}", r.status, r.body);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt.block_on(pending(&s.daemon.socket, app))? < n as u64 {
        if Instant::now() > deadline {
            bail!("the daemon did not store the backlog in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let field = |name: &str| proc_status_kib(pid, name).unwrap_or(0);
    (field("VmRSS"), field("VmHWM"))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[allow(clippy::print_stdout)]
fn main() -> Result<()> {
    let args = Args::parse();
    let app = "bench.app";
    let s = Stack::new(app, &[])?;
    let token = s.daemon.register(app)?;
    let pid = s.daemon.pid().context("daemon pid")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut listener = rt.block_on(Listener::connect(&s.daemon.socket, app))?;
    let (rss_idle, _) = rss_kib(pid);

    let mut lat = Vec::with_capacity(args.count);
    for i in 0..args.count {
        let t0 = Instant::now();
        let r = s
            .app
            .send(&json!({"token": token, "title": format!("bench {i}"), "desc": "latency"}))?;
        if r.status != 200 {
            bail!("send {i}: {} {}", r.status, r.body);
        }
        let want = r.body["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        loop {
            let ev = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), listener.next()).await
            })??;
            if let Event::Notification(d) = ev {
                let id = d.notification.map(|n| n.message_id).unwrap_or_default();
                rt.block_on(listener.ack(std::slice::from_ref(&id)))?;
                if id == want {
                    lat.push(t0.elapsed());
                    break;
                }
            }
        }
    }
    let (rss, hwm) = rss_kib(pid);
    lat.sort();
    println!(
        "pushes: {} sent one after another through the real path",
        lat.len()
    );
    println!(
        "latency ms (HTTP send -> app receives): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        pct(&lat, 0.50),
        pct(&lat, 0.90),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!("syspushd RSS: idle {rss_idle} KiB, after {rss} KiB, peak {hwm} KiB");
    drop(listener);

    if args.drain > 0 {
        let n = args.drain;
        backlog(&s, &rt, &token, app, n)?;
        let t0 = Instant::now();
        let out = s.daemon.ctl(&["listen", app, "--count", &n.to_string()])?;
        let secs = t0.elapsed().as_secs_f64();
        if !out.status.success() || out.stdout.iter().filter(|b| **b == b'\n').count() != n {
            bail!(
                "syspushctl listen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!(
            "drain of {n} through `syspushctl listen`: {:.0} msg/s ({secs:.2} s)",
            n as f64 / secs
        );
        backlog(&s, &rt, &token, app, n)?;
        let t0 = Instant::now();
        rt.block_on(async {
            let mut l = Listener::connect(&s.daemon.socket, app).await?;
            let mut got = 0;
            while got < n {
                if let Event::Notification(d) =
                    tokio::time::timeout(Duration::from_secs(30), l.next()).await??
                {
                    l.handled(d.notification.map(|n| n.message_id).unwrap_or_default());
                    got += 1;
                }
            }
            l.flush_acks().await?;
            anyhow::Ok(())
        })?;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "drain of {n} through the Listener API: {:.0} msg/s ({secs:.2} s)",
            n as f64 / secs
        );
        let left = rt.block_on(pending(&s.daemon.socket, app))?;
        if left != 0 {
            bail!("{left} messages still pending after the drains");
        }
    }
    Ok(())
}

//! Latency benchmark: `cargo build --release --workspace && target/release/syspush-bench`.
//!
//! Runs the real gateway and daemon binaries (next to this one), sends N pushes
//! one after another through the whole path (HTTP POST -> gateway -> TLS
//! WebSocket -> daemon commit -> Unix socket -> app, using the client library),
//! and prints p50/p90/p99/max latency from just before the HTTP request to the
//! app receiving it, plus the daemon's RSS (now and peak).

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
    Ok(())
}

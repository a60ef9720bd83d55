//! Faults on the path to the gateway: the gateway SIGKILLed mid-stream, and
//! the device's link cut and restored (namespace NAT lab).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use syspush::netns::NatLab;

use super::*;

/// What the sender reports: (message id, title) per accepted send, and the
/// titles it had to send again.
type Sent = (Vec<(String, String)>, HashSet<String>);

/// What the sender and the killer share: sends answered so far, and how many
/// times the gateway was restarted (a sender whose send got no answer waits
/// for the next restart instead of spinning).
#[derive(Default)]
struct Progress {
    state: Mutex<(usize, u64)>,
    changed: Condvar,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut (usize, u64))) {
        f(&mut self.state.lock().expect("progress"));
        self.changed.notify_all();
    }

    fn wait(&self, what: &str, until: impl Fn(&(usize, u64)) -> bool) -> Result<()> {
        let guard = self.state.lock().expect("progress");
        let (guard, timeout) = self
            .changed
            .wait_timeout_while(guard, BOUND, |s| !until(s))
            .expect("progress");
        drop(guard);
        ensure!(!timeout.timed_out(), "{what}: not within {BOUND:?}");
        Ok(())
    }
}

#[test]
fn sigkill_of_the_gateway_10_times_during_a_stream_loses_nothing() -> Result<()> {
    const N: usize = 5_000;
    let mut rng = FaultRng::from_env("gateway sigkill");
    let kills = rng.points(10, 1, N);
    let mut s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, None, None)?;
    let progress = Arc::new(Progress::default());
    let mut gateway =
        std::mem::replace(&mut s.gateway, Gateway::new(&s.dir.path().join("unused"))?);
    let killer = {
        let (progress, kills) = (progress.clone(), kills.clone());
        std::thread::spawn(move || -> Result<Gateway> {
            for k in kills {
                progress.wait("sender progress", |s| s.0 >= k)?;
                // Sends keep coming meanwhile: some get no answer, some of
                // those were accepted first.
                gateway.kill();
                gateway.start()?;
                progress.update(|s| s.1 += 1);
            }
            Ok(gateway)
        })
    };
    let app = s.app.clone();
    let sender = {
        let progress = progress.clone();
        std::thread::spawn(move || -> Result<Sent> {
            let mut sent = Vec::with_capacity(N + 1);
            let mut retried = HashSet::new();
            // The sentinel goes last: delivery is in seq order, so once the app
            // has it, every message accepted before it has arrived too.
            for i in 0..=N {
                let title = if i == N {
                    "end".to_string()
                } else {
                    format!("g{i}")
                };
                loop {
                    let restarts = progress.state.lock().expect("progress").1;
                    match app.send(&json!({"token": token, "title": title, "desc": "x"})) {
                        Ok(r) => {
                            ensure!(r.status == 200, "send {title}: {} {}", r.status, r.body);
                            let id = r.body["message_id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string();
                            sent.push((title.clone(), id));
                            progress.update(|s| s.0 = i + 1);
                            break;
                        }
                        // No answer: retry once the gateway is back. The lost
                        // attempt may have been stored: account it as ours.
                        Err(_) => {
                            retried.insert(title.clone());
                            progress.wait("gateway restart", |s| s.1 > restarts)?;
                        }
                    }
                }
            }
            Ok((sent, retried))
        })
    };
    let started = Instant::now();
    let mut got_all = Vec::with_capacity(N + 1);
    // Generous bound: ten closed links in a row back the daemon's redial off
    // (by design: its backoff resets only after a minute of stable link).
    loop {
        let g = got(&listen
            .next(Duration::from_secs(330))
            .with_context(|| format!("after {}", got_all.len()))?);
        let end = g.1 == "end";
        got_all.push(g);
        if end {
            break;
        }
    }
    let _gateway = killer.join().expect("killer")?;
    let (sent, retried) = sender.join().expect("sender")?;
    eprintln!(
        "gateway sigkill: 10 kills at sent counts {kills:?}; stream done in {:?}",
        started.elapsed()
    );
    // Later copies of the sentinel itself may still be in flight: not counted.
    let sent: Vec<_> = sent.into_iter().filter(|(t, _)| t != "end").collect();
    let got_all: Vec<_> = got_all.into_iter().filter(|(_, t)| t != "end").collect();
    account("gateway sigkill x10", &sent, &retried, &got_all)
}

/// Sends `n` pushes from inside the gateway's namespace, `batch` per curl run
/// (one TLS connection each); reports each finished batch on `done`.
fn curl_sender(
    lab_gateway_ns: String,
    gw: (String, std::path::PathBuf, String),
    token: String,
    n: usize,
    batch: usize,
    done: mpsc::Sender<usize>,
) -> std::thread::JoinHandle<Result<Vec<(String, String)>>> {
    std::thread::spawn(move || {
        let (url, ca, key) = gw;
        let sent_count = AtomicUsize::new(0);
        let mut sent = Vec::with_capacity(n);
        for start in (0..n).step_by(batch) {
            let titles: Vec<String> = (start..n.min(start + batch))
                .map(|i| format!("l{i}"))
                .collect();
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["netns", "exec", &lab_gateway_ns, "curl"]);
            for (j, title) in titles.iter().enumerate() {
                if j > 0 {
                    cmd.arg("--next");
                }
                let body = json!({"token": token, "title": title, "desc": "x"}).to_string();
                cmd.args(["-sS", "--fail-with-body", "-w", "\n", "--cacert"])
                    .arg(&ca);
                cmd.args([
                    "-H",
                    &format!("Authorization: Bearer {key}"),
                    "-H",
                    "Content-Type: application/json",
                ]);
                cmd.args(["-d", &body, &format!("{url}/v1/messages")]);
            }
            let out = cmd.output()?;
            ensure!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let ids: Vec<String> = String::from_utf8(out.stdout)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| -> Result<String> {
                    let v: serde_json::Value = serde_json::from_str(l)?;
                    v["message_id"]
                        .as_str()
                        .map(str::to_string)
                        .context("no message_id")
                })
                .collect::<Result<_>>()?;
            ensure!(
                ids.len() == titles.len(),
                "curl answered {} of {}",
                ids.len(),
                titles.len()
            );
            sent.extend(titles.into_iter().zip(ids));
            let total = sent_count.fetch_add(batch, Ordering::Relaxed) + batch;
            let _ = done.send(total);
        }
        Ok(sent)
    })
}

#[test]
fn the_link_cut_and_restored_50_times_during_a_stream_loses_nothing() -> Result<()> {
    if let Some(why) = syspush::netns::unavailable() {
        skip(&why);
        return Ok(());
    }
    const N: usize = 2_500;
    let mut rng = FaultRng::from_env("link cut");
    let cuts = rng.points(50, 1, N);
    let lab = NatLab::new(600)?;
    let dir = shared_tempdir()?;
    let mut gw = Gateway::new_at(
        &dir.path().join("gateway"),
        lab.gateway_ip(),
        Some(&lab.gateway),
    )?;
    let key = gw.add_app(APP, &[])?;
    gw.start()?;
    let me = nix::unistd::getuid().as_raw();
    let apps = [AppPolicy {
        id: APP.into(),
        uids: vec![me],
    }];
    let mut daemon = Daemon::new(
        &dir.path().join("daemon"),
        &gw,
        &apps,
        "heartbeat_s = 300\npong_timeout_s = 5",
    )?;
    daemon.netns = Some(lab.device.clone());
    daemon.start()?;
    let token = daemon.register(APP)?;
    let listen = daemon.listen(APP, None, None)?;
    let (done_tx, done) = mpsc::channel();
    let sender = curl_sender(
        lab.gateway.clone(),
        (gw.url(), gw.ca.clone(), key),
        token,
        N,
        25,
        done_tx,
    );
    let started = Instant::now();
    let mut got_all = Vec::with_capacity(N);
    let mut next = cuts.iter().peekable();
    while got_all.len() < N {
        if next.peek().is_some_and(|k| **k == got_all.len()) {
            next.next();
            // Down while at least one more batch is accepted by the gateway
            // (it cannot reach the device), then up again.
            lab.device_link_down()?;
            drain(&done);
            let _ = done.recv_timeout(BOUND);
            lab.device_link_up()?;
        }
        got_all.push(got(&listen
            .next(BOUND)
            .with_context(|| format!("after {} of {N}", got_all.len()))?));
    }
    let sent = sender.join().expect("sender")?;
    let status = daemon.ctl(&["status", "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
    eprintln!(
        "link cut: 50 cuts at received counts {cuts:?} in {:?}; daemon reconnects {}",
        started.elapsed(),
        v["reconnects"]
    );
    account("link cut x50", &sent, &HashSet::new(), &got_all)
}

/// Forgets what `rx` reported so far (only what comes next counts).
fn drain<T>(rx: &mpsc::Receiver<T>) {
    while rx.try_recv().is_ok() {}
}

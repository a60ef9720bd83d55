//! Runs the real binaries — `syspush-gateway`, `syspushd`, `syspushctl` — as
//! processes in a temp dir, for the end-to-end tests and the benchmark.
//!
//! Readiness is never guessed with sleeps: the gateway prints one
//! `listening on https://IP:PORT` line, the daemon sends systemd's `READY=1` to
//! a `NOTIFY_SOCKET` this kit binds, and app output is read line by line. The
//! timeouts here are failure bounds, not waits. Test support code, so it uses
//! `anyhow` like the tests themselves.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::appserver::AppServer;

/// How long a process may take to become ready before the test fails.
pub const READY_BOUND: Duration = Duration::from_secs(60);

/// Path of a workspace binary built next to the running test or bench.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// True when running as root (tests that switch uids need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, sig);
}

/// A `syspush-gateway` process with its own data dir, CA and config.
pub struct Gateway {
    /// Its directory (config, store, TLS material, log).
    pub dir: PathBuf,
    /// The CA that signed its certificate.
    pub ca: PathBuf,
    /// Devices present this to enroll.
    pub enrollment_key: String,
    /// The address it listens on and is reached at (127.0.0.1 unless in a netns).
    pub host: std::net::IpAddr,
    /// Network namespace it runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// Extra config lines (for example heartbeat bounds), written at each start.
    pub extra_config: String,
    port: u16,
    child: Option<(Child, ChildStdout)>,
}

/// A command for `program`, wrapped in `ip netns exec NS` when `netns` is given.
fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Gateway {
    /// Prepares a gateway in `dir` (TLS material and config); does not start it.
    pub fn new(dir: &Path) -> Result<Self> {
        Self::new_at(dir, std::net::IpAddr::from([127, 0, 0, 1]), None)
    }

    /// Like [`Gateway::new`], listening on `host`, run inside `netns` when given.
    pub fn new_at(dir: &Path, host: std::net::IpAddr, netns: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let tls = dir.join("tls");
        let st = Command::new(bin("syspush-gateway"))
            .args(["tls-init", "--dir"])
            .arg(&tls)
            .args(["--name", "localhost", "--ip"])
            .arg(host.to_string())
            .stderr(log_file(&dir.join("gateway.log"))?)
            .status()?;
        if !st.success() {
            bail!("syspush-gateway tls-init failed: {st}");
        }
        let gw = Self {
            dir: dir.to_path_buf(),
            ca: tls.join("ca.pem"),
            enrollment_key: "test-enrollment-key".into(),
            host,
            netns: netns.map(str::to_string),
            extra_config: String::new(),
            port: 0,
            child: None,
        };
        gw.write_config()?;
        Ok(gw)
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    fn write_config(&self) -> Result<()> {
        let cfg = format!(
            "listen = \"{host}:{port}\"\ndata_dir = \"data\"\ntls_cert = \"tls/cert.pem\"\n\
             tls_key = \"tls/key.pem\"\nenrollment_key = \"{key}\"\n{extra}\n",
            host = self.host,
            port = self.port,
            key = self.enrollment_key,
            extra = self.extra_config
        );
        std::fs::write(self.config(), cfg)?;
        Ok(())
    }

    /// Creates an app (the gateway must be stopped) and returns its API key.
    pub fn add_app(&self, app_id: &str, allow_classes: &[&str]) -> Result<String> {
        let mut cmd = Command::new(bin("syspush-gateway"));
        cmd.args(["app", "add", app_id, "--config"])
            .arg(self.config());
        if !allow_classes.is_empty() {
            cmd.arg("--allow-class").arg(allow_classes.join(","));
        }
        let out = cmd.stderr(Stdio::piped()).output()?;
        if !out.status.success() {
            bail!("app add {app_id}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts the gateway; on a restart it listens on the port it had before.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("gateway already running");
        }
        self.write_config()?;
        let mut child = in_netns(self.netns.as_deref(), &bin("syspush-gateway"))
            .args(["serve", "--config"])
            .arg(self.config())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.dir.join("gateway.log"))?)
            .spawn()?;
        let stdout = child.stdout.take().context("gateway stdout")?;
        let (tx, rx) = mpsc::channel();
        // Read the one readiness line on a thread so a hung gateway fails the test
        // after READY_BOUND instead of blocking it forever.
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line);
            let _ = tx.send((res.map(|_| line), r.into_inner()));
        });
        let (line, stdout) = match rx.recv_timeout(READY_BOUND) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                bail!("gateway did not print its address within {READY_BOUND:?}");
            }
        };
        let _ = reader.join();
        let line = line?;
        let addr = line
            .trim()
            .strip_prefix("listening on https://")
            .ok_or_else(|| {
                anyhow!(
                    "unexpected gateway output {line:?} (see {})",
                    self.dir.join("gateway.log").display()
                )
            })?;
        let port: u16 = addr.rsplit(':').next().unwrap_or_default().parse()?;
        if self.port == 0 {
            self.port = port;
            self.write_config()?;
        }
        self.child = Some((child, stdout));
        Ok(())
    }

    /// Base URL, `https://HOST:PORT`.
    pub fn url(&self) -> String {
        format!(
            "https://{}",
            std::net::SocketAddr::new(self.host, self.port)
        )
    }

    /// An app-server client for this gateway with `key`.
    pub fn app_server(&self, key: &str) -> Result<AppServer> {
        Ok(AppServer::new(&self.url(), key, &self.ca)?)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some((mut c, _)) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let (mut c, _) = self.child.take().context("gateway not running")?;
        signal(&c, nix::sys::signal::Signal::SIGTERM);
        Ok(c.wait()?)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `[[app]]` entry of the daemon's policy.
#[derive(Clone, Debug)]
pub struct AppPolicy {
    /// App id.
    pub id: String,
    /// Uids allowed to act for it.
    pub uids: Vec<u32>,
}

/// A `syspushd` process with its own state dir, socket and config.
pub struct Daemon {
    /// Its directory (config, store, socket, log).
    pub dir: PathBuf,
    /// The app socket.
    pub socket: PathBuf,
    /// Network namespace it runs in (`ip netns exec`), if any.
    pub netns: Option<String>,
    child: Option<Child>,
    starts: u32,
}

impl Daemon {
    /// Writes a config for `gw` with `apps` as policy (`extra` is appended verbatim).
    pub fn new(dir: &Path, gw: &Gateway, apps: &[AppPolicy], extra: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let socket = dir.join("syspushd.sock");
        let mut cfg = format!(
            "gateway = \"{url}\"\nca_file = \"{ca}\"\nenrollment_key = \"{key}\"\n\
             state_dir = \"{state}\"\nsocket_path = \"{sock}\"\n{extra}\n",
            url = gw.url(),
            ca = gw.ca.display(),
            key = gw.enrollment_key,
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        for a in apps {
            let uids: Vec<String> = a.uids.iter().map(|u| u.to_string()).collect();
            cfg.push_str(&format!(
                "\n[[app]]\nid = \"{}\"\nuids = [{}]\n",
                a.id,
                uids.join(", ")
            ));
        }
        std::fs::write(dir.join("syspushd.toml"), cfg)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            socket,
            netns: None,
            child: None,
            starts: 0,
        })
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("syspushd.toml")
    }

    /// Starts the daemon and returns once it sent READY=1 (store open, socket listening).
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("daemon already running");
        }
        self.starts += 1;
        let notify_path = self.dir.join(format!("notify-{}.sock", self.starts));
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(READY_BOUND))?;
        let mut child = in_netns(self.netns.as_deref(), &bin("syspushd"))
            .arg("--config")
            .arg(self.config())
            .env("NOTIFY_SOCKET", &notify_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file(&self.dir.join("syspushd.log"))?)
            .stderr(log_file(&self.dir.join("syspushd.log"))?)
            .spawn()?;
        let mut buf = [0u8; 4096];
        loop {
            let n = match notify.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = child.kill();
                    bail!("syspushd sent no READY=1 ({e}); log: {}", self.log());
                }
            };
            let msg = String::from_utf8_lossy(&buf[..n]);
            if msg.lines().any(|l| l == "READY=1") {
                break;
            }
        }
        // Later STATUS= datagrams then fail harmlessly: nobody reads them.
        drop(notify);
        let _ = std::fs::remove_file(&notify_path);
        self.child = Some(child);
        Ok(())
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("syspushd.log")).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("daemon not running")?;
        signal(&c, nix::sys::signal::Signal::SIGTERM);
        Ok(c.wait()?)
    }

    /// The running process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `syspushctl --socket SOCK args...` to completion.
    pub fn ctl(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(bin("syspushctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()?)
    }

    /// `syspushctl register APP` -> the token.
    pub fn register(&self, app: &str) -> Result<String> {
        let out = self.ctl(&["register", app])?;
        if !out.status.success() {
            bail!("register {app}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts `syspushctl listen APP [--count N]` (as `uid` when given).
    pub fn listen(&self, app: &str, count: Option<usize>, uid: Option<u32>) -> Result<Listen> {
        let mut cmd = Command::new(bin("syspushctl"));
        cmd.arg("--socket").arg(&self.socket).args(["listen", app]);
        if let Some(n) = count {
            cmd.arg("--count").arg(n.to_string());
        }
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().context("listen stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().context("listen stderr")?;
        let stderr = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Listen {
            child,
            lines: rx,
            stderr: Some(stderr),
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `syspushctl listen`: one JSON line per notification.
pub struct Listen {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Its stderr, drained as it comes: an undrained pipe fills up and blocks
    /// the process on its next diagnostic line.
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Listen {
    /// Next notification, or an error after `bound` (or when the process ended).
    pub fn next(&self, bound: Duration) -> Result<serde_json::Value> {
        let line = self
            .lines
            .recv_timeout(bound)
            .map_err(|e| anyhow!("no notification within {bound:?}: {e}"))?;
        serde_json::from_str(&line).with_context(|| format!("bad JSON line {line:?}"))
    }

    /// Waits for the process to end and returns its status and stderr.
    pub fn finish(mut self) -> Result<(std::process::ExitStatus, String)> {
        let status = self.child.wait()?;
        let err = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Ok((status, err))
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir that others (a dropped uid) can traverse, for tests that switch uids.
pub fn shared_tempdir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix("syspush-test").tempdir()?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(d)
}

/// Writes raw bytes to the daemon's app socket and returns what it answered
/// before closing (for garbage and oversized-frame tests).
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(READY_BOUND))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(out)
}

/// A gateway, a daemon enrolled with it and one app, each a real process, in a temp dir.
pub struct Stack {
    /// The daemon (dropped first: it holds the link).
    pub daemon: Daemon,
    /// The gateway.
    pub gateway: Gateway,
    /// App server for `app_id`.
    pub app: AppServer,
    /// The app's API key at the gateway.
    pub app_key: String,
    /// The app id.
    pub app_id: String,
    /// Owns the files; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Gateway + daemon + `app_id` (allowed every class), the daemon's policy
    /// giving `app_id` to the current uid plus `extra_apps`.
    pub fn new(app_id: &str, extra_apps: &[AppPolicy]) -> Result<Self> {
        Self::with_config(app_id, extra_apps, "")
    }

    /// Like [`Stack::new`], with extra daemon config lines.
    pub fn with_config(app_id: &str, extra_apps: &[AppPolicy], daemon_extra: &str) -> Result<Self> {
        let dir = shared_tempdir()?;
        let mut gateway = Gateway::new(&dir.path().join("gateway"))?;
        let app_key = gateway.add_app(app_id, &["system", "important"])?;
        for a in extra_apps {
            gateway.add_app(&a.id, &[])?;
        }
        gateway.start()?;
        let me = nix::unistd::getuid().as_raw();
        let mut apps = vec![AppPolicy {
            id: app_id.into(),
            uids: vec![me],
        }];
        apps.extend_from_slice(extra_apps);
        let mut daemon = Daemon::new(&dir.path().join("daemon"), &gateway, &apps, daemon_extra)?;
        daemon.start()?;
        let app = gateway.app_server(&app_key)?;
        Ok(Self {
            daemon,
            gateway,
            app,
            app_key,
            app_id: app_id.into(),
            dir,
        })
    }

    /// A minimal push to `token` with `title`.
    pub fn push(&self, token: &str, title: &str) -> Result<String> {
        let r = self
            .app
            .send(&serde_json::json!({"token": token, "title": title, "desc": "d"}))?;
        if r.status != 200 {
            bail!("send answered {}: {}", r.status, r.body);
        }
        r.body["message_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no message_id in {}", r.body))
    }
}

// ---------------------------------------------------------------------------
// Fault-injection helpers (tests/faults.rs): a seeded schedule, memory
// figures from /proc, and a bounded poll for conditions no process announces.
// ---------------------------------------------------------------------------

/// splitmix64, seeded and printed so a failing fault schedule can be replayed
/// (`SYSPUSH_FAULT_SEED=N`).
pub struct FaultRng(u64);

impl FaultRng {
    /// Seeds from `SYSPUSH_FAULT_SEED` when set, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("SYSPUSH_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (replay with SYSPUSH_FAULT_SEED={seed})");
        Self(seed)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` distinct points in `lo..hi`, ascending (the message counts at which
    /// faults strike).
    pub fn points(&mut self, n: usize, lo: usize, hi: usize) -> Vec<usize> {
        assert!(hi - lo >= n, "cannot pick {n} points in {lo}..{hi}");
        let mut set = std::collections::BTreeSet::new();
        while set.len() < n {
            set.insert(lo + (self.next_u64() % (hi - lo) as u64) as usize);
        }
        set.into_iter().collect()
    }
}

/// A field of `/proc/PID/status` in KiB (`VmHWM`: peak resident set, `VmRSS`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Polls `cond` every 20 ms until it holds, failing after `bound`. Only for
/// conditions nothing announces (a line in a log file); readiness of the
/// processes themselves is still awaited through their own signals.
pub fn wait_until(bound: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > bound {
            bail!("{what}: not within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

// ---- Debian package (tests/init.rs, tests/image.rs) ------------------------

/// `cargo deb` of the binaries this test run built (no second, release build:
/// that takes minutes; `--fast`: xz at a low preset, debug binaries are big),
/// written into `out_dir`; returns the `.deb`. Needs cargo-deb.
pub fn build_deb(out_dir: &Path) -> Result<PathBuf> {
    let daemon = bin("syspushd");
    bin("syspushctl");
    let profile_dir = daemon.parent().context("bin dir")?;
    let target_dir = profile_dir.parent().context("target dir")?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!("odd binary path {}", daemon.display()),
    };
    let out = Command::new("cargo")
        .args([
            "deb",
            "-p",
            "syspushd",
            "--no-build",
            "--no-strip",
            "--fast",
            "--profile",
        ])
        .arg(profile)
        .arg("-o")
        .arg(out_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if !out.status.success() {
        bail!("cargo deb: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::read_dir(out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no .deb written")
}

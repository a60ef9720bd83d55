//! Init integration of the real `syspushd` binary: a listening socket passed
//! the way systemd (`LISTEN_FDS`, fd 3) and Android init
//! (`ANDROID_SOCKET_syspushd`) pass it, a real `NOTIFY_SOCKET`, SIGTERM under
//! load, and `--check-config`.
//!
//! No unsafe code: the listener is passed by `dup` (the copy has no
//! close-on-exec flag, so the child inherits it) and, for systemd's fixed fd
//! 3, a `sh -c 'exec 3<&N; LISTEN_PID=$$ exec syspushd ...'` wrapper, where
//! `$$` is the shell's pid, which `exec` hands to syspushd.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use syspush::testkit::{AppPolicy, Daemon, Gateway, Stack, bin, require_tool, shared_tempdir};

const BOUND: Duration = Duration::from_secs(60);
const APP: &str = "com.example.chat";

/// Collects sd_notify datagrams on a thread, one `KEY=VALUE` line at a time.
struct Notify {
    path: PathBuf,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: &Path) -> Result<Self> {
        let sock = UnixDatagram::bind(path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if tx.send(line.to_string()).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// Waits (bounded) until `line` arrives; everything received is kept.
    fn wait_for(&mut self, line: &str) -> Result<()> {
        if self.seen.iter().any(|l| l == line) {
            return Ok(());
        }
        let until = Instant::now() + BOUND;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let got = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no {line} (got {:?})", self.seen))?;
            let hit = got == line;
            self.seen.push(got);
            if hit {
                return Ok(());
            }
        }
    }
}

/// A gateway with APP, and a daemon config for it (not started).
struct Setup {
    /// Kept running for the test (stopped on drop).
    _gateway: Gateway,
    daemon: Daemon,
    app: syspush::appserver::AppServer,
    dir: tempfile::TempDir,
}

fn setup() -> Result<Setup> {
    let dir = shared_tempdir()?;
    let mut gateway = Gateway::new(&dir.path().join("gateway"))?;
    let key = gateway.add_app(APP, &[])?;
    gateway.start()?;
    let me = nix::unistd::getuid().as_raw();
    let apps = [AppPolicy {
        id: APP.into(),
        uids: vec![me],
    }];
    let daemon = Daemon::new(&dir.path().join("daemon"), &gateway, &apps, "")?;
    let app = gateway.app_server(&key)?;
    Ok(Setup {
        _gateway: gateway,
        daemon,
        app,
        dir,
    })
}

/// A listening socket at `path` and an inheritable duplicate of it.
fn listener_with_inheritable_copy(path: &Path) -> Result<(UnixListener, OwnedFd)> {
    let l = UnixListener::bind(path)?;
    // dup(2) leaves close-on-exec off on the copy: the child inherits it.
    let copy = nix::unistd::dup(&l)?;
    Ok((l, copy))
}

fn log_file(dir: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("syspushd.log"))?)
}

fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}

fn ctl(socket: &Path, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(bin("syspushctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()?)
}

/// Registers APP through `socket`, pushes one message, and checks that a
/// `syspushctl listen` on the same socket receives it.
fn serve_one_push(s: &Setup, socket: &Path) -> Result<()> {
    let out = ctl(socket, &["register", APP])?;
    ensure!(
        out.status.success(),
        "register: {}; log: {}",
        String::from_utf8_lossy(&out.stderr),
        s.daemon.log()
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    let listen = Command::new(bin("syspushctl"))
        .arg("--socket")
        .arg(socket)
        .args(["listen", APP, "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let r = s
        .app
        .send(&serde_json::json!({"token": token, "title": "via init"}))?;
    ensure!(r.status == 200, "send: {} {}", r.status, r.body);
    let out = listen.wait_with_output()?;
    ensure!(
        out.status.success(),
        "listen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(n["message_id"], r.body["message_id"]);
    assert_eq!(n["title"], "via init");
    Ok(())
}

/// SIGTERM, bounded wait for the exit, and its status.
fn stop(mut child: Child) -> Result<std::process::ExitStatus> {
    sigterm(&child);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(BOUND) {
        Ok(st) => Ok(st?),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            bail!("syspushd did not exit within {BOUND:?} of SIGTERM")
        }
    }
}

#[test]
fn systemd_socket_activation_serves_apps_on_the_passed_fd_and_keeps_the_path() -> Result<()> {
    let s = setup()?;
    let dir = &s.daemon.dir;
    // Not the configured socket_path: the daemon must use what it was given.
    let socket = s.dir.path().join("activated.sock");
    let (listener, copy) = listener_with_inheritable_copy(&socket)?;
    let mut notify = Notify::bind(&dir.join("notify.sock"))?;
    let script = format!(
        "exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=syspushd.socket exec \"$0\" --config \"$1\"",
        fd = copy.as_raw_fd()
    );
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(bin("syspushd"))
        .arg(s.daemon.config())
        .env("NOTIFY_SOCKET", &notify.path)
        // A tiny watchdog interval: every wake-up of the event loop pings.
        .env("WATCHDOG_USEC", "4")
        .stdin(Stdio::null())
        .stderr(log_file(dir)?)
        .spawn()?;
    drop(copy);
    notify.wait_for("READY=1")?;
    serve_one_push(&s, &socket)?;
    notify.wait_for("WATCHDOG=1")?;
    ensure!(
        !s.daemon.socket.exists(),
        "the daemon bound socket_path although it was given a socket"
    );
    let st = stop(child)?;
    ensure!(st.success(), "exit: {st}; log: {}", s.daemon.log());
    notify.wait_for("STOPPING=1")?;
    ensure!(socket.exists(), "the activated socket path was unlinked");
    // The socket outlives the daemon, as with systemd: a connection made now
    // waits in the backlog for the next daemon instead of being refused.
    std::os::unix::net::UnixStream::connect(&socket).context("connect after stop")?;
    drop(listener);
    Ok(())
}

#[test]
fn android_init_socket_is_taken_from_the_environment() -> Result<()> {
    let s = setup()?;
    let dir = &s.daemon.dir;
    let socket = s.dir.path().join("dev-socket-syspushd");
    let (_listener, copy) = listener_with_inheritable_copy(&socket)?;
    let mut notify = Notify::bind(&dir.join("notify.sock"))?;
    let child = Command::new(bin("syspushd"))
        .arg("--config")
        .arg(s.daemon.config())
        .env("ANDROID_SOCKET_syspushd", copy.as_raw_fd().to_string())
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .stderr(log_file(dir)?)
        .spawn()?;
    drop(copy);
    notify.wait_for("READY=1")?;
    serve_one_push(&s, &socket)?;
    let st = stop(child)?;
    ensure!(st.success(), "exit: {st}; log: {}", s.daemon.log());
    ensure!(socket.exists(), "init's socket path was unlinked");
    Ok(())
}

#[test]
fn a_passed_fd_that_is_not_a_listening_socket_is_refused() -> Result<()> {
    let s = setup()?;
    let file = std::fs::File::open("/dev/null")?;
    let copy = nix::unistd::dup(&file)?;
    let out = Command::new(bin("syspushd"))
        .arg("--config")
        .arg(s.daemon.config())
        .env("ANDROID_SOCKET_syspushd", copy.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .output()?;
    drop(copy);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "started on /dev/null: {err}");
    ensure!(err.contains("not a socket"), "unclear error: {err}");
    Ok(())
}

#[test]
fn sigterm_during_a_stream_of_pushes_exits_fast_and_loses_nothing() -> Result<()> {
    const TOTAL: usize = 60;
    let mut s = Stack::new(APP, &[])?;
    let token = s.daemon.register(APP)?;
    let listen = s.daemon.listen(APP, None, None)?;

    // Pushes keep coming while the daemon stops and starts again.
    let app = s.gateway.app_server(&s.app_key)?;
    let (sent_tx, sent_rx) = mpsc::channel::<String>();
    let sender = {
        std::thread::spawn(move || -> Result<()> {
            for i in 0..TOTAL {
                let r = app.send(&serde_json::json!({"token": token, "title": format!("m{i}")}))?;
                ensure!(r.status == 200, "send: {} {}", r.status, r.body);
                let id = r.body["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if sent_tx.send(id).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };

    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(
            listen.next(BOUND)?["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let t = Instant::now();
    let st = s.daemon.stop()?;
    let took = t.elapsed();
    ensure!(
        st.success(),
        "exit on SIGTERM: {st}; log: {}",
        s.daemon.log()
    );
    ensure!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    s.daemon.start()?;

    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let sent: Vec<String> = sent_rx.try_iter().collect();
    ensure!(sent.len() == TOTAL, "only {} pushes accepted", sent.len());
    while got.len() < sent.len() {
        got.push(
            listen.next(BOUND)?["message_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let unique: HashSet<&String> = got.iter().collect();
    ensure!(unique.len() == got.len(), "duplicates delivered: {got:?}");
    let want: HashSet<&String> = sent.iter().collect();
    ensure!(unique == want, "sent {sent:?}\ngot {got:?}");
    Ok(())
}

fn check_config(path: &Path) -> Result<std::process::Output> {
    Ok(Command::new(bin("syspushd"))
        .arg("--check-config")
        .arg(path)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()?)
}

#[test]
fn check_config_prints_the_effective_config_or_a_clear_error_without_network() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A gateway that counts connections: check-config must make none.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    tcp.set_nonblocking(true)?;
    let url = format!("https://127.0.0.1:{}", tcp.local_addr()?.port());
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "gateway = \"{url}\"\nenrollment_key = \"s3cret\"\nstate_dir = \"state\"\n\
             [[app]]\nid = \"{APP}\"\nuids = [10123]\n"
        ),
    )?;
    let out = check_config(&good)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "good config refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(stdout.contains(&url) && stdout.contains(APP), "{stdout}");
    ensure!(
        stdout.contains("heartbeat_s = 270"),
        "defaults shown: {stdout}"
    );
    ensure!(
        stdout.contains(&format!(
            "state_dir = \"{}",
            dir.path().join("state").display()
        )),
        "relative paths resolved: {stdout}"
    );
    ensure!(!stdout.contains("s3cret"), "secret printed: {stdout}");
    ensure!(
        matches!(tcp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "check-config connected to the gateway"
    );

    let cases = [
        ("heartbeats = 5\n", "unknown field"),
        ("gateway = \"http://example.com\"\n", "scheme must be https"),
        ("ca_file = \"missing-ca.pem\"\n", "cannot read ca_file"),
    ];
    for (line, want) in cases {
        let bad = dir.path().join("bad.toml");
        let base = format!("gateway = \"{url}\"\nenrollment_key = \"k\"\n");
        // A later `gateway` overrides nothing in TOML: it is a duplicate key,
        // so replace the line instead.
        let text = if line.starts_with("gateway") {
            format!("{line}enrollment_key = \"k\"\n")
        } else {
            format!("{base}{line}")
        };
        std::fs::write(&bad, text)?;
        let out = check_config(&bad)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{line:?} accepted");
        ensure!(err.contains(want), "{line:?}: unclear error: {err}");
        ensure!(out.stdout.is_empty(), "{line:?}: printed a config");
    }

    // The example config shipped in the Debian package is valid as shipped.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("daemon/syspushd.example.toml");
    let out = check_config(&example)?;
    ensure!(
        out.status.success(),
        "example config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        matches!(tcp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "check-config connected to the gateway"
    );
    Ok(())
}

#[test]
fn debian_package_contains_binaries_units_and_example_config() -> Result<()> {
    if !require_tool(
        "cargo",
        &["deb", "--version"],
        "cargo install cargo-deb --locked",
    ) || !require_tool("dpkg-deb", &["--version"], "dpkg")
    {
        return Ok(());
    }
    let out_dir = tempfile::tempdir()?;
    let deb = syspush::testkit::build_deb(out_dir.path())?;
    let listing = Command::new("dpkg-deb").arg("-c").arg(&deb).output()?;
    ensure!(listing.status.success(), "dpkg-deb -c failed");
    let listing = String::from_utf8(listing.stdout)?;
    let files: HashSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for want in [
        "./usr/bin/syspushd",
        "./usr/bin/syspushctl",
        "./usr/lib/systemd/system/syspushd.service",
        "./usr/lib/systemd/system/syspushd.socket",
        "./usr/lib/sysusers.d/syspushd.conf",
        "./usr/lib/tmpfiles.d/syspushd.conf",
        "./usr/share/doc/syspushd/examples/syspushd.toml",
        "./usr/share/doc/syspushd/copyright",
    ] {
        ensure!(
            files.contains(want),
            "{want} missing from the package:\n{listing}"
        );
    }
    ensure!(
        !files.iter().any(|f| f.starts_with("./etc/")),
        "nothing may be installed under /etc:\n{listing}"
    );
    // postinst creates the user (sysusers) before the tmpfiles that name it.
    let ctl = out_dir.path().join("control");
    let st = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&ctl)
        .status()?;
    ensure!(st.success(), "dpkg-deb -e failed");
    let postinst = std::fs::read_to_string(ctl.join("postinst"))?;
    let users = postinst
        .find("systemd-sysusers")
        .context("no systemd-sysusers in postinst")?;
    let tmpfiles = postinst
        .find("systemd-tmpfiles --create")
        .context("no tmpfiles in postinst")?;
    ensure!(users < tmpfiles, "sysusers must run first:\n{postinst}");
    Ok(())
}

#[test]
fn under_systemd_the_default_dirs_are_the_ones_the_unit_made_writable() -> Result<()> {
    // A config with no state_dir or socket_path, as an OEM might ship it: under
    // systemd the defaults must follow StateDirectory=/RuntimeDirectory= (the
    // only writable places in the sandbox), not the service user's home.
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("syspushd.toml");
    std::fs::write(
        &cfg,
        "gateway = \"https://push.example.invalid\"\nenrollment_key = \"k\"\n",
    )?;
    let out = Command::new(bin("syspushd"))
        .arg("--check-config")
        .arg(&cfg)
        .env("STATE_DIRECTORY", "/var/lib/syspush")
        .env("RUNTIME_DIRECTORY", "/run/syspush:/run/other")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("state_dir = \"/var/lib/syspush\""),
        "{stdout}"
    );
    ensure!(
        stdout.contains("socket_path = \"/run/syspush/syspushd.sock\""),
        "{stdout}"
    );
    Ok(())
}

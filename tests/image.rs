//! The Debian package on a device image that boots real systemd.
//!
//! `cargo test --test image -- --nocapture` (as root; prints the figures).
//!
//! A minimal Debian image (`debootstrap --variant=minbase --include=systemd,dbus`,
//! from the mirror apt is configured with) is built once and cached under
//! `target/image-cache/` (a lock file keeps parallel runs from building it
//! twice); each run copies it, installs the `.deb` built from this test run's
//! binaries with `dpkg -i` (in a chroot, like an image recipe), writes
//! `/etc/syspush/syspushd.toml` from the packaged example pointing at a gateway
//! on the host's loopback (the container shares the host's network namespace),
//! and boots it with `systemd-nspawn -b`. Everything is asserted from outside
//! with `nsenter` into the container's init; app processes run inside as
//! transient units (`systemd-run --uid=...`).
//!
//! Boot 1 (`syspushd.service` enabled): the service is active (READY=1) at
//! boot as its own user with its sandbox in force; an allowed uid registers and
//! receives a push sent from the host, another uid is refused; `systemctl stop`
//! takes under 2 s and a message pending in the store is delivered after
//! `systemctl start`; the journal holds the daemon's entries with their fields;
//! `systemd-analyze security` in the booted image gives the offline figure.
//! Boot 2 (only `syspushd.socket` enabled): the daemon is not running after
//! boot, the first app connection starts it and is served.
//!
//! Readiness is never guessed: the container's boot is awaited with
//! `--notify-ready=yes` (nspawn forwards systemd's READY=1 to our
//! `NOTIFY_SOCKET`, with the leader's pid), the daemon's link with
//! `journalctl -f`, a service start with `systemctl start` (Type=notify: it
//! returns after READY=1) and poweroff with `wait()` on nspawn. The one poll is
//! "the pushed message is in the daemon's store" (`syspushctl status`), where
//! no event is visible from outside; it is bounded.
//!
//! Skipped with a "skipped: ..." message when not root, or when debootstrap,
//! systemd-nspawn, nsenter, cargo-deb or an apt mirror are not available.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use syspush::testkit::{Gateway, bin, is_root};

const APP: &str = "com.example.chat";
/// The uid the policy gives APP to.
const APP_UID: u32 = 10123;
/// Another app's uid: not allowed to act for APP.
const OTHER_UID: u32 = 10124;
/// Packages added to minbase: systemd as init (with journalctl,
/// systemd-analyze, systemd-run), dbus for the system bus `systemd-analyze
/// security` talks to.
const INCLUDE: &str = "systemd,dbus";
/// Failure bound for a boot, a poweroff, a debootstrap step: not a wait.
const BOUND: Duration = Duration::from_secs(120);
/// Failure bound for one exchange inside the booted image.
const STEP: Duration = Duration::from_secs(60);
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(out)
}

/// CLOCK_MONOTONIC in µs: the clock systemd and journald inside the container
/// stamp with (nspawn makes no time namespace), so their timestamps compare
/// with ours.
fn monotonic_us() -> Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    Ok(t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
}

/// The host's Debian codename and an apt mirror URI that serves it (main).
fn apt_mirror() -> Option<(String, String)> {
    let os = std::fs::read_to_string("/etc/os-release").ok()?;
    let suite = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(body) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.to_string_lossy();
        if name.ends_with(".list") {
            // deb [opts] URI SUITE COMPONENTS...
            for l in body.lines().map(str::trim) {
                let mut w = l.split_whitespace();
                if w.next() != Some("deb") {
                    continue;
                }
                let mut uri = w.next()?;
                if uri.starts_with('[') {
                    // options: skip to the token after the closing bracket
                    let mut rest = uri;
                    while !rest.ends_with(']') {
                        rest = w.next()?;
                    }
                    uri = w.next()?;
                }
                let s = w.next();
                let comps: Vec<&str> = w.collect();
                if s == Some(suite.as_str()) && comps.contains(&"main") {
                    return Some((suite, uri.to_string()));
                }
            }
        } else if name.ends_with(".sources") {
            // deb822 stanzas separated by blank lines.
            for stanza in body.split("\n\n") {
                let field = |k: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
                };
                let types = field("Types:").unwrap_or_default();
                let uris = field("URIs:").unwrap_or_default();
                let suites = field("Suites:").unwrap_or_default();
                let comps = field("Components:").unwrap_or_default();
                if types.split_whitespace().any(|t| t == "deb")
                    && suites.split_whitespace().any(|s| s == suite)
                    && comps.split_whitespace().any(|c| c == "main")
                    && let Some(uri) = uris.split_whitespace().next()
                {
                    return Some((suite, uri.to_string()));
                }
            }
        }
    }
    None
}

/// The target directory this test binary was built into.
fn target_dir() -> Result<PathBuf> {
    let daemon = bin("syspushd");
    let profile_dir = daemon.parent().context("bin dir")?;
    Ok(profile_dir.parent().context("target dir")?.to_path_buf())
}

/// The cached base image (a directory), built on first use under a lock.
fn cached_image(cache: &Path, suite: &str, mirror: &str) -> Result<PathBuf> {
    use nix::fcntl::{Flock, FlockArg};
    std::fs::create_dir_all(cache)?;
    let key = format!("{suite}-minbase-{}", INCLUDE.replace(',', "-"));
    let image = cache.join(&key);
    let lock = std::fs::File::create(cache.join(format!("{key}.lock")))?;
    // Blocks while another test run builds it; released on drop.
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("lock image cache: {e}"))?;
    if image.is_dir() {
        return Ok(image);
    }
    let tmp = cache.join(format!("{key}.building"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let log = cache.join(format!("{key}.log"));
    let t = Instant::now();
    let st = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={INCLUDE}"))
        .arg(suite)
        .arg(&tmp)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::options().append(true).open(&log)?)
        .status()?;
    if !st.success() {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = l.lines().rev().take(20).collect();
        bail!(
            "debootstrap failed ({st}); {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    // Complete images only: the rename is what marks it built.
    std::fs::rename(&tmp, &image)?;
    eprintln!(
        "image: built {} with debootstrap in {:.1} s",
        image.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(image)
}

fn chroot(root: &Path, args: &[&str]) -> Result<Output> {
    run(Command::new("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", PATH_ENV)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null()))
}

/// uid of `user` in the image's /etc/passwd.
fn image_uid(root: &Path, user: &str) -> Result<u32> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f.get(2).and_then(|u| u.parse().ok()))?
        })
        .with_context(|| format!("no user {user} in the image"))
}

/// The packaged example config with the test gateway, its CA and the policy.
fn write_config(root: &Path, gw: &Gateway) -> Result<()> {
    let example =
        std::fs::read_to_string(root.join("usr/share/doc/syspushd/examples/syspushd.toml"))
            .context("example config not installed")?;
    let etc = root.join("etc/syspush");
    std::fs::create_dir_all(&etc)?;
    std::fs::copy(&gw.ca, etc.join("gateway-ca.pem"))?;
    let mut cfg = String::new();
    for line in example.lines() {
        if line.starts_with("gateway =") {
            cfg.push_str(&format!(
                "gateway = \"{}\"\nca_file = \"/etc/syspush/gateway-ca.pem\"\n",
                gw.url()
            ));
        } else if line.starts_with("enrollment_key =") {
            cfg.push_str(&format!("enrollment_key = \"{}\"\n", gw.enrollment_key));
        } else {
            cfg.push_str(line);
            cfg.push('\n');
        }
    }
    ensure!(
        cfg.contains(&gw.url()),
        "no gateway line in the example config"
    );
    cfg.push_str(&format!("\n[[app]]\nid = \"{APP}\"\nuids = [{APP_UID}]\n"));
    std::fs::write(etc.join("syspushd.toml"), cfg)?;
    // As the README says: 0640 root:syspush (it holds the enrollment key).
    chroot(
        root,
        &["chown", "root:syspush", "/etc/syspush/syspushd.toml"],
    )?;
    chroot(root, &["chmod", "0640", "/etc/syspush/syspushd.toml"])?;
    Ok(())
}

/// A booted container: `systemd-nspawn -b` and its init's pid on the host.
struct Container {
    nspawn: Option<Child>,
    leader: i32,
    /// Host CLOCK_MONOTONIC (µs) just before nspawn was spawned.
    started_us: u64,
    root: PathBuf,
    name: String,
    log: PathBuf,
}

impl Container {
    /// Boots `root` and returns once its systemd reported the boot finished.
    fn boot(root: &Path, name: &str, log: &Path) -> Result<Self> {
        let notify_path = log.with_extension("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        let started_us = monotonic_us()?;
        let child = Command::new("systemd-nspawn")
            .arg("--boot")
            .arg("--directory")
            .arg(root)
            .arg(format!("--machine={name}"))
            // No machined/systemd as PID 1 on the host to register with or
            // to allocate a scope from: stay in the caller's cgroup.
            .args(["--register=no", "--keep-unit"])
            .args(["--console=passive", "--notify-ready=yes", "--quiet"])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(std::fs::File::options().append(true).open(log)?)
            .spawn()?;
        let mut c = Self {
            nspawn: Some(child),
            leader: 0,
            started_us,
            root: root.to_path_buf(),
            name: name.to_string(),
            log: log.to_path_buf(),
        };
        // nspawn sends X_NSPAWN_LEADER_PID first, READY=1 once the container's
        // systemd sent its own (boot finished). Reads time out every second
        // only to notice an nspawn that died: that is failure detection, the
        // readiness itself is the datagram.
        notify.set_read_timeout(Some(Duration::from_secs(1)))?;
        let until = Instant::now() + BOUND;
        let mut buf = [0u8; 4096];
        let mut ready = false;
        while !ready {
            match notify.recv(&mut buf) {
                Ok(n) => {
                    for l in text(&buf[..n]).lines() {
                        if let Some(p) = l.strip_prefix("X_NSPAWN_LEADER_PID=") {
                            c.leader = p.parse()?;
                        }
                        ready |= l == "READY=1";
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(st) = c
                .nspawn
                .as_mut()
                .and_then(|ch| ch.try_wait().ok().flatten())
            {
                c.nspawn = None;
                bail!("systemd-nspawn exited during boot: {st}; log:\n{}", c.log());
            }
            ensure!(
                Instant::now() < until,
                "container not booted within {BOUND:?}; log:\n{}",
                c.log()
            );
        }
        drop(notify);
        let _ = std::fs::remove_file(&notify_path);
        ensure!(c.leader > 0, "nspawn sent no X_NSPAWN_LEADER_PID");
        Ok(c)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A command run inside the container (all its namespaces, its root).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--root", "--wd", "--"])
            .args(args)
            .env_clear()
            .env("PATH", PATH_ENV)
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null());
        c
    }

    /// Runs `args` inside; fails unless it exits 0. Returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let out = run(&mut self.cmd(args))?;
        Ok(text(&out.stdout))
    }

    /// `systemctl show -P PROP UNIT`.
    fn prop(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .ok(&["systemctl", "show", "-P", prop, unit])?
            .trim()
            .to_string())
    }

    /// A transient unit running `args` as `uid`, waited for, output piped back.
    fn app(&self, uid: u32, unit: &str, args: &[&str]) -> Command {
        let uid_arg = format!("--uid={uid}");
        let gid_arg = format!("--gid={uid}");
        let unit_arg = format!("--unit={unit}");
        let mut all = vec![
            "systemd-run",
            "--wait",
            "--pipe",
            "--quiet",
            "--collect",
            &uid_arg,
            &gid_arg,
            &unit_arg,
        ];
        all.extend_from_slice(args);
        self.cmd(&all)
    }

    /// Powers off and waits for nspawn to exit; checks nothing is left over.
    fn poweroff(mut self) -> Result<Duration> {
        let t = Instant::now();
        self.ok(&["systemctl", "poweroff", "--no-block"])?;
        let mut child = self.nspawn.take().context("nspawn gone")?;
        let st = wait_bounded(&mut child, BOUND)?;
        let took = t.elapsed();
        ensure!(st.success(), "nspawn exit: {st}; log:\n{}", self.log());
        self.check_gone()?;
        Ok(took)
    }

    /// No process of the container, no mount under its root, no nspawn state.
    fn check_gone(&self) -> Result<()> {
        ensure!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.leader), None).is_err(),
            "the container's init {} is still alive",
            self.leader
        );
        let root = self.root.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
        ensure!(left.is_empty(), "mounts left under {root}: {left:#?}");
        // nspawn leaves its (empty) propagation directory when /run is not a
        // tmpfs ("Attempted to remove disk file system ... we can't allow
        // that"): remove it here.
        let prop = Path::new("/run/systemd/nspawn/propagate").join(&self.name);
        if prop.exists() {
            std::fs::remove_dir_all(&prop)?;
        }
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // A failed test: SIGTERM makes nspawn halt the container; SIGKILL of
        // its init ends every process in it if that does not work.
        if let Some(mut child) = self.nspawn.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if wait_bounded(&mut child, Duration::from_secs(20)).is_err() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.leader),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = self.check_gone();
        }
    }
}

/// Waits for `child` with a failure bound (a thread blocks in waitid).
fn wait_bounded(child: &mut Child, bound: Duration) -> Result<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Observe the exit without reaping it; Child::wait reaps below.
        let r = nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(pid),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        );
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(bound) {
        Ok(_) => Ok(child.wait()?),
        Err(_) => bail!("process {pid} still running after {bound:?}"),
    }
}

/// Spawns `cmd` with stdout piped; lines arrive on the receiver.
fn spawn_lines(mut cmd: Command) -> Result<(Child, mpsc::Receiver<String>)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// Follows the daemon's journal until an entry's MESSAGE contains `what`;
/// returns that entry (JSON).
fn await_journal(c: &Container, what: &str) -> Result<serde_json::Value> {
    let bound = STEP.as_secs().to_string();
    // In a transient unit of the container, so that stopping the unit ends
    // it (killing nsenter would orphan journalctl inside).
    let (mut child, lines) = spawn_lines(c.cmd(&[
        "systemd-run",
        "--quiet",
        "--pipe",
        "--wait",
        "--collect",
        "--unit=await-journal",
        "timeout",
        &bound,
        "journalctl",
        "--follow",
        "--no-tail",
        "--output=json",
        "--unit=syspushd.service",
        "--boot",
    ]))?;
    let until = Instant::now() + STEP;
    let found = loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break None;
        };
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if v["MESSAGE"].as_str().is_some_and(|m| m.contains(what)) {
            break Some(v);
        }
    };
    let _ = c.ok(&["systemctl", "stop", "await-journal.service"]);
    if wait_bounded(&mut child, STEP).is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    found.with_context(|| {
        format!(
            "no {what:?} from syspushd within {STEP:?}; journal:\n{}",
            c.ok(&["journalctl", "-u", "syspushd", "-b", "--no-pager"])
                .unwrap_or_default()
        )
    })
}

fn journal_us(v: &serde_json::Value, field: &str) -> Result<u64> {
    v[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no {field} in {v}"))
}

/// "Overall exposure level for syspushd.service: 1.3 OK" -> 1.3
fn exposure(out: &str) -> Result<f64> {
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("no exposure line in {out}"))?;
    // "...: 1.3 OK :-)" without a UTF-8 terminal: split after the unit name.
    let v = line
        .split_once(".service:")
        .and_then(|(_, s)| s.split_whitespace().next())
        .context("exposure value")?;
    Ok(v.parse()?)
}

/// The service's main process's mount options at `path` (its own namespace).
fn mount_opts(mountinfo: &str, path: &str) -> Option<(String, String, String)> {
    // id parent dev root MOUNTPOINT OPTS [optional...] - FSTYPE SOURCE SUPEROPTS
    mountinfo
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let f: Vec<&str> = a.split(' ').collect();
            let g: Vec<&str> = b.split(' ').collect();
            (f.get(4) == Some(&path)).then(|| {
                (
                    f.get(5).unwrap_or(&"").to_string(),
                    g.first().unwrap_or(&"").to_string(),
                    g.get(2).unwrap_or(&"").to_string(),
                )
            })
        })
        // The last mount at a path is the visible one.
        .next_back()
}

/// What a booted image shows of the running service's sandbox.
fn check_hardening(c: &Container, syspush_uid: u32) -> Result<()> {
    let pid = c.prop("syspushd.service", "MainPID")?;
    ensure!(pid != "0", "syspushd.service has no main process");
    let status = c.ok(&["cat", &format!("/proc/{pid}/status")])?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let uid = syspush_uid.to_string();
    ensure!(
        field("Uid").iter().all(|u| *u == uid) && field("Gid").iter().all(|g| *g == uid),
        "not running as syspush ({uid}): {status}"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        ensure!(
            field(cap) == ["0000000000000000"],
            "{cap} not empty: {status}"
        );
    }
    ensure!(field("NoNewPrivs") == ["1"], "NoNewPrivs: {status}");
    // 2 = filter mode: SystemCallFilter, RestrictAddressFamilies,
    // MemoryDenyWriteExecute, RestrictNamespaces, LockPersonality,
    // RestrictRealtime, SystemCallArchitectures are all seccomp filters.
    ensure!(field("Seccomp") == ["2"], "no seccomp filter: {status}");

    let own_ns = c.ok(&["readlink", &format!("/proc/{pid}/ns/mnt")])?;
    let init_ns = c.ok(&["readlink", "/proc/1/ns/mnt"])?;
    ensure!(
        own_ns != init_ns,
        "the service has no mount namespace of its own"
    );
    let mi = c.ok(&["cat", &format!("/proc/{pid}/mountinfo")])?;
    let at = |p: &str| mount_opts(&mi, p).with_context(|| format!("nothing mounted at {p}:\n{mi}"));
    let ro = |p: &str| -> Result<()> {
        let (opts, _, _) = at(p)?;
        ensure!(
            opts.split(',').any(|o| o == "ro"),
            "{p} is not read-only ({opts})"
        );
        Ok(())
    };
    let rw = |p: &str| -> Result<()> {
        let (opts, _, _) = at(p)?;
        ensure!(
            opts.split(',').any(|o| o == "rw"),
            "{p} is not writable ({opts})"
        );
        Ok(())
    };
    ro("/")?; // ProtectSystem=strict
    ro("/etc/syspush")?; // config: read-only to the daemon
    rw("/var/lib/syspush")?; // StateDirectory=
    rw("/run/syspush")?; // RuntimeDirectory=
    for p in ["/home", "/root", "/run/user"] {
        ro(p)?; // ProtectHome=yes: empty, inaccessible
    }
    // ProtectKernelTunables=yes. (/proc/sys is not there at all: ProcSubset=pid.)
    ro("/sys")?;
    ro("/sys/fs/cgroup")?; // ProtectControlGroups=yes
    let (_, fs, _) = at("/tmp")?;
    ensure!(fs == "tmpfs", "PrivateTmp: /tmp is {fs}"); // a fresh one
    let (_, fs, _) = at("/dev")?;
    ensure!(fs == "tmpfs", "PrivateDevices: /dev is {fs}");
    let (_, _, sopts) = at("/proc")?;
    ensure!(
        sopts.contains("hidepid=invisible") && sopts.contains("subset=pid"),
        "ProtectProc/ProcSubset: /proc mounted {sopts}"
    );

    // systemd in the image parsed every option (none ignored as unknown).
    let expect = [
        ("User", "syspush"),
        ("Type", "notify"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateMounts", "yes"),
        ("DevicePolicy", "closed"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
        ("RemoveIPC", "yes"),
        ("KeyringMode", "private"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("SystemCallArchitectures", "native"),
        ("SystemCallErrorNumber", "1"), // EPERM
        ("UMask", "0077"),
        ("PrivateUsers", "no"),
        ("WatchdogUSec", "1h"),
    ];
    let mut wrong = Vec::new();
    for (k, want) in expect {
        let got = c.prop("syspushd.service", k)?;
        // Lists come back in systemd's order: compare as sets.
        let set = |v: &str| {
            let mut w: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            w.sort();
            w
        };
        if set(&got) != set(want) {
            wrong.push(format!("{k}={got:?}, want {want:?}"));
        }
    }
    ensure!(wrong.is_empty(), "syspushd.service as loaded: {wrong:#?}");
    let filter = c.prop("syspushd.service", "SystemCallFilter")?;
    for allowed in ["read", "write", "epoll_wait", "sendmsg"] {
        ensure!(
            filter.split_whitespace().any(|s| s == allowed),
            "SystemCallFilter lacks {allowed}"
        );
    }
    for denied in ["setuid", "chown", "setrlimit", "mount", "ptrace"] {
        ensure!(
            !filter.split_whitespace().any(|s| s == denied),
            "SystemCallFilter allows {denied}"
        );
    }
    let unit_log = c.ok(&["journalctl", "-b", "--no-pager", "-o", "cat", "_PID=1"])?;
    let warned: Vec<&str> = unit_log
        .lines()
        .filter(|l| l.contains("syspushd.s") && (l.contains("Unknown") || l.contains("gnoring")))
        .collect();
    ensure!(
        warned.is_empty(),
        "systemd ignored unit settings: {warned:#?}"
    );
    Ok(())
}

#[test]
fn debian_package_boots_in_a_systemd_image_and_serves_apps() -> Result<()> {
    let t_test = Instant::now();
    if !is_root() {
        eprintln!("skipped: needs root (debootstrap, chroot, systemd-nspawn)");
        return Ok(());
    }
    for (tool, args, pkg) in [
        ("debootstrap", &["--version"][..], "debootstrap"),
        ("systemd-nspawn", &["--version"][..], "systemd-container"),
        ("nsenter", &["--version"][..], "util-linux"),
        ("dpkg-deb", &["--version"][..], "dpkg"),
        (
            "cargo",
            &["deb", "--version"][..],
            "cargo install cargo-deb",
        ),
    ] {
        if !have(tool, args) {
            eprintln!("skipped: {tool} is not available (install: {pkg})");
            return Ok(());
        }
    }
    let Some((suite, mirror)) = apt_mirror() else {
        eprintln!("skipped: no Debian mirror for this release in apt's sources");
        return Ok(());
    };

    let target = target_dir()?;
    let cache = target.join("image-cache");
    let t = Instant::now();
    let base = cached_image(&cache, &suite, &mirror)?;
    let t_image = t.elapsed();

    // A fresh copy per run, next to the cache (same file system: reflinks
    // where it supports them).
    let work = tempfile::Builder::new().prefix("run-").tempdir_in(&cache)?;
    let root = work.path().join("root");
    let t = Instant::now();
    run(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&base)
        .arg(&root))?;
    let t_copy = t.elapsed();

    let t = Instant::now();
    let deb_dir = work.path().join("deb");
    std::fs::create_dir_all(&deb_dir)?;
    let deb = syspush::testkit::build_deb(&deb_dir)?;
    std::fs::copy(&deb, root.join("var/cache/syspushd.deb"))?;
    let dpkg = chroot(&root, &["dpkg", "-i", "/var/cache/syspushd.deb"])?;
    std::fs::remove_file(root.join("var/cache/syspushd.deb"))?;
    let syspush_uid = image_uid(&root, "syspush")
        .with_context(|| format!("postinst did not create the user: {}", text(&dpkg.stdout)))?;
    let t_install = t.elapsed();

    let dir = work.path().join("gateway");
    let mut gateway = Gateway::new(&dir)?;
    let app_key = gateway.add_app(APP, &[])?;
    gateway.start()?;
    let app = gateway.app_server(&app_key)?;
    write_config(&root, &gateway)?;
    // The packaged binary accepts it (as the daemon's user would read it).
    chroot(
        &root,
        &["syspushd", "--check-config", "/etc/syspush/syspushd.toml"],
    )?;
    // The apps' users, as an image recipe creates them.
    for (uid, user) in [(APP_UID, "app-chat"), (OTHER_UID, "app-other")] {
        let uid = uid.to_string();
        chroot(
            &root,
            &[
                "useradd",
                "-u",
                &uid,
                "-U",
                "-M",
                "-d",
                "/nonexistent",
                "-s",
                "/usr/sbin/nologin",
                user,
            ],
        )?;
    }
    // What an image recipe does: the service (Also= enables the socket).
    chroot(&root, &["systemctl", "enable", "syspushd.service"])?;

    let name = format!("syspush-test-{}", std::process::id());

    // ---- Boot 1: syspushd.service enabled -------------------------------
    let c = Container::boot(&root, &name, &cache.join("boot1.log"))?;
    let t_boot = Duration::from_micros(monotonic_us()? - c.started_us);
    let state = c.prop("syspushd.service", "ActiveState")?;
    let sub = c.prop("syspushd.service", "SubState")?;
    ensure!(
        state == "active" && sub == "running",
        "syspushd.service is {state}/{sub} after boot; journal:\n{}",
        c.ok(&["journalctl", "-b", "--no-pager"])?
    );
    ensure!(
        c.prop("syspushd.service", "NRestarts")? == "0",
        "syspushd.service restarted during boot"
    );
    // Active (not activating) for a Type=notify service: READY=1 arrived.
    let ready_us: u64 = c
        .prop("syspushd.service", "ActiveEnterTimestampMonotonic")?
        .parse()?;
    let connected = await_journal(&c, "link up")?;
    let connected_us = journal_us(&connected, "__MONOTONIC_TIMESTAMP")?;
    let to_ready = Duration::from_micros(ready_us.saturating_sub(c.started_us));
    let to_connected = Duration::from_micros(connected_us.saturating_sub(c.started_us));

    check_hardening(&c, syspush_uid)?;

    // An app of the allowed uid registers and receives a push from the host.
    let out = run(&mut c.app(
        APP_UID,
        "app-register",
        &["/usr/bin/syspushctl", "register", APP],
    ))?;
    let token = text(&out.stdout).trim().to_string();
    ensure!(!token.is_empty(), "register printed no token");
    let (listen, lines) = spawn_lines(c.app(
        APP_UID,
        "app-listen",
        &["/usr/bin/syspushctl", "listen", APP, "--count", "1"],
    ))?;
    let r = app.send(&serde_json::json!({"token": token, "title": "to the image", "desc": "d"}))?;
    ensure!(r.status == 200, "send: {} {}", r.status, r.body);
    let line = lines
        .recv_timeout(STEP)
        .map_err(|e| anyhow!("no notification in the image within {STEP:?}: {e}"))?;
    let n: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(
        n["message_id"] == r.body["message_id"] && n["title"] == "to the image",
        "got {n}, sent {}",
        r.body
    );
    let out = listen.wait_with_output()?;
    ensure!(out.status.success(), "listen: {}", text(&out.stderr));

    // An app of another uid is refused.
    for (unit, args) in [
        (
            "other-register",
            ["/usr/bin/syspushctl", "register", APP].as_slice(),
        ),
        (
            "other-listen",
            [
                "timeout",
                "30",
                "/usr/bin/syspushctl",
                "listen",
                APP,
                "--count",
                "1",
            ]
            .as_slice(),
        ),
    ] {
        let out = c.app(OTHER_UID, unit, args).output()?;
        let err = text(&out.stderr);
        ensure!(
            !out.status.success() && err.to_lowercase().contains("permission"),
            "uid {OTHER_UID} {args:?}: {} / {err}",
            out.status
        );
    }

    // A push while no app listens waits in the daemon's store; stop (timed)
    // and start the service: it is still there.
    let r = app.send(&serde_json::json!({"token": token, "title": "kept", "desc": "d"}))?;
    ensure!(r.status == 200, "send: {} {}", r.status, r.body);
    let kept_id = r.body["message_id"].clone();
    // Bounded poll: no event tells the outside that the daemon committed it.
    let until = Instant::now() + STEP;
    loop {
        let s = c.ok(&["syspushctl", "status", "--json"])?;
        let v: serde_json::Value = serde_json::from_str(s.trim())?;
        let pending = v["apps"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["app_id"] == APP))
            .and_then(|x| x["pending"].as_u64())
            .unwrap_or(0);
        if pending >= 1 {
            break;
        }
        ensure!(Instant::now() < until, "push never reached the store: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    c.ok(&["systemctl", "stop", "syspushd.service"])?;
    let t_stop = t.elapsed();
    ensure!(
        t_stop < Duration::from_secs(2),
        "systemctl stop took {t_stop:?}"
    );
    ensure!(
        c.prop("syspushd.service", "Result")? == "success"
            && c.prop("syspushd.service", "ActiveState")? == "inactive",
        "stop did not end cleanly: {}",
        c.ok(&[
            "journalctl",
            "-u",
            "syspushd",
            "-b",
            "--no-pager",
            "-n",
            "20"
        ])?
    );
    c.ok(&["systemctl", "start", "syspushd.service"])?;
    let out = run(&mut c.app(
        APP_UID,
        "app-listen-2",
        &[
            "timeout",
            "60",
            "/usr/bin/syspushctl",
            "listen",
            APP,
            "--count",
            "1",
        ],
    ))?;
    let n: serde_json::Value = serde_json::from_str(text(&out.stdout).trim())?;
    ensure!(
        n["message_id"] == kept_id,
        "after restart got {n}, want {kept_id}"
    );

    // The journal: the daemon's entries under its unit and uid, written
    // natively (JOURNAL_STREAM), each tracing field a journal field.
    let j = c.ok(&[
        "journalctl",
        "-u",
        "syspushd",
        "-b",
        "-o",
        "json",
        "--no-pager",
    ])?;
    let entries: Vec<serde_json::Value> = j
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let own: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["SYSLOG_IDENTIFIER"] == "syspushd")
        .collect();
    ensure!(!own.is_empty(), "no syspushd entries in the journal");
    for e in &own {
        ensure!(
            e["_SYSTEMD_UNIT"] == "syspushd.service"
                && e["_UID"].as_str() == Some(syspush_uid.to_string().as_str())
                && e["_COMM"] == "syspushd",
            "entry without unit/uid fields: {e}"
        );
    }
    ensure!(
        connected["SYSPUSH_SESSION_ID"].is_string() && connected["SYSPUSH_HEARTBEAT_S"].is_string(),
        "link up without its structured fields: {connected}"
    );
    // tracing-journald maps INFO to notice (5), WARN to 4, ERROR to 3.
    ensure!(connected["PRIORITY"] == "5", "link up is info: {connected}");
    ensure!(
        own.iter()
            .any(|e| e["MESSAGE"].as_str().is_some_and(|m| m.contains("stopped"))),
        "no 'stopped' entry from the stop"
    );

    // systemd-analyze security, live in the image and offline, and on the host.
    let live = exposure(&c.ok(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "syspushd.service",
    ])?)?;
    let offline = exposure(&c.ok(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "--offline=true",
        "/usr/lib/systemd/system/syspushd.service",
    ])?)?;
    ensure!(live == offline, "exposure live {live} != offline {offline}");
    ensure!(live <= 2.0, "exposure {live} > 2.0");

    let t_off1 = c.poweroff()?;

    // ---- Boot 2: only syspushd.socket enabled ----------------------------
    chroot(&root, &["systemctl", "disable", "syspushd.service"])?;
    chroot(&root, &["systemctl", "enable", "syspushd.socket"])?;
    let c = Container::boot(&root, &name, &cache.join("boot2.log"))?;
    ensure!(
        c.prop("syspushd.socket", "ActiveState")? == "active",
        "syspushd.socket not listening after boot"
    );
    ensure!(
        c.prop("syspushd.service", "ActiveState")? == "inactive",
        "syspushd.service runs without an app having connected"
    );
    // The first app connection: registering again returns its token.
    let t = Instant::now();
    let out = run(&mut c.app(
        APP_UID,
        "app-register",
        &["/usr/bin/syspushctl", "register", APP],
    ))?;
    let t_first = t.elapsed();
    ensure!(
        text(&out.stdout).trim() == token,
        "token changed across reboot: {} vs {token}",
        text(&out.stdout).trim()
    );
    ensure!(
        c.prop("syspushd.service", "ActiveState")? == "active",
        "the app connection did not start syspushd.service"
    );
    let (listen, lines) = spawn_lines(c.app(
        APP_UID,
        "app-listen",
        &["/usr/bin/syspushctl", "listen", APP, "--count", "1"],
    ))?;
    let r = app.send(&serde_json::json!({"token": token, "title": "activated", "desc": "d"}))?;
    ensure!(r.status == 200, "send: {} {}", r.status, r.body);
    let line = lines
        .recv_timeout(STEP)
        .map_err(|e| anyhow!("no notification after socket activation: {e}"))?;
    let n: serde_json::Value = serde_json::from_str(&line)?;
    ensure!(n["message_id"] == r.body["message_id"], "got {n}");
    ensure!(listen.wait_with_output()?.status.success(), "listen failed");
    let t_off2 = c.poweroff()?;
    drop(gateway);

    eprintln!(
        "image figures: {suite} image {} ({:.1} s), copy {:.1} s, deb build+dpkg -i {:.1} s",
        if t_image > Duration::from_secs(5) {
            "built"
        } else {
            "cached"
        },
        t_image.as_secs_f64(),
        t_copy.as_secs_f64(),
        t_install.as_secs_f64()
    );
    eprintln!(
        "image figures: container start -> boot finished {:.2} s, -> syspushd READY {:.2} s, \
         -> connected {:.2} s; systemctl stop {:.0} ms; socket-activated first register {:.2} s; \
         poweroff {:.2} s / {:.2} s; exposure {live} (offline {offline}); whole test {:.1} s",
        t_boot.as_secs_f64(),
        to_ready.as_secs_f64(),
        to_connected.as_secs_f64(),
        t_stop.as_secs_f64() * 1000.0,
        t_first.as_secs_f64(),
        t_off1.as_secs_f64(),
        t_off2.as_secs_f64(),
        t_test.elapsed().as_secs_f64()
    );
    Ok(())
}

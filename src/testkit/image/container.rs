//! A booted container: `systemd-nspawn --boot` of an image tree, commands run
//! inside it with `nsenter` into its init's namespaces, app processes as
//! transient units, and a teardown that leaves no process or mount behind.
//!
//! The boot is awaited with `--notify-ready=yes` (nspawn forwards systemd's
//! READY=1 to our `NOTIFY_SOCKET`, with the leader's pid) and the poweroff
//! with `wait()` on nspawn; nothing is guessed with sleeps.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::exec::{PATH_ENV, monotonic_us, run, text};
use crate::testkit::wait::wait_bounded;

/// Failure bound for a boot or a poweroff: not a wait.
pub const BOOT_BOUND: Duration = Duration::from_secs(120);

/// A booted container: `systemd-nspawn -b` and its init's pid on the host.
/// Dropping it without [`Container::poweroff`] halts it (a failed test).
pub struct Container {
    nspawn: Option<Child>,
    leader: i32,
    /// Host CLOCK_MONOTONIC (µs) just before nspawn was spawned.
    pub started_us: u64,
    root: PathBuf,
    name: String,
    log: PathBuf,
}

impl Container {
    /// Boots `root` as machine `name` (nspawn's output to `log`) and returns
    /// once its systemd reported the boot finished.
    pub fn boot(root: &Path, name: &str, log: &Path) -> Result<Self> {
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
        let until = Instant::now() + BOOT_BOUND;
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
                "container not booted within {BOOT_BOUND:?}; log:\n{}",
                c.log()
            );
        }
        drop(notify);
        let _ = std::fs::remove_file(&notify_path);
        ensure!(c.leader > 0, "nspawn sent no X_NSPAWN_LEADER_PID");
        Ok(c)
    }

    /// nspawn's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A command run inside the container (all its namespaces, its root).
    pub fn cmd(&self, args: &[&str]) -> Command {
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
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = run(&mut self.cmd(args))?;
        Ok(text(&out.stdout))
    }

    /// `systemctl show -P PROP UNIT`.
    pub fn prop(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .ok(&["systemctl", "show", "-P", prop, unit])?
            .trim()
            .to_string())
    }

    /// A transient unit running `args` as `uid`, waited for, output piped back.
    pub fn app(&self, uid: u32, unit: &str, args: &[&str]) -> Command {
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
    /// Returns how long the poweroff took.
    pub fn poweroff(mut self) -> Result<Duration> {
        let t = Instant::now();
        self.ok(&["systemctl", "poweroff", "--no-block"])?;
        let mut child = self.nspawn.take().context("nspawn gone")?;
        let st = wait_bounded(&mut child, BOOT_BOUND)?;
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

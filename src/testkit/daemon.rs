//! A `syspushd` process with its own state dir, socket and config (and the
//! `[[app]]` policy written into it).
//!
//! Ready when it sent systemd's `READY=1` to a `NOTIFY_SOCKET` this kit binds
//! for each start: the store is open and the app socket listening.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::{Context, Result, bail};

use super::gateway::Gateway;
use super::paths::bin;
use super::process::{in_netns, log_file, signal};
use super::wait::READY_BOUND;

/// One `[[app]]` entry of the daemon's policy.
#[derive(Clone, Debug)]
pub struct AppPolicy {
    /// App id.
    pub id: String,
    /// Uids allowed to act for it.
    pub uids: Vec<u32>,
}

impl AppPolicy {
    /// The policy's `[[app]]` table, as the daemon's config holds it.
    pub fn toml(&self) -> String {
        let uids: Vec<String> = self.uids.iter().map(|u| u.to_string()).collect();
        format!(
            "\n[[app]]\nid = \"{}\"\nuids = [{}]\n",
            self.id,
            uids.join(", ")
        )
    }
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
            cfg.push_str(&a.toml());
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
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

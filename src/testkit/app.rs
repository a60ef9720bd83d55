//! The app side of a [`Daemon`]'s socket: `syspushctl` run to completion or
//! left listening (one JSON line per notification, stderr drained), and raw
//! bytes for the garbage and oversized-frame tests.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::daemon::Daemon;
use super::output::Lines;
use super::paths::bin;
use super::wait::READY_BOUND;

impl Daemon {
    /// Runs `syspushctl --socket SOCK args...` to completion.
    pub fn ctl(&self, args: &[&str]) -> Result<Output> {
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
        Ok(Listen(Lines::spawn(&mut cmd)?))
    }
}

/// A running `syspushctl listen`: one JSON line per notification. Killed
/// when dropped.
pub struct Listen(Lines);

impl Listen {
    /// Next notification, or an error after `bound` (or when the process ended).
    pub fn next(&self, bound: Duration) -> Result<serde_json::Value> {
        let line = self
            .0
            .lines
            .recv_timeout(bound)
            .map_err(|e| anyhow!("no notification within {bound:?}: {e}"))?;
        serde_json::from_str(&line).with_context(|| format!("bad JSON line {line:?}"))
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.0.child.id()
    }

    /// Waits for the process to end and returns its status and stderr.
    pub fn finish(self) -> Result<(ExitStatus, String)> {
        self.0.finish()
    }
}

/// Writes raw bytes to the daemon's app socket and returns what it answered
/// before closing (for garbage and oversized-frame tests).
pub fn raw_exchange(socket: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(READY_BOUND))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(out)
}

//! What the process runners share: a log file to append a child's output to,
//! signalling a child, and running a binary inside a network namespace.

use std::path::Path;
use std::process::{Child, Command};

use anyhow::{Context, Result};

/// `path` opened for appending (created if missing): a child's stdout/stderr.
pub(crate) fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}

/// Sends `sig` to `child` (gone already: nothing to do).
pub(crate) fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, sig);
}

/// A command for `program`, wrapped in `ip netns exec NS` when `netns` is given.
pub(crate) fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

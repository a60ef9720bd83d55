//! Running the harness's commands: checked runs whose error carries the
//! command's output, commands in a chroot of the image tree (before boot),
//! and the clock the booted container stamps with.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};

/// The `PATH` commands in the image run with (the environment is cleared).
pub const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` to completion; fails unless it exits 0, with its output in the error.
pub fn run(cmd: &mut Command) -> Result<Output> {
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

/// Runs `args` chrooted into the image tree `root` (as an image recipe does
/// before the first boot); fails unless it exits 0.
pub fn chroot(root: &Path, args: &[&str]) -> Result<Output> {
    run(Command::new("chroot")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", PATH_ENV)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null()))
}

/// CLOCK_MONOTONIC in µs: the clock systemd and journald inside the container
/// stamp with (nspawn makes no time namespace), so their timestamps compare
/// with ours.
pub fn monotonic_us() -> Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    Ok(t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
}

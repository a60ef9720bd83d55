//! The one skip policy: what a test does when this machine cannot run it
//! (not root, a tool missing).
//!
//! On a developer's machine it prints `skipped: WHY` and the test returns
//! early (passes). Under `CI=true` it panics with the same reason instead: CI
//! runs as root and installs every tool (`.ci/run`), so a skip there is a
//! broken setup, and a green run must mean every test ran.
//!
//! The `require_*` functions return whether the test may go on, so a test
//! reads `if !require_root("mounts a tmpfs") { return Ok(()); }`.

use std::process::{Command, Stdio};

/// Whether the environment says this is a CI run (`CI=true`, or `CI=1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// This test (or part of it) cannot run here because of `why`: prints
/// `skipped: WHY`, or panics with it under `CI=true`.
#[track_caller]
pub fn skip(why: &str) {
    assert!(
        !in_ci(),
        "would be skipped, but CI=true (a skip in CI is a broken setup): {why}"
    );
    eprintln!("skipped: {why}");
}

/// True when running as root (tests that switch uids or mount need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when root; otherwise [`skip`]s with "needs root (`what`)".
#[track_caller]
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(&format!("needs root ({what})"));
    false
}

/// Whether `cmd args` runs and exits 0 (the tool is installed and works).
pub fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when [`have`]`(cmd, args)`; otherwise [`skip`]s, naming `install`
/// (how to get the tool).
#[track_caller]
pub fn require_tool(cmd: &str, args: &[&str], install: &str) -> bool {
    if have(cmd, args) {
        return true;
    }
    let line = std::iter::once(cmd)
        .chain(args.iter().copied())
        .collect::<Vec<_>>();
    skip(&format!(
        "`{}` does not run (install: {install})",
        line.join(" ")
    ));
    false
}

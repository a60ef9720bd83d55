//! Waiting with failure bounds. Readiness is never guessed with sleeps: the
//! runners await each process's own signal (a printed line, READY=1, an
//! exit). The bounds here only turn a hang into a failing test.

use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How long a process may take to become ready before the test fails.
pub const READY_BOUND: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds, failing after `bound`. Only for
/// conditions nothing announces (a line in a log file); readiness of the
/// processes themselves is still awaited through their own signals.
pub fn wait_until(bound: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > bound {
            bail!("{what}: not within {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits for `child` to exit, failing after `bound` (a thread blocks in
/// waitid; the exit itself is the event, nothing is polled).
pub fn wait_bounded(child: &mut Child, bound: Duration) -> Result<ExitStatus> {
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

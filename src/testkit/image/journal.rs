//! Following a unit's journal inside a booted container: the way to await an
//! event the daemon only logs (its link coming up), and the entry's fields.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::container::Container;
use crate::testkit::output::Lines;
use crate::testkit::wait::wait_bounded;

/// Follows `unit`'s journal of this boot until an entry's MESSAGE contains
/// `what`, failing after `bound`; returns that entry (JSON).
pub fn await_journal(
    c: &Container,
    unit: &str,
    what: &str,
    bound: Duration,
) -> Result<serde_json::Value> {
    let secs = bound.as_secs().to_string();
    let unit_arg = format!("--unit={unit}");
    // In a transient unit of the container, so that stopping the unit ends
    // it (killing nsenter would orphan journalctl inside).
    let mut follow = Lines::spawn(&mut c.cmd(&[
        "systemd-run",
        "--quiet",
        "--pipe",
        "--wait",
        "--collect",
        "--unit=await-journal",
        "timeout",
        &secs,
        "journalctl",
        "--follow",
        "--no-tail",
        "--output=json",
        &unit_arg,
        "--boot",
    ]))?;
    let until = Instant::now() + bound;
    let found = loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(line) = follow.lines.recv_timeout(left) else {
            break None;
        };
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if v["MESSAGE"].as_str().is_some_and(|m| m.contains(what)) {
            break Some(v);
        }
    };
    let _ = c.ok(&["systemctl", "stop", "await-journal.service"]);
    // Lines kills and reaps it on drop if it does not end by itself.
    let _ = wait_bounded(&mut follow.child, bound);
    found.with_context(|| {
        format!(
            "no {what:?} from {unit} within {bound:?}; journal:\n{}",
            c.ok(&["journalctl", "-u", unit, "-b", "--no-pager"])
                .unwrap_or_default()
        )
    })
}

/// A numeric field of a journal entry (`__MONOTONIC_TIMESTAMP`, ...).
pub fn journal_u64(entry: &serde_json::Value, field: &str) -> Result<u64> {
    entry[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no {field} in {entry}"))
}

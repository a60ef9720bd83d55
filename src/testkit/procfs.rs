//! Figures a process shows in `/proc/PID/status`: memory (`VmRSS`, `VmHWM`)
//! and context switches, for the fault and abuse tests and the benchmarks.

/// The number a field of `/proc/PID/status` starts with (`None` when the
/// process or the field is gone).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A memory field of `/proc/PID/status` in KiB (`VmHWM`: peak resident set,
/// `VmRSS`: resident now).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    proc_status(pid, field)
}

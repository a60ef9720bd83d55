//! `syspushctl doctor` and `syspushctl test` with the gateway down (issue
//! 11, item 7), against real processes: the checks that cannot run say so
//! with the real cause (connection refused), and `test --timeout N` ends in
//! N seconds, not in the daemon's own 10.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde_json::Value;
use syspush::testkit::Stack;

/// Failure bound for anything awaited (never a sleep).
const BOUND: Duration = Duration::from_secs(60);
const APP: &str = "com.example.chat";

fn doctor_json(s: &Stack) -> Result<Value> {
    let out = s.daemon.ctl(&["doctor", "--json"])?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn check<'a>(report: &'a Value, name: &str) -> Result<&'a Value> {
    report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .ok_or_else(|| anyhow::anyhow!("no check {name:?} in {report}"))
}

#[test]
fn with_the_gateway_down_doctor_names_the_cause_and_test_ends_in_its_timeout() -> Result<()> {
    let mut s = Stack::new(APP, &[])?;
    s.daemon.register(APP)?;
    s.gateway.stop()?;

    // Once the daemon has redialed and been refused (the link's last error
    // is the refused TCP connect), TLS cannot have been checked.
    let start = Instant::now();
    let report = loop {
        let report = doctor_json(&s)?;
        let tls = check(&report, "TLS verified")?;
        if tls["skipped"] == true
            && tls["detail"]
                .as_str()
                .is_some_and(|d| d.contains("unreachable"))
        {
            break report;
        }
        if start.elapsed() > BOUND {
            bail!("doctor never said TLS could not be checked: {report}");
        }
        std::thread::yield_now();
    };
    let tls = check(&report, "TLS verified")?;
    let detail = tls["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.starts_with("cannot check: gateway unreachable")
            && detail.to_ascii_lowercase().contains("connection refused"),
        "{tls}"
    );
    ensure!(
        !tls["hint"].as_str().unwrap_or_default().contains("ca_file"),
        "{tls}"
    );
    let reachable = check(&report, "gateway reachable")?;
    ensure!(
        reachable["ok"] == false && reachable["skipped"] == false,
        "{reachable}"
    );
    let token = check(&report, &format!("{APP}: token valid at the gateway"))?;
    ensure!(
        token["skipped"] == true
            && token["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("cannot check")),
        "{token}"
    );
    ensure!(
        !token["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("register again"),
        "{token}"
    );
    ensure!(report["ok"] == false, "{report}");
    let text = s.daemon.ctl(&["doctor"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        text.contains("SKIP TLS verified: cannot check") && text.contains("FAIL connected"),
        "{text}"
    );

    // `test --timeout 2` takes about 2 s, not the daemon's 10.
    let t = Instant::now();
    let out = s.daemon.ctl(&["test", APP, "--timeout", "2"])?;
    let took = t.elapsed();
    ensure!(!out.status.success(), "test passed with the gateway down");
    ensure!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "syspushctl test --timeout 2 took {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

//! The heartbeat policy against simulated NATs, in virtual time: hours of
//! heartbeats per millisecond of test.

use super::*;

const S: Duration = Duration::from_secs(1);
const PONG_TIMEOUT: Duration = Duration::from_secs(10);

/// A NAT that forgets a mapping idle for `timeout` or more; a failed heartbeat
/// costs the pong timeout and a reconnect (a fresh mapping).
struct Sim {
    nat: Duration,
    now: Duration,
    heartbeats: u64,
    failures: u64,
    /// Heartbeats sent above the proven interval.
    probes: u64,
}

impl Sim {
    fn new(nat: Duration) -> Self {
        Self {
            nat,
            now: Duration::from_secs(1000),
            heartbeats: 0,
            failures: 0,
            probes: 0,
        }
    }

    /// One heartbeat cycle; true if it succeeded.
    fn step(&mut self, p: &mut HeartbeatPolicy) -> bool {
        let silence = p.interval();
        if p.learned().good.is_none_or(|g| silence > g) {
            self.probes += 1;
        }
        self.heartbeats += 1;
        self.now += silence;
        if silence < self.nat {
            p.on_success(self.now, silence);
            true
        } else {
            self.now += PONG_TIMEOUT;
            self.failures += 1;
            p.on_failure(self.now, silence);
            false
        }
    }

    /// Steps until the policy is stable; returns (virtual time, heartbeats, failures, probes).
    fn converge(&mut self, p: &mut HeartbeatPolicy) -> (Duration, u64, u64, u64) {
        let start = self.now;
        for _ in 0..10_000 {
            if p.state() == HeartbeatState::Stable {
                return (
                    self.now - start,
                    self.heartbeats,
                    self.failures,
                    self.probes,
                );
            }
            self.step(p);
        }
        panic!("no convergence for NAT {:?}: {:?}", self.nat, p);
    }
}

fn cfg() -> HeartbeatConfig {
    HeartbeatConfig {
        min: Duration::from_secs(20),
        ..HeartbeatConfig::default()
    }
}

fn assert_close(p: &HeartbeatPolicy, nat: Duration, max: Duration) {
    let i = p.interval();
    if nat > max {
        assert_eq!(i, max, "NAT {nat:?}: should sit at the maximum");
    } else {
        assert!(
            i * 4 >= nat * 3 && i < nat,
            "NAT {nat:?}: interval {i:?} not in [0.75 T, T)"
        );
    }
}

#[test]
fn converges_close_under_every_nat_and_stays_there() {
    let c = cfg();
    for nat_s in [45, 120, 300, 1200, 2400] {
        let nat = nat_s * S;
        let mut p = HeartbeatPolicy::new(c, None);
        let mut sim = Sim::new(nat);
        let (took, heartbeats, failures, probes) = sim.converge(&mut p);
        assert_close(&p, nat, c.max);
        assert!(
            took <= Duration::from_secs(5 * 3600),
            "NAT {nat_s}s took {took:?}"
        );
        assert!(failures <= 5, "NAT {nat_s}s: {failures} failures");
        assert!(probes <= 10, "NAT {nat_s}s: {probes} probes");
        let _ = heartbeats;

        // A day after convergence: no failure but the re-probes of the ceiling,
        // and the interval comes back to where it was.
        let settled = p.interval();
        let (f0, h0, t0) = (sim.failures, sim.heartbeats, sim.now);
        while sim.now < t0 + Duration::from_secs(24 * 3600) {
            sim.step(&mut p);
        }
        let failures = sim.failures - f0;
        // Re-probes after 6 h, then 12 h (doubling): at most two in a day.
        assert!(failures <= 2, "NAT {nat_s}s: {failures} failures in 24 h");
        assert_eq!(p.interval(), settled, "NAT {nat_s}s");
        let per_hour = (sim.heartbeats - h0 + failures) as f64 / 24.0;
        let ideal = 3600.0 / nat.min(c.max).as_secs_f64();
        assert!(
            per_hour <= ideal * 1.2 + 0.5,
            "NAT {nat_s}s: {per_hour:.1} exchanges/h, ideal {ideal:.1}"
        );
    }
}

#[test]
fn remembered_state_starts_where_it_ended() {
    let nat = 600 * S;
    let mut p = HeartbeatPolicy::new(cfg(), None);
    Sim::new(nat).converge(&mut p);
    let learned = p.learned();
    let again = HeartbeatPolicy::new(cfg(), Some(learned));
    assert_eq!(again.interval(), p.interval());
    assert_eq!(again.state(), HeartbeatState::Stable);
    // Nothing learned but a failure: start below it.
    let only_ceiling = HeartbeatPolicy::new(
        cfg(),
        Some(Learned {
            good: None,
            ceiling: Some(100 * S),
        }),
    );
    assert_eq!(only_ceiling.interval(), 80 * S);
}

#[test]
fn probes_upward_only_after_the_configured_successes() {
    let mut p = HeartbeatPolicy::new(cfg(), None);
    assert_eq!(p.interval(), 270 * S);
    assert_eq!(p.state(), HeartbeatState::Probing);
    p.on_success(270 * S, 270 * S);
    assert_eq!(p.interval(), 270 * S, "one success is not a run");
    p.on_success(540 * S, 270 * S);
    assert_eq!(p.interval(), 405 * S, "+50 % after two");
    p.on_failure(1000 * S, 405 * S);
    assert_eq!(p.learned().ceiling, Some(405 * S));
    assert!(
        p.interval() < 270 * S && p.interval() >= 264 * S,
        "just under the proven 270 s"
    );
    p.on_success(1300 * S, p.interval());
    p.on_success(1600 * S, p.interval());
    assert_eq!(
        p.interval(),
        Duration::from_millis(337_500),
        "bisects the bracket"
    );
}

#[test]
fn a_failure_of_the_settled_interval_distrusts_it() {
    let nat = 1200 * S;
    let mut p = HeartbeatPolicy::new(cfg(), None);
    let mut sim = Sim::new(nat);
    sim.converge(&mut p);
    // The device moved behind a stingier NAT without a route change.
    sim.nat = 200 * S;
    let (took, _, failures, _) = {
        let f0 = sim.failures;
        let r = sim.converge_after_change(&mut p);
        (r.0, r.1, sim.failures - f0, r.3)
    };
    assert_close(&p, sim.nat, cfg().max);
    assert!(failures <= 6, "{failures} failures to re-learn");
    assert!(took <= Duration::from_secs(4 * 3600), "{took:?}");
}

impl Sim {
    /// Like `converge`, but first leaves the stable state a change knocks it out of.
    fn converge_after_change(&mut self, p: &mut HeartbeatPolicy) -> (Duration, u64, u64, u64) {
        let start = self.now;
        while self.step(p) {}
        let r = self.converge(p);
        (self.now - start, r.1, r.2, r.3)
    }
}

#[test]
fn a_grown_nat_timeout_is_found_by_the_reprobe() {
    let mut p = HeartbeatPolicy::new(cfg(), None);
    let mut sim = Sim::new(300 * S);
    sim.converge(&mut p);
    let before = p.interval();
    sim.nat = 1500 * S;
    let t0 = sim.now;
    while sim.now < t0 + Duration::from_secs(12 * 3600) {
        sim.step(&mut p);
    }
    assert!(
        p.interval() > before * 3,
        "{:?} after the re-probe",
        p.interval()
    );
    assert_close(&p, sim.nat, cfg().max);
}

#[test]
fn gateway_bounds_narrow_the_range() {
    let mut p = HeartbeatPolicy::new(cfg(), None);
    p.set_gateway_bounds(60 * S, 120 * S);
    assert_eq!(p.interval(), 120 * S);
    let mut sim = Sim::new(3000 * S);
    sim.converge(&mut p);
    assert_eq!(p.interval(), 120 * S);
    // A NAT below the minimum: stuck at the minimum, still stable.
    let mut p = HeartbeatPolicy::new(cfg(), None);
    p.set_gateway_bounds(60 * S, Duration::ZERO);
    for i in 0..10 {
        p.on_failure(i * 100 * S, p.interval());
    }
    assert_eq!(p.interval(), 60 * S);
}

#[test]
fn a_late_heartbeat_failure_does_not_distrust_the_interval() {
    let mut p = HeartbeatPolicy::new(cfg(), None);
    let mut sim = Sim::new(1200 * S);
    sim.converge(&mut p);
    let settled = p.interval();
    let good = p.learned().good;
    // Two hours of suspend without a wake alarm, then the heartbeat fails.
    p.on_failure(sim.now + 7200 * S, 7200 * S);
    assert_eq!(p.interval(), settled);
    assert_eq!(p.learned().good, good);
}

/// Figures for the report: `cargo test -p syspushd heartbeat::tests::figures -- --ignored --nocapture`.
#[test]
#[ignore = "prints figures"]
fn figures() {
    let c = cfg();
    for nat_s in [45u32, 120, 300, 1200, 2400] {
        let nat = nat_s * S;
        let mut p = HeartbeatPolicy::new(c, None);
        let mut sim = Sim::new(nat);
        let (took, hb, failures, probes) = sim.converge(&mut p);
        let (h0, f0, t0) = (sim.heartbeats, sim.failures, sim.now);
        while sim.now < t0 + Duration::from_secs(24 * 3600) {
            sim.step(&mut p);
        }
        eprintln!(
            "NAT {nat_s:>5}s: learned {:>7.1}s ({:>3.0}% of T) in {:>5.1} min, {hb} heartbeats, \
             {probes} probes, {failures} failures; next 24 h: {:.2} exchanges/h, {} failures",
            p.interval().as_secs_f64(),
            100.0 * p.interval().as_secs_f64() / nat.as_secs_f64(),
            took.as_secs_f64() / 60.0,
            (sim.heartbeats - h0 + sim.failures - f0) as f64 / 24.0,
            sim.failures - f0,
        );
    }
}

//! The adaptive heartbeat policy: learns the longest idle interval the current
//! network's NAT keeps a TCP mapping alive, sans-I/O (time comes in as boot
//! time, nothing is read from a clock).
//!
//! An idle push channel costs one exchange per heartbeat; the limit is one
//! exchange per NAT idle timeout `T` of the network the device is on. The
//! policy keeps two facts about the network, and that is all it persists
//! ([`Learned`]):
//! - `good`: the longest silence proven survivable (a heartbeat sent after that
//!   much silence was answered; a success is *proof*, unlike a failure, which
//!   may be plain packet loss);
//! - `ceiling`: the shortest silence seen to kill the link.
//!
//! So `good <= T < ceiling`, and learning is a search for `T` in that bracket:
//! - start at the configured safe interval (`heartbeat_s`, default 270 s: under
//!   the 5 min that the stingiest common carrier NATs keep, above the 2–4 min
//!   some home routers use only by a little — a failure there costs one
//!   reconnect and teaches the ceiling);
//! - after `probe_after` successes at the current interval (default 2: one
//!   proof and one confirmation), probe upward: with no ceiling known, grow
//!   geometrically (default +50 %, i.e. 270 → 405 → 607 → 911 → 1367 → 1680 s,
//!   the 28 min maximum in five steps); with a ceiling known, bisect between
//!   `good` and `ceiling`;
//! - a failed probe makes its interval the ceiling and falls back to just
//!   under `good` (2 %, at most 5 s: `good` is proven, the margin only absorbs
//!   round-trip and timer jitter for a value that may sit at the NAT's edge); a failure of an interval
//!   that was *not* above `good` (the NAT got stingier, or noise) distrusts
//!   `good` and steps back to `step_back_pct` (default 80 %) of the failed
//!   interval, and halves on each further failure with nothing proven (a
//!   45 s NAT is found from 270 s in four failures, not nine);
//! - stop when `good >= precision_pct` (default 90 %) of the ceiling, or at the
//!   maximum: the state is then [`HeartbeatState::Stable`], and the interval
//!   is within 10 % of the NAT timeout;
//! - once stable for `reprobe_after` (default 6 h), probe the ceiling once
//!   more, so that a NAT whose timeout grew is found; each failed re-probe
//!   doubles the wait (up to 8×), so a NAT that did not change costs a handful
//!   of reconnects per week, not per day.
//!
//! Compared with the references in the design brief: microG steps ×1.02 up /
//! ×0.95 down, taking dozens of hours to move between 5 and 15 min and never
//! settling; Tencent Mars probes +60 s after 5 successes between 3.5 and
//! 10 min. Geometric growth then bisection converges in O(log) probes over the
//! whole 1–28 min range (see the tests in `heartbeat_tests.rs`).
//!
//! What counts as a success or a failure is the session's business: it passes
//! the silence the NAT had to survive (from the last frame received to the
//! heartbeat), so a late timer (suspend without a wake alarm) or a delivery that
//! postponed the heartbeat is measured, not assumed.

use std::time::Duration;

/// Tunables (config keys `heartbeat_*`; see `config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Interval on a network with nothing learned.
    pub initial: Duration,
    /// Lower bound.
    pub min: Duration,
    /// Upper bound.
    pub max: Duration,
    /// Successes at the current interval before probing upward (>= 1).
    pub probe_after: u32,
    /// Upward step while no ceiling is known, percent of the current interval.
    pub growth_pct: u32,
    /// Converged once `good` is at least this percentage of the ceiling (50..=99).
    pub precision_pct: u32,
    /// After a failure with nothing proven below it, retry at this percentage
    /// of the failed interval (10..=99).
    pub step_back_pct: u32,
    /// Stable this long: probe the ceiling again.
    pub reprobe_after: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(270),
            min: Duration::from_secs(30),
            max: Duration::from_secs(1680),
            probe_after: 2,
            growth_pct: 50,
            precision_pct: 90,
            step_back_pct: 80,
            reprobe_after: Duration::from_secs(6 * 3600),
        }
    }
}

impl HeartbeatConfig {
    /// A heartbeat that never adapts: `interval` is the start, the minimum and the maximum.
    pub fn fixed(interval: Duration) -> Self {
        Self {
            initial: interval,
            min: interval,
            max: interval,
            ..Self::default()
        }
    }
}

/// Whether the policy is still searching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatState {
    /// Searching for the NAT timeout (or re-probing it).
    Probing,
    /// Converged: the interval stays put until the next re-probe.
    Stable,
}

impl HeartbeatState {
    /// `"probing"` / `"stable"`, as status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            HeartbeatState::Probing => "probing",
            HeartbeatState::Stable => "stable",
        }
    }
}

/// What is remembered about one network (persisted in the store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// Longest silence proven survivable.
    pub good: Option<Duration>,
    /// Shortest silence seen to kill the link.
    pub ceiling: Option<Duration>,
}

/// Most a failed re-probe multiplies the re-probe wait by.
const MAX_REPROBE_FACTOR: u32 = 8;
/// Most the settled interval stays under the proven one (it is 2 % below it up to this).
const SETTLE_MARGIN_MAX: Duration = Duration::from_secs(5);
/// Probes closer than this to `good` are not worth a possible failure.
const MIN_STEP: Duration = Duration::from_secs(1);

/// The policy. See the module docs.
#[derive(Debug, Clone)]
pub struct HeartbeatPolicy {
    cfg: HeartbeatConfig,
    /// Effective bounds: the config's, narrowed by the gateway's.
    min: Duration,
    max: Duration,
    good: Option<Duration>,
    ceiling: Option<Duration>,
    /// The interval to use next.
    current: Duration,
    /// `current` is above `good` (a probe).
    probing: bool,
    /// The current probe re-tests the ceiling of a stable state.
    reprobing: bool,
    /// Successes at `current` since it was set.
    streak: u32,
    /// Boot time the state became stable (for re-probing).
    stable_since: Option<Duration>,
    reprobe_wait: Duration,
}

impl HeartbeatPolicy {
    /// A policy for a network, starting from what was learned about it (if anything).
    pub fn new(cfg: HeartbeatConfig, learned: Option<Learned>) -> Self {
        let learned = learned.unwrap_or_default();
        let mut p = Self {
            cfg,
            min: cfg.min,
            max: cfg.max.max(cfg.min),
            good: learned.good,
            ceiling: learned.ceiling,
            current: cfg.initial,
            probing: false,
            reprobing: false,
            streak: 0,
            stable_since: None,
            reprobe_wait: cfg.reprobe_after,
        };
        p.current = match (p.good, p.ceiling) {
            (Some(g), _) => g,
            // Only a failure is known: start below it.
            (None, Some(c)) => cfg.initial.min(p.step_back(c)),
            (None, None) => cfg.initial,
        };
        p.current = match p.good {
            Some(g) => p.settle(g),
            None => p.clamp(p.current),
        };
        p
    }

    /// Narrows the bounds to the gateway's (from ServerHello; 0 = no bound).
    /// Where the two ranges do not meet, the gateway's wins: it drops devices
    /// that stay silent longer than its maximum.
    pub fn set_gateway_bounds(&mut self, min: Duration, max: Duration) {
        let (mut lo, mut hi) = (self.cfg.min, self.cfg.max.max(self.cfg.min));
        if !min.is_zero() {
            lo = lo.max(min);
        }
        if !max.is_zero() && max >= min {
            hi = hi.min(max);
            lo = lo.min(max);
        }
        // A zero interval would ping in a tight loop.
        self.min = lo.max(Duration::from_secs(1));
        self.max = hi.max(self.min);
        self.current = self.clamp(self.current);
    }

    /// The interval to wait (silence since the last frame received) before the next heartbeat.
    pub fn interval(&self) -> Duration {
        self.current
    }

    /// Searching or converged.
    pub fn state(&self) -> HeartbeatState {
        if self.probing || self.next_probe().is_some() || self.good.is_none() {
            HeartbeatState::Probing
        } else {
            HeartbeatState::Stable
        }
    }

    /// What to persist for this network.
    pub fn learned(&self) -> Learned {
        Learned {
            good: self.good,
            ceiling: self.ceiling,
        }
    }

    /// A heartbeat sent after `silence` without traffic was answered.
    pub fn on_success(&mut self, now: Duration, silence: Duration) {
        let proven = silence.min(self.max);
        if self.good.is_none_or(|g| proven > g) {
            self.good = Some(proven);
        }
        if self.reprobing {
            // The NAT's timeout grew past the old ceiling: search upward again.
            self.reprobe_wait = self.cfg.reprobe_after;
        }
        if let (Some(g), Some(c)) = (self.good, self.ceiling)
            && g >= c
        {
            self.ceiling = None;
        }
        if self.probing {
            // The probe is now the proven interval; its success is the first there.
            self.probing = false;
            self.reprobing = false;
            self.current = self.good.map_or(self.current, |g| self.settle(g));
            self.streak = 1;
            self.stable_since = None;
        } else {
            self.streak = self.streak.saturating_add(1);
        }
        self.decide(now);
    }

    /// A heartbeat sent after `silence` went unanswered (or the link died
    /// right after it): the NAT forgot the mapping in less than `silence`.
    pub fn on_failure(&mut self, now: Duration, silence: Duration) {
        let silence = silence.max(self.min);
        // A heartbeat far later than planned (a suspend without a wake alarm)
        // says nothing against the planned interval, only against that silence.
        let late = silence > self.current + self.current / 10;
        let was_probe = self.probing || late;
        self.streak = 0;
        if self.reprobing {
            self.reprobe_wait =
                (self.reprobe_wait * 2).min(self.cfg.reprobe_after * MAX_REPROBE_FACTOR);
        }
        self.probing = false;
        self.reprobing = false;
        match self.good {
            Some(g) if was_probe && silence > g => {
                // A probe failed: the bracket narrows, fall back to the proven value.
                self.ceiling = Some(self.ceiling.map_or(silence, |c| c.min(silence)));
                self.current = self.settle(g);
            }
            _ => {
                // What was believed safe is not (the NAT changed, or loss):
                // forget it and retry below the failure.
                // A second failure in a row with nothing proven means the NAT is
                // far stingier than believed: halve instead of creeping down.
                let unproven_again = self.good.is_none() && self.ceiling.is_some();
                self.good = None;
                self.ceiling = Some(silence);
                self.current = self.clamp(if unproven_again {
                    silence / 2
                } else {
                    self.step_back(silence)
                });
            }
        }
        self.stable_since = None;
        self.decide(now);
    }

    /// The interval used once `good` is proven: a little under it, because
    /// the silence the NAT sees varies with the round-trip time and timer slack,
    /// and a proven value may sit right at the NAT's edge.
    fn settle(&self, good: Duration) -> Duration {
        if good >= self.max {
            // The gateway's bound, not the NAT, limits us: no margin needed.
            return self.max;
        }
        self.clamp(good - (good / 50).min(SETTLE_MARGIN_MAX))
    }

    fn step_back(&self, failed: Duration) -> Duration {
        failed * self.cfg.step_back_pct.clamp(1, 99) / 100
    }

    fn clamp(&self, d: Duration) -> Duration {
        d.clamp(self.min, self.max)
    }

    /// The next interval to probe, or None when converged.
    fn next_probe(&self) -> Option<Duration> {
        let g = self.good?;
        if g >= self.max {
            return None;
        }
        let next = match self.ceiling {
            None => g + g * self.cfg.growth_pct.max(1) / 100,
            Some(c) if g * 100 >= c * self.cfg.precision_pct.clamp(1, 99) => return None,
            Some(c) => (g + c) / 2,
        };
        let next = next.min(self.max);
        (next >= g + MIN_STEP).then_some(next)
    }

    /// After an outcome: probe further, start the stable clock, or re-probe.
    fn decide(&mut self, now: Duration) {
        if self.probing || self.good.is_none() {
            return;
        }
        match self.next_probe() {
            Some(next) => {
                if self.streak >= self.cfg.probe_after.max(1) {
                    self.current = next;
                    self.probing = true;
                    self.streak = 0;
                }
            }
            None => {
                let since = *self.stable_since.get_or_insert(now);
                if let Some(c) = self.ceiling
                    && c <= self.max
                    && now.saturating_sub(since) >= self.reprobe_wait
                {
                    self.current = c;
                    self.probing = true;
                    self.reprobing = true;
                    self.streak = 0;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "heartbeat_tests.rs"]
mod tests;

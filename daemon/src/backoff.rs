//! Reconnect backoff: exponential with full jitter, reset by a stable connection.
//!
//! "Full jitter" (a uniformly random delay in `[0, min(cap, base * 2^n)]`) spreads
//! a fleet of devices that lost the gateway at the same moment, so they do not
//! come back in synchronized waves. The first redial after a connection that was
//! stable is free (no delay): losing a long-lived link is usually a NAT or
//! network hiccup, and waiting would only delay messages. Pure: randomness is an
//! argument.

use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first non-free delay.
    pub base: Duration,
    /// Largest ceiling.
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

/// Backoff state: how many consecutive failures since the last stable connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
}

impl Backoff {
    /// A backoff whose next delay is free (zero).
    pub fn new(cfg: BackoffConfig) -> Self {
        Self { cfg, attempt: 0 }
    }

    /// The ceiling the next delay will be drawn under (zero when it is free).
    pub fn ceiling(&self) -> Duration {
        if self.attempt == 0 {
            return Duration::ZERO;
        }
        let shift = (self.attempt - 1).min(31);
        self.cfg
            .base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.cfg.cap)
            .min(self.cfg.cap)
    }

    /// Draws the next delay from `random` (any u64) and counts the failure.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = ceiling.as_millis() as u64;
        if ceiling_ms == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(random % (ceiling_ms + 1))
    }

    /// Called after a connection stayed up long enough: the next redial is free.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Consecutive failures counted so far.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_free_then_grows_to_cap_with_jitter() {
        let mut b = Backoff::new(BackoffConfig::default());
        assert_eq!(b.next_delay(u64::MAX), Duration::ZERO);
        let mut ceilings = vec![];
        for _ in 0..15 {
            ceilings.push(b.ceiling());
            let d = b.next_delay(u64::MAX - 1);
            assert!(d <= *ceilings.last().expect("pushed"));
        }
        assert_eq!(ceilings[0], Duration::from_secs(1));
        assert_eq!(ceilings[1], Duration::from_secs(2));
        assert_eq!(ceilings[2], Duration::from_secs(4));
        assert_eq!(*ceilings.last().expect("some"), Duration::from_secs(300));
        // Jitter: different random inputs give different delays under one ceiling.
        let mut b2 = Backoff::new(BackoffConfig::default());
        for _ in 0..9 {
            b2.next_delay(0);
        }
        let c = b2.ceiling();
        let mut b3 = b2.clone();
        let d1 = b2.next_delay(12_345);
        let d2 = b3.next_delay(98_765);
        assert_ne!(d1, d2);
        assert!(d1 <= c && d2 <= c);
        assert_eq!(
            b3.clone().next_delay(0),
            Duration::ZERO,
            "zero is a valid full-jitter draw"
        );
    }

    #[test]
    fn reset_makes_next_free() {
        let mut b = Backoff::new(BackoffConfig::default());
        for _ in 0..6 {
            b.next_delay(7);
        }
        assert!(b.ceiling() > Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next_delay(u64::MAX), Duration::ZERO);
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(BackoffConfig::default());
        for _ in 0..200 {
            b.next_delay(u64::MAX);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(300));
    }
}

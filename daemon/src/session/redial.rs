//! When to dial again: the reconnect backoff, its jitter source (a seeded
//! generator, so tests are deterministic), and a GoAway's minimum wait.

use std::time::Duration;

use crate::backoff::{Backoff, BackoffConfig};

use super::events::CloseReason;

/// The reconnect schedule.
#[derive(Debug)]
pub(super) struct Redial {
    backoff: Backoff,
    rng: u64,
}

impl Redial {
    pub(super) fn new(cfg: BackoffConfig, seed: u64) -> Self {
        let mut backoff = Backoff::new(cfg);
        // The first dial uses up the free attempt: a failing start backs off.
        backoff.next_delay(0);
        Self { backoff, rng: seed }
    }

    /// A new network: the failures counted were on another path. A free dial
    /// now; a failure after it backs off from the base.
    pub(super) fn forget(&mut self) {
        self.backoff.reset();
        self.backoff.next_delay(0);
    }

    /// How long to wait before redialing after a connection closed for
    /// `reason`. `forgive`: the connection proved the gateway reachable, so
    /// earlier failures no longer count.
    pub(super) fn after_close(&mut self, forgive: bool, reason: &CloseReason) -> Duration {
        if forgive {
            self.backoff.reset();
        }
        let random = self.next_random();
        let delay = self.backoff.next_delay(random);
        match reason {
            CloseReason::GoAway { retry_after, .. } => delay.max(*retry_after),
            _ => delay,
        }
    }

    /// The current backoff ceiling.
    #[cfg(test)]
    pub(super) fn ceiling(&self) -> Duration {
        self.backoff.ceiling()
    }

    fn next_random(&mut self) -> u64 {
        // splitmix64: plenty for jitter, and deterministic from the seed for tests.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

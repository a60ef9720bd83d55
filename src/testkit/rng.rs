//! A seeded fault schedule: splitmix64, its seed printed so a failing
//! schedule can be replayed (`SYSPUSH_FAULT_SEED=N`).

/// splitmix64, seeded and printed so a failing fault schedule can be replayed
/// (`SYSPUSH_FAULT_SEED=N`).
pub struct FaultRng(u64);

impl FaultRng {
    /// Seeds from `SYSPUSH_FAULT_SEED` when set, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("SYSPUSH_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (replay with SYSPUSH_FAULT_SEED={seed})");
        Self(seed)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `n` distinct points in `lo..hi`, ascending (the message counts at which
    /// faults strike).
    pub fn points(&mut self, n: usize, lo: usize, hi: usize) -> Vec<usize> {
        assert!(hi - lo >= n, "cannot pick {n} points in {lo}..{hi}");
        let mut set = std::collections::BTreeSet::new();
        while set.len() < n {
            set.insert(lo + (self.next_u64() % (hi - lo) as u64) as usize);
        }
        set.into_iter().collect()
    }
}

//! What the heartbeat policy learned per network, so a device back on a known
//! network starts at that network's interval instead of learning it again.
//!
//! `networks`: network id -> `(good_ms, ceiling_ms, last_used)`, 0 meaning
//! "not known". `last_used` is a counter (not a clock: boot time restarts at
//! every boot and the wall clock may be wrong) that orders entries so the
//! table stays bounded: a phone meets many networks over its life, and only
//! the most recently used [`MAX_NETWORKS`] are worth keeping.

use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata};

use super::db::Store;
use super::error::{StoreError, dberr};
use super::schema::{META_U64, NETWORKS};
use crate::heartbeat::Learned;

const NETWORK_CLOCK: &str = "network_clock";
/// Networks remembered at most (a record is a few dozen bytes).
pub const MAX_NETWORKS: usize = 64;

fn to_ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| (d.as_millis() as u64).max(1))
}

fn from_ms(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

impl Store {
    /// What was learned about `network`, if anything.
    pub fn learned(&self, network: &str) -> Result<Option<Learned>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(NETWORKS).map_err(dberr)?;
        Ok(t.get(network).map_err(dberr)?.map(|v| {
            let (good, ceiling, _) = v.value();
            Learned {
                good: from_ms(good),
                ceiling: from_ms(ceiling),
            }
        }))
    }

    /// Records what was learned about `network` (evicting the least recently
    /// used network beyond [`MAX_NETWORKS`]).
    pub fn set_learned(&self, network: &str, learned: Learned) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut meta = txn.open_table(META_U64).map_err(dberr)?;
            let clock = meta
                .get(NETWORK_CLOCK)
                .map_err(dberr)?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert(NETWORK_CLOCK, clock).map_err(dberr)?;
            let mut t = txn.open_table(NETWORKS).map_err(dberr)?;
            t.insert(
                network,
                (to_ms(learned.good), to_ms(learned.ceiling), clock),
            )
            .map_err(dberr)?;
            if t.len().map_err(dberr)? as usize > MAX_NETWORKS {
                let mut oldest: Option<(String, u64)> = None;
                for entry in t.iter().map_err(dberr)? {
                    let (k, v) = entry.map_err(dberr)?;
                    let used = v.value().2;
                    if oldest.as_ref().is_none_or(|(_, u)| used < *u) {
                        oldest = Some((k.value().to_string(), used));
                    }
                }
                if let Some((k, _)) = oldest {
                    t.remove(k.as_str()).map_err(dberr)?;
                }
            }
        }
        self.finish(txn.commit())
    }

    /// Every remembered network and what was learned there, by id.
    pub fn all_learned(&self) -> Result<Vec<(String, Learned)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(NETWORKS).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(dberr)? {
            let (k, v) = entry.map_err(dberr)?;
            let (good, ceiling, _) = v.value();
            out.push((
                k.value().to_string(),
                Learned {
                    good: from_ms(good),
                    ceiling: from_ms(ceiling),
                },
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_state_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Learned {
            good: Some(Duration::from_millis(337_500)),
            ceiling: Some(Duration::from_secs(405)),
        };
        {
            let s = Store::open(dir.path()).expect("open");
            assert_eq!(s.learned("wlan0 via 192.168.1.1").expect("read"), None);
            s.set_learned("wlan0 via 192.168.1.1", l).expect("write");
            s.set_learned("rmnet0", Learned::default()).expect("write");
        }
        let s = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.learned("wlan0 via 192.168.1.1").expect("read"), Some(l));
        assert_eq!(s.learned("rmnet0").expect("read"), Some(Learned::default()));
        assert_eq!(s.all_learned().expect("all").len(), 2);
    }

    #[test]
    fn least_recently_used_networks_are_evicted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("open");
        let l = Learned {
            good: Some(Duration::from_secs(60)),
            ceiling: None,
        };
        for i in 0..MAX_NETWORKS + 5 {
            s.set_learned(&format!("net{i}"), l).expect("write");
            // net0 is used again and again: it stays.
            s.set_learned("net0", l).expect("write");
        }
        let all = s.all_learned().expect("all");
        assert_eq!(all.len(), MAX_NETWORKS);
        assert!(all.iter().any(|(k, _)| k == "net0"));
        assert!(!all.iter().any(|(k, _)| k == "net1"));
    }
}

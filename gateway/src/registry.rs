//! Which connection holds which device: the [`Registry`] trait and its
//! in-memory implementation for a single-process gateway.
//!
//! The record is written at hello and guarded by a generation (monotonic per
//! registry; in a cluster it would be the connection time plus node id) so an
//! older connection can never overwrite or remove a newer one's record. The
//! handle is only a poke: messages always go through the store first, so a poke
//! that is dropped because the connection's bounded channel is full loses
//! nothing — the connection will read the store anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};

/// Capacity of a connection's poke channel. Pokes only say "look at the
/// store", so a handful is plenty; when full, the poke is redundant.
pub const POKE_CAPACITY: usize = 16;

/// What a poke tells a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poke {
    /// A message was committed to the device's queue.
    Message {
        /// High priority: deliver even while the device is idle.
        high_priority: bool,
    },
    /// The app server revoked a token (forced logout); tell the device.
    /// Best effort: dropped if the channel is full or the device is offline.
    TokenRevoked {
        /// The token's app.
        app_id: String,
        /// The revoked token.
        token: String,
        /// Why (from the app server's request).
        reason: String,
    },
}

/// A live connection's handle, stored in the registry.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// Orders connections of a device; the higher one wins.
    pub generation: u64,
    /// Bounded poke channel into the connection task.
    pub pokes: mpsc::Sender<Poke>,
    /// Notified when a newer connection replaces this one.
    pub replaced: Arc<Notify>,
}

/// The outcome of [`Registry::claim`].
#[derive(Debug)]
pub enum Claim {
    /// The connection now holds the device (an older one, if any, was told to go).
    Claimed,
    /// A newer connection already holds the device; this one should close.
    Superseded,
}

/// Device -> connection lookup. See the module doc.
pub trait Registry: Send + Sync + 'static {
    /// A generation newer than every one handed out before.
    fn next_generation(&self) -> u64;

    /// Records `conn` as holding `device_id` unless a newer generation holds it.
    /// A replaced older connection is notified through its `replaced` handle.
    fn claim(&self, device_id: &str, conn: ConnHandle) -> Claim;

    /// Removes the record if it still belongs to `generation`.
    fn release(&self, device_id: &str, generation: u64);

    /// Pokes the connection holding `device_id`; `false` if there is none.
    fn poke(&self, device_id: &str, poke: Poke) -> bool;

    /// Whether a connection currently holds `device_id`.
    fn is_connected(&self, device_id: &str) -> bool;
}

/// The single-process registry.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    conns: Mutex<HashMap<String, ConnHandle>>,
    generation: AtomicU64,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, ConnHandle>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every operation is a single insert/remove), so poison is ignored.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Registry for MemoryRegistry {
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn claim(&self, device_id: &str, conn: ConnHandle) -> Claim {
        let mut conns = self.lock();
        if let Some(existing) = conns.get(device_id) {
            if existing.generation > conn.generation {
                return Claim::Superseded;
            }
            existing.replaced.notify_one();
        }
        conns.insert(device_id.to_owned(), conn);
        Claim::Claimed
    }

    fn release(&self, device_id: &str, generation: u64) {
        let mut conns = self.lock();
        if conns
            .get(device_id)
            .is_some_and(|c| c.generation == generation)
        {
            conns.remove(device_id);
        }
    }

    fn poke(&self, device_id: &str, poke: Poke) -> bool {
        let Some(pokes) = self.lock().get(device_id).map(|c| c.pokes.clone()) else {
            return false;
        };
        match pokes.try_send(poke) {
            // Full: the connection has unread pokes and will read the store anyway.
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn is_connected(&self, device_id: &str) -> bool {
        self.lock()
            .get(device_id)
            .is_some_and(|c| !c.pokes.is_closed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(reg: &MemoryRegistry) -> (ConnHandle, mpsc::Receiver<Poke>) {
        let (tx, rx) = mpsc::channel(POKE_CAPACITY);
        (
            ConnHandle {
                generation: reg.next_generation(),
                pokes: tx,
                replaced: Arc::new(Notify::new()),
            },
            rx,
        )
    }

    #[tokio::test]
    async fn newer_replaces_older_and_older_cannot_win() {
        let reg = MemoryRegistry::new();
        let (old, _old_rx) = handle(&reg);
        let (new, mut new_rx) = handle(&reg);
        assert!(matches!(reg.claim("d", new.clone()), Claim::Claimed));
        // The older connection arrives late: refused.
        assert!(matches!(reg.claim("d", old.clone()), Claim::Superseded));
        reg.release("d", old.generation);
        assert!(reg.is_connected("d"));
        assert!(reg.poke(
            "d",
            Poke::Message {
                high_priority: false
            }
        ));
        assert_eq!(
            new_rx.recv().await,
            Some(Poke::Message {
                high_priority: false
            })
        );
        // A third, newer one replaces it and the replaced one is notified.
        let (third, _rx3) = handle(&reg);
        assert!(matches!(reg.claim("d", third.clone()), Claim::Claimed));
        new.replaced.notified().await;
        reg.release("d", new.generation);
        assert!(reg.is_connected("d"));
        reg.release("d", third.generation);
        assert!(!reg.is_connected("d"));
        assert!(!reg.poke(
            "d",
            Poke::Message {
                high_priority: true
            }
        ));
    }
}

//! State shared by every HTTP handler and device session ([`Shared`]), and
//! the shutdown signal they all watch.
//!
//! A leaf module: the HTTP API (`api`), the device link (`link`) and the send
//! path (`accept`) all take an `Arc<Shared>`; the gateway lifecycle in
//! `lib.rs` builds it. It depends only on the config and the backends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::ids;
use crate::registry::Registry;
use crate::store::{SharedStore, Store, StoreError};

/// The environment variable naming a test fault hook (read once, at start).
pub(crate) const FAULT_ENV: &str = "SYSPUSH_GATEWAY_FAULT";

/// A fault the end-to-end tests make the gateway commit, to crash it at an
/// exact point; never set in production. Named by [`FAULT_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `stall_before_answer`: a send with an `Idempotency-Key` is committed
    /// (and its device poked) but never answered, so a test can SIGKILL the
    /// gateway between the commit and the answer.
    StallBeforeAnswer,
}

impl Fault {
    /// The hook named by [`FAULT_ENV`], if any (unknown names are logged and ignored).
    fn from_env() -> Option<Fault> {
        let name = std::env::var(FAULT_ENV).ok()?;
        match name.as_str() {
            "stall_before_answer" => {
                tracing::warn!(fault = %name, "test fault hook armed");
                Some(Fault::StallBeforeAnswer)
            }
            _ => {
                tracing::warn!(fault = %name, "unknown test fault hook ignored");
                None
            }
        }
    }
}

/// State shared by every request handler and device session.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: SharedStore,
    pub(crate) registry: Arc<dyn Registry>,
    /// Flips to `true` when the gateway stops.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Every task that may touch the store holds a clone; `Gateway::shutdown`
    /// waits until all are gone, so the store is closed when it returns.
    pub(crate) alive: mpsc::Sender<()>,
    /// device_id -> unix ms of the last frame from it (for the token status;
    /// in memory: "last seen" before a restart is not worth an fsync per frame).
    last_seen: Mutex<HashMap<String, u64>>,
    /// A test fault hook ([`FAULT_ENV`]); `None` in production.
    pub(crate) fault: Option<Fault>,
}

impl Shared {
    /// Bundles the backends, the config and the lifecycle channels.
    pub(crate) fn new(
        config: Config,
        store: SharedStore,
        registry: Arc<dyn Registry>,
        shutdown: watch::Receiver<bool>,
        alive: mpsc::Sender<()>,
    ) -> Self {
        Shared {
            config,
            store,
            registry,
            shutdown,
            alive,
            last_seen: Mutex::default(),
            fault: Fault::from_env(),
        }
    }

    /// Runs a store call on the blocking pool, keeping the gateway "alive" until
    /// it finishes even if the caller is cancelled.
    pub(crate) async fn store<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let alive = self.alive.clone();
        tokio::task::spawn_blocking(move || {
            let out = f(store.as_ref());
            // Drop the store before the liveness token (see `alive`).
            drop(store);
            drop(alive);
            out
        })
        .await?
    }

    /// Notes that the device was just heard from.
    pub(crate) fn saw(&self, device_id: &str) {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device_id.to_owned(), ids::now_ms());
    }

    /// When the device was last heard from (unix ms), `None` if not since start.
    pub(crate) fn last_seen(&self, device_id: &str) -> Option<u64> {
        self.last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device_id)
            .copied()
    }
}

/// Resolves once the gateway is stopping (or its `Gateway` handle was dropped).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

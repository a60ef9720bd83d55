//! The network the device is on, as the link sees it: the watcher (if
//! netlink is available), the current identity (the key of what the
//! heartbeat learned), and what a change does to the session.

use std::sync::Arc;

use crate::clock;
use crate::netwatch::{Netwatch, NetwatchError};
use crate::notify::Notifier;
use crate::session::Session;
use crate::store::Store;

/// Network identity when none can be read (no netlink).
const UNKNOWN_NETWORK: &str = "unknown";

/// The current network and its watcher.
pub(super) struct Network {
    watch: Option<Netwatch>,
    /// Identity of the network the device is on (the key of what is learned).
    current: String,
    store: Arc<Store>,
    notifier: Arc<Notifier>,
}

impl Network {
    /// Starts watching and applies the current state to `session`.
    pub(super) fn open(store: Arc<Store>, notifier: Arc<Notifier>, session: &mut Session) -> Self {
        let watch = match Netwatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the network; assuming it is always up");
                None
            }
        };
        let initial = match &watch {
            Some(w) => Ok(w.current().map(str::to_string)),
            None => Ok(Some(UNKNOWN_NETWORK.to_string())),
        };
        let mut network = Self {
            watch,
            current: UNKNOWN_NETWORK.to_string(),
            store,
            notifier,
        };
        network.apply(session, initial);
        network
    }

    /// Identity of the current network (the last one while offline).
    pub(super) fn current(&self) -> &str {
        &self.current
    }

    /// The next change of network identity; never, without a watcher.
    pub(super) async fn changed(&mut self) -> Result<Option<String>, NetwatchError> {
        match &mut self.watch {
            Some(w) => w.changed().await,
            None => std::future::pending().await,
        }
    }

    /// The network identity changed (None: no default route), or the watcher failed.
    pub(super) fn apply(
        &mut self,
        session: &mut Session,
        change: Result<Option<String>, NetwatchError>,
    ) {
        let now = clock::now();
        match change {
            Ok(Some(network)) => {
                let learned = self.store.learned(&network).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the learned heartbeat");
                    None
                });
                tracing::info!(
                    network,
                    known = learned.is_some(),
                    "on a network; dialing now"
                );
                self.current = network;
                if session.is_offline() {
                    self.notifier.offline(false);
                }
                session.network_up(now, learned);
            }
            Ok(None) => {
                tracing::info!("no default route; not dialing until there is one");
                session.network_lost(now);
                self.notifier.offline(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "network watch failed; assuming the network stays up");
                self.watch = None;
                if session.is_offline() {
                    self.notifier.offline(false);
                    session.network_up(now, None);
                }
            }
        }
    }
}

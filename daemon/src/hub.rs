//! In-process fan-out from the link (which commits messages) to the app
//! connections (which deliver them).
//!
//! Per app id, a `watch` channel carries only "the newest arrival number": a
//! subscriber that is busy or slow never makes anything queue up here — when
//! it gets round to it, it reads everything after its cursor from the store.
//! That is what bounds memory per connection whatever the app's speed. The hub
//! also counts subscribers (the link asks whether anyone is listening before
//! running an app's wake command) and broadcasts rare control events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

/// A control event for an app's subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// The gateway revoked the app's token.
    TokenRevoked {
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
struct Entry {
    data: watch::Sender<u64>,
    events: broadcast::Sender<AppEvent>,
    subscribers: usize,
}

/// The fan-out point. Shared as `Arc<Hub>`.
#[derive(Debug, Default)]
pub struct Hub {
    apps: Mutex<HashMap<String, Entry>>,
}

/// One connection's subscription to an app id; unsubscribes on drop.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    app_id: String,
    /// Changes whenever a message for the app is committed.
    pub data: watch::Receiver<u64>,
    /// Control events.
    pub events: broadcast::Receiver<AppEvent>,
}

impl Subscription {
    /// The subscribed app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut apps = self.hub.lock();
        if let Some(e) = apps.get_mut(&self.app_id) {
            e.subscribers = e.subscribers.saturating_sub(1);
            if e.subscribers == 0 {
                apps.remove(&self.app_id);
            }
        }
    }
}

impl Hub {
    /// A new hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert/remove), so poisoning is ignored.
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to `app_id`. Create it before reading the store, so nothing
    /// committed in between is missed.
    pub fn subscribe(self: &Arc<Self>, app_id: &str) -> Subscription {
        let mut apps = self.lock();
        let e = apps.entry(app_id.to_string()).or_insert_with(|| Entry {
            data: watch::channel(0).0,
            events: broadcast::channel(8).0,
            subscribers: 0,
        });
        e.subscribers += 1;
        Subscription {
            hub: self.clone(),
            app_id: app_id.to_string(),
            data: e.data.subscribe(),
            events: e.events.subscribe(),
        }
    }

    /// Announces a committed message; returns whether anyone is subscribed.
    pub fn publish(&self, app_id: &str, arrival: u64) -> bool {
        match self.lock().get(app_id) {
            Some(e) if e.subscribers > 0 => {
                e.data.send_replace(arrival);
                true
            }
            _ => false,
        }
    }

    /// Sends a control event to the app's subscribers.
    pub fn event(&self, app_id: &str, ev: AppEvent) {
        if let Some(e) = self.lock().get(app_id) {
            let _ = e.events.send(ev);
        }
    }

    /// Whether some connection is subscribed to `app_id`.
    pub fn connected(&self, app_id: &str) -> bool {
        self.lock().get(app_id).is_some_and(|e| e.subscribers > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_reaches_subscribers_and_counts_them() {
        let hub = Hub::new();
        assert!(!hub.publish("a", 1));
        let mut s1 = hub.subscribe("a");
        let s2 = hub.subscribe("a");
        assert!(hub.connected("a"));
        assert!(hub.publish("a", 5));
        assert!(s1.data.has_changed().expect("open"));
        assert_eq!(*s1.data.borrow_and_update(), 5);
        hub.event("a", AppEvent::TokenRevoked { reason: "x".into() });
        assert_eq!(
            s1.events.try_recv().expect("event"),
            AppEvent::TokenRevoked { reason: "x".into() }
        );
        drop(s2);
        assert!(hub.connected("a"));
        drop(s1);
        assert!(!hub.connected("a"));
        assert!(!hub.publish("a", 6));
    }
}

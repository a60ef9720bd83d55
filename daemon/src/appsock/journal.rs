//! Per-app "last delivery" and "last error", for doctor.
//!
//! In memory, one per daemon (owned by the app context), rather than in the
//! store: they change on every delivery, and an fsync per delivery for a
//! diagnostic would cost more than it tells.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Entry {
    last_delivery_ms: Option<u64>,
    last_error: Option<String>,
}

/// Per-app last delivery and last error, for doctor. One per daemon.
#[derive(Debug, Default)]
pub struct DeliveryJournal(Mutex<HashMap<String, Entry>>);

impl DeliveryJournal {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that messages of `app_id` were handed to a connection at
    /// `now_ms` (gateway wall clock).
    pub fn record_delivery(&self, app_id: &str, now_ms: u64) {
        self.lock()
            .entry(app_id.to_string())
            .or_default()
            .last_delivery_ms = Some(now_ms);
    }

    /// Notes the last thing that went wrong for `app_id`.
    pub fn record_error(&self, app_id: &str, e: impl Into<String>) {
        self.lock()
            .entry(app_id.to_string())
            .or_default()
            .last_error = Some(e.into());
    }

    /// Last delivery (gateway ms) and last error of `app_id`.
    pub fn get(&self, app_id: &str) -> (Option<u64>, Option<String>) {
        let j = self.lock();
        let e = j.get(app_id);
        (
            e.and_then(|e| e.last_delivery_ms),
            e.and_then(|e| e.last_error.clone()),
        )
    }
}

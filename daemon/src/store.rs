//! The durable inbox: one redb file, `state_dir/syspushd.redb` (0600, dir 0700).
//!
//! What it holds, and why each table exists:
//! - `meta_u64` / `meta_str`: `last_committed_seq` (the resume point sent in
//!   ClientHello), the arrival counter, and enrolled credentials;
//! - `inbox`: `(app_id, arrival)` -> `(expires_at_ms, message_id, encoded
//!   Notification)`, so an app's messages list in arrival order with one range
//!   scan and expiry is checked without decoding;
//! - `by_id`: message id -> `(app_id, arrival)`, for acks;
//! - `seen` + `seen_expiry`: ids already accepted, kept past the app's ack so a
//!   redelivery is still recognised; pruned by expiry inside each commit (a
//!   range scan over the expiry index, not a table walk);
//! - `tokens`: app id -> push token;
//! - `networks`: what the heartbeat learned per network ([`networks`]);
//! - settings, pending revocations, collapse keys and drop counters ([`extras`]).
//!
//! A batch of deliveries and the new `last_committed_seq` go in ONE write
//! transaction: either the gateway may forget them (we ack after this returns)
//! or the next ClientHello asks for them again. Calls are synchronous and short
//! (one fsync per commit); the daemon calls them inline.
//!
//! The database handle is swappable (`db.rs`): after an I/O error (disk
//! full) redb refuses the open handle until the file is reopened, so the store
//! reopens it on the next use, serving reads again and committing once space
//! returns.

//!
//! Files: `schema` (tables and shared in-transaction helpers, a leaf),
//! `error`, `db` (the [`Store`] handle: open, reopen after I/O errors,
//! transactions), `inbox` (commit, list, ack), `identity` (credentials and
//! tokens), [`extras`] and [`networks`]. Each adds its own `impl Store`.

mod db;
mod error;
pub mod extras;
mod identity;
mod inbox;
pub mod networks;
mod schema;

pub use db::Store;
pub use error::StoreError;
pub use inbox::{CommitOutcome, Stored};

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

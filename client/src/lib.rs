//! `syspush-client`: what an app links to talk to `syspushd` over its local
//! Unix socket.
//!
//! - [`Client`]: requests — [`register`](Client::register) an app id (get the
//!   push token to report to the app's server), [`unregister`](Client::unregister)
//!   it (logout), ask for the daemon's [`status`](Client::status).
//! - [`Listener`]: an app's notifications, each exactly once, across daemon
//!   restarts; [`ack`](Listener::ack) them once handled.
//! - [`json`]: the JSON shapes `syspushctl` prints, for reuse by tests and tools.
//!
//! The wire protocol is `syspush_proto::app` (varint length-delimited protobuf
//! frames); the daemon identifies the caller by its uid (`SO_PEERCRED`), so
//! there is nothing to authenticate here.
//!
//! ```no_run
//! # async fn demo() -> Result<(), syspush_client::ClientError> {
//! use syspush_client::{Client, Event, Listener, default_socket_path};
//! let token = Client::connect(default_socket_path()).await?.register("com.example.chat").await?;
//! let mut listener = Listener::connect(default_socket_path(), "com.example.chat").await?;
//! while let Event::Notification(d) = listener.next().await? {
//!     let id = d.notification.map(|n| n.message_id).unwrap_or_default();
//!     listener.ack(&[id]).await?;
//! }
//! # let _ = token; Ok(()) }
//! ```

mod client;
mod conn;
mod dedup;
mod error;
pub mod json;
mod listener;

use std::path::PathBuf;

pub use client::Client;
pub use error::ClientError;
pub use json::notification_json;
pub use listener::{ACK_BATCH, ACK_DELAY, DEFAULT_DEDUP_MEMORY, Event, Listener};
/// The wire types, re-exported so apps need no direct dependency on the proto crate.
pub use syspush_proto::app::{AppStatus, Delivery, ErrorCode, Status};
pub use syspush_proto::common::{MessageClass, Notification, Priority, Sender};

/// The daemon's socket path when none is configured (Linux system daemon).
pub const DEFAULT_SOCKET_PATH: &str = "/run/syspush/syspushd.sock";

/// Environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "SYSPUSH_SOCKET";

/// `$SYSPUSH_SOCKET` if set and not empty, else [`DEFAULT_SOCKET_PATH`].
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os(SOCKET_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET_PATH),
    }
}

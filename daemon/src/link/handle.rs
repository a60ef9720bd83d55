//! The app side's view of the link: the requests it sends (register,
//! unregister, token status, test push, idle) and the status snapshot it
//! reads. Kept apart from the driver so the app socket depends on this small
//! surface, not on the I/O loop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::error::LinkFailure;

/// Queued requests from apps.
pub(super) const COMMAND_QUEUE: usize = 64;

/// Why a register/unregister request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No link to the gateway (the daemon is stopping, or the caller gave up).
    #[error("gateway unavailable")]
    Unavailable,
    /// The gateway refused it.
    #[error("gateway refused: {message}")]
    Rejected {
        /// `device::ErrorCode` value.
        code: i32,
        /// Gateway's text.
        message: String,
    },
    /// The answer could not be stored.
    #[error("store: {0}")]
    Store(String),
}

/// A request from the app side for the gateway.
#[derive(Debug)]
pub enum LinkCommand {
    /// Get a token for an app.
    Register {
        /// App id.
        app_id: String,
        /// Where the token goes.
        reply: oneshot::Sender<Result<String, RequestError>>,
    },
    /// Revoke an app's token.
    Unregister {
        /// App id.
        app_id: String,
        /// Completion.
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Ask the gateway whether an app's token is valid (doctor).
    TokenStatus {
        /// App id.
        app_id: String,
        /// Its token here.
        token: String,
        /// The gateway's answer.
        reply: oneshot::Sender<Result<syspush_proto::device::TokenStatusReply, RequestError>>,
    },
    /// Ask the gateway to send a test push to an app's token.
    TestPush {
        /// App id.
        app_id: String,
        /// Its token here.
        token: String,
        /// The test message's id.
        reply: oneshot::Sender<Result<String, RequestError>>,
    },
    /// The device went idle or woke up (told to the gateway now or at the next hello).
    SetIdle {
        /// Idle or not.
        idle: bool,
    },
}

impl LinkCommand {
    pub(super) fn is_abandoned(&self) -> bool {
        match self {
            LinkCommand::Register { reply, .. } => reply.is_closed(),
            LinkCommand::Unregister { reply, .. } => reply.is_closed(),
            LinkCommand::TokenStatus { reply, .. } => reply.is_closed(),
            LinkCommand::TestPush { reply, .. } => reply.is_closed(),
            LinkCommand::SetIdle { .. } => false,
        }
    }
}

/// What the status request shows about the link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// A session is up.
    pub connected: bool,
    /// Boot time the session came up.
    pub live_since: Option<Duration>,
    /// Heartbeat interval in force or, while disconnected, the one the next
    /// session starts from (None: no network).
    pub heartbeat: Option<Duration>,
    /// Boot time of the last frame from the gateway.
    pub last_rx: Option<Duration>,
    /// Sessions established after the first.
    pub reconnects: u64,
    /// Device id in use (empty before enrollment).
    pub device_id: String,
    /// Whether the heartbeat is still learning the network.
    pub heartbeat_state: Option<crate::heartbeat::HeartbeatState>,
    /// Identity of the network in use (None: no network).
    pub network: Option<String>,
    /// Whether the device told the gateway it is idle.
    pub idle: bool,
    /// Why the last dial or session failed (kept after reconnecting; doctor
    /// shows it when the link is down).
    pub last_error: Option<LinkFailure>,
}

/// The app side's handle on the link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    pub(super) commands: mpsc::Sender<LinkCommand>,
    pub(super) status: Arc<Mutex<LinkStatus>>,
    /// Uids besides root that may switch idle mode (config `system_uids`).
    pub(super) system_uids: Arc<[u32]>,
}

pub(super) fn lock(m: &Mutex<LinkStatus>) -> MutexGuard<'_, LinkStatus> {
    // Plain data, written whole: a poisoned lock still holds a usable value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LinkHandle {
    /// A handle not attached to a [`Link`](super::Link): the caller receives the commands
    /// (for embedding with another transport, and for tests).
    pub fn channel() -> (Self, mpsc::Receiver<LinkCommand>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (
            Self {
                commands: tx,
                status: Arc::new(Mutex::new(LinkStatus::default())),
                system_uids: Arc::new([]),
            },
            rx,
        )
    }

    /// Whether `uid` may switch idle mode: root, or a configured system uid.
    pub fn may_set_idle(&self, uid: u32) -> bool {
        uid == 0 || self.system_uids.contains(&uid)
    }

    /// Tells the link the device is idle (or not). The caller checks [`LinkHandle::may_set_idle`].
    pub async fn set_idle(&self, idle: bool) -> Result<(), RequestError> {
        self.commands
            .send(LinkCommand::SetIdle { idle })
            .await
            .map_err(|_| RequestError::Unavailable)
    }

    /// Asks the gateway for `app_id`'s token (waits for a session; the caller bounds the wait).
    pub async fn register(&self, app_id: &str) -> Result<String, RequestError> {
        let app_id = app_id.to_string();
        self.ask(|reply| LinkCommand::Register { app_id, reply })
            .await
    }

    /// Sends the command `make` builds around a reply channel and waits for
    /// the link's answer; a link that is gone answers "unavailable".
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RequestError>>) -> LinkCommand,
    ) -> Result<T, RequestError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| RequestError::Unavailable)?;
        rx.await.map_err(|_| RequestError::Unavailable)?
    }

    /// Asks the gateway to revoke `app_id`'s token; local token and messages are dropped.
    pub async fn unregister(&self, app_id: &str) -> Result<(), RequestError> {
        let app_id = app_id.to_string();
        self.ask(|reply| LinkCommand::Unregister { app_id, reply })
            .await
    }

    /// Asks the gateway about `app_id`'s `token` (the caller bounds the wait).
    pub async fn token_status(
        &self,
        app_id: &str,
        token: &str,
    ) -> Result<syspush_proto::device::TokenStatusReply, RequestError> {
        let (app_id, token) = (app_id.to_string(), token.to_string());
        self.ask(|reply| LinkCommand::TokenStatus {
            app_id,
            token,
            reply,
        })
        .await
    }

    /// Asks the gateway to push a test message to `app_id`'s `token`; returns its id.
    pub async fn test_push(&self, app_id: &str, token: &str) -> Result<String, RequestError> {
        let (app_id, token) = (app_id.to_string(), token.to_string());
        self.ask(|reply| LinkCommand::TestPush {
            app_id,
            token,
            reply,
        })
        .await
    }

    /// A snapshot of the link state.
    pub fn status(&self) -> LinkStatus {
        lock(&self.status).clone()
    }

    /// Changes the link state the app side sees: for an embedder driving
    /// the link itself (a handle from [`LinkHandle::channel`]), and tests.
    pub fn update_status(&self, f: impl FnOnce(&mut LinkStatus)) {
        f(&mut lock(&self.status));
    }
}

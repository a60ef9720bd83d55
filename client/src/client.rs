//! [`Client`]: one-shot requests to the daemon (register, unregister, status).
//!
//! Each request carries a fresh, increasing `request_id` and the client waits for
//! the reply carrying that id. Anything else that arrives meanwhile is skipped:
//! pushed events (id 0) are not this connection's business (it never said
//! `Hello`), and a reply with another id belongs to an earlier request whose
//! future was dropped (e.g. by a timeout) before its answer came.

use std::path::Path;

use syspush_proto::app::app_request::Body;
use syspush_proto::app::daemon_message::Body as Reply;
use syspush_proto::app::{
    DoctorReport, DoctorRequest, RegisterRequest, SetIdleRequest, SettingsReply, SettingsRequest,
    Status, StatusRequest, TestPushRequest, UnregisterRequest,
};

use crate::conn::Conn;
use crate::error::ClientError;

/// A connection for requests to syspushd. Not for receiving notifications: use
/// [`Listener`](crate::Listener) for that.
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon's app socket at `path` (see
    /// [`default_socket_path`](crate::default_socket_path)).
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Ok(Client {
            conn: Conn::open(path.as_ref()).await?,
            next_id: 1,
        })
    }

    /// Registers `app_id` on this device and returns its push token, which the
    /// app reports to its server. Idempotent: a live token is returned again.
    ///
    /// The daemon forwards this to the gateway and may take up to ~10 s when the
    /// link is down; it answers `ErrorUnavailable` when the gateway is not
    /// reachable in time.
    pub async fn register(&mut self, app_id: &str) -> Result<String, ClientError> {
        let body = Body::Register(RegisterRequest {
            app_id: app_id.to_owned(),
        });
        match self.request(body).await? {
            Reply::Registered(r) => Ok(r.token),
            other => Err(unexpected("Registered", &other)),
        }
    }

    /// Unregisters `app_id` (logout): its token dies at the gateway and pending
    /// messages for it are dropped.
    pub async fn unregister(&mut self, app_id: &str) -> Result<(), ClientError> {
        let body = Body::Unregister(UnregisterRequest {
            app_id: app_id.to_owned(),
        });
        match self.request(body).await? {
            Reply::Unregistered(_) => Ok(()),
            other => Err(unexpected("Unregistered", &other)),
        }
    }

    /// The daemon's state: gateway link and the apps the caller may see (root:
    /// all of them).
    pub async fn status(&mut self) -> Result<Status, ClientError> {
        match self.request(Body::Status(StatusRequest {})).await? {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected("Status", &other)),
        }
    }

    /// Tells the daemon the device is idle (screen off, doze) or awake; the
    /// gateway then holds normal-priority messages until the next heartbeat.
    /// Root or a uid in the daemon's `system_uids` only.
    pub async fn set_idle(&mut self, idle: bool) -> Result<bool, ClientError> {
        match self.request(Body::SetIdle(SetIdleRequest { idle })).await? {
            Reply::IdleSet(s) => Ok(s.idle),
            other => Err(unexpected("IdleSet", &other)),
        }
    }

    /// Reads (no `changes`) or changes `app_id`'s notification settings on
    /// this device, app-wide (`channel_id` empty) or for one channel. Changing
    /// needs root or a uid in the daemon's `system_uids`.
    pub async fn settings(
        &mut self,
        app_id: &str,
        channel_id: &str,
        changes: impl IntoIterator<Item = (String, String)>,
    ) -> Result<SettingsReply, ClientError> {
        let body = Body::Settings(SettingsRequest {
            app_id: app_id.to_owned(),
            channel_id: channel_id.to_owned(),
            changes: changes.into_iter().collect(),
        });
        match self.request(body).await? {
            Reply::Settings(s) => Ok(s),
            other => Err(unexpected("SettingsReply", &other)),
        }
    }

    /// The daemon's self-check (config, store, gateway, TLS, heartbeat, apps).
    pub async fn doctor(&mut self) -> Result<DoctorReport, ClientError> {
        match self.request(Body::Doctor(DoctorRequest {})).await? {
            Reply::Doctor(d) => Ok(d),
            other => Err(unexpected("DoctorReport", &other)),
        }
    }

    /// Asks the gateway to send a test push to `app_id` on this device;
    /// returns the test message's id (it arrives like any other message).
    pub async fn test_push(&mut self, app_id: &str) -> Result<String, ClientError> {
        self.test_push_bounded(app_id, None).await
    }

    /// Like [`Client::test_push`], the daemon waiting for the gateway at most
    /// `bound` (by default 10 s), so that the request ends with the caller's
    /// own wait.
    pub async fn test_push_within(
        &mut self,
        app_id: &str,
        bound: std::time::Duration,
    ) -> Result<String, ClientError> {
        let ms = u32::try_from(bound.as_millis()).unwrap_or(u32::MAX);
        self.test_push_bounded(app_id, Some(ms)).await
    }

    async fn test_push_bounded(
        &mut self,
        app_id: &str,
        timeout_ms: Option<u32>,
    ) -> Result<String, ClientError> {
        let body = Body::TestPush(TestPushRequest {
            app_id: app_id.to_owned(),
            timeout_ms,
        });
        match self.request(body).await? {
            Reply::TestPushSent(t) => Ok(t.message_id),
            other => Err(unexpected("TestPushSent", &other)),
        }
    }

    /// Sends `body` with a new request id and returns the body of the reply with
    /// that id; an `Error` reply becomes [`ClientError::Daemon`].
    async fn request(&mut self, body: Body) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.conn.send(id, body).await?;
        loop {
            let msg = self.conn.recv().await?;
            match msg.body {
                Some(Reply::Error(e)) if msg.request_id == id || msg.request_id == 0 => {
                    // An error with id 0 is one the daemon could not attribute
                    // (e.g. a bad frame); with a single request in flight it is
                    // ours, and the daemon closes the connection after it.
                    return Err(ClientError::from_wire(e));
                }
                Some(reply) if msg.request_id == id => return Ok(reply),
                None if msg.request_id == id => {
                    return Err(ClientError::Unexpected("empty reply".into()));
                }
                other => {
                    tracing::debug!(
                        request_id = msg.request_id,
                        ?other,
                        "skipping unrelated frame"
                    );
                }
            }
        }
    }
}

/// Names the wrong reply variant for [`ClientError::Unexpected`].
fn unexpected(wanted: &str, got: &Reply) -> ClientError {
    let name = match got {
        Reply::HelloOk(_) => "HelloOk",
        Reply::Registered(_) => "Registered",
        Reply::Unregistered(_) => "Unregistered",
        Reply::Notification(_) => "Delivery",
        Reply::AckOk(_) => "AckOk",
        Reply::Status(_) => "Status",
        Reply::Error(_) => "Error",
        Reply::TokenRevoked(_) => "TokenRevoked",
        Reply::IdleSet(_) => "IdleSet",
        Reply::Settings(_) => "SettingsReply",
        Reply::Doctor(_) => "DoctorReport",
        Reply::TestPushSent(_) => "TestPushSent",
    };
    ClientError::Unexpected(format!("wanted {wanted}, got {name}"))
}

//! Who waits for which request: app requests go straight to the session,
//! which owns the only queue of them (ids, sending, resending after a
//! reconnect); this keeps just the map from request id to reply channel.

use std::collections::HashMap;

use syspush_proto::device::TokenStatusReply;
use tokio::sync::oneshot;

use crate::session::Session;

use super::handle::{LinkCommand, RequestError};

/// A reply channel, typed by the request it answers.
#[derive(Debug)]
pub(super) enum Reply {
    Register(oneshot::Sender<Result<String, RequestError>>),
    Unregister(oneshot::Sender<Result<(), RequestError>>),
    TokenStatus(oneshot::Sender<Result<TokenStatusReply, RequestError>>),
    TestPush(oneshot::Sender<Result<String, RequestError>>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Reply::Register(r) => r.is_closed(),
            Reply::Unregister(r) => r.is_closed(),
            Reply::TokenStatus(r) => r.is_closed(),
            Reply::TestPush(r) => r.is_closed(),
        }
    }

    /// Answers with `err`, whatever the request was.
    pub(super) fn fail(self, err: RequestError) {
        match self {
            Reply::Register(r) => drop(r.send(Err(err))),
            Reply::Unregister(r) => drop(r.send(Err(err))),
            Reply::TokenStatus(r) => drop(r.send(Err(err))),
            Reply::TestPush(r) => drop(r.send(Err(err))),
        }
    }
}

/// Reply channels by request id.
#[derive(Debug, Default)]
pub(super) struct Replies(HashMap<u64, Reply>);

impl Replies {
    /// Hands an app request to the session (sent now if a session is up,
    /// else at the next one) and keeps its reply channel.
    pub(super) fn submit(&mut self, session: &mut Session, cmd: LinkCommand) {
        if cmd.is_abandoned() {
            return;
        }
        if !session.is_live() {
            // Waiting for a session: callers that gave up meanwhile (each
            // bounds its wait) must not pile up.
            self.forget_abandoned(session);
        }
        let (id, reply) = match cmd {
            LinkCommand::SetIdle { idle } => {
                // Not a request: the session keeps the flag for the next hello.
                tracing::info!(idle, "idle mode");
                session.set_idle(idle);
                return;
            }
            LinkCommand::Register { app_id, reply } => {
                (session.register(app_id), Reply::Register(reply))
            }
            LinkCommand::Unregister { app_id, reply } => {
                (session.unregister(app_id), Reply::Unregister(reply))
            }
            LinkCommand::TokenStatus {
                app_id,
                token,
                reply,
            } => (
                session.token_status(app_id, token),
                Reply::TokenStatus(reply),
            ),
            LinkCommand::TestPush {
                app_id,
                token,
                reply,
            } => (session.test_push(app_id, token), Reply::TestPush(reply)),
        };
        self.0.insert(id, reply);
    }

    /// Requests whose callers gave up are withdrawn, so that a new session
    /// does not send them.
    pub(super) fn forget_abandoned(&mut self, session: &mut Session) {
        self.0.retain(|id, r| {
            let keep = !r.is_closed();
            if !keep {
                session.cancel(*id);
            }
            keep
        });
    }

    /// The reply channel of `request_id` (once: it is forgotten).
    pub(super) fn take(&mut self, request_id: u64) -> Option<Reply> {
        self.0.remove(&request_id)
    }
}

//! The one queue of requests to the gateway (register, unregister, token
//! status, test push): ids are handed out here, and a request stays queued —
//! sent on the live session, resent on every new one — until it is answered
//! (the answer is matched here too) or its caller gives up. The driver keeps no queue of its own; it only maps
//! the ids to whoever waits for the answer.

use std::collections::BTreeMap;

use syspush_proto::device::{self, Frame, frame::Body};
use syspush_proto::device_codec::frame;

use super::events::Event;

/// A request for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    Register(String),
    Unregister(String),
    /// (app id, token)
    TokenStatus(String, String),
    /// (app id, token)
    TestPush(String, String),
}

impl Request {
    /// The frame asking the gateway for it.
    fn frame(&self, request_id: u64) -> Frame {
        match self {
            Request::Register(app_id) => frame(Body::Register(device::Register {
                request_id,
                app_id: app_id.clone(),
            })),
            Request::Unregister(app_id) => frame(Body::Unregister(device::Unregister {
                request_id,
                app_id: app_id.clone(),
            })),
            Request::TokenStatus(app_id, token) => {
                frame(Body::TokenStatusRequest(device::TokenStatusRequest {
                    request_id,
                    app_id: app_id.clone(),
                    token: token.clone(),
                }))
            }
            Request::TestPush(app_id, token) => {
                frame(Body::TestPushRequest(device::TestPushRequest {
                    request_id,
                    app_id: app_id.clone(),
                    token: token.clone(),
                }))
            }
        }
    }
}

/// Outstanding requests, in id order.
#[derive(Debug)]
pub(super) struct Requests {
    next_id: u64,
    outstanding: BTreeMap<u64, Request>,
}

impl Requests {
    pub(super) fn new() -> Self {
        Self {
            next_id: 1,
            outstanding: BTreeMap::new(),
        }
    }

    /// Queues `req`; returns its id and the frame that asks for it.
    pub(super) fn push(&mut self, req: Request) -> (u64, Frame) {
        let id = self.next_id;
        self.next_id += 1;
        let f = req.frame(id);
        self.outstanding.insert(id, req);
        (id, f)
    }

    /// An answer for `request_id` arrived: true if it was outstanding (an
    /// answer to a forgotten or repeated request is dropped).
    fn answered(&mut self, request_id: u64) -> bool {
        self.outstanding.remove(&request_id).is_some()
    }

    /// Forgets a request whose caller gave up.
    pub(super) fn cancel(&mut self, request_id: u64) {
        self.outstanding.remove(&request_id);
    }

    /// Frames of every outstanding request, in id order, for a new session.
    pub(super) fn frames(&self) -> impl Iterator<Item = Frame> + '_ {
        self.outstanding.iter().map(|(id, req)| req.frame(*id))
    }

    /// Whether `body` answers a request (see [`Requests::answer`]).
    pub(super) fn is_answer(body: &Body) -> bool {
        match body {
            Body::Registered(_)
            | Body::Unregistered(_)
            | Body::TokenStatusReply(_)
            | Body::TestPushReply(_) => true,
            Body::Error(e) => e.request_id != 0,
            _ => false,
        }
    }

    /// The event for the gateway's answer `body` to a request; None for an
    /// answer to a forgotten or repeated request (or for a frame that is not
    /// an answer).
    pub(super) fn answer(&mut self, body: Body) -> Option<Event> {
        let (request_id, event) = match body {
            Body::Registered(r) => (
                r.request_id,
                Event::Registered {
                    request_id: r.request_id,
                    app_id: r.app_id,
                    token: r.token,
                },
            ),
            Body::Unregistered(u) => (
                u.request_id,
                Event::Unregistered {
                    request_id: u.request_id,
                    app_id: u.app_id,
                },
            ),
            Body::TokenStatusReply(r) => (
                r.request_id,
                Event::TokenStatus {
                    request_id: r.request_id,
                    reply: r,
                },
            ),
            Body::TestPushReply(r) => (
                r.request_id,
                Event::TestPushSent {
                    request_id: r.request_id,
                    message_id: r.message_id,
                },
            ),
            // An error with a request id answers that request; without one it
            // is about the session.
            Body::Error(e) if e.request_id != 0 => (
                e.request_id,
                Event::RequestFailed {
                    request_id: e.request_id,
                    code: e.code,
                    message: e.message,
                },
            ),
            _ => return None,
        };
        self.answered(request_id).then_some(event)
    }
}

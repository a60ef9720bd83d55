//! The device side of the gateway session as a sans-I/O state machine.
//!
//! It owns the protocol decisions — when to dial, the ClientHello, when to send
//! a heartbeat Ping and when a missing Pong means the link is dead, which
//! cumulative Ack to send after a commit, which requests to (re)send, and how
//! long to back off before redialing — and nothing else: no sockets, no clock,
//! no tokio, no randomness source. Time comes in as boot-time [`Duration`]s,
//! randomness as a seed; frames to send come out of [`Session::poll_transmit`],
//! what the driver must do with the transport out of
//! [`Session::poll_driver_event`], happenings for the application side out of
//! [`Session::poll_event`], and the next instant it needs to be called at out
//! of [`Session::poll_timeout`]. The async driver (`link/`) does the I/O. This
//! makes "three hours of idle" or "the NAT silently dropped the mapping"
//! millisecond unit tests.
//!
//! Power rules encoded here: while idle, exactly one Ping per heartbeat
//! interval (measured from the last frame received, so any traffic from the
//! gateway postpones it); an Ack only right after a commit, one per batch.
//! The interval comes from the [`HeartbeatPolicy`], which is told the silence
//! each answered (or unanswered) Ping survived; an unanswered Ping closes the
//! link (with a reset: see [`DriverEvent::Abort`]) and the first redial is
//! immediate. Anything that arrives — even bytes that are not a frame —
//! proves the path alive: it is never taught to the policy as a failure.
//! The driver reports network changes ([`Session::network_up`],
//! [`Session::network_lost`]): without a network the session waits with no
//! timer at all; a new network redials at once.
//!
//! Parts: `config` (what the session is given), `events` (its two output
//! queues' items), `requests` (the one queue of requests to the gateway),
//! `redial` (when to dial again), `phase` (where in a connection's life it is);
//! the state machine itself is here.

mod config;
mod events;
mod phase;
mod redial;
mod requests;

use std::collections::VecDeque;
use std::time::Duration;

use syspush_proto::PROTOCOL_VERSION;
use syspush_proto::device::{self, Frame, frame::Body};
use syspush_proto::device_codec::frame;

use crate::heartbeat::{HeartbeatPolicy, HeartbeatState, Learned};
use crate::link::error::{ProtocolError, TransportError};
use phase::{Live, Phase};
use redial::Redial;
use requests::{Request, Requests};

pub use config::{Hello, SessionConfig};
pub use events::{CloseReason, DriverEvent, Event};

/// The session state machine. See the module docs.
///
/// Its methods sort into four kinds, as in quinn-proto's `Connection`:
/// - getters, which change nothing: [`Session::wants_dial`],
///   [`Session::is_live`], [`Session::is_offline`], [`Session::heartbeat`], ...;
/// - inputs from the driver (`handle_*` and the transport/network reports):
///   [`Session::handle_frame`], [`Session::handle_malformed`],
///   [`Session::handle_timeout`], [`Session::dial_started`],
///   [`Session::transport_open`], [`Session::transport_failed`],
///   [`Session::network_up`], [`Session::network_lost`];
/// - mutators, from the application side: [`Session::committed`],
///   [`Session::register`] (and the other requests), [`Session::cancel`],
///   [`Session::set_idle`], [`Session::shutdown`];
/// - outputs: [`Session::poll_event`] (for the application side),
///   [`Session::poll_driver_event`] (for the driver),
///   [`Session::poll_transmit`] (frames) and [`Session::poll_timeout`].
///
/// Call order: after any input or mutator, drain `poll_event` (committing
/// deliveries calls [`Session::committed`], which queues the Ack), then
/// `poll_driver_event` (a `Disconnect` drops the transport, an `Abort` resets
/// it), then `poll_transmit` onto the transport, and finally arm the timer at
/// `poll_timeout`; call `handle_timeout` when it fires (an early call does
/// nothing). While [`Session::wants_dial`] says so, dial: `dial_started`, then
/// `transport_open` or `transport_failed`. Every `now` is boot time and must
/// never go backwards.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    redial: Redial,
    transmit: VecDeque<Frame>,
    /// For the application side.
    events: VecDeque<Event>,
    /// For the driver.
    driver_events: VecDeque<DriverEvent>,
    next_nonce: u64,
    /// (Re)sent on every new session until answered.
    requests: Requests,
    acked_seq: u64,
    established_count: u64,
    last_rx: Option<Duration>,
    policy: HeartbeatPolicy,
    idle: bool,
}

impl Session {
    /// A session that wants to dial at once. `seed` feeds the backoff jitter.
    pub fn new(cfg: SessionConfig, now: Duration, seed: u64) -> Self {
        Self {
            cfg,
            phase: Phase::Waiting { dial_at: now },
            redial: Redial::new(cfg.backoff, seed),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            driver_events: VecDeque::new(),
            next_nonce: 1,
            requests: Requests::new(),
            acked_seq: 0,
            established_count: 0,
            last_rx: None,
            policy: HeartbeatPolicy::new(cfg.heartbeat, None),
            idle: false,
        }
    }

    /// The next boot-time instant at which [`Session::handle_timeout`] (or, while
    /// waiting, a dial) is due. `None` once stopped or while offline.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Waiting { dial_at } => Some(*dial_at),
            Phase::Dialing { deadline } | Phase::Handshaking { deadline } => Some(*deadline),
            Phase::Live(l) => Some(match l.ping {
                Some((sent, _)) => sent + self.cfg.pong_timeout,
                None => l.last_rx + self.policy.interval(),
            }),
            Phase::Offline | Phase::Stopped => None,
        }
    }

    /// Whether the driver should start dialing now.
    pub fn wants_dial(&self, now: Duration) -> bool {
        matches!(self.phase, Phase::Waiting { dial_at } if now >= dial_at)
    }

    /// The driver started dialing (TCP + TLS + WebSocket).
    pub fn dial_started(&mut self, now: Duration) {
        if let Phase::Waiting { .. } = self.phase {
            // A new transport: what was said about an earlier one is void.
            self.driver_events.clear();
            self.phase = Phase::Dialing {
                deadline: now + self.cfg.handshake_timeout,
            };
        }
    }

    /// The WebSocket is open: queues the ClientHello.
    pub fn transport_open(&mut self, _now: Duration, hello: Hello) {
        let Phase::Dialing { deadline } = self.phase else {
            return;
        };
        self.acked_seq = hello.last_committed_seq;
        self.transmit.clear();
        self.transmit
            .push_back(frame(Body::ClientHello(device::ClientHello {
                device_id: hello.device_id,
                secret: hello.secret,
                protocol_version: PROTOCOL_VERSION,
                last_committed_seq: hello.last_committed_seq,
                idle: self.idle,
            })));
        self.phase = Phase::Handshaking { deadline };
    }

    /// Dialing failed or the transport closed/errored.
    pub fn transport_failed(&mut self, now: Duration, error: TransportError) {
        if error.came_from_gateway() {
            // A close message arrived: the path carried it, whatever the
            // gateway meant by it.
            self.received(now);
        } else {
            // The link died while a heartbeat was out (a NAT that answers an
            // expired mapping with a reset): that silence was too long.
            self.heartbeat_failed(now);
        }
        if self.is_connecting() {
            self.close(now, CloseReason::Transport(error));
        }
    }

    /// A frame arrived from the gateway.
    pub fn handle_frame(&mut self, now: Duration, f: Frame) {
        let Some(body) = f.body else { return };
        match &mut self.phase {
            Phase::Handshaking { .. } => match body {
                Body::ServerHello(sh) => self.on_server_hello(now, sh),
                Body::Error(e) => self.close(
                    now,
                    CloseReason::Rejected {
                        code: e.code,
                        message: e.message,
                    },
                ),
                Body::Goaway(g) => self.on_goaway(now, g),
                other => self.close(
                    now,
                    CloseReason::Protocol(ProtocolError::unexpected("ServerHello", &other)),
                ),
            },
            Phase::Live(_) => {
                // Any frame is proof of life: it also answers an outstanding Ping.
                if let Some(silence) = self.received(now) {
                    let before = self.policy.learned();
                    self.policy.on_success(now, silence);
                    self.note_learned(before);
                }
                self.on_live_frame(now, body);
            }
            // A frame for a connection already given up on: the driver is about
            // to drop it; nothing in it may be acted on (its Ack would be lost).
            Phase::Waiting { .. } | Phase::Dialing { .. } | Phase::Offline | Phase::Stopped => {}
        }
    }

    /// Bytes arrived from the gateway that are not a frame (a message that
    /// does not decode, a text message): it broke the protocol, and the
    /// connection ends. They did arrive, though, so the path is alive: an
    /// outstanding Ping is no heartbeat failure — nor a success, as nothing
    /// answered it — and the policy learns nothing from it.
    pub fn handle_malformed(&mut self, now: Duration, error: ProtocolError) {
        self.received(now);
        if matches!(self.phase, Phase::Handshaking { .. } | Phase::Live(_)) {
            self.close(now, CloseReason::Protocol(error));
        }
    }

    /// Something arrived on a live session at `now`: notes it, and returns
    /// the silence before the Ping it ends, if one was outstanding.
    fn received(&mut self, now: Duration) -> Option<Duration> {
        let Phase::Live(live) = &mut self.phase else {
            return None;
        };
        live.last_rx = now;
        self.last_rx = Some(now);
        live.ping.take().map(|(_, silence)| silence)
    }

    fn on_server_hello(&mut self, now: Duration, sh: device::ServerHello) {
        self.policy.set_gateway_bounds(
            Duration::from_secs(sh.heartbeat_min_s.into()),
            Duration::from_secs(sh.heartbeat_max_s.into()),
        );
        let heartbeat = self.policy.interval();
        self.phase = Phase::Live(Live {
            since: now,
            last_rx: now,
            ping: None,
        });
        self.last_rx = Some(now);
        self.established_count += 1;
        self.events.push_back(Event::Established {
            session_id: sh.session_id,
            heartbeat,
            server_time_ms: sh.server_time_ms,
        });
        self.transmit.extend(self.requests.frames());
    }

    fn on_live_frame(&mut self, now: Duration, body: Body) {
        if Requests::is_answer(&body) {
            return self.events.extend(self.requests.answer(body));
        }
        match body {
            Body::Deliver(d) => self.events.push_back(Event::Deliver {
                seq: d.seq,
                notification: d.notification,
            }),
            Body::Ping(p) => self
                .transmit
                .push_back(frame(Body::Pong(device::Pong { nonce: p.nonce }))),
            Body::Pong(_) => {}
            Body::Error(e) => self.close(
                now,
                CloseReason::Rejected {
                    code: e.code,
                    message: e.message,
                },
            ),
            Body::Goaway(g) => self.on_goaway(now, g),
            Body::TokenRevoked(t) => self.events.push_back(Event::TokenRevoked {
                app_id: t.app_id,
                token: t.token,
                reason: t.reason,
            }),
            // Frames only a device sends, or a repeated ServerHello: harmless,
            // ignored. (Answers to requests were taken above.)
            Body::ServerHello(_)
            | Body::Registered(_)
            | Body::Unregistered(_)
            | Body::TokenStatusReply(_)
            | Body::TestPushReply(_)
            | Body::ClientHello(_)
            | Body::Ack(_)
            | Body::Register(_)
            | Body::Unregister(_)
            | Body::TokenStatusRequest(_)
            | Body::TestPushRequest(_)
            | Body::SetIdle(_) => {}
        }
    }

    fn on_goaway(&mut self, now: Duration, g: device::GoAway) {
        self.close(
            now,
            CloseReason::GoAway {
                reason: g.reason,
                retry_after: Duration::from_secs(g.retry_after_s.into()),
            },
        );
    }

    /// Called at (or after) [`Session::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Duration) {
        match &mut self.phase {
            Phase::Dialing { deadline } | Phase::Handshaking { deadline } => {
                if now >= *deadline {
                    self.close(now, CloseReason::HandshakeTimeout);
                }
            }
            Phase::Live(live) => match live.ping {
                Some((sent, _)) => {
                    if now >= sent + self.cfg.pong_timeout {
                        self.heartbeat_failed(now);
                        self.close(now, CloseReason::PongTimeout);
                    }
                }
                None => {
                    if now >= live.last_rx + self.policy.interval() {
                        live.ping = Some((now, now - live.last_rx));
                        let nonce = self.next_nonce;
                        self.next_nonce += 1;
                        self.transmit
                            .push_back(frame(Body::Ping(device::Ping { nonce })));
                    }
                }
            },
            Phase::Waiting { .. } | Phase::Offline | Phase::Stopped => {}
        }
    }

    /// The outstanding Ping (if any) will never be answered: tell the policy.
    fn heartbeat_failed(&mut self, now: Duration) {
        if let Phase::Live(live) = &mut self.phase
            && let Some((_, silence)) = live.ping.take()
        {
            let before = self.policy.learned();
            self.policy.on_failure(now, silence);
            self.note_learned(before);
        }
    }

    fn note_learned(&mut self, before: Learned) {
        let after = self.policy.learned();
        if after != before {
            self.events.push_back(Event::Learned(after));
        }
    }

    /// The device is on a network (the first one, a new one, or the old one
    /// back): heartbeat from what was `learned` about it, and dial now. An
    /// open connection is dropped — it belongs to the previous network — and
    /// the backoff is forgotten: the failures it counted were on another path.
    pub fn network_up(&mut self, now: Duration, learned: Option<Learned>) {
        if matches!(self.phase, Phase::Stopped) {
            return;
        }
        self.policy = HeartbeatPolicy::new(self.cfg.heartbeat, learned);
        self.redial.forget();
        if self.is_connecting() {
            self.disconnect(now, CloseReason::NetworkChanged, Some(now));
        } else {
            self.phase = Phase::Waiting { dial_at: now };
        }
    }

    /// The default route is gone: drop any connection (its heartbeat would
    /// fail and wrongly teach the policy) and wait, with no timer, for
    /// [`Session::network_up`].
    pub fn network_lost(&mut self, now: Duration) {
        if self.is_connecting() {
            self.disconnect(now, CloseReason::NetworkLost, None);
        } else if !matches!(self.phase, Phase::Stopped) {
            self.phase = Phase::Offline;
        }
    }

    fn is_connecting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Dialing { .. } | Phase::Handshaking { .. } | Phase::Live(_)
        )
    }

    /// Ends the connection without a verdict on the heartbeat or the backoff.
    fn disconnect(&mut self, _now: Duration, reason: CloseReason, redial_at: Option<Duration>) {
        self.transmit.clear();
        self.phase = match redial_at {
            Some(dial_at) => Phase::Waiting { dial_at },
            None => Phase::Offline,
        };
        self.driver_events.push_back(DriverEvent::Disconnect);
        self.events.push_back(Event::Closed { reason, redial_at });
    }

    /// The device went idle (screen off, doze) or woke up: the gateway holds
    /// normal-priority messages while idle. Sent now if connected, and in
    /// every ClientHello.
    pub fn set_idle(&mut self, idle: bool) {
        if self.idle == idle {
            return;
        }
        self.idle = idle;
        if let Phase::Live(_) = self.phase {
            self.transmit
                .push_back(frame(Body::SetIdle(device::SetIdle { idle })));
        }
    }

    /// Whether the device is idle.
    pub fn idle(&self) -> bool {
        self.idle
    }

    /// Whether the heartbeat is still learning this network.
    pub fn heartbeat_state(&self) -> HeartbeatState {
        self.policy.state()
    }

    /// What the heartbeat learned about the current network.
    pub fn learned(&self) -> Learned {
        self.policy.learned()
    }

    /// Whether there is no network to dial on.
    pub fn is_offline(&self) -> bool {
        matches!(self.phase, Phase::Offline)
    }

    /// Everything up to `seq` is durably committed: queues one cumulative Ack
    /// (none if it acknowledges nothing new).
    pub fn committed(&mut self, seq: u64) {
        if seq <= self.acked_seq {
            return;
        }
        self.acked_seq = seq;
        if let Phase::Live(_) = self.phase {
            self.transmit
                .push_back(frame(Body::Ack(device::Ack { seq })));
        }
        // Not live: the next ClientHello carries the committed seq instead.
    }

    /// Asks the gateway for a token for `app_id`; sent now or once connected.
    pub fn register(&mut self, app_id: impl Into<String>) -> u64 {
        self.request(Request::Register(app_id.into()))
    }

    /// Asks the gateway to revoke `app_id`'s token; sent now or once connected.
    pub fn unregister(&mut self, app_id: impl Into<String>) -> u64 {
        self.request(Request::Unregister(app_id.into()))
    }

    /// Asks the gateway whether `token` of `app_id` is valid; sent now or once connected.
    pub fn token_status(&mut self, app_id: String, token: String) -> u64 {
        self.request(Request::TokenStatus(app_id, token))
    }

    /// Asks the gateway to send a test push to `app_id`'s `token`.
    pub fn test_push(&mut self, app_id: String, token: String) -> u64 {
        self.request(Request::TestPush(app_id, token))
    }

    fn request(&mut self, req: Request) -> u64 {
        let (id, f) = self.requests.push(req);
        if let Phase::Live(_) = self.phase {
            self.transmit.push_back(f);
        }
        id
    }

    /// Forgets a request whose caller gave up (it is not resent).
    pub fn cancel(&mut self, request_id: u64) {
        self.requests.cancel(request_id);
    }

    /// Stops for good. Returns true if a GoAway was queued (a session was open);
    /// the driver flushes it and closes the transport.
    pub fn shutdown(&mut self) -> bool {
        let open = matches!(self.phase, Phase::Live(_) | Phase::Handshaking { .. });
        self.transmit.clear();
        if open {
            self.transmit.push_back(frame(Body::Goaway(device::GoAway {
                reason: "shutdown".into(),
                retry_after_s: 0,
            })));
        }
        self.phase = Phase::Stopped;
        open
    }

    fn close(&mut self, now: Duration, reason: CloseReason) {
        let forgive = matches!(&self.phase, Phase::Live(live)
            if now.saturating_sub(live.since) >= self.cfg.stable_after
                // A dead mapping, not a dead gateway: the session was up, so
                // redial at once, however short the (test) heartbeat is.
                || reason == CloseReason::PongTimeout);
        let redial_at = now + self.redial.after_close(forgive, &reason);
        // Frames queued for the dead transport are void; the next ClientHello
        // carries the committed seq, and requests are resent.
        self.transmit.clear();
        self.phase = Phase::Waiting { dial_at: redial_at };
        self.driver_events.push_back(reason.teardown());
        self.events.push_back(Event::Closed {
            reason,
            redial_at: Some(redial_at),
        });
    }

    /// Next frame to send on the current transport.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// Next event for the application side (commits, answers, state changes).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Next thing the driver must do with the transport.
    pub fn poll_driver_event(&mut self) -> Option<DriverEvent> {
        self.driver_events.pop_front()
    }

    /// Whether a session (ServerHello received) is up.
    pub fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Live(_))
    }

    /// Whether the current transport (if any) must be dropped: waiting, offline or stopped.
    pub fn is_disconnected(&self) -> bool {
        matches!(
            self.phase,
            Phase::Waiting { .. } | Phase::Offline | Phase::Stopped
        )
    }

    /// Whether the session is over for good.
    pub fn is_stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// Boot time at which the live session started.
    pub fn live_since(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Live(l) => Some(l.since),
            _ => None,
        }
    }

    /// Heartbeat interval of the live session.
    pub fn heartbeat(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Live(_) => Some(self.policy.interval()),
            _ => None,
        }
    }

    /// The heartbeat interval in force or, between connections, the one the
    /// next session starts from (the gateway's bounds may still narrow it):
    /// what was learned, not the configured start. None without a network.
    pub fn planned_heartbeat(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Offline | Phase::Stopped => None,
            _ => Some(self.policy.interval()),
        }
    }

    /// Boot time of the last frame received from the gateway (any session).
    pub fn last_rx(&self) -> Option<Duration> {
        self.last_rx
    }

    /// Sessions established after the first one.
    pub fn reconnects(&self) -> u64 {
        self.established_count.saturating_sub(1)
    }

    /// Highest seq acked (or announced in the ClientHello).
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq
    }
}

#[cfg(test)]
mod tests;

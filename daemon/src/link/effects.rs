//! What the session's application events do: deliveries committed to the
//! store in one batch (then the Ack, then the app connections told through
//! the [`Hub`], or the app woken), revocations, request answers, learned
//! heartbeats saved, the gateway clock set, and the status published.

use std::sync::{Arc, Mutex};

use syspush_proto::common::Notification;

use crate::clock;
use crate::config::Config;
use crate::hub::{AppEvent, Hub};
use crate::notify::Notifier;
use crate::session::{CloseReason, Event, Session};
use crate::store::Store;
use crate::wake::Waker;

use super::error::{LinkFailure, TransportError};
use super::handle::{LinkStatus, RequestError, lock};
use super::replies::{Replies, Reply};

/// Everything session events act on.
pub(super) struct Effects {
    pub(super) config: Arc<Config>,
    pub(super) store: Arc<Store>,
    pub(super) hub: Arc<Hub>,
    pub(super) notifier: Arc<Notifier>,
    pub(super) waker: Waker,
    /// Set from each ServerHello; read for message expiry.
    pub(super) gateway_clock: clock::GatewayClock,
    pub(super) status: Arc<Mutex<LinkStatus>>,
    /// Who waits for the answer to which request.
    pub(super) replies: Replies,
}

impl Effects {
    /// Acts on everything the session decided, committing deliveries in one
    /// batch, then publishes the status. `network` is the current network's
    /// identity.
    pub(super) fn process(&mut self, session: &mut Session, network: &str) {
        // Every wake-up of the driver passes here: the watchdog rides on it.
        self.notifier.watchdog();
        let mut batch: Vec<(u64, Option<Notification>)> = Vec::new();
        loop {
            while let Some(ev) = session.poll_event() {
                self.on_event(session, network, ev, &mut batch);
            }
            if batch.is_empty() {
                break;
            }
            self.commit(session, std::mem::take(&mut batch));
            // A failed commit closes the session: handle that event too.
        }
        self.publish_status(session, network);
    }

    fn on_event(
        &mut self,
        session: &Session,
        network: &str,
        ev: Event,
        batch: &mut Vec<(u64, Option<Notification>)>,
    ) {
        match ev {
            Event::Established {
                session_id,
                heartbeat,
                server_time_ms,
            } => {
                if server_time_ms != 0 {
                    let offset_ms = self.gateway_clock.set_offset(server_time_ms);
                    if offset_ms.abs() > 60_000 {
                        tracing::warn!(
                            offset_ms,
                            "device clock differs from the gateway's; message expiry uses gateway time"
                        );
                    }
                }
                tracing::info!(
                    session_id,
                    heartbeat_s = heartbeat.as_secs(),
                    reconnects = session.reconnects(),
                    "link up"
                );
                self.notifier
                    .status(&format!("connected to {}", self.config.gateway));
            }
            Event::Deliver { seq, notification } => batch.push((seq, notification)),
            Event::Registered {
                request_id,
                app_id,
                token,
            } => {
                let result = self
                    .store
                    .set_token(&app_id, &token)
                    .map(|_| token)
                    .map_err(|e| RequestError::Store(e.to_string()));
                tracing::info!(app_id, ok = result.is_ok(), "registered");
                // A new token: an old revocation is no news any more.
                if let Err(e) = self.store.clear_revocation(&app_id) {
                    tracing::warn!(app_id, error = %e, "cannot clear a revocation");
                }
                if let Some(Reply::Register(r)) = self.replies.take(request_id) {
                    let _ = r.send(result);
                }
            }
            Event::Unregistered { request_id, app_id } => {
                let result = self
                    .store
                    .drop_app(&app_id)
                    .map(|_| ())
                    .map_err(|e| RequestError::Store(e.to_string()));
                tracing::info!(app_id, ok = result.is_ok(), "unregistered");
                if let Some(Reply::Unregister(r)) = self.replies.take(request_id) {
                    let _ = r.send(result);
                }
            }
            Event::RequestFailed {
                request_id,
                code,
                message,
            } => {
                tracing::warn!(request_id, code, message, "gateway refused a request");
                let err = RequestError::Rejected { code, message };
                if let Some(r) = self.replies.take(request_id) {
                    r.fail(err);
                }
            }
            Event::TokenStatus { request_id, reply } => {
                if let Some(Reply::TokenStatus(r)) = self.replies.take(request_id) {
                    let _ = r.send(Ok(reply));
                }
            }
            Event::TestPushSent {
                request_id,
                message_id,
            } => {
                if let Some(Reply::TestPush(r)) = self.replies.take(request_id) {
                    let _ = r.send(Ok(message_id));
                }
            }
            Event::TokenRevoked {
                app_id,
                token,
                reason,
            } => self.revoked(&app_id, &token, reason),
            Event::Learned(learned) => {
                tracing::info!(
                    network,
                    good_s = learned.good.map(|d| d.as_secs()),
                    ceiling_s = learned.ceiling.map(|d| d.as_secs()),
                    state = session.heartbeat_state().as_str(),
                    "heartbeat learned"
                );
                if let Err(e) = self.store.set_learned(network, learned) {
                    tracing::warn!(error = %e, "cannot remember the learned heartbeat");
                }
            }
            Event::Closed {
                reason,
                redial_at: None,
            } => {
                tracing::info!(reason = ?reason, "link down; waiting for a network");
                self.notifier.status("no network; waiting");
            }
            Event::Closed {
                reason,
                redial_at: Some(redial_at),
            } => {
                let redial_in_ms = redial_at.saturating_sub(clock::now()).as_millis() as u64;
                match reason {
                    CloseReason::Rejected { code, message } => {
                        tracing::error!(
                            code,
                            message,
                            redial_in_ms,
                            "gateway rejected the session"
                        );
                        lock(&self.status).last_error =
                            Some(LinkFailure::Rejected { code, message });
                    }
                    // Shown with its text: that is where the io, TLS or
                    // WebSocket error says what went wrong.
                    CloseReason::Transport(error) => {
                        tracing::warn!(error = %error, redial_in_ms, "link down")
                    }
                    CloseReason::Protocol(error) => {
                        tracing::warn!(error = %error, redial_in_ms, "gateway broke the protocol")
                    }
                    other => tracing::warn!(reason = ?other, redial_in_ms, "link down"),
                }
                self.notifier.status("disconnected; reconnecting");
            }
        }
    }

    /// The gateway revoked a token. Token, pending messages and the "tell the
    /// app" note go in one transaction; a connected app is told now, another
    /// at its next hello (the note stays until then).
    fn revoked(&self, app_id: &str, token: &str, reason: String) {
        match self.store.revoke(app_id, token, &reason) {
            Ok(Some(dropped)) => {
                tracing::info!(app_id, reason, dropped, "token revoked by the gateway");
                if self.hub.connected(app_id) {
                    self.hub.event(app_id, AppEvent::TokenRevoked { reason });
                    if let Err(e) = self.store.clear_revocation(app_id) {
                        tracing::warn!(app_id, error = %e, "cannot clear a revocation");
                    }
                }
            }
            Ok(None) => {
                tracing::debug!(app_id, "revocation of a token that is not current; ignored")
            }
            Err(e) => tracing::error!(app_id, error = %e, "cannot drop revoked token"),
        }
    }

    fn commit(&mut self, session: &mut Session, batch: Vec<(u64, Option<Notification>)>) {
        let now = clock::now();
        match self.store.commit(&batch, self.gateway_clock.now_ms()) {
            Ok(out) => {
                session.committed(out.last_committed_seq);
                tracing::debug!(
                    frames = batch.len(),
                    stored = out.stored.len(),
                    duplicates = out.duplicates,
                    expired = out.expired,
                    collapsed = out.collapsed,
                    disabled = out.disabled,
                    seq = out.last_committed_seq,
                    "committed"
                );
                for (app_id, arrival) in &out.stored {
                    // disable_push: delivered if the app is connected, kept
                    // for it otherwise, but never a reason to wake it.
                    if !self.hub.publish(app_id, *arrival) && !out.silent.contains(arrival) {
                        self.waker.wake(app_id, now);
                    }
                }
            }
            Err(e) => {
                // Not acked: the gateway keeps the messages and resends them.
                tracing::error!(error = %e, "cannot commit deliveries; dropping the link");
                session.transport_failed(now, TransportError::commit(e));
            }
        }
    }

    /// Publishes what the status request shows.
    pub(super) fn publish_status(&self, session: &Session, network: &str) {
        let mut s = lock(&self.status);
        s.connected = session.is_live();
        s.live_since = session.live_since();
        s.heartbeat = session.planned_heartbeat();
        s.last_rx = session.last_rx();
        s.reconnects = session.reconnects();
        s.heartbeat_state = Some(session.heartbeat_state());
        s.network = Some(network.to_string()).filter(|_| !session.is_offline());
        s.idle = session.idle();
    }
}

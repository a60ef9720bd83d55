//! Device requests that answer "why did it not arrive": token status (for
//! `syspushctl doctor`) and the test push (`syspushctl test`); and telling the
//! device about revocations, now or at its next hello.

use syspush_proto::common::{MessageClass, Notification, Priority};
use syspush_proto::device::{self, ErrorCode, frame::Body};

use super::{LinkError, Session};
use crate::ids;
use crate::store::TokenState;

/// Title of the gateway's test push (the daemon and `syspushctl test` look for it).
pub const TEST_TITLE: &str = "syspush test";
/// ttl of a test push: a diagnostic is useless later.
const TEST_TTL_S: u32 = 60;

impl Session {
    /// Notes that the device was just heard from.
    pub(super) fn seen(&self) {
        let mut m = self
            .link
            .shared
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.insert(self.link.device_id.clone(), ids::now_ms());
    }

    /// Sends a revocation and forgets it (the device acts on it at once).
    pub(super) async fn send_revocation(
        &mut self,
        app_id: String,
        token: String,
        reason: String,
    ) -> Result<(), LinkError> {
        let frame = device::TokenRevoked {
            app_id,
            token: token.clone(),
            reason,
        };
        self.link.send(Body::TokenRevoked(frame)).await?;
        let id = self.link.device_id.clone();
        self.link
            .shared
            .store(move |s| s.clear_revocation(&id, &token))
            .await?;
        Ok(())
    }

    /// Every revocation the device has not been told about.
    pub(super) async fn send_revocations(&mut self) -> Result<(), LinkError> {
        let id = self.link.device_id.clone();
        let pending = self.link.shared.store(move |s| s.revocations(&id)).await?;
        for (app_id, token, reason) in pending {
            tracing::info!(device_id = %self.link.device_id, app_id, "telling the device about a revocation it missed");
            self.send_revocation(app_id, token, reason).await?;
        }
        Ok(())
    }

    pub(super) async fn on_token_status(
        &mut self,
        req: device::TokenStatusRequest,
    ) -> Result<(), LinkError> {
        let (device_id, app_id, token) = (
            self.link.device_id.clone(),
            req.app_id.clone(),
            req.token.clone(),
        );
        let (record, pending) = self
            .link
            .shared
            .store(move |s| Ok((s.token(&token)?, s.pending_for(&device_id, &app_id)?)))
            .await?;
        // Another device's or app's token looks unknown, as on the HTTP API.
        let state =
            match record.filter(|r| r.device_id == self.link.device_id && r.app_id == req.app_id) {
                Some(r) if r.state == TokenState::Live => "live",
                Some(_) => "revoked",
                None => "unknown",
            };
        let reply = device::TokenStatusReply {
            request_id: req.request_id,
            app_id: req.app_id,
            valid: state == "live",
            state: state.to_owned(),
            pending,
        };
        self.link.send(Body::TokenStatusReply(reply)).await
    }

    /// Queues a normal message to the app's live token, as an app server
    /// would, so the test covers the whole path (store, poke, delivery).
    pub(super) async fn on_test_push(
        &mut self,
        req: device::TestPushRequest,
    ) -> Result<(), LinkError> {
        let t = req.token.clone();
        let record = self.link.shared.store(move |s| s.token(&t)).await?;
        let live = record.is_some_and(|r| {
            r.state == TokenState::Live
                && r.device_id == self.link.device_id
                && r.app_id == req.app_id
        });
        if !live {
            let msg = format!("no live token for {:?} on this device", req.app_id);
            return self
                .link
                .send_error(ErrorCode::ErrorBadRequest, &msg, req.request_id)
                .await;
        }
        // Important, not operational: a diagnostic must not eat the app's quota.
        let mut n = Notification {
            title: TEST_TITLE.to_owned(),
            desc: "test push from the gateway".to_owned(),
            ext: "syspush-test".to_owned(),
            priority: Priority::High as i32,
            class: MessageClass::ClassImportant as i32,
            ttl: TEST_TTL_S,
            ..Notification::default()
        };
        let shared = std::sync::Arc::clone(&self.link.shared);
        let device_id = self.link.device_id.clone();
        match crate::api::accept(&shared, &req.app_id, &device_id, &mut n).await {
            Ok(_) => {
                tracing::info!(device_id, app_id = %req.app_id, message_id = %n.message_id, "test push queued");
                let reply = device::TestPushReply {
                    request_id: req.request_id,
                    app_id: req.app_id,
                    message_id: n.message_id,
                };
                self.link.send(Body::TestPushReply(reply)).await
            }
            Err(error) => {
                tracing::error!(device_id, %error, "test push failed");
                self.link
                    .send_error(ErrorCode::ErrorInternal, "internal error", req.request_id)
                    .await
            }
        }
    }
}

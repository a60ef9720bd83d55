//! `GET /v1/tokens/{token}` (app key): what an app server needs to find out
//! why a push did not arrive — is the token registered or revoked, is the
//! device online and when was it last seen, how much is queued for the app on
//! it, how much of today's operational quota is left, and how many messages
//! were dropped for which reason (expired, collapsed, quota, revoked).
//!
//! And `DELETE /v1/tokens/{token}` (app key): the app server's forced
//! logout, told to the device now if it is connected, else at its next hello.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::auth::{authenticate_app, live_token};
use super::error::ApiError;
use super::limits::body;
use crate::ids;
use crate::registry::Poke;
use crate::state::Shared;
use crate::store::{DROP_REASONS, TokenState};

/// Reason sent to the device when the app server gives none.
pub const DEFAULT_REVOKE_REASON: &str = "revoked by the app server";

/// The optional JSON body of a revocation: `{"reason": "..."}`.
fn revoke_reason(raw: &[u8]) -> Result<String, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        reason: Option<String>,
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_REVOKE_REASON.to_owned());
    }
    let b: Body = serde_json::from_slice(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid revocation: {e}")))?;
    Ok(b.reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REVOKE_REASON.to_owned()))
}

/// `DELETE /v1/tokens/{token}`: the app server revokes a token (forced
/// logout). Sends to it answer 404 from now on, its queued messages are
/// dropped, and a connected device is told with `TokenRevoked`.
pub(super) async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let app = authenticate_app(&shared, &headers).await?;
    let Path(token) = token.map_err(|e| ApiError::BadRequest(format!("bad token in path: {e}")))?;
    let reason = revoke_reason(&body(raw)?)?;
    live_token(&shared, &app, token.clone()).await?;
    // Revoked, its messages dropped and the device's notice recorded in one
    // commit: the notice is kept until the device is told (now if
    // connected, else at its next hello), and a crash cannot lose it.
    let (t, r) = (token.clone(), reason.clone());
    let Some(record) = shared.store(move |s| s.revoke_exact(&t, &r)).await? else {
        // Revoked concurrently (e.g. the device unregistered).
        return Err(ApiError::NotFound("unknown token".into()));
    };
    let poke = Poke::TokenRevoked {
        app_id: record.app_id.clone(),
        token,
        reason,
    };
    let online = shared.registry.poke(&record.device_id, poke);
    tracing::info!(device_id = %record.device_id, app_id = %record.app_id, online, "token revoked by the app server");
    Ok(axum::Json(json!({ "revoked": true })).into_response())
}

/// `GET /v1/tokens/{token}`. 404 for an unknown token or another app's.
pub(super) async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let app = authenticate_app(&shared, &headers).await?;
    let Path(token) = token.map_err(|e| ApiError::BadRequest(format!("bad token in path: {e}")))?;
    let t = token.clone();
    let record = shared
        .store(move |s| s.token(&t))
        .await?
        .filter(|r| r.app_id == app.app_id)
        .ok_or_else(|| ApiError::NotFound("unknown token".into()))?;
    let live = record.state == TokenState::Live;
    let now_ms = ids::now_ms();
    let day = now_ms / 86_400_000;
    let (d, a) = (record.device_id.clone(), record.app_id.clone());
    let (pending, drops, used) = shared
        .store(move |s| {
            Ok((
                s.pending_for(&d, &a, now_ms)?,
                s.drops(&d, &a, now_ms)?,
                s.quota_used(&a, &d, day)?,
            ))
        })
        .await?;
    // Every reason appears, zero included, so a client need not guess names.
    let mut by_reason: Map<String, Value> = DROP_REASONS
        .iter()
        .map(|r| ((*r).to_owned(), json!(0)))
        .collect();
    for (reason, n) in drops {
        by_reason.insert(reason, json!(n));
    }
    let limit = shared.config.operational_daily_quota;
    let last_seen_ms = shared.last_seen(&record.device_id);
    Ok(axum::Json(json!({
        "token": token,
        "app_id": record.app_id,
        "state": if live { "registered" } else { "revoked" },
        "registered": live,
        "device_online": shared.registry.is_connected(&record.device_id),
        "last_seen_ms": last_seen_ms,
        "pending": pending,
        "quota_daily": limit,
        "quota_left_today": limit.map(|l| l.saturating_sub(used)),
        "drops": by_reason,
    }))
    .into_response())
}

//! The HTTP API: the route table. Each route's handler lives in a child —
//! device enrollment (`devices`), the send app servers call (`messages`),
//! token status and revocation ([`tokens`]) — with credentials checked in
//! `auth`, request bounds in `limits`, and every failure mapped to a JSON
//! `{"error": "..."}` with the status the contract names in `error`.
//!
//! Room is left for a WebPush (RFC 8030) endpoint per token next to
//! `/v1/messages` (e.g. `POST /v1/push/{token}`); it would share
//! `crate::accept`.

mod auth;
mod devices;
mod error;
mod limits;
mod messages;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use serde_json::json;

pub use error::ApiError;
pub use limits::{MAX_BODY_BYTES, MAX_HEAD_BYTES};
pub use messages::{
    MAX_CHANNEL_ID_BYTES, MAX_COLLAPSE_KEY_BYTES, MAX_IDEMPOTENCY_KEY_BYTES, MAX_PAYLOAD_BYTES,
    MAX_SENDER_FIELD_BYTES, MAX_TTL_S, parse_send_request,
};

use crate::state::Shared;

/// The route table.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/devices", post(devices::enroll))
        .route("/v1/messages", post(messages::send))
        .route(
            "/v1/tokens/{token}",
            delete(tokens::revoke).get(tokens::status),
        )
        .route("/v1/device", get(crate::link::upgrade))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            limits::guard_request,
        ))
        .with_state(shared)
}

//! Request limits: the head size cap (enforced by hyper, see
//! [`MAX_HEAD_BYTES`]), the body size cap and the time bound on a whole
//! request, enforced before any extractor reads the body, and the mapping of
//! the body extractor's rejection to [`ApiError`].

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::error::ApiError;
use crate::state::Shared;

/// Largest request head (request line and headers). hyper buffers a head
/// until it is complete; past this it answers 431 (Request Header Fields Too
/// Large) and closes, instead of buffering ~400 KB per connection (its
/// default). Applied with `http1::Builder::max_buf_size` in `lib.rs`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Runs before any extractor, because extractors read the body before a
/// handler's first line: refuses a body announced above [`MAX_BODY_BYTES`]
/// from its Content-Length alone (without it, a client announcing 1 GiB and
/// sending nothing would hold the connection open forever), and gives the
/// rest of the request (the body) the same time bound as its headers, so a
/// slow-loris body is cut off too. Upgrades (`/v1/device`) answer at once and
/// run outside this bound.
pub(super) async fn guard_request(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > MAX_BODY_BYTES as u64) {
        return ApiError::TooLarge(format!(
            "request body of {len} bytes exceeds {MAX_BODY_BYTES} bytes"
        ))
        .into_response();
    }
    let bound = std::time::Duration::from_secs(shared.config.header_read_timeout_s);
    match tokio::time::timeout(bound, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Turns the body extractor's rejection into our JSON errors.
pub(super) fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body exceeds {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::BadRequest(format!("cannot read body: {rejection}"))
        }
    })
}

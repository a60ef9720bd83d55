//! [`ApiError`]: every failure of the HTTP API, and its mapping to a status
//! and a JSON `{"error": "..."}` body (with `WWW-Authenticate` on 401).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::accept::AcceptError;
use crate::ids::RandomError;
use crate::store::StoreError;

/// Errors of the HTTP API; each maps to one status and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials (401).
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The app may not send this class (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown route or token (404).
    #[error("{0}")]
    NotFound(String),
    /// Wrong method for the route (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Payload or body too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// The request (its body, or the work behind it) took longer than the
    /// configured bound (408).
    #[error("request not completed in time")]
    Timeout,
    /// The `Idempotency-Key` was already used for a different request (422).
    #[error("{0}")]
    KeyReused(String),
    /// The app's daily quota for operational messages is used up (429).
    #[error("{0}")]
    QuotaExhausted(String),
    /// The store failed (500; details are logged, not returned).
    #[error("internal error")]
    Store(#[from] StoreError),
    /// The RNG failed (500).
    #[error("internal error")]
    Random(#[from] RandomError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::KeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::QuotaExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Store(_) | ApiError::Random(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            quota @ AcceptError::QuotaExhausted { .. } => {
                ApiError::QuotaExhausted(quota.to_string())
            }
            reused @ AcceptError::KeyReused(_) => ApiError::KeyReused(reused.to_string()),
            AcceptError::Store(e) => ApiError::Store(e),
            AcceptError::Random(e) => ApiError::Random(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        }
        let mut resp = (status, axum::Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

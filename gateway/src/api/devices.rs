//! Device enrollment: `POST /v1/devices` with the shared enrollment key
//! creates a device id and secret (only the secret's hash is stored).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::check_enrollment_key;
use super::error::ApiError;
use crate::ids;
use crate::state::Shared;

/// `POST /v1/devices`: enrolls a device with the shared enrollment key.
pub(super) async fn enroll(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_enrollment_key(&shared, &headers)?;
    let device_id = ids::new_id()?;
    let secret = ids::new_secret()?;
    let hash = ids::hash_secret(&secret);
    let id = device_id.clone();
    shared.store(move |s| s.create_device(&id, &hash)).await?;
    tracing::info!(device_id, "device enrolled");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "device_id": device_id, "secret": secret })),
    )
        .into_response())
}

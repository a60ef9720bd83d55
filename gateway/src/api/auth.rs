//! Who may call the HTTP API: the app key (a bearer token whose hash names an
//! app), the shared enrollment key, and "this token is a live token of this
//! app" — which answers 404 alike for unknown, revoked and other apps' tokens.

use axum::http::{HeaderMap, header};

use super::error::ApiError;
use crate::ids;
use crate::state::Shared;
use crate::store::{AppRecord, TokenRecord, TokenState};

/// The bearer token of a request, if it has a well-formed one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The app whose API key the request carries.
pub(super) async fn authenticate_app(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<AppRecord, ApiError> {
    let key = bearer(headers).ok_or(ApiError::Unauthorized)?;
    let key_hash = ids::hash_secret(key);
    shared
        .store(move |s| s.app_by_key_hash(&key_hash))
        .await?
        .ok_or(ApiError::Unauthorized)
}

/// Checks that the request carries the configured enrollment key (compared
/// by hash, without an early exit).
pub(super) fn check_enrollment_key(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = bearer(headers).ok_or(ApiError::Unauthorized)?;
    let expected = ids::hash_secret(&shared.config.enrollment_key);
    if ids::hashes_equal(&ids::hash_secret(presented), &expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The record of a live token of `app`; unknown, revoked and another app's
/// tokens all look the same to the caller (404).
pub(super) async fn live_token(
    shared: &Shared,
    app: &AppRecord,
    token: String,
) -> Result<TokenRecord, ApiError> {
    match shared.store(move |s| s.token(&token)).await? {
        Some(r) if r.state == TokenState::Live && r.app_id == app.app_id => Ok(r),
        _ => Err(ApiError::NotFound("unknown token".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer(&h), None);
    }
}

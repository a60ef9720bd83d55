//! The HTTP API: device enrollment (`POST /v1/devices`), the API app servers
//! call (`POST /v1/messages`, `DELETE /v1/tokens/{token}`), health, and the
//! route table.
//!
//! Owns request validation and the mapping of every failure to a JSON
//! `{"error": "..."}` with the status the contract names. The send path commits
//! the message to the store before answering 200 and only then pokes the live
//! connection, so a 200 means the message survives a gateway crash.
//!
//! Room is left for a WebPush (RFC 8030) endpoint per token next to
//! `/v1/messages` (e.g. `POST /v1/push/{token}`); it would share `accept`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use syspush_proto::common::{MessageClass, Notification, Priority, Sender};

use crate::Shared;
use crate::ids::{self, RandomError};
use crate::registry::Poke;
use crate::store::{AppRecord, StoreError, TTL0_GRACE_MS, TokenRecord, TokenState};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest title + desc + ext + decoded data of one message.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Default and maximum ttl (28 days).
pub const MAX_TTL_S: u32 = 2_419_200;

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
            ApiError::QuotaExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Store(_) | ApiError::Random(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

/// The route table.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/devices", post(enroll))
        .route("/v1/messages", post(send))
        .route(
            "/v1/tokens/{token}",
            delete(revoke).get(crate::tokens::status),
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
            guard_request,
        ))
        .with_state(shared)
}

/// Runs before any extractor, because extractors read the body before a
/// handler's first line: refuses a body announced above [`MAX_BODY_BYTES`]
/// from its Content-Length alone (without it, a client announcing 1 GiB and
/// sending nothing would hold the connection open forever), and gives the
/// rest of the request (the body) the same time bound as its headers, so a
/// slow-loris body is cut off too. Upgrades (`/v1/device`) answer at once and
/// run outside this bound.
async fn guard_request(
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

/// The bearer token of a request, if it has a well-formed one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Turns the body extractor's rejection into our JSON errors.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body exceeds {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::BadRequest(format!("cannot read body: {rejection}"))
        }
    })
}

/// `POST /v1/devices`: enrolls a device with the shared enrollment key.
async fn enroll(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let presented = bearer(&headers).ok_or(ApiError::Unauthorized)?;
    let expected = ids::hash_secret(&shared.config.enrollment_key);
    if !ids::hashes_equal(&ids::hash_secret(presented), &expected) {
        return Err(ApiError::Unauthorized);
    }
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

/// JSON body of `POST /v1/messages`. `null` is accepted wherever a field is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    token: String,
    title: Option<String>,
    desc: Option<String>,
    ext: Option<String>,
    /// Standard base64.
    data: Option<String>,
    priority: Option<PriorityJson>,
    class: Option<ClassJson>,
    ttl: Option<u64>,
    collapse_key: Option<String>,
    channel_id: Option<String>,
    disable_push: Option<bool>,
    sender: Option<SenderJson>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PriorityJson {
    High,
    Normal,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ClassJson {
    System,
    Important,
    Operational,
}

impl ClassJson {
    fn name(self) -> &'static str {
        match self {
            ClassJson::System => "system",
            ClassJson::Important => "important",
            ClassJson::Operational => "operational",
        }
    }

    fn proto(self) -> MessageClass {
        match self {
            ClassJson::System => MessageClass::ClassSystem,
            ClassJson::Important => MessageClass::ClassImportant,
            ClassJson::Operational => MessageClass::ClassOperational,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SenderJson {
    id: Option<String>,
    nickname: Option<String>,
}

/// Parses and validates the JSON body of `POST /v1/messages` into its token
/// and the notification (without id, app and timestamps, assigned at accept).
/// Public so the fuzz target `gateway_send_json` exercises exactly what the
/// handler runs on untrusted bytes.
pub fn parse_send_request(raw: &[u8]) -> Result<(String, Notification), ApiError> {
    let req: SendRequest = serde_json::from_slice(raw)
        .map_err(|e| ApiError::BadRequest(format!("invalid message: {e}")))?;
    notification(req)
}

/// `POST /v1/messages`: an app server sends one message to a token.
async fn send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Authenticate before looking at the body.
    let app = authenticate_app(&shared, &headers).await?;

    let raw = body(raw)?;
    let (token, mut n) = parse_send_request(&raw)?;

    let class = ClassJson::from_proto(n.class);
    if !app.allows(class.name()) {
        return Err(ApiError::Forbidden(format!(
            "app {} may not send class {}",
            app.app_id,
            class.name()
        )));
    }
    let record = live_token(&shared, &app, token).await?;
    accept(&shared, &app.app_id, &record.device_id, &mut n).await
}

/// The app whose API key the request carries.
pub(crate) async fn authenticate_app(
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

/// The record of a live token of `app`; unknown, revoked and another app's
/// tokens all look the same to the caller (404).
async fn live_token(
    shared: &Shared,
    app: &AppRecord,
    token: String,
) -> Result<TokenRecord, ApiError> {
    match shared.store(move |s| s.token(&token)).await? {
        Some(r) if r.state == TokenState::Live && r.app_id == app.app_id => Ok(r),
        _ => Err(ApiError::NotFound("unknown token".into())),
    }
}

/// `DELETE /v1/tokens/{token}`: the app server revokes a token (forced
/// logout). Sends to it answer 404 from now on, its queued messages are
/// dropped, and a connected device is told with `TokenRevoked`.
async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let app = authenticate_app(&shared, &headers).await?;
    let Path(token) = token.map_err(|e| ApiError::BadRequest(format!("bad token in path: {e}")))?;
    let reason = crate::tokens::revoke_reason(&body(raw)?)?;
    live_token(&shared, &app, token.clone()).await?;
    let t = token.clone();
    let Some(record) = shared.store(move |s| s.revoke_exact(&t)).await? else {
        // Revoked concurrently (e.g. the device unregistered).
        return Err(ApiError::NotFound("unknown token".into()));
    };
    // Remembered until the device is told (now if connected, else at its
    // next hello), so a device that is offline now still learns it.
    let (d, a, t, r) = (
        record.device_id.clone(),
        record.app_id.clone(),
        token.clone(),
        reason.clone(),
    );
    shared
        .store(move |s| s.add_revocation(&d, &a, &t, &r))
        .await?;
    let poke = Poke::TokenRevoked {
        app_id: record.app_id.clone(),
        token,
        reason,
    };
    let online = shared.registry.poke(&record.device_id, poke);
    tracing::info!(device_id = %record.device_id, app_id = %record.app_id, online, "token revoked by the app server");
    Ok(axum::Json(json!({ "revoked": true })).into_response())
}

impl ClassJson {
    fn from_proto(c: i32) -> Self {
        match MessageClass::try_from(c) {
            Ok(MessageClass::ClassSystem) => ClassJson::System,
            Ok(MessageClass::ClassImportant) => ClassJson::Important,
            _ => ClassJson::Operational,
        }
    }
}

/// Validates a request; returns its token and the notification (without id,
/// app and timestamps, which [`accept`] assigns).
fn notification(req: SendRequest) -> Result<(String, Notification), ApiError> {
    if req.token.is_empty() {
        return Err(ApiError::BadRequest("token is required".into()));
    }
    let ttl = req.ttl.unwrap_or(u64::from(MAX_TTL_S));
    let ttl = u32::try_from(ttl)
        .ok()
        .filter(|t| *t <= MAX_TTL_S)
        .ok_or_else(|| ApiError::BadRequest(format!("ttl must be at most {MAX_TTL_S} seconds")))?;
    let data = match req.data.as_deref() {
        None | Some("") => Vec::new(),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| ApiError::BadRequest(format!("data is not valid base64: {e}")))?,
    };
    let title = req.title.unwrap_or_default();
    let desc = req.desc.unwrap_or_default();
    let ext = req.ext.unwrap_or_default();
    let size = title.len() + desc.len() + ext.len() + data.len();
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::TooLarge(format!(
            "title + desc + ext + data is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
        )));
    }
    let sender = req.sender.map(|s| Sender {
        id: s.id.unwrap_or_default(),
        nickname: s.nickname.unwrap_or_default(),
    });
    // An empty title shows who sent it: the nickname, else the sender id.
    let title = if title.is_empty() {
        sender
            .as_ref()
            .map(|s| {
                if s.nickname.is_empty() {
                    s.id.clone()
                } else {
                    s.nickname.clone()
                }
            })
            .unwrap_or_default()
    } else {
        title
    };
    let priority = match req.priority {
        Some(PriorityJson::High) => Priority::High,
        Some(PriorityJson::Normal) | None => Priority::Normal,
    };
    let n = Notification {
        message_id: String::new(),
        app_id: String::new(),
        title,
        desc,
        ext,
        data: data.into(),
        priority: priority as i32,
        class: req.class.unwrap_or(ClassJson::Operational).proto() as i32,
        ttl,
        collapse_key: req.collapse_key.unwrap_or_default(),
        channel_id: req.channel_id.unwrap_or_default(),
        disable_push: req.disable_push.unwrap_or(false),
        sender,
        sent_at_ms: 0,
        expires_at_ms: 0,
    };
    Ok((req.token, n))
}

/// Assigns id, timestamps and seq, commits the message to the device's queue,
/// then pokes the device's connection. ttl 0 ("now or never") is queued only
/// when the device is connected at send time.
pub(crate) async fn accept(
    shared: &Shared,
    app_id: &str,
    device_id: &str,
    n: &mut Notification,
) -> Result<Response, ApiError> {
    let message_id = ids::new_id()?;
    n.message_id = message_id.clone();
    n.app_id = app_id.to_owned();
    n.sent_at_ms = ids::now_ms();
    // ttl 0 gets a short lifetime rather than none (see TTL0_GRACE_MS).
    let lifetime_ms = match n.ttl {
        0 => TTL0_GRACE_MS,
        ttl => u64::from(ttl) * 1000,
    };
    n.expires_at_ms = n.sent_at_ms + lifetime_ms;
    let high_priority = n.priority == Priority::High as i32;

    if n.ttl == 0 && !shared.registry.is_connected(device_id) {
        // "Now or never" met "not now": it expired on arrival.
        let (d, a) = (device_id.to_owned(), app_id.to_owned());
        shared
            .store(move |s| s.count_drop(&d, &a, "expired", 1))
            .await?;
        tracing::debug!(
            device_id,
            app_id,
            message_id,
            "ttl 0 and device offline: dropped"
        );
        return Ok(
            axum::Json(json!({ "message_id": message_id, "dropped": "device offline" }))
                .into_response(),
        );
    }
    let quota = shared.config.operational_daily_quota;
    if let Some(limit) = quota.filter(|_| n.class == MessageClass::ClassOperational as i32) {
        let (app, dev, day) = (
            app_id.to_owned(),
            device_id.to_owned(),
            n.sent_at_ms / 86_400_000,
        );
        if !shared
            .store(move |s| s.take_quota(&app, &dev, day, limit))
            .await?
        {
            let (d, a) = (device_id.to_owned(), app_id.to_owned());
            shared
                .store(move |s| s.count_drop(&d, &a, "quota", 1))
                .await?;
            return Err(ApiError::QuotaExhausted(format!(
                "app {app_id} used its daily quota of {limit} operational messages for this device"
            )));
        }
    }
    let stored = n.clone();
    let device = device_id.to_owned();
    let enqueued = shared.store(move |s| s.enqueue(&device, &stored)).await?;
    let poked = shared
        .registry
        .poke(device_id, Poke::Message { high_priority });
    tracing::info!(
        device_id,
        app_id,
        message_id,
        seq = enqueued.seq,
        replaced = enqueued.replaced,
        online = poked,
        "message accepted"
    );
    Ok(axum::Json(json!({ "message_id": message_id })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Notification, ApiError> {
        let parsed = serde_json::from_str(json).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        notification(parsed).map(|(_, n)| n)
    }

    #[test]
    fn defaults() {
        let n = req(r#"{"token":"t"}"#).expect("valid");
        assert_eq!(n.ttl, MAX_TTL_S);
        assert_eq!(n.priority, Priority::Normal as i32);
        assert_eq!(n.class, MessageClass::ClassOperational as i32);
    }

    #[test]
    fn title_falls_back_to_sender() {
        let n = req(r#"{"token":"t","sender":{"id":"u1","nickname":"Ann"}}"#).expect("valid");
        assert_eq!(n.title, "Ann");
        let n = req(r#"{"token":"t","sender":{"id":"u1"}}"#).expect("valid");
        assert_eq!(n.title, "u1");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            req(r#"{"token":"t","ttl":2419201}"#),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            req(r#"{"token":"t","data":"!!"}"#),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            req(r#"{"token":""}"#),
            Err(ApiError::BadRequest(_))
        ));
        let big = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        assert!(matches!(
            req(&format!(r#"{{"token":"t","desc":"{big}"}}"#)),
            Err(ApiError::TooLarge(_))
        ));
    }

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

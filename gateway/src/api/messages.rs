//! `POST /v1/messages`: an app server sends one message to a token.
//!
//! Owns the JSON body of a send, its parsing and validation (sizes, ttl,
//! base64 data, the title fallback), and the class check against the app's
//! grants; [`crate::accept`] then commits and delivers it. The send answers
//! 200 only once the message is committed, so a 200 survives a gateway crash.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use syspush_proto::common::{MessageClass, Notification, Priority, Sender};

use super::auth::{authenticate_app, live_token};
use super::error::ApiError;
use super::limits::body;
use crate::accept::{Accepted, accept};
use crate::state::Shared;

/// Largest title + desc + ext + decoded data of one message.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Default and maximum ttl (28 days).
pub const MAX_TTL_S: u32 = 2_419_200;

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
    fn from_proto(c: i32) -> Self {
        match MessageClass::try_from(c) {
            Ok(MessageClass::ClassSystem) => ClassJson::System,
            Ok(MessageClass::ClassImportant) => ClassJson::Important,
            _ => ClassJson::Operational,
        }
    }

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
pub(super) async fn send(
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
    let accepted = accept(&shared, &app.app_id, &record.device_id, &mut n).await?;
    let reply = match accepted {
        Accepted::Queued => json!({ "message_id": n.message_id }),
        Accepted::DroppedOffline => {
            json!({ "message_id": n.message_id, "dropped": "device offline" })
        }
    };
    Ok(axum::Json(reply).into_response())
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
}

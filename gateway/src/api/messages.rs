//! `POST /v1/messages`: an app server sends one message to a token.
//!
//! Owns the JSON body of a send, its parsing and validation (sizes, ttl,
//! base64 data, the title fallback), the `Idempotency-Key` header, and the
//! class check against the app's grants; [`crate::accept`] then commits and
//! delivers it. The send answers 200 only once the message is committed, so a
//! 200 survives a gateway crash, and a retry with the same key after a lost
//! answer gets the same message id instead of a second message.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use syspush_proto::common::{MessageClass, Notification, Priority, Sender};

use super::auth::{authenticate_app, live_token};
use super::error::ApiError;
use super::limits::body;
use crate::accept::{Accepted, accept};
use crate::ids;
use crate::state::{Fault, Shared};
use crate::store::IdempotencyKey;

/// Largest payload of one message: every field that reaches the device —
/// title (after the fallback to the sender), desc, ext, decoded data,
/// collapse_key, channel_id, sender id and nickname — together.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Largest `collapse_key` (bytes); it also counts toward [`MAX_PAYLOAD_BYTES`].
pub const MAX_COLLAPSE_KEY_BYTES: usize = 128;
/// Largest `channel_id` (bytes); it also counts toward [`MAX_PAYLOAD_BYTES`].
pub const MAX_CHANNEL_ID_BYTES: usize = 128;
/// Largest `sender.id` and `sender.nickname` (bytes each); they also count
/// toward [`MAX_PAYLOAD_BYTES`] (the nickname twice when it becomes the title).
pub const MAX_SENDER_FIELD_BYTES: usize = 256;
/// Largest `Idempotency-Key` (visible ASCII, as payment APIs take it).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// The header an app server sends to make a send safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
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
    let key = idempotency_key(&headers)?;
    let (token, mut n) = parse_send_request(&raw)?;

    let class = ClassJson::from_proto(n.class);
    if !app.allows(class.name()) {
        return Err(ApiError::Forbidden(format!(
            "app {} may not send class {}",
            app.app_id,
            class.name()
        )));
    }
    // What the key stands for: the token and the message as asked for
    // (before the gateway adds id and timestamps).
    let key = key.map(|key| IdempotencyKey {
        key,
        fingerprint: ids::fingerprint(&[token.as_bytes(), &n.encode_to_vec()]),
    });
    let keyed = key.is_some();
    let record = live_token(&shared, &app, token).await?;
    let accepted = accept(&shared, &app.app_id, &record.device_id, &mut n, key).await?;
    if keyed && accepted == Accepted::Queued && shared.fault == Some(Fault::StallBeforeAnswer) {
        // Test hook (see `state::Fault`): committed, never answered, until
        // the test SIGKILLs the gateway.
        tracing::warn!(message_id = %n.message_id, "fault hook: committed, not answering");
        std::future::pending::<()>().await;
    }
    let reply = match accepted {
        Accepted::Queued
        | Accepted::Replayed {
            dropped_offline: false,
        } => json!({ "message_id": n.message_id }),
        Accepted::DroppedOffline
        | Accepted::Replayed {
            dropped_offline: true,
        } => {
            json!({ "message_id": n.message_id, "dropped": "device offline" })
        }
    };
    Ok(axum::Json(reply).into_response())
}

/// The optional `Idempotency-Key` header: one, of 1 to
/// [`MAX_IDEMPOTENCY_KEY_BYTES`] visible ASCII characters (no spaces).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let valid = values.next().is_none()
        && (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&bytes.len())
        && bytes.iter().all(u8::is_ascii_graphic);
    if !valid {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be one header of 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII \
             characters"
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// 413 when a field is over its own cap.
fn check_cap(field: &str, value: &str, cap: usize) -> Result<(), ApiError> {
    if value.len() > cap {
        return Err(ApiError::TooLarge(format!(
            "{field} is {} bytes, over its {cap}-byte limit",
            value.len()
        )));
    }
    Ok(())
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
    let collapse_key = req.collapse_key.unwrap_or_default();
    let channel_id = req.channel_id.unwrap_or_default();
    check_cap("collapse_key", &collapse_key, MAX_COLLAPSE_KEY_BYTES)?;
    check_cap("channel_id", &channel_id, MAX_CHANNEL_ID_BYTES)?;
    let sender = req.sender.map(|s| Sender {
        id: s.id.unwrap_or_default(),
        nickname: s.nickname.unwrap_or_default(),
    });
    if let Some(s) = &sender {
        check_cap("sender.id", &s.id, MAX_SENDER_FIELD_BYTES)?;
        check_cap("sender.nickname", &s.nickname, MAX_SENDER_FIELD_BYTES)?;
    }
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
    // Checked after the fallback: the limit is on what reaches the device.
    let sender_len = sender.as_ref().map_or(0, |s| s.id.len() + s.nickname.len());
    let size = title.len()
        + desc.len()
        + ext.len()
        + data.len()
        + collapse_key.len()
        + channel_id.len()
        + sender_len;
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the message is {size} bytes (title, desc, ext, data, collapse_key, channel_id and \
             sender together), over the {MAX_PAYLOAD_BYTES}-byte limit"
        )));
    }
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
        collapse_key,
        channel_id,
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

    #[test]
    fn the_limit_counts_every_field_after_the_title_fallback() {
        let big = "n".repeat(12_000);
        for json in [
            format!(r#"{{"token":"t","sender":{{"nickname":"{big}"}}}}"#),
            format!(r#"{{"token":"t","sender":{{"id":"{big}"}}}}"#),
            format!(r#"{{"token":"t","collapse_key":"{big}"}}"#),
            format!(r#"{{"token":"t","channel_id":"{big}"}}"#),
        ] {
            assert!(
                matches!(req(&json), Err(ApiError::TooLarge(_))),
                "{json:.60}"
            );
        }
        // Within their caps, short fields still count toward the total.
        let title = "t".repeat(MAX_PAYLOAD_BYTES - 8);
        let json = format!(
            r#"{{"token":"t","title":"{title}","channel_id":"chat","sender":{{"id":"u1","nickname":"Ann"}}}}"#
        );
        assert!(matches!(req(&json), Err(ApiError::TooLarge(_))));
        // The nickname that becomes the title counts there too.
        let nick = "a".repeat(MAX_SENDER_FIELD_BYTES);
        let desc = "d".repeat(MAX_PAYLOAD_BYTES - 2 * MAX_SENDER_FIELD_BYTES);
        let json = format!(r#"{{"token":"t","desc":"{desc}","sender":{{"nickname":"{nick}"}}}}"#);
        assert_eq!(req(&json).expect("exactly at the limit").title, nick);
        let json = format!(r#"{{"token":"t","desc":"{desc}x","sender":{{"nickname":"{nick}"}}}}"#);
        assert!(matches!(req(&json), Err(ApiError::TooLarge(_))));
    }
}

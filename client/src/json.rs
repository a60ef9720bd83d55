//! JSON views of daemon data, as `syspushctl` prints them.
//!
//! They live in the library so the end-to-end tests and the bench parse and
//! compare the very same shape the command prints. Enums are lower-case words
//! (`"high"`, `"operational"`), bytes are standard base64 (what the gateway's
//! send API takes), absent optional numbers are `null`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use syspush_proto::app::{Delivery, Status, StatusScope};
use syspush_proto::common::{MessageClass, Priority};

/// The wire name of a priority value; unknown values map to `"unknown"`.
pub fn priority_name(p: i32) -> &'static str {
    match Priority::try_from(p) {
        Ok(Priority::High) => "high",
        Ok(Priority::Normal) => "normal",
        Err(_) => "unknown",
    }
}

/// The wire name of a message class value; unknown values map to `"unknown"`.
pub fn class_name(c: i32) -> &'static str {
    match MessageClass::try_from(c) {
        Ok(MessageClass::ClassSystem) => "system",
        Ok(MessageClass::ClassImportant) => "important",
        Ok(MessageClass::ClassOperational) => "operational",
        Err(_) => "unknown",
    }
}

/// One delivery as a flat JSON object: the notification's fields plus the
/// daemon's display flags. A delivery without a notification gives empty fields.
pub fn notification_json(d: &Delivery) -> Value {
    let n = d.notification.clone().unwrap_or_default();
    let sender = n.sender.unwrap_or_default();
    json!({
        "message_id": n.message_id,
        "app_id": n.app_id,
        "title": n.title,
        "desc": n.desc,
        "ext": n.ext,
        "data": STANDARD.encode(&n.data),
        "priority": priority_name(n.priority),
        "class": class_name(n.class),
        "ttl": n.ttl,
        "collapse_key": n.collapse_key,
        "channel_id": n.channel_id,
        "disable_push": n.disable_push,
        "sender": { "id": sender.id, "nickname": sender.nickname },
        "sent_at_ms": n.sent_at_ms,
        "expires_at_ms": n.expires_at_ms,
        "display": d.display,
        "lockscreen": d.lockscreen,
        "sound": d.sound,
    })
}

/// The wire name of a status scope: `"full"` (root, system_uids), `"apps"`
/// (a uid that owns apps: its apps and the link's health), `"liveness"`
/// (any other uid: only whether the daemon is connected).
pub fn scope_name(scope: i32) -> &'static str {
    match StatusScope::try_from(scope) {
        Ok(StatusScope::Full) => "full",
        Ok(StatusScope::Apps) => "apps",
        Ok(StatusScope::Liveness) => "liveness",
        Err(_) => "unknown",
    }
}

/// The daemon's status as JSON (`syspushctl status --json`). Fields outside
/// the caller's `scope` are empty (the daemon does not fill them).
pub fn status_json(s: &Status) -> Value {
    let apps: Vec<Value> = s
        .apps
        .iter()
        .map(|a| {
            json!({
                "app_id": a.app_id,
                "pending": a.pending,
                "connected": a.connected,
                "registered": a.registered,
            })
        })
        .collect();
    let learned: Vec<Value> = s
        .learned
        .iter()
        .map(|l| {
            json!({
                "network": l.network,
                "interval_s": l.interval_s,
                "ceiling_s": l.ceiling_s,
            })
        })
        .collect();
    json!({
        "connected": s.connected,
        "gateway_url": s.gateway_url,
        "session_uptime_s": s.session_uptime_s,
        "heartbeat_interval_s": s.heartbeat_interval_s,
        "last_pong_age_s": s.last_pong_age_s,
        "reconnects": s.reconnects,
        "device_id": s.device_id,
        "last_committed_seq": s.last_committed_seq,
        "apps": apps,
        "network": (!s.network.is_empty()).then_some(&s.network),
        "heartbeat_state": s.heartbeat_state,
        "learned": learned,
        "idle": s.idle,
        "drops": s.drops,
        "scope": scope_name(s.scope),
    })
}

/// An app's notification settings as JSON: `{"app_id", "app": {...},
/// "channels": [{"channel_id", ...}]}`.
pub fn settings_json(s: &syspush_proto::app::SettingsReply) -> Value {
    let one = |n: &syspush_proto::app::NotificationSettings| {
        json!({
            "channel_id": n.channel_id,
            "allow": n.allow,
            "lockscreen": n.lockscreen,
            "sound": n.sound,
            "min_class": class_name(n.min_class),
        })
    };
    json!({
        "app_id": s.app_id,
        "app": s.app.as_ref().map(one),
        "channels": s.channels.iter().map(one).collect::<Vec<_>>(),
    })
}

/// The daemon's status for people (`syspushctl status`), several lines;
/// only what the caller's scope shows.
pub fn status_text(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let link = if s.connected {
        "connected"
    } else {
        "disconnected"
    };
    let scope = StatusScope::try_from(s.scope).unwrap_or(StatusScope::Liveness);
    // Writing to a String cannot fail.
    if scope == StatusScope::Liveness {
        let _ = writeln!(out, "syspushd:  running, gateway link {link}");
        let _ = writeln!(
            out,
            "(details for root, system_uids and the uids of apps only)"
        );
        return out;
    }
    let _ = writeln!(out, "gateway:   {} ({link})", or_dash(&s.gateway_url));
    if scope == StatusScope::Full {
        let _ = writeln!(out, "device:    {}", or_dash(&s.device_id));
    }
    if s.connected {
        let _ = writeln!(out, "session:   up {}", human_secs(s.session_uptime_s));
    }
    let _ = writeln!(
        out,
        "heartbeat: every {}{}",
        human_secs(s.heartbeat_interval_s),
        if s.heartbeat_state.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.heartbeat_state)
        }
    );
    if scope == StatusScope::Full {
        let _ = writeln!(out, "network:   {}", or_dash(&s.network));
    }
    let _ = writeln!(out, "idle:      {}", if s.idle { "yes" } else { "no" });
    let pong = s
        .last_pong_age_s
        .map_or_else(|| "never".to_owned(), |a| format!("{} ago", human_secs(a)));
    let _ = writeln!(out, "last pong: {pong}");
    let _ = writeln!(out, "reconnects: {}", s.reconnects);
    if scope == StatusScope::Full {
        let _ = writeln!(out, "last committed seq: {}", s.last_committed_seq);
    }
    if s.apps.is_empty() {
        let _ = writeln!(out, "apps:      (none visible)");
    } else {
        let _ = writeln!(out, "apps:");
        for a in &s.apps {
            let _ = writeln!(
                out,
                "  {}  pending {}  {}  {}",
                a.app_id,
                a.pending,
                if a.connected {
                    "connected"
                } else {
                    "not connected"
                },
                if a.registered {
                    "registered"
                } else {
                    "not registered"
                },
            );
        }
    }
    out
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// 75 -> "1m15s", 3600 -> "1h0m0s", 5 -> "5s".
fn human_secs(s: u64) -> String {
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syspush_proto::app::AppStatus;
    use syspush_proto::common::{Notification, Sender};

    #[test]
    fn notification_fields() {
        let d = Delivery {
            notification: Some(Notification {
                message_id: "m1".into(),
                app_id: "com.example.chat".into(),
                title: "Ann".into(),
                desc: "hi".into(),
                ext: "open:42".into(),
                data: vec![0u8, 1, 2, 0xff].into(),
                priority: Priority::High as i32,
                class: MessageClass::ClassImportant as i32,
                ttl: 60,
                collapse_key: "c".into(),
                channel_id: "chat".into(),
                disable_push: true,
                sender: Some(Sender {
                    id: "u1".into(),
                    nickname: "Ann".into(),
                }),
                sent_at_ms: 1_700_000_000_000,
                expires_at_ms: 1_700_000_060_000,
            }),
            display: true,
            lockscreen: false,
            sound: true,
        };
        let v = notification_json(&d);
        assert_eq!(v["message_id"], "m1");
        assert_eq!(v["data"], "AAEC/w==");
        assert_eq!(v["priority"], "high");
        assert_eq!(v["class"], "important");
        assert_eq!(v["ttl"], 60);
        assert_eq!(v["sender"], json!({"id": "u1", "nickname": "Ann"}));
        assert_eq!(v["sent_at_ms"], 1_700_000_000_000u64);
        assert_eq!(v["display"], true);
        assert_eq!(v["lockscreen"], false);
        assert_eq!(v["sound"], true);
        assert_eq!(v.as_object().map(|o| o.len()), Some(18));

        let empty = notification_json(&Delivery::default());
        assert_eq!(empty["priority"], "normal");
        assert_eq!(empty["class"], "operational");
        assert_eq!(empty["data"], "");
        assert_eq!(empty["sender"], json!({"id": "", "nickname": ""}));
    }

    #[test]
    fn status_fields() {
        let mut s = Status {
            connected: true,
            gateway_url: "https://127.0.0.1:8443".into(),
            session_uptime_s: 75,
            heartbeat_interval_s: 270,
            last_pong_age_s: None,
            reconnects: 2,
            apps: vec![AppStatus {
                app_id: "a".into(),
                pending: 3,
                connected: true,
                registered: false,
            }],
            device_id: "d1".into(),
            last_committed_seq: 9,
            ..Status::default()
        };
        let v = status_json(&s);
        assert_eq!(v["last_pong_age_s"], Value::Null);
        assert_eq!(
            v["apps"][0],
            json!({"app_id": "a", "pending": 3, "connected": true, "registered": false})
        );
        assert_eq!(v["last_committed_seq"], 9);
        s.last_pong_age_s = Some(4);
        assert_eq!(status_json(&s)["last_pong_age_s"], 4);
        let text = status_text(&s);
        assert!(text.contains("up 1m15s"), "{text}");
        assert!(text.contains("4s ago"), "{text}");
        let learning = Status {
            network: "wlan0 via 192.168.1.1".into(),
            heartbeat_state: "stable".into(),
            idle: true,
            learned: vec![syspush_proto::app::LearnedInterval {
                network: "wlan0 via 192.168.1.1".into(),
                interval_s: 1134,
                ceiling_s: Some(1253),
            }],
            ..Status::default()
        };
        let v = status_json(&learning);
        assert_eq!(v["network"], "wlan0 via 192.168.1.1");
        assert_eq!(v["heartbeat_state"], "stable");
        assert_eq!(v["idle"], true);
        assert_eq!(v["learned"][0]["interval_s"], 1134);
        assert_eq!(status_json(&Status::default())["network"], Value::Null);
        assert_eq!(status_json(&Status::default())["scope"], "full");
    }

    #[test]
    fn status_text_shows_only_the_scope() {
        let full = Status {
            connected: true,
            device_id: "d1".into(),
            network: "wlan0".into(),
            last_committed_seq: 9,
            ..Status::default()
        };
        let text = status_text(&full);
        assert!(
            text.contains("device:    d1") && text.contains("seq: 9"),
            "{text}"
        );
        let apps = Status {
            scope: StatusScope::Apps as i32,
            ..full.clone()
        };
        let text = status_text(&apps);
        assert!(
            text.contains("gateway:") && text.contains("heartbeat:"),
            "{text}"
        );
        assert!(
            !text.contains("device:") && !text.contains("network:") && !text.contains("seq"),
            "{text}"
        );
        let live = Status {
            scope: StatusScope::Liveness as i32,
            ..full
        };
        assert_eq!(status_json(&live)["scope"], "liveness");
        let text = status_text(&live);
        assert!(
            text.starts_with("syspushd:  running, gateway link connected"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}

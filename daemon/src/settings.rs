//! Per-app notification settings on the device — what the user (through the
//! platform's settings UI, which calls `syspushctl settings`) allows an app to
//! show: notifications at all, on the lock screen, with sound, and from which
//! message class up. Set per app and per channel (`channel_id`).
//!
//! Both levels apply: a notification is shown only if the app-wide settings
//! AND its channel's settings allow it (a channel never re-enables what the
//! app-wide switch turned off, as on Android). Only the display decision
//! depends on them: the app always receives its data.

use syspush_proto::app::NotificationSettings;
use syspush_proto::common::MessageClass;

/// Errors in a settings change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Not a known key.
    #[error("unknown setting {0:?} (allow, lockscreen, sound, min_class)")]
    UnknownKey(String),
    /// A value that does not fit the key.
    #[error("bad value {value:?} for {key}: {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// One level of settings (app-wide or one channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Notifications may be shown.
    pub allow: bool,
    /// They may be shown on the lock screen.
    pub lockscreen: bool,
    /// They may make a sound.
    pub sound: bool,
    /// Least class shown (`MessageClass` value: operational 0 < important 1 < system 2).
    pub min_class: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow: true,
            lockscreen: true,
            sound: true,
            min_class: MessageClass::ClassOperational as i32,
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, SettingsError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(SettingsError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: "true or false",
        }),
    }
}

/// `MessageClass` value of a class name.
pub fn parse_class(value: &str) -> Option<i32> {
    match value.to_ascii_lowercase().as_str() {
        "operational" => Some(MessageClass::ClassOperational as i32),
        "important" => Some(MessageClass::ClassImportant as i32),
        "system" => Some(MessageClass::ClassSystem as i32),
        _ => None,
    }
}

impl Settings {
    /// Applies one `key=value` change. `notifications` is accepted for `allow`.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        match key {
            "allow" | "notifications" => self.allow = parse_bool(key, value)?,
            "lockscreen" => self.lockscreen = parse_bool(key, value)?,
            "sound" => self.sound = parse_bool(key, value)?,
            "min_class" => {
                self.min_class = parse_class(value).ok_or_else(|| SettingsError::BadValue {
                    key: key.to_owned(),
                    value: value.to_owned(),
                    expected: "operational, important or system",
                })?
            }
            other => return Err(SettingsError::UnknownKey(other.to_owned())),
        }
        Ok(())
    }

    /// The wire form.
    pub fn to_proto(self, channel_id: &str) -> NotificationSettings {
        NotificationSettings {
            channel_id: channel_id.to_owned(),
            allow: self.allow,
            lockscreen: self.lockscreen,
            sound: self.sound,
            min_class: self.min_class,
        }
    }

    /// Packed for the store: (allow, lockscreen, sound, min_class).
    pub(crate) fn pack(self) -> (bool, bool, bool, u8) {
        (
            self.allow,
            self.lockscreen,
            self.sound,
            u8::try_from(self.min_class).unwrap_or(0),
        )
    }

    pub(crate) fn unpack(v: (bool, bool, bool, u8)) -> Self {
        Self {
            allow: v.0,
            lockscreen: v.1,
            sound: v.2,
            min_class: i32::from(v.3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_keys_and_refuse_garbage() {
        let mut s = Settings::default();
        s.apply("allow", "off").expect("allow");
        s.apply("min_class", "important").expect("class");
        assert!(!s.allow);
        assert_eq!(s.min_class, MessageClass::ClassImportant as i32);
        assert!(s.apply("colour", "red").is_err());
        assert!(s.apply("sound", "loud").is_err());
        assert_eq!(Settings::unpack(s.pack()), s);
    }
}

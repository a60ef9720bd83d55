//! The display decision the daemon hands out with every notification
//! (`Delivery.display`, `lockscreen`, `sound`), so the device's notification
//! UI and the app agree on what is shown.
//!
//! Content first: a message with `disable_push`, or with neither title nor
//! desc (data only; the gateway already filled an empty title from the
//! sender), is never shown. Then the device's settings ([`crate::settings`]):
//! the app-wide and the channel's both have to allow it and its class has to
//! reach both minimum classes.

use syspush_proto::app::Delivery;
use syspush_proto::common::Notification;

use crate::settings::Settings;

/// What to do with one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Shown in the notification UI.
    pub display: bool,
    /// Shown on the lock screen.
    pub lockscreen: bool,
    /// Plays a sound.
    pub sound: bool,
    /// It had something to show, but the device's settings hid it (counted
    /// as a "disabled" drop: the data arrived, the notification did not).
    pub hidden_by_settings: bool,
}

/// Whether the content asks to be shown at all.
pub fn wants_display(n: &Notification) -> bool {
    !n.disable_push && (!n.title.is_empty() || !n.desc.is_empty())
}

/// The decision for `n` under the app-wide settings and its channel's.
pub fn decide(n: &Notification, app: &Settings, channel: &Settings) -> Decision {
    let wants = wants_display(n);
    let allowed =
        app.allow && channel.allow && n.class >= app.min_class && n.class >= channel.min_class;
    let display = wants && allowed;
    Decision {
        display,
        lockscreen: display && app.lockscreen && channel.lockscreen,
        sound: display && app.sound && channel.sound,
        hidden_by_settings: wants && !allowed,
    }
}

/// The Delivery for a notification under a decision.
pub fn delivery(n: Notification, d: Decision) -> Delivery {
    Delivery {
        notification: Some(n),
        display: d.display,
        lockscreen: d.lockscreen,
        sound: d.sound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syspush_proto::common::MessageClass;

    fn note(title: &str, desc: &str, class: MessageClass) -> Notification {
        Notification {
            title: title.into(),
            desc: desc.into(),
            class: class as i32,
            ..Notification::default()
        }
    }

    #[test]
    fn content_and_settings_decide() {
        let all = Settings::default();
        let d = decide(&note("t", "", MessageClass::ClassOperational), &all, &all);
        assert!(d.display && d.lockscreen && d.sound && !d.hidden_by_settings);
        let d = decide(&note("", "", MessageClass::ClassSystem), &all, &all);
        assert!(!d.display && !d.hidden_by_settings, "data only");
        let mut n = note("t", "d", MessageClass::ClassSystem);
        n.disable_push = true;
        assert!(!decide(&n, &all, &all).display);
        let important = Settings {
            min_class: MessageClass::ClassImportant as i32,
            ..all
        };
        let d = decide(
            &note("t", "d", MessageClass::ClassOperational),
            &all,
            &important,
        );
        assert!(!d.display && d.hidden_by_settings);
        assert!(decide(&note("t", "d", MessageClass::ClassSystem), &important, &all).display);
        let quiet = Settings {
            sound: false,
            lockscreen: false,
            ..all
        };
        let d = decide(&note("t", "d", MessageClass::ClassSystem), &quiet, &all);
        assert!(d.display && !d.sound && !d.lockscreen);
    }
}

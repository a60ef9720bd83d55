//! Who may act for which app id: the caller's uid (from `SO_PEERCRED`, never
//! from the message) against the `[[app]]` table of the config. Root may act
//! for any app id (system tools, tests, `syspushctl` run by an admin).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::AppConfig;

/// The uid -> app ids policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    by_uid: BTreeMap<u32, BTreeSet<String>>,
    apps: BTreeSet<String>,
}

impl Policy {
    /// Builds the policy from the config's `[[app]]` entries.
    pub fn from_apps(apps: &[AppConfig]) -> Self {
        let mut p = Self::default();
        for app in apps {
            p.apps.insert(app.id.clone());
            for uid in &app.uids {
                p.by_uid.entry(*uid).or_default().insert(app.id.clone());
            }
        }
        p
    }

    /// Whether `uid` may act for `app_id`.
    pub fn may_act(&self, uid: u32, app_id: &str) -> bool {
        uid == 0
            || self
                .by_uid
                .get(&uid)
                .is_some_and(|apps| apps.contains(app_id))
    }

    /// The app ids `uid` owns (root: every configured app).
    pub fn apps_of(&self, uid: u32) -> Vec<String> {
        if uid == 0 {
            return self.apps.iter().cloned().collect();
        }
        self.by_uid
            .get(&uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every configured app id.
    pub fn configured_apps(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, uids: &[u32]) -> AppConfig {
        AppConfig {
            id: id.into(),
            uids: uids.to_vec(),
            wake_command: None,
            wake_min_interval_s: 30,
        }
    }

    #[test]
    fn uids_act_only_for_their_apps_and_root_for_all() {
        let p = Policy::from_apps(&[app("chat", &[1000, 1001]), app("mail", &[1001])]);
        assert!(p.may_act(1000, "chat"));
        assert!(!p.may_act(1000, "mail"));
        assert!(p.may_act(1001, "mail"));
        assert!(!p.may_act(2000, "chat"));
        assert!(!p.may_act(1000, "unknown"));
        assert!(p.may_act(0, "unknown"));
        assert_eq!(p.apps_of(1001), ["chat", "mail"]);
        assert!(p.apps_of(5).is_empty());
        assert_eq!(p.apps_of(0), ["chat", "mail"]);
    }
}

//! Who may act for which app id: the caller's uid (from `SO_PEERCRED`, never
//! from the message) against the `[[app]]` table of the config. Root may act
//! for any app id (system tools, tests, `syspushctl` run by an admin).
//!
//! On Android, with `packages_list` configured, an app id that is a package
//! name also belongs to that package's uid ([`PackagesList`]), so apps need
//! no `[[app]]` entry: the package manager's own record says who they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::config::AppConfig;
use crate::packages_list::PackagesList;

/// The uid -> app ids policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    by_uid: BTreeMap<u32, BTreeSet<String>>,
    apps: BTreeSet<String>,
    packages: Option<Arc<PackagesList>>,
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

    /// Also lets each package in `path` (Android's packages.list) act for
    /// the app id equal to its package name.
    pub fn with_packages_list(mut self, path: Option<&Path>) -> Self {
        self.packages = path.map(|p| Arc::new(PackagesList::new(p)));
        self
    }

    /// Whether `uid` may act for `app_id`.
    pub fn may_act(&self, uid: u32, app_id: &str) -> bool {
        uid == 0
            || self
                .by_uid
                .get(&uid)
                .is_some_and(|apps| apps.contains(app_id))
            || self.packages.as_ref().is_some_and(|p| p.owns(uid, app_id))
    }

    /// The app ids `uid` owns (root: every configured app).
    pub fn apps_of(&self, uid: u32) -> Vec<String> {
        if uid == 0 {
            return self.apps.iter().cloned().collect();
        }
        let mut apps = self.by_uid.get(&uid).cloned().unwrap_or_default();
        if let Some(p) = &self.packages {
            apps.extend(p.packages_of(uid));
        }
        apps.into_iter().collect()
    }

    /// Whether `uid` owns at least one app id: it is listed with an
    /// `[[app]]` or, with `packages_list`, is some package's uid. Root owns
    /// none here (it is privileged instead: see the app socket's classes).
    pub fn owns_any(&self, uid: u32) -> bool {
        self.by_uid.contains_key(&uid) || self.packages.as_ref().is_some_and(|p| p.has_uid(uid))
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
        assert!(p.owns_any(1000) && p.owns_any(1001));
        assert!(
            !p.owns_any(5) && !p.owns_any(0),
            "root owns no app, it is privileged"
        );
    }

    #[test]
    fn packages_list_gives_each_package_to_its_uid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("packages.list");
        std::fs::write(
            &path,
            "com.example.chat 10123 0 /data/user/0/com.example.chat default:targetSdkVersion=34 3003\n",
        )
        .expect("write");
        let p = Policy::from_apps(&[app("tool", &[10123]), app("com.example.mail", &[1000])])
            .with_packages_list(Some(&path));
        assert!(p.may_act(10123, "com.example.chat"));
        assert!(p.may_act(10123, "tool"), "[[app]] entries still count");
        assert!(!p.may_act(10124, "com.example.chat"));
        assert!(!p.may_act(10123, "com.example.mail"));
        assert!(p.may_act(1000, "com.example.mail"));
        assert!(p.may_act(0, "com.example.chat"));
        assert_eq!(p.apps_of(10123), ["com.example.chat", "tool"]);
        assert!(
            p.owns_any(10123) && p.owns_any(110_123),
            "a package's uid, in any user"
        );
        assert!(!p.owns_any(10124));
        assert!(
            !Policy::from_apps(&[]).may_act(10123, "com.example.chat"),
            "off without the list"
        );
    }
}

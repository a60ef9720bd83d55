//! Android app identity: package name -> uid, from the package manager's
//! `/data/system/packages.list`, so that on Android an app id can simply be
//! the app's package name and only that package's uid may act for it.
//!
//! Line format (frameworks/base `Settings.writePackageListLPr`), fields
//! separated by single spaces:
//!
//! ```text
//! name uid debuggable datadir seinfo gids [profileable version ...]
//! com.example.chat 10123 0 /data/user/0/com.example.chat default:targetSdkVersion=34 3003,3002
//! ```
//!
//! Only `name` and `uid` are used. The uid there is the app id of user 0;
//! the same app in secondary user N runs as `N * 100000 + uid`
//! (`UserHandle.getUid`), so the check compares `uid % 100000`.
//!
//! The package manager rewrites the file (write to a temp file, rename) on
//! every install, update and uninstall. It is re-read when it changed, found
//! by comparing inode, size and mtime on each authorization check: one
//! `stat` per request, no inotify thread and no timer. Malformed lines are
//! skipped with a warning; a file that cannot be read grants nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// `UserHandle.PER_USER_RANGE`: uids of user N are `N * 100000 + app id`.
pub const PER_USER_RANGE: u32 = 100_000;

/// A line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: &'static str,
}

/// Parses packages.list text into package -> uid. Bad lines are returned
/// separately so the caller can log them; they never fail the whole file.
pub fn parse(text: &str) -> (HashMap<String, u32>, Vec<BadLine>) {
    let mut map = HashMap::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(' ');
        let name = fields.next().unwrap_or_default();
        let uid = fields.next();
        let reason = if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            Some("empty or invalid package name")
        } else {
            match uid.map(str::parse::<u32>) {
                None => Some("no uid"),
                Some(Err(_)) => Some("uid is not a number"),
                // Fewer than the six fields PackageManager always writes:
                // truncated or not a packages.list line at all.
                Some(Ok(_)) if fields.count() < 4 => Some("too few fields"),
                Some(Ok(uid)) => {
                    map.insert(name.to_string(), uid);
                    None
                }
            }
        };
        if let Some(reason) = reason {
            bad.push(BadLine {
                line: i + 1,
                reason,
            });
        }
    }
    (map, bad)
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Cached {
    /// None: never looked, or the file could not be stat'ed last time.
    stamp: Option<Stamp>,
    map: HashMap<String, u32>,
    /// The last error was logged already (do not log it on every request).
    error_logged: bool,
}

/// The package -> uid map of one packages.list file, refreshed on change.
#[derive(Debug)]
pub struct PackagesList {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl PartialEq for PackagesList {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for PackagesList {}

impl PackagesList {
    /// A list backed by `path` (read on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid (of user 0) of `package`, re-reading the file if it changed.
    pub fn uid_of(&self, package: &str) -> Option<u32> {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut c);
        c.map.get(package).copied()
    }

    /// Whether `uid` (in any user) is the uid of `package`.
    pub fn owns(&self, uid: u32, package: &str) -> bool {
        self.uid_of(package)
            .is_some_and(|app_uid| uid % PER_USER_RANGE == app_uid)
    }

    /// Package names whose uid is `uid` (in any user); shared uids own several.
    pub fn packages_of(&self, uid: u32) -> Vec<String> {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut c);
        let mut v: Vec<String> = c
            .map
            .iter()
            .filter(|(_, u)| **u == uid % PER_USER_RANGE)
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether `uid` (in any user) is the uid of some package.
    pub fn has_uid(&self, uid: u32) -> bool {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(&mut c);
        c.map.values().any(|u| *u == uid % PER_USER_RANGE)
    }

    fn refresh(&self, c: &mut Cached) {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                Stamp {
                    ino: m.ino(),
                    len: m.len(),
                    mtime: m.modified().ok(),
                }
            }
            Err(e) => {
                if !c.error_logged {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot stat packages list; package names grant nothing");
                    c.error_logged = true;
                }
                c.stamp = None;
                c.map.clear();
                return;
            }
        };
        if c.stamp == Some(stamp) {
            return;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let (map, bad) = parse(&text);
                for b in &bad {
                    tracing::warn!(path = %self.path.display(), line = b.line, reason = b.reason, "ignoring malformed packages list line");
                }
                tracing::info!(path = %self.path.display(), packages = map.len(), "packages list loaded");
                c.map = map;
                c.stamp = Some(stamp);
                c.error_logged = false;
            }
            Err(e) => {
                if !c.error_logged {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read packages list; package names grant nothing");
                    c.error_logged = true;
                }
                // Not recording the stamp: try again on the next check.
                c.stamp = None;
                c.map.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
com.example.chat 10123 0 /data/user/0/com.example.chat default:targetSdkVersion=34 3003,3002
com.android.shell 2000 0 /data/user_de/0/com.android.shell platform:privapp:targetSdkVersion=34 3003,3002,1007,1004 0 34
com.example.shared.a 10200 1 /data/user/0/com.example.shared.a default:targetSdkVersion=33 none
com.example.shared.b 10200 0 /data/user/0/com.example.shared.b default:targetSdkVersion=33 none
";

    #[test]
    fn parses_the_real_line_format() {
        let (map, bad) = parse(SAMPLE);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(map.get("com.example.chat"), Some(&10123));
        assert_eq!(map.get("com.android.shell"), Some(&2000));
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn malformed_lines_are_skipped_and_reported() {
        let text = format!(
            "{SAMPLE}\nbroken\ncom.x notanumber 0 /d default none\ncom.y 10300\n \
             10400 0 /d default none\ncom.z 10500 0 /data/user/0/com.z default none\n"
        );
        let (map, bad) = parse(&text);
        assert_eq!(
            map.get("com.z"),
            Some(&10500),
            "good lines after bad ones still count"
        );
        assert!(!map.contains_key("com.x") && !map.contains_key("com.y"));
        let reasons: Vec<_> = bad.iter().map(|b| (b.line, b.reason)).collect();
        assert_eq!(
            reasons,
            [
                (6, "no uid"),
                (7, "uid is not a number"),
                (8, "too few fields"),
                (9, "empty or invalid package name"),
            ]
        );
    }

    #[test]
    fn ownership_by_uid_in_every_user_and_changes_are_picked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("packages.list");
        std::fs::write(&path, SAMPLE).expect("write");
        let pl = PackagesList::new(&path);
        assert!(pl.owns(10123, "com.example.chat"));
        assert!(
            pl.owns(10 * PER_USER_RANGE + 10123, "com.example.chat"),
            "secondary user"
        );
        assert!(!pl.owns(10124, "com.example.chat"));
        assert!(!pl.owns(10123, "com.unknown"));
        assert_eq!(
            pl.packages_of(10200),
            ["com.example.shared.a", "com.example.shared.b"]
        );

        // Reinstalled with a new uid: the package manager writes a new file
        // and renames it over the old one.
        let tmp = dir.path().join("packages.list.tmp");
        std::fs::write(&tmp, SAMPLE.replace("10123", "10999")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert!(
            !pl.owns(10123, "com.example.chat"),
            "old uid no longer owns it"
        );
        assert!(pl.owns(10999, "com.example.chat"));

        // Gone (or unreadable): package names grant nothing.
        std::fs::remove_file(&path).expect("rm");
        assert!(!pl.owns(10999, "com.example.chat"));
        std::fs::write(&path, SAMPLE).expect("write");
        assert!(pl.owns(10123, "com.example.chat"), "back again");
    }
}

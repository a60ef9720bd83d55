//! Wake commands: when a message is committed for an app that has no
//! subscribed connection, run the app's configured `wake_command` so it can
//! start (or thaw) and connect. Rate-limited per app, because a burst of
//! messages must not fork a burst of processes. The child is never waited on
//! in the caller: a small task reaps it and logs how it ended.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use crate::config::AppConfig;

#[derive(Debug, Clone)]
struct Wake {
    command: Vec<String>,
    min_interval: Duration,
    last: Option<Duration>,
}

/// Per-app wake commands and their rate limits.
#[derive(Debug, Default)]
pub struct Waker {
    apps: HashMap<String, Wake>,
}

/// Whether a command last run at `last` may run again at `now`.
pub fn may_run(last: Option<Duration>, now: Duration, min_interval: Duration) -> bool {
    last.is_none_or(|t| now.saturating_sub(t) >= min_interval)
}

impl Waker {
    /// Collects the apps that have a wake command.
    pub fn from_apps(apps: &[AppConfig]) -> Self {
        let apps = apps
            .iter()
            .filter_map(|a| {
                a.wake_command.as_ref().filter(|c| !c.is_empty()).map(|c| {
                    (
                        a.id.clone(),
                        Wake {
                            command: c.clone(),
                            min_interval: Duration::from_secs(a.wake_min_interval_s),
                            last: None,
                        },
                    )
                })
            })
            .collect();
        Self { apps }
    }

    /// Runs `app_id`'s wake command unless it ran less than its minimum
    /// interval ago (boot time `now`). Returns the reaper task if it was
    /// started (callers normally drop it; it runs on its own). Needs a tokio
    /// runtime.
    pub fn wake(&mut self, app_id: &str, now: Duration) -> Option<tokio::task::JoinHandle<()>> {
        let w = self.apps.get_mut(app_id)?;
        if !may_run(w.last, now, w.min_interval) {
            tracing::debug!(app_id, "wake command rate-limited");
            return None;
        }
        w.last = Some(now);
        let mut cmd = tokio::process::Command::new(&w.command[0]);
        cmd.args(&w.command[1..])
            .env("SYSPUSH_APP_ID", app_id)
            // The supervisor's readiness socket is ours, not the app's.
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(false);
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(app_id, pid, "wake command started");
                let app = app_id.to_string();
                Some(tokio::spawn(async move {
                    match child.wait().await {
                        Ok(status) if status.success() => {
                            tracing::debug!(app_id = %app, pid, "wake command done")
                        }
                        Ok(status) => {
                            tracing::warn!(app_id = %app, pid, %status, "wake command failed")
                        }
                        Err(e) => {
                            tracing::warn!(app_id = %app, pid, error = %e, "cannot reap wake command")
                        }
                    }
                }))
            }
            Err(e) => {
                tracing::warn!(app_id, command = %w.command[0], error = %e, "cannot start wake command");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit() {
        let s = Duration::from_secs(1);
        assert!(may_run(None, s, 30 * s));
        assert!(!may_run(Some(10 * s), 39 * s, 30 * s));
        assert!(may_run(Some(10 * s), 40 * s, 30 * s));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_the_command_once_per_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("woken");
        let app = AppConfig {
            id: "chat".into(),
            uids: vec![],
            wake_command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo $SYSPUSH_APP_ID >> {}", marker.display()),
            ]),
            wake_min_interval_s: 30,
        };
        let mut w = Waker::from_apps(&[app]);
        let t = Duration::from_secs(100);
        let first = w.wake("chat", t).expect("started");
        assert!(
            w.wake("chat", t + Duration::from_secs(1)).is_none(),
            "rate-limited"
        );
        assert!(w.wake("other", t).is_none(), "no command");
        first.await.expect("reaped");
        let second = w
            .wake("chat", t + Duration::from_secs(30))
            .expect("started again");
        second.await.expect("reaped");
        assert_eq!(
            std::fs::read_to_string(&marker).expect("marker"),
            "chat\nchat\n"
        );
    }
}

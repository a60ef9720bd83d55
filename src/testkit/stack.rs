//! The usual arrangement: a gateway, a daemon enrolled with it and one app,
//! each a real process, in one temp dir.

use anyhow::{Result, anyhow, bail};

use super::daemon::{AppPolicy, Daemon};
use super::gateway::Gateway;
use super::paths::shared_tempdir;
use crate::appserver::AppServer;

/// A gateway, a daemon enrolled with it and one app, each a real process, in a temp dir.
pub struct Stack {
    /// The daemon (dropped first: it holds the link).
    pub daemon: Daemon,
    /// The gateway.
    pub gateway: Gateway,
    /// App server for `app_id`.
    pub app: AppServer,
    /// The app's API key at the gateway.
    pub app_key: String,
    /// The app id.
    pub app_id: String,
    /// Owns the files; removed on drop.
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Gateway + daemon + `app_id` (allowed every class), the daemon's policy
    /// giving `app_id` to the current uid plus `extra_apps`.
    pub fn new(app_id: &str, extra_apps: &[AppPolicy]) -> Result<Self> {
        Self::with_config(app_id, extra_apps, "")
    }

    /// Like [`Stack::new`], with extra daemon config lines.
    pub fn with_config(app_id: &str, extra_apps: &[AppPolicy], daemon_extra: &str) -> Result<Self> {
        let dir = shared_tempdir()?;
        let mut gateway = Gateway::new(&dir.path().join("gateway"))?;
        let app_key = gateway.add_app(app_id, &["system", "important"])?;
        for a in extra_apps {
            gateway.add_app(&a.id, &[])?;
        }
        gateway.start()?;
        let me = nix::unistd::getuid().as_raw();
        let mut apps = vec![AppPolicy {
            id: app_id.into(),
            uids: vec![me],
        }];
        apps.extend_from_slice(extra_apps);
        let mut daemon = Daemon::new(&dir.path().join("daemon"), &gateway, &apps, daemon_extra)?;
        daemon.start()?;
        let app = gateway.app_server(&app_key)?;
        Ok(Self {
            daemon,
            gateway,
            app,
            app_key,
            app_id: app_id.into(),
            dir,
        })
    }

    /// A minimal push to `token` with `title`.
    pub fn push(&self, token: &str, title: &str) -> Result<String> {
        let r = self
            .app
            .send(&serde_json::json!({"token": token, "title": title, "desc": "d"}))?;
        if r.status != 200 {
            bail!("send answered {}: {}", r.status, r.body);
        }
        r.body["message_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no message_id in {}", r.body))
    }
}

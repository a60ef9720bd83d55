//! The daemon's configuration: the TOML file of `docs/contracts.md`, parsed
//! strictly (unknown keys are errors, so a typo never silently falls back to a
//! default), with relative paths resolved against the file's directory and
//! every value checked up front so that `--check-config` catches what would
//! otherwise fail at 3 a.m. on a device.
//!
//! The file is read into `ConfigFile` (serde's view of the TOML) and checked
//! once into a [`Config`], which holds the parsed values: the gateway
//! [`Endpoint`], the TLS [`Trust`] (the `ca_file` certificates and the pins)
//! and the [`HeartbeatConfig`]. Holding a `Config` means all of it was valid;
//! nothing reads or parses the file's values again.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::endpoint::Endpoint;
use crate::endpoint::EndpointError;
use crate::heartbeat::HeartbeatConfig;
use crate::tls::{Trust, TrustError};

/// Default config file for a system install.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/syspush/syspushd.toml";
/// Default rate limit of an app's wake command, seconds.
pub const DEFAULT_WAKE_MIN_INTERVAL_S: u64 = 30;

/// Errors loading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, a wrong type, or an unknown key.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message names the line and key.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// `gateway` is not a usable https URL.
    #[error(transparent)]
    Gateway(#[from] EndpointError),
    /// `ca_file` or `pin_spki_sha256` cannot be used.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// Any other invalid value.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A secret string: never shown by `Debug`, redacted by [`Config::to_toml_redacted`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// The config file as written (see `docs/contracts.md`, "Daemon / Config"):
/// serde's view, before any value is checked. Read only by [`Config::check`]
/// and [`Config::to_toml_redacted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// Gateway base URL, `https://HOST[:PORT]`; the link goes to `wss://HOST:PORT/v1/device`.
    gateway: String,
    /// Custom CA (PEM) for the gateway; built-in web roots otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    /// Presented once to `POST /v1/devices` when no credentials are stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enrollment_key: Option<Secret>,
    /// Given credentials (instead of enrollment); needs `device_secret` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    /// Secret for `device_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_secret: Option<Secret>,
    /// Directory of the redb store (`state_dir/syspushd.redb`).
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    /// The app socket.
    #[serde(default = "default_socket_path")]
    socket_path: PathBuf,
    /// Heartbeat interval, seconds (clamped to the gateway's bounds).
    #[serde(default = "default_heartbeat_s")]
    heartbeat_s: u32,
    /// How long to wait for an answer to a heartbeat, seconds.
    #[serde(default = "default_pong_timeout_s")]
    pong_timeout_s: u32,
    /// Shortest heartbeat the learning may settle on, seconds (default 30, or
    /// `heartbeat_s` if that is lower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeat_min_s: Option<u32>,
    /// Longest heartbeat, seconds (default 1680 = 28 min, or `heartbeat_s` if
    /// that is higher). Equal min and max fix the heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heartbeat_max_s: Option<u32>,
    /// Answered heartbeats at one interval before probing a longer one.
    #[serde(default = "default_heartbeat_probe_after")]
    heartbeat_probe_after: u32,
    /// Upward probe step while no failure is known, percent of the interval.
    #[serde(default = "default_heartbeat_growth_pct")]
    heartbeat_growth_pct: u32,
    /// Learning stops once the proven interval is this percentage of the
    /// shortest failed one.
    #[serde(default = "default_heartbeat_precision_pct")]
    heartbeat_precision_pct: u32,
    /// After a failure with nothing proven below it, retry at this percentage.
    #[serde(default = "default_heartbeat_step_back_pct")]
    heartbeat_step_back_pct: u32,
    /// Seconds stable before the failed ceiling is probed again (doubling
    /// after each failed re-probe, up to 8x).
    #[serde(default = "default_heartbeat_reprobe_s")]
    heartbeat_reprobe_s: u64,
    /// Uids besides root allowed to switch idle mode (`syspushctl idle on|off`),
    /// e.g. the platform's power manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    system_uids: Vec<u32>,
    /// Android's package list (`/data/system/packages.list`): when set, an app
    /// id that is a package name may be acted for by that package's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packages_list: Option<PathBuf>,
    /// Optional public-key pins: base64 SHA-256 of the gateway leaf
    /// certificate's SubjectPublicKeyInfo. When set, a certificate whose chain
    /// is valid but whose key is not listed is refused (see `tls.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pin_spki_sha256: Vec<String>,
    /// Apps and the uids allowed to act for them.
    #[serde(default, rename = "app", skip_serializing_if = "Vec::is_empty")]
    apps: Vec<AppConfig>,
}

/// One `[[app]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// App id (as the gateway knows it).
    pub id: String,
    /// Uids allowed to act for this app (root always may).
    #[serde(default)]
    pub uids: Vec<u32>,
    /// Program and arguments run when a message waits and the app is not connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_command: Option<Vec<String>>,
    /// Minimum seconds between two runs of the wake command.
    #[serde(default = "default_wake_min_interval_s")]
    pub wake_min_interval_s: u64,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "syspush")
}

/// The first of the paths systemd hands a service in `var`
/// (`StateDirectory=` -> `$STATE_DIRECTORY`, `RuntimeDirectory=` ->
/// `$RUNTIME_DIRECTORY`, colon-separated): under systemd these are the
/// directories the sandbox made writable for this service, whatever its user.
fn systemd_dir(var: &str) -> Option<PathBuf> {
    let v = std::env::var_os(var)?;
    let first = v.to_str()?.split(':').next()?;
    (!first.is_empty()).then(|| PathBuf::from(first))
}

fn default_state_dir() -> PathBuf {
    if let Some(d) = systemd_dir("STATE_DIRECTORY") {
        return d;
    }
    if !is_root()
        && let Some(d) = project_dirs()
    {
        return d.data_dir().to_path_buf();
    }
    PathBuf::from("/var/lib/syspush")
}

fn default_socket_path() -> PathBuf {
    if let Some(d) = systemd_dir("RUNTIME_DIRECTORY") {
        return d.join("syspushd.sock");
    }
    if !is_root()
        && let Some(dir) = project_dirs().and_then(|d| d.runtime_dir().map(Path::to_path_buf))
    {
        return dir.join("syspushd.sock");
    }
    PathBuf::from("/run/syspush/syspushd.sock")
}

fn default_heartbeat_s() -> u32 {
    270
}

fn default_pong_timeout_s() -> u32 {
    10
}

fn default_heartbeat_probe_after() -> u32 {
    2
}

fn default_heartbeat_growth_pct() -> u32 {
    50
}

fn default_heartbeat_precision_pct() -> u32 {
    90
}

fn default_heartbeat_step_back_pct() -> u32 {
    80
}

fn default_heartbeat_reprobe_s() -> u64 {
    6 * 3600
}

fn default_wake_min_interval_s() -> u64 {
    DEFAULT_WAKE_MIN_INTERVAL_S
}

/// The config file used when none is given: the system path, or for a
/// non-root user without it, the per-user config dir.
pub fn default_config_path() -> PathBuf {
    let system = PathBuf::from(DEFAULT_CONFIG_PATH);
    if is_root() || system.exists() {
        return system;
    }
    project_dirs()
        .map(|d| d.config_dir().join("syspushd.toml"))
        .unwrap_or(system)
}

/// A checked config: the file's values, with those that need parsing parsed
/// (see the module doc). Made only by [`Config::load`] and
/// [`Config::from_toml`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateway base URL as configured (shown in status and logs); the link
    /// dials [`Config::endpoint`].
    pub gateway: String,
    /// Presented once to `POST /v1/devices` when no credentials are stored.
    pub enrollment_key: Option<Secret>,
    /// Given credentials (instead of enrollment); `device_secret` is set too.
    pub device_id: Option<String>,
    /// Secret for `device_id`.
    pub device_secret: Option<Secret>,
    /// Directory of the redb store (`state_dir/syspushd.redb`).
    pub state_dir: PathBuf,
    /// The app socket.
    pub socket_path: PathBuf,
    /// Configured heartbeat interval, seconds (the learning starts there).
    pub heartbeat_s: u32,
    /// How long to wait for an answer to a heartbeat, seconds.
    pub pong_timeout_s: u32,
    /// Uids besides root allowed to switch idle mode.
    pub system_uids: Vec<u32>,
    /// Android's package list, if the app ids are package names.
    pub packages_list: Option<PathBuf>,
    /// Apps and the uids allowed to act for them.
    pub apps: Vec<AppConfig>,
    endpoint: Endpoint,
    trust: Trust,
    heartbeat: HeartbeatConfig,
    /// The file as written (relative paths resolved): what `--check-config` prints.
    file: ConfigFile,
}

impl Config {
    /// Reads, parses and validates a config file (no network).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        // Relative paths in the file are relative to the file: anchor it first
        // so the effective config (and error messages) show absolute paths.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parses and validates TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<text>"), base)
    }

    fn parse(text: &str, origin: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(e),
        })?;
        file.resolve_paths(base);
        Self::check(file)
    }

    /// Checks every value of the file, in the order of the file's keys, and
    /// parses those that need it; the error says which and why.
    fn check(file: ConfigFile) -> Result<Self, ConfigError> {
        let endpoint = Endpoint::parse(&file.gateway)?;
        let trust = Trust::load(file.ca_file.as_deref(), &file.pin_spki_sha256)?;
        file.check_credentials()?;
        file.check_paths()?;
        let heartbeat = file.check_heartbeat()?;
        file.check_apps()?;
        Ok(Config {
            gateway: file.gateway.clone(),
            enrollment_key: file.enrollment_key.clone(),
            device_id: file.device_id.clone(),
            device_secret: file.device_secret.clone(),
            state_dir: file.state_dir.clone(),
            socket_path: file.socket_path.clone(),
            heartbeat_s: file.heartbeat_s,
            pong_timeout_s: file.pong_timeout_s,
            system_uids: file.system_uids.clone(),
            packages_list: file.packages_list.clone(),
            apps: file.apps.clone(),
            endpoint,
            trust,
            heartbeat,
            file,
        })
    }

    /// Where the link and enrollment connect, parsed from `gateway`.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// What the gateway's certificate is checked against (`ca_file`, `pin_spki_sha256`).
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// The heartbeat policy's tunables, defaults filled in.
    pub fn heartbeat_config(&self) -> HeartbeatConfig {
        self.heartbeat
    }

    /// Path of the redb store.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("syspushd.redb")
    }

    /// The effective config as TOML, with secrets replaced by `<redacted>`.
    pub fn to_toml_redacted(&self) -> String {
        let mut c = self.file.clone();
        let redact = |s: &mut Option<Secret>| {
            if s.is_some() {
                *s = Some(Secret::new("<redacted>"));
            }
        };
        redact(&mut c.enrollment_key);
        redact(&mut c.device_secret);
        // Serializing plain strings, paths and integers cannot fail.
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl ConfigFile {
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if let Some(ca) = self.ca_file.as_mut() {
            fix(ca);
        }
        fix(&mut self.state_dir);
        fix(&mut self.socket_path);
        if let Some(p) = self.packages_list.as_mut() {
            fix(p);
        }
    }

    fn check_credentials(&self) -> Result<(), ConfigError> {
        match (&self.device_id, &self.device_secret) {
            (Some(id), Some(secret)) if id.is_empty() || secret.expose().is_empty() => {
                return Err(ConfigError::Invalid(
                    "device_id and device_secret must not be empty".into(),
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "device_id and device_secret must be given together".into(),
                ));
            }
            _ => {}
        }
        if self
            .enrollment_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            return Err(ConfigError::Invalid(
                "enrollment_key must not be empty".into(),
            ));
        }
        Ok(())
    }

    fn check_paths(&self) -> Result<(), ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("state_dir must not be empty".into()));
        }
        if self.socket_path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("socket_path must not be empty".into()));
        }
        // sun_path holds 108 bytes including the NUL.
        if self.socket_path.as_os_str().len() > 107 {
            return Err(ConfigError::Invalid(format!(
                "socket_path {} is longer than the 107 bytes a Unix socket path may have",
                self.socket_path.display()
            )));
        }
        Ok(())
    }

    /// The heartbeat tunables, defaults filled in, every bound checked.
    fn check_heartbeat(&self) -> Result<HeartbeatConfig, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(1..=86_400).contains(&self.heartbeat_s) {
            return bad(format!(
                "heartbeat_s = {} is not in 1..=86400",
                self.heartbeat_s
            ));
        }
        if !(1..=600).contains(&self.pong_timeout_s) {
            return bad(format!(
                "pong_timeout_s = {} is not in 1..=600",
                self.pong_timeout_s
            ));
        }
        let secs = |s: u32| Duration::from_secs(s.into());
        let h = HeartbeatConfig {
            initial: secs(self.heartbeat_s),
            min: secs(self.heartbeat_min_s.unwrap_or(30.min(self.heartbeat_s))),
            max: secs(self.heartbeat_max_s.unwrap_or(1680.max(self.heartbeat_s))),
            probe_after: self.heartbeat_probe_after,
            growth_pct: self.heartbeat_growth_pct,
            precision_pct: self.heartbeat_precision_pct,
            step_back_pct: self.heartbeat_step_back_pct,
            reprobe_after: Duration::from_secs(self.heartbeat_reprobe_s),
        };
        if h.min.is_zero() || h.min > h.max || h.max > Duration::from_secs(86_400) {
            return bad(format!(
                "heartbeat_min_s/heartbeat_max_s = {}/{} must satisfy 1 <= min <= max <= 86400",
                h.min.as_secs(),
                h.max.as_secs()
            ));
        }
        if !(h.min..=h.max).contains(&h.initial) {
            return bad(format!(
                "heartbeat_s = {} is outside heartbeat_min_s..=heartbeat_max_s",
                self.heartbeat_s
            ));
        }
        for (name, v, range) in [
            ("heartbeat_probe_after", h.probe_after, 1..=100),
            ("heartbeat_growth_pct", h.growth_pct, 1..=1000),
            ("heartbeat_precision_pct", h.precision_pct, 50..=99),
            ("heartbeat_step_back_pct", h.step_back_pct, 10..=99),
        ] {
            if !range.contains(&v) {
                return bad(format!("{name} = {v} is not in {range:?}"));
            }
        }
        if self.heartbeat_reprobe_s == 0 {
            return bad("heartbeat_reprobe_s must be at least 1".into());
        }
        Ok(h)
    }

    fn check_apps(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for app in &self.apps {
            if app.id.is_empty()
                || app.id.len() > 255
                || app.id.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ConfigError::Invalid(format!(
                    "app id {:?} must be 1-255 printable characters",
                    app.id
                )));
            }
            if !seen.insert(app.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "app {:?} is listed twice",
                    app.id
                )));
            }
            if let Some(cmd) = &app.wake_command
                && (cmd.is_empty() || cmd[0].is_empty())
            {
                return Err(ConfigError::Invalid(format!(
                    "app {:?}: wake_command must name a program",
                    app.id
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

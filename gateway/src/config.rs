//! Gateway configuration: the TOML file `serve` and `app add` read.
//!
//! Owns parsing (unknown keys are rejected, so a typo is an error rather than a
//! silently ignored setting), defaults, validation, and resolving relative paths
//! against the config file's directory (so a config can sit next to its certs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default heartbeat bounds sent in `ServerHello` (seconds).
const DEFAULT_HEARTBEAT_MIN_S: u32 = 60;
const DEFAULT_HEARTBEAT_MAX_S: u32 = 1680;
/// Default time a client has to finish the TLS handshake (seconds).
const DEFAULT_TLS_HANDSHAKE_TIMEOUT_S: u64 = 10;
/// Default time a client has to send a request's headers (slow-loris guard).
const DEFAULT_HEADER_READ_TIMEOUT_S: u64 = 30;

/// Errors loading or validating a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, types, unknown keys).
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// The TOML error (names the offending key).
        #[source]
        source: toml::de::Error,
    },
    /// The values parse but make no sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The gateway's configuration. See `docs/contracts.md` ("Config").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to bind; port 0 picks a free port (see `Gateway::local_addr`).
    pub listen: SocketAddr,
    /// Directory of the redb store (`gateway.redb`); created if missing.
    pub data_dir: PathBuf,
    /// PEM certificate chain served to clients.
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    pub tls_key: PathBuf,
    /// Shared secret devices present to `POST /v1/devices`.
    pub enrollment_key: String,
    /// Lower heartbeat bound announced in `ServerHello`.
    #[serde(default = "default_heartbeat_min")]
    pub heartbeat_min_s: u32,
    /// Upper heartbeat bound announced in `ServerHello`.
    #[serde(default = "default_heartbeat_max")]
    pub heartbeat_max_s: u32,
    /// Per-app daily limit (UTC days) on messages of class "operational";
    /// absent = unlimited. Sends beyond it answer 429.
    #[serde(default)]
    pub operational_daily_quota: Option<u64>,
    /// Longest time, seconds, a normal-priority message is held for an idle
    /// device before it is sent anyway; absent = until the device's next
    /// heartbeat (the cheapest: it rides the exchange the radio makes anyway).
    #[serde(default)]
    pub idle_max_hold_s: Option<u64>,
    /// Seconds a client has to complete the TLS handshake before the TCP
    /// connection is dropped (idle handshakes otherwise pin a task and a socket).
    #[serde(default = "default_tls_handshake_timeout")]
    pub tls_handshake_timeout_s: u64,
    /// Seconds a client has to send a complete request head (slow-loris
    /// guard); the body and the answer then get as long again (408 after).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_s: u64,
}

fn default_tls_handshake_timeout() -> u64 {
    DEFAULT_TLS_HANDSHAKE_TIMEOUT_S
}

fn default_header_read_timeout() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_S
}

fn default_heartbeat_min() -> u32 {
    DEFAULT_HEARTBEAT_MIN_S
}

fn default_heartbeat_max() -> u32 {
    DEFAULT_HEARTBEAT_MAX_S
}

impl Config {
    /// A config with default heartbeat bounds and no quota (for in-process use,
    /// e.g. the quick start; paths are taken as given).
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        tls_cert: impl Into<PathBuf>,
        tls_key: impl Into<PathBuf>,
        enrollment_key: impl Into<String>,
    ) -> Config {
        Config {
            listen,
            data_dir: data_dir.into(),
            tls_cert: tls_cert.into(),
            tls_key: tls_key.into(),
            enrollment_key: enrollment_key.into(),
            heartbeat_min_s: DEFAULT_HEARTBEAT_MIN_S,
            heartbeat_max_s: DEFAULT_HEARTBEAT_MAX_S,
            operational_daily_quota: None,
            idle_max_hold_s: None,
            tls_handshake_timeout_s: DEFAULT_TLS_HANDSHAKE_TIMEOUT_S,
            header_read_timeout_s: DEFAULT_HEADER_READ_TIMEOUT_S,
        }
    }

    /// Reads, parses and validates the file at `path`; relative paths inside it are
    /// resolved against the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml(&text, base).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses `text`; relative paths are resolved against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source,
        })?;
        cfg.data_dir = resolve(base_dir, &cfg.data_dir);
        cfg.tls_cert = resolve(base_dir, &cfg.tls_cert);
        cfg.tls_key = resolve(base_dir, &cfg.tls_key);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enrollment_key.is_empty() {
            return Err(ConfigError::Invalid(
                "enrollment_key must not be empty".into(),
            ));
        }
        if self.heartbeat_min_s == 0 || self.heartbeat_min_s > self.heartbeat_max_s {
            return Err(ConfigError::Invalid(format!(
                "heartbeat bounds must satisfy 0 < heartbeat_min_s ({}) <= heartbeat_max_s ({})",
                self.heartbeat_min_s, self.heartbeat_max_s
            )));
        }
        if self.tls_handshake_timeout_s == 0 || self.header_read_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "tls_handshake_timeout_s and header_read_timeout_s must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Path of the redb database file inside `data_dir`.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("gateway.redb")
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
data_dir = "data"
tls_cert = "cert.pem"
tls_key = "/abs/key.pem"
enrollment_key = "k"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let cfg = Config::from_toml(MINIMAL, Path::new("/etc/gw")).expect("valid");
        assert_eq!(cfg.data_dir, PathBuf::from("/etc/gw/data"));
        assert_eq!(cfg.tls_cert, PathBuf::from("/etc/gw/cert.pem"));
        assert_eq!(cfg.tls_key, PathBuf::from("/abs/key.pem"));
        assert_eq!((cfg.heartbeat_min_s, cfg.heartbeat_max_s), (60, 1680));
    }

    #[test]
    fn unknown_key_rejected() {
        let text = format!("{MINIMAL}\nbogus = 1\n");
        assert!(matches!(
            Config::from_toml(&text, Path::new("/")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn bad_bounds_rejected() {
        let text = format!("{MINIMAL}\nheartbeat_min_s = 100\nheartbeat_max_s = 10\n");
        assert!(matches!(
            Config::from_toml(&text, Path::new("/")),
            Err(ConfigError::Invalid(_))
        ));
    }
}

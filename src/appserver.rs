//! A blocking client of the gateway's HTTP API, as an app server uses it: send a
//! push (`POST /v1/messages`) with the app's key, trusting a given CA.
//!
//! Kept synchronous (ureq) on purpose: the quick start, the tests and the bench
//! drive it from plain threads, and it never runs inside the daemon.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// Errors talking to the gateway's HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum AppServerError {
    /// The CA file could not be read.
    #[error("reading CA file {path}: {source}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {0} holds no PEM certificate")]
    NoCert(String),
    /// The request did not complete (connect, TLS, I/O).
    #[error("request to {url}: {source}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        source: Box<ureq::Error>,
    },
}

/// The gateway's answer: HTTP status and the JSON body (or `Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Parsed body.
    pub body: serde_json::Value,
}

/// An app server's handle on one gateway.
#[derive(Clone)]
pub struct AppServer {
    agent: ureq::Agent,
    base: String,
    key: String,
}

impl AppServer {
    /// `base` is the gateway's `https://host:port`; `ca_pem` the CA that signed its cert.
    pub fn new(base: &str, key: &str, ca_pem: &Path) -> Result<Self, AppServerError> {
        let pem = std::fs::read(ca_pem).map_err(|source| AppServerError::Ca {
            path: ca_pem.display().to_string(),
            source,
        })?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(AppServerError::NoCert(ca_pem.display().to_string()));
        }
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(certs)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    /// `POST /v1/messages` with `body` (it must carry `"token"`).
    pub fn send(&self, body: &serde_json::Value) -> Result<Reply, AppServerError> {
        self.request("POST", "/v1/messages", Some(body))
    }

    /// Any request on the gateway's API with this app's key.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, AppServerError> {
        let url = format!("{}{}", self.base, path);
        let auth = format!("Bearer {}", self.key);
        let http = |source: ureq::Error| AppServerError::Http {
            url: url.clone(),
            source: Box::new(source),
        };
        let mut resp = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
            ("DELETE", Some(b)) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .force_send_body()
                .send_json(b),
            ("DELETE", None) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        }
        .map_err(http)?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(http)?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Ok(Reply { status, body })
    }
}

//! First-start enrollment: `POST /v1/devices` with the enrollment key, over
//! the same TLS client config as the link (hyper http1 on tokio-rustls), to
//! obtain the device id and secret the link authenticates with. Stored by
//! the caller; the key is not used again while credentials are stored.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;

use crate::endpoint::Endpoint;
use crate::tls::{self, TlsError};

/// Largest enrollment response body read.
const MAX_BODY: usize = 16 * 1024;

/// Errors of enrollment.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// TCP/TLS failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// HTTP failed.
    #[error("enrollment request: {0}")]
    Http(#[from] hyper::Error),
    /// The response body could not be read.
    #[error("enrollment response: {0}")]
    Body(String),
    /// The gateway refused (401: wrong enrollment key).
    #[error("enrollment refused: HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The gateway's `error` text.
        message: String,
    },
}

/// Credentials issued by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Enrolled {
    /// Device id.
    pub device_id: String,
    /// Device secret.
    pub secret: String,
}

/// Enrolls this device; returns its credentials.
pub async fn enroll(
    tls_config: &Arc<ClientConfig>,
    ep: &Endpoint,
    key: &str,
) -> Result<Enrolled, EnrollError> {
    let stream = tls::dial(tls_config, ep).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "enrollment connection ended");
        }
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/devices")
        .header(HOST, ep.authority())
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .header(CONTENT_LENGTH, "0")
        .body(Full::new(Bytes::new()))
        .map_err(|e| EnrollError::Body(e.to_string()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| EnrollError::Body(e.to_string()))?
        .to_bytes();
    drop(sender);
    driver.abort();
    if status != StatusCode::CREATED && status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(EnrollError::Refused { status, message });
    }
    let enrolled: Enrolled =
        serde_json::from_slice(&body).map_err(|e| EnrollError::Body(format!("bad JSON: {e}")))?;
    if enrolled.device_id.is_empty() || enrolled.secret.is_empty() {
        return Err(EnrollError::Body("empty device_id or secret".into()));
    }
    Ok(enrolled)
}

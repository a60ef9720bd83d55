//! Making a connection: the credentials (configured, stored, or enrolled for
//! now), the resume point, then TCP + TLS + WebSocket. What failed is noted
//! in the status for doctor.

use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use syspush_proto::MAX_FRAME_LEN;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::{Config, Endpoint};
use crate::session::Hello;
use crate::store::Store;
use crate::{enroll, tls};

use super::error::{LinkFailure, Shared, TransportError};
use super::handle::{LinkStatus, lock};

/// The WebSocket to the gateway.
pub(super) type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// What dialing needs.
pub(super) struct Dialer {
    pub(super) config: Arc<Config>,
    pub(super) endpoint: Endpoint,
    pub(super) tls: Arc<ClientConfig>,
    pub(super) store: Arc<Store>,
    pub(super) status: Arc<Mutex<LinkStatus>>,
}

/// Longest WebSocket frame header (2 bytes, 8-byte length, 4-byte mask).
const WS_HEADER_MAX: usize = 14;

fn ws_config() -> WebSocketConfig {
    // Frames are capped at 64 KiB by the protocol; refuse bigger ones before
    // buffering them. The buffers are sized for one such frame, not
    // tungstenite's default 128 KiB each: the read buffer is allocated up
    // front for the life of the connection.
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
        .read_buffer_size(MAX_FRAME_LEN + WS_HEADER_MAX)
        .write_buffer_size(MAX_FRAME_LEN + WS_HEADER_MAX)
}

impl Dialer {
    /// Credentials (enrolling if needed), then TCP + TLS + WebSocket. A
    /// failure is kept in the status as the last error.
    pub(super) async fn connect(&self) -> Result<(Ws, Hello), TransportError> {
        let r = self.try_connect().await;
        if let Err(e) = &r {
            lock(&self.status).last_error = Some(LinkFailure::Transport(e.clone()));
        }
        r
    }

    async fn try_connect(&self) -> Result<(Ws, Hello), TransportError> {
        let (device_id, secret) = self.credentials().await?;
        lock(&self.status).device_id = device_id.clone();
        let last_committed_seq = self
            .store
            .last_committed_seq()
            .map_err(TransportError::store)?;
        let stream = tls::dial(&self.tls, &self.endpoint).await?;
        let url = format!("wss://{}/v1/device", self.endpoint.authority());
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .map_err(|e| TransportError::WebSocketHandshake(Shared::new(e)))?;
        Ok((
            ws,
            Hello {
                device_id,
                secret,
                last_committed_seq,
            },
        ))
    }

    async fn credentials(&self) -> Result<(String, String), TransportError> {
        let (config, store) = (&self.config, &self.store);
        let stored = store.credentials().map_err(TransportError::store)?;
        if let (Some(id), Some(secret)) = (&config.device_id, &config.device_secret) {
            // A different identity has its own sequence space: record it so the
            // resume point starts over instead of skipping the new device's messages.
            if stored.as_ref().is_none_or(|(sid, _)| sid != id) {
                store
                    .set_credentials(id, secret.expose())
                    .map_err(TransportError::store)?;
                tracing::info!(device_id = %id, "using the configured device credentials");
            }
            return Ok((id.clone(), secret.expose().to_string()));
        }
        if let Some(c) = stored {
            return Ok(c);
        }
        let Some(key) = &config.enrollment_key else {
            return Err(TransportError::NoCredentials);
        };
        let e = enroll::enroll(&self.tls, &self.endpoint, key.expose()).await?;
        store
            .set_credentials(&e.device_id, &e.secret)
            .map_err(TransportError::store)?;
        tracing::info!(device_id = %e.device_id, "enrolled with the gateway");
        Ok((e.device_id, e.secret))
    }
}

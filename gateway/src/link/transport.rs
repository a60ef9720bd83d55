//! The device link's transport: the WebSocket under one session.
//!
//! Owns the socket-level limits (message and frame size caps set at upgrade),
//! reading and writing protocol frames (decode/encode with the device codec),
//! the write timeout that keeps a peer that stops reading from pinning a task,
//! and how a session ends on the wire: `GoAway`, an `Error` frame matching
//! the failure, the close handshake. It knows nothing of the protocol state.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use syspush_proto::device::{self, ErrorCode, Frame, frame::Body};
use syspush_proto::{MAX_FRAME_LEN, device_codec};

use super::error::LinkError;

/// A frame that cannot be written within this time ends the session.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// WebSocket message cap: a little above the frame cap so an oversized frame
/// still reaches our codec and gets a proper `ERROR_BAD_FRAME`.
const WS_MAX_MESSAGE: usize = MAX_FRAME_LEN + 4096;

/// Applies the transport's size caps to an upgrade.
pub(super) fn limit(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
}

/// One device's WebSocket, speaking protocol frames.
pub(super) struct Transport {
    socket: WebSocket,
    /// Who is at the other end, for logs; empty until authenticated.
    pub(super) device_id: String,
}

impl Transport {
    pub(super) fn new(socket: WebSocket) -> Self {
        Transport {
            socket,
            device_id: String::new(),
        }
    }

    /// Next protocol frame; `None` when the peer closed. WebSocket pings are
    /// answered by the library and skipped here.
    pub(super) async fn read_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            match self.socket.recv().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(error)) => return Err(LinkError::Ws(error)),
                Some(Ok(Message::Binary(bytes))) => {
                    return device_codec::decode(&bytes)
                        .map(Some)
                        .map_err(LinkError::BadFrame);
                }
                Some(Ok(Message::Text(_))) => return Err(LinkError::Unexpected("a text message")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }

    pub(super) async fn send(&mut self, body: Body) -> Result<(), LinkError> {
        let bytes = device_codec::encode(&device_codec::frame(body)).map_err(LinkError::Encode)?;
        // A peer that stops reading must not pin this task (and shutdown) forever.
        match tokio::time::timeout(
            WRITE_TIMEOUT,
            self.socket.send(Message::Binary(bytes.into())),
        )
        .await
        {
            Ok(sent) => sent.map_err(LinkError::Ws),
            Err(_) => Err(LinkError::WriteTimeout),
        }
    }

    pub(super) async fn send_error(
        &mut self,
        code: ErrorCode,
        message: &str,
        request_id: u64,
    ) -> Result<(), LinkError> {
        let body = Body::Error(device::Error {
            code: code as i32,
            message: message.to_owned(),
            request_id,
        });
        self.send(body).await
    }

    pub(super) async fn go_away(&mut self, reason: &str) -> Result<(), LinkError> {
        self.send(Body::Goaway(device::GoAway {
            reason: reason.to_owned(),
            retry_after_s: 0,
        }))
        .await
    }

    /// Best-effort close handshake; the connection is dropped afterwards anyway.
    pub(super) async fn close(mut self) {
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.socket.send(Message::Close(None))).await;
    }

    /// Ends a session that failed: tells the device why when the protocol says
    /// so, logs, closes.
    pub(super) async fn fail(mut self, error: LinkError) {
        match &error {
            LinkError::BadFrame(_) | LinkError::Unexpected(_) => {
                tracing::info!(device_id = %self.device_id, %error, "closing link: bad frame");
                let _ = self
                    .send_error(ErrorCode::ErrorBadFrame, &error.to_string(), 0)
                    .await;
            }
            LinkError::WriteTimeout => {
                tracing::info!(device_id = %self.device_id, "closing link: the device stopped reading");
                return;
            }
            LinkError::Ws(_) => {
                // Usually the connection is gone and this send fails silently;
                // when the peer exceeded the WebSocket size cap it is still up
                // and deserves the protocol's answer.
                tracing::debug!(device_id = %self.device_id, %error, "link dropped");
                let _ = self
                    .send_error(ErrorCode::ErrorBadFrame, &error.to_string(), 0)
                    .await;
            }
            LinkError::Store(_) | LinkError::Random(_) | LinkError::Encode(_) => {
                tracing::error!(device_id = %self.device_id, %error, "closing link: internal error");
                let _ = self
                    .send_error(ErrorCode::ErrorInternal, "internal error", 0)
                    .await;
            }
        }
        self.close().await
    }
}

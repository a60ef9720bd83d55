//! The device link: one WebSocket session per connected device (`GET /v1/device`).
//!
//! Implements the gateway side of the device protocol (contracts.md, "Device
//! link") in two layers: `transport` (the WebSocket: size caps, frame I/O,
//! write timeout, closing) and `session` (the protocol state: hello and
//! authentication, claiming the device in the
//! [`Registry`](crate::registry::Registry), replay after `last_committed_seq`,
//! the ack-gated delivery window, idle holding, and the device's requests in
//! `requests`). This file only wires the HTTP upgrade to the two.

mod error;
mod requests;
mod session;
mod transport;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::{IntoResponse, Response};

pub use error::LinkError;
pub use session::{HELLO_TIMEOUT, WINDOW};
pub use transport::WRITE_TIMEOUT;

use crate::state::Shared;
use transport::Transport;

/// `GET /v1/device`: upgrades to the device link.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => transport::limit(ws)
            .on_upgrade(move |socket| session::run(shared, Transport::new(socket))),
        Err(rejection) => {
            let body =
                serde_json::json!({ "error": format!("websocket upgrade required: {rejection}") });
            (rejection.status(), axum::Json(body)).into_response()
        }
    }
}

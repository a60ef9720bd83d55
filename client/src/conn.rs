//! One framed connection to the daemon's app socket.
//!
//! Both [`Client`](crate::Client) and [`Listener`](crate::Listener) speak the same
//! framing: `AppRequest` out, `DaemonMessage` in, each varint length-delimited
//! (`syspush_proto::app_codec`). This module owns only that plumbing; matching
//! replies to requests and reconnecting are the owners' business, because they
//! want different things (a client waits for one reply, a listener streams).

use std::path::Path;

use futures_util::{SinkExt, StreamExt};
use syspush_proto::app::app_request::Body;
use syspush_proto::app::{AppRequest, DaemonMessage};
use syspush_proto::app_codec::DelimitedCodec;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::ClientError;

/// A connected, framed app socket.
#[derive(Debug)]
pub(crate) struct Conn {
    framed: Framed<UnixStream, DelimitedCodec<DaemonMessage>>,
}

impl Conn {
    /// Connects to the daemon's socket at `path`.
    pub(crate) async fn open(path: &Path) -> Result<Conn, ClientError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Ok(Conn {
            framed: Framed::new(stream, DelimitedCodec::new()),
        })
    }

    /// Sends one request and flushes it, so it is on the socket when this returns.
    pub(crate) async fn send(&mut self, request_id: u64, body: Body) -> Result<(), ClientError> {
        let req = AppRequest {
            request_id,
            body: Some(body),
        };
        self.framed.send(req).await?;
        Ok(())
    }

    /// Next frame from the daemon; [`ClientError::Closed`] at end of stream.
    ///
    /// Cancel-safe: dropping the future loses no frame (Framed keeps partial
    /// input in its buffer), so callers may use it inside `select!`.
    pub(crate) async fn recv(&mut self) -> Result<DaemonMessage, ClientError> {
        match self.framed.next().await {
            Some(Ok(msg)) => Ok(msg),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }
}

//! One framed connection to the daemon's app socket.
//!
//! Both [`Client`](crate::Client) and [`Listener`](crate::Listener) speak the same
//! framing: `AppRequest` out, `DaemonMessage` in, each varint length-delimited
//! (`syspush_proto::app_codec`). This module owns only that plumbing; matching
//! replies to requests and reconnecting are the owners' business, because they
//! want different things (a client waits for one reply, a listener streams).

use std::collections::VecDeque;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use syspush_proto::app::app_request::Body;
use syspush_proto::app::daemon_message::Body as Reply;
use syspush_proto::app::{AppRequest, DaemonMessage};
use syspush_proto::app_codec::DelimitedCodec;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::error::ClientError;

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
        if let Err(e) = self.framed.send(req).await {
            // The daemon may have refused the connection (an Error frame,
            // then close: too many connections) before our request went
            // out; its reason is already here to read, and beats EPIPE.
            if let Some(Some(Ok(DaemonMessage {
                body: Some(Reply::Error(err)),
                ..
            }))) = self.framed.next().now_or_never()
            {
                return Err(ClientError::from_wire(err));
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Next frame from the daemon; [`ClientError::Closed`] at end of stream.
    ///
    /// Cancel-safe: dropping the future loses no frame (Framed keeps partial
    /// input in its buffer), so callers may use it inside `select!`.
    /// Like [`Conn::send`], but while the socket does not take our bytes it
    /// reads the daemon's frames into `inbox`.
    ///
    /// Why: the daemon streams deliveries while it reads requests on the same
    /// socket. A listener that writes many frames (one re-ack per redelivered
    /// id after a daemon restart) without reading fills the daemon's receive
    /// buffer while the daemon fills ours: both block writing, forever. Reading
    /// whenever a write is pending makes that impossible.
    pub(crate) async fn send_reading(
        &mut self,
        request_id: u64,
        body: Body,
        inbox: &mut VecDeque<DaemonMessage>,
    ) -> Result<(), ClientError> {
        let req = AppRequest {
            request_id,
            body: Some(body),
        };
        let framed = &mut self.framed;
        drive(framed, inbox, Sink::<AppRequest>::poll_ready).await?;
        Pin::new(&mut *framed).start_send(req)?;
        drive(framed, inbox, Sink::<AppRequest>::poll_flush).await
    }

    pub(crate) async fn recv(&mut self) -> Result<DaemonMessage, ClientError> {
        match self.framed.next().await {
            Some(Ok(msg)) => Ok(msg),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }
}

type Framed_ = Framed<UnixStream, DelimitedCodec<DaemonMessage>>;
/// A sink readiness or flush poll on the framed socket.
type SinkPoll = fn(
    Pin<&mut Framed_>,
    &mut std::task::Context<'_>,
) -> Poll<Result<(), syspush_proto::CodecError>>;

/// Polls `op` (a sink readiness or flush) to completion, draining incoming
/// frames into `inbox` whenever it is pending.
async fn drive(
    framed: &mut Framed_,
    inbox: &mut VecDeque<DaemonMessage>,
    op: SinkPoll,
) -> Result<(), ClientError> {
    std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(r) = op(Pin::new(&mut *framed), cx) {
                return Poll::Ready(r.map_err(ClientError::from));
            }
            match Pin::new(&mut *framed).poll_next(cx) {
                Poll::Ready(Some(Ok(m))) => inbox.push_back(m),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.into())),
                Poll::Ready(None) => return Poll::Ready(Err(ClientError::Closed)),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

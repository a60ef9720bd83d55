//! What goes back to an app: the framed connection type and the builders of
//! `DaemonMessage` replies. A leaf, so that every part of the app socket
//! (connection, requests, diagnostics, caps) answers the same way without
//! depending on each other.

use syspush_proto::app::{self, AppRequest, DaemonMessage, ErrorCode, daemon_message};
use syspush_proto::app_codec::DelimitedCodec;
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// One app connection: `AppRequest` frames in, `DaemonMessage` frames out.
pub(crate) type Conn = Framed<UnixStream, DelimitedCodec<AppRequest>>;

/// A message answering `request_id` (0: not an answer).
pub(crate) fn msg(request_id: u64, body: daemon_message::Body) -> DaemonMessage {
    DaemonMessage {
        request_id,
        body: Some(body),
    }
}

/// An `Error` answer to `request_id`.
pub(crate) fn error(request_id: u64, code: ErrorCode, message: impl Into<String>) -> DaemonMessage {
    msg(
        request_id,
        daemon_message::Body::Error(app::Error {
            code: code as i32,
            message: message.into(),
        }),
    )
}

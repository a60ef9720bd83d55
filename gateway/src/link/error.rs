//! [`LinkError`]: why a device session ended abnormally. A leaf shared by the
//! transport (socket failures) and the protocol session (bad frames, store).

use syspush_proto::CodecError;

use crate::ids::RandomError;
use crate::store::StoreError;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The WebSocket failed (I/O, protocol, size cap).
    #[error("websocket: {0}")]
    Ws(#[source] axum::Error),
    /// The peer did not take a frame within [`WRITE_TIMEOUT`](super::transport::WRITE_TIMEOUT).
    #[error("write timed out")]
    WriteTimeout,
    /// A frame did not decode.
    #[error("bad frame: {0}")]
    BadFrame(#[source] CodecError),
    /// A frame that the device must not send, or a text message.
    #[error("unexpected {0} from the device")]
    Unexpected(&'static str),
    /// A frame we built does not encode (cannot happen within the API's limits).
    #[error("cannot encode frame: {0}")]
    Encode(#[source] CodecError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The RNG failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

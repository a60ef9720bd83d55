//! The one error type of the client library.
//!
//! Every failure keeps its cause as `source()`, so a caller (or `syspushctl`,
//! which prints the whole chain) can tell "the daemon is not running" from "the
//! daemon said no" from "the daemon spoke garbage".

use std::path::PathBuf;

use syspush_proto::CodecError;
use syspush_proto::app::ErrorCode;

/// Errors returned by [`Client`](crate::Client) and [`Listener`](crate::Listener).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon's socket could not be connected (not running, wrong path, no
    /// access to the socket file).
    #[error("cannot connect to syspushd at {}", path.display())]
    Connect {
        /// The socket path that was tried.
        path: PathBuf,
        /// What `connect(2)` said.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a frame failed: an I/O error on the socket, or a frame
    /// from the daemon that is oversized or not a valid `DaemonMessage`.
    #[error("talking to syspushd failed")]
    Protocol(#[from] CodecError),
    /// The daemon closed the connection before answering.
    #[error("syspushd closed the connection")]
    Closed,
    /// The daemon answered the request with an error.
    #[error("syspushd refused: {message} ({})", code.as_str_name())]
    Daemon {
        /// The daemon's error code (unknown codes map to `ErrorUnspecified`).
        code: ErrorCode,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon answered with a message that does not fit the request (for
    /// example `Unregistered` to a register request): a daemon/client mismatch.
    #[error("unexpected answer from syspushd: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// Builds [`ClientError::Daemon`] from the wire error.
    pub(crate) fn from_wire(err: syspush_proto::app::Error) -> Self {
        ClientError::Daemon {
            code: ErrorCode::try_from(err.code).unwrap_or(ErrorCode::ErrorUnspecified),
            message: err.message,
        }
    }

    /// The daemon's error code, if this is an error the daemon sent.
    pub fn daemon_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the daemon refused because the caller's uid may not act for the
    /// app id. Retrying cannot help; the policy must change.
    pub fn is_permission_denied(&self) -> bool {
        self.daemon_code() == Some(ErrorCode::ErrorPermissionDenied)
    }
}

//! Client errors, each mapped to the shared error vocabulary and a CLI exit status.

use tigress_protocol::ErrorCode;
use tigress_protocol::rpc::RemoteError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node refused the request.
    #[error("{}", .0.message.as_str())]
    Remote(RemoteError),
    /// A record from the network or the local state failed the protocol's checks.
    #[error(transparent)]
    Protocol(#[from] tigress_protocol::Error),
    /// The invitation URL is malformed.
    #[error(transparent)]
    Url(#[from] tigress_protocol::UrlError),
    /// The node cannot be reached or stopped answering.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The relay of an oblivious request refused it or could not reach the target.
    #[error("the relay: {}", .0.message.as_str())]
    Relay(RemoteError),
    /// An oblivious request could not be sealed, or its answer opened.
    #[error("oblivious request: {0}")]
    Sealed(String),
    /// The node asks more proof of work for a new mailbox than was given.
    #[error("the node asks a proof of work of {bits} bits for a new mailbox")]
    Admission {
        /// The leading zero bits asked.
        bits: u8,
    },
    /// The node answered something that makes no sense for the request.
    #[error("unexpected answer from the node: {0}")]
    UnexpectedResponse(String),
    /// No local state for this share.
    #[error("no local state for share {0}: run `tigress share` or `tigress accept` first")]
    UnknownShare(String),
    /// The command does not fit this share (wrong role, missing option).
    #[error("{0}")]
    Usage(String),
    /// Reading or writing local files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<tigress_protocol::flow::FlowError> for ClientError {
    fn from(e: tigress_protocol::flow::FlowError) -> Self {
        use tigress_protocol::flow::FlowError;
        match e {
            FlowError::Refused(r) => ClientError::Remote(r),
            FlowError::Unexpected { expected, got } => {
                ClientError::UnexpectedResponse(format!("expected {expected}, got {got}"))
            }
            FlowError::Protocol(p) => ClientError::Protocol(p),
            _ => ClientError::UnexpectedResponse("an answer this client does not know".into()),
        }
    }
}

impl ClientError {
    /// The error class, when the failure maps to one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote(e) => Some(e.code),
            ClientError::Protocol(e) => Some(e.code()),
            ClientError::Url(_) => Some(ErrorCode::Malformed),
            ClientError::Unreachable(_) => Some(ErrorCode::Unavailable),
            ClientError::Relay(e) => Some(e.code),
            ClientError::Sealed(_) => Some(ErrorCode::Unavailable),
            ClientError::Admission { .. } => Some(ErrorCode::RateLimited),
            ClientError::UnknownShare(_) => Some(ErrorCode::NotFound),
            ClientError::UnexpectedResponse(_) | ClientError::Usage(_) | ClientError::Io { .. } => {
                None
            }
        }
    }

    /// The stable name for JSON output.
    pub fn code_name(&self) -> &'static str {
        match self {
            ClientError::Usage(_) => "usage",
            other => other.code().map_or("error", ErrorCode::as_str),
        }
    }

    /// The `tigress` exit status: 2 for usage, the class's status, or 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) | ClientError::Url(_) => 2,
            other => other.code().map_or(1, ErrorCode::exit_code),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Io {
            context: context.into(),
            source,
        }
    }
}

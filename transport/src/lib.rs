//! `tigress-transport`: how the tigress protocols ride on libp2p, shared by the client and
//! the node so that neither depends on the other.
//!
//! It holds the request-response frame codec ([`codec`]), the stream protocol names, the
//! identify protocol string, and the request timeout both ends agree on. What a frame
//! carries, and every rule about it, is `tigress_protocol::rpc`'s; this crate only moves
//! it over a libp2p stream. It runs no swarm; [`SourceTcp`]
//! dials TCP from a chosen local address for those that need one.
//!
//! ```
//! use tigress_transport::{CLIENT_STREAM, IDENTIFY_PROTOCOL, REQUEST_TIMEOUT};
//! assert_eq!(CLIENT_STREAM.as_ref(), "/tigress/client/1");
//! assert_eq!(IDENTIFY_PROTOCOL, "/tigress/1.0.0");
//! assert!(REQUEST_TIMEOUT.as_millis() > u128::from(tigress_protocol::rpc::MAX_WAIT_MS));
//! ```

#![warn(missing_docs)]

pub mod codec;
pub mod link;
pub mod source;

use std::time::Duration;

pub use codec::{CLIENT_STREAM, ClientCodec, FrameCodec, REPLICA_STREAM, ReplicaCodec};
pub use link::REPLICA_LINK;
pub use source::SourceTcp;

/// The protocol string nodes and clients announce over identify.
pub const IDENTIFY_PROTOCOL: &str = "/tigress/1.0.0";

/// How long one request may take on either protocol: the longest long-poll a node
/// honours plus a margin for the work around it.
pub const REQUEST_TIMEOUT: Duration =
    Duration::from_millis(tigress_protocol::rpc::MAX_WAIT_MS as u64 + 30_000);

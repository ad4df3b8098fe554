//! `tigress-client`: the client library and the `tigress` CLI of the tigress relay network.
//!
//! A [`Client`] connects to the node the user names over `/tigress/client/1` and runs the
//! sender's and the recipient's side of a share with the sessions of
//! [`tigress_protocol::session`], keeping per-share state (keys, sequence numbers, the
//! outbox) in a [`StateDir`]. By default each operation is an oblivious request
//! ([`oblivious`]): through a relay, sealed to a target among the mailbox's nodes, so no
//! single node learns both who asks and what about; [`Client::connect_direct`] sends every
//! request to the named node instead. It does not run a node and never depends on the node
//! crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tigress_client::ClientError> {
//! use tigress_client::{Client, StateDir};
//! use tigress_protocol::session::ShareOptions;
//!
//! let node: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
//! let sender = Client::connect(&node, StateDir::open("/tmp/alice")?).await?;
//! let shared = sender.share(b"car key", &ShareOptions::default(), None).await?;
//!
//! let recipient = Client::connect(&node, StateDir::open("/tmp/bob")?).await?;
//! let first = recipient.accept(&shared.url).await?;
//! assert_eq!(first, b"car key");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod connection;
pub mod error;
pub mod oblivious;
pub mod state;

pub use client::{Client, Received, Sent, Shared, unix_now, with_admission};
pub use connection::Connection;
pub use error::ClientError;
pub use state::{Party, ShareState, StateDir};
pub use tigress_protocol as protocol;

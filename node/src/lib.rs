//! `tigress-node`: the relay node of the tigress network.
//!
//! Not yet built: it will run the libp2p swarm (Kademlia routing, the client and replica
//! protocols), the sled storage actor and the HTTP gateway, applying every rule through
//! [`tigress_protocol::mailbox`].

#![warn(missing_docs)]

pub use tigress_protocol as protocol;

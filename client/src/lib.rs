//! `tigress-client`: the client library and the `tigress` CLI of the tigress relay network.
//!
//! Not yet built: it will connect to any node over `/tigress/client/1` and drive the
//! sender and recipient sessions of [`tigress_protocol::session`]. It never depends on the
//! node crate.

#![warn(missing_docs)]

pub use tigress_protocol as protocol;

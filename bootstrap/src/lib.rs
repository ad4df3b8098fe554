//! `tigress-bootstrap`: seed lists, the bootstrap role and local clusters.
//!
//! Not yet built: it will hold the in-process `Cluster` for tests and the
//! `tigress-cluster` binary (`up`, `bench`).

#![warn(missing_docs)]

pub use tigress_protocol as protocol;

//! Integration tests across the tigress crates: real node processes driven by the CLI and
//! the client library, and in-process clusters.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod abuse;
mod byzantine;
mod cluster;
mod curious;
mod faults;
mod gateway;
mod hostile;
mod nat;
mod ohttp;
mod single_node;
mod support;
mod takeover;
mod tls;

//! Every frame body a peer can send on the client and replica protocols, decoded as the
//! node and the client decode them: must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tigress_protocol::rpc::{
    ClientRequest, ClientResponse, ReplicaRequest, ReplicaResponse, decode_body,
};

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<ClientRequest>(data);
    let _ = decode_body::<ClientResponse>(data);
    let _ = decode_body::<ReplicaRequest>(data);
    let _ = decode_body::<ReplicaResponse>(data);
});

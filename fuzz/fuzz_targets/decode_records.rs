//! Every record decoder on arbitrary bytes: must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tigress_protocol::record::{
    Claim, ClaimCertificate, Delete, Genesis, Message, ReadRequest, Receipt, Record, Relinquish,
    Resolve,
};

fuzz_target!(|data: &[u8]| {
    let _ = Genesis::from_bytes(data);
    let _ = Claim::from_bytes(data);
    let _ = Receipt::from_bytes(data);
    let _ = ClaimCertificate::from_bytes(data);
    let _ = Resolve::from_bytes(data);
    let _ = Message::from_bytes(data);
    let _ = Delete::from_bytes(data);
    let _ = Relinquish::from_bytes(data);
    let _ = ReadRequest::from_bytes(data);
});

//! What the node's draft HTTP gateway parses from a client: the JSON bodies of a create
//! and an update, the headers it reads, the long-poll query and the mailbox path. Must
//! return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tigress_node::gateway::parse_untrusted(data);
});

//! What a node's Oblivious HTTP gateway and a client's key fetch parse from the network:
//! sealed requests (`message/ohttp-req`), the Binary HTTP inside them, and key
//! configuration lists (`application/ohttp-keys`). Must return, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ohttp::hpke::{Aead, Kdf, Kem};

fn server() -> &'static ohttp::Server {
    static SERVER: OnceLock<ohttp::Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let config = ohttp::KeyConfig::derive(
            1,
            Kem::X25519Sha256,
            vec![
                ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::Aes128Gcm),
                ohttp::SymmetricSuite::new(Kdf::HkdfSha256, Aead::ChaCha20Poly1305),
            ],
            &[7; 32],
        )
        .unwrap();
        ohttp::Server::new(config).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        // A sealed request from anyone.
        0 => {
            if let Ok((plain, _)) = server().decapsulate(rest) {
                let _ = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&plain[..]));
            }
        }
        // The Binary HTTP inside a request that opened.
        1 => {
            let _ = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(rest));
        }
        // A key configuration list from a node.
        _ => {
            let _ = ohttp::ClientRequest::from_encoded_config_list(rest);
        }
    }
});

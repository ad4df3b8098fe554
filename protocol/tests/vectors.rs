//! Checks `tests/vectors/v2.json`: it matches a fresh generation, has the documented
//! layout, and every entry verifies on its own. The entries of `v1.json` that do not
//! depend on the record format (key schedule, AEAD, HPKE, padding, raw signatures) still
//! verify.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../examples/vectors.rs"]
mod generator;

use serde_json::Value;
use tigress_protocol::crypto::hpke::HpkeContext;
use tigress_protocol::crypto::sign::SIGNATURE_DOMAIN;
use tigress_protocol::crypto::{AeadAlgorithm, PublicKey, Signature, SignatureKind, pad};
use tigress_protocol::{MailboxId, Secret};

const FILES: [&str; 2] = ["v1.json", "v2.json"];

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("vectors file");
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn file() -> Value {
    load("v2.json")
}

fn files() -> Vec<Value> {
    FILES.iter().map(|f| load(f)).collect()
}

fn bytes(v: &Value, field: &str) -> Vec<u8> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string"));
    assert_eq!(s, s.to_lowercase(), "{field} is lowercase hex");
    hex::decode(s).unwrap_or_else(|_| panic!("{field} is hex"))
}

fn section<'a>(doc: &'a Value, name: &str) -> &'a Vec<Value> {
    let entries = doc[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} is a list"));
    assert!(entries.len() >= 2, "{name} has at least 2 entries");
    entries
}

#[test]
fn the_file_is_what_the_generator_produces() {
    assert_eq!(
        file(),
        generator::generate(),
        "regenerate with the command in examples/vectors.rs"
    );
}

#[test]
fn key_schedule_entries_verify() {
    for doc in files() {
        for e in section(&doc, "key_schedule") {
            let id: MailboxId = e["mailbox_id"].as_str().unwrap().parse().unwrap();
            let secret = Secret::from_bytes(bytes(e, "secret").try_into().unwrap());
            let keys = secret.derive_keys(&id);
            assert_eq!(bytes(e, "address"), id.address().as_bytes());
            assert_eq!(bytes(e, "payload_key"), keys.payload_key.as_ref());
            assert_eq!(
                bytes(e, "claim_public_key"),
                keys.claim.public_key().as_bytes()
            );
            assert_eq!(bytes(e, "psk"), keys.psk.as_ref());
        }
    }
}

#[test]
fn aead_entries_open() {
    let mut names = std::collections::HashSet::new();
    for doc in files() {
        for e in section(&doc, "aead") {
            let name = e["algorithm"].as_str().unwrap();
            names.insert(name.to_owned());
            let alg = match name {
                "AES-256-GCM" => AeadAlgorithm::Aes256Gcm,
                "AES-128-GCM" => AeadAlgorithm::Aes128Gcm,
                other => panic!("unknown algorithm {other}"),
            };
            let mut key = [0u8; 32];
            let k = bytes(e, "key");
            key[..k.len()].copy_from_slice(&k);
            let nonce: [u8; 12] = bytes(e, "nonce").try_into().unwrap();
            let ct = bytes(e, "ciphertext");
            let pt = alg.open(&key, &nonce, &bytes(e, "aad"), &ct).unwrap();
            assert_eq!(pt, bytes(e, "plaintext"));
            assert_eq!(ct.len(), pt.len() + 16);
        }
    }
    assert_eq!(names.len(), 2, "both AEADs covered");
}

#[test]
fn hpke_entries_open() {
    for doc in files() {
        for e in section(&doc, "hpke") {
            assert_eq!(e["mode"], 1);
            let ids = (
                e["kem_id"].as_u64().unwrap(),
                e["kdf_id"].as_u64().unwrap(),
                e["aead_id"].as_u64().unwrap(),
            );
            let pair = hpke_pair(
                ids,
                &bytes(e, "recipient_private_key"),
                &bytes(e, "recipient_public_key"),
            );
            let (info, aad, psk, psk_id) = (
                bytes(e, "info"),
                bytes(e, "aad"),
                bytes(e, "psk"),
                bytes(e, "psk_id"),
            );
            let ctx = HpkeContext {
                info: &info,
                aad: &aad,
                psk: &psk,
                psk_id: &psk_id,
            };
            let pt = pair
                .open(&ctx, &bytes(e, "enc"), &bytes(e, "ciphertext"))
                .unwrap();
            assert_eq!(pt, bytes(e, "plaintext"));
        }
    }
}

/// Rebuilds a key pair from the vector's bytes through the crate's serde form.
fn hpke_pair(
    ids: (u64, u64, u64),
    private: &[u8],
    public: &[u8],
) -> tigress_protocol::crypto::HpkeKeyPair {
    use tigress_protocol::crypto::HpkeSuite;
    let suite = [
        HpkeSuite::X25519ChaCha20Poly1305,
        HpkeSuite::X25519Aes128Gcm,
        HpkeSuite::XWingChaCha20Poly1305,
    ]
    .into_iter()
    .find(|s| {
        let (k, d, a) = s.ids();
        (u64::from(k), u64::from(d), u64::from(a)) == ids
    })
    .expect("a known suite");
    #[derive(serde::Serialize)]
    struct Pair<'a> {
        suite: HpkeSuite,
        #[serde(with = "serde_bytes")]
        private: &'a [u8],
        public: PublicPart<'a>,
    }
    #[derive(serde::Serialize)]
    struct PublicPart<'a> {
        suite: HpkeSuite,
        #[serde(with = "serde_bytes")]
        bytes: &'a [u8],
    }
    let encoded = tigress_protocol::wire::encode_local(&Pair {
        suite,
        private,
        public: PublicPart {
            suite,
            bytes: public,
        },
    })
    .unwrap();
    tigress_protocol::wire::decode_local(&encoded).unwrap()
}

#[test]
fn signature_entries_verify_and_cover_every_kind() {
    let mut kinds = std::collections::HashSet::new();
    for doc in files() {
        for e in section(&doc, "signatures") {
            let kind_name = e["kind"].as_str().unwrap();
            let kind = SignatureKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind_name)
                .expect("a known kind");
            kinds.insert(kind_name.to_owned());
            let signed = bytes(e, "signed_bytes");
            let prefix = format!("{SIGNATURE_DOMAIN}{kind_name}\0");
            assert!(signed.starts_with(prefix.as_bytes()), "domain tag");
            let body = &signed[prefix.len()..];
            let key = PublicKey(bytes(e, "public_key").try_into().unwrap());
            let sig = Signature(bytes(e, "signature").try_into().unwrap());
            key.verify(kind, body, &sig).unwrap();
            // The raw Ed25519 check over exactly signed_bytes agrees.
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.0).unwrap();
            vk.verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&sig.0))
                .unwrap();
        }
    }
    for kind in SignatureKind::ALL {
        assert!(kinds.contains(kind.as_str()), "a {kind} signature");
    }
}

#[test]
fn padding_entries_match() {
    for doc in files() {
        for e in section(&doc, "padding") {
            let len = usize::try_from(e["length"].as_u64().unwrap()).unwrap();
            let padded = usize::try_from(e["padded_length"].as_u64().unwrap()).unwrap();
            assert_eq!(pad::padded_len(len), Some(padded));
            assert_eq!(pad::pad(&vec![0xaa; len]).unwrap().len(), padded);
        }
    }
}

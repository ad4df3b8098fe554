//! Generates the known-answer vectors of `protocol/tests/vectors/v2.json` (format version
//! 2) from fixed seeds:
//!
//! ```sh
//! cargo run -p tigress-protocol --example vectors > protocol/tests/vectors/v2.json
//! ```
//!
//! `v1.json` is kept as it was: its key schedule, AEAD, HPKE and padding entries still
//! hold; its records are format 1, which nodes no longer accept.
//!
//! Everything is derived from ChaCha20 generators with fixed seeds, so the output is the
//! same on every run; `tests/vectors.rs` checks the file against a fresh generation and
//! checks every entry on its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use serde_json::{Value, json};
use tigress_protocol::crypto::hpke::{HpkeContext, MODE_PSK};
use tigress_protocol::crypto::sign::signed_bytes;
use tigress_protocol::crypto::{
    AeadAlgorithm, HpkeKeyPair, HpkeSuite, PublicKey, Signature, SignatureKind, SigningKey, pad,
};
use tigress_protocol::mailbox::{ClaimTally, Limits, MailboxState, tally_claim};
use tigress_protocol::record::Record;
use tigress_protocol::session::{RecipientSession, SenderSession, ShareOptions};
use tigress_protocol::wire::encode;
use tigress_protocol::{MailboxId, Secret};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_schedule() -> Value {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let entries: Vec<Value> = (0..3)
        .map(|_| {
            let id = MailboxId::random(&mut rng);
            let secret = Secret::random(&mut rng);
            let keys = secret.derive_keys(&id);
            json!({
                "mailbox_id": id.to_string(),
                "secret": hex(secret.expose()),
                "address": hex(id.address().as_bytes()),
                "payload_key": hex(keys.payload_key.as_ref()),
                "claim_public_key": hex(keys.claim.public_key().as_bytes()),
                "psk": hex(keys.psk.as_ref()),
            })
        })
        .collect();
    Value::Array(entries)
}

fn aead() -> Value {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let mut out = Vec::new();
    for (alg, plaintext) in [
        (AeadAlgorithm::Aes256Gcm, b"tigress first payload".to_vec()),
        (AeadAlgorithm::Aes128Gcm, b"hotel room 1207".to_vec()),
        (
            AeadAlgorithm::Aes256Gcm,
            pad::pad(b"padded car key").unwrap(),
        ),
    ] {
        let mut key = [0u8; 32];
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut key);
        rng.fill_bytes(&mut nonce);
        let aad = b"tigress/v1/payload\0header".to_vec();
        let ct = alg.seal(&key, &nonce, &aad, &plaintext);
        let used_key = match alg {
            AeadAlgorithm::Aes256Gcm => &key[..],
            AeadAlgorithm::Aes128Gcm => &key[..16],
        };
        out.push(json!({
            "algorithm": alg.name(),
            "key": hex(used_key),
            "nonce": hex(&nonce),
            "aad": hex(&aad),
            "plaintext": hex(&plaintext),
            "ciphertext": hex(&ct),
        }));
    }
    Value::Array(out)
}

fn hpke() -> Value {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let mut out = Vec::new();
    for suite in [
        HpkeSuite::X25519ChaCha20Poly1305,
        HpkeSuite::X25519Aes128Gcm,
        HpkeSuite::XWingChaCha20Poly1305,
    ] {
        let pair = HpkeKeyPair::generate(suite, &mut rng);
        let mut psk = [0u8; 32];
        rng.fill_bytes(&mut psk);
        let info = b"tigress/v1/message\0vector-info".to_vec();
        let aad = b"tigress/v1/message\0vector-aad".to_vec();
        let psk_id = b"vector-psk-id".to_vec();
        let plaintext = b"provisioning step".to_vec();
        let ctx = HpkeContext {
            info: &info,
            aad: &aad,
            psk: &psk,
            psk_id: &psk_id,
        };
        let (enc, ct) =
            tigress_protocol::crypto::hpke::seal(pair.public_key(), &ctx, &plaintext, &mut rng)
                .unwrap();
        let (kem, kdf, aead) = suite.ids();
        out.push(json!({
            "kem_id": kem,
            "kdf_id": kdf,
            "aead_id": aead,
            "mode": MODE_PSK,
            "recipient_private_key": hex(pair.private_bytes()),
            "recipient_public_key": hex(&pair.public_key().bytes),
            "enc": hex(&enc),
            "info": hex(&info),
            "aad": hex(&aad),
            "psk": hex(&psk),
            "psk_id": hex(&psk_id),
            "plaintext": hex(&plaintext),
            "ciphertext": hex(&ct),
        }));
    }
    Value::Array(out)
}

fn sig_entry(kind: SignatureKind, key: &PublicKey, body: &[u8], sig: &Signature) -> Value {
    json!({
        "kind": kind.as_str(),
        "public_key": hex(key.as_bytes()),
        "signed_bytes": hex(&signed_bytes(kind, body)),
        "signature": hex(&sig.0),
    })
}

fn signatures() -> Value {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let limits = Limits::default();
    let now = 1_800_000_000;
    let replica = SigningKey::generate(&mut rng);
    let (mut sender, url) = SenderSession::create(
        tigress_protocol::session::ShareIdentity::random(&mut rng),
        "https://relay.example",
        vec![replica.public_key()],
        b"vector payload",
        &ShareOptions::default(),
        now,
        &mut rng,
    )
    .unwrap();
    let g = sender.genesis().clone();
    let mut state = MailboxState::create(g.clone(), &limits, now).unwrap();
    let (mut r, _) = RecipientSession::open(&url, g.clone(), &limits, now, &mut rng).unwrap();
    let claim = r.claim().clone();
    let (receipt, _) = state.grant(&claim, &replica, &limits, now).unwrap();
    let ClaimTally::Certified(cert) = tally_claim(&g, &claim, std::slice::from_ref(&receipt))
    else {
        unreachable!("one replica of one is a majority")
    };
    r.accept_certificate((*cert).clone(), &limits, now).unwrap();
    sender.add_certificate(&cert, &limits, now).unwrap();
    let msg = r.seal(b"vector message", [9; 16], now, &mut rng).unwrap();
    let resolve = sender.resolve(vec![claim.clone()], &limits, now).unwrap();
    let delete = sender.delete(now);
    let relinquish = r.relinquish(now);
    let read = r.read_request(now, tigress_protocol::record::ReadScope::View);
    let ack = tigress_protocol::record::Ack::sign(g.header().address, msg.digest(), &replica);
    let claim_key = g.header().claim_key;
    let departed = SigningKey::generate(&mut rng).public_key();
    let lineup =
        tigress_protocol::takeover::Lineup::new(&[replica.public_key(), departed], &[], 0).unwrap();
    let handover = tigress_protocol::takeover::Seat::new()
        .hand_over(&lineup, &replica, &departed, g.header().address, g.digest())
        .unwrap();
    let gateway_keys =
        tigress_protocol::oblivious::GatewayKeys::sign(vec![0, 32, 0x20], now, &replica).unwrap();
    Value::Array(vec![
        sig_entry(
            SignatureKind::Genesis,
            &g.header().sender,
            &encode(&g.body),
            &g.signature,
        ),
        sig_entry(
            SignatureKind::GenesisClaim,
            &claim_key,
            &encode(&g.body),
            &g.claim_signature,
        ),
        sig_entry(
            SignatureKind::Claim,
            &claim_key,
            &encode(&claim.body),
            &claim.claim_signature,
        ),
        sig_entry(
            SignatureKind::Claim,
            &claim.body.recipient,
            &encode(&claim.body),
            &claim.recipient_signature,
        ),
        sig_entry(
            SignatureKind::Receipt,
            &receipt.body.replica,
            &encode(&receipt.body),
            &receipt.signature,
        ),
        sig_entry(
            SignatureKind::Message,
            &msg.body.header.from,
            &encode(&msg.body),
            &msg.signature,
        ),
        sig_entry(
            SignatureKind::Delete,
            &delete.body.by,
            &encode(&delete.body),
            &delete.signature,
        ),
        sig_entry(
            SignatureKind::Relinquish,
            &relinquish.body.by,
            &encode(&relinquish.body),
            &relinquish.signature,
        ),
        sig_entry(
            SignatureKind::Resolve,
            &g.header().sender,
            &encode(&resolve.body),
            &resolve.signature,
        ),
        sig_entry(
            SignatureKind::Read,
            &read.body.by,
            &encode(&read.body),
            &read.signature,
        ),
        sig_entry(
            SignatureKind::Ack,
            &ack.body.replica,
            &encode(&ack.body),
            &ack.signature,
        ),
        sig_entry(
            SignatureKind::Handover,
            &handover.body.signer,
            &encode(&handover.body),
            &handover.signature,
        ),
        sig_entry(
            SignatureKind::GatewayKeys,
            &gateway_keys.body.node,
            &encode(&gateway_keys.body),
            &gateway_keys.signature,
        ),
    ])
}

fn padding() -> Value {
    let lengths = [
        0usize, 1, 255, 256, 1023, 1024, 4095, 4096, 16383, 16384, 65535,
    ];
    Value::Array(
        lengths
            .iter()
            .map(|&len| json!({"length": len, "padded_length": pad::padded_len(len).unwrap()}))
            .collect(),
    )
}

/// The whole vectors document.
pub(crate) fn generate() -> Value {
    json!({
        "description": "tigress v2 known-answer vectors; byte strings are lowercase hex",
        "key_schedule": key_schedule(),
        "aead": aead(),
        "hpke": hpke(),
        "signatures": signatures(),
        "padding": padding(),
    })
}

#[allow(dead_code)]
fn main() {
    println!("{}", serde_json::to_string_pretty(&generate()).unwrap());
}

//! Batch verification gives every signature the verdict strict single verification
//! gives it, on honest signatures and on the ones a signer crafts to tell the two apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use proptest::prelude::*;
use sha2::{Digest as _, Sha512};
use tigress_protocol::crypto::batch::{Item, verify_all, verify_each};
use tigress_protocol::crypto::sign::signed_bytes;
use tigress_protocol::crypto::{PublicKey, Signature, SignatureKind, SigningKey};

/// The secret scalar of the key with `seed` (RFC 8032: the clamped first half of
/// SHA-512 of the seed).
fn secret_scalar(seed: &[u8; 32]) -> Scalar {
    let h = Sha512::digest(seed);
    let mut a = [0u8; 32];
    a.copy_from_slice(&h[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    Scalar::from_bytes_mod_order(a)
}

fn challenge(r: &[u8; 32], key: &[u8; 32], message: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(key);
    h.update(message);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// A signature over `body` by the holder of `seed`, made by hand: nonce `r`, `R = [r]B +
/// r_torsion` and, when `key_torsion` is set, the key `[a]B + key_torsion` (a key whose
/// holder knows `a`). With both torsions zero this is an ordinary valid signature.
fn crafted(
    seed: &[u8; 32],
    nonce: u64,
    r_torsion: &EdwardsPoint,
    key_torsion: &EdwardsPoint,
    body: &[u8],
) -> (PublicKey, Signature) {
    let a = secret_scalar(seed);
    let key = (ED25519_BASEPOINT_POINT * a + key_torsion).compress().0;
    let r = Scalar::from(nonce.max(1)) * Scalar::from(0x9E37_79B9_7F4A_7C15_u64);
    let big_r = (ED25519_BASEPOINT_POINT * r + r_torsion).compress().0;
    let k = challenge(&big_r, &key, &signed_bytes(SignatureKind::Message, body));
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&big_r);
    sig[32..].copy_from_slice(s.as_bytes());
    (PublicKey(key), Signature(sig))
}

/// The order ℓ of the base point, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `s + ℓ`: the same scalar, non-canonically encoded (strict verification refuses it).
fn add_ell(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for (i, o) in out.iter_mut().enumerate() {
        let sum = u16::from(s[i]) + u16::from(ELL[i]) + carry;
        *o = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Valid,
    OtherBody,
    FlippedBit(u16),
    /// `R` with a torsion component of the given index into `EIGHT_TORSION` (1..8).
    TorsionR(usize),
    /// A mixed-order key (index into `EIGHT_TORSION`).
    MixedKey(usize),
    /// Both.
    MixedKeyTorsionR(usize, usize),
    NonCanonicalS,
    SmallOrderR(usize),
    SmallOrderKey(usize),
    /// `R` bytes that do not decode to a point.
    UndecodableR,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        4 => Just(Shape::Valid),
        1 => Just(Shape::OtherBody),
        1 => (0u16..512).prop_map(Shape::FlippedBit),
        3 => (1usize..8).prop_map(Shape::TorsionR),
        2 => (1usize..8).prop_map(Shape::MixedKey),
        1 => (1usize..8, 1usize..8).prop_map(|(a, b)| Shape::MixedKeyTorsionR(a, b)),
        1 => Just(Shape::NonCanonicalS),
        1 => (0usize..8).prop_map(Shape::SmallOrderR),
        1 => (0usize..8).prop_map(Shape::SmallOrderKey),
        1 => Just(Shape::UndecodableR),
    ]
}

fn torsion(i: usize) -> EdwardsPoint {
    EIGHT_TORSION[i % 8]
}

/// One signature of the given shape over `body`, and the body it claims to sign.
fn make(shape: Shape, seed: [u8; 32], nonce: u64, body: &[u8]) -> (PublicKey, Vec<u8>, Signature) {
    let zero = EdwardsPoint::default();
    let valid = || crafted(&seed, nonce, &zero, &zero, body);
    match shape {
        Shape::Valid => {
            let key = SigningKey::from_seed(&seed);
            (
                key.public_key(),
                body.to_vec(),
                key.sign(SignatureKind::Message, body),
            )
        }
        Shape::OtherBody => {
            let (k, s) = valid();
            let mut other = body.to_vec();
            other.push(1);
            (k, other, s)
        }
        Shape::FlippedBit(bit) => {
            let (k, mut s) = valid();
            s.0[usize::from(bit / 8) % 64] ^= 1 << (bit % 8);
            (k, body.to_vec(), s)
        }
        Shape::TorsionR(t) => {
            let (k, s) = crafted(&seed, nonce, &torsion(t), &zero, body);
            (k, body.to_vec(), s)
        }
        Shape::MixedKey(t) => {
            let (k, s) = crafted(&seed, nonce, &zero, &torsion(t), body);
            (k, body.to_vec(), s)
        }
        Shape::MixedKeyTorsionR(a, b) => {
            let (k, s) = crafted(&seed, nonce, &torsion(b), &torsion(a), body);
            (k, body.to_vec(), s)
        }
        Shape::NonCanonicalS => {
            let (k, mut s) = valid();
            let high = add_ell(&s.0[32..]);
            s.0[32..].copy_from_slice(&high);
            (k, body.to_vec(), s)
        }
        Shape::SmallOrderR(t) => {
            let (k, mut s) = valid();
            s.0[..32].copy_from_slice(&torsion(t).compress().0);
            (k, body.to_vec(), s)
        }
        Shape::SmallOrderKey(t) => {
            let (_, s) = valid();
            (PublicKey(torsion(t).compress().0), body.to_vec(), s)
        }
        Shape::UndecodableR => {
            let (k, mut s) = valid();
            // Find R bytes that are not the encoding of a point.
            let mut y = 2u8;
            while CompressedEdwardsY([y; 32]).decompress().is_some() {
                y = y.wrapping_add(1);
            }
            s.0[..32].copy_from_slice(&[y; 32]);
            (k, body.to_vec(), s)
        }
    }
}

fn strict(items: &[Item<'_>]) -> Vec<bool> {
    items
        .iter()
        .map(|i| i.key.verify(i.kind, i.body, i.signature).is_ok())
        .collect()
}

fn batched(items: &[Item<'_>]) -> Vec<bool> {
    verify_each(items).iter().map(Result::is_ok).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batch_and_strict_agree(
        shapes in prop::collection::vec((shape(), any::<[u8; 32]>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)), 1..12)
    ) {
        let made: Vec<(PublicKey, Vec<u8>, Signature)> = shapes
            .iter()
            .map(|(shape, seed, nonce, body)| make(*shape, *seed, *nonce, body))
            .collect();
        let items: Vec<Item<'_>> = made
            .iter()
            .map(|(key, body, signature)| Item { key, kind: SignatureKind::Message, body, signature })
            .collect();
        let want = strict(&items);
        prop_assert_eq!(batched(&items), want.clone());
        prop_assert_eq!(verify_all(&items).is_ok(), want.iter().all(|ok| *ok));
    }
}

#[test]
fn honest_signatures_pass_in_a_batch() {
    let keys: Vec<SigningKey> = (0..16u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let bodies: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 100]).collect();
    let made: Vec<(PublicKey, Signature)> = keys
        .iter()
        .zip(&bodies)
        .map(|(k, b)| (k.public_key(), k.sign(SignatureKind::Receipt, b)))
        .collect();
    let items: Vec<Item<'_>> = made
        .iter()
        .zip(&bodies)
        .map(|((key, signature), body)| Item {
            key,
            kind: SignatureKind::Receipt,
            body,
            signature,
        })
        .collect();
    assert!(verify_all(&items).is_ok());
    // Another domain: every signature fails.
    let wrong: Vec<Item<'_>> = items
        .iter()
        .map(|i| Item {
            kind: SignatureKind::Message,
            ..*i
        })
        .collect();
    assert!(batched(&wrong).iter().all(|ok| !ok));
}

/// The screening is what makes them agree: the library's batch alone accepts, next to an
/// honest signature, a signature whose `R` carries a point of order 2, which strict
/// verification refuses; the signer only has to try a few bodies.
#[test]
fn an_r_with_a_torsion_component_is_refused_though_the_raw_batch_takes_it() {
    let zero = EdwardsPoint::default();
    let order_two = EIGHT_TORSION[4];
    assert!((order_two + order_two) == zero);
    let honest = SigningKey::from_seed(&[7; 32]);
    let honest_body = b"an honest grant".to_vec();
    let honest_sig = honest.sign(SignatureKind::Message, &honest_body);
    let mut raw_accepted = 0;
    for n in 0..64u8 {
        let body = vec![n; 40];
        let (key, sig) = crafted(&[9; 32], u64::from(n) + 1, &order_two, &zero, &body);
        let items = [
            Item {
                key: &honest.public_key(),
                kind: SignatureKind::Message,
                body: &honest_body,
                signature: &honest_sig,
            },
            Item {
                key: &key,
                kind: SignatureKind::Message,
                body: &body,
                signature: &sig,
            },
        ];
        let strict_verdicts = strict(&items);
        assert_eq!(strict_verdicts, vec![true, false]);
        assert_eq!(batched(&items), strict_verdicts);
        let messages = [
            signed_bytes(SignatureKind::Message, &honest_body),
            signed_bytes(SignatureKind::Message, &body),
        ];
        let raw = ed25519_dalek::verify_batch(
            &[&messages[0], &messages[1]],
            &[
                ed25519_dalek::Signature::from_bytes(&honest_sig.0),
                ed25519_dalek::Signature::from_bytes(&sig.0),
            ],
            &[
                ed25519_dalek::VerifyingKey::from_bytes(&honest.public_key().0).unwrap(),
                ed25519_dalek::VerifyingKey::from_bytes(&key.0).unwrap(),
            ],
        );
        raw_accepted += usize::from(raw.is_ok());
    }
    // Each body gives an even random coefficient with probability one half.
    assert!(raw_accepted > 0, "the raw batch refused all 64");
}

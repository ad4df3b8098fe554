//! Several Ed25519 signatures checked together, with exactly the verdicts that
//! [`PublicKey::verify`] (strict, cofactorless, one at a time) gives each of them.
//!
//! `ed25519_dalek::verify_batch` checks one random linear combination of the
//! cofactorless equations `[s]B = R + [k]A`. On its own it accepts what strict
//! verification refuses: a non-canonical encoding of `R`, an `R` or key of small order,
//! and an `R` with a torsion component (`R + T` with `T` of order 2, 4 or 8), whose
//! contribution vanishes whenever its random coefficient is a multiple of `T`'s order.
//! Its coefficients are derived from the inputs, so a signer can grind a message until
//! they do, and two nodes, one batching and one not, would disagree on such a signature.
//!
//! So each signature is checked first for what strict verification requires and the
//! batch equation cannot see: `s` canonical; `R` decodes, is canonically encoded, is not
//! of small order and has no torsion component; the key decodes, is not weak and has no
//! torsion component. A signature failing the encoding or small-order checks is refused
//! (strict verification refuses it too); one whose key or `R` has a torsion component is
//! verified on its own, strictly. The rest form the batch: with every `R` and key in the
//! prime-order subgroup, the combination is zero only if every equation holds (up to
//! the 2⁻¹²⁸ chance of the random coefficients), which is what strict verification
//! checks. When the batch fails, each of its signatures is verified on its own, so the
//! verdicts say which ones are bad.

use std::collections::HashSet;
use std::sync::Mutex;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity as _, VartimeMultiscalarMul as _};

use super::sign::{PublicKey, Signature, SignatureError, SignatureKind, signed_bytes};

/// One signature to check: by `key`, of `kind`, over `body`.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The signer's key.
    pub key: &'a PublicKey,
    /// The signature's domain.
    pub kind: SignatureKind,
    /// The signed body.
    pub body: &'a [u8],
    /// The signature.
    pub signature: &'a Signature,
}

/// Below this many, signatures are verified one by one (a batch of one costs more).
const MIN_BATCH: usize = 2;

/// Keys already found free of torsion: a key signs many records, and the check costs
/// about half a verification. Bounded; cleared when full.
static TORSION_FREE_KEYS: Mutex<Option<HashSet<[u8; 32]>>> = Mutex::new(None);
const TORSION_FREE_KEYS_MAX: usize = 4096;

/// Whether `point` lies in the prime-order subgroup: `[ℓ]P = 0`, computed as
/// `[ℓ − 1]P + P` in variable time (the point is public).
fn torsion_free(point: &EdwardsPoint) -> bool {
    (EdwardsPoint::vartime_multiscalar_mul([-Scalar::ONE], [*point]) + point).is_identity()
}

fn key_torsion_free(key: &PublicKey, point: &EdwardsPoint) -> bool {
    let known = TORSION_FREE_KEYS
        .lock()
        .ok()
        .is_some_and(|k| k.as_ref().is_some_and(|k| k.contains(key.as_bytes())));
    if known {
        return true;
    }
    let free = torsion_free(point);
    if free && let Ok(mut keys) = TORSION_FREE_KEYS.lock() {
        let keys = keys.get_or_insert_with(HashSet::new);
        if keys.len() >= TORSION_FREE_KEYS_MAX {
            keys.clear();
        }
        keys.insert(*key.as_bytes());
    }
    free
}

/// What the pre-checks make of one signature.
enum Screened {
    /// Strict verification refuses it.
    Refused,
    /// A torsion component in the key or `R`: verify it on its own.
    Alone,
    /// Fit for the batch.
    Batch(ed25519_dalek::VerifyingKey),
}

fn screen(item: &Item<'_>) -> Screened {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(item.key.as_bytes()) else {
        return Screened::Refused;
    };
    if key.is_weak() {
        return Screened::Refused;
    }
    let (r, s) = item.signature.0.split_at(32);
    let (Ok(r), Ok(s)) = (<[u8; 32]>::try_from(r), <[u8; 32]>::try_from(s)) else {
        return Screened::Refused;
    };
    if Scalar::from_canonical_bytes(s).is_none().into() {
        return Screened::Refused;
    }
    let Some(r_point) = CompressedEdwardsY(r).decompress() else {
        return Screened::Refused;
    };
    if r_point.compress().0 != r || r_point.is_small_order() {
        return Screened::Refused;
    }
    let Some(key_point) = CompressedEdwardsY(*item.key.as_bytes()).decompress() else {
        return Screened::Refused;
    };
    if !key_torsion_free(item.key, &key_point) || !torsion_free(&r_point) {
        return Screened::Alone;
    }
    Screened::Batch(key)
}

/// Each signature's verdict, in order: what [`PublicKey::verify`] would say of it.
pub fn verify_each(items: &[Item<'_>]) -> Vec<Result<(), SignatureError>> {
    let one = |i: &Item<'_>| i.key.verify(i.kind, i.body, i.signature);
    #[cfg(feature = "danger-simulation")]
    if super::danger::is_active() {
        return items.iter().map(one).collect();
    }
    if items.len() < MIN_BATCH {
        return items.iter().map(one).collect();
    }
    let mut verdicts: Vec<Option<Result<(), SignatureError>>> = vec![None; items.len()];
    let mut batch: Vec<(usize, ed25519_dalek::VerifyingKey)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let verdict = match screen(item) {
            Screened::Refused => Some(Err(SignatureError)),
            Screened::Alone => Some(one(item)),
            Screened::Batch(key) => {
                batch.push((i, key));
                None
            }
        };
        if let Some(slot) = verdicts.get_mut(i) {
            *slot = verdict;
        }
    }
    let passed = batch.len() >= MIN_BATCH && {
        let messages: Vec<Vec<u8>> = batch
            .iter()
            .filter_map(|(i, _)| items.get(*i))
            .map(|it| signed_bytes(it.kind, it.body))
            .collect();
        let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let signatures: Vec<ed25519_dalek::Signature> = batch
            .iter()
            .filter_map(|(i, _)| items.get(*i))
            .map(|it| ed25519_dalek::Signature::from_bytes(&it.signature.0))
            .collect();
        let keys: Vec<ed25519_dalek::VerifyingKey> = batch.iter().map(|(_, k)| *k).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    for (i, _) in &batch {
        if let (Some(slot), Some(item)) = (verdicts.get_mut(*i), items.get(*i)) {
            *slot = Some(if passed { Ok(()) } else { one(item) });
        }
    }
    verdicts
        .into_iter()
        .map(|v| v.unwrap_or(Err(SignatureError)))
        .collect()
}

/// Whether every signature verifies (what verifying each strictly would say).
pub fn verify_all(items: &[Item<'_>]) -> Result<(), SignatureError> {
    verify_each(items).into_iter().collect()
}

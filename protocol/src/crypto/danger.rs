//! Simulated signatures for the deterministic simulator: never for a node or a client.
//!
//! While a [`SimulatedSignatures`] guard lives, signing and verifying *on that thread*
//! use a keyed hash instead of Ed25519: a signature is SHA-256 over the signer's secret
//! seed and the signed bytes, and verification looks the seed up from the public key in a
//! table of keys that signed on this thread. A key that never signed verifies nothing, so
//! a simulated node can sign only as itself, as with Ed25519; it is just a hundred times
//! cheaper, which lets the simulator run tens of thousands of claims in seconds. Other
//! threads, and this one once the guard is dropped, use Ed25519.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::marker::PhantomData;

use super::sign::{PublicKey, Signature, SignatureError, SignatureKind, SigningKey, signed_bytes};

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static SEEDS: RefCell<BTreeMap<[u8; 32], [u8; 32]>> = const { RefCell::new(BTreeMap::new()) };
}

/// Simulated signatures on this thread for as long as the guard lives.
#[derive(Debug)]
pub struct SimulatedSignatures {
    // The guard is tied to its thread.
    _thread: PhantomData<*const ()>,
}

impl SimulatedSignatures {
    /// Switches this thread to simulated signatures.
    pub fn enable() -> Self {
        ACTIVE.with(|a| a.set(true));
        Self {
            _thread: PhantomData,
        }
    }
}

impl Drop for SimulatedSignatures {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(false));
        SEEDS.with(|s| s.borrow_mut().clear());
    }
}

fn mac(seed: &[u8; 32], kind: SignatureKind, body: &[u8]) -> [u8; 64] {
    let first = super::sha256(&[
        b"tigress/v1/simulated-signature",
        seed,
        &signed_bytes(kind, body),
    ]);
    let second = super::sha256(&[&first]);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&first);
    out[32..].copy_from_slice(&second);
    out
}

/// The simulated signature, when simulation is on for this thread.
/// Whether simulated signatures are on for this thread.
pub(super) fn is_active() -> bool {
    ACTIVE.with(Cell::get)
}

pub(super) fn sign(key: &SigningKey, kind: SignatureKind, body: &[u8]) -> Option<Signature> {
    if !ACTIVE.with(Cell::get) {
        return None;
    }
    let seed = key.to_seed();
    SEEDS.with(|s| s.borrow_mut().insert(key.public_key().0, *seed));
    Some(Signature(mac(&seed, kind, body)))
}

/// The simulated verification, when simulation is on for this thread.
pub(super) fn verify(
    key: &PublicKey,
    kind: SignatureKind,
    body: &[u8],
    signature: &Signature,
) -> Option<Result<(), SignatureError>> {
    if !ACTIVE.with(Cell::get) {
        return None;
    }
    let seed = SEEDS.with(|s| s.borrow().get(&key.0).copied());
    Some(match seed {
        Some(seed) if mac(&seed, kind, body) == signature.0 => Ok(()),
        _ => Err(SignatureError),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_signer_can_make_a_simulated_signature() {
        let a = SigningKey::from_seed(&[1; 32]);
        let b = SigningKey::from_seed(&[2; 32]);
        let real = a.sign(SignatureKind::Message, b"x");
        {
            let _sim = SimulatedSignatures::enable();
            let sig = a.sign(SignatureKind::Message, b"x");
            assert_ne!(sig, real);
            assert!(
                a.public_key()
                    .verify(SignatureKind::Message, b"x", &sig)
                    .is_ok()
            );
            assert!(
                a.public_key()
                    .verify(SignatureKind::Message, b"y", &sig)
                    .is_err()
            );
            assert!(
                a.public_key()
                    .verify(SignatureKind::Delete, b"x", &sig)
                    .is_err()
            );
            // b never signed: nothing verifies under b, not even a's signature.
            assert!(
                b.public_key()
                    .verify(SignatureKind::Message, b"x", &sig)
                    .is_err()
            );
            // A real signature is not a simulated one.
            assert!(
                a.public_key()
                    .verify(SignatureKind::Message, b"x", &real)
                    .is_err()
            );
        }
        assert!(
            a.public_key()
                .verify(SignatureKind::Message, b"x", &real)
                .is_ok()
        );
    }
}

//! The admission cost of a new mailbox: a proof of work bound to what is created. A node
//! publishes how many leading zero bits it asks for (`NodeInfo::admission_bits`, 0 while
//! it is not under pressure); the client finds a nonce such that
//! `SHA-256("tigress/v1/admission" ‖ digest ‖ nonce)` starts with that many zero bits,
//! where `digest` is the genesis digest (native creates) or the request body's SHA-256
//! (draft creates through the HTTP gateway). The proof travels in the create request, so
//! it is worth nothing for another mailbox.
//!
//! Each bit doubles the expected work: [`FIRST_LEVEL`] is about 50 ms of one core of a
//! 2020s server (60 ms measured on the reference two-core machine, `cargo run --release
//! -p tigress-protocol --example admission_cost`), [`MAX_BITS`] the most a node may ask
//! (about half a minute).

use crate::crypto::sha256;

const DOMAIN: &[u8] = b"tigress/v1/admission";

/// The first level a node under pressure asks for.
pub const FIRST_LEVEL: u8 = 19;

/// The most bits a node may ask (a client refuses to work for more).
pub const MAX_BITS: u8 = 28;

/// The number of leading zero bits of the proof hash of `nonce` for `digest`.
pub fn work(digest: &[u8; 32], nonce: u64) -> u32 {
    let h = sha256(&[DOMAIN, digest, &nonce.to_be_bytes()]);
    let mut bits = 0;
    for byte in h {
        if byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Whether `nonce` proves `bits` of work for `digest` (0 bits: always).
pub fn verify(digest: &[u8; 32], bits: u8, nonce: u64) -> bool {
    bits == 0 || work(digest, nonce) >= u32::from(bits)
}

/// The first nonce, counting from `start`, that proves `bits` of work for `digest`.
/// Expected 2^bits hashes; `None` above [`MAX_BITS`].
pub fn solve_from(digest: &[u8; 32], bits: u8, start: u64) -> Option<u64> {
    if bits > MAX_BITS {
        return None;
    }
    let mut nonce = start;
    while !verify(digest, bits, nonce) {
        nonce = nonce.wrapping_add(1);
    }
    Some(nonce)
}

/// Whether a client that worked for `done` bits (0: none) works again for the `asked` a
/// node's refusal names: only if the demand rose (a node that asks the same again is not
/// satisfied by more of the same) and not past [`MAX_BITS`].
pub fn work_again(done: u8, asked: u8) -> bool {
    asked > done && asked <= MAX_BITS
}

/// [`solve_from`] counting from 0.
pub fn solve(digest: &[u8; 32], bits: u8) -> Option<u64> {
    solve_from(digest, bits, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_works_again_only_for_a_higher_demand_it_can_meet() {
        assert!(work_again(0, FIRST_LEVEL));
        assert!(work_again(FIRST_LEVEL, FIRST_LEVEL + 1));
        assert!(!work_again(FIRST_LEVEL, FIRST_LEVEL));
        assert!(!work_again(FIRST_LEVEL + 1, FIRST_LEVEL));
        assert!(work_again(0, MAX_BITS));
        assert!(!work_again(0, MAX_BITS + 1));
    }

    #[test]
    fn a_proof_holds_for_its_digest_only() {
        let digest = sha256(&[b"genesis"]);
        let nonce = solve(&digest, 12).unwrap();
        assert!(verify(&digest, 12, nonce));
        assert!(work(&digest, nonce) >= 12);
        // Another mailbox: the same nonce proves nothing (fixed digests: deterministic).
        let other = sha256(&[b"another genesis"]);
        assert!(!verify(&other, 12, nonce));
        // No work asked: anything passes; too much asked: no solving.
        assert!(verify(&digest, 0, 0));
        assert_eq!(solve(&digest, MAX_BITS + 1), None);
    }

    #[test]
    fn work_counts_leading_zero_bits() {
        let digest = [7u8; 32];
        for nonce in 0..2000u64 {
            let h = sha256(&[DOMAIN, &digest, &nonce.to_be_bytes()]);
            let w = work(&digest, nonce);
            let full = usize::try_from(w / 8).unwrap();
            assert!(h[..full].iter().all(|b| *b == 0));
            if full < 32 {
                assert_eq!(h[full].leading_zeros(), w % 8);
            }
        }
    }
}

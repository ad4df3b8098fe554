//! Property tests for every wire type: round trip, truncation, bit flips, arbitrary bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::fmt::Debug;

use common::{Fixture, NOW};
use proptest::prelude::*;
use tigress_protocol::crypto::HpkeSuite;
use tigress_protocol::record::{
    Claim, ClaimCertificate, Delete, Genesis, Message, Policy, ReadRequest, Receipt, Record,
    Relinquish, Resolve,
};
use tigress_protocol::session::ShareOptions;

/// One instance of every record type, built through the public API.
struct Samples {
    genesis: Genesis,
    claim: Claim,
    receipt: Receipt,
    certificate: ClaimCertificate,
    resolve: Resolve,
    message: Message,
    delete: Delete,
    relinquish: Relinquish,
    read: ReadRequest,
}

fn samples(payload: &[u8], message: &[u8], suite: HpkeSuite, max_recipients: u8) -> Samples {
    let options = ShareOptions {
        hpke: suite,
        policy: Policy {
            max_recipients,
            ..Policy::default()
        },
        ..ShareOptions::default()
    };
    let mut f = Fixture::with_payload(3, options, payload);
    let mut r = f.recipient();
    let certificate = f.certify(&mut r);
    let msg = r.seal(message, [5; 16], NOW, &mut f.rng).unwrap();
    let resolve = f
        .sender
        .resolve(vec![r.claim().clone()], &f.limits, NOW)
        .unwrap();
    Samples {
        genesis: f.sender.genesis().clone(),
        claim: r.claim().clone(),
        receipt: certificate.receipts[0].clone(),
        certificate,
        resolve,
        message: msg,
        delete: f.sender.delete(NOW),
        relinquish: r.relinquish(NOW),
        read: r.read_request(NOW, tigress_protocol::record::ReadScope::View),
    }
}

fn check_round_trip_and_corruption<R: Record + PartialEq + Debug>(
    record: &R,
    cut: usize,
    flip_at: usize,
    bit: u8,
) -> Result<(), TestCaseError> {
    let bytes = record.to_bytes();
    let back = R::from_bytes(&bytes).expect("round trip");
    prop_assert_eq!(&back, record);
    prop_assert_eq!(
        back.to_bytes(),
        bytes.clone(),
        "canonical: re-encoding is identical"
    );
    // Any strict prefix fails to decode.
    let cut = cut % bytes.len();
    prop_assert!(R::from_bytes(&bytes[..cut]).is_err());
    // Trailing garbage fails to decode.
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert!(R::from_bytes(&longer).is_err());
    // A bit flip either fails to decode or decodes to a different record.
    let mut flipped = bytes.clone();
    let at = flip_at % flipped.len();
    flipped[at] ^= 1 << (bit % 8);
    if let Ok(other) = R::from_bytes(&flipped) {
        prop_assert_ne!(&other, record);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_record_round_trips_and_resists_corruption(
        payload in proptest::collection::vec(any::<u8>(), 0..3000),
        message in proptest::collection::vec(any::<u8>(), 0..600),
        suite in prop_oneof![
            Just(HpkeSuite::X25519ChaCha20Poly1305),
            Just(HpkeSuite::X25519Aes128Gcm),
            Just(HpkeSuite::XWingChaCha20Poly1305),
        ],
        max_recipients in 1u8..=16,
        cut in any::<usize>(),
        flip_at in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let s = samples(&payload, &message, suite, max_recipients);
        check_round_trip_and_corruption(&s.genesis, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.claim, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.receipt, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.certificate, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.resolve, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.message, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.delete, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.relinquish, cut, flip_at, bit)?;
        check_round_trip_and_corruption(&s.read, cut, flip_at, bit)?;
    }

    #[test]
    fn no_input_makes_a_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Genesis::from_bytes(&bytes);
        let _ = Claim::from_bytes(&bytes);
        let _ = Receipt::from_bytes(&bytes);
        let _ = ClaimCertificate::from_bytes(&bytes);
        let _ = Resolve::from_bytes(&bytes);
        let _ = Message::from_bytes(&bytes);
        let _ = Delete::from_bytes(&bytes);
        let _ = Relinquish::from_bytes(&bytes);
        let _ = ReadRequest::from_bytes(&bytes);
    }

    #[test]
    fn version_one_prefixed_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&tail);
        let _ = Genesis::from_bytes(&bytes);
        let _ = Message::from_bytes(&bytes);
        let _ = ClaimCertificate::from_bytes(&bytes);
        let _ = Resolve::from_bytes(&bytes);
    }
}

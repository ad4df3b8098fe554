//! Every validation rule of the mailbox state machine, with its negative cases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{Fixture, NOW};
use tigress_protocol::crypto::{HpkeKeyPair, HpkeSuite, SigningKey};
use tigress_protocol::mailbox::{ClaimTally, Limits, MailboxState, Outcome, tally_claim};
use tigress_protocol::record::{
    Claim, ClaimBody, ClaimCertificate, Delete, Genesis, Policy, ReadRequest, ReadScope, Record,
    Relinquish, Rights,
};
use tigress_protocol::session::{RecipientSession, ShareOptions};
use tigress_protocol::wire::{BoundedVec, DecodeError, FORMAT_VERSION};
use tigress_protocol::{Error, ErrorCode, ShareUrl};

fn options_with(policy: Policy) -> ShareOptions {
    ShareOptions {
        policy,
        ..ShareOptions::default()
    }
}

/// A genesis like `base` but re-signed by a fresh sender key and a fresh claim key after
/// `edit`.
fn resigned(base: &Genesis, edit: impl FnOnce(&mut Genesis)) -> Genesis {
    let key = SigningKey::from_seed(&[77; 32]);
    let claim = SigningKey::from_seed(&[78; 32]);
    let mut g = base.clone();
    g.body.header.sender = key.public_key();
    g.body.header.claim_key = claim.public_key();
    edit(&mut g);
    Genesis::sign(g.body, &key, &claim)
}

#[test]
fn genesis_once_per_address_same_bytes_idempotent() {
    let f = Fixture::new(1, ShareOptions::default());
    let state = &f.states[0];
    assert_eq!(
        state.offer_genesis(f.sender.genesis(), NOW),
        Ok(Outcome::Duplicate)
    );
    let other = resigned(f.sender.genesis(), |_| {});
    assert_eq!(
        state.offer_genesis(&other, NOW),
        Err(Error::GenesisConflict)
    );
}

#[test]
fn forged_genesis_signature_is_refused() {
    let f = Fixture::new(1, ShareOptions::default());
    let mut g = f.sender.genesis().clone();
    g.body.header.expires_at -= 1;
    let err = MailboxState::create(g, &f.limits, NOW).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthorized);
    let mut g = f.sender.genesis().clone();
    g.signature.0[5] ^= 1;
    assert!(MailboxState::create(g, &f.limits, NOW).is_err());
}

#[test]
fn expiry_is_required_capped_and_enforced() {
    let f = Fixture::new(1, ShareOptions::default());
    let base = f.sender.genesis();
    let too_far = resigned(base, |g| g.body.header.expires_at = NOW + 8 * 24 * 3600);
    assert!(matches!(
        MailboxState::create(too_far, &f.limits, NOW),
        Err(Error::ExpiryTooFar { .. })
    ));
    let before = resigned(base, |g| {
        g.body.header.expires_at = g.body.header.created_at
    });
    assert_eq!(
        MailboxState::create(before, &f.limits, NOW),
        Err(Error::ExpiryBeforeCreation)
    );
    let future = resigned(base, |g| {
        g.body.header.created_at = NOW + 3600;
        g.body.header.expires_at = NOW + 7200;
    });
    assert_eq!(
        MailboxState::create(future, &f.limits, NOW),
        Err(Error::FromTheFuture)
    );
    let expires = base.header().expires_at;
    assert_eq!(
        MailboxState::create(base.clone(), &f.limits, expires),
        Err(Error::Expired)
    );
}

#[test]
fn everything_is_refused_after_expiry() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    let expires = f.sender.genesis().header().expires_at;
    let msg = r.seal(b"late", [0; 16], NOW, &mut f.rng).unwrap();
    let before = f.states[0].clone();
    let state = &mut f.states[0];
    assert_eq!(
        state.apply_message(&msg, &f.limits, expires),
        Err(Error::Expired)
    );
    assert_eq!(
        state.authorize_read(
            &r.read_request(expires, ReadScope::View),
            ReadScope::View,
            &f.limits,
            expires
        ),
        Err(Error::Expired)
    );
    assert_eq!(
        state.delete(&f.sender.delete(expires), &f.limits, expires),
        Err(Error::Expired)
    );
    assert_eq!(*state, before);
    assert!(state.is_sweepable(expires));
    assert!(!state.is_sweepable(expires - 1));
}

#[test]
fn claim_without_the_invitation_is_refused() {
    let mut f = Fixture::new(3, ShareOptions::default());
    let impostor_claim_key = SigningKey::from_seed(&[1; 32]);
    let device = SigningKey::from_seed(&[2; 32]);
    let hpke = HpkeKeyPair::generate(HpkeSuite::default(), &mut f.rng);
    let claim = Claim::sign(
        ClaimBody {
            version: FORMAT_VERSION,
            address: f.sender.address(),
            genesis: f.sender.genesis().digest(),
            recipient: device.public_key(),
            recipient_hpke: hpke.public_key().clone(),
            claimed_at: NOW,
        },
        &impostor_claim_key,
        &device,
    );
    let before = f.states[0].clone();
    assert_eq!(
        f.states[0]
            .grant(&claim, &f.replicas[0], &f.limits, NOW)
            .unwrap_err(),
        Error::NotInvited
    );
    assert_eq!(f.states[0], before);
}

#[test]
fn claim_with_a_forged_device_signature_is_refused() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let r = f.recipient();
    let mut claim = r.claim().clone();
    claim.recipient_signature.0[0] ^= 1;
    assert_eq!(
        f.states[0]
            .grant(&claim, &f.replicas[0], &f.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Unauthorized
    );
}

#[test]
fn a_recipient_without_the_secret_cannot_open_the_share() {
    let f = Fixture::new(1, ShareOptions::default());
    let mut wrong = f.url.expose_url().to_string();
    let hash = wrong.find('#').unwrap();
    wrong.truncate(hash + 1);
    wrong.push_str("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
    let url = ShareUrl::parse(&wrong).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
    let err = RecipientSession::open(&url, f.sender.genesis().clone(), &f.limits, NOW, &mut rng)
        .unwrap_err();
    assert_eq!(err, Error::NotInvited);
}

use rand_core::SeedableRng;

#[test]
fn same_claimant_same_receipt_and_slot_limit() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let r1 = f.recipient();
    let a = f.grant_on(&r1, &[0]);
    let b = f.grant_on(&r1, &[0]);
    assert_eq!(a, b);
    let r2 = f.recipient();
    let before = f.states[0].clone();
    assert_eq!(
        f.states[0]
            .grant(r2.claim(), &f.replicas[0], &f.limits, NOW)
            .unwrap_err(),
        Error::AlreadyClaimed
    );
    assert_eq!(f.states[0], before);
}

#[test]
fn claim_n_plus_one_is_refused_with_max_three() {
    let policy = Policy {
        max_recipients: 3,
        ..Policy::default()
    };
    let mut f = Fixture::new(3, options_with(policy));
    for _ in 0..3 {
        let mut r = f.recipient();
        f.certify(&mut r);
    }
    let extra = f.recipient();
    for i in 0..3 {
        assert_eq!(
            f.states[i]
                .grant(extra.claim(), &f.replicas[i], &f.limits, NOW)
                .unwrap_err(),
            Error::AlreadyClaimed
        );
    }
    assert_eq!(f.states[0].recipients().len(), 3);
}

#[test]
fn only_replica_set_members_grant() {
    let mut f = Fixture::new(3, ShareOptions::default());
    let r = f.recipient();
    let outsider = SigningKey::from_seed(&[5; 32]);
    assert_eq!(
        f.states[0]
            .grant(r.claim(), &outsider, &f.limits, NOW)
            .unwrap_err(),
        Error::NotAReplica
    );
}

#[test]
fn certificate_needs_the_claim_quorum_of_members() {
    let mut f = Fixture::new(5, ShareOptions::default());
    let r = f.recipient();
    let receipts = f.grant_on(&r, &[0, 1]);
    assert_eq!(
        tally_claim(f.sender.genesis(), r.claim(), &receipts),
        ClaimTally::Pending
    );
    let minority = ClaimCertificate {
        claim: r.claim().clone(),
        receipts: BoundedVec::new(receipts.clone()).unwrap(),
    };
    assert_eq!(
        f.states[4].accept_certificate(&minority, &f.limits, NOW),
        Err(Error::MinorityCertificate { have: 2, need: 4 })
    );
    // The same receipt twice does not count twice.
    let doubled = ClaimCertificate {
        claim: r.claim().clone(),
        receipts: BoundedVec::new(vec![
            receipts[0].clone(),
            receipts[0].clone(),
            receipts[1].clone(),
        ])
        .unwrap(),
    };
    assert!(matches!(
        f.states[4].accept_certificate(&doubled, &f.limits, NOW),
        Err(Error::MinorityCertificate { have: 2, .. })
    ));
    // A receipt from a node outside the replica set.
    let outsider = SigningKey::from_seed(&[6; 32]);
    let mut forged = receipts[0].clone();
    forged.body.replica = outsider.public_key();
    let forged = tigress_protocol::record::Receipt::sign(forged.body, &outsider);
    let with_outsider = ClaimCertificate {
        claim: r.claim().clone(),
        receipts: BoundedVec::new(vec![receipts[0].clone(), receipts[1].clone(), forged]).unwrap(),
    };
    assert_eq!(
        f.states[4].accept_certificate(&with_outsider, &f.limits, NOW),
        Err(Error::NotAReplica)
    );
    // A receipt with a forged signature.
    let mut bad = f.grant_on(&r, &[2]).remove(0);
    bad.signature.0[1] ^= 1;
    let with_bad = ClaimCertificate {
        claim: r.claim().clone(),
        receipts: BoundedVec::new(vec![receipts[0].clone(), receipts[1].clone(), bad]).unwrap(),
    };
    assert_eq!(
        f.states[4]
            .accept_certificate(&with_bad, &f.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Unauthorized
    );
    assert!(f.states[4].recipients().is_empty());
}

#[test]
fn messages_only_from_parties_to_the_other_party() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    // A claimant that never got a certificate is not a party.
    let mut stranger = f.recipient();
    let err = stranger.seal(b"x", [0; 16], NOW, &mut f.rng).unwrap_err();
    assert_eq!(err, Error::NotAParty);
    // Even a hand-made message from a non-party is refused by the replica.
    let mut msg = r.seal(b"hello", [1; 16], NOW, &mut f.rng).unwrap();
    let outsider = SigningKey::from_seed(&[8; 32]);
    msg.body.header.from = outsider.public_key();
    let forged = tigress_protocol::record::Message::sign(msg.body.clone(), &outsider);
    assert_eq!(
        f.states[0].apply_message(&forged, &f.limits, NOW),
        Err(Error::NotAParty)
    );
    // Addressed to someone other than the sender.
    let mut wrong_to = r.seal(b"hello", [1; 16], NOW, &mut f.rng).unwrap();
    wrong_to.body.header.to = outsider.public_key();
    assert_eq!(
        f.states[0]
            .apply_message(&wrong_to, &f.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Unauthorized
    );
}

#[test]
fn forged_and_wrong_key_message_signatures_are_refused() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    let mut msg = r.seal(b"hello", [1; 16], NOW, &mut f.rng).unwrap();
    msg.signature.0[10] ^= 0x40;
    let before = f.states[0].clone();
    assert!(matches!(
        f.states[0].apply_message(&msg, &f.limits, NOW),
        Err(Error::BadSignature(_))
    ));
    // Signed by the sender's... no: by another key, claiming to be the recipient.
    let mut msg = r.seal(b"hello", [1; 16], NOW, &mut f.rng).unwrap();
    msg = tigress_protocol::record::Message::sign(msg.body, &SigningKey::from_seed(&[9; 32]));
    assert!(matches!(
        f.states[0].apply_message(&msg, &f.limits, NOW),
        Err(Error::BadSignature(_))
    ));
    assert_eq!(f.states[0], before);
}

#[test]
fn sequence_numbers_duplicates_replays_and_gaps() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    // A copy of the session from before any send: it signs a different message under
    // sequence number 1, as anyone holding the device key could.
    let mut twin = r.clone();
    let m1 = r.seal(b"one", [1; 16], NOW, &mut f.rng).unwrap();
    let m2 = r.seal(b"two", [2; 16], NOW, &mut f.rng).unwrap();
    let m3 = r.seal(b"three", [3; 16], NOW, &mut f.rng).unwrap();
    let state = &mut f.states[0];
    // A replica that missed 1 still takes 2 (anti-entropy fills 1 later).
    assert_eq!(
        state.apply_message(&m2, &f.limits, NOW),
        Ok(Outcome::Applied)
    );
    assert_eq!(
        state.apply_message(&m1, &f.limits, NOW),
        Ok(Outcome::Applied)
    );
    assert_eq!(
        state.apply_message(&m2, &f.limits, NOW),
        Ok(Outcome::Duplicate)
    );
    // Same number, different content: a replay.
    let other_one = twin.seal(b"other one", [7; 16], NOW, &mut f.rng).unwrap();
    assert_eq!(other_one.header().seq, 1);
    let before = state.clone();
    assert_eq!(
        state.apply_message(&other_one, &f.limits, NOW),
        Err(Error::Replay { seq: 1 })
    );
    assert_eq!(*state, before);
    // Sequence zero never validates.
    let mut zero = m3.clone();
    zero.body.header.seq = 0;
    assert_eq!(
        state.apply_message(&zero, &f.limits, NOW),
        Err(Error::SequenceZero)
    );
    // The receiving session delivers strictly in order, holding back across a gap.
    assert!(f.sender.receive(&m3).unwrap().is_empty());
    assert_eq!(f.sender.held_back(), 1);
    assert!(f.sender.receive(&m2).unwrap().is_empty());
    let got = f.sender.receive(&m1).unwrap();
    let texts: Vec<&[u8]> = got.iter().map(|d| d.plaintext.as_slice()).collect();
    assert_eq!(texts, vec![&b"one"[..], b"two", b"three"]);
    assert_eq!(f.sender.held_back(), 0);
    assert!(
        f.sender.receive(&m2).unwrap().is_empty(),
        "already delivered"
    );
}

#[test]
fn write_without_the_w_right_is_refused() {
    let policy = Policy {
        recipient_rights: Rights::DRAFT_DEFAULT,
        ..Policy::default()
    };
    let mut f = Fixture::new(1, options_with(policy));
    let mut r = f.recipient();
    f.certify(&mut r);
    let msg = r.seal(b"no", [1; 16], NOW, &mut f.rng).unwrap();
    assert_eq!(
        f.states[0].apply_message(&msg, &f.limits, NOW),
        Err(Error::RightDenied {
            role: tigress_protocol::error::Role::Recipient,
            right: 'W'
        })
    );
    // The sender kept W.
    let to = r.public_key();
    let msg = f
        .sender
        .seal(&to, b"yes", [2; 16], NOW, &mut f.rng)
        .unwrap();
    assert_eq!(
        f.states[0].apply_message(&msg, &f.limits, NOW),
        Ok(Outcome::Applied)
    );
}

#[test]
fn delete_rights_and_tombstone() {
    let policy = Policy {
        recipient_rights: "RW".parse().unwrap(),
        ..Policy::default()
    };
    let mut f = Fixture::new(1, options_with(policy));
    let mut r = f.recipient();
    f.certify(&mut r);
    assert_eq!(
        f.states[0]
            .delete(&r.delete(NOW), &f.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Unauthorized
    );
    let stranger = Delete::sign(
        f.sender.address(),
        f.sender.genesis().digest(),
        &SigningKey::from_seed(&[3; 32]),
        NOW,
    );
    assert_eq!(
        f.states[0].delete(&stranger, &f.limits, NOW),
        Err(Error::NotAParty)
    );
    let del = f.sender.delete(NOW);
    assert_eq!(
        f.states[0].delete(&del, &f.limits, NOW),
        Ok(Outcome::Applied)
    );
    assert_eq!(
        f.states[0].delete(&del, &f.limits, NOW),
        Ok(Outcome::Duplicate)
    );
    // The tombstone refuses everything, a replayed genesis included.
    assert_eq!(
        f.states[0].offer_genesis(f.sender.genesis(), NOW),
        Err(Error::Deleted)
    );
    let msg = r.seal(b"after", [1; 16], NOW, &mut f.rng).unwrap();
    assert_eq!(
        f.states[0].apply_message(&msg, &f.limits, NOW),
        Err(Error::Deleted)
    );
    assert_eq!(
        f.states[0].authorize_read(
            &f.sender.read_request(NOW, ReadScope::View),
            ReadScope::View,
            &f.limits,
            NOW
        ),
        Err(Error::Deleted)
    );
    assert_eq!(Error::Deleted.code(), ErrorCode::Gone);
}

#[test]
fn relinquish_frees_the_slot_for_another_claimant() {
    let mut f = Fixture::new(3, ShareOptions::default());
    let mut first = f.recipient();
    f.certify(&mut first);
    let second = f.recipient();
    assert!(f.grant_on(&second, &[0, 1, 2]).is_empty());
    // A stranger cannot relinquish someone's slot.
    let forged = Relinquish::sign(
        f.sender.address(),
        f.sender.genesis().digest(),
        &SigningKey::from_seed(&[4; 32]),
        NOW,
    );
    assert_eq!(
        f.states[0].relinquish(&forged, &f.limits, NOW),
        Err(Error::NotAParty)
    );
    let rel = first.relinquish(NOW);
    for s in &mut f.states {
        assert_eq!(s.relinquish(&rel, &f.limits, NOW), Ok(Outcome::Applied));
        assert_eq!(s.relinquish(&rel, &f.limits, NOW), Ok(Outcome::Duplicate));
    }
    let mut second = second;
    let cert = f.certify(&mut second);
    assert_eq!(cert.claim.body.recipient, second.public_key());
    // The relinquished key cannot come back.
    assert_eq!(
        f.states[0]
            .grant(first.claim(), &f.replicas[0], &f.limits, NOW)
            .unwrap_err(),
        Error::Relinquished
    );
    let msg = first.seal(b"gone", [1; 16], NOW, &mut f.rng).unwrap();
    assert_eq!(
        f.states[0].apply_message(&msg, &f.limits, NOW),
        Err(Error::NotAParty)
    );
}

#[test]
fn reads_need_a_fresh_signed_request_from_a_party_with_r() {
    let policy = Policy {
        sender_rights: "WD".parse().unwrap(),
        ..Policy::default()
    };
    let mut f = Fixture::new(1, options_with(policy));
    let mut r = f.recipient();
    f.certify(&mut r);
    let limits = Limits::default();
    let state = &f.states[0];
    let party = state
        .authorize_read(
            &r.read_request(NOW, ReadScope::View),
            ReadScope::View,
            &limits,
            NOW,
        )
        .unwrap();
    assert_eq!(party.key, r.public_key());
    assert_eq!(
        state.authorize_read(
            &r.read_request(NOW - 1000, ReadScope::View),
            ReadScope::View,
            &limits,
            NOW
        ),
        Err(Error::StaleRequest)
    );
    assert!(matches!(
        state.authorize_read(
            &f.sender.read_request(NOW, ReadScope::View),
            ReadScope::View,
            &limits,
            NOW
        ),
        Err(Error::RightDenied { right: 'R', .. })
    ));
    let stranger = ReadRequest::sign(
        f.sender.address(),
        f.sender.genesis().digest(),
        &SigningKey::from_seed(&[1; 32]),
        NOW,
        ReadScope::View,
    );
    assert_eq!(
        state.authorize_read(&stranger, ReadScope::View, &limits, NOW),
        Err(Error::NotAParty)
    );
    let mut forged = r.read_request(NOW, ReadScope::View);
    forged.signature.0[3] ^= 1;
    assert!(
        state
            .authorize_read(&forged, ReadScope::View, &limits, NOW)
            .is_err()
    );
}

#[test]
fn oversized_payloads_and_records_are_refused() {
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    let replica = SigningKey::generate(&mut rng);
    let err = tigress_protocol::session::SenderSession::create(
        tigress_protocol::session::ShareIdentity::random(&mut rng),
        "https://relay.example",
        vec![replica.public_key()],
        &vec![0u8; 65536],
        &ShareOptions::default(),
        NOW,
        &mut rng,
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge);
    let big = vec![FORMAT_VERSION; tigress_protocol::wire::MAX_ENCODED + 1];
    assert!(matches!(
        Genesis::from_bytes(&big),
        Err(Error::Decode(DecodeError::TooLarge { .. }))
    ));
    // A full-size payload still fits in a record.
    let f = Fixture::with_payload(5, ShareOptions::default(), &vec![7u8; 65535]);
    let bytes = f.sender.genesis().to_bytes();
    assert_eq!(Genesis::from_bytes(&bytes).unwrap(), *f.sender.genesis());
}

#[test]
fn truncated_and_bit_flipped_records_are_refused_or_fail_validation() {
    let mut f = Fixture::new(3, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    let bytes = f.sender.genesis().to_bytes();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(Genesis::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // Flip each bit of a sample of positions: the result never validates as the genesis.
    let limits = Limits::default();
    for pos in (0..bytes.len()).step_by(97) {
        let mut flipped = bytes.clone();
        flipped[pos] ^= 1 << (pos % 8);
        if let Ok(g) = Genesis::from_bytes(&flipped) {
            assert!(
                MailboxState::create(g, &limits, NOW).is_err(),
                "flip at {pos}"
            );
        }
    }
    let msg = r.seal(b"flip me", [1; 16], NOW, &mut f.rng).unwrap();
    let bytes = msg.to_bytes();
    for pos in 0..bytes.len().min(400) {
        let mut flipped = bytes.clone();
        flipped[pos] ^= 0x01;
        if let Ok(m) = tigress_protocol::record::Message::from_bytes(&flipped) {
            let mut state = f.states[0].clone();
            assert!(
                state.apply_message(&m, &limits, NOW).is_err(),
                "flip at {pos}"
            );
        }
    }
    // An older or unknown format version.
    for other in [1, FORMAT_VERSION + 1] {
        let mut v = bytes.clone();
        v[0] = other;
        assert_eq!(
            tigress_protocol::record::Message::from_bytes(&v),
            Err(Error::Decode(DecodeError::UnsupportedVersion(other)))
        );
    }
}

#[test]
fn too_many_messages_is_refused() {
    let policy = Policy {
        max_messages: 2,
        ..Policy::default()
    };
    let mut f = Fixture::new(1, options_with(policy));
    let mut r = f.recipient();
    f.certify(&mut r);
    for i in 0..2u8 {
        let m = r.seal(&[i], [i; 16], NOW, &mut f.rng).unwrap();
        f.states[0].apply_message(&m, &f.limits, NOW).unwrap();
    }
    let m = r.seal(b"third", [3; 16], NOW, &mut f.rng).unwrap();
    assert_eq!(
        f.states[0].apply_message(&m, &f.limits, NOW),
        Err(Error::TooManyMessages { max: 2 })
    );
}

#[test]
fn a_certificate_mixing_slots_is_refused() {
    let policy = Policy {
        max_recipients: 2,
        ..Policy::default()
    };
    let mut f = Fixture::new(3, options_with(policy));
    // A rival takes slot 0 on replica 0 only; our claimant then gets slot 1 there and
    // slot 0 on replicas 1 and 2.
    let rival = f.recipient();
    f.grant_on(&rival, &[0]);
    let r = f.recipient();
    let receipts = f.grant_on(&r, &[0, 1, 2]);
    let slots: Vec<u8> = receipts.iter().map(|x| x.body.slot).collect();
    assert_eq!(slots, vec![1, 0, 0]);
    let mixed = ClaimCertificate {
        claim: r.claim().clone(),
        receipts: BoundedVec::new(receipts.clone()).unwrap(),
    };
    assert_eq!(
        f.states[1]
            .accept_certificate(&mixed, &f.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Malformed
    );
    // The tally builds the valid certificate from the two slot-0 receipts.
    let ClaimTally::Certified(cert) = tally_claim(f.sender.genesis(), r.claim(), &receipts) else {
        panic!("two of three replicas granted slot 0");
    };
    assert_eq!(cert.receipts.len(), 2);
    assert_eq!(
        f.states[1].accept_certificate(&cert, &f.limits, NOW),
        Ok(Outcome::Applied)
    );
}

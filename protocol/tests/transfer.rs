//! A complete two-party transfer and a claim race, through the public API only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{Fixture, NOW};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tigress_protocol::ShareUrl;
use tigress_protocol::crypto::HpkeSuite;
use tigress_protocol::mailbox::{ClaimTally, MailboxState, Outcome, tally_claim};
use tigress_protocol::record::{Policy, Receipt, Record};
use tigress_protocol::session::{RecipientSession, ShareOptions};
use tigress_protocol::{Error, ErrorCode};

fn transfer(suite: HpkeSuite) {
    let options = ShareOptions {
        hpke: suite,
        ..ShareOptions::default()
    };
    let mut f = Fixture::new(5, options);
    let limits = f.limits;

    // The recipient parses the invitation as text and reads the genesis from a replica.
    let url = ShareUrl::parse(&f.url.expose_url()).unwrap();
    let genesis = f.states[3].genesis().clone();
    let (mut r, first) = RecipientSession::open(&url, genesis, &limits, NOW, &mut f.rng).unwrap();
    assert_eq!(first, b"first payload: the car key");

    // Five replicas grant; the certificate is assembled and stored everywhere.
    let mut receipts: Vec<Receipt> = Vec::new();
    for i in 0..5 {
        let (receipt, outcome) = f.states[i]
            .grant(r.claim(), &f.replicas[i], &limits, NOW)
            .unwrap();
        assert_eq!(outcome, Outcome::Applied);
        receipts.push(receipt);
    }
    let ClaimTally::Certified(cert) = tally_claim(r.genesis(), r.claim(), &receipts) else {
        panic!("five grants certify");
    };
    assert_eq!(cert.receipts.len(), 5);
    for s in &mut f.states {
        assert_eq!(
            s.accept_certificate(&cert, &limits, NOW),
            Ok(Outcome::Applied)
        );
    }
    r.accept_certificate((*cert).clone(), &limits, NOW).unwrap();
    f.sender.add_certificate(&cert, &limits, NOW).unwrap();
    let recipient_key = r.public_key();

    // Three round trips, each side sending two messages back to back.
    let mut now = NOW;
    for round in 0..3u8 {
        now += 10;
        let mut to_sender = Vec::new();
        for k in 0..2u8 {
            let body = format!("request {round}.{k}");
            let msg = r
                .seal(body.as_bytes(), [round * 2 + k; 16], now, &mut f.rng)
                .unwrap();
            // Wire round trip, then every replica stores it.
            let msg = tigress_protocol::record::Message::from_bytes(&msg.to_bytes()).unwrap();
            for s in &mut f.states {
                assert_eq!(s.apply_message(&msg, &limits, now), Ok(Outcome::Applied));
            }
            to_sender.push(msg);
        }
        let mut delivered = Vec::new();
        for msg in &to_sender {
            delivered.extend(f.sender.receive(msg).unwrap());
        }
        let texts: Vec<String> = delivered
            .iter()
            .map(|d| String::from_utf8(d.plaintext.clone()).unwrap())
            .collect();
        assert_eq!(
            texts,
            vec![format!("request {round}.0"), format!("request {round}.1")]
        );

        let mut to_recipient = Vec::new();
        for k in 0..2u8 {
            let body = format!("response {round}.{k}");
            let msg = f
                .sender
                .seal(
                    &recipient_key,
                    body.as_bytes(),
                    [100 + k; 16],
                    now,
                    &mut f.rng,
                )
                .unwrap();
            for s in &mut f.states {
                assert_eq!(s.apply_message(&msg, &limits, now), Ok(Outcome::Applied));
            }
            to_recipient.push(msg);
        }
        // Delivered in order even when they arrive reversed.
        to_recipient.reverse();
        let mut delivered = Vec::new();
        for msg in &to_recipient {
            delivered.extend(r.receive(msg).unwrap());
        }
        let seqs: Vec<u64> = delivered.iter().map(|d| d.seq).collect();
        assert_eq!(
            seqs,
            vec![u64::from(round) * 2 + 1, u64::from(round) * 2 + 2]
        );
    }
    assert_eq!(f.states[0].status(now).messages, 12);

    // The sender deletes; every replica becomes a tombstone.
    let del = f.sender.delete(now);
    for s in &mut f.states {
        assert_eq!(s.delete(&del, &limits, now), Ok(Outcome::Applied));
        assert!(s.status(now).deleted);
        assert_eq!(s.live(now), Err(Error::Deleted));
    }
}

#[test]
fn full_transfer_default_suite() {
    transfer(HpkeSuite::X25519ChaCha20Poly1305);
}

#[test]
fn full_transfer_aes_suite() {
    transfer(HpkeSuite::X25519Aes128Gcm);
}

#[test]
fn full_transfer_post_quantum_suite() {
    transfer(HpkeSuite::XWingChaCha20Poly1305);
}

#[test]
fn sessions_survive_a_save_and_restore() {
    let mut f = Fixture::new(1, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    let msg = r.seal(b"hi", [1; 16], NOW, &mut f.rng).unwrap();
    let bytes = f.sender.to_bytes().unwrap();
    let mut restored = tigress_protocol::session::SenderSession::from_bytes(&bytes).unwrap();
    assert_eq!(restored, f.sender);
    assert_eq!(restored.receive(&msg).unwrap()[0].plaintext, b"hi");
    let rb = r.to_bytes().unwrap();
    assert_eq!(RecipientSession::from_bytes(&rb).unwrap(), r);
    assert!(RecipientSession::from_bytes(&rb[..rb.len() - 3]).is_err());
}

/// Runs a race of `claimants` over five replicas, each replica seeing the claims in its own
/// order. Returns the certificates issued and whether the tally saw a contest.
fn race(
    max_recipients: u8,
    claimants: usize,
    seed: u64,
) -> (Fixture, Vec<RecipientSession>, usize, bool) {
    let policy = Policy {
        max_recipients,
        ..Policy::default()
    };
    let mut f = Fixture::new(
        5,
        ShareOptions {
            policy,
            ..ShareOptions::default()
        },
    );
    let mut rs: Vec<RecipientSession> = (0..claimants).map(|_| f.recipient()).collect();
    let mut order_rng = ChaCha20Rng::seed_from_u64(seed);
    let mut all_receipts: Vec<Receipt> = Vec::new();
    for i in 0..5 {
        let mut order: Vec<usize> = (0..claimants).collect();
        // Fisher-Yates with the seeded generator.
        for j in (1..order.len()).rev() {
            let k = (rand_core::Rng::next_u32(&mut order_rng) as usize) % (j + 1);
            order.swap(j, k);
        }
        for c in order {
            match f.states[i].grant(rs[c].claim(), &f.replicas[i], &f.limits, NOW) {
                Ok((receipt, _)) => all_receipts.push(receipt),
                Err(e) => assert_eq!(e, Error::AlreadyClaimed),
            }
        }
    }
    let mut certified = 0;
    let mut contested = false;
    for r in &mut rs {
        match tally_claim(f.sender.genesis(), r.claim(), &all_receipts) {
            ClaimTally::Certified(cert) => {
                for s in &mut f.states {
                    s.accept_certificate(&cert, &f.limits, NOW).unwrap();
                }
                r.accept_certificate(*cert, &f.limits, NOW).unwrap();
                certified += 1;
            }
            ClaimTally::Contested => contested = true,
            ClaimTally::Lost => {}
            ClaimTally::Pending => panic!("every replica answered: nothing is pending"),
        }
    }
    (f, rs, certified, contested)
}

#[test]
fn claim_races_never_over_certify() {
    let mut contests = 0;
    for seed in 0..40 {
        for max in [1u8, 3] {
            let (f, _, certified, contested) = race(max, 6, seed);
            assert!(
                certified <= usize::from(max),
                "seed {seed}: {certified} certificates"
            );
            assert!(
                certified == usize::from(max) || contested,
                "seed {seed}: free slots but no contest"
            );
            assert!(f.states[0].recipients().len() <= usize::from(max));
            contests += usize::from(contested);
        }
    }
    assert!(contests > 0, "some seeds must produce a contest");
}

#[test]
fn a_contested_mailbox_is_marked_and_resolved_by_the_sender() {
    let (mut f, mut rs, certified, contested) = (0..200)
        .map(|seed| race(1, 3, seed))
        .find(|(_, _, certified, contested)| *contested && *certified == 0)
        .expect("a seed where three claimants split five replicas");
    assert_eq!(certified, 0);
    assert!(contested);
    // Any replica accepts the evidence (all receipts) and marks the mailbox contested.
    let evidence: Vec<Receipt> = f.states.iter().flat_map(|s| s.grants().to_vec()).collect();
    for s in &mut f.states {
        assert_eq!(s.mark_contested(&evidence, NOW), Ok(Outcome::Applied));
        assert!(s.status(NOW).contested);
    }
    // A late claim now sees the contest.
    let late = f.recipient();
    assert_eq!(
        f.states[0]
            .grant(late.claim(), &f.replicas[0], &f.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Conflict
    );
    // The sender keeps the second claimant.
    let keep = rs[1].claim().clone();
    let resolve = f.sender.resolve(vec![keep], &f.limits, NOW).unwrap();
    for s in &mut f.states {
        assert_eq!(s.resolve(&resolve, &f.limits, NOW), Ok(Outcome::Applied));
        assert_eq!(s.resolve(&resolve, &f.limits, NOW), Ok(Outcome::Duplicate));
        let st = s.status(NOW);
        assert!(!st.contested && st.resolved);
        assert_eq!(st.recipients, vec![rs[1].public_key()]);
    }
    // The kept claimant can now talk; a loser cannot.
    rs[1].accept_resolve(&resolve).unwrap();
    assert_eq!(rs[0].accept_resolve(&resolve), Err(Error::NotAParty));
    let msg = rs[1].seal(b"kept", [1; 16], NOW, &mut f.rng).unwrap();
    assert_eq!(
        f.states[2].apply_message(&msg, &f.limits, NOW),
        Ok(Outcome::Applied)
    );
    assert_eq!(f.sender.receive(&msg).unwrap()[0].plaintext, b"kept");
    // A different resolve afterwards conflicts; a forged one is refused.
    let other = f
        .sender
        .resolve(vec![rs[0].claim().clone()], &f.limits, NOW)
        .unwrap();
    assert_eq!(
        f.states[0].resolve(&other, &f.limits, NOW),
        Err(Error::ResolveConflict)
    );
    let mut forged = resolve.clone();
    forged.signature.0[0] ^= 1;
    let mut fresh = MailboxState::create(f.sender.genesis().clone(), &f.limits, NOW).unwrap();
    assert!(fresh.resolve(&forged, &f.limits, NOW).is_err());
}

#[test]
fn evidence_without_a_contest_is_refused() {
    let mut f = Fixture::new(5, ShareOptions::default());
    let r = f.recipient();
    let receipts = f.grant_on(&r, &[0, 1]);
    assert_eq!(
        f.states[4]
            .mark_contested(&receipts, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Malformed
    );
    assert!(!f.states[4].status(NOW).contested);
}

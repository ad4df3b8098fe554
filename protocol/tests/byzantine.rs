//! The rules that hold against lying replicas and lying entry nodes: the claim quorum,
//! equivocation proofs, requests bound to their genesis and operation, the sequence
//! window, and resolves that need a contest.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{Fixture, NOW};
use tigress_protocol::crypto::SigningKey;
use tigress_protocol::mailbox::{
    ClaimTally, MailboxState, Outcome, SEQUENCE_WINDOW, equivocations, tally_claim,
    validate_genesis,
};
use tigress_protocol::record::{
    ClaimCertificate, Equivocation, Genesis, ReadRequest, ReadScope, Receipt, Record,
    UNKNOWN_GENESIS, claim_quorum, cursor_digest, max_fault_tolerance,
};
use tigress_protocol::rpc::{Access, MailboxView};
use tigress_protocol::session::{RecipientSession, ShareOptions, view_equivocations};
use tigress_protocol::wire::BoundedVec;
use tigress_protocol::{Error, ErrorCode};

fn with_f(f: u8) -> ShareOptions {
    ShareOptions {
        fault_tolerance: Some(f),
        ..ShareOptions::default()
    }
}

/// The table of ARCHITECTURE.md: R, the default f, and the claim quorum q.
#[test]
fn the_claim_quorum_follows_r_and_f() {
    let table = [
        (1, 0, 1),
        (3, 0, 2),
        (4, 0, 3),
        (5, 1, 4),
        (7, 1, 5),
        (9, 2, 6),
        (16, 3, 10),
    ];
    for (r, f, q) in table {
        assert_eq!(max_fault_tolerance(r), f, "R = {r}");
        assert_eq!(claim_quorum(r, f), q, "R = {r}");
        // Two claim quorums share at least f + 1 replicas: 2q − R ≥ f + 1.
        assert!(2 * q - r > usize::from(f), "R = {r}");
    }
    let fx = Fixture::new(5, ShareOptions::default());
    assert_eq!(fx.sender.genesis().header().fault_tolerance, 1);
    assert_eq!(fx.sender.genesis().header().claim_quorum(), 4);
    assert_eq!(fx.sender.genesis().header().majority(), 3);
}

#[test]
fn a_genesis_tolerating_more_liars_than_its_set_allows_is_refused() {
    let fx = Fixture::new(5, with_f(1));
    let claim = fx.url.secret().derive_keys(&fx.url.mailbox_id()).claim;
    let sender = SigningKey::from_seed(&[3; 32]);
    let mut body = fx.sender.genesis().body.clone();
    body.header.sender = sender.public_key();
    body.header.fault_tolerance = 2;
    let g = Genesis::sign(body, &sender, &claim);
    assert!(matches!(
        validate_genesis(&g, &fx.limits, NOW),
        Err(Error::InvalidField {
            field: "fault_tolerance",
            ..
        })
    ));
}

/// One replica grants two claimants the same slot. Under the claim quorum (4 of 5) the
/// two can split the honest replicas but neither certifies; under a simple majority
/// (f = 0, 3 of 5) both would.
#[test]
fn one_equivocating_replica_cannot_make_two_certificates() {
    for (f, both_certify) in [(1u8, false), (0, true)] {
        let mut fx = Fixture::new(5, with_f(f));
        let a = fx.recipient();
        let b = fx.recipient();
        let liar = 4;
        let mut ra = fx.grant_on(&a, &[0, 1]);
        let mut rb = fx.grant_on(&b, &[2, 3]);
        // The liar grants both, as if it had granted nothing before.
        let g = fx.sender.genesis().clone();
        for (claim, out) in [(a.claim(), &mut ra), (b.claim(), &mut rb)] {
            let mut fresh = MailboxState::create(g.clone(), &fx.limits, NOW).unwrap();
            let (receipt, _) = fresh
                .grant(claim, &fx.replicas[liar], &fx.limits, NOW)
                .unwrap();
            out.push(receipt);
        }
        let certified = |c: &RecipientSession, rs: &[Receipt]| {
            matches!(tally_claim(&g, c.claim(), rs), ClaimTally::Certified(_))
        };
        assert_eq!(certified(&a, &ra), both_certify, "f = {f}");
        assert_eq!(certified(&b, &rb), both_certify, "f = {f}");
        // The liar's two receipts prove it lied, whatever the quorum.
        let all: Vec<Receipt> = ra.iter().chain(rb.iter()).cloned().collect();
        let proofs = equivocations(&all);
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].liar(), fx.replicas[liar].public_key());
        proofs[0].verify().unwrap();
    }
}

/// An honest replica gives a slot to a second claimant only after a relinquish, in a new
/// epoch: that is no proof of lying.
#[test]
fn a_slot_given_again_after_a_relinquish_is_not_an_equivocation() {
    let mut fx = Fixture::new(1, ShareOptions::default());
    let mut first = fx.recipient();
    let cert = fx.certify(&mut first);
    let rel = first.relinquish(NOW);
    fx.states[0].relinquish(&rel, &fx.limits, NOW).unwrap();
    let second = fx.recipient();
    let again = fx.grant_on(&second, &[0]);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body.slot, cert.receipts[0].body.slot);
    assert_ne!(again[0].body.epoch, cert.receipts[0].body.epoch);
    assert!(Equivocation::of(&cert.receipts[0], &again[0]).is_none());
    // Two receipts of one claimant, or of two replicas, prove nothing either.
    assert!(Equivocation::of(&again[0], &again[0]).is_none());
}

/// A sender whose view shows more certified recipients than the policy allows learns
/// none of them, and the view's certificates name the liar.
#[test]
fn a_sender_refuses_a_view_with_too_many_recipients() {
    let mut fx = Fixture::new(5, with_f(0));
    let a = fx.recipient();
    let b = fx.recipient();
    let g = fx.sender.genesis().clone();
    let mut certs = Vec::new();
    for (c, honest) in [(&a, [0usize, 1]), (&b, [2, 3])] {
        let mut rs = fx.grant_on(c, &honest);
        let mut fresh = MailboxState::create(g.clone(), &fx.limits, NOW).unwrap();
        rs.push(
            fresh
                .grant(c.claim(), &fx.replicas[4], &fx.limits, NOW)
                .unwrap()
                .0,
        );
        certs.push(ClaimCertificate {
            claim: c.claim().clone(),
            receipts: BoundedVec::new(rs).unwrap(),
        });
    }
    let mut status = fx.states[0].status(NOW);
    status.recipients = vec![a.public_key(), b.public_key()];
    let view = MailboxView {
        genesis: g,
        status,
        certificates: BoundedVec::new(certs).unwrap(),
        claims: BoundedVec::default(),
        resolve: None,
        relinquished: BoundedVec::default(),
    };
    let err = fx
        .sender
        .learn_recipients(&view, &fx.limits, NOW)
        .unwrap_err();
    assert_eq!(
        err,
        Error::Equivocation {
            replica: fx.replicas[4].public_key()
        }
    );
    assert!(fx.sender.recipients().is_empty());
    assert_eq!(view_equivocations(&view).len(), 1);
}

/// A genesis of someone else's making, even one copying the real claim key, fits no
/// request of the real parties.
#[test]
fn a_forged_genesis_fits_no_request_of_the_real_parties() {
    let mut fx = Fixture::new(3, ShareOptions::default());
    let mut r = fx.recipient();
    fx.certify(&mut r);
    let real = fx.sender.genesis().clone();
    let liar = SigningKey::from_seed(&[9; 32]);
    // Copying the claim key without its private half: the co-signature fails.
    let mut body = real.body.clone();
    body.header.sender = liar.public_key();
    body.header.replicas = BoundedVec::new(vec![liar.public_key()]).unwrap();
    let copied = Genesis::sign(body.clone(), &liar, &liar);
    assert!(copied.verify_signature().is_err());
    // With its own claim key it is valid, and fits nothing the real parties sign.
    let own_claim = SigningKey::from_seed(&[10; 32]);
    body.header.claim_key = own_claim.public_key();
    let forged = Genesis::sign(body, &liar, &own_claim);
    forged.verify_signature().unwrap();
    let open = RecipientSession::open_request(&fx.url, NOW);
    let accesses = [
        Access::Read(open),
        Access::Read(fx.sender.read_request(NOW, ReadScope::View)),
        Access::Read(r.read_request(NOW, ReadScope::View)),
        Access::Claim(r.claim().clone()),
        Access::Message(r.seal(b"m", [1; 16], NOW, &mut fx.rng).unwrap()),
        Access::Delete(fx.sender.delete(NOW)),
        Access::Relinquish(r.relinquish(NOW)),
    ];
    for access in &accesses {
        assert!(access.fits(&real), "{access:?}");
        assert!(!access.fits(&forged), "{access:?}");
    }
}

/// A read request serves the operation and the cursor it was signed for, only.
#[test]
fn a_read_request_is_bound_to_its_operation_and_cursor() {
    let mut fx = Fixture::new(1, ShareOptions::default());
    let mut r = fx.recipient();
    fx.certify(&mut r);
    let state = &fx.states[0];
    let cursor = vec![(fx.sender.public_key(), 1)];
    let fetch = ReadScope::Fetch {
        cursor: cursor_digest(&cursor),
    };
    let req = r.read_request(NOW, fetch);
    state.authorize_read(&req, fetch, &fx.limits, NOW).unwrap();
    assert_eq!(
        state.authorize_read(&req, ReadScope::View, &fx.limits, NOW),
        Err(Error::WrongGenesis)
    );
    let later = ReadScope::Fetch {
        cursor: cursor_digest(&[(fx.sender.public_key(), 5)]),
    };
    assert_eq!(
        state.authorize_read(&req, later, &fx.limits, NOW),
        Err(Error::WrongGenesis)
    );
    // A request naming another genesis is refused too.
    let other = ReadRequest::sign(
        fx.sender.address(),
        [7; 32],
        &SigningKey::from_seed(&[1; 32]),
        NOW,
        ReadScope::View,
    );
    assert_eq!(
        state.authorize_read(&other, ReadScope::View, &fx.limits, NOW),
        Err(Error::WrongGenesis)
    );
    // An invitee's open names no genesis; a party's read must.
    let unnamed = ReadRequest::sign(
        fx.sender.address(),
        UNKNOWN_GENESIS,
        &SigningKey::from_seed(&[2; 32]),
        NOW,
        ReadScope::View,
    );
    assert_eq!(
        state
            .authorize_read(&unnamed, ReadScope::View, &fx.limits, NOW)
            .unwrap_err()
            .code(),
        ErrorCode::Unauthorized
    );
}

#[test]
fn a_party_cannot_skip_sequence_numbers_beyond_the_window() {
    let mut fx = Fixture::new(1, ShareOptions::default());
    let mut r = fx.recipient();
    fx.certify(&mut r);
    let mut ahead = r.clone();
    ahead.set_next_seq(SEQUENCE_WINDOW + 1);
    let far = ahead.seal(b"far", [1; 16], NOW, &mut fx.rng).unwrap();
    let before = fx.states[0].clone();
    assert_eq!(
        fx.states[0].apply_message(&far, &fx.limits, NOW),
        Err(Error::SequenceAhead {
            seq: SEQUENCE_WINDOW + 1,
            max: SEQUENCE_WINDOW
        })
    );
    assert_eq!(fx.states[0], before);
    // The last number a party could choose does not overflow anything.
    ahead.set_next_seq(u64::MAX);
    let last = ahead.seal(b"last", [2; 16], NOW, &mut fx.rng).unwrap();
    assert_eq!(last.header().seq, u64::MAX);
    assert!(matches!(
        fx.states[0].apply_message(&last, &fx.limits, NOW),
        Err(Error::SequenceAhead { .. })
    ));
    // Within the window, a replica that missed some still takes it.
    let mut near = r.clone();
    near.set_next_seq(SEQUENCE_WINDOW);
    let m = near.seal(b"near", [3; 16], NOW, &mut fx.rng).unwrap();
    assert_eq!(
        fx.states[0].apply_message(&m, &fx.limits, NOW),
        Ok(Outcome::Applied)
    );
}

#[test]
fn a_resolve_needs_a_contest() {
    let mut fx = Fixture::new(3, ShareOptions::default());
    let mut a = fx.recipient();
    fx.certify(&mut a);
    let b = fx.recipient();
    // The sender tries to replace the certified recipient without a contest.
    let resolve = fx
        .sender
        .resolve(vec![b.claim().clone()], &fx.limits, NOW)
        .unwrap();
    let before = fx.states[0].clone();
    assert_eq!(
        fx.states[0].resolve(&resolve, &fx.limits, NOW),
        Err(Error::NotContested)
    );
    assert_eq!(fx.states[0], before);
    assert_eq!(fx.states[0].recipients()[0].key, a.public_key());
}

/// A message, a delete or a relinquish signed for another genesis of the same address
/// is refused.
#[test]
fn records_naming_another_genesis_are_refused() {
    let mut fx = Fixture::new(1, ShareOptions::default());
    let mut r = fx.recipient();
    fx.certify(&mut r);
    let mut m = r.seal(b"x", [1; 16], NOW, &mut fx.rng).unwrap();
    m.body.header.genesis = [5; 32];
    assert_eq!(
        fx.states[0].apply_message(&m, &fx.limits, NOW),
        Err(Error::WrongGenesis)
    );
    let other = tigress_protocol::record::Delete::sign(
        fx.sender.address(),
        [5; 32],
        &SigningKey::from_seed(&[6; 32]),
        NOW,
    );
    assert_eq!(
        fx.states[0].delete(&other, &fx.limits, NOW),
        Err(Error::WrongGenesis)
    );
    assert!(fx.states[0].deletion().is_none());
    // The genesis's own digest is what every record names.
    assert_eq!(r.relinquish(NOW).body.genesis, fx.sender.genesis().digest());
}

/// A replica that missed a contest learns it from anti-entropy before the resolve, which
/// it would refuse without one.
#[test]
fn anti_entropy_copies_a_contest_before_its_resolve() {
    use tigress_protocol::reconcile;
    use tigress_protocol::replica::digest_of;
    use tigress_protocol::rpc::ReplicaRequest;
    let mut fx = Fixture::new(5, ShareOptions::default());
    let a = fx.recipient();
    let b = fx.recipient();
    let mut evidence = fx.grant_on(&a, &[0, 1, 4]);
    evidence.extend(fx.grant_on(&b, &[2, 3]));
    fx.states[0].mark_contested(&evidence, NOW).unwrap();
    let resolve = fx
        .sender
        .resolve(vec![a.claim().clone()], &fx.limits, NOW)
        .unwrap();
    fx.states[0].resolve(&resolve, &fx.limits, NOW).unwrap();
    // Replica 1 never saw the contest: the resolve alone is refused.
    assert_eq!(
        fx.states[1].clone().resolve(&resolve, &fx.limits, NOW),
        Err(Error::NotContested)
    );
    let have = digest_of(&fx.states[1]);
    let lacking = reconcile::lacking(Some(&have), &digest_of(&fx.states[0]));
    let (before, _) = lacking.requests();
    let order: Vec<&str> = before
        .iter()
        .map(|r| match r {
            ReplicaRequest::MarkContested { .. } => "contest",
            ReplicaRequest::Resolve { .. } => "resolve",
            _ => "other",
        })
        .collect();
    assert_eq!(order, ["contest", "resolve"]);
    for request in before {
        match request {
            ReplicaRequest::MarkContested { evidence, .. } => {
                fx.states[1].mark_contested(&evidence, NOW).unwrap();
            }
            ReplicaRequest::Resolve { resolve } => {
                fx.states[1].resolve(&resolve, &fx.limits, NOW).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fx.states[1].recipients()[0].key, a.public_key());
}

/// An entry collecting a claim's receipts keeps the proof when a replica's refusal shows
/// it gave the same slot to another claimant.
#[test]
fn a_claim_gather_keeps_the_proof_of_an_equivocation() {
    use tigress_protocol::quorum::{ClaimGather, Quorum};
    use tigress_protocol::rpc::ReplicaResponse;
    let mut fx = Fixture::new(5, ShareOptions::default());
    let a = fx.recipient();
    let b = fx.recipient();
    let g = fx.sender.genesis().clone();
    let liar = 4;
    let lie = |c: &RecipientSession| {
        let mut fresh = MailboxState::create(g.clone(), &fx.limits, NOW).unwrap();
        fresh
            .grant(c.claim(), &fx.replicas[liar], &fx.limits, NOW)
            .unwrap()
            .0
    };
    let (to_a, to_b) = (lie(&a), lie(&b));
    let keys: Vec<_> = fx.replicas.iter().map(SigningKey::public_key).collect();
    let mut q = Quorum::new(&keys, ClaimGather::new(g.clone(), a.claim().clone()), 0);
    q.handle_answer(keys[liar], Ok(ReplicaResponse::Granted(to_a)), 0);
    // A refusal carries receipts; every valid one counts, here the liar's to b.
    q.handle_answer(
        keys[0],
        Ok(ReplicaResponse::Refused {
            error: tigress_protocol::rpc::RemoteError::new(ErrorCode::Conflict, "taken"),
            grants: BoundedVec::truncated(vec![to_b]),
        }),
        0,
    );
    for k in &keys[1..4] {
        q.handle_answer(*k, Err(tigress_protocol::quorum::CallError::Timeout), 0);
    }
    let (_, proofs) = q.finish();
    assert_eq!(proofs.len(), 1);
    assert_eq!(proofs[0].liar(), keys[liar]);
}

/// A claim that falls short of a certificate is refused for good only when so many
/// replicas refused alike that the rest cannot make the claim quorum; one replica's
/// "gone" among silences (a liar's, perhaps) leaves it worth a retry.
#[test]
fn a_claim_is_refused_for_good_only_when_no_quorum_is_left() {
    use tigress_protocol::quorum::{CallError, ClaimGather, ClaimOutcome, Quorum};
    use tigress_protocol::rpc::{RemoteError, ReplicaResponse};
    let mut fx = Fixture::new(5, ShareOptions::default());
    let a = fx.recipient();
    let g = fx.sender.genesis().clone();
    assert_eq!(g.header().claim_quorum(), 4);
    let receipts = fx.grant_on(&a, &[0, 1, 2]);
    let keys: Vec<_> = fx.replicas.iter().map(SigningKey::public_key).collect();
    let said = |code: ErrorCode| Ok(ReplicaResponse::Error(RemoteError::new(code, "no")));
    let outcome = |last: [tigress_protocol::quorum::Answer; 2]| {
        let mut q = Quorum::new(&keys, ClaimGather::new(g.clone(), a.claim().clone()), 0);
        for (k, r) in keys.iter().zip(&receipts) {
            q.handle_answer(*k, Ok(ReplicaResponse::Granted(r.clone())), 0);
        }
        let [x, y] = last;
        q.handle_answer(keys[3], x, 0);
        q.handle_answer(keys[4], y, 0);
        match q.finish().0 {
            ClaimOutcome::Refused(e) => e,
            other => panic!("three receipts of five certify nothing: {other:?}"),
        }
    };
    let e = outcome([said(ErrorCode::Gone), Err(CallError::Timeout)]);
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.to_string().contains("a claim needs 4"), "{e}");
    assert_eq!(
        outcome([said(ErrorCode::Gone), said(ErrorCode::Gone)]).code,
        ErrorCode::Gone
    );
    assert_eq!(
        outcome([said(ErrorCode::Conflict), said(ErrorCode::Conflict)]).code,
        ErrorCode::Conflict
    );
}

//! The quorums an entry node runs: what is enough, what is refused, what is merged.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{Fixture, NOW};
use tigress_protocol::ErrorCode;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::quorum::{
    CallError, FetchGather, Quorum, ReadGather, WriteGather, check_acks,
};
use tigress_protocol::record::{Ack, Record};
use tigress_protocol::rpc::{Cursor, MailboxView, ReplicaResponse};
use tigress_protocol::session::ShareOptions;
use tigress_protocol::wire::BoundedVec;

fn keys(f: &Fixture) -> Vec<PublicKey> {
    f.replicas.iter().map(|k| k.public_key()).collect()
}

fn view_of(f: &Fixture, i: usize) -> ReplicaResponse {
    let s = &f.states[i];
    ReplicaResponse::View(MailboxView {
        genesis: s.genesis().clone(),
        status: s.status(NOW),
        certificates: BoundedVec::truncated(s.certificates().to_vec()),
        claims: BoundedVec::truncated(s.claims().to_vec()),
        resolve: s.resolution().cloned(),
        relinquished: BoundedVec::truncated(s.relinquishes().to_vec()),
    })
}

#[test]
fn a_write_needs_a_strict_majority_of_durable_stores() {
    let f = Fixture::new(5, ShareOptions::default());
    let k = keys(&f);
    let address = f.sender.address();
    let digest = f.sender.genesis().digest();
    let ack = |i: usize| Ack::sign(address, digest, &f.replicas[i]);
    let stored = |i: usize, duplicate: bool| {
        Ok(ReplicaResponse::Stored {
            duplicate,
            ack: ack(i),
        })
    };
    let mut q = Quorum::new(&k, WriteGather::new(address, digest), 0);
    q.handle_answer(k[0], stored(0, false), 0);
    q.handle_answer(k[0], stored(0, false), 0);
    q.handle_answer(k[1], stored(1, true), 0);
    // A replica answering with another's acknowledgement, or one for another record,
    // counts for nothing.
    q.handle_answer(k[2], stored(1, false), 0);
    assert!(
        !q.is_done(0),
        "two distinct acknowledgements of five are not a majority"
    );
    q.handle_answer(k[2], Err(CallError::Timeout), 0);
    q.handle_answer(k[3], Err(CallError::Unreachable), 0);
    q.handle_answer(k[4], Err(CallError::Timeout), 0);
    assert!(q.is_done(0));
    let e = q.finish().unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    // It says what the others did.
    assert!(
        e.to_string()
            .contains("(3 answered, 1 timed out, 1 unreachable)"),
        "{e}"
    );

    // A replica that answers "gone" while the others are slow is one voice of five: the
    // write is unavailable (to be tried again), not ended. Three saying so end it.
    let gone = || {
        Ok(ReplicaResponse::Error(
            tigress_protocol::rpc::RemoteError::new(ErrorCode::Gone, "deleted"),
        ))
    };
    let mut q = Quorum::new(&k, WriteGather::new(address, digest), 0);
    q.handle_answer(k[0], gone(), 0);
    q.handle_answer(k[1], stored(1, false), 0);
    q.handle_answer(k[2], stored(2, false), 0);
    q.handle_answer(k[3], Err(CallError::Timeout), 0);
    q.handle_answer(k[4], Err(CallError::Timeout), 0);
    let e = q.finish().unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    let mut q = Quorum::new(&k, WriteGather::new(address, digest), 0);
    for key in &k[..3] {
        q.handle_answer(*key, gone(), 0);
    }
    q.handle_answer(k[3], Err(CallError::Timeout), 0);
    q.handle_answer(k[4], stored(4, false), 0);
    assert_eq!(q.finish().unwrap_err().code, ErrorCode::Gone);

    // Three acknowledgements make it, and a client can check them against the genesis.
    let mut q = Quorum::new(&k, WriteGather::new(address, digest), 0);
    for (i, key) in k.iter().enumerate().take(3) {
        q.handle_answer(*key, stored(i, false), 0);
    }
    let written = q.finish().unwrap();
    assert!(!written.duplicate);
    check_acks(f.sender.genesis(), &digest, &written.acks).unwrap();
    // An entry that drops the write and answers with two acknowledgements (or forged
    // ones) is caught.
    let e = check_acks(f.sender.genesis(), &digest, &written.acks[..2]).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unauthorized);
    let stranger = tigress_protocol::crypto::SigningKey::from_seed(&[9; 32]);
    let forged = vec![
        written.acks[0].clone(),
        written.acks[1].clone(),
        Ack::sign(address, digest, &stranger),
    ];
    assert!(check_acks(f.sender.genesis(), &digest, &forged).is_err());
    let other = [7u8; 32];
    assert!(check_acks(f.sender.genesis(), &other, &written.acks).is_err());
}

/// A view merged from a minority could miss a certificate a majority acknowledged: the
/// read is refused instead (the simulator found this).
#[test]
fn a_read_heard_by_a_minority_is_refused_not_partial() {
    let mut f = Fixture::new(5, ShareOptions::default());
    let mut r = f.recipient();
    // Certified by four of five (R = 5, f = 1), stored on replicas 0..3 only.
    let receipts = f.grant_on(&r, &[0, 1, 2, 4]);
    let tigress_protocol::mailbox::ClaimTally::Certified(cert) =
        tigress_protocol::mailbox::tally_claim(f.sender.genesis(), r.claim(), &receipts)
    else {
        panic!("four of five certify");
    };
    for i in 0..3 {
        f.states[i]
            .accept_certificate(&cert, &f.limits, NOW)
            .unwrap();
    }
    r.accept_certificate((*cert).clone(), &f.limits, NOW)
        .unwrap();
    let k = keys(&f);
    let gather = || ReadGather::new(f.sender.genesis().clone(), f.limits, NOW);
    // Only the replicas without it answer; the others time out.
    let mut q = Quorum::new(&k, gather(), 250);
    q.handle_answer(k[3], Ok(view_of(&f, 3)), 0);
    q.handle_answer(k[4], Ok(view_of(&f, 4)), 0);
    for &i in &[0, 1, 2] {
        q.handle_answer(k[i], Err(CallError::Timeout), 1_000);
    }
    assert!(q.is_done(1_000));
    assert_eq!(q.finish().unwrap_err().code, ErrorCode::Unavailable);
    // A majority that includes one holder shows the recipient.
    let mut q = Quorum::new(&k, gather(), 250);
    for &i in &[3, 4, 0] {
        q.handle_answer(k[i], Ok(view_of(&f, i)), 0);
    }
    assert!(!q.is_done(0), "a grace for the other replicas");
    assert_eq!(q.poll_deadline(), Some(250));
    assert!(q.is_done(250));
    let view = q.finish().unwrap();
    assert_eq!(view.status.recipients, vec![r.public_key()]);
    assert_eq!(view.certificates.len(), 1);
}

#[test]
fn a_fetch_drops_messages_before_the_cursor_and_waits_a_grace_after_new_ones() {
    let mut f = Fixture::new(3, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    let m1 = r.seal(b"one", [1; 16], NOW, &mut f.rng).unwrap();
    let m2 = r.seal(b"two", [2; 16], NOW, &mut f.rng).unwrap();
    let k = keys(&f);
    let reader = f.sender.public_key();
    // The reader already has message 1.
    let cursor: Cursor = BoundedVec::new(vec![(r.public_key(), 2)]).unwrap();
    let address = f.sender.genesis().header().address;
    let mut q = Quorum::new(&k, FetchGather::new(address, reader, cursor), 250);
    // A replica replays the old message only: nothing new, keep waiting.
    q.handle_answer(
        k[0],
        Ok(ReplicaResponse::Messages {
            messages: BoundedVec::truncated(vec![m1.clone()]),
        }),
        0,
    );
    assert!(!q.is_done(0));
    q.handle_answer(
        k[1],
        Ok(ReplicaResponse::Messages {
            messages: BoundedVec::truncated(vec![m1, m2.clone()]),
        }),
        10,
    );
    // A majority answered: a grace for the last one.
    assert!(!q.is_done(10));
    assert_eq!(q.poll_deadline(), Some(260));
    assert!(q.is_done(260));
    let fetched = q.finish().unwrap();
    assert_eq!(fetched.messages, vec![m2]);
}

/// A replica that answers first with nothing new cannot end a fetch: the answers of a
/// majority are merged.
#[test]
fn a_fetch_is_not_decided_by_the_first_answer() {
    let mut f = Fixture::new(5, ShareOptions::default());
    let mut r = f.recipient();
    f.certify(&mut r);
    let m1 = r.seal(b"one", [1; 16], NOW, &mut f.rng).unwrap();
    let k = keys(&f);
    let cursor: Cursor = BoundedVec::new(vec![(r.public_key(), 1)]).unwrap();
    let gather = FetchGather::new(f.sender.address(), f.sender.public_key(), cursor);
    let mut q = Quorum::new(&k, gather, 250);
    let nothing = || {
        Ok(ReplicaResponse::Messages {
            messages: BoundedVec::default(),
        })
    };
    q.handle_answer(k[0], nothing(), 0);
    q.handle_answer(k[1], nothing(), 0);
    assert!(!q.is_done(10_000), "two of five are not a majority");
    q.handle_answer(
        k[2],
        Ok(ReplicaResponse::Messages {
            messages: BoundedVec::truncated(vec![m1.clone()]),
        }),
        20_000,
    );
    assert!(q.is_done(20_250));
    assert_eq!(q.finish().unwrap().messages, vec![m1]);
}

/// A search that found a mailbox nowhere says it does not exist only when the nodes
/// nearest its address all said they hold nothing: a silent one among them may hold it.
#[test]
fn a_mailbox_is_absent_only_when_its_nearest_nodes_say_so() {
    use tigress_protocol::crypto::SigningKey;
    use tigress_protocol::id::Address;
    use tigress_protocol::placement::nearest;
    use tigress_protocol::quorum::{SearchGather, absence};
    use tigress_protocol::rpc::RemoteError;

    let address = Address([7; 32]);
    let all: Vec<PublicKey> = (0..8u8)
        .map(|i| SigningKey::from_seed(&[i + 40; 32]).public_key())
        .collect();
    let near = nearest(all.iter().copied(), &address, 8);
    let not_found = || {
        Ok(ReplicaResponse::Error(RemoteError::new(
            ErrorCode::NotFound,
            "no such mailbox",
        )))
    };
    // One round: what a search gather makes of each answer.
    let round = |answers: Vec<(PublicKey, tigress_protocol::quorum::Answer)>| {
        let targets: Vec<PublicKey> = answers.iter().map(|(k, _)| *k).collect();
        let mut q = Quorum::new(
            &targets,
            SearchGather::new(|r| matches!(r, ReplicaResponse::Genesis(_))),
            0,
        );
        for (k, a) in answers {
            q.handle_answer(k, a, 0);
        }
        assert!(q.is_done(0));
        q.finish().unwrap_err()
    };

    // Every node asked holds nothing: absent.
    let heard = round(near.iter().map(|k| (*k, not_found())).collect());
    assert_eq!(
        absence(&address, &near, &heard, 3).code,
        ErrorCode::NotFound
    );

    // The three nearest say so; a farther one is silent: still absent.
    let mut answers: Vec<_> = near[..7].iter().map(|k| (*k, not_found())).collect();
    answers.push((near[7], Err(CallError::Timeout)));
    let heard = round(answers);
    assert_eq!(
        absence(&address, &near, &heard, 3).code,
        ErrorCode::NotFound
    );

    // The nearest is silent (unreachable, busy, rate-limited, or answering with a record
    // the request does not fit), every other says "nothing here": unavailable.
    let silences = [
        Err(CallError::Unreachable),
        Ok(ReplicaResponse::Error(RemoteError::new(
            ErrorCode::Unavailable,
            "busy",
        ))),
        Ok(ReplicaResponse::Error(RemoteError::new(
            ErrorCode::RateLimited,
            "slow down",
        ))),
        Ok(ReplicaResponse::Summaries {
            summaries: BoundedVec::truncated(Vec::new()),
        }),
    ];
    for silence in silences {
        let mut answers = vec![(near[0], silence.clone())];
        answers.extend(near[1..].iter().map(|k| (*k, not_found())));
        let heard = round(answers);
        let e = absence(&address, &near, &heard, 3);
        assert_eq!(e.code, ErrorCode::Unavailable, "{silence:?}: {e}");
        assert!(e.to_string().contains("2 of the 3"), "{e}");
    }

    // Asked in one round and never heard (its round ended without it) counts as silent,
    // and a node heard twice counts by its first word.
    let heard = round(near[1..].iter().map(|k| (*k, not_found())).collect());
    assert_eq!(
        absence(&address, &near, &heard, 3).code,
        ErrorCode::Unavailable
    );
    let mut twice = round(vec![(near[0], Err(CallError::Timeout))]);
    twice.extend(round(near.iter().map(|k| (*k, not_found())).collect()));
    assert_eq!(
        absence(&address, &near, &twice, 3).code,
        ErrorCode::Unavailable
    );

    // Holders that refuse the request (the mailbox exists, the request is not
    // authorized) are passed on when a majority of the nearest say so, not turned into
    // absence.
    let unauthorized = || {
        Ok(ReplicaResponse::Error(RemoteError::new(
            ErrorCode::Unauthorized,
            "not a party",
        )))
    };
    let mut answers = vec![(near[1], unauthorized()), (near[2], unauthorized())];
    answers.extend(near[3..].iter().map(|k| (*k, not_found())));
    answers.push((near[0], not_found()));
    let heard = round(answers);
    assert_eq!(
        absence(&address, &near, &heard, 3).code,
        ErrorCode::Unauthorized
    );

    // One node's "gone" is one voice: a liar among the nearest, or any number of them
    // farther off, cannot end a search whose nearest nodes are silent.
    let gone = || {
        Ok(ReplicaResponse::Error(RemoteError::new(
            ErrorCode::Gone,
            "deleted",
        )))
    };
    let mut answers = vec![(near[0], gone())];
    answers.extend(near[3..].iter().map(|k| (*k, gone())));
    let heard = round(answers);
    let e = absence(&address, &near, &heard, 3);
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    // Two of the three nearest saying so is a tombstone.
    let heard = round(vec![(near[0], gone()), (near[2], gone())]);
    assert_eq!(absence(&address, &near, &heard, 3).code, ErrorCode::Gone);

    // Nobody asked: unavailable, never absent.
    assert_eq!(absence(&address, &[], &[], 3).code, ErrorCode::Unavailable);
}

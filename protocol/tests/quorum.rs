//! The quorums an entry node runs: what is enough, what is refused, what is merged.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;

use common::{Fixture, NOW};
use tigress_protocol::ErrorCode;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::quorum::{CallError, FetchGather, Quorum, ReadGather, WriteGather};
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
    })
}

#[test]
fn a_write_needs_a_strict_majority_of_durable_stores() {
    let f = Fixture::new(5, ShareOptions::default());
    let k = keys(&f);
    let mut q = Quorum::new(&k, WriteGather::new(), 0);
    q.handle_answer(k[0], Ok(ReplicaResponse::Stored { duplicate: false }), 0);
    q.handle_answer(k[0], Ok(ReplicaResponse::Stored { duplicate: false }), 0);
    q.handle_answer(k[1], Ok(ReplicaResponse::Stored { duplicate: true }), 0);
    assert!(
        !q.is_done(0),
        "two distinct replicas of five are not a majority"
    );
    q.handle_answer(k[2], Err(CallError::Timeout), 0);
    q.handle_answer(k[3], Err(CallError::Unreachable), 0);
    q.handle_answer(k[4], Err(CallError::Timeout), 0);
    assert!(q.is_done(0));
    let e = q.finish().unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
}

/// A view merged from a minority could miss a certificate a majority acknowledged: the
/// read is refused instead (the simulator found this).
#[test]
fn a_read_heard_by_a_minority_is_refused_not_partial() {
    let mut f = Fixture::new(5, ShareOptions::default());
    let mut r = f.recipient();
    // Certified and stored on replicas 0..3 only.
    let receipts = f.grant_on(&r, &[0, 1, 2]);
    let tigress_protocol::mailbox::ClaimTally::Certified(cert) =
        tigress_protocol::mailbox::tally_claim(f.sender.genesis(), r.claim(), &receipts)
    else {
        panic!("three of five certify");
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
    // New messages and a majority answered: done without the grace.
    assert!(q.is_done(10));
    let fetched = q.finish().unwrap();
    assert_eq!(fetched.messages, vec![m2]);
}

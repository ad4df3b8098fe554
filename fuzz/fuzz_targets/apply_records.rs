//! The validation entry points on decoded-but-hostile records: a live mailbox with a
//! certified recipient is offered whatever the input decodes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tigress_protocol::crypto::SigningKey;
use tigress_protocol::mailbox::{ClaimTally, Limits, MailboxState, tally_claim};
use tigress_protocol::record::{
    Claim, ClaimCertificate, Delete, Genesis, Message, ReadRequest, Receipt, Record, Relinquish,
    Resolve,
};
use tigress_protocol::session::{RecipientSession, SenderSession, ShareIdentity, ShareOptions};

const NOW: u64 = 1_800_000_000;

fn mailbox() -> Option<(MailboxState, SigningKey, Limits)> {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let limits = Limits::default();
    let replica = SigningKey::generate(&mut rng);
    let (sender, url) = SenderSession::create(
        ShareIdentity::random(&mut rng),
        "https://relay.example",
        vec![replica.public_key()],
        b"fuzz",
        &ShareOptions::default(),
        NOW,
        &mut rng,
    )
    .ok()?;
    let mut state = MailboxState::create(sender.genesis().clone(), &limits, NOW).ok()?;
    let (r, _) =
        RecipientSession::open(&url, sender.genesis().clone(), &limits, NOW, &mut rng).ok()?;
    let (receipt, _) = state.grant(r.claim(), &replica, &limits, NOW).ok()?;
    if let ClaimTally::Certified(cert) = tally_claim(state.genesis(), r.claim(), &[receipt]) {
        state.accept_certificate(&cert, &limits, NOW).ok()?;
    }
    Some((state, replica, limits))
}

fuzz_target!(|data: &[u8]| {
    let Some((mut state, replica, limits)) = mailbox() else {
        return;
    };
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let now = NOW + u64::from(selector);
    match selector % 8 {
        0 => {
            if let Ok(g) = Genesis::from_bytes(rest) {
                let _ = state.offer_genesis(&g, now);
                let _ = MailboxState::create(g, &limits, now);
            }
        }
        1 => {
            if let Ok(c) = Claim::from_bytes(rest) {
                let _ = state.grant(&c, &replica, &limits, now);
            }
        }
        2 => {
            if let Ok(c) = ClaimCertificate::from_bytes(rest) {
                let _ = state.accept_certificate(&c, &limits, now);
            }
        }
        3 => {
            if let Ok(r) = Resolve::from_bytes(rest) {
                let _ = state.resolve(&r, &limits, now);
            }
        }
        4 => {
            if let Ok(m) = Message::from_bytes(rest) {
                let _ = state.apply_message(&m, &limits, now);
            }
        }
        5 => {
            if let Ok(d) = Delete::from_bytes(rest) {
                let _ = state.delete(&d, &limits, now);
            }
        }
        6 => {
            if let Ok(r) = Relinquish::from_bytes(rest) {
                let _ = state.relinquish(&r, &limits, now);
            }
        }
        _ => {
            if let Ok(r) = ReadRequest::from_bytes(rest) {
                let _ = state.authorize_read(&r, r.body.scope, &limits, now);
                let _ = state.authorize_open(&r, &limits, now);
            }
            if let Ok(r) = Receipt::from_bytes(rest) {
                let _ = state.mark_contested(&[r], now);
            }
        }
    }
});

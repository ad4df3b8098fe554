//! Criterion benchmarks of the protocol operations: `cargo bench -p tigress-protocol`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tigress_protocol::crypto::SigningKey;
use tigress_protocol::mailbox::{self, ClaimTally, Limits, MailboxState, tally_claim};
use tigress_protocol::record::{
    Claim, ClaimCertificate, Delete, Genesis, Message, Receipt, Record, Relinquish, Resolve,
};
use tigress_protocol::session::{RecipientSession, SenderSession, ShareOptions};

const NOW: u64 = 1_800_000_000;

struct Setup {
    rng: ChaCha20Rng,
    limits: Limits,
    replicas: Vec<SigningKey>,
    sender: SenderSession,
    recipient: RecipientSession,
    state: MailboxState,
    receipts: Vec<Receipt>,
    cert: ClaimCertificate,
}

fn setup(payload: usize) -> Setup {
    let mut rng = ChaCha20Rng::from_seed([11; 32]);
    let limits = Limits::default();
    let replicas: Vec<SigningKey> = (0..5).map(|_| SigningKey::generate(&mut rng)).collect();
    let (mut sender, url) = SenderSession::create(
        tigress_protocol::session::ShareIdentity::random(&mut rng),
        "https://relay.example",
        replicas.iter().map(SigningKey::public_key).collect(),
        &vec![7u8; payload],
        &ShareOptions::default(),
        NOW,
        &mut rng,
    )
    .unwrap();
    let mut states: Vec<MailboxState> = (0..5)
        .map(|_| MailboxState::create(sender.genesis().clone(), &limits, NOW).unwrap())
        .collect();
    let (mut recipient, _) =
        RecipientSession::open(&url, sender.genesis().clone(), &limits, NOW, &mut rng).unwrap();
    let receipts: Vec<Receipt> = states
        .iter_mut()
        .zip(&replicas)
        .map(|(s, k)| s.grant(recipient.claim(), k, &limits, NOW).unwrap().0)
        .collect();
    let ClaimTally::Certified(cert) = tally_claim(sender.genesis(), recipient.claim(), &receipts)
    else {
        panic!("certified")
    };
    let mut state = states.remove(0);
    state.accept_certificate(&cert, &limits, NOW).unwrap();
    recipient
        .accept_certificate((*cert).clone(), &limits, NOW)
        .unwrap();
    sender.add_certificate(&cert, &limits, NOW).unwrap();
    Setup {
        rng,
        limits,
        replicas,
        sender,
        recipient,
        state,
        receipts,
        cert: *cert,
    }
}

fn bench_genesis(c: &mut Criterion) {
    let mut g = c.benchmark_group("genesis");
    for size in [1024usize, 65535] {
        let mut s = setup(size);
        let replica_keys: Vec<_> = s.replicas.iter().map(SigningKey::public_key).collect();
        g.bench_with_input(BenchmarkId::new("create", size), &size, |b, &size| {
            let payload = vec![7u8; size];
            b.iter(|| {
                SenderSession::create(
                    tigress_protocol::session::ShareIdentity::random(&mut s.rng),
                    "https://relay.example",
                    replica_keys.clone(),
                    &payload,
                    &ShareOptions::default(),
                    NOW,
                    &mut s.rng,
                )
                .unwrap()
            })
        });
        let genesis = s.sender.genesis().clone();
        g.bench_with_input(
            BenchmarkId::new("validate", size),
            &genesis,
            |b, genesis| {
                b.iter(|| mailbox::validate_genesis(black_box(genesis), &s.limits, NOW).unwrap())
            },
        );
    }
    g.finish();
}

fn bench_claim(c: &mut Criterion) {
    let mut s = setup(1024);
    let mut g = c.benchmark_group("claim");
    g.bench_function("grant (validate claim + sign receipt)", |b| {
        b.iter_batched(
            || MailboxState::create(s.sender.genesis().clone(), &s.limits, NOW).unwrap(),
            |mut state| {
                state
                    .grant(s.recipient.claim(), &s.replicas[1], &s.limits, NOW)
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("tally 5 receipts into a certificate", |b| {
        b.iter(|| {
            tally_claim(
                s.sender.genesis(),
                s.recipient.claim(),
                black_box(&s.receipts),
            )
        })
    });
    g.bench_function("validate certificate (5 receipts)", |b| {
        b.iter(|| {
            mailbox::validate_certificate(s.sender.genesis(), black_box(&s.cert), &s.limits, NOW)
                .unwrap()
        })
    });
    let _ = &mut s.rng;
    g.finish();
}

fn bench_message(c: &mut Criterion) {
    let mut g = c.benchmark_group("message");
    for size in [1024usize, 65535] {
        let mut s = setup(1024);
        let plaintext = vec![3u8; size];
        g.bench_with_input(BenchmarkId::new("seal+sign", size), &size, |b, _| {
            b.iter(|| {
                s.recipient
                    .seal(&plaintext, [0; 16], NOW, &mut s.rng)
                    .unwrap()
            })
        });
        let mut fresh = setup(1024);
        let msg = fresh
            .recipient
            .seal(&plaintext, [0; 16], NOW, &mut fresh.rng)
            .unwrap();
        g.bench_with_input(BenchmarkId::new("replica check", size), &msg, |b, msg| {
            b.iter(|| {
                fresh
                    .state
                    .check_message(black_box(msg), &fresh.limits, NOW)
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("verify+open", size), &msg, |b, msg| {
            b.iter_batched(
                || fresh.sender.clone(),
                |mut sender| sender.receive(msg).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn codec<R: Record>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    r: &R,
) {
    let bytes = r.to_bytes();
    g.bench_function(format!("encode {} ({} B)", R::NAME, bytes.len()), |b| {
        b.iter(|| black_box(r).to_bytes())
    });
    g.bench_function(format!("decode {} ({} B)", R::NAME, bytes.len()), |b| {
        b.iter(|| R::from_bytes(black_box(&bytes)).unwrap())
    });
}

fn bench_codec(c: &mut Criterion) {
    let mut s = setup(1024);
    let msg: Message = s
        .recipient
        .seal(b"hello", [1; 16], NOW, &mut s.rng)
        .unwrap();
    let resolve: Resolve = s
        .sender
        .resolve(vec![s.recipient.claim().clone()], &s.limits, NOW)
        .unwrap();
    let delete: Delete = s.sender.delete(NOW);
    let relinquish: Relinquish = s.recipient.relinquish(NOW);
    let genesis: Genesis = s.sender.genesis().clone();
    let claim: Claim = s.recipient.claim().clone();
    let mut g = c.benchmark_group("codec");
    codec(&mut g, &genesis);
    codec(&mut g, &claim);
    codec(&mut g, &s.receipts[0]);
    codec(&mut g, &s.cert);
    codec(&mut g, &resolve);
    codec(&mut g, &msg);
    codec(&mut g, &delete);
    codec(&mut g, &relinquish);
    g.finish();
}

/// Ed25519: one strict verification against a batch of n (per batch).
fn bench_verify(c: &mut Criterion) {
    use tigress_protocol::crypto::batch::{Item, verify_all};
    use tigress_protocol::crypto::{PublicKey, Signature, SignatureKind};
    let mut g = c.benchmark_group("verify");
    let keys: Vec<SigningKey> = (0..16u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let body = vec![0x5au8; 300];
    let signed: Vec<(PublicKey, Signature)> = keys
        .iter()
        .map(|k| (k.public_key(), k.sign(SignatureKind::Receipt, &body)))
        .collect();
    // `PublicKey::verify` remembers what verified, so a loop over it measures the memory:
    // this is the strict check itself, as `verify` runs it on a miss.
    let strict = |key: &PublicKey, sig: &Signature, body: &[u8]| {
        let k = ed25519_dalek::VerifyingKey::from_bytes(key.as_bytes()).unwrap();
        assert!(!k.is_weak());
        let bytes = tigress_protocol::crypto::sign::signed_bytes(SignatureKind::Receipt, body);
        k.verify_strict(&bytes, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .unwrap();
    };
    g.bench_function("strict, one signature", |b| {
        let (key, sig) = &signed[0];
        b.iter(|| strict(key, sig, black_box(&body)));
    });
    g.bench_function("remembered, one signature", |b| {
        let (key, sig) = &signed[0];
        b.iter(|| {
            key.verify(SignatureKind::Receipt, black_box(&body), sig)
                .unwrap()
        });
    });
    for n in [5usize, 16] {
        let items: Vec<Item<'_>> = signed[..n]
            .iter()
            .map(|(key, signature)| Item {
                key,
                kind: SignatureKind::Receipt,
                body: &body,
                signature,
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("strict, one by one", n), &n, |b, _| {
            b.iter(|| {
                for i in &items {
                    strict(i.key, i.signature, black_box(i.body));
                }
            });
        });
        g.bench_with_input(BenchmarkId::new("batch, screened", n), &n, |b, _| {
            b.iter(|| verify_all(black_box(&items)).unwrap());
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_verify,
    bench_genesis,
    bench_claim,
    bench_message,
    bench_codec
);
criterion_main!(benches);

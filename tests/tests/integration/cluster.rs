//! In-process clusters: placement on the closest nodes, any node as the entry, quorum
//! claims under races, a misbehaving replica, delete and expiry on every replica.

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use tigress_bootstrap::Cluster;
use tigress_client::{Client, ClientError, StateDir};
use tigress_node::replica::ResponseFilter;
use tigress_protocol::record::Policy;
use tigress_protocol::rpc::{ClientRequest, ReplicaRequest, ReplicaResponse};
use tigress_protocol::session::ShareOptions;
use tigress_protocol::{ErrorCode, ShareUrl};

async fn client(cluster: &Cluster, i: usize, state: &std::path::Path) -> Client {
    let addr: Multiaddr = cluster.addr(i % cluster.len()).unwrap();
    crate::support::client(&addr, state).await
}

/// A full transfer where every step goes through the next entry node.
async fn transfer_through_every_entry(n: usize) {
    let cluster = Cluster::start(n, |_, _| {}).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut step = 0;
    let mut next = || {
        step += 1;
        step - 1
    };
    let shared = client(&cluster, next(), &a)
        .await
        .share(b"car key", &ShareOptions::default(), None)
        .await
        .unwrap();
    let id = shared.share_id;
    // The replica set is the R closest nodes.
    let state = StateDir::open(&a).unwrap().load(&id).unwrap();
    let tigress_client::Party::Sender(s) = &state.party else {
        panic!()
    };
    assert_eq!(s.genesis().header().replicas.len(), n.min(5));
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    assert_eq!(
        client(&cluster, next(), &b)
            .await
            .accept(&url)
            .await
            .unwrap(),
        b"car key"
    );
    for round in 0..3 {
        let text = format!("request {round}");
        client(&cluster, next(), &b)
            .await
            .send(&id, text.as_bytes(), None)
            .await
            .unwrap();
        let got = client(&cluster, next(), &a)
            .await
            .recv(&id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(got.messages.len(), 1, "round {round}");
        assert_eq!(got.messages[0].plaintext, text.as_bytes());
        let text = format!("response {round}");
        client(&cluster, next(), &a)
            .await
            .send(&id, text.as_bytes(), None)
            .await
            .unwrap();
        let got = client(&cluster, next(), &b)
            .await
            .recv(&id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(got.messages[0].plaintext, text.as_bytes());
    }
    client(&cluster, next(), &a)
        .await
        .delete(&id)
        .await
        .unwrap();
    let err = client(&cluster, next(), &b)
        .await
        .recv(&id, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Gone));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_any_entry() {
    transfer_through_every_entry(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_any_entry() {
    transfer_through_every_entry(20).await;
}

/// Fifty nodes become ready (their lookups agree on where mailboxes live; their routing
/// tables need not hold every node) and carry a transfer through many entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_become_ready_and_carry_a_share() {
    let started = std::time::Instant::now();
    // Fifty nodes in one process on a loaded machine answer slowly: a longer replica
    // timeout, and a share retried as a user would on "try again later".
    let cluster = Cluster::start(50, |_, c| c.replica_timeout_ms = 10_000)
        .await
        .unwrap();
    eprintln!("50 in-process nodes ready after {:?}", started.elapsed());
    let tmp = tempfile::tempdir().unwrap();
    let alice = client(&cluster, 0, &tmp.path().join("alice")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let shared = loop {
        match alice
            .share(b"car key", &ShareOptions::default(), None)
            .await
        {
            Ok(shared) => break shared,
            Err(e)
                if e.code() == Some(ErrorCode::Unavailable)
                    && std::time::Instant::now() < deadline =>
            {
                eprintln!("share: {e}; again");
            }
            Err(e) => panic!("share: {e}"),
        }
    };
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let bob = client(&cluster, 49, &tmp.path().join("bob")).await;
    assert_eq!(bob.accept(&url).await.unwrap(), b"car key");
    bob.send(&shared.share_id, b"device key", None)
        .await
        .unwrap();
    let got = client(&cluster, 25, &tmp.path().join("alice"))
        .await
        .recv(&shared.share_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].plaintext, b"device key");
}

/// Races `claimants` recipients through different entry nodes; returns (certified,
/// contested) and checks the invariants.
async fn race_round(cluster: &Cluster, max: u8, claimants: usize) -> (usize, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let options = ShareOptions {
        policy: Policy {
            max_recipients: max,
            ..Policy::default()
        },
        ..ShareOptions::default()
    };
    let shared = client(cluster, 0, &tmp.path().join("alice"))
        .await
        .share(b"key", &options, None)
        .await
        .unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let mut racers = Vec::new();
    for i in 0..claimants {
        let c = client(cluster, i, &tmp.path().join(format!("claimant-{i}"))).await;
        let url = url.clone();
        racers.push(tokio::spawn(async move { c.accept(&url).await }));
    }
    let mut certified = 0;
    let mut contested_errors = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(payload) => {
                assert_eq!(payload, b"key");
                certified += 1;
            }
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::Conflict, "losers get a conflict: {e}");
                if e.message.as_str().contains("contested") {
                    contested_errors += 1;
                }
            }
            Err(e) => panic!("unexpected claim failure: {e}"),
        }
    }
    assert!(
        certified <= usize::from(max),
        "{certified} certificates with max {max}"
    );
    let status = client(cluster, 1, &tmp.path().join("alice"))
        .await
        .status(url.mailbox_id().address())
        .await
        .unwrap();
    assert!(status.recipients <= max);
    assert_eq!(usize::from(status.recipients), certified);
    let contested = status.contested || contested_errors > 0;
    assert!(
        certified == usize::from(max) || contested,
        "free slots remain ({certified}/{max}) but the mailbox is not contested"
    );
    (certified, contested)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_races_never_certify_more_than_allowed() {
    let cluster = Cluster::start(5, |_, _| {}).await.unwrap();
    let mut summary = Vec::new();
    for round in 0..6 {
        summary.push(("max1", round, race_round(&cluster, 1, 16).await));
    }
    for round in 0..4 {
        summary.push(("max3", round, race_round(&cluster, 3, 16).await));
    }
    eprintln!("claim race rounds (policy, round, (certified, contested)): {summary:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contested_mailbox_is_resolved_by_the_sender() {
    let cluster = Cluster::start(5, |_, _| {}).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let alice = client(&cluster, 0, &tmp.path().join("alice")).await;
    let shared = alice
        .share(b"key", &ShareOptions::default(), None)
        .await
        .unwrap();
    let id = shared.share_id;
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let state = alice.state().load(&id).unwrap();
    let tigress_client::Party::Sender(s) = &state.party else {
        panic!()
    };
    let genesis = s.genesis().clone();
    let replicas = genesis.header().replicas.to_vec();
    // Two racers whose claims reached two replicas each (the race a leaked invitation
    // allows), applied straight to those replicas.
    let limits = tigress_protocol::mailbox::Limits::default();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([5; 32]);
    let node_of = |key: &tigress_protocol::crypto::PublicKey| {
        (0..cluster.len())
            .find(|i| cluster.node(*i).unwrap().identity().public_key() == *key)
            .unwrap()
    };
    // `share` returns once a majority stored the genesis; the others may still be
    // waiting for it. Hand it to every replica, so the grants below find it.
    for r in &replicas {
        let store = cluster.node(node_of(r)).unwrap().store().unwrap();
        let answer = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: genesis.clone(),
            })
            .await;
        assert!(
            matches!(answer, ReplicaResponse::Stored { .. }),
            "{answer:?}"
        );
    }
    for pair in [[0usize, 1], [2, 3]] {
        let (racer, _) = tigress_protocol::session::RecipientSession::open(
            &url,
            genesis.clone(),
            &limits,
            tigress_client::unix_now(),
            &mut rng,
        )
        .unwrap();
        for r in pair {
            let store = cluster
                .node(node_of(&replicas[r]))
                .unwrap()
                .store()
                .unwrap();
            let answer = store
                .apply(ReplicaRequest::Grant {
                    claim: racer.claim().clone(),
                })
                .await;
            assert!(matches!(answer, ReplicaResponse::Granted(_)), "{answer:?}");
        }
    }
    // A third claimant through an entry node gets the last replica: nobody can reach a
    // majority, so the mailbox is contested.
    let carol_dir = tmp.path().join("carol");
    let carol = client(&cluster, 4, &carol_dir).await;
    let err = carol.accept(&url).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert!(err.to_string().contains("contested"), "{err}");
    let status = alice.status(url.mailbox_id().address()).await.unwrap();
    assert!(status.contested);
    // A late claimant sees the contest too.
    let dave = client(&cluster, 1, &tmp.path().join("dave")).await;
    assert_eq!(
        dave.accept(&url).await.unwrap_err().code(),
        Some(ErrorCode::Conflict)
    );
    // The sender keeps carol.
    let carol_key = match &carol.state().load(&id).unwrap().party {
        tigress_client::Party::Recipient(r) => r.public_key(),
        _ => panic!(),
    };
    let claimants = alice.claimants(&id).await.unwrap();
    assert!(
        claimants.len() >= 3,
        "the sender sees every claimant: {claimants:?}"
    );
    assert!(claimants.contains(&carol_key));
    alice.resolve(&id, &[carol_key]).await.unwrap();
    let status = alice.status(url.mailbox_id().address()).await.unwrap();
    assert!(status.resolved && !status.contested);
    assert_eq!(status.recipients, 1);
    let seen = alice.party_status(&id).await.unwrap().unwrap();
    assert_eq!(seen.recipients, vec![carol_key]);
    // Carol accepts again (the resolve makes her the recipient) and talks; dave stays out.
    let carol = client(&cluster, 2, &carol_dir).await;
    assert_eq!(carol.accept(&url).await.unwrap(), b"key");
    carol.send(&id, b"kept", None).await.unwrap();
    let got = alice.recv(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.messages[0].plaintext, b"kept");
    assert_eq!(
        dave.accept(&url).await.unwrap_err().code(),
        Some(ErrorCode::Conflict)
    );
    cluster.shutdown().await;
}

/// A replica that forges receipts, serves an altered genesis, replays old messages and
/// withholds what it is asked to store.
struct Malicious;

impl ResponseFilter for Malicious {
    fn filter(&self, request: &ReplicaRequest, response: ReplicaResponse) -> ReplicaResponse {
        match (request, response) {
            (ReplicaRequest::Grant { .. }, ReplicaResponse::Granted(mut r)) => {
                // A receipt for another slot, with a signature that no longer matches.
                r.body.slot = r.body.slot.wrapping_add(1);
                ReplicaResponse::Granted(r)
            }
            (
                ReplicaRequest::GetGenesis { .. } | ReplicaRequest::Open { .. },
                ReplicaResponse::Genesis(mut g),
            ) => {
                g.body.header.expires_at += 3600;
                ReplicaResponse::Genesis(g)
            }
            (ReplicaRequest::Fetch { .. }, ReplicaResponse::Messages { messages }) => {
                // Replays: every message twice, and a tampered copy.
                let mut out = messages.clone().into_vec();
                out.extend(messages.iter().cloned());
                if let Some(mut m) = messages.first().cloned() {
                    m.body.header.seq += 100;
                    out.push(m);
                }
                ReplicaResponse::Messages {
                    messages: tigress_protocol::wire::BoundedVec::truncated(out),
                }
            }
            (ReplicaRequest::Digest { .. }, _) => ReplicaResponse::Error(
                tigress_protocol::rpc::RemoteError::new(ErrorCode::NotFound, "withheld"),
            ),
            (_, other) => other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_replica_cannot_disturb_a_transfer() {
    let cluster = Cluster::start_with(
        5,
        |_, _| {},
        |i, _| tigress_node::Doubles {
            replica: (i == 2).then(|| Arc::new(Malicious) as Arc<dyn ResponseFilter>),
            ..tigress_node::Doubles::default()
        },
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("alice"), tmp.path().join("bob"));
    // Every step through the malicious node as the entry, and through honest ones.
    for entry in [2usize, 0, 4] {
        let alice = client(&cluster, entry, &a).await;
        let bob = client(&cluster, entry + 1, &b).await;
        let shared = alice
            .share(b"first", &ShareOptions::default(), None)
            .await
            .unwrap();
        let id = shared.share_id;
        assert_eq!(bob.accept(&shared.url).await.unwrap(), b"first");
        for i in 0..3u8 {
            bob.send(&id, &[i], None).await.unwrap();
            let got = alice.recv(&id, Duration::from_secs(10)).await.unwrap();
            let texts: Vec<Vec<u8>> = got.messages.into_iter().map(|m| m.plaintext).collect();
            assert_eq!(
                texts,
                vec![vec![i]],
                "replays and forgeries are not delivered"
            );
        }
        alice.delete(&id).await.unwrap();
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_reaches_every_replica_and_a_replayed_genesis_is_refused() {
    let cluster = Cluster::start(5, |_, _| {}).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let alice = client(&cluster, 0, &tmp.path().join("alice")).await;
    let shared = alice
        .share(b"k", &ShareOptions::default(), None)
        .await
        .unwrap();
    let state = alice.state().load(&shared.share_id).unwrap();
    let tigress_client::Party::Sender(s) = &state.party else {
        panic!()
    };
    let genesis = s.genesis().clone();
    let address = genesis.header().address;
    alice.delete(&shared.share_id).await.unwrap();
    // Every replica ends up with the tombstone (a majority at once, the rest by
    // anti-entropy).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut gone = 0;
        for i in 0..cluster.len() {
            let store = cluster.node(i).unwrap().store().unwrap();
            if let ReplicaResponse::Error(e) = store.apply(ReplicaRequest::Status { address }).await
                && e.code == ErrorCode::Gone
            {
                gone += 1;
            }
        }
        if gone == cluster.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {gone} replicas hold the tombstone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same genesis again, through any entry, and straight to every replica.
    for i in 0..cluster.len() {
        let c = client(&cluster, i, &tmp.path().join("mallory")).await;
        let r = c
            .connection()
            .unwrap()
            .request(ClientRequest::Create {
                genesis: genesis.clone(),
                admission: 0,
            })
            .await;
        assert!(
            matches!(r, Err(ClientError::Remote(ref e)) if e.code == ErrorCode::Gone),
            "{r:?}"
        );
        let store = cluster.node(i).unwrap().store().unwrap();
        let direct = store
            .apply(ReplicaRequest::StoreGenesis {
                genesis: genesis.clone(),
            })
            .await;
        assert!(matches!(direct, ReplicaResponse::Error(ref e) if e.code == ErrorCode::Gone));
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_run_completes_its_transfers() {
    let cluster = Cluster::start(3, |_, c| c.replication = 3).await.unwrap();
    let addrs: Vec<Multiaddr> = (0..3).map(|i| cluster.addr(i).unwrap()).collect();
    // As users run (oblivious requests), and straight to the nodes.
    for direct in [false, true] {
        let opts = tigress_bootstrap::bench::BenchOptions {
            transfers: 6,
            concurrency: 3,
            messages: 3,
            payload_bytes: 1024,
            direct,
        };
        let report = tigress_bootstrap::bench::run(&addrs, &[], &[], &opts)
            .await
            .unwrap();
        assert_eq!(report.ok, 6, "failures: {:?}", report.failures);
        assert_eq!(report.failed, 0);
        assert!(
            report
                .line()
                .starts_with("bench transfers=6 ok=6 failed=0 ")
        );
    }
    cluster.shutdown().await;
}

/// A short `scale` run: a node leaves while transfers run, lookups are sampled and
/// traced, and every acknowledged write is read back with the nodes still away (one of
/// five replicas away leaves a majority), then again with every node back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_run_under_churn_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts = tigress_bootstrap::scale::ScaleOptions {
        nodes: 10,
        churn: 0.6,
        minutes: 0.3,
        replication: 5,
        writers: 2,
        seed: 3,
    };
    let report = tigress_bootstrap::scale::run(&opts, dir.path())
        .await
        .unwrap();
    assert!(report.departures >= 1, "no node left");
    assert!(!report.requests.is_empty() && report.hops.len() == report.requests.len());
    assert!(report.transfers_ok > 0, "{}", report.line());
    assert!(report.writes_acked > report.transfers_ok);
    assert_eq!(report.writes_unavailable, 0, "{}", report.detail());
    assert_eq!(report.writes_lost, 0, "{}", report.detail());
    let line = report.line();
    assert!(
        line.starts_with("scale nodes=10 churn=0.6 minutes=0.3 lookups="),
        "{line}"
    );
    assert!(line.ends_with(" mailboxes_lost=0"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_reaches_every_replica() {
    let cluster = Cluster::start(5, |_, c| c.sweep_interval_secs = 1)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let alice = client(&cluster, 0, &tmp.path().join("alice")).await;
    let options = ShareOptions {
        ttl_secs: 2,
        ..ShareOptions::default()
    };
    let shared = alice.share(b"k", &options, None).await.unwrap();
    let address = shared.url.mailbox_id().address();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut refused = 0;
        for i in 0..cluster.len() {
            let store = cluster.node(i).unwrap().store().unwrap();
            if let ReplicaResponse::Error(e) = store.apply(ReplicaRequest::Status { address }).await
                && (e.code == ErrorCode::Gone || e.code == ErrorCode::NotFound)
            {
                refused += 1;
            }
        }
        if refused == cluster.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{refused} replicas refuse the expired mailbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Through any entry, a newcomer gets nothing.
    let bob = client(&cluster, 3, &tmp.path().join("bob")).await;
    let err = bob.accept(&shared.url).await.unwrap_err();
    assert!(
        matches!(err.code(), Some(ErrorCode::Gone | ErrorCode::NotFound)),
        "{err}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oblivious_transfer_goes_through_relays() {
    let cluster = Cluster::start(5, |_, c| {
        c.replication = 2;
        c.standbys = 1;
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let alice =
        crate::support::oblivious_client(&cluster.addr(0).unwrap(), tmp.path().join("a")).await;
    let bob =
        crate::support::oblivious_client(&cluster.addr(3).unwrap(), tmp.path().join("b")).await;
    let shared = alice
        .share(b"hotel key", &ShareOptions::default(), None)
        .await
        .unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    assert_eq!(bob.accept(&url).await.unwrap(), b"hotel key");
    let id = shared.share_id;
    for round in 0..3 {
        let text = format!("request {round}");
        bob.send(&id, text.as_bytes(), None).await.unwrap();
        let got = alice.recv(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.messages[0].plaintext, text.as_bytes());
        alice.send(&id, b"reply", None).await.unwrap();
        let got = bob.recv(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.messages[0].plaintext, b"reply");
    }
    let status = alice.status(id.address()).await.unwrap();
    assert_eq!(status.recipients, 1);
    alice.delete(&id).await.unwrap();
    assert!(bob.recv(&id, Duration::ZERO).await.is_err());
}

/// Replica requests the node handled, from its metrics.
fn replica_requests_handled(node: &tigress_node::Node) -> u64 {
    node.metrics_text()
        .lines()
        .filter(|l| l.starts_with("tigress_requests_total{protocol=\"replica\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The libp2p streams of a node that negotiated (or proposed) `protocol`, with the peer
/// at their other end: both those it opened and those it accepted.
fn streams_of(tap: &tigress_node::tap::Tap, protocol: &str) -> Vec<Option<libp2p::PeerId>> {
    // multistream-select's line: its length, the name, a newline.
    let mut line = vec![u8::try_from(protocol.len() + 1).unwrap()];
    line.extend_from_slice(protocol.as_bytes());
    line.push(b'\n');
    tap.received()
        .iter()
        .filter(|r| r.kind == "libp2p")
        .filter(|r| {
            let bytes = r.bytes();
            let head = bytes.get(..bytes.len().min(64)).unwrap_or_default();
            head.windows(line.len()).any(|w| w == line.as_slice())
        })
        .map(|r| r.peer)
        .collect()
}

/// Replica requests ride on one kept stream per pair of nodes (`/tigress/replica/2`), not
/// on a substream each. A node that speaks only `/tigress/replica/1` (an older node of a
/// mixed network) is asked over request-response after one refused link, asks that way
/// itself, and transfers through it go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_requests_ride_one_stream_per_peer_and_old_nodes_are_still_served() {
    use tigress_node::tap::Tap;
    const OLD: usize = 4;
    let taps: Vec<Tap> = (0..5).map(|_| Tap::new()).collect();
    let for_nodes = taps.clone();
    let cluster = Cluster::start_with(
        5,
        // Links (and connections) stay up for the whole test.
        |_, c| c.idle_timeout_secs = 300,
        move |i, _| tigress_node::Doubles {
            tap: for_nodes.get(i).cloned(),
            without_links: i == OLD,
            ..tigress_node::Doubles::default()
        },
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Five transfers, each step through the next entry, the old node among them.
    let mut entry = 0;
    for t in 0..5 {
        let (a, b) = (
            tmp.path().join(format!("alice{t}")),
            tmp.path().join(format!("bob{t}")),
        );
        let mut next = || {
            entry += 1;
            entry % 5
        };
        let shared = client(&cluster, next(), &a)
            .await
            .share(b"car key", &ShareOptions::default(), None)
            .await
            .unwrap();
        let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
        assert_eq!(
            client(&cluster, next(), &b)
                .await
                .accept(&url)
                .await
                .unwrap(),
            b"car key"
        );
        for round in 0..2 {
            let text = format!("request {t}.{round}");
            client(&cluster, next(), &b)
                .await
                .send(&shared.share_id, text.as_bytes(), None)
                .await
                .unwrap();
            let got = client(&cluster, next(), &a)
                .await
                .recv(&shared.share_id, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(got.messages[0].plaintext, text.as_bytes());
        }
    }
    let old = cluster.node(OLD).unwrap().peer_id();
    let (mut links, mut handled) = (0, 0);
    for (i, tap) in taps.iter().enumerate() {
        let node = cluster.node(i).unwrap();
        let requests = replica_requests_handled(node);
        let over_links = streams_of(tap, "/tigress/replica/2");
        let one_each = streams_of(tap, "/tigress/replica/1");
        eprintln!(
            "node {i}: {requests} replica requests, {} link streams, {} request-response streams",
            over_links.len(),
            one_each.len()
        );
        assert!(requests > 0, "node {i} is a replica of every mailbox");
        if i == OLD {
            // The other nodes asked it over request-response, after at most one refused
            // link each (a link is tried once, then the peer is remembered).
            let askers: std::collections::HashSet<_> = one_each.iter().collect();
            assert!(askers.len() >= 2, "node {i}: asked by {askers:?}");
            assert!(over_links.len() <= 4, "node {i}: {}", over_links.len());
        } else {
            // Only the old node uses request-response with it.
            assert!(
                one_each.iter().all(|p| *p == Some(old)),
                "node {i}: request-response from a node with links"
            );
            assert!(
                !one_each.is_empty(),
                "node {i}: the old node asks the old way"
            );
            links += over_links.len() as u64;
            handled += requests.saturating_sub(one_each.len() as u64);
        }
    }
    // Many requests per link, where request-response opened a stream for each.
    assert!(links > 0);
    assert!(
        handled >= 3 * links,
        "{handled} requests over {links} link streams"
    );
    cluster.shutdown().await;
}

/// While every node that holds a mailbox is away, the nodes still up hold nothing at its
/// address; a recipient reaching them hears "unavailable, try again", not "no such
/// mailbox" (which would make it give up, and be remembered by the entry as absent), and
/// once the holders are back the share is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_whose_holders_are_away_is_unavailable_not_absent() {
    let mut cluster = Cluster::start(7, |_, c| {
        c.replication = 3;
        c.standbys = 0;
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // The sender shares through a node that will stay up: one not among the holders.
    let (_, shared, away, entry) =
        crate::support::share_placed(&cluster, tmp.path(), &[], &[]).await;
    assert_eq!(away.len(), 3, "three replicas, no standbys");
    for i in &away {
        cluster.stop(*i).await;
    }

    // The recipient comes through another node that stays up, one that never saw the
    // genesis (the sender's entry keeps it in its cache).
    let other = (0..cluster.len())
        .find(|i| *i != entry && !away.contains(i))
        .unwrap();
    let bob = client(&cluster, other, &tmp.path().join("bob")).await;
    for attempt in 0..2 {
        let err = bob.accept(&shared.url).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::Unavailable),
            "attempt {attempt}: {err}"
        );
    }

    // A status, asked by anyone, says the same.
    let address = shared.url.mailbox_id().address();
    let err = bob.status(address).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "status: {err}");

    for i in &away {
        cluster.restart(*i).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let payload = loop {
        match bob.accept(&shared.url).await {
            Ok(p) => break p,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the share is not accepted once its holders are back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(payload, b"front door");
    cluster.shutdown().await;
}

/// A node's routing table holds few of the nodes far from it (k per distance bucket;
/// here one per network prefix), and libp2p remembers the addresses of only the last
/// hundred peers that identified themselves. A replica out of both used to be
/// "unreachable" to an entry: claims failed in networks of a few hundred nodes. The node
/// finds it with a lookup and keeps the addresses lookups find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_the_routing_table_lacks_is_found_not_unreachable() {
    crate::support::debug_logs();
    use futures::StreamExt as _;
    use libp2p::identify;
    const CROWD: usize = 5;
    const STRANGERS: usize = 120;
    let ip = |i: usize| match i {
        0 => "127.0.1.1".to_owned(),
        i => format!("127.0.2.{i}"),
    };
    // Quiet nodes: no routing refresh or anti-entropy to reconnect them while the test
    // waits for a connection to idle out.
    let mut cluster = Cluster::start(CROWD + 1, |i, c| {
        c.listen = vec![format!("/ip4/{}/tcp/0", ip(i))];
        c.bootstrap_interval_secs = 3600;
        c.anti_entropy_interval_secs = 3600;
    })
    .await
    .unwrap();
    let lone = cluster
        .add(
            [43; 32],
            |c| {
                c.listen = vec!["/ip4/127.0.31.1/tcp/0".into()];
                c.bootstrap_interval_secs = 3600;
                c.anti_entropy_interval_secs = 3600;
                c.max_peers_per_prefix = 1;
                c.max_peers_per_prefix_per_bucket = 1;
                c.idle_timeout_secs = 1;
            },
            |_| tigress_node::Doubles::default(),
        )
        .await
        .unwrap();
    let lone_addr: Multiaddr = cluster.addr(lone).unwrap();
    let peer = |i: usize| cluster.node(i).unwrap().peer_id();

    // A node of the crowd out of the lone node's table and not connected to it (its
    // connections idle out after a second): `None` while there is none.
    let out_of_reach = || async {
        let node = cluster.node(lone).unwrap();
        let table = node.routing_table().await;
        for i in 1..=CROWD {
            if !table.contains(&peer(i)) && !node.is_connected(peer(i)).await {
                return Some(i);
            }
        }
        None
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while out_of_reach().await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "every node of the crowd stayed in the table or connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // More peers identify themselves to it than libp2p remembers addresses of: each
    // listens (so its identify lists an address) in a network prefix of its own.
    for s in 0..STRANGERS {
        let mut swarm = crate::support::stranger_swarm_with(|key| {
            identify::Behaviour::new(identify::Config::new(
                tigress_transport::IDENTIFY_PROTOCOL.into(),
                key.public(),
            ))
        });
        // Each from a network prefix of its own: one prefix's connections are budgeted,
        // and a loaded node may not have seen the last stranger's close yet.
        let listen: Multiaddr = format!("/ip4/127.0.{}.1/tcp/0", 60 + s).parse().unwrap();
        let mut listener = swarm.listen_on(listen.clone()).unwrap();
        // Listening before dialing, so its identify lists the address; dialed again if
        // the connection fails or closes first (a loaded node may refuse it for a while).
        // A dial leaves from the listening port, so a dial again first listens on a new
        // one: the old pair of ports may still be held by the closed connection.
        let mut last = String::from("nothing yet");
        let identified = tokio::time::timeout(Duration::from_secs(60), async {
            use libp2p::swarm::SwarmEvent;
            loop {
                match swarm.next().await {
                    Some(SwarmEvent::NewListenAddr { listener_id, .. })
                        if listener_id == listener =>
                    {
                        swarm.dial(lone_addr.clone()).unwrap();
                    }
                    Some(SwarmEvent::Behaviour(identify::Event::Received { .. })) => break,
                    Some(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                        last = error.to_string();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        swarm.remove_listener(listener);
                        listener = swarm.listen_on(listen.clone()).unwrap();
                    }
                    Some(SwarmEvent::ConnectionClosed { cause, .. }) => {
                        last = format!("closed: {cause:?}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        swarm.remove_listener(listener);
                        listener = swarm.listen_on(listen.clone()).unwrap();
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(
            identified.is_ok(),
            "stranger {s} was never identified by the node: {last}"
        );
    }
    // Asked once one is out of reach again (a loaded machine may keep a connection a
    // while).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let answer = loop {
        if let Some(target) = out_of_reach().await {
            break cluster
                .node(lone)
                .unwrap()
                .ask_replica(
                    peer(target),
                    ReplicaRequest::Status {
                        address: tigress_protocol::Address([9; 32]),
                    },
                )
                .await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every node of the crowd stayed in the table or connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lookups: Vec<String> = cluster
        .node(lone)
        .unwrap()
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("tigress_replica_lookups"))
        .map(str::to_owned)
        .collect();
    assert!(
        matches!(&answer, Ok(ReplicaResponse::Error(e)) if e.code == ErrorCode::NotFound),
        "{answer:?} (the lone node's {lookups:?}, table {:?})",
        cluster.node(lone).unwrap().routing_table().await
    );
    cluster.shutdown().await;
}

/// A node cut off from the network (its only peer, its seed, went away) dials the seed
/// again once it is back, long before its periodic bootstrap (five minutes here): nothing
/// else would reconnect them, since the seed does not know the node and the node's
/// table already holds the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_its_seed_rejoins_when_the_seed_is_back() {
    use tigress_node::{Config, Node, NodeIdentity, Reachability};
    let tmp = tempfile::tempdir().unwrap();
    let config = |name: &str, listen: String, bootstrap: Vec<String>| Config {
        data_dir: Some(tmp.path().join(name)),
        listen: vec![listen],
        http: None,
        admin: Some("off".into()),
        bootstrap,
        bootstrap_interval_secs: 300,
        anti_entropy_interval_secs: 3600,
        reachability: Reachability::Public,
        max_peers_per_prefix: 0,
        max_peers_per_prefix_per_bucket: 0,
        ..Config::default()
    };
    let seed_id = NodeIdentity::load_or_create(&tmp.path().join("seed"))
        .unwrap()
        .peer_id();
    let seed = Node::start(config("seed", "/ip4/127.0.0.1/tcp/0".into(), Vec::new()))
        .await
        .unwrap();
    let seed_listen = seed.listen_addrs().first().unwrap().clone();
    let node = Node::start(config(
        "node",
        "/ip4/127.0.0.1/tcp/0".into(),
        vec![format!("{seed_listen}/p2p/{seed_id}")],
    ))
    .await
    .unwrap();
    let joined = async |node: &Node, want: bool, what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !(node.is_connected(seed_id).await == want
            && node.routing_table().await.contains(&seed_id))
        {
            assert!(std::time::Instant::now() < deadline, "{what} within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    joined(&node, true, "the node did not join").await;
    seed.shutdown().await;
    joined(&node, false, "the node stayed connected to a stopped seed").await;
    let seed = Node::start(config("seed", seed_listen.to_string(), Vec::new()))
        .await
        .unwrap();
    joined(&node, true, "the node did not rejoin its seed").await;
    node.shutdown().await;
    seed.shutdown().await;
}

/// An entry whose connections to its replicas have all idled out asks them all at once
/// (the first request of a transfer after a quiet spell): every replica is dialed and
/// answers. libp2p-stream passes on one dial at a time, so without the node dialing the
/// replicas of the links it opens, all but one link would wait for a connection that
/// nothing else makes (no lookups and no reconciliation run here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_whose_connections_idled_out_are_all_dialed_again() {
    crate::support::debug_logs();
    let cluster = Cluster::start(5, |_, c| {
        c.idle_timeout_secs = 1;
        c.bootstrap_interval_secs = 3600;
        c.anti_entropy_interval_secs = 3600;
    })
    .await
    .unwrap();
    let entry = cluster.node(0).unwrap();
    let others: Vec<libp2p::PeerId> = (1..5).map(|i| cluster.node(i).unwrap().peer_id()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut connected = 0;
        for peer in &others {
            connected += usize::from(entry.is_connected(*peer).await);
        }
        if connected == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{connected} connections did not idle out within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let asked = others.iter().map(|peer| async move {
        let answer = entry
            .ask_replica(
                *peer,
                tigress_protocol::rpc::ReplicaRequest::Digest {
                    address: tigress_bootstrap::ready::probe(0),
                },
            )
            .await;
        (*peer, answer)
    });
    for (peer, answer) in futures::future::join_all(asked).await {
        assert!(answer.is_ok(), "{peer} did not answer: {answer:?}");
    }
    cluster.shutdown().await;
}

//! Lying nodes, one behaviour at a time, in 5-node clusters (R = 5, f = 1, claim quorum
//! 4): racing claimants never get more certificates than allowed, every honest transfer
//! completes or is refused with a clear error, and nothing acknowledged is lost.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use tigress_bootstrap::Cluster;
use tigress_bootstrap::liar::{Behaviour, ground_near};
use tigress_client::{Client, ClientError, Party};
use tigress_node::Doubles;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::record::{Equivocation, Policy, Receipt, ReceiptBody, Record};
use tigress_protocol::rpc::{
    Access, ClientRequest, ClientResponse, ReplicaRequest, ReplicaResponse,
};
use tigress_protocol::session::ShareOptions;
use tigress_protocol::wire::FORMAT_VERSION;
use tigress_protocol::{Address, ErrorCode, ShareUrl};

/// A cluster of `n` whose node `liar` lies with `behaviour` (naming `fellows` as its
/// fellow liars).
async fn with_liar(n: usize, liar: usize, behaviour: Behaviour, fellows: &[usize]) -> Cluster {
    let keys: Vec<usize> = fellows.to_vec();
    let fellows_of = move |cluster_keys: &[PublicKey]| -> Vec<PublicKey> {
        keys.iter()
            .filter_map(|i| cluster_keys.get(*i).copied())
            .collect()
    };
    // Fellows' keys are known once their identities exist: the liar is started last.
    let identities = std::sync::Mutex::new(Vec::<PublicKey>::new());
    Cluster::start_with(
        n,
        |_, _| {},
        |i, identity| {
            let mut ids = identities.lock().unwrap();
            ids.push(identity.public_key());
            if i == liar {
                behaviour.doubles(identity, &fellows_of(&ids))
            } else {
                Doubles::default()
            }
        },
    )
    .await
    .unwrap()
}

/// Alice, entering at node `i` with her state in `dir`, shares the payload `k`.
async fn share(cluster: &Cluster, i: usize, dir: &std::path::Path) -> (Client, ShareUrl) {
    let alice = client(cluster, i, dir).await;
    let shared = alice
        .share(b"k", &ShareOptions::default(), None)
        .await
        .unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    (alice, url)
}

async fn client(cluster: &Cluster, i: usize, state: &std::path::Path) -> Client {
    let addr: Multiaddr = cluster.addr(i % cluster.len()).unwrap();
    crate::support::client(&addr, state).await
}

/// A client entering at node `i` with the other nodes as its second entries.
async fn checked_client(cluster: &Cluster, i: usize, state: &std::path::Path) -> Client {
    let alternates = (1..cluster.len())
        .filter_map(|k| cluster.addr((i + k) % cluster.len()))
        .collect();
    client(cluster, i, state).await.with_alternates(alternates)
}

/// A share by alice through entry `a`, accepted by bob through entry `b`, then one
/// message each way through entries `c` and `d`.
async fn transfer(cluster: &Cluster, entries: [usize; 4], dir: &std::path::Path) {
    let (alice_dir, bob_dir) = (dir.join("alice"), dir.join("bob"));
    let alice = checked_client(cluster, entries[0], &alice_dir).await;
    let shared = alice
        .share(b"car key", &ShareOptions::default(), None)
        .await
        .unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let bob = checked_client(cluster, entries[1], &bob_dir).await;
    assert_eq!(bob.accept(&url).await.unwrap(), b"car key");
    let id = url.mailbox_id();
    for (k, (from, to, from_dir, to_dir)) in [
        (entries[2], entries[3], &alice_dir, &bob_dir),
        (entries[3], entries[2], &bob_dir, &alice_dir),
    ]
    .into_iter()
    .enumerate()
    {
        let payload = format!("round {k}");
        checked_client(cluster, from, from_dir)
            .await
            .send(&id, payload.as_bytes(), None)
            .await
            .unwrap();
        let got = checked_client(cluster, to, to_dir)
            .await
            .recv(&id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(got.messages.len(), 1, "round {k}");
        assert_eq!(got.messages[0].plaintext, payload.as_bytes());
    }
}

/// Races three claimants for one slot; returns how many were certified.
async fn race(cluster: &Cluster, dir: &std::path::Path) -> usize {
    let options = ShareOptions {
        policy: Policy {
            max_recipients: 1,
            ..Policy::default()
        },
        ..ShareOptions::default()
    };
    let alice = client(cluster, 0, &dir.join("alice")).await;
    let shared = alice.share(b"key", &options, None).await.unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let mut racers = Vec::new();
    for i in 0..3 {
        let c = client(cluster, i + 1, &dir.join(format!("claimant-{i}"))).await;
        let url = url.clone();
        racers.push(tokio::spawn(async move { c.accept(&url).await }));
    }
    let mut certified = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => certified += 1,
            Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::Conflict, "{e}"),
            Err(e) => panic!("unexpected claim failure: {e}"),
        }
    }
    // The sender never sees more recipients than the policy allows.
    let status = alice
        .party_status(&url.mailbox_id())
        .await
        .unwrap()
        .unwrap();
    assert!(status.recipients.len() <= 1, "{status:?}");
    assert_eq!(status.recipients.len(), certified);
    certified
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_replica_never_lets_racers_outnumber_the_slots() {
    let cluster = with_liar(5, 4, Behaviour::Equivocate, &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..6 {
        let certified = race(&cluster, &tmp.path().join(format!("race-{round}"))).await;
        assert!(certified <= 1, "round {round}: {certified} certificates");
    }
    transfer(&cluster, [4, 3, 4, 1], &tmp.path().join("transfer")).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_genesis_steers_no_entry() {
    let cluster = with_liar(5, 4, Behaviour::ForgeGenesis, &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    // Every step through the forger and through honest entries.
    transfer(&cluster, [4, 4, 4, 4], &tmp.path().join("through-liar")).await;
    transfer(&cluster, [0, 2, 1, 3], &tmp.path().join("honest")).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withholding_replica_cannot_hide_messages() {
    let cluster = with_liar(5, 4, Behaviour::Withhold, &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let (_, url) = share(&cluster, 4, &a).await;
    let id = url.mailbox_id();
    client(&cluster, 1, &b).await.accept(&url).await.unwrap();
    for k in 0..5u8 {
        client(&cluster, usize::from(k), &b)
            .await
            .send(&id, &[k], None)
            .await
            .unwrap();
        let got = client(&cluster, 4, &a)
            .await
            .recv(&id, Duration::from_secs(20))
            .await
            .unwrap();
        let seen: Vec<Vec<u8>> = got.messages.iter().map(|m| m.plaintext.clone()).collect();
        assert_eq!(seen, vec![vec![k]], "message {k} arrives, in order");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_drops_writes_is_caught_and_bypassed() {
    let cluster = with_liar(5, 4, Behaviour::DropWrites, &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    // With no second entry, the client refuses the unproven write.
    let alone = client(&cluster, 4, &tmp.path().join("alone")).await;
    let err = alone
        .share(b"k", &ShareOptions::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    assert!(err.to_string().contains("acknowledged"), "{err}");
    // With one, every write goes through it and arrives.
    transfer(&cluster, [4, 1, 4, 2], &tmp.path().join("checked")).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_locate_is_refused_for_the_nearest_nodes_a_second_entry_knows() {
    // Eight nodes, R = 3: the liar names itself and node 6, wherever the address is.
    let cluster = Cluster::start_with(
        8,
        |_, c| c.replication = 3,
        |i, identity| match i {
            7 => Behaviour::LieLocate.doubles(identity, &[]),
            _ => Doubles::default(),
        },
    )
    .await
    .unwrap();
    let keys: Vec<PublicKey> = (0..8)
        .map(|i| cluster.node(i).unwrap().identity().public_key())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    for k in 0..4 {
        let alice = checked_client(&cluster, 7, &tmp.path().join(format!("alice-{k}"))).await;
        let shared = alice
            .share(b"k", &ShareOptions::default(), None)
            .await
            .unwrap();
        let id = shared.share_id;
        let Party::Sender(session) = alice.state().load(&id).unwrap().party else {
            panic!("alice is the sender");
        };
        let named = session.genesis().header().replicas.to_vec();
        let nearest = tigress_protocol::placement::nearest(keys.iter().copied(), &id.address(), 3);
        let mut a = named.clone();
        a.sort();
        let mut b = nearest.clone();
        b.sort();
        assert_eq!(
            a, b,
            "share {k} lives on the three nodes nearest its address"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_nearer_than_a_mailboxs_replicas_take_over_nothing() {
    let mut cluster = Cluster::start(5, |_, _| {}).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let (alice, url) = share(&cluster, 0, &a).await;
    let address = url.mailbox_id().address();
    let replicas: Vec<PublicKey> = (0..5)
        .map(|i| cluster.node(i).unwrap().identity().public_key())
        .collect();
    // Three Sybils whose peer IDs are nearer the address than every replica, lying every
    // way a replica can.
    let mut sybils = Vec::new();
    for _ in 0..3 {
        let seed = ground_near(&address, &replicas, 0);
        let i = cluster
            .add(
                seed,
                |_| {},
                |identity| Behaviour::Sybil.doubles(identity, &[]),
            )
            .await
            .unwrap();
        sybils.push(i);
    }
    let sybil_keys: Vec<PublicKey> = sybils
        .iter()
        .map(|i| cluster.node(*i).unwrap().identity().public_key())
        .collect();
    // Wait until honest lookups of the address find them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = cluster.node(1).unwrap().locate(&address, 5).await;
        if sybil_keys.iter().all(|s| found.contains(s)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Sybils never became the nearest"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Claims, reads and writes go to the replicas the genesis names, through Sybil
    // entries too.
    let bob = client(&cluster, sybils[0], &b).await;
    assert_eq!(bob.accept(&url).await.unwrap(), b"k");
    let id = url.mailbox_id();
    client(&cluster, sybils[1], &a)
        .await
        .send(&id, b"to bob", None)
        .await
        .unwrap();
    let got = client(&cluster, sybils[2], &b)
        .await
        .recv(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(got.messages[0].plaintext, b"to bob");
    // A second claimant through a Sybil gets nothing.
    let eve = client(&cluster, sybils[0], &tmp.path().join("eve")).await;
    assert_eq!(
        eve.accept(&url).await.unwrap_err().code(),
        Some(ErrorCode::Conflict)
    );
    let status = alice.party_status(&id).await.unwrap().unwrap();
    assert_eq!(status.recipients.len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_liar_is_reported_and_no_longer_asked_or_placed() {
    let cluster = Cluster::start(5, |_, _| {}).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (alice, url) = share(&cluster, 0, &tmp.path().join("alice")).await;
    let address = url.mailbox_id().address();
    // Node 4's key signs one slot to two claimants.
    let liar = cluster.node(4).unwrap().identity();
    let receipt = |who: u8| {
        Receipt::sign(
            ReceiptBody {
                version: FORMAT_VERSION,
                address,
                replica: liar.public_key(),
                recipient: tigress_protocol::crypto::SigningKey::from_seed(&[who; 32]).public_key(),
                slot: 0,
                epoch: 0,
                retired: tigress_protocol::takeover::Retired::NONE,
                claim_digest: [who; 32],
                granted_at: 0,
            },
            &liar.signing,
        )
    };
    let proof = Equivocation::of(&receipt(1), &receipt(2)).unwrap();
    // A valid proof against a key that is no node of the network takes no place in the
    // node's memory of liars.
    let stranger = tigress_protocol::crypto::SigningKey::from_seed(&[77; 32]);
    let mut self_made = proof.clone();
    for r in [&mut self_made.first, &mut self_made.second] {
        r.body.replica = stranger.public_key();
        *r = Receipt::sign(r.body.clone(), &stranger);
    }
    self_made.verify().unwrap();
    assert!(matches!(
        alice.connection().unwrap().request(ClientRequest::Report { proof: self_made }).await,
        Err(ClientError::Remote(e)) if e.code == ErrorCode::NotFound
    ));
    // A forged proof, or two receipts that do not conflict, are refused.
    let mut forged = proof.clone();
    forged.second.signature.0[0] ^= 1;
    let mut agreeing = proof.clone();
    agreeing.second = agreeing.first.clone();
    let conn = alice.connection().unwrap();
    for (bad, code) in [
        (forged, ErrorCode::Unauthorized),
        (agreeing, ErrorCode::Malformed),
    ] {
        assert!(matches!(
            conn.request(ClientRequest::Report { proof: bad }).await,
            Err(ClientError::Remote(e)) if e.code == code
        ));
    }
    assert!(cluster.node(0).unwrap().locate(&address, 5).await.len() == 5);
    assert!(matches!(
        conn.request(ClientRequest::Report { proof }).await.unwrap(),
        ClientResponse::Stored {
            duplicate: false,
            ..
        }
    ));
    let entry = cluster.node(0).unwrap();
    let located = entry.locate(&address, 5).await;
    assert_eq!(located.len(), 4);
    assert!(!located.contains(&liar.public_key()));
    // The mailbox still lives without it: four honest replicas make the claim quorum.
    let bob = client(&cluster, 0, &tmp.path().join("bob")).await;
    assert_eq!(bob.accept(&url).await.unwrap(), b"k");
    cluster.shutdown().await;
}

/// The replica protocol serves records only to a party's signed request or to the
/// mailbox's other replicas; anyone else gets a status without keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_are_authorised() {
    let cluster = Cluster::start(3, |_, c| c.replication = 3).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (alice, url) = share(&cluster, 0, &tmp.path().join("alice")).await;
    let address: Address = url.mailbox_id().address();
    client(&cluster, 1, &tmp.path().join("bob"))
        .await
        .accept(&url)
        .await
        .unwrap();
    let store = cluster.node(2).unwrap().store().unwrap();
    let stranger = tigress_protocol::crypto::SigningKey::from_seed(&[99; 32]);
    let refused = |r: &ReplicaResponse| matches!(r, ReplicaResponse::Error(e) if e.code == ErrorCode::Unauthorized);
    for from in [None, Some(stranger.public_key())] {
        let digest = store
            .apply_from(ReplicaRequest::Digest { address }, from)
            .await;
        assert!(refused(&digest), "{digest:?}");
        let summaries = store
            .apply_from(
                ReplicaRequest::Summaries {
                    addresses: tigress_protocol::wire::BoundedVec::truncated(vec![address]),
                },
                from,
            )
            .await;
        // Nothing for a stranger node; a refusal for anyone that is not a node.
        assert!(
            matches!(&summaries, ReplicaResponse::Summaries { summaries } if summaries.iter().all(Option::is_none))
                || (from.is_none() && refused(&summaries)),
            "{summaries:?}"
        );
        let messages = store
            .apply_from(
                ReplicaRequest::GetMessages {
                    address,
                    keys: tigress_protocol::wire::BoundedVec::default(),
                },
                from,
            )
            .await;
        assert!(refused(&messages), "{messages:?}");
    }
    // A read request signed by a stranger for this address gets no genesis.
    let read = tigress_protocol::record::ReadRequest::sign(
        address,
        tigress_protocol::record::UNKNOWN_GENESIS,
        &stranger,
        tigress_client::unix_now(),
        tigress_protocol::record::ReadScope::Open,
    );
    let genesis = store
        .apply_from(
            ReplicaRequest::GetGenesis {
                access: Access::Read(read),
            },
            None,
        )
        .await;
    assert!(refused(&genesis), "{genesis:?}");
    // The public status names no key and counts no message.
    let status = alice.status(address).await.unwrap();
    assert_eq!(status.recipients, 1);
    // Another replica of the set may read the digest (anti-entropy).
    let peer = cluster.node(0).unwrap().identity().public_key();
    let digest = store
        .apply_from(ReplicaRequest::Digest { address }, Some(peer))
        .await;
    assert!(matches!(digest, ReplicaResponse::Digest(_)), "{digest:?}");
    cluster.shutdown().await;
}

/// `tigress-cluster up --byzantine 1 --behaviour drop-writes` starts node 4 as a liar and
/// says so in cluster.json; a CLI entering at the liar with the cluster file as its second
/// path gets its share stored, one without it is refused (exit 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gets_past_a_lying_entry_of_a_process_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let mut up = std::process::Command::new(crate::support::bin("tigress-cluster"))
        .args([
            "up",
            "--nodes",
            "5",
            "--byzantine",
            "1",
            "--behaviour",
            "drop-writes",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("up.log")).unwrap())
        .spawn()
        .unwrap();
    // `up` prints one line once the cluster is ready.
    let stdout = up.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        line.starts_with("tigress-cluster ready nodes=5"),
        "{line:?}\n{}",
        crate::support::logs(&[tmp.path().join("up.log")], &dir)
    );
    let file = dir.join("cluster.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let behaviours: Vec<&str> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["behaviour"].as_str().unwrap())
        .collect();
    assert_eq!(
        behaviours,
        ["honest", "honest", "honest", "honest", "drop-writes"]
    );
    let liar = doc["nodes"][4]["multiaddr"].as_str().unwrap().to_owned();
    let payload = crate::support::file(tmp.path(), "key", b"door");
    let cli = |state: &str, args: &[&str]| {
        std::process::Command::new(crate::support::bin("tigress"))
            .arg("--state")
            .arg(tmp.path().join(state))
            .args(args)
            .output()
            .unwrap()
    };
    // Straight to the lying entry (--direct), without a second entry: refused.
    let alone = cli(
        "alone",
        &[
            "--direct",
            "--node",
            &liar,
            "share",
            "--payload",
            payload.to_str().unwrap(),
        ],
    );
    assert_eq!(
        alone.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&alone.stderr)
    );
    // Through it as a relay (the default): it forwards sealed bytes it cannot change,
    // and where it is a target, another target carries the write.
    let relayed = cli(
        "relayed",
        &[
            "--node",
            &liar,
            "share",
            "--payload",
            payload.to_str().unwrap(),
        ],
    );
    assert!(
        relayed.status.success(),
        "{}",
        String::from_utf8_lossy(&relayed.stderr)
    );
    let cluster = file.to_str().unwrap();
    let shared = cli(
        "alice",
        &[
            "--direct",
            "--node",
            &liar,
            "--cluster",
            cluster,
            "share",
            "--payload",
            payload.to_str().unwrap(),
        ],
    );
    assert!(
        shared.status.success(),
        "{}",
        String::from_utf8_lossy(&shared.stderr)
    );
    let url = String::from_utf8(shared.stdout)
        .unwrap()
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_owned();
    let accepted = cli("bob", &["--cluster", cluster, "accept", &url]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(up.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || up.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A recipient that relinquishes does not jam the sender: the sender's recipients are
/// rebuilt from its next view, a message it had sealed to the recipient who left is
/// dropped with a warning, and later sends reach the new recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relinquish_does_not_jam_the_sender() {
    let cluster = Cluster::start(3, |_, c| c.replication = 3).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (alice, url) = share(&cluster, 0, &tmp.path().join("alice")).await;
    let id = url.mailbox_id();
    let bob = client(&cluster, 1, &tmp.path().join("bob")).await;
    bob.accept(&url).await.unwrap();
    // Alice learns bob, and seals a message to him that is still in her outbox when he
    // leaves (as if the network had been down when she sent it).
    alice.recv(&id, Duration::ZERO).await.unwrap();
    let mut state = alice.state().load(&id).unwrap();
    let Party::Sender(session) = &mut state.party else {
        panic!("alice is the sender");
    };
    let to = session.recipients()[0].key;
    let stale = session
        .seal(
            &to,
            b"for bob",
            [1; 16],
            tigress_client::unix_now(),
            &mut <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([5; 32]),
        )
        .unwrap();
    state.outbox.push(stale);
    alice.state().save(&state).unwrap();
    bob.relinquish(&id).await.unwrap();
    let carol = client(&cluster, 2, &tmp.path().join("carol")).await;
    assert_eq!(carol.accept(&url).await.unwrap(), b"k");
    let sent = alice.send(&id, b"for carol", None).await.unwrap();
    assert_eq!(sent.len(), 1);
    let got = carol.recv(&id, Duration::from_secs(20)).await.unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].plaintext, b"for carol");
    assert!(alice.state().load(&id).unwrap().outbox.is_empty());
    cluster.shutdown().await;
}

/// Ten nodes of one network (127.0.2.0/24, each bound to its own address) cannot fill
/// the routing table of a node that allows two entries per prefix, while a node without
/// limits takes them all. On loopback an inbound connection comes from 127.0.0.1
/// whatever the peer listens on, so a crowd node may also enter through that prefix: at
/// most two of the crowd per prefix seen, four in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_network_prefix_cannot_fill_a_routing_table() {
    const CROWD: usize = 10;
    let ip = |i: usize| match i {
        0 => "127.0.1.1".to_owned(),
        i if i <= CROWD => format!("127.0.2.{i}"),
        _ => format!("127.0.{}.1", i + 10),
    };
    let mut cluster = Cluster::start(CROWD + 2, |i, c| {
        c.listen = vec![format!("/ip4/{}/tcp/0", ip(i))];
    })
    .await
    .unwrap();
    let limited = cluster
        .add(
            [42; 32],
            |c| {
                c.listen = vec!["/ip4/127.0.30.1/tcp/0".into()];
                c.max_peers_per_prefix = 2;
                c.max_peers_per_prefix_per_bucket = 2;
            },
            |_| Doubles::default(),
        )
        .await
        .unwrap();
    let peer = |i: usize| cluster.node(i).unwrap().peer_id();
    let crowd_in =
        |table: &[libp2p::PeerId]| (1..=CROWD).filter(|i| table.contains(&peer(*i))).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = cluster.node(limited).unwrap().routing_table().await;
        let open = cluster.node(CROWD + 1).unwrap().routing_table().await;
        let crowd = crowd_in(&table);
        assert!(
            crowd <= 4,
            "{crowd} of the crowd in a table that allows 2 per prefix"
        );
        if crowd >= 2 && crowd_in(&open) == CROWD && table.contains(&peer(0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: {crowd} of the crowd, table {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

/// A genesis that names nodes far from its address (as a lying entry would, to place a
/// mailbox on its own nodes) is refused by them: each replica checks it is among the 2R
/// nodes it knows nearest the address. The nearest nodes take the same share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_refuse_a_genesis_far_from_its_address() {
    use tigress_protocol::session::{SenderSession, ShareIdentity};
    let cluster = Cluster::start(8, |_, c| c.replication = 3).await.unwrap();
    let keys: Vec<PublicKey> = (0..8)
        .map(|i| cluster.node(i).unwrap().identity().public_key())
        .collect();
    let conn = client(&cluster, 0, tempfile::tempdir().unwrap().path())
        .await
        .connection()
        .unwrap()
        .clone();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([8; 32]);
    let identity = ShareIdentity::random(&mut rng);
    let address = identity.address();
    let by_distance = tigress_protocol::placement::nearest(keys.iter().copied(), &address, 8);
    let share = |replicas: Vec<PublicKey>, rng: &mut rand_chacha::ChaCha20Rng| {
        SenderSession::create(
            identity.clone(),
            "https://relay.example",
            replicas,
            b"k",
            &ShareOptions::default(),
            tigress_client::unix_now(),
            rng,
        )
        .unwrap()
        .0
    };
    // The three farthest: two of them have six (2R) nearer nodes.
    let far = share(by_distance[5..].to_vec(), &mut rng);
    let refused = conn
        .request(ClientRequest::Create {
            genesis: far.genesis().clone(),
            admission: 0,
        })
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Remote(e)) if e.code == ErrorCode::Unauthorized),
        "{refused:?}"
    );
    let near = share(by_distance[..3].to_vec(), &mut rng);
    let stored = conn
        .request(ClientRequest::Create {
            genesis: near.genesis().clone(),
            admission: 0,
        })
        .await
        .unwrap();
    tigress_protocol::flow::stored(stored, near.genesis(), &near.genesis().digest()).unwrap();
    cluster.shutdown().await;
}

/// A node that answers "gone" for every mailbox is one voice among its holders: while
/// the honest holders are away, a recipient hears "unavailable, try again" (not "gone",
/// which would end the transfer for good), and a message written while one honest holder
/// is away is refused the same way; once they are back, the share is accepted and the
/// message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_saying_gone_ends_no_transfer() {
    const LIAR: usize = 6;
    let mut cluster = Cluster::start_with(
        7,
        |_, c| {
            c.replication = 3;
            c.standbys = 0;
        },
        |i, identity| {
            if i == LIAR {
                Behaviour::SayGone.doubles(identity, &[])
            } else {
                Doubles::default()
            }
        },
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // A mailbox the liar holds with two honest nodes, shared through a node holding none.
    let (alice, shared, holders, entry) =
        crate::support::share_placed(&cluster, tmp.path(), &[LIAR], &[LIAR]).await;
    let honest: Vec<usize> = holders.iter().copied().filter(|h| *h != LIAR).collect();
    assert_eq!(honest.len(), 2, "three replicas, the liar among them");
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let id = url.mailbox_id();
    let other = (0..cluster.len())
        .find(|i| *i != entry && *i != LIAR && !holders.contains(i))
        .unwrap();
    let bob = client(&cluster, other, &tmp.path().join("bob")).await;

    // Both honest holders away: the liar's "gone" is all that is heard of the mailbox.
    for h in &honest {
        cluster.stop(*h).await;
    }
    let err = bob.accept(&url).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "accept: {err}");
    let err = bob.status(id.address()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "status: {err}");
    for h in &honest {
        cluster.restart(*h).await.unwrap();
    }
    let accepted = eventually_ok(Duration::from_secs(60), || bob.accept(&url)).await;
    assert_eq!(accepted, b"front door");

    // One honest holder away: a write reaches one honest holder and the liar.
    cluster.stop(honest[0]).await;
    let err = bob.send(&id, b"hello", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "send: {err}");
    cluster.restart(honest[0]).await.unwrap();
    // The refused message waits in bob's outbox and goes out before the next one.
    eventually_ok(Duration::from_secs(60), || bob.send(&id, b"again", None)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut texts: Vec<Vec<u8>> = Vec::new();
    while !texts.iter().any(|t| t == b"again") {
        assert!(Instant::now() < deadline, "alice got only {texts:?}");
        let got = match alice.recv(&id, Duration::from_secs(5)).await {
            Ok(got) => got,
            // The node serving a read may not reach the holder back from its restart yet
            // (it dropped the holder's address while it was away): "try again later".
            Err(e) if e.code() == Some(ErrorCode::Unavailable) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("recv: {e}"),
        };
        texts.extend(got.messages.into_iter().map(|m| m.plaintext));
    }
    assert_eq!(texts[0], b"hello", "the refused message is delivered first");
    cluster.shutdown().await;
}

/// Retries `attempt` until it succeeds, failing the test at `patience`.
async fn eventually_ok<T, F>(patience: Duration, mut attempt: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + patience;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

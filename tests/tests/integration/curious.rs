//! The curious-node test: every node of a five-node cluster records everything it
//! receives after the transport's decryption (`tigress_node::tap`: every libp2p substream
//! of every protocol, with the peer it came from). Two clients run a whole transfer with
//! oblivious requests; then the records are searched for what no single node may learn.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::PeerId;
use tigress_bootstrap::Cluster;
use tigress_client::Client;
use tigress_node::tap::{Received, Tap};
use tigress_protocol::session::ShareOptions;
use tigress_protocol::{MailboxId, ShareUrl};

/// The header of an Oblivious HTTP request sealed to a tigress node: key 1, X25519,
/// HKDF-SHA256, AES-128-GCM. The 32 bytes after it are the request's encapsulated key.
const SEALED: [u8; 7] = [0x01, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every stream each node received, with its length: a snapshot to tell which streams an
/// operation used.
fn lengths(taps: &[Tap]) -> HashMap<usize, usize> {
    taps.iter()
        .flat_map(Tap::received)
        .map(|r| (std::sync::Arc::as_ptr(&r) as usize, r.bytes().len()))
        .collect()
}

/// The client peers (not nodes) that sent anything between two snapshots.
fn active_clients(
    taps: &[Tap],
    nodes: &HashSet<PeerId>,
    before: &HashMap<usize, usize>,
) -> HashSet<PeerId> {
    taps.iter()
        .flat_map(Tap::received)
        .filter(|r| {
            let key = std::sync::Arc::as_ptr(r) as usize;
            r.bytes().len() > before.get(&key).copied().unwrap_or(0)
        })
        .filter_map(|r| r.peer)
        .filter(|p| !nodes.contains(p))
        .collect()
}

/// What identifies a mailbox: its ID (bytes and text), its address, its secret (bytes
/// and as the invitation's fragment). Every record of a mailbox carries its address.
fn secrets_of(url: &ShareUrl) -> Vec<(String, Vec<u8>)> {
    let id: MailboxId = url.mailbox_id();
    let full = url.expose_url();
    let fragment = full.split('#').nth(1).unwrap_or_default().to_owned();
    vec![
        ("mailbox ID".into(), id.as_bytes().to_vec()),
        ("mailbox ID text".into(), id.to_string().into_bytes()),
        ("address".into(), id.address().as_bytes().to_vec()),
        ("secret".into(), url.secret().expose().to_vec()),
        ("secret text".into(), fragment.into_bytes()),
    ]
}

/// Which streams carry a secret: the sender (node index or client) and the protocol.
fn describe(
    streams: &[std::sync::Arc<Received>],
    secrets: &[(String, Vec<u8>)],
    nodes: &HashSet<PeerId>,
) -> Vec<String> {
    streams
        .iter()
        .filter(|r| secrets.iter().any(|(_, n)| contains(&r.bytes(), n)))
        .map(|r| {
            let bytes = r.bytes();
            let text =
                String::from_utf8_lossy(bytes.get(..60.min(bytes.len())).unwrap_or_default())
                    .replace(|c: char| !c.is_ascii_graphic(), ".");
            let who = if r.peer.is_some_and(|p| nodes.contains(&p)) {
                "node"
            } else {
                "client"
            };
            format!("from a {who}: {text}")
        })
        .collect()
}

/// What each party did: for each operation, the share it was on and the client peers it
/// used.
#[derive(Default)]
struct Parties {
    alice: Vec<(usize, HashSet<PeerId>)>,
    bob: Vec<(usize, HashSet<PeerId>)>,
}

impl Parties {
    /// The peers one party used for operations on share `s`.
    fn of(ops: &[(usize, HashSet<PeerId>)], s: usize) -> HashSet<PeerId> {
        ops.iter()
            .filter(|(share, _)| *share == s)
            .flat_map(|(_, p)| p.iter().copied())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_single_node_learns_who_talks_to_whom() {
    let taps: Vec<Tap> = (0..5).map(|_| Tap::new()).collect();
    let for_nodes = taps.clone();
    let cluster = Cluster::start_with(
        5,
        |_, c| {
            // Two replicas and one standby: with five nodes, one node is outside the four
            // nearest any address, and it is every client's relay.
            c.replication = 2;
            c.standbys = 1;
        },
        move |i, _| tigress_node::Doubles {
            tap: for_nodes.get(i).cloned(),
            ..tigress_node::Doubles::default()
        },
    )
    .await
    .unwrap();
    let nodes: HashSet<PeerId> = (0..5).map(|i| cluster.node(i).unwrap().peer_id()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let connect = async |home: usize, dir: &str| -> Client {
        let addr = cluster.addr(home).unwrap();
        crate::support::oblivious_client(&addr, tmp.path().join(dir)).await
    };
    // The directory connection each client makes to the node it names (Info, Nodes).
    let before = lengths(&taps);
    let alice = connect(0, "alice").await;
    let bob = connect(3, "bob").await;
    let directory_peers = active_clients(&taps, &nodes, &before);

    let mut parties = Parties::default();
    // Runs one operation of a party and notes the client peers it used.
    macro_rules! step {
        ($who:expr, $share:expr, $op:expr) => {{
            let before = lengths(&taps);
            let out = $op;
            let used = active_clients(&taps, &nodes, &before);
            assert!(!used.is_empty(), "an operation went through some relay");
            $who.push(($share, used));
            out
        }};
    }

    // A whole transfer: share, accept, messages both ways, a second share by Alice.
    let shared = step!(
        parties.alice,
        0,
        alice
            .share(b"room 12", &ShareOptions::default(), None)
            .await
            .unwrap()
    );
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let id = shared.share_id;
    step!(
        parties.bob,
        0,
        assert_eq!(bob.accept(&url).await.unwrap(), b"room 12")
    );
    for round in 0..2 {
        let text = format!("request {round}");
        step!(
            parties.bob,
            0,
            bob.send(&id, text.as_bytes(), None).await.unwrap()
        );
        step!(parties.alice, 0, {
            let got = alice.recv(&id, Duration::from_secs(10)).await.unwrap();
            assert_eq!(got.messages[0].plaintext, text.as_bytes());
            alice.send(&id, b"reply", None).await.unwrap();
        });
        step!(parties.bob, 0, {
            let got = bob.recv(&id, Duration::from_secs(10)).await.unwrap();
            assert_eq!(got.messages[0].plaintext, b"reply");
        });
    }
    let second = step!(
        parties.alice,
        1,
        alice
            .share(b"room 14", &ShareOptions::default(), None)
            .await
            .unwrap()
    );
    let second_url = ShareUrl::parse(&second.url.expose_url()).unwrap();
    // A client started again within ten minutes takes the directory from its state
    // directory: the named node sees no connection that could time the next operation.
    let before = lengths(&taps);
    let again = connect(0, "alice").await;
    assert!(again.is_oblivious());
    assert!(
        active_clients(&taps, &nodes, &before).is_empty(),
        "a restarted client asked the named node for the directory again"
    );

    // What every node received, by node.
    let received: Vec<Vec<std::sync::Arc<Received>>> = taps.iter().map(Tap::received).collect();
    let client_peers: HashSet<PeerId> = received
        .iter()
        .flatten()
        .filter_map(|r| r.peer)
        .filter(|p| !nodes.contains(p))
        .collect();
    let relayed: HashSet<PeerId> = client_peers.difference(&directory_peers).copied().collect();
    assert!(!relayed.is_empty());

    for (share, label, url) in [(0, "first share", &url), (1, "second share", &second_url)] {
        let secrets = secrets_of(url);
        let alice_peers = Parties::of(&parties.alice, share);
        let bob_peers = Parties::of(&parties.bob, share);
        for (n, streams) in received.iter().enumerate() {
            // The client connections of this share's operations. (The node a client
            // names is also asked once, before any operation, for the network's
            // directory; that connection is checked apart below.)
            let sees_relayed_client = streams.iter().any(|r| {
                r.peer
                    .is_some_and(|p| alice_peers.contains(&p) || bob_peers.contains(&p))
            });
            let sees: Vec<&str> = secrets
                .iter()
                .filter(|(_, needle)| streams.iter().any(|r| contains(&r.bytes(), needle)))
                .map(|(what, _)| what.as_str())
                .collect();
            // The nodes a client connects to never receive the mailbox's ID, address,
            // secret or any record (every record carries the address), from anyone.
            if sees_relayed_client {
                assert!(
                    sees.is_empty(),
                    "{label}: node {n}, which a client connected to, received the {sees:?} in {:?}",
                    describe(streams, &secrets, &nodes)
                );
            }
            // The nodes that see the address never see a client that asked about it.
            if !sees.is_empty() {
                assert!(
                    !sees_relayed_client,
                    "{label}: node {n} received the {sees:?} and a client's connection"
                );
                // Hence no node holds both parties' peers with the address.
                let alice_seen = alice_peers
                    .iter()
                    .any(|p| streams.iter().any(|r| r.peer == Some(*p)));
                let bob_seen = bob_peers
                    .iter()
                    .any(|p| streams.iter().any(|r| r.peer == Some(*p)));
                assert!(
                    !(alice_seen && bob_seen),
                    "{label}: node {n} saw both parties and the address"
                );
            }
        }
        // The address did reach its replicas: the search finds what is there.
        let address = url.mailbox_id().address();
        assert!(
            received
                .iter()
                .filter(|streams| streams
                    .iter()
                    .any(|r| contains(&r.bytes(), address.as_bytes())))
                .count()
                >= 2,
            "{label}: the replicas received the address"
        );
    }

    // The directory connections carried nothing about any mailbox.
    for streams in &received {
        for r in streams
            .iter()
            .filter(|r| r.peer.is_some_and(|p| directory_peers.contains(&p)))
        {
            for (what, needle) in secrets_of(&url)
                .iter()
                .chain(secrets_of(&second_url).iter())
            {
                assert!(
                    !contains(&r.bytes(), needle),
                    "a directory connection carried the {what}"
                );
            }
        }
    }

    // Two shares by one client share no connection (no peer ID), and every sealed
    // request has an encapsulated key of its own.
    assert!(Parties::of(&parties.alice, 0).is_disjoint(&Parties::of(&parties.alice, 1)));
    for (i, (_, a)) in parties.alice.iter().enumerate() {
        for (_, b) in parties.alice.iter().skip(i + 1) {
            assert!(
                a.is_disjoint(b),
                "two operations of one client share a connection"
            );
        }
    }
    let mut encapsulated: Vec<Vec<u8>> = Vec::new();
    for r in received
        .iter()
        .flatten()
        .filter(|r| r.peer.is_some_and(|p| relayed.contains(&p)))
    {
        let bytes = r.bytes();
        for (at, w) in bytes.windows(SEALED.len()).enumerate() {
            if w == SEALED
                && let Some(enc) = bytes.get(at + SEALED.len()..at + SEALED.len() + 32)
            {
                encapsulated.push(enc.to_vec());
            }
        }
    }
    let distinct: HashSet<&Vec<u8>> = encapsulated.iter().collect();
    assert!(
        encapsulated.len() >= 10,
        "the sealed requests were found: {}",
        encapsulated.len()
    );
    assert_eq!(
        distinct.len(),
        encapsulated.len(),
        "an encapsulated key was used twice"
    );
}

//! Replicas that leave for good, over a simulated week: an in-process cluster on one
//! manual clock (nodes and clients), where a holder of a live mailbox leaves each day and
//! the others hand its place to the next standby. The mailbox stays readable, writable
//! and claimable throughout, and never certifies more recipients than its policy allows.

use std::time::{Duration, Instant};

use tigress_bootstrap::Cluster;
use tigress_client::{Client, StateDir};
use tigress_node::clock::Clock;
use tigress_protocol::ErrorCode;
use tigress_protocol::ShareUrl;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::record::Policy;
use tigress_protocol::session::ShareOptions;

const DAY: u64 = 24 * 3600;
const TAKEOVER_AFTER: u64 = 3600;

async fn client(cluster: &Cluster, clock: &Clock, state: &std::path::Path) -> Client {
    let addr = cluster.addr(0).unwrap();
    let clock = clock.clone();
    tigress_client::Client::connect_direct(&addr, StateDir::open(state).unwrap())
        .await
        .unwrap()
        .with_clock(move || clock.unix())
}

/// The mailbox's holders as the network reports them.
async fn holders(c: &Client, url: &ShareUrl) -> Vec<PublicKey> {
    c.status(url.mailbox_id().address())
        .await
        .map(|s| s.replicas.to_vec())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_departures_loses_no_mailbox_and_certifies_no_extra_recipient() {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = Clock::manual(start);
    let node_clock = clock.clone();
    // Nine nodes: R = 5 replicas and 3 standbys per mailbox, one node to spare.
    let mut cluster = Cluster::start_with(
        9,
        |_, c| {
            c.replication = 5;
            c.standbys = 3;
            c.takeover_after_secs = TAKEOVER_AFTER;
        },
        move |_, _| tigress_node::Doubles {
            clock: Some(node_clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let keys: Vec<PublicKey> = (0..cluster.len())
        .map(|i| cluster.node(i).unwrap().identity().public_key())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let alice = client(&cluster, &clock, &tmp.path().join("alice")).await;
    let options = ShareOptions {
        ttl_secs: 7 * DAY,
        policy: Policy {
            max_recipients: 4,
            ..Policy::default()
        },
        ..ShareOptions::default()
    };
    let shared = alice.share(b"home key", &options, None).await.unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    let id = url.mailbox_id();
    let sender = StateDir::open(tmp.path().join("alice"))
        .unwrap()
        .load(&id)
        .unwrap();
    let tigress_client::Party::Sender(session) = &sender.party else {
        panic!("alice is the sender")
    };
    let standbys = session.genesis().header().standbys.to_vec();
    assert_eq!(standbys.len(), 3, "the genesis names three standbys");

    let bob = client(&cluster, &clock, &tmp.path().join("bob")).await;
    assert_eq!(bob.accept(&url).await.unwrap(), b"home key");

    let mut departed: Vec<PublicKey> = Vec::new();
    for day in 1..=3u64 {
        clock.advance(DAY);
        // A holder (never the entry, node 0) leaves for good.
        let now = holders(&alice, &url).await;
        assert_eq!(now.len(), 5, "day {day}: five holders");
        let leaving = *now
            .iter()
            .find(|k| **k != keys[0])
            .expect("a holder other than the entry");
        let index = keys.iter().position(|k| *k == leaving).unwrap();
        cluster.stop(index).await;
        departed.push(leaving);
        // Time passes until the others hand its place over: the network reports holders
        // without it, a standby among them.
        let deadline = Instant::now() + Duration::from_secs(120);
        let after = loop {
            clock.advance(TAKEOVER_AFTER / 4);
            let h = holders(&alice, &url).await;
            if h.len() == 5 && !h.iter().any(|k| departed.contains(k)) {
                break h;
            }
            assert!(
                Instant::now() < deadline,
                "day {day}: no takeover of {leaving} within 120 s (holders {h:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            after.iter().any(|k| standbys.contains(k)),
            "day {day}: a standby holds the mailbox"
        );

        // Writable and readable: a message each way.
        let text = format!("day {day}");
        bob.send(&id, text.as_bytes(), None).await.unwrap();
        let got = alice.recv(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.messages.len(), 1, "day {day}");
        assert_eq!(got.messages[0].plaintext, text.as_bytes());
        // Claimable: one more recipient.
        let next = client(&cluster, &clock, &tmp.path().join(format!("r{day}"))).await;
        assert_eq!(
            next.accept(&url).await.unwrap(),
            b"home key",
            "day {day}: a new recipient claims"
        );
    }

    // Four recipients, the policy's limit: a fifth claim is refused, and the sender sees
    // exactly four.
    clock.advance(DAY);
    let late = client(&cluster, &clock, &tmp.path().join("late")).await;
    let err = late.accept(&url).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict), "{err}");
    let party = alice
        .party_status(&id)
        .await
        .unwrap()
        .expect("the sender's view");
    assert_eq!(party.recipients.len(), 4);
    cluster.shutdown().await;
}

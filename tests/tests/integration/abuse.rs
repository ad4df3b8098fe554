//! Floods from one machine, with attackers and honest users as different hosts: every
//! request leaves from an explicitly bound loopback address, so sources differ as they
//! would on the internet (127.66.0.0/24 is the attacker's network, its neighbour shares
//! it, 127.77.0.0/24 is elsewhere; the nodes themselves are on 127.0.0.1).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use tigress_bootstrap::abuse::connect;

use crate::support::{HttpReply, parse_reply};

const ATTACKER: &str = "127.66.0.2";
const ATTACKER_2: &str = "127.66.0.4";
const NEIGHBOUR: &str = "127.66.0.3";
const OUTSIDER: &str = "127.77.0.2";
const INITIATOR: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const RECIPIENT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

/// One HTTP/1.1 request from `from` (`Connection: close`), within 150 s.
async fn request(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    try_request(from, to, method, path, headers, body)
        .await
        .expect("the exchange")
}

/// One HTTP/1.1 request, or the error that cut it off (a connection over budget is
/// closed before it is read).
async fn try_request(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpReply> {
    let exchange = tigress_bootstrap::abuse::exchange(from, to, method, path, headers, body);
    let raw = tokio::time::timeout(Duration::from_secs(150), exchange)
        .await
        .expect("an answer within 150 s")?;
    if raw.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(parse_reply(&raw))
}

/// One request as a client of the draft sends it: a 503 ("try again later": a replica
/// busy for a moment) is sent again, for up to 30 s. The requests given to it are
/// idempotent (a create or an update carries its request ID).
async fn request_again(
    from: &str,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = request(from, to, method, path, headers, body).await;
        if r.status != 503 || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for `what` until `deadline`, checking whenever `changed` fires (and at least
/// every 100 ms).
async fn until(deadline: Duration, what: &str, changed: &Notify, ok: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), changed.notified()).await;
    }
}

fn create_body() -> Vec<u8> {
    crate::gateway::create_body(
        &humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(24 * 3600),
        )
        .to_string(),
    )
}

/// Creates a mailbox from `from` and has the recipient read it; its path.
async fn mailbox(from: &str, to: SocketAddr, rid: &str) -> String {
    let r = request_again(
        from,
        to,
        "POST",
        "/v1/m",
        &[
            ("Mailbox-Device-Claim", INITIATOR),
            ("Mailbox-Request-ID", rid),
        ],
        &create_body(),
    )
    .await;
    assert_eq!(r.status, 200, "create: {}", r.body);
    let link = r.json()["urlLink"].as_str().unwrap().to_owned();
    let path = link[link.find("/v1/m/").unwrap()..].to_owned();
    let read = request_again(
        from,
        to,
        "POST",
        &path,
        &[("Mailbox-Device-Claim", RECIPIENT)],
        b"",
    )
    .await;
    assert_eq!(read.status, 200, "read: {}", read.body);
    path
}

/// Opens `n` connections from `from` to `to`, sends half a request head on each and
/// then nothing (a slowloris); each task ends when the node closes its connection.
async fn slowloris(
    from: &str,
    to: SocketAddr,
    n: usize,
    closed: &Arc<AtomicUsize>,
    changed: &Arc<Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (closed, changed) = (closed.clone(), changed.clone());
        let mut s = connect(from, to).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
                .await;
            let mut buf = [0u8; 1024];
            // Until the node closes it (EOF or a reset).
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
            changed.notify_waiters();
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_host_holds_only_its_share_of_connections() {
    // A header timeout longer than the test: only the connection budget closes anything.
    let cluster = tigress_bootstrap::Cluster::start(1, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.budgets.http_header_timeout_secs = 600;
    })
    .await
    .unwrap();
    let gw = cluster.node(0).unwrap().http_addr().unwrap();
    let member_cap = tigress_node::budget::BudgetConfig::default().http_connections_per_member;
    let (closed, changed) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let slow = slowloris(ATTACKER, gw, 200, &closed, &changed).await;
    // Beyond the host's share, connections are closed at once.
    until(
        Duration::from_secs(60),
        "the connections over the host's share to close",
        &changed,
        || closed.load(Ordering::SeqCst) >= 200 - member_cap,
    )
    .await;
    // Meanwhile a neighbour in the attacker's /24 and a host elsewhere are served.
    for from in [NEIGHBOUR, OUTSIDER] {
        let r = request(from, gw, "GET", "/health", &[], b"").await;
        assert_eq!(r.status, 200, "/health from {from}: {}", r.body);
    }
    // The host's share stays open: exactly that many were closed.
    assert_eq!(closed.load(Ordering::SeqCst), 200 - member_cap);
    for t in slow {
        t.abort();
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_and_bodies_time_out() {
    let cluster = tigress_bootstrap::Cluster::start(1, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.budgets.http_header_timeout_secs = 2;
        c.budgets.http_body_timeout_secs = 2;
    })
    .await
    .unwrap();
    let gw = cluster.node(0).unwrap().http_addr().unwrap();
    // Within its share, a host's half-open connections are given up after the header
    // timeout.
    let (closed, changed) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let slow = slowloris(ATTACKER, gw, 10, &closed, &changed).await;
    let r = request(OUTSIDER, gw, "GET", "/health", &[], b"").await;
    assert_eq!(r.status, 200);
    until(
        Duration::from_secs(60),
        "the half-open connections to time out",
        &changed,
        || closed.load(Ordering::SeqCst) == 10,
    )
    .await;
    for t in slow {
        t.await.unwrap();
    }
    // A body announced and never sent: 408 after the body timeout.
    let mut s = connect(OUTSIDER, gw).await.unwrap();
    s.write_all(
        format!(
            "PUT /v1/m/x HTTP/1.1\r\nHost: {gw}\r\nContent-Length: 100000\r\nContent-Type: application/json\r\n\r\n{{\"pay"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut raw))
        .await
        .expect("an answer to the stalled body")
        .unwrap();
    assert_eq!(
        parse_reply(&raw).status,
        408,
        "{}",
        String::from_utf8_lossy(&raw)
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_flood_leaves_room_for_writes_and_neighbours() {
    // Few request slots: without a budget of their own, the attacker's waiting reads
    // would hold all of them on every replica.
    let cluster = tigress_bootstrap::Cluster::start(3, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.replication = 3;
        c.standbys = 0;
        c.max_inflight_requests = 24;
    })
    .await
    .unwrap();
    let gw = cluster.node(0).unwrap().http_addr().unwrap();
    let budgets = tigress_node::budget::BudgetConfig::default();
    let (per_host, per_mailbox) = (
        budgets.long_polls_per_member,
        budgets.long_polls_per_mailbox,
    );

    // The attacker, on two hosts of its /24, makes mailboxes of its own and waits on
    // them, far more than its share: together more long-polls than a replica has
    // request slots. They go one at a time, each until it is refused or waits at both
    // other replicas, so none is refused for arriving in a burst: every one the gateway
    // admits must wait at every replica.
    let hosts = [ATTACKER, ATTACKER_2];
    let mut paths = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for i in 0..5 {
            paths.push((*host, mailbox(host, gw, &format!("a-{h}-{i}")).await));
        }
    }
    let tries = paths.len() * per_mailbox;
    let waiting_at = |n: usize| long_polls_waiting(cluster.node(n).unwrap());
    let (mut refused, mut admitted) = (0, 0);
    let mut polls = Vec::new();
    for (host, path) in &paths {
        for _ in 0..per_mailbox {
            let before = [waiting_at(1), waiting_at(2)];
            let (host, path) = (*host, format!("{path}?wait=100"));
            let poll = tokio::spawn(async move {
                try_request(
                    host,
                    gw,
                    "POST",
                    &path,
                    &[("Mailbox-Device-Claim", INITIATOR)],
                    b"",
                )
                .await
                .map(|r| r.status)
            });
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if poll.is_finished() {
                    // Refused: 429, or the connection closed over the host's
                    // connection budget.
                    let status = poll.await.unwrap();
                    assert!(
                        matches!(status, Ok(429) | Err(_)),
                        "a long-poll ended: {status:?}"
                    );
                    refused += 1;
                    break;
                }
                if waiting_at(1) > before[0] && waiting_at(2) > before[1] {
                    admitted += 1;
                    polls.push(poll);
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "long-poll {} was neither refused nor waiting at both other replicas \
                     (waiting there: {}, {}; {admitted} admitted before it)",
                    refused + admitted,
                    waiting_at(1),
                    waiting_at(2),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let waiting = hosts.len() * per_host;
    assert!(waiting > 24, "the test floods more than the request slots");
    assert_eq!(admitted, waiting, "each host gets its share of long-polls");
    assert_eq!(refused, tries - waiting);
    for n in 1..3 {
        assert!(
            waiting_at(n) >= waiting as u64,
            "node {n} holds {} long-polls",
            waiting_at(n)
        );
    }

    // An honest host elsewhere writes while they wait (trying again on a 503, as a
    // client does: the admitted long-polls, on their way to the replicas, may hold all
    // of a replica's request slots for a moment; without a budget of their own they
    // would hold them for as long as they wait).
    for i in 0..3 {
        let path = mailbox(OUTSIDER, gw, &format!("o-{i}")).await;
        let r = request_again(
            OUTSIDER,
            gw,
            "PUT",
            &path,
            &[
                ("Mailbox-Device-Claim", RECIPIENT),
                ("Mailbox-Request-ID", "u"),
            ],
            &crate::gateway::update_body("QkJC"),
        )
        .await;
        assert_eq!(r.status, 200, "update: {}", r.body);
    }
    // The neighbour in the attacker's /24 waits for an answer and gets it. It waits for
    // any update (`after=0`): by default a long-poll waits for one newer than the latest
    // when it arrives, which would be the update, had it come first.
    let path = mailbox(NEIGHBOUR, gw, "n-1").await;
    let waiting = {
        let path = format!("{path}?wait=100&after=0");
        tokio::spawn(async move {
            request(
                NEIGHBOUR,
                gw,
                "POST",
                &path,
                &[("Mailbox-Device-Claim", INITIATOR)],
                b"",
            )
            .await
        })
    };
    // The answer comes from elsewhere: the wait ends with it (or, had the update come
    // first, the read finds it at once).
    let r = request_again(
        OUTSIDER,
        gw,
        "PUT",
        &path,
        &[
            ("Mailbox-Device-Claim", RECIPIENT),
            ("Mailbox-Request-ID", "n-u"),
        ],
        &crate::gateway::update_body("TkVJR0g="),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["payload"]["data"], "TkVJR0g=");
    for p in polls {
        p.abort();
    }
    cluster.shutdown().await;
}

/// How many long-polls wait at `node` now.
fn long_polls_waiting(node: &tigress_node::Node) -> u64 {
    node.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix("tigress_long_polls_waiting "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How many replica-protocol `op` requests `node` answered.
fn replica_ops(node: &tigress_node::Node, op: &str) -> u64 {
    let prefix = format!("tigress_requests_total{{protocol=\"replica\",op=\"{op}\"");
    node.metrics_text()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_that_do_not_exist_cost_one_lookup() {
    let cluster = tigress_bootstrap::Cluster::start(3, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.replication = 3;
        c.standbys = 0;
    })
    .await
    .unwrap();
    let gw = cluster.node(0).unwrap().http_addr().unwrap();
    let asked = |c: &tigress_bootstrap::Cluster| {
        (1..3)
            .map(|i| replica_ops(c.node(i).unwrap(), "get_genesis"))
            .sum::<u64>()
    };
    let path = "/v1/m/2f0e9c1c-6b43-4d6c-9e55-0d1f3a7b9c21";
    let before = asked(&cluster);
    let r = request(
        OUTSIDER,
        gw,
        "POST",
        path,
        &[("Mailbox-Device-Claim", RECIPIENT)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let first = asked(&cluster) - before;
    assert!(first > 0, "the first search asks the other nodes");
    // Asked again and again, the address costs the other nodes nothing more.
    for _ in 0..20 {
        let r = request(
            OUTSIDER,
            gw,
            "POST",
            path,
            &[("Mailbox-Device-Claim", RECIPIENT)],
            b"",
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.body);
    }
    assert_eq!(asked(&cluster) - before, first);
    assert!(
        cluster
            .node(0)
            .unwrap()
            .metrics_text()
            .contains("tigress_absent_hits_total 20")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_mailboxes_cost_the_work_the_node_asks() {
    use tigress_protocol::record::Record as _;
    use tigress_protocol::rpc::{ClientRequest, ClientResponse};
    use tigress_protocol::session::{SenderSession, ShareIdentity, ShareOptions};
    const BITS: u8 = 10;
    let cluster = tigress_bootstrap::Cluster::start(3, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.replication = 3;
        c.standbys = 0;
        c.budgets.admission_bits_min = BITS;
        // A host gets a third: two a minute.
        c.budgets.http_creates_per_prefix_per_min = 6;
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let addr = cluster.addr(0).unwrap();

    // The node publishes what it asks.
    let direct = crate::support::client(&addr, tmp.path().join("direct")).await;
    assert_eq!(direct.info().await.unwrap().admission_bits, BITS);

    // A create without the work is refused with what is asked; with it, stored.
    let conn = direct.connection().unwrap().clone();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([5; 32]);
    let keys: Vec<_> = (0..3)
        .map(|i| cluster.node(i).unwrap().identity().public_key())
        .collect();
    let (session, _) = SenderSession::create(
        ShareIdentity::random(&mut rng),
        "https://relay.example",
        keys,
        b"k",
        &ShareOptions::default(),
        tigress_client::unix_now(),
        &mut rng,
    )
    .unwrap();
    let genesis = session.genesis().clone();
    let unpaid = conn
        .request(ClientRequest::Create {
            genesis: genesis.clone(),
            admission: 0,
        })
        .await
        .unwrap();
    assert_eq!(unpaid, ClientResponse::AdmissionRequired { bits: BITS });
    let nonce = tigress_protocol::admission::solve(&genesis.digest(), BITS).unwrap();
    let paid = conn
        .request(ClientRequest::Create {
            genesis: genesis.clone(),
            admission: nonce,
        })
        .await
        .unwrap();
    tigress_protocol::flow::stored(paid, &genesis, &genesis.digest()).unwrap();
    // The proof is bound to its genesis: another mailbox cannot reuse it (one for which
    // the nonce happens to be a proof too, one in 2^BITS, is skipped).
    let other = loop {
        let (other, _) = SenderSession::create(
            ShareIdentity::random(&mut rng),
            "https://relay.example",
            vec![cluster.node(0).unwrap().identity().public_key()],
            b"k",
            &ShareOptions::default(),
            tigress_client::unix_now(),
            &mut rng,
        )
        .unwrap();
        if !tigress_protocol::admission::verify(&other.genesis().digest(), BITS, nonce) {
            break other;
        }
    };
    let reused = conn
        .request(ClientRequest::Create {
            genesis: other.genesis().clone(),
            admission: nonce,
        })
        .await
        .unwrap();
    assert_eq!(reused, ClientResponse::AdmissionRequired { bits: BITS });

    // Users pay it without noticing: an oblivious share and its acceptance.
    let alice = crate::support::oblivious_client(&addr, tmp.path().join("alice")).await;
    let shared = alice
        .share(b"car key", &ShareOptions::default(), None)
        .await
        .unwrap();
    let bob =
        crate::support::oblivious_client(&cluster.addr(1).unwrap(), tmp.path().join("bob")).await;
    let url = tigress_protocol::ShareUrl::parse(&shared.url.expose_url()).unwrap();
    assert_eq!(bob.accept(&url).await.unwrap(), b"car key");

    // Draft clients pay from their source's budget of creates (two a minute a host here) and
    // see the price in a header; a proof for the body skips the budget.
    let gw = cluster.node(0).unwrap().http_addr().unwrap();
    let create = |rid: &'static str, body: Vec<u8>, proof: Option<u64>| async move {
        let proof = proof.map(|p| p.to_string());
        let mut headers = vec![
            ("Mailbox-Device-Claim", INITIATOR),
            ("Mailbox-Request-ID", rid),
        ];
        if let Some(p) = &proof {
            headers.push(("Tigress-Admission-Proof", p.as_str()));
        }
        request(OUTSIDER, gw, "POST", "/v1/m", &headers, &body).await
    };
    for rid in ["c-1", "c-2"] {
        let r = create(rid, create_body(), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("tigress-admission-bits"), Some("10"));
    }
    let body = create_body();
    let over = create("c-3", body.clone(), None).await;
    assert_eq!(over.status, 429, "{}", over.body);
    // The proof for a draft create is at least the first level.
    let bits = tigress_protocol::admission::FIRST_LEVEL.max(BITS);
    let digest = tigress_protocol::crypto::sha256(&[&body]);
    let not_a_proof = (0..)
        .find(|n| !tigress_protocol::admission::verify(&digest, bits, *n))
        .unwrap();
    let wrong = create("c-3", body.clone(), Some(not_a_proof)).await;
    assert_eq!(wrong.status, 429, "{}", wrong.body);
    let proof = tigress_protocol::admission::solve(&digest, bits).unwrap();
    let r = create("c-3", body, Some(proof)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    cluster.shutdown().await;
}

/// Every scenario of `tigress-cluster abuse`, briefly: the honest users of the flooded
/// node keep completing their transfers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_abuse_scenario_leaves_honest_transfers_working() {
    let (node_bin, _) = crate::support::bins();
    for scenario in tigress_bootstrap::abuse::SCENARIOS {
        let tmp = tempfile::tempdir().unwrap();
        let report = tigress_bootstrap::abuse::run(
            scenario,
            6,
            Duration::from_secs(3),
            3,
            node_bin,
            tmp.path(),
        )
        .await
        .unwrap();
        eprintln!("{}", report.line());
        assert!(report.honest_ok > 0, "{}", report.line());
        assert_eq!(report.honest_failed, 0, "{}", report.line());
    }
}

/// Anti-entropy's `Summaries` are answered only to nodes in the routing table: a
/// stranger's are refused as they arrive, before the store reads a mailbox for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_from_a_stranger_never_reach_the_store() {
    use futures::StreamExt;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;
    use tigress_protocol::rpc::{ReplicaRequest, ReplicaResponse};

    let cluster = tigress_bootstrap::cluster::Cluster::start(2, |_, c| c.replication = 2)
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let node = cluster.addr(0).unwrap();
    let alice = crate::support::client(&node, tmp.path().join("alice")).await;
    let shared = alice
        .share(
            b"k",
            &tigress_protocol::session::ShareOptions::default(),
            None,
        )
        .await
        .unwrap();
    let decoded = |c: &tigress_bootstrap::cluster::Cluster| {
        c.node(0)
            .unwrap()
            .store()
            .unwrap()
            .stats()
            .summaries_decoded
            .load(Ordering::Relaxed)
    };
    let before = decoded(&cluster);

    // A peer that speaks the replica protocol and is no node.
    let mut stranger = crate::support::stranger_swarm(request_response::Behaviour::with_codec(
        tigress_transport::ReplicaCodec::default(),
        [(tigress_transport::REPLICA_STREAM, ProtocolSupport::Outbound)],
        request_response::Config::default(),
    ));
    stranger.dial(node.clone()).unwrap();
    let peer = cluster.node(0).unwrap().peer_id();
    let addresses =
        tigress_protocol::wire::BoundedVec::truncated(vec![shared.share_id.address(); 64]);
    stranger
        .behaviour_mut()
        .send_request(&peer, ReplicaRequest::Summaries { addresses });
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stranger.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => return Err(error.to_string()),
                _ => {}
            }
        }
    })
    .await
    .expect("an answer within 30 s")
    .expect("the request reached the node");
    assert!(
        matches!(&answer, ReplicaResponse::Error(e)
            if e.code == tigress_protocol::ErrorCode::Unauthorized
                && e.message.as_str().contains("knows only")),
        "{answer:?}"
    );
    assert_eq!(decoded(&cluster), before, "the store read nothing for it");
    cluster.shutdown().await;
}

/// A host's client requests over its rate are refused, however many peer IDs it uses
/// (the rate is checked in the network loop as requests arrive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_over_its_request_rate_is_refused_whatever_its_peer_ids() {
    let cluster = tigress_bootstrap::cluster::Cluster::start(1, |_, _| {})
        .await
        .unwrap();
    let node = cluster.addr(0).unwrap();
    let source = Some(ATTACKER.parse().unwrap());
    // Two connections, two peer IDs, one host: 600 requests, six times the host's burst.
    let a = tigress_client::Connection::connect_from(&node, source)
        .await
        .unwrap();
    let b = tigress_client::Connection::connect_from(&node, source)
        .await
        .unwrap();
    // In rounds of 150, 75 per connection: under a client's 100 streams per connection.
    let mut answers = Vec::new();
    for _ in 0..4 {
        let asks = (0..150).map(|i| {
            let conn = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move {
                conn.request(tigress_protocol::rpc::ClientRequest::Info)
                    .await
            }
        });
        answers.extend(futures::future::join_all(asks).await);
    }
    let answered = answers.iter().filter(|r| r.is_ok()).count();
    let over_rate = answers
        .iter()
        .filter(|r| {
            matches!(r, Err(tigress_client::ClientError::Remote(e))
                if e.code == tigress_protocol::ErrorCode::RateLimited
                    && e.message.as_str().starts_with("too many requests from this source"))
        })
        .count();
    assert!(answered > 0, "the host's share is served");
    assert!(
        over_rate > 0,
        "{answered} answered, none refused for the source's rate"
    );
    // The rest are the per-peer throttle's refusals: nothing failed otherwise.
    for r in &answers {
        assert!(
            match r {
                Ok(_) => true,
                Err(tigress_client::ClientError::Remote(e)) => {
                    e.code == tigress_protocol::ErrorCode::RateLimited
                }
                Err(_) => false,
            },
            "{r:?}"
        );
    }
    cluster.shutdown().await;
}

/// A peer that opens replica links (`/tigress/replica/2`) to a node holds at most four at
/// once: the fifth and sixth are dropped unread, the four are answered (a stranger's
/// Summaries refused, as over request-response). A frame that does not decode ends its
/// link, and the slot it held is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_holds_only_its_share_of_replica_links() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tigress_protocol::rpc::{ReplicaRequest, ReplicaResponse};
    use tigress_transport::link::{REPLICA_LINK, read_tagged, write_tagged};

    let cluster = tigress_bootstrap::cluster::Cluster::start(1, |_, c| c.replication = 1)
        .await
        .unwrap();
    let node = cluster.addr(0).unwrap();
    let peer = cluster.node(0).unwrap().peer_id();
    let (mut control, driver) = stream_stranger(node).await;

    let summaries = || ReplicaRequest::Summaries {
        addresses: tigress_protocol::wire::BoundedVec::truncated(vec![
            "07".repeat(32)
                .parse::<tigress_protocol::Address>()
                .unwrap();
            4
        ]),
    };
    // What one link gets for one request: an answer, or nothing (the stream ended).
    let ask = async |stream: &mut libp2p::Stream, id: u64| -> Option<ReplicaResponse> {
        write_tagged(stream, id, &summaries()).await.ok()?;
        let read = read_tagged::<_, ReplicaResponse>(stream, None);
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(Some((got, Ok(answer))))) if got == id => Some(answer),
            _ => None,
        }
    };
    let refused = |a: &Option<ReplicaResponse>| {
        matches!(a, Some(ReplicaResponse::Error(e))
            if e.code == tigress_protocol::ErrorCode::Unauthorized)
    };
    // Links up to the peer's share are served. A busy node may also drop a new stream
    // before it counts it (libp2p-stream hands streams over one at a time), so a link
    // that goes unanswered here is tried again.
    let mut served: Vec<libp2p::Stream> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while served.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} links were served",
            served.len()
        );
        let mut link = control.open_stream(peer, REPLICA_LINK).await.unwrap();
        let answer = ask(&mut link, served.len() as u64).await;
        if answer.is_some() {
            assert!(refused(&answer), "link {}: {answer:?}", served.len());
            served.push(link);
        }
    }
    // ...and while they are open, no more.
    for i in 0..2 {
        let mut link = control.open_stream(peer, REPLICA_LINK).await.unwrap();
        let answer = ask(&mut link, 50 + i).await;
        assert!(
            answer.is_none(),
            "a link over the peer's share was served: {answer:?}"
        );
    }
    // Several requests in a row on one link, each answered with its id.
    for id in 100..110 {
        assert!(refused(&ask(&mut served[0], id).await), "request {id}");
    }

    // Garbage on a served link ends it...
    let mut bad = served.pop().unwrap();
    let mut garbage = 5u64.to_be_bytes().to_vec();
    garbage.extend_from_slice(&3u32.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 3]);
    bad.write_all(&garbage).await.unwrap();
    bad.flush().await.unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), bad.read_to_end(&mut rest)).await;
    assert!(
        matches!(ended, Ok(Ok(_)) | Ok(Err(_))),
        "the link with garbage is closed by the node"
    );
    assert!(rest.is_empty(), "and nothing was answered on it");
    // ...and its slot serves a new link.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = control.open_stream(peer, REPLICA_LINK).await.unwrap();
        if refused(&ask(&mut again, 1).await) {
            served.push(again);
            break;
        }
        // The node may not have counted the bad link's end yet: another try.
        assert!(
            std::time::Instant::now() < deadline,
            "the freed slot serves a new link"
        );
    }
    assert_eq!(served.len(), 4);
    driver.abort();
    cluster.shutdown().await;
}

/// A node over its replica rate is refused on its replica link as over request-response,
/// before its requests queue for the dispatcher; the link stays open and answers each
/// request by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_replica_rate_is_refused_on_its_link() {
    use tigress_protocol::ErrorCode;
    use tigress_protocol::rpc::{ReplicaRequest, ReplicaResponse};
    use tigress_transport::link::{REPLICA_LINK, read_tagged, write_tagged};

    let cluster = tigress_bootstrap::cluster::Cluster::start(1, |_, c| {
        c.replication = 1;
        // The stranger dials from 127.0.0.1, which test clusters exempt.
        c.budgets.exempt.clear();
        c.budgets.replica_rate_per_node = 2;
    })
    .await
    .unwrap();
    let node = cluster.addr(0).unwrap();
    let peer = cluster.node(0).unwrap().peer_id();
    let (mut control, driver) = stream_stranger(node).await;

    let address = "07"
        .repeat(32)
        .parse::<tigress_protocol::Address>()
        .unwrap();
    let mut link = control.open_stream(peer, REPLICA_LINK).await.unwrap();
    // Forty requests in a row at two a second (bursts of four): most are over the rate.
    let mut codes = Vec::new();
    for id in 0..40u64 {
        write_tagged(&mut link, id, &ReplicaRequest::Status { address })
            .await
            .unwrap();
        let read = read_tagged::<_, ReplicaResponse>(&mut link, None);
        match tokio::time::timeout(Duration::from_secs(30), read).await {
            Ok(Ok(Some((got, Ok(ReplicaResponse::Error(e)))))) if got == id => codes.push(e.code),
            other => panic!("request {id}: {other:?}"),
        }
    }
    assert_eq!(
        codes[0],
        ErrorCode::NotFound,
        "the first is served: {codes:?}"
    );
    let limited = codes
        .iter()
        .filter(|c| **c == ErrorCode::RateLimited)
        .count();
    assert!(limited >= 10, "over its rate, a peer is refused: {codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| *c == ErrorCode::NotFound || *c == ErrorCode::RateLimited),
        "{codes:?}"
    );
    driver.abort();
    cluster.shutdown().await;
}

/// A stranger with a fresh identity, connected to the node at `node`, that opens raw
/// streams (libp2p-stream): its control, and the task driving its swarm.
async fn stream_stranger(
    node: libp2p::Multiaddr,
) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    use futures::StreamExt as _;
    use libp2p::swarm::SwarmEvent;

    let mut stranger = crate::support::stranger_swarm(libp2p_stream::Behaviour::new());
    let control = stranger.behaviour().new_control();
    stranger.dial(node).unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = stranger.select_next_some().await {
                return;
            }
        }
    })
    .await
    .expect("connected within 30 s");
    let driver = tokio::spawn(async move {
        loop {
            stranger.select_next_some().await;
        }
    });
    (control, driver)
}

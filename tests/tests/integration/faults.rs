//! Replica faults with real processes: two of five replicas killed mid-transfer, restarted
//! and caught up by anti-entropy; three of five down refuses writes; back up, it goes on.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use tigress_bootstrap::process::{ProcessCluster, UpOptions, gauge, http_get};
use tigress_protocol::ErrorCode;
use tigress_protocol::session::ShareOptions;

use crate::support::{NodeProc, bins};

const EXTRA: [&str; 4] = [
    "--anti-entropy-interval-secs",
    "1",
    "--replica-timeout-ms",
    "2000",
];

fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

async fn messages_stored(admin: &str) -> Option<u64> {
    gauge(
        &http_get(admin, "/metrics").await.ok()?,
        "tigress_messages_stored",
    )
}

fn restart(dir: &std::path::Path, i: usize) -> NodeProc {
    let config = dir.join(format!("node-{i}")).join("config.toml");
    let mut args = vec!["--config".to_owned(), config.display().to_string()];
    args.extend(EXTRA.iter().map(|s| (*s).to_owned()));
    NodeProc::spawn(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_restarted_and_a_lost_majority() {
    let (node_bin, _) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let cluster = ProcessCluster::up(&UpOptions {
        nodes: 5,
        dir: dir.clone(),
        base_port: None,
        replication: 5,
        node_bin: node_bin.clone(),
        extra_args: EXTRA.iter().map(|s| (*s).to_owned()).collect(),
        liars: None,
    })
    .await
    .unwrap();
    let nodes = cluster.file().nodes.clone();
    let addr = |i: usize| -> Multiaddr { nodes[i].multiaddr.parse().unwrap() };
    let (a, b) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let alice = |i| {
        let a = a.clone();
        async move { crate::support::client(&addr(i), a).await }
    };
    let bob = |i| {
        let b = b.clone();
        async move { crate::support::client(&addr(i), b).await }
    };

    let shared = alice(0)
        .await
        .share(b"first", &ShareOptions::default(), None)
        .await
        .unwrap();
    let id = shared.share_id;
    bob(1).await.accept(&shared.url).await.unwrap();
    bob(1).await.send(&id, b"m1", None).await.unwrap();

    // Two of five replicas die (SIGKILL): the transfer completes on the other three.
    sigkill(nodes[3].pid);
    sigkill(nodes[4].pid);
    let got = alice(2)
        .await
        .recv(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.messages[0].plaintext, b"m1");
    alice(0).await.send(&id, b"r1", None).await.unwrap();
    assert_eq!(
        bob(1)
            .await
            .recv(&id, Duration::from_secs(10))
            .await
            .unwrap()
            .messages[0]
            .plaintext,
        b"r1"
    );
    bob(2).await.send(&id, b"m2", None).await.unwrap();
    assert_eq!(
        alice(0)
            .await
            .recv(&id, Duration::from_secs(10))
            .await
            .unwrap()
            .messages[0]
            .plaintext,
        b"m2"
    );

    // They come back and converge without any client action.
    let restarted_at = Instant::now();
    let n3 = restart(&dir, 3);
    let n4 = restart(&dir, 4);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c3, c4) = (
            messages_stored(&n3.admin).await,
            messages_stored(&n4.admin).await,
        );
        if c3 == Some(3) && c4 == Some(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted replicas did not converge: {c3:?} {c4:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let converged = restarted_at.elapsed();
    eprintln!("restarted replicas converged {converged:?} after restart (anti-entropy every 1 s)");

    // They serve: with two other replicas down, the restarted ones complete a majority.
    sigkill(nodes[0].pid);
    sigkill(nodes[1].pid);
    let alice3 = crate::support::client(&n3.addr().parse().unwrap(), &a).await;
    let bob4 = crate::support::client(&n4.addr().parse().unwrap(), &b).await;
    alice3.send(&id, b"r2", None).await.unwrap();
    assert_eq!(
        bob4.recv(&id, Duration::from_secs(10))
            .await
            .unwrap()
            .messages[0]
            .plaintext,
        b"r2"
    );

    // Three of five down: writes are refused as unavailable; the message stays in the
    // outbox and nothing is acknowledged.
    sigkill(nodes[2].pid);
    let err = bob4.send(&id, b"m3", None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unavailable), "{err}");
    assert_eq!(bob4.state().load(&id).unwrap().outbox.len(), 1);

    // Back up: the next send delivers the pending message first, then the new one.
    let back: Vec<NodeProc> = (0..3).map(|i| restart(&dir, i)).collect();
    let bob0 = crate::support::client(&back[0].addr().parse().unwrap(), &b).await;
    // The restarted nodes had no connection left: until they reach a majority of the
    // replicas again, a request is refused "unavailable, try again later". A read tells
    // when they do, without touching the outbox.
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = bob0.party_status(&id).await {
        assert!(
            e.code() == Some(ErrorCode::Unavailable) && Instant::now() < deadline,
            "the restarted nodes never served a read: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bob0.send(&id, b"m4", None).await.unwrap();
    assert!(bob0.state().load(&id).unwrap().outbox.is_empty());
    let alice1 = crate::support::client(&back[1].addr().parse().unwrap(), &a).await;
    let mut texts = Vec::new();
    while texts.len() < 2 {
        let got = match alice1.recv(&id, Duration::from_secs(10)).await {
            Ok(got) => got,
            Err(e) if e.code() == Some(ErrorCode::Unavailable) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("recv: {e}"),
        };
        assert!(!got.messages.is_empty(), "m3 and m4 arrive");
        texts.extend(got.messages.into_iter().map(|m| m.plaintext));
    }
    assert_eq!(texts, vec![b"m3".to_vec(), b"m4".to_vec()]);
    drop(back);
    drop((n3, n4));
    cluster.stop().await;
}

/// A short crash soak: nodes killed with SIGKILL (sometimes two at once) and restarted
/// while writers share and send; every acknowledged write is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_soak_loses_no_acknowledged_write() {
    let (node_bin, _) = bins();
    let tmp = tempfile::tempdir().unwrap();
    let report = tigress_bootstrap::soak::run(
        &tigress_bootstrap::soak::SoakOptions {
            cycles: 4,
            writers: 4,
            nodes: 5,
            replication: 5,
            node_bin: node_bin.clone(),
            seed: 7,
        },
        tmp.path(),
    )
    .await
    .unwrap();
    eprintln!("{}", report.line());
    assert!(report.writes_acked > 0, "{}", report.line());
    assert_eq!(report.writes_lost, 0, "{}", report.line());
}

//! Oblivious HTTP for draft clients: an independent client (Python, written from RFC 9458
//! and RFC 9292 on pyhpke) runs the draft flow through a node's gateway directly and
//! through another node as its relay; what the gateway and the relay refuse.

use std::process::Command;

use crate::support::{http, ohttp_script, python_with_hpke};

const FLOW: [&str; 6] = [
    "create 200",
    "read 200",
    "update 200",
    "read-update 200",
    "delete 200",
    "read-deleted 410",
];

fn run_flow(args: &[String]) -> Vec<String> {
    let out = Command::new(python_with_hpke())
        .arg(ohttp_script())
        .args(args)
        .output()
        .expect("running the Python OHTTP client");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the OHTTP client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_client_runs_the_draft_flow_directly_and_through_a_relay() {
    let cluster = tigress_bootstrap::Cluster::start(3, |_, c| {
        c.http = "127.0.0.1:0".parse().ok();
        c.replication = 3;
    })
    .await
    .unwrap();
    let gw = |i: usize| cluster.node(i).unwrap().http_addr().unwrap().to_string();
    let target = cluster.node(0).unwrap().peer_id().to_string();
    let (g0, g1) = (gw(0), gw(1));
    tokio::task::spawn_blocking(move || {
        // The key configuration, as RFC 9540 serves it.
        let keys = http("GET", &g0, "/.well-known/ohttp-gateway", &[], b"");
        assert_eq!(keys.status, 200);
        assert_eq!(keys.header("content-type"), Some("application/ohttp-keys"));

        // Directly to the gateway.
        let direct = run_flow(&["--gateway".into(), format!("http://{g0}")]);
        assert_eq!(direct, FLOW);

        // Through node 1 as the relay: the key still comes from node 0 itself.
        let relayed = run_flow(&[
            "--gateway".into(),
            format!("http://{g0}"),
            "--relay".into(),
            format!("http://{g1}"),
            "--target".into(),
            target.clone(),
        ]);
        assert_eq!(relayed, FLOW);

        // What is refused: bytes not sealed to the gateway's key (400, ohttp-key), the
        // wrong media type (415), a relay asked to reach itself (400), a peer ID that is
        // no node (404), and garbage the target cannot open (502 from the relay).
        let sealed = [("Content-Type", "message/ohttp-req")];
        let r = http(
            "POST",
            &g0,
            "/.well-known/ohttp-gateway",
            &sealed,
            &[7u8; 80],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("ohttp-key"), "{}", r.body);
        let r = http(
            "POST",
            &g0,
            "/.well-known/ohttp-gateway",
            &[("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(r.status, 415);
        let own = cluster_peer_path(&target);
        assert_eq!(http("POST", &g0, &own, &sealed, &[1u8; 80]).status, 400);
        assert_eq!(
            http(
                "POST",
                &g1,
                "/v1/ohttp-relay/not-a-peer",
                &sealed,
                &[1u8; 80]
            )
            .status,
            404
        );
        assert_eq!(http("POST", &g1, &own, &sealed, &[1u8; 80]).status, 502);
    })
    .await
    .unwrap();
}

fn cluster_peer_path(peer: &str) -> String {
    format!("/v1/ohttp-relay/{peer}")
}

/// A target budgets what reaches it per relay: a flood sent through one relay is held to
/// that relay's budget at the target, and a request through another relay still gets
/// through (a relay cannot launder a flood into fresh identities).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_one_relay_is_held_to_that_relays_budget() {
    use tigress_protocol::ErrorCode;
    use tigress_protocol::rpc::ClientRequest;
    use tigress_protocol::wire::BoundedBytes;

    let cluster = tigress_bootstrap::Cluster::start(3, |i, c| {
        c.replication = 3;
        if i == 0 {
            c.peer_requests_per_sec = 1;
            c.peer_request_burst = 5;
        }
    })
    .await
    .unwrap();
    let target = cluster.node(0).unwrap().identity().public_key();
    let through = |i: usize| {
        let addr = cluster.addr(i).unwrap();
        async move { tigress_client::Connection::connect(&addr).await.unwrap() }
    };
    let (a, b) = (through(1).await, through(2).await);
    let garbage = || ClientRequest::Relay {
        target,
        sealed: BoundedBytes::new(vec![7u8; 64]).unwrap(),
    };
    let answers = futures::future::join_all((0..40).map(|_| a.request(garbage()))).await;
    let code = |r: &Result<_, tigress_client::ClientError>| match r {
        Err(tigress_client::ClientError::Remote(e)) => Some(e.code),
        _ => None,
    };
    let limited = answers
        .iter()
        .filter(|r| code(r) == Some(ErrorCode::RateLimited))
        .count();
    let opened = answers
        .iter()
        .filter(|r| code(r) == Some(ErrorCode::Malformed))
        .count();
    assert!(
        limited >= 30,
        "the target held relay A to its budget: {limited} refused, {opened} served"
    );
    assert!(opened >= 1, "relay A's budget let some through");
    // Relay B has a budget of its own at the target: its request is served (and refused
    // for what it is, bytes not sealed to the target's key), not rate limited.
    let answer = b.request(garbage()).await;
    assert_eq!(code(&answer), Some(ErrorCode::Malformed), "{answer:?}");
}

//! One real node process carrying whole shares between `tigress` CLIs and client libraries.

use std::time::Duration;

use tigress_protocol::ShareUrl;
use tigress_protocol::session::ShareOptions;

use crate::support::{Cli, NodeProc, eventually, file};

fn url_of(stdout: &[u8]) -> String {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn cli_transfer_with_three_round_trips_and_back_to_back_sends() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let alice = Cli::new(&tmp.path().join("alice"), &node.addr());
    let bob = Cli::new(&tmp.path().join("bob"), &node.addr());
    let payload = file(tmp.path(), "key", b"car key: VIN 1234");
    let url = url_of(&alice.ok(&[
        "share",
        "--payload",
        payload.to_str().unwrap(),
        "--ttl",
        "1h",
    ]));
    assert!(
        url.starts_with(&format!("http://{}/v1/m/", node.http)),
        "{url}"
    );
    assert_eq!(bob.ok(&["accept", &url]), b"car key: VIN 1234");

    for round in 0..3 {
        // Two messages back to back from the recipient, then two from the sender.
        for k in 0..2 {
            let m = file(tmp.path(), "m", format!("bob {round}.{k}").as_bytes());
            bob.ok(&["send", &url, "--payload", m.to_str().unwrap()]);
        }
        let got = alice.ok(&["recv", &url]);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("bob {round}.0bob {round}.1")
        );
        for k in 0..2 {
            let m = file(tmp.path(), "m", format!("alice {round}.{k}").as_bytes());
            alice.ok(&["send", &url, "--payload", m.to_str().unwrap()]);
        }
        let out = tmp.path().join(format!("bob-{round}"));
        bob.ok(&["recv", &url, "--out-dir", out.to_str().unwrap()]);
        let mut files: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let texts: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(
            texts,
            vec![format!("alice {round}.0"), format!("alice {round}.1")]
        );
    }
    // Nothing new: an empty receive.
    assert!(alice.ok(&["recv", &url]).is_empty());
    let status: serde_json::Value =
        serde_json::from_slice(&alice.ok(&["status", &url, "--json"])).unwrap();
    assert_eq!(status["messages"], 12);
    assert_eq!(status["recipients"].as_array().unwrap().len(), 1);
    // Times: the number, and the same instant in RFC 3339.
    let expires = humantime::parse_rfc3339(status["expires"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        status["expires_at"].as_u64().unwrap()
    );
    let text = String::from_utf8(alice.ok(&["status", &url])).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("expires: ") && l.ends_with('Z')),
        "{text}"
    );
    alice.ok(&["delete", &url]);
    let after = bob.run(&["recv", &url, "--json"]);
    assert_eq!(after.status.code(), Some(6), "deleted: exit 6");
    let err: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(err["error"]["code"], "gone");
    assert_eq!(bob.run(&["status", &url]).status.code(), Some(6));
    assert_eq!(node.terminate(), Some(0), "SIGTERM exits 0");
}

#[test]
fn second_recipient_and_a_recipient_without_the_secret_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let alice = Cli::new(&tmp.path().join("alice"), &node.addr());
    let payload = file(tmp.path(), "key", b"home key");
    let url = url_of(&alice.ok(&["share", "--payload", payload.to_str().unwrap()]));
    let bob = Cli::new(&tmp.path().join("bob"), &node.addr());
    bob.ok(&["accept", &url]);
    let carol = Cli::new(&tmp.path().join("carol"), &node.addr());
    let refused = carol.run(&["accept", &url, "--json"]);
    assert_eq!(refused.status.code(), Some(4), "second recipient: conflict");
    let err: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(err["error"]["code"], "conflict");
    // The same URL with another secret: the node refuses to hand out the genesis.
    let hash = url.find('#').unwrap();
    let forged = format!(
        "{}#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        &url[..hash]
    );
    let dave = Cli::new(&tmp.path().join("dave"), &node.addr());
    let out = dave.run(&["accept", &forged]);
    assert_eq!(out.status.code(), Some(5), "no secret: unauthorized");
    // A malformed URL is a usage error.
    assert_eq!(
        dave.run(&["accept", "https://h/v1/m/nope"]).status.code(),
        Some(2)
    );
}

#[test]
fn expiry_refuses_every_access() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &["--sweep-interval-secs", "1"]);
    let alice = Cli::new(&tmp.path().join("alice"), &node.addr());
    let payload = file(tmp.path(), "key", b"hotel room 7");
    let url = url_of(&alice.ok(&[
        "share",
        "--payload",
        payload.to_str().unwrap(),
        "--ttl",
        "2s",
    ]));
    let bob = Cli::new(&tmp.path().join("bob"), &node.addr());
    bob.ok(&["accept", &url]);
    // Wait until the node refuses the sender's status: expired (gone), or swept (not found).
    let code = eventually(Duration::from_secs(20), "expiry", || {
        let c = alice.run(&["status", &url]).status.code();
        (c != Some(0)).then_some(c)
    });
    assert!(
        matches!(code, Some(3 | 6)),
        "expired: exit 6, or 3 once swept; got {code:?}"
    );
    // Every access is refused from now on, for the parties and for a newcomer.
    let m = file(tmp.path(), "m", b"late");
    assert!(matches!(
        bob.run(&["send", &url, "--payload", m.to_str().unwrap()])
            .status
            .code(),
        Some(3 | 6)
    ));
    assert!(matches!(
        alice.run(&["recv", &url]).status.code(),
        Some(3 | 6)
    ));
    let carol = Cli::new(&tmp.path().join("carol"), &node.addr());
    assert!(matches!(
        carol.run(&["accept", &url]).status.code(),
        Some(3 | 6)
    ));
    // The sweep removes it: the node's mailbox count drops to zero.
    eventually(Duration::from_secs(20), "the sweep", || {
        http_get(&node.admin, "/metrics")
            .contains("tigress_mailboxes_stored 0")
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_the_other_side_sends() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let addr = node.addr().parse().unwrap();
    let alice = crate::support::client(&addr, tmp.path().join("alice")).await;
    let bob = crate::support::client(&addr, tmp.path().join("bob")).await;
    let shared = alice
        .share(b"first", &ShareOptions::default(), None)
        .await
        .unwrap();
    let url = ShareUrl::parse(&shared.url.expose_url()).unwrap();
    assert_eq!(bob.accept(&url).await.unwrap(), b"first");
    let id = url.mailbox_id();
    // The sender waits up to two minutes; the recipient sends; the wait ends with it.
    let waiting = tokio::spawn({
        let alice = alice.clone();
        async move { alice.recv(&id, Duration::from_secs(120)).await }
    });
    // Send only once the node reports the long-poll waiting.
    long_poll_waiting(&node.admin).await;
    let started = std::time::Instant::now();
    bob.send(&id, b"device info", None).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the long-poll returned before its own deadline")
        .unwrap()
        .unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].plaintext, b"device info");
    assert!(started.elapsed() < Duration::from_secs(120));
    // And the other way round.
    let waiting = tokio::spawn({
        let bob = bob.clone();
        async move { bob.recv(&id, Duration::from_secs(120)).await }
    });
    long_poll_waiting(&node.admin).await;
    alice.send(&id, b"provisioning data", None).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the long-poll returned")
        .unwrap()
        .unwrap();
    assert_eq!(got.messages[0].plaintext, b"provisioning data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_transfer_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let node = NodeProc::start(&data, &[]);
    let addr = node.addr().parse().unwrap();
    let alice_dir = tmp.path().join("alice");
    let bob_dir = tmp.path().join("bob");
    let alice = crate::support::client(&addr, &alice_dir).await;
    let bob = crate::support::client(&addr, &bob_dir).await;
    let shared = alice
        .share(b"first", &ShareOptions::default(), None)
        .await
        .unwrap();
    let id = shared.share_id;
    bob.accept(&shared.url).await.unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20u32 {
        let body = format!("message {i}");
        bob.send(&id, body.as_bytes(), None).await.unwrap();
        acknowledged.push(body);
    }
    node.kill();
    // Restart on a fresh port with the same data directory.
    let node = NodeProc::start(&data, &[]);
    let addr = node.addr().parse().unwrap();
    let alice = crate::support::client(&addr, &alice_dir).await;
    let mut got = Vec::new();
    while got.len() < acknowledged.len() {
        let r = alice.recv(&id, Duration::from_secs(5)).await.unwrap();
        assert!(
            !r.messages.is_empty(),
            "acknowledged messages are missing after the restart"
        );
        got.extend(
            r.messages
                .into_iter()
                .map(|m| String::from_utf8(m.plaintext).unwrap()),
        );
    }
    assert_eq!(got, acknowledged);
    // The share goes on after the restart.
    let bob = crate::support::client(&addr, &bob_dir).await;
    alice.send(&id, b"after restart", None).await.unwrap();
    let r = bob.recv(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.messages[0].plaintext, b"after restart");
}

#[test]
fn node_id_is_stable_and_matches_the_running_node() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let (node_bin, _) = crate::support::bins();
    let id = std::process::Command::new(node_bin)
        .args(["id", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(id.status.success());
    let id = String::from_utf8(id.stdout).unwrap().trim().to_owned();
    let node = NodeProc::start(&data, &[]);
    assert_eq!(node.peer_id, id);
    // The admin listener has the metrics and the status; the public port has neither,
    // and its /health says only that the node is up.
    let metrics = http_get(&node.admin, "/metrics");
    assert!(metrics.contains("tigress_bytes_stored"), "{metrics}");
    assert!(
        metrics.contains("tigress_anti_entropy_rounds_total"),
        "{metrics}"
    );
    assert!(http_get(&node.admin, "/status").contains(&id));
    assert_ne!(node.admin, node.http);
    for private in ["/metrics", "/status"] {
        let page = http_get(&node.http, private);
        assert!(page.starts_with("HTTP/1.1 404"), "{private}: {page}");
    }
    let health = http_get(&node.http, "/health");
    let body = health.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert_eq!(
        body,
        format!(
            "{{\"status\":\"ok\",\"version\":\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )
    );
    // An explicit admin address that is taken is an error, not a silent move.
    let taken = std::process::Command::new(&crate::support::bins().0)
        .arg("run")
        .arg("--data-dir")
        .arg(tmp.path().join("second"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"])
        .args(["--admin", &node.admin])
        .output()
        .unwrap();
    assert!(!taken.status.success());
    let err = String::from_utf8_lossy(&taken.stderr);
    assert!(err.contains(&node.admin), "{err}");
}

/// Returns once the node with the admin listener `admin` reports a long-poll waiting.
pub(crate) async fn long_poll_waiting(admin: &str) {
    let http = admin.to_owned();
    tokio::task::spawn_blocking(move || {
        eventually(Duration::from_secs(30), "the long-poll to wait", || {
            http_get(&http, "/metrics")
                .contains("tigress_long_polls_waiting 1")
                .then_some(())
        })
    })
    .await
    .unwrap();
}

/// A minimal HTTP/1.1 GET over loopback.
pub(crate) fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_rate_is_refused_and_others_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let config = file(
        tmp.path(),
        "node.toml",
        b"peer_requests_per_sec = 1\npeer_request_burst = 2\n",
    );
    let node = NodeProc::start(
        &tmp.path().join("node"),
        &["--config", config.to_str().unwrap()],
    );
    let addr = node.addr().parse().unwrap();
    let greedy = tigress_client::Connection::connect(&addr).await.unwrap();
    let mut limited = 0;
    for _ in 0..10 {
        match greedy
            .request(tigress_protocol::rpc::ClientRequest::Info)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    e.code(),
                    Some(tigress_protocol::ErrorCode::RateLimited),
                    "{e}"
                );
                limited += 1;
            }
        }
    }
    assert!(
        limited >= 5,
        "10 requests at once against a burst of 2: {limited} refused"
    );
    let polite = tigress_client::Connection::connect(&addr).await.unwrap();
    assert!(
        polite
            .request(tigress_protocol::rpc::ClientRequest::Info)
            .await
            .is_ok()
    );
}

/// Runs `tigress-node run <args>` expecting it to refuse to start; returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let (node_bin, _) = crate::support::bins();
    let out = std::process::Command::new(node_bin)
        .arg("run")
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the second node must not start");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_second_node_on_a_data_directory_in_use_says_so_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let _first = NodeProc::start(&data, &[]);
    let stderr = refused_start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-http",
    ]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is in use by another tigress-node"),
        "{stderr}"
    );
}

#[test]
fn a_second_node_on_a_tcp_port_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let first = NodeProc::start(&tmp.path().join("a"), &[]);
    let stderr = refused_start(&[
        "--data-dir",
        tmp.path().join("b").to_str().unwrap(),
        "--listen",
        &first.listen,
        "--no-http",
    ]);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
}

/// SIGTERM answers a waiting long-poll at once with nothing new, instead of holding it
/// until the node's 30 s drain gives up and drops the connection (which the client would
/// report as an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_waiting_long_polls_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let alice = Cli::new(&tmp.path().join("alice"), &node.addr());
    let bob = Cli::new(&tmp.path().join("bob"), &node.addr());
    let payload = file(tmp.path(), "key", b"k");
    let url = url_of(&alice.ok(&["share", "--payload", payload.to_str().unwrap()]));
    bob.ok(&["accept", &url]);
    let (_, cli) = crate::support::bins();
    let poll = std::process::Command::new(cli)
        .args(["recv", &url, "--wait", "100s", "--json", "--state"])
        .arg(&bob.state)
        .args(["--node", &bob.node])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    long_poll_waiting(&node.admin).await;
    let code = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "SIGTERM exits 0");
    // The long-poll got an answer: an empty receive, exit 0. (Bounded: `recv` gives up
    // by itself after its 100 s wait.)
    let out = tokio::task::spawn_blocking(move || poll.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "the waiting recv was answered, not cut off: {:?} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(0), "{got}");
}

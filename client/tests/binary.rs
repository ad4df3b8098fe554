//! The `tigress` binary's command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn tigress(args: &[&str]) -> std::process::Output {
    let state = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tigress"))
        .args(args)
        .arg("--state")
        .arg(state.path())
        .env_remove("TIGRESS_NODE")
        .env_remove("TIGRESS_CLUSTER")
        .output()
        .unwrap()
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(tigress(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(tigress(&["accept"]).status.code(), Some(2));
    // A malformed invitation is a usage error, reported before any connection.
    let out = tigress(&["accept", "https://relay.example/v2/m/x#y", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "malformed");
}

#[test]
fn an_unreachable_node_exits_7() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tigress(&[
        "status",
        "https://h/v1/m/2bba630e-519b-11ec-bf63-0242ac130002#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "--node",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The `tigress-node` binary's command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn id_creates_the_identity_once_and_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tigress-node"))
            .args(["id", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(first.trim().starts_with("12D3KooW"), "{first}");
    assert_eq!(run(), first);
}

#[test]
fn a_bad_config_file_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "listn = []\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tigress-node"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

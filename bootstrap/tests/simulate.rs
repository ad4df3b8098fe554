//! `tigress-cluster simulate`: its one-line summary and its exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tigress-cluster"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

#[test]
fn a_clean_run_prints_one_line_and_exits_0() {
    let out = simulate(&["--claim-races", "50", "--exchanges", "50", "--seed", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        line.starts_with("simulation claim_races=50 exchanges=50 faults="),
        "{line}"
    );
    assert_eq!(field(line, "liars"), "0");
    assert_eq!(field(line, "violations"), "0");
    assert_eq!(field(line, "seed"), "3");
    assert!(field(line, "faults").parse::<u64>().unwrap() > 0);
    assert!(field(line, "seconds").parse::<f64>().is_ok());
}

/// With the default claim quorum (R = 5, f = 1), one liar in every replica set finds no
/// violation.
#[test]
fn one_liar_per_set_finds_no_violation() {
    let out = simulate(&[
        "--claim-races",
        "300",
        "--exchanges",
        "100",
        "--liars",
        "1",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(field(stdout.trim(), "liars"), "1");
    assert_eq!(field(stdout.trim(), "violations"), "0");
}

#[test]
fn a_broken_invariant_exits_1_with_the_first_violation_and_its_seed() {
    // One lying replica in every set double-claims under simple-majority certificates
    // (a genesis tolerating no liar on R = 5).
    let out = simulate(&[
        "--claim-races",
        "200",
        "--exchanges",
        "0",
        "--liars",
        "1",
        "--fault-tolerance",
        "0",
        "--seed",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(field(stdout.trim(), "violations").parse::<u64>().unwrap() > 0);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("seed 3"), "{stderr}");
    assert!(stderr.contains("claim-safety"), "{stderr}");
}

#[test]
fn impossible_settings_are_refused_with_the_reason() {
    for (args, reason) in [
        (
            &["--liars", "6", "--replication", "5"][..],
            "--liars at most --replication",
        ),
        (&["--nodes", "0"][..], "--liars at most --replication"),
        (&["--replication", "0"][..], "--liars at most --replication"),
        (
            &["--replication", "5", "--fault-tolerance", "2"][..],
            "--fault-tolerance is at most (replication - 1) / 4 = 1",
        ),
    ] {
        let out = simulate(args);
        assert!(!out.status.success(), "{args:?} must be refused");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(reason), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "no summary for a run that did not happen"
        );
    }
    let out = simulate(&["--seed", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed flag is a usage error"
    );
}

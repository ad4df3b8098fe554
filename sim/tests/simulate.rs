//! The simulator in the suite: 10 000 claim races and 10 000 message exchanges under
//! faults with every invariant holding, a run with real Ed25519, exact replay of a seed,
//! and the canaries that show the invariants can fail.

use tigress_sim::{Config, Faults, Invariant, Rules, Signatures, run};

fn assert_clean(config: &Config) {
    let report = run(config);
    assert_eq!(
        report.violations, 0,
        "seed {} broke an invariant: {:?}",
        config.seed, report.first_violation
    );
    assert_eq!(report.claim_races, config.claim_races);
    assert_eq!(report.exchanges, config.exchanges);
    assert!(report.faults > 0, "no fault was injected");
}

/// 10 000 races and 10 000 exchanges in all, in four seeds run side by side.
fn quarter(seed: u64) {
    assert_clean(&Config {
        claim_races: 2_500,
        exchanges: 2_500,
        seed,
        ..Config::default()
    });
}

#[test]
fn claims_and_exchanges_under_faults_seed_1() {
    quarter(1);
}

#[test]
fn claims_and_exchanges_under_faults_seed_2() {
    quarter(2);
}

#[test]
fn claims_and_exchanges_under_faults_seed_3() {
    quarter(3);
}

#[test]
fn claims_and_exchanges_under_faults_seed_4() {
    quarter(4);
}

#[test]
fn claim_races_with_real_ed25519() {
    assert_clean(&Config {
        claim_races: 500,
        exchanges: 100,
        seed: 11,
        signatures: Signatures::Ed25519,
        ..Config::default()
    });
}

#[test]
fn a_seed_replays_exactly() {
    let config = Config {
        claim_races: 200,
        exchanges: 200,
        seed: 42,
        ..Config::default()
    };
    let a = run(&config);
    let b = run(&config);
    assert_eq!(a, b);
    let other = run(&Config { seed: 43, ..config });
    assert_ne!(a.steps, other.steps, "another seed should make another run");
}

/// Crashes alone (no loss, delay or partition): every write acknowledged before a crash
/// is still there after it.
#[test]
fn crashes_alone_lose_nothing_acknowledged() {
    assert_clean(&Config {
        claim_races: 0,
        exchanges: 300,
        faults: Faults {
            crash_every_ms: 1_000,
            ..Faults::none()
        },
        seed: 5,
        ..Config::default()
    });
}

/// One replica in every set of five grants every claimant every slot and answers fetches
/// with stale messages, withholding new ones: with the claim quorum of 4 (f = 1) no
/// mailbox gets more certificates than allowed, nothing acknowledged is lost, and every
/// exchange completes.
#[test]
fn one_lying_replica_per_set_breaks_nothing() {
    assert_clean(&Config {
        claim_races: 2_000,
        exchanges: 500,
        liars: 1,
        seed: 21,
        ..Config::default()
    });
}

/// Canary: with a simple-majority claim quorum (a genesis with f = 0 on R = 5), one
/// replica that grants every claimant lets two claimants certify the same slot.
#[test]
fn canary_one_lying_replica_double_claims_under_simple_majority() {
    let report = run(&Config {
        claim_races: 200,
        exchanges: 0,
        liars: 1,
        seed: 3,
        stop_at_first_violation: true,
        rules: Rules {
            fault_tolerance: Some(0),
            ..Rules::default()
        },
        ..Config::default()
    });
    assert_eq!(
        report.first_violation.map(|v| v.invariant),
        Some(Invariant::ClaimSafety)
    );
}

/// Canary: when a fetch ends at the first answer with new messages and no grace, a
/// replica that answers first and withholds the oldest new message stalls delivery for
/// good.
#[test]
fn canary_first_answer_fetch_stalls_delivery_behind_a_withholding_replica() {
    let config = Config {
        claim_races: 0,
        exchanges: 40,
        liars: 1,
        seed: 3,
        concurrency: 4,
        stop_at_first_violation: true,
        rules: Rules {
            fetch_grace_ms: 0,
            fetch_first_answer: true,
            ..Rules::default()
        },
        ..Config::default()
    };
    let report = run(&config);
    assert_eq!(
        report.first_violation.map(|v| v.invariant),
        Some(Invariant::Progress)
    );
    // The same liar with the grace in place is harmless.
    assert_clean(&Config {
        rules: Rules::default(),
        stop_at_first_violation: false,
        ..config
    });
}

/// Canary: accepting messages before the cursor lets a replica replay old messages.
#[test]
fn canary_a_stale_cursor_accepted_delivers_twice() {
    let report = run(&Config {
        claim_races: 0,
        exchanges: 40,
        liars: 1,
        seed: 3,
        concurrency: 4,
        stop_at_first_violation: true,
        rules: Rules {
            accept_stale_cursor: true,
            ..Rules::default()
        },
        ..Config::default()
    });
    assert_eq!(
        report.first_violation.map(|v| v.invariant),
        Some(Invariant::FetchWindow)
    );
}

/// A tenth of 100 nodes equivocate and withhold, and mailboxes live on the nodes nearest
/// their address: some replica sets hold more liars than f, but no mailbox whose set holds
/// at most f gets more certificates than allowed or loses an acknowledged record.
#[test]
fn a_liar_fraction_breaks_nothing_within_f() {
    let report = run(&Config {
        nodes: 100,
        claim_races: 1_500,
        exchanges: 0,
        liar_fraction: 0.1,
        seed: 7,
        ..Config::default()
    });
    assert_eq!(report.mailboxes, 1_500);
    assert!(report.sets_over_f > 0, "the run had no set beyond f");
    assert_eq!(report.over_certified_within_f, 0);
    assert_eq!(report.lost_within_f, 0);
}

/// Holders that leave for good: eleven nodes, R = 5 with three standbys, and three
/// holders of the oldest live mailbox leave one after another (their data with them)
/// while long exchanges and claim races run; the other holders hand a departed holder's
/// place to the next standby once it has been out of reach for the takeover time. Under
/// the usual faults every invariant holds: claim safety, durability (on the nodes still
/// there), in-order delivery, progress, convergence of the current holders. Without
/// takeovers the oldest mailbox keeps two holders of five and its writes stall.
#[test]
fn replicas_that_leave_for_good_are_taken_over() {
    for seed in [21, 23, 26] {
        departures(seed);
    }
}

fn departures(seed: u64) {
    let report = run(&Config {
        nodes: 11,
        claim_races: 300,
        exchanges: 1_500,
        exchange_length: 60,
        concurrency: 6,
        seed,
        standbys: 3,
        departures: 3,
        depart_every_ms: 10_000,
        takeover_after_ms: 4_000,
        flow_deadline_ms: 900_000,
        ..Config::default()
    });
    assert_eq!(
        report.violations, 0,
        "seed {seed}: an invariant broke: {:?}",
        report.first_violation
    );
    assert_eq!(report.departures, 3, "three nodes left");
    assert!(report.takeovers > 0, "no takeover happened");
    assert_eq!(report.claim_races, 300);
    assert_eq!(report.exchanges, 1_500);
}

//! `tigress-sim`: a deterministic simulator of the tigress network.
//!
//! It runs many replicas, entry nodes and clients in one thread, on a virtual clock, with
//! one seeded random generator, and on the protocol's own machinery: replicas answer with
//! [`tigress_protocol::replica::apply`], entries decide with the quorums of
//! [`tigress_protocol::quorum`], anti-entropy copies what
//! [`tigress_protocol::reconcile`] says, and clients are the protocol's sender and
//! recipient sessions. Only the transport is simulated, and it misbehaves on purpose:
//! requests and answers are lost, duplicated, delayed and reordered; replicas crash and
//! lose what they had not flushed, then restart; nodes are cut off by partitions; and up
//! to `liars` replicas of every replica set lie (they grant a slot to every claimant,
//! answer first, and answer fetches with old messages and without the oldest new one).
//!
//! It checks the invariants of [`Invariant`] at the steps that can break them: claim
//! safety at every certificate, the fetch window and delivery at every fetch, tombstones
//! at every write, durability at every crash and at every read after a write, and
//! convergence, tombstones and durability again at the end, once anti-entropy has run
//! with the faults stopped. A run reports how many were broken and the first one, and
//! the same seed replays the same run exactly.
//!
//! It is not a model of the protocol: change a rule in `tigress-protocol` and the
//! simulator runs the changed rule. It is also not a network test: libp2p, sled and the
//! node's tasks are exercised by the integration tests.
//!
//! ```
//! let report = tigress_sim::run(&tigress_sim::Config {
//!     claim_races: 20,
//!     exchanges: 20,
//!     ..tigress_sim::Config::default()
//! });
//! assert_eq!(report.violations, 0, "{:?}", report.first_violation);
//! ```

#![warn(missing_docs)]

mod disk;
mod world;

use std::fmt;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Relay nodes (each a replica and an entry).
    pub nodes: usize,
    /// Replicas per mailbox.
    pub replication: usize,
    /// Claim races to run: a mailbox for one recipient and two or three claimants at once.
    pub claim_races: u64,
    /// Messages to exchange between senders and recipients (in bursts, both ways).
    pub exchanges: u64,
    /// Lying replicas in every replica set.
    pub liars: usize,
    /// Instead of `liars` per set: this fraction of the `nodes` lies, and each mailbox
    /// lives on the R nodes nearest its address (the DHT's placement rule), so a set may
    /// hold any number of liars.
    pub liar_fraction: f64,
    /// The seed of everything random.
    pub seed: u64,
    /// The faults injected.
    pub faults: Faults,
    /// The rules under test (the canaries mutate them).
    pub rules: Rules,
    /// How signatures are made.
    pub signatures: Signatures,
    /// Client flows running at once.
    pub concurrency: usize,
    /// Stop at the first broken invariant (the canaries need no more).
    pub stop_at_first_violation: bool,
    /// Standbys each mailbox names after its replicas.
    pub standbys: usize,
    /// Honest nodes that leave for good during the run (their data with them), one every
    /// `depart_every_ms`.
    pub departures: usize,
    /// Virtual milliseconds between departures.
    pub depart_every_ms: u64,
    /// Virtual milliseconds a holder stays unreachable before the others hand it over.
    pub takeover_after_ms: u64,
    /// Messages per exchange flow (0: 4 to 12): long exchanges keep mailboxes live while
    /// their holders leave.
    pub exchange_length: u64,
    /// Virtual milliseconds every flow must finish within (the progress invariant).
    pub flow_deadline_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nodes: 16,
            replication: 5,
            claim_races: 100,
            exchanges: 100,
            liars: 0,
            liar_fraction: 0.0,
            seed: 1,
            faults: Faults::default(),
            rules: Rules::default(),
            signatures: Signatures::Simulated,
            concurrency: 32,
            stop_at_first_violation: false,
            standbys: 0,
            departures: 0,
            depart_every_ms: 20_000,
            takeover_after_ms: 5_000,
            exchange_length: 0,
            flow_deadline_ms: 120_000,
        }
    }
}

/// How often the transport and the nodes misbehave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability that a request or an answer is lost.
    pub loss: f64,
    /// Probability that a request is delivered twice.
    pub duplicate: f64,
    /// Probability that a request or an answer is delayed by 0.1–1.5 s.
    pub delay: f64,
    /// Mean virtual milliseconds between replica crashes (0: none).
    pub crash_every_ms: u64,
    /// Mean virtual milliseconds between partitions (0: none).
    pub partition_every_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            loss: 0.02,
            duplicate: 0.02,
            delay: 0.05,
            crash_every_ms: 3_000,
            partition_every_ms: 7_000,
        }
    }
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            delay: 0.0,
            crash_every_ms: 0,
            partition_every_ms: 0,
        }
    }
}

/// The coordination rules the simulator drives; the defaults are the network's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The fetch grace, in milliseconds ([`tigress_protocol::quorum::FETCH_GRACE_MS`]).
    pub fetch_grace_ms: u64,
    /// Canary: accept messages before the reader's cursor.
    pub accept_stale_cursor: bool,
    /// Canary: a fetch is done at the first answer with new messages (plus the grace),
    /// not at a majority of answers.
    pub fetch_first_answer: bool,
    /// The lying replicas a genesis tolerates (`f`); `None`: the most its replica set
    /// allows. `Some(0)` with R = 5 is a simple-majority claim quorum (a canary with
    /// liars).
    pub fault_tolerance: Option<u8>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            fetch_grace_ms: tigress_protocol::quorum::FETCH_GRACE_MS,
            accept_stale_cursor: false,
            fetch_first_answer: false,
            fault_tolerance: None,
        }
    }
}

/// How simulated nodes sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    /// A keyed hash in place of Ed25519 (see
    /// `tigress_protocol::crypto::danger::SimulatedSignatures`): each node still signs
    /// only as itself.
    Simulated,
    /// Real Ed25519.
    Ed25519,
}

/// An invariant of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// No mailbox has more certified recipients than its policy allows.
    ClaimSafety,
    /// No record acknowledged by a write majority is lost while its replicas survive, and
    /// a read that hears from a majority shows it.
    Durability,
    /// A fetch returns nothing before the reader's cursor and nothing twice.
    FetchWindow,
    /// Each party receives each message once, in order, as it was sent.
    InOrderDelivery,
    /// A deleted mailbox never comes back on a replica that held its tombstone, and
    /// every replica ends up holding the tombstone.
    Tombstone,
    /// Honest replicas of a mailbox hold the same records once anti-entropy has run.
    Convergence,
    /// Every client flow finishes (faults are transient).
    Progress,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invariant::ClaimSafety => "claim-safety",
            Invariant::Durability => "durability",
            Invariant::FetchWindow => "fetch-window",
            Invariant::InOrderDelivery => "in-order-delivery",
            Invariant::Tombstone => "tombstone",
            Invariant::Convergence => "convergence",
            Invariant::Progress => "progress",
        })
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time, in milliseconds from the start.
    pub at_ms: u64,
    /// Which invariant.
    pub invariant: Invariant,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} ms: {}",
            self.invariant, self.at_ms, self.detail
        )
    }
}

/// What a run did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Claim races run.
    pub claim_races: u64,
    /// Messages delivered.
    pub exchanges: u64,
    /// Fault events injected.
    pub faults: u64,
    /// Lying replicas per replica set.
    pub liars: usize,
    /// Invariants broken.
    pub violations: u64,
    /// Broken invariants by kind.
    pub by_invariant: Vec<(Invariant, u64)>,
    /// The first broken invariant.
    pub first_violation: Option<Violation>,
    /// The seed.
    pub seed: u64,
    /// Virtual time the run took, in milliseconds.
    pub virtual_ms: u64,
    /// Mailboxes created.
    pub mailboxes: u64,
    /// Mailboxes whose replica set held more liars than its genesis tolerates (f).
    pub sets_over_f: u64,
    /// Mailboxes that got more certified recipients than their policy allows.
    pub over_certified: u64,
    /// Of those, the ones whose set held at most f liars (the claim rule's promise: 0).
    pub over_certified_within_f: u64,
    /// Mailboxes with an acknowledged record on no honest replica although their set held
    /// at most f liars (0).
    pub lost_within_f: u64,
    /// Simulation steps (events) processed.
    pub steps: u64,
    /// Nodes that left for good.
    pub departures: u64,
    /// Takeovers adopted (the longest chain of each mailbox, summed).
    pub takeovers: u64,
}

impl Report {
    /// How many times `invariant` broke.
    pub fn count(&self, invariant: Invariant) -> u64 {
        self.by_invariant
            .iter()
            .find(|(i, _)| *i == invariant)
            .map_or(0, |(_, n)| *n)
    }

    /// The one-line summary `tigress-cluster simulate` prints.
    pub fn line(&self, seconds: f64) -> String {
        format!(
            "simulation claim_races={} exchanges={} faults={} liars={} violations={} seed={} seconds={:.2}",
            self.claim_races,
            self.exchanges,
            self.faults,
            self.liars,
            self.violations,
            self.seed,
            seconds
        )
    }

    /// The line of a run with a liar fraction: how many replica sets held more than f
    /// liars, and how many mailboxes got more certificates than allowed (within f and in
    /// all).
    pub fn byzantine_line(&self, fraction: f64) -> String {
        format!(
            "byzantine liar_fraction={fraction} mailboxes={} sets_over_f={} over_certified={} over_certified_within_f={} lost_within_f={}",
            self.mailboxes,
            self.sets_over_f,
            self.over_certified,
            self.over_certified_within_f,
            self.lost_within_f
        )
    }
}

/// Runs one simulation.
pub fn run(config: &Config) -> Report {
    let _sim = match config.signatures {
        Signatures::Simulated => {
            Some(tigress_protocol::crypto::danger::SimulatedSignatures::enable())
        }
        Signatures::Ed25519 => None,
    };
    world::World::new(config.clone()).run()
}

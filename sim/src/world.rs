//! The simulated world: nodes, the transport, client flows and the invariant checks,
//! driven by one event queue on a virtual clock.

// Nodes and flows are indexed by the simulator's own identifiers, made here and never
// taken from a record: an index out of range is a simulator bug.
#![allow(clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use tigress_protocol::crypto::{PublicKey, SigningKey};
use tigress_protocol::invitation::ShareUrl;
use tigress_protocol::mailbox::{Limits, MailboxState, MessageKey};
use tigress_protocol::quorum::{
    Answer, CallError, ClaimGather, ClaimOutcome, FetchGather, Fetched, Quorum, READ_GRACE_MS,
    ReadGather, WriteGather,
};
use tigress_protocol::reconcile;
use tigress_protocol::record::{
    ClaimCertificate, Genesis, Message, Policy, ReadScope, cursor_digest,
};
use tigress_protocol::replica::{self, Storage};
use tigress_protocol::rpc::{Cursor, MailboxView, RemoteError, ReplicaRequest, ReplicaResponse};
use tigress_protocol::session::{RecipientSession, SenderSession, ShareIdentity, ShareOptions};
use tigress_protocol::{Address, ErrorCode};

use crate::disk::Disk;
use crate::{Config, Invariant, Report, Violation};

/// Unix time at virtual time zero.
const T0: u64 = 1_800_000_000;
/// How long an entry waits for one replica.
const REPLICA_TIMEOUT_MS: u64 = 1_000;
/// Group commit: a write is flushed this long after it is applied.
const FLUSH_MS: u64 = 2;
/// Anti-entropy period of each node.
const ANTI_ENTROPY_MS: u64 = 2_000;
/// A client retries a refused or unanswered step after this long.
const RETRY_MS: u64 = 300;
/// A client polls again after a fetch that did not deliver everything.
const POLL_MS: u64 = 50;
/// The most events one run processes (a bound on every loop).
const MAX_STEPS: u64 = 200_000_000;

type NodeId = usize;
type OpId = u64;
type FlowId = u64;

enum Event {
    /// A request reaches a replica.
    Request {
        node: NodeId,
        op: OpId,
        entry: NodeId,
        request: Box<ReplicaRequest>,
    },
    /// An answer (or the failure to get one) reaches an entry.
    Answer {
        op: OpId,
        from: PublicKey,
        answer: Box<Answer>,
    },
    /// The grace of an op ends.
    Grace {
        op: OpId,
    },
    /// A node flushes its writes and sends the answers that waited for them.
    Flush {
        node: NodeId,
        epoch: u64,
    },
    Crash,
    Restart {
        node: NodeId,
    },
    Partition,
    Heal,
    /// An honest node leaves for good.
    Depart,
    AntiEntropy {
        node: NodeId,
    },
    /// A client flow takes its next step.
    Step {
        flow: FlowId,
    },
    /// A flow's deadline.
    Deadline {
        flow: FlowId,
    },
}

struct Node {
    key: SigningKey,
    public: PublicKey,
    liar: bool,
    up: bool,
    epoch: u64,
    disk: Disk,
    /// Answers waiting for the next flush: (op, entry, answer).
    unflushed: Vec<(OpId, NodeId, ReplicaResponse)>,
    flush_pending: bool,
    /// Mailboxes written since this node's last anti-entropy pass.
    touched: BTreeSet<Address>,
    /// Mailboxes whose tombstone this node has held durably.
    tombstones: BTreeSet<Address>,
    /// Left for good: never up again, its data gone.
    gone: bool,
    /// Since when (virtual ms) each other node has been out of this node's reach.
    unreachable: BTreeMap<NodeId, u64>,
}

enum OpKind {
    Write(Quorum<WriteGather>),
    Claim(Box<Quorum<ClaimGather>>),
    Fetch(Box<Quorum<FetchGather>>),
    Read(Box<Quorum<ReadGather>>),
}

struct Op {
    flow: FlowId,
    kind: OpKind,
}

enum OpResult {
    Written(Result<bool, RemoteError>),
    Claimed(ClaimOutcome),
    Fetched(Result<Fetched, RemoteError>),
    Read(Result<Box<MailboxView>, RemoteError>),
}

/// A record acknowledged by a write majority.
enum Acked {
    Genesis,
    Message(MessageKey),
    Certificate(PublicKey),
    Delete,
}

struct Claimant {
    session: RecipientSession,
    done: bool,
    storing: bool,
}

enum RacePhase {
    Creating,
    Claiming,
}

struct Race {
    genesis: Genesis,
    replicas: Vec<PublicKey>,
    claimants: Vec<Claimant>,
    phase: RacePhase,
    /// Which claimant the op in flight is for.
    op_for: BTreeMap<OpId, usize>,
}

enum ExchangePhase {
    Creating,
    Claiming,
    StoringCertificate(Box<ClaimCertificate>),
    /// The sender reads its view to learn the recipient.
    Learning,
    Sending,
    Fetching,
    Deleting,
}

struct Exchange {
    sender: SenderSession,
    recipient: RecipientSession,
    phase: ExchangePhase,
    /// Messages still to deliver in this flow.
    remaining: u64,
    /// The burst being sent: sealed, not yet acknowledged (the outbox).
    outbox: VecDeque<Message>,
    /// What the reader must receive next, in order: (author, seq, plaintext).
    expected: VecDeque<(PublicKey, u64, Vec<u8>)>,
    /// Whether the recipient is the author of the current burst.
    recipient_writes: bool,
    /// The delete, signed once and sent again as it is.
    delete: Option<tigress_protocol::record::Delete>,
}

enum FlowKind {
    Race(Box<Race>),
    Exchange(Box<Exchange>),
}

struct Flow {
    kind: FlowKind,
    address: Address,
}

pub(crate) struct World {
    config: Config,
    rng: ChaCha20Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    nodes: Vec<Node>,
    by_key: BTreeMap<PublicKey, NodeId>,
    cut: BTreeSet<NodeId>,
    ops: BTreeMap<OpId, Op>,
    next_op: OpId,
    flows: BTreeMap<FlowId, Flow>,
    next_flow: FlowId,
    limits: Limits,
    // Work left to start.
    races_left: u64,
    exchanges_left: u64,
    // Bookkeeping for the invariants.
    certified: BTreeMap<Address, BTreeSet<PublicKey>>,
    acked: Vec<(Address, Vec<PublicKey>, Acked)>,
    deleted: BTreeSet<Address>,
    // The report.
    races_done: u64,
    delivered: u64,
    faults: u64,
    steps: u64,
    violations: BTreeMap<Invariant, u64>,
    first: Option<Violation>,
    mailboxes: u64,
    sets_over_f: u64,
    over_certified: u64,
    over_certified_within_f: u64,
    lost_within_f: BTreeSet<Address>,
    departures: u64,
    /// The mailbox whose holders leave one after another.
    departing: Option<Address>,
}

impl World {
    pub(crate) fn new(config: Config) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
        let liars = config.liars.min(config.replication);
        let mut nodes = Vec::new();
        let mut by_key = BTreeMap::new();
        // The liars are extra nodes beyond `nodes`; every replica set takes `liars` of them.
        // With a liar fraction instead, the last of the `nodes` lie (their keys are as
        // random as the others').
        let total = config.nodes.max(config.replication) + liars;
        let first_liar = if config.liar_fraction > 0.0 {
            let lying = (config.liar_fraction * total as f64).round() as usize;
            total - lying.min(total)
        } else {
            config.nodes.max(config.replication)
        };
        for i in 0..total {
            let key = SigningKey::generate(&mut rng);
            let public = key.public_key();
            by_key.insert(public, i);
            nodes.push(Node {
                key,
                public,
                liar: i >= first_liar,
                up: true,
                epoch: 0,
                disk: Disk::default(),
                unflushed: Vec::new(),
                flush_pending: false,
                touched: BTreeSet::new(),
                tombstones: BTreeSet::new(),
                gone: false,
                unreachable: BTreeMap::new(),
            });
        }
        let races_left = config.claim_races;
        let exchanges_left = config.exchanges;
        Self {
            config,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            by_key,
            cut: BTreeSet::new(),
            ops: BTreeMap::new(),
            next_op: 0,
            flows: BTreeMap::new(),
            next_flow: 0,
            limits: Limits::default(),
            races_left,
            exchanges_left,
            certified: BTreeMap::new(),
            acked: Vec::new(),
            deleted: BTreeSet::new(),
            races_done: 0,
            delivered: 0,
            faults: 0,
            steps: 0,
            violations: BTreeMap::new(),
            first: None,
            mailboxes: 0,
            sets_over_f: 0,
            over_certified: 0,
            over_certified_within_f: 0,
            lost_within_f: BTreeSet::new(),
            departures: 0,
            departing: None,
        }
    }

    fn unix(&self) -> u64 {
        T0 + self.now / 1000
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.next_u64() % (hi - lo + 1)
    }

    fn violate(&mut self, invariant: Invariant, detail: String) {
        *self.violations.entry(invariant).or_default() += 1;
        if self.first.is_none() {
            self.first = Some(Violation {
                at_ms: self.now,
                invariant,
                detail,
            });
        }
    }

    fn honest_count(&self) -> usize {
        self.nodes.iter().filter(|n| !n.liar).count()
    }

    pub(crate) fn run(mut self) -> Report {
        let faults = self.config.faults;
        if faults.crash_every_ms > 0 {
            let d = self.between(1, 2 * faults.crash_every_ms);
            self.at(d, Event::Crash);
        }
        if faults.partition_every_ms > 0 {
            let d = self.between(1, 2 * faults.partition_every_ms);
            self.at(d, Event::Partition);
        }
        if self.config.departures > 0 {
            let every = self.config.depart_every_ms;
            self.at(every, Event::Depart);
        }
        for node in 0..self.nodes.len() {
            if !self.nodes[node].liar {
                let d = self.between(1, ANTI_ENTROPY_MS);
                self.at(d, Event::AntiEntropy { node });
            }
        }
        for _ in 0..self.config.concurrency.max(1) {
            self.start_flow();
        }
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                self.violate(Invariant::Progress, "the step bound was reached".into());
                break;
            }
            self.now = at;
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            self.handle(event);
            if self.config.stop_at_first_violation && self.first.is_some() {
                return self.report();
            }
            if self.flows.is_empty() && self.races_left == 0 && self.exchanges_left == 0 {
                break;
            }
        }
        self.settle();
        self.report()
    }

    fn report(self) -> Report {
        let takeovers = self.takeovers();
        Report {
            claim_races: self.races_done,
            exchanges: self.delivered,
            faults: self.faults,
            liars: self.config.liars,
            violations: self.violations.values().sum(),
            by_invariant: self.violations.into_iter().collect(),
            first_violation: self.first,
            seed: self.config.seed,
            virtual_ms: self.now,
            mailboxes: self.mailboxes,
            sets_over_f: self.sets_over_f,
            over_certified: self.over_certified,
            over_certified_within_f: self.over_certified_within_f,
            lost_within_f: self.lost_within_f.len() as u64,
            steps: self.steps,
            departures: self.departures,
            takeovers,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Request {
                node,
                op,
                entry,
                request,
            } => self.on_request(node, op, entry, *request),
            Event::Answer { op, from, answer } => self.on_answer(op, from, *answer),
            Event::Grace { op } => self.poll_op(op),
            Event::Flush { node, epoch } => self.on_flush(node, epoch),
            Event::Crash => self.on_crash(),
            Event::Restart { node } => {
                self.nodes[node].up = !self.nodes[node].gone;
            }
            Event::Depart => self.on_depart(),
            Event::Partition => self.on_partition(),
            Event::Heal => self.cut.clear(),
            Event::AntiEntropy { node } => {
                if self.config.departures > 0 {
                    self.take_over(node);
                }
                self.anti_entropy(node);
                self.at(ANTI_ENTROPY_MS, Event::AntiEntropy { node });
            }
            Event::Step { flow } => self.step(flow, None),
            Event::Deadline { flow } => {
                if self.flows.contains_key(&flow) {
                    let address = self.flows[&flow].address.short();
                    let stage = match &self.flows[&flow].kind {
                        FlowKind::Race(r) => match r.phase {
                            RacePhase::Creating => "creating a claim race",
                            RacePhase::Claiming => "claiming",
                        },
                        FlowKind::Exchange(e) => match e.phase {
                            ExchangePhase::Creating => "creating an exchange",
                            ExchangePhase::Claiming => "claiming for an exchange",
                            ExchangePhase::StoringCertificate(_) => "storing the certificate",
                            ExchangePhase::Learning => "reading the view",
                            ExchangePhase::Sending => "sending",
                            ExchangePhase::Fetching => "fetching",
                            ExchangePhase::Deleting => "deleting",
                        },
                    };
                    self.violate(
                        Invariant::Progress,
                        format!("flow {flow} on mailbox {address} did not finish ({stage})"),
                    );
                    self.finish_flow(flow);
                }
            }
        }
    }

    // ---- transport -------------------------------------------------------------------

    /// Whether two nodes can talk (liars are well connected: no partition cuts them off).
    fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        self.nodes[a].liar || self.nodes[b].liar || self.cut.contains(&a) == self.cut.contains(&b)
    }

    /// Network delay for a message between two nodes, or `None` when it is lost.
    fn transit(&mut self, liar: bool) -> Option<u64> {
        if liar {
            // Liars are well connected and answer first.
            return Some(0);
        }
        let f = self.config.faults;
        if self.chance(f.loss) {
            self.faults += 1;
            return None;
        }
        let mut d = self.between(1, 20);
        if self.chance(f.delay) {
            self.faults += 1;
            d += self.between(100, 1_500);
        }
        Some(d)
    }

    fn start_op(&mut self, flow: FlowId, kind: OpKind, request: ReplicaRequest) -> OpId {
        self.start_op_after(flow, 0, kind, request)
    }

    /// Starts an op whose requests leave `delay` ms from now.
    fn start_op_after(
        &mut self,
        flow: FlowId,
        delay: u64,
        kind: OpKind,
        request: ReplicaRequest,
    ) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        let targets: Vec<PublicKey> = match &kind {
            OpKind::Write(q) => q.targets().to_vec(),
            OpKind::Claim(q) => q.targets().to_vec(),
            OpKind::Fetch(q) => q.targets().to_vec(),
            OpKind::Read(q) => q.targets().to_vec(),
        };
        self.ops.insert(op, Op { flow, kind });
        let entry = self.honest_node();
        for t in targets {
            let Some(&node) = self.by_key.get(&t) else {
                continue;
            };
            self.at(
                delay + REPLICA_TIMEOUT_MS,
                Event::Answer {
                    op,
                    from: t,
                    answer: Box::new(Err(CallError::Timeout)),
                },
            );
            let copies = if self.chance(self.config.faults.duplicate) {
                self.faults += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let liar = self.nodes[node].liar;
                if let Some(d) = self.transit(liar) {
                    self.at(
                        delay + d,
                        Event::Request {
                            node,
                            op,
                            entry,
                            request: Box::new(request.clone()),
                        },
                    );
                }
            }
        }
        op
    }

    fn honest_node(&mut self) -> NodeId {
        let n = self.honest_count();
        let mut pick = (self.rng.next_u64() % n as u64) as usize;
        // An entry that left for good is replaced by the next one still there.
        for _ in 0..n {
            if !self.nodes[pick].gone {
                break;
            }
            pick = (pick + 1) % n;
        }
        pick
    }

    fn reply(&mut self, node: NodeId, op: OpId, entry: NodeId, response: ReplicaResponse) {
        if !self.reachable(node, entry) {
            return;
        }
        let liar = self.nodes[node].liar;
        if let Some(d) = self.transit(liar) {
            let from = self.nodes[node].public;
            self.at(
                d,
                Event::Answer {
                    op,
                    from,
                    answer: Box::new(Ok(response)),
                },
            );
        }
    }

    fn on_answer(&mut self, op: OpId, from: PublicKey, answer: Answer) {
        let now = self.now;
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        match &mut o.kind {
            OpKind::Write(q) => q.handle_answer(from, answer, now),
            OpKind::Claim(q) => q.handle_answer(from, answer, now),
            OpKind::Fetch(q) => q.handle_answer(from, answer, now),
            OpKind::Read(q) => q.handle_answer(from, answer, now),
        }
        self.poll_op(op);
    }

    fn poll_op(&mut self, op: OpId) {
        let now = self.now;
        let Some(o) = self.ops.get(&op) else {
            return;
        };
        let (done, deadline) = match &o.kind {
            OpKind::Write(q) => (q.is_done(now), q.poll_deadline()),
            OpKind::Claim(q) => (q.is_done(now), q.poll_deadline()),
            OpKind::Fetch(q) => (q.is_done(now), q.poll_deadline()),
            OpKind::Read(q) => (q.is_done(now), q.poll_deadline()),
        };
        if !done {
            if let Some(d) = deadline
                && d > now
            {
                self.at(d - now, Event::Grace { op });
            }
            return;
        }
        let Some(o) = self.ops.remove(&op) else {
            return;
        };
        let result = match o.kind {
            OpKind::Write(q) => OpResult::Written(q.finish().map(|w| w.duplicate)),
            OpKind::Claim(q) => {
                let (outcome, proofs) = (*q).finish();
                for proof in proofs {
                    self.accused(&proof);
                }
                OpResult::Claimed(outcome)
            }
            OpKind::Fetch(q) => OpResult::Fetched((*q).finish()),
            OpKind::Read(q) => OpResult::Read((*q).finish().map(Box::new)),
        };
        self.step(o.flow, Some((op, result)));
    }

    // ---- replicas --------------------------------------------------------------------

    fn on_request(&mut self, node: NodeId, op: OpId, entry: NodeId, request: ReplicaRequest) {
        if !self.nodes[node].up || !self.reachable(node, entry) {
            return;
        }
        let now = self.unix();
        if self.nodes[node].liar {
            let response = self.lie(node, request, now);
            self.reply(node, op, entry, response);
            return;
        }
        let address = request_address(&request);
        let limits = self.limits;
        let from = self.nodes[entry].public;
        let n = &mut self.nodes[node];
        let applied = replica::apply(&mut n.disk, &n.key, &limits, Some(&from), request, now);
        if let Some(a) = address {
            self.check_tombstone(node, a);
        }
        let n = &mut self.nodes[node];
        if applied.wrote {
            if let Some(a) = address {
                n.touched.insert(a);
            }
            n.unflushed.push((op, entry, applied.response));
            self.schedule_flush(node);
        } else {
            self.reply(node, op, entry, applied.response);
        }
    }

    fn schedule_flush(&mut self, node: NodeId) {
        let n = &mut self.nodes[node];
        if !n.flush_pending {
            n.flush_pending = true;
            let epoch = n.epoch;
            self.at(FLUSH_MS, Event::Flush { node, epoch });
        }
    }

    fn on_flush(&mut self, node: NodeId, epoch: u64) {
        let n = &mut self.nodes[node];
        if n.epoch != epoch || !n.up {
            return;
        }
        n.flush_pending = false;
        n.disk.flush();
        let waiting = std::mem::take(&mut n.unflushed);
        let touched: Vec<Address> = n.touched.iter().copied().collect();
        for a in touched {
            if self.nodes[node]
                .disk
                .state(&a)
                .is_some_and(|s| s.deletion().is_some())
            {
                self.nodes[node].tombstones.insert(a);
            }
        }
        for (op, entry, response) in waiting {
            self.reply(node, op, entry, response);
        }
    }

    fn on_crash(&mut self) {
        let honest = self.honest_count();
        let node = (self.rng.next_u64() % honest as u64) as usize;
        let n = &mut self.nodes[node];
        if n.up && !n.gone {
            n.up = false;
            n.epoch += 1;
            n.flush_pending = false;
            n.unflushed.clear();
            n.disk.crash();
            self.faults += 1;
            let down = self.between(200, 3_000);
            self.at(down, Event::Restart { node });
            let addresses: Vec<Address> = self.nodes[node].tombstones.iter().copied().collect();
            for a in addresses {
                self.check_tombstone(node, a);
            }
            self.check_durability();
        }
        let every = self.config.faults.crash_every_ms;
        let next = self.between(1, 2 * every);
        self.at(next, Event::Crash);
    }

    fn on_partition(&mut self) {
        if self.cut.is_empty() {
            let honest = self.honest_count();
            let size = self.between(1, (honest / 3).max(1) as u64) as usize;
            for _ in 0..size {
                let n = (self.rng.next_u64() % honest as u64) as usize;
                self.cut.insert(n);
            }
            self.faults += 1;
            let heal = self.between(200, 3_000);
            self.at(heal, Event::Heal);
        }
        let every = self.config.faults.partition_every_ms;
        let next = self.between(1, 2 * every);
        self.at(next, Event::Partition);
    }

    /// A lying replica: grants a slot to every claimant (as if it had granted nothing),
    /// and answers a fetch with the reader's old messages and without the oldest new one.
    fn lie(&mut self, node: NodeId, request: ReplicaRequest, now: u64) -> ReplicaResponse {
        let limits = self.limits;
        let n = &mut self.nodes[node];
        match request {
            ReplicaRequest::Grant { claim } => {
                let Some(state) = n.disk.state(&claim.body.address) else {
                    return ReplicaResponse::Error(RemoteError::new(
                        ErrorCode::NotFound,
                        "no such mailbox",
                    ));
                };
                match MailboxState::create(state.genesis().clone(), &limits, now)
                    .and_then(|mut fresh| fresh.grant(&claim, &n.key, &limits, now))
                {
                    Ok((receipt, _)) => ReplicaResponse::Granted(receipt),
                    Err(e) => ReplicaResponse::Error(RemoteError::from(&e)),
                }
            }
            ReplicaRequest::Fetch {
                request, cursor, ..
            } => {
                // Every message of the reader's, old ones included, read straight off the
                // disk, without the oldest new one of each author.
                let reader = request.body.by;
                let Some(state) = n.disk.state(&request.body.address) else {
                    return ReplicaResponse::Messages {
                        messages: tigress_protocol::wire::BoundedVec::default(),
                    };
                };
                let mut withheld: BTreeSet<PublicKey> = BTreeSet::new();
                let mut kept: Vec<Message> = Vec::new();
                for (key, _) in state.message_keys() {
                    let (from, to, seq) = *key;
                    if to != reader {
                        continue;
                    }
                    let next = cursor
                        .iter()
                        .find(|(a, _)| *a == from)
                        .map_or(1, |(_, s)| *s);
                    if seq == next && withheld.insert(from) {
                        continue;
                    }
                    if let Ok(Some(m)) = n.disk.message(&request.body.address, key) {
                        kept.push(m);
                    }
                }
                ReplicaResponse::Messages {
                    messages: tigress_protocol::wire::BoundedVec::truncated(kept),
                }
            }
            other => {
                let applied = replica::apply(&mut n.disk, &n.key, &limits, None, other, now);
                n.disk.flush();
                applied.response
            }
        }
    }

    // ---- anti-entropy ----------------------------------------------------------------

    /// One pass of `node`: each mailbox it wrote since the last pass is reconciled with
    /// every reachable honest replica of its set, both ways.
    fn anti_entropy(&mut self, node: NodeId) {
        if !self.nodes[node].up {
            return;
        }
        let touched = std::mem::take(&mut self.nodes[node].touched);
        for address in touched {
            let Some(state) = self.nodes[node].disk.state(&address) else {
                continue;
            };
            let replicas = state.holders();
            let mut missed = false;
            for peer in replicas {
                let Some(&p) = self.by_key.get(&peer) else {
                    continue;
                };
                if p == node || self.nodes[p].liar {
                    continue;
                }
                if !self.nodes[p].up || !self.reachable(node, p) {
                    missed = !self.nodes[p].gone;
                    continue;
                }
                self.reconcile(node, p, address);
            }
            // A peer out of reach is tried again at the next pass, as a node's periodic
            // anti-entropy over all its mailboxes would.
            if missed {
                self.nodes[node].touched.insert(address);
            }
        }
    }

    fn digest(
        &mut self,
        node: NodeId,
        address: Address,
    ) -> Option<tigress_protocol::rpc::ReplicaDigest> {
        let now = self.unix();
        let limits = self.limits;
        let n = &mut self.nodes[node];
        let me = n.public;
        match replica::apply(
            &mut n.disk,
            &n.key,
            &limits,
            Some(&me),
            ReplicaRequest::Digest { address },
            now,
        )
        .response
        {
            ReplicaResponse::Digest(d) => Some(d),
            _ => None,
        }
    }

    /// Reconciles one mailbox between two replicas; returns whether anything was copied.
    fn reconcile(&mut self, a: NodeId, b: NodeId, address: Address) -> bool {
        let Some(mine) = self.digest(a, address) else {
            return false;
        };
        let theirs = self.digest(b, address);
        let mut copied = false;
        if let Some(t) = &theirs {
            let pull = reconcile::lacking(Some(&mine), t);
            copied |= self.copy(b, a, address, &pull);
        }
        let push = reconcile::lacking(theirs.as_ref(), &mine);
        copied |= self.copy(a, b, address, &push);
        copied
    }

    fn copy(
        &mut self,
        source: NodeId,
        target: NodeId,
        address: Address,
        lacking: &reconcile::Lacking,
    ) -> bool {
        if lacking.is_empty() || self.nodes[target].liar {
            return false;
        }
        let now = self.unix();
        let limits = self.limits;
        let (before, after) = lacking.requests();
        let mut requests = before;
        for keys in lacking.message_batches() {
            for key in keys.iter() {
                if let Ok(Some(m)) = self.nodes[source].disk.message(&address, key) {
                    requests.push(ReplicaRequest::StoreMessage { message: m });
                }
            }
        }
        requests.extend(after);
        let mut wrote = false;
        let from = self.nodes[source].public;
        for request in requests {
            let n = &mut self.nodes[target];
            wrote |= replica::apply(&mut n.disk, &n.key, &limits, Some(&from), request, now).wrote;
        }
        self.check_tombstone(target, address);
        if wrote {
            self.nodes[target].touched.insert(address);
            self.schedule_flush(target);
        }
        wrote
    }

    // ---- invariants ------------------------------------------------------------------

    fn check_tombstone(&mut self, node: NodeId, address: Address) {
        let n = &self.nodes[node];
        if n.tombstones.contains(&address)
            && n.disk
                .state(&address)
                .is_some_and(|s| s.deletion().is_none())
        {
            let who = n.public.short();
            self.violate(
                Invariant::Tombstone,
                format!(
                    "replica {who} holds mailbox {} live again after its tombstone",
                    address.short()
                ),
            );
        }
    }

    fn holds(&self, node: NodeId, address: &Address, record: &Acked) -> bool {
        let disk = &self.nodes[node].disk;
        let Some(state) = disk.state(address) else {
            return false;
        };
        let deleted = state.deletion().is_some();
        match record {
            Acked::Genesis => true,
            Acked::Message(key) => deleted || disk.has_message(address, key),
            Acked::Certificate(who) => {
                deleted
                    || state
                        .certificates()
                        .iter()
                        .any(|c| c.claim.body.recipient == *who)
            }
            Acked::Delete => deleted,
        }
    }

    /// Every acknowledged record is held by some honest replica of its set (crashes keep
    /// what was flushed, so a lost record is a record acknowledged before it was durable).
    fn check_durability(&mut self) {
        let mut lost = Vec::new();
        let f = self.config.rules.fault_tolerance.unwrap_or_else(|| {
            tigress_protocol::record::max_fault_tolerance(self.config.replication)
        });
        for (address, replicas, record) in &self.acked {
            // Held by an honest node still in the network (a holder, or a standby that
            // took a place; a node that left took its data with it).
            let held = (0..self.nodes.len()).any(|n| {
                !self.nodes[n].liar && !self.nodes[n].gone && self.holds(n, address, record)
            });
            let liars = replicas
                .iter()
                .filter(|r| self.by_key.get(r).is_some_and(|&n| self.nodes[n].liar))
                .count();
            if !held && liars <= usize::from(f) {
                self.lost_within_f.insert(*address);
            }
            if !held {
                lost.push(format!(
                    "mailbox {}: an acknowledged {} is on no honest replica",
                    address.short(),
                    match record {
                        Acked::Genesis => "genesis",
                        Acked::Message(_) => "message",
                        Acked::Certificate(_) => "certificate",
                        Acked::Delete => "delete",
                    }
                ));
            }
        }
        for l in lost {
            self.violate(Invariant::Durability, l);
        }
    }

    /// The end of a run: faults stop, every node is up and reachable, anti-entropy runs
    /// until nothing changes, and the end-state invariants are checked.
    fn settle(&mut self) {
        self.cut.clear();
        for n in 0..self.nodes.len() {
            self.nodes[n].up = !self.nodes[n].gone;
            self.nodes[n].disk.flush();
        }
        let addresses: BTreeSet<Address> = self.acked.iter().map(|(a, _, _)| *a).collect();
        for _round in 0..4 {
            let mut copied = false;
            for &address in &addresses {
                let holders: Vec<NodeId> = (0..self.nodes.len())
                    .filter(|&n| {
                        !self.nodes[n].liar
                            && !self.nodes[n].gone
                            && self.nodes[n].disk.state(&address).is_some()
                    })
                    .collect();
                for &a in &holders {
                    let Some(state) = self.nodes[a].disk.state(&address) else {
                        continue;
                    };
                    let replicas = state.holders();
                    for r in replicas {
                        if let Some(&b) = self.by_key.get(&r)
                            && b != a
                            && !self.nodes[b].liar
                            && !self.nodes[b].gone
                        {
                            copied |= self.reconcile(a, b, address);
                        }
                    }
                }
            }
            if !copied {
                break;
            }
        }
        for n in 0..self.nodes.len() {
            self.nodes[n].disk.flush();
        }
        self.check_durability();
        for &address in &addresses {
            let mut summaries = BTreeSet::new();
            let mut live_after_delete = false;
            let replicas: Vec<NodeId> = self
                .holders_now(&address)
                .iter()
                .filter_map(|k| self.by_key.get(k).copied())
                .collect();
            for n in replicas {
                if self.nodes[n].liar || self.nodes[n].gone {
                    continue;
                }
                if let Some(d) = self.digest(n, address) {
                    summaries.insert(d.summary());
                    if self.deleted.contains(&address) && d.delete.is_none() {
                        live_after_delete = true;
                    }
                } else {
                    summaries.insert([0; 32]);
                }
            }
            if summaries.len() > 1 {
                self.violate(
                    Invariant::Convergence,
                    format!(
                        "mailbox {}: honest replicas differ after anti-entropy",
                        address.short()
                    ),
                );
            }
            if live_after_delete {
                self.violate(
                    Invariant::Tombstone,
                    format!(
                        "mailbox {}: a replica is live after the delete",
                        address.short()
                    ),
                );
            }
        }
    }

    // ---- departures and takeovers ---------------------------------------------------

    /// An honest node leaves for good, its data with it: a holder of the oldest live
    /// mailbox (so one mailbox loses holder after holder), else any node.
    fn on_depart(&mut self) {
        let honest = self.honest_count();
        let present: Vec<NodeId> = (0..honest).filter(|&n| !self.nodes[n].gone).collect();
        if present.len() > self.config.replication + self.config.standbys {
            // The mailbox losing its holders: the one chosen at the last departure while
            // its flow is live, else the oldest live one.
            let live = |a: &Address| self.flows.values().any(|f| f.address == *a);
            let oldest = self
                .departing
                .filter(|a| live(a))
                .or_else(|| self.flows.values().next().map(|f| f.address));
            self.departing = oldest;
            let holder = oldest.and_then(|a| {
                self.holders_now(&a)
                    .iter()
                    .filter_map(|k| self.by_key.get(k).copied())
                    .find(|n| present.contains(n))
            });
            let node = holder
                .unwrap_or_else(|| present[(self.rng.next_u64() % present.len() as u64) as usize]);
            let n = &mut self.nodes[node];
            n.gone = true;
            n.up = false;
            n.epoch += 1;
            n.flush_pending = false;
            n.unflushed.clear();
            n.disk = crate::disk::Disk::default();
            n.touched.clear();
            n.tombstones.clear();
            self.departures += 1;
        }
        if self.departures < self.config.departures as u64 {
            let every = self.config.depart_every_ms;
            self.at(every, Event::Depart);
        }
    }

    /// Where a mailbox lives now, as an entry learns it from the holders: the genesis's
    /// lineup after the longest chain of takeovers an honest node still there adopted.
    fn holders_now(&self, address: &Address) -> Vec<PublicKey> {
        let mut best: Option<&MailboxState> = None;
        for n in &self.nodes {
            if n.liar || n.gone {
                continue;
            }
            if let Some(s) = n.disk.state(address)
                && best.is_none_or(|b| s.takeovers().len() > b.takeovers().len())
            {
                best = Some(s);
            }
        }
        best.map(MailboxState::holders).unwrap_or_default()
    }

    /// Where an entry sends a request for the mailbox of `genesis`: its holders now, or its
    /// replicas before any node holds it.
    fn targets(&self, genesis: &Genesis) -> Vec<PublicKey> {
        let now = self.holders_now(&genesis.header().address);
        if now.is_empty() {
            genesis.header().replicas.to_vec()
        } else {
            now
        }
    }

    /// The takeovers adopted across all mailboxes (the longest chain of each).
    fn takeovers(&self) -> u64 {
        let mut longest: BTreeMap<Address, usize> = BTreeMap::new();
        for n in &self.nodes {
            if n.gone {
                continue;
            }
            for (address, state) in n.disk.states() {
                let e = longest.entry(*address).or_default();
                *e = (*e).max(state.takeovers().len());
            }
        }
        longest.values().map(|&l| l as u64).sum()
    }

    /// The node's takeover duty: notes which holders of its mailboxes it cannot reach,
    /// and for a holder out of reach for the takeover time signs (or re-sends) its
    /// handover to the other holders, as `node/src/sync.rs` does.
    fn take_over(&mut self, node: NodeId) {
        if !self.nodes[node].up || self.nodes[node].gone {
            return;
        }
        let now = self.now;
        let after = self.config.takeover_after_ms;
        let held: Vec<(Address, Vec<PublicKey>)> = self.nodes[node]
            .disk
            .states()
            .filter(|(_, s)| s.deletion().is_none())
            .map(|(a, s)| (*a, s.holders()))
            .filter(|(_, h)| h.contains(&self.nodes[node].public))
            .collect();
        let mut peers: BTreeSet<NodeId> = BTreeSet::new();
        for (_, holders) in &held {
            peers.extend(holders.iter().filter_map(|k| self.by_key.get(k).copied()));
        }
        peers.remove(&node);
        for p in peers {
            let reached = self.nodes[p].up && self.reachable(node, p);
            if reached {
                self.nodes[node].unreachable.remove(&p);
            } else {
                self.nodes[node].unreachable.entry(p).or_insert(now);
            }
        }
        let gone: Vec<PublicKey> = self.nodes[node]
            .unreachable
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= after)
            .map(|(p, _)| self.nodes[*p].public)
            .collect();
        if gone.is_empty() {
            return;
        }
        let limits = self.limits;
        let unix = self.unix();
        for (address, holders) in held {
            let Some(retiree) = holders.iter().find(|h| gone.contains(h)).copied() else {
                continue;
            };
            let n = &mut self.nodes[node];
            let me = n.public;
            let applied = replica::apply(
                &mut n.disk,
                &n.key,
                &limits,
                Some(&me),
                ReplicaRequest::SignHandover { address, retiree },
                unix,
            );
            let ReplicaResponse::HandedOver { handover, .. } = applied.response else {
                continue;
            };
            n.touched.insert(address);
            self.schedule_flush(node);
            for h in &holders {
                let Some(&t) = self.by_key.get(h) else {
                    continue;
                };
                if t == node
                    || *h == retiree
                    || self.nodes[t].liar
                    || !self.nodes[t].up
                    || !self.reachable(node, t)
                {
                    continue;
                }
                let target = &mut self.nodes[t];
                let applied = replica::apply(
                    &mut target.disk,
                    &target.key,
                    &limits,
                    Some(&me),
                    ReplicaRequest::Handover {
                        handover: handover.clone(),
                    },
                    unix,
                );
                let wrote = applied.wrote;
                if wrote {
                    self.nodes[t].touched.insert(address);
                    self.schedule_flush(t);
                }
            }
        }
    }

    // ---- client flows ----------------------------------------------------------------

    /// The replica set of a new mailbox: `liars` lying nodes, then the honest nodes
    /// closest to the address.
    fn place(&self, address: &Address) -> Vec<PublicKey> {
        let r = self.config.replication;
        if self.config.liar_fraction > 0.0 {
            return tigress_protocol::placement::nearest(
                self.nodes.iter().map(|n| n.public),
                address,
                r,
            );
        }
        let liars = self.config.liars.min(r);
        let mut set: Vec<PublicKey> = self
            .nodes
            .iter()
            .filter(|n| n.liar)
            .take(liars)
            .map(|n| n.public)
            .collect();
        set.extend(tigress_protocol::placement::nearest(
            self.nodes
                .iter()
                .filter(|n| !n.liar && !n.gone)
                .map(|n| n.public),
            address,
            r - liars,
        ));
        set
    }

    fn start_flow(&mut self) {
        if self.races_left > 0
            && (self.exchanges_left == 0 || self.rng.next_u64().is_multiple_of(2))
        {
            self.races_left -= 1;
            self.start_race();
        } else if self.exchanges_left > 0 {
            let n = self.exchanges_left.min(match self.config.exchange_length {
                0 => self.between(4, 12),
                n => n,
            });
            self.exchanges_left -= n;
            self.start_exchange(n);
        }
    }

    fn new_share(&mut self, max_recipients: u8) -> (SenderSession, ShareUrl, Vec<PublicKey>) {
        let identity = ShareIdentity::random(&mut self.rng);
        let replicas = self.place(&identity.address());
        // The standbys: the honest nodes still there next nearest to the address.
        let standbys = tigress_protocol::placement::nearest(
            self.nodes
                .iter()
                .filter(|n| !n.liar && !n.gone && !replicas.contains(&n.public))
                .map(|n| n.public),
            &identity.address(),
            self.config.standbys,
        );
        let options = ShareOptions {
            policy: Policy {
                max_recipients,
                ..Policy::default()
            },
            fault_tolerance: self.config.rules.fault_tolerance,
            standbys,
            ..ShareOptions::default()
        };
        let now = self.unix();
        let payload = self.rng.next_u64().to_le_bytes();
        match SenderSession::create(
            identity,
            "https://relay.example",
            replicas.clone(),
            &payload,
            &options,
            now,
            &mut self.rng,
        ) {
            Ok((s, url)) => {
                self.mailboxes += 1;
                if self.liars_in(s.genesis()) > usize::from(s.genesis().header().fault_tolerance) {
                    self.sets_over_f += 1;
                }
                (s, url, replicas)
            }
            Err(e) => unreachable_share(e),
        }
    }

    fn open(&mut self, url: &ShareUrl, genesis: &Genesis) -> RecipientSession {
        let now = self.unix();
        match RecipientSession::open(url, genesis.clone(), &self.limits, now, &mut self.rng) {
            Ok((s, _)) => s,
            Err(e) => unreachable_share(e),
        }
    }

    fn add_flow(&mut self, kind: FlowKind, address: Address) -> FlowId {
        let id = self.next_flow;
        self.next_flow += 1;
        self.flows.insert(id, Flow { kind, address });
        let deadline = self.config.flow_deadline_ms;
        self.at(deadline, Event::Deadline { flow: id });
        id
    }

    fn start_race(&mut self) {
        let (sender, url, replicas) = self.new_share(1);
        let genesis = sender.genesis().clone();
        let count = self.between(2, 3);
        let claimants = (0..count)
            .map(|_| Claimant {
                session: self.open(&url, &genesis),
                done: false,
                storing: false,
            })
            .collect();
        let address = genesis.header().address;
        let flow = self.add_flow(
            FlowKind::Race(Box::new(Race {
                genesis,
                replicas,
                claimants,
                phase: RacePhase::Creating,
                op_for: BTreeMap::new(),
            })),
            address,
        );
        self.at(0, Event::Step { flow });
    }

    fn start_exchange(&mut self, messages: u64) {
        let (sender, url, _) = self.new_share(1);
        let genesis = sender.genesis().clone();
        let recipient = self.open(&url, &genesis);
        let address = genesis.header().address;
        let flow = self.add_flow(
            FlowKind::Exchange(Box::new(Exchange {
                sender,
                recipient,
                phase: ExchangePhase::Creating,
                remaining: messages,
                outbox: VecDeque::new(),
                expected: VecDeque::new(),
                recipient_writes: true,
                delete: None,
            })),
            address,
        );
        self.at(0, Event::Step { flow });
    }

    fn finish_flow(&mut self, flow: FlowId) {
        if let Some(f) = self.flows.remove(&flow) {
            if matches!(f.kind, FlowKind::Race(_)) {
                self.races_done += 1;
            }
            self.start_flow();
        }
    }

    fn acknowledge(&mut self, address: Address, replicas: &[PublicKey], record: Acked) {
        if matches!(record, Acked::Delete) {
            self.deleted.insert(address);
        }
        self.acked.push((address, replicas.to_vec(), record));
    }

    /// Records a certificate for `who` on the mailbox of `genesis`.
    fn certify(&mut self, genesis: &Genesis, who: PublicKey) {
        let address = genesis.header().address;
        let max = usize::from(genesis.header().policy.max_recipients);
        let set = self.certified.entry(address).or_default();
        let fresh = set.insert(who);
        if set.len() > max {
            let n = set.len();
            if fresh && n == max + 1 {
                self.over_certified += 1;
                if self.liars_in(genesis) <= usize::from(genesis.header().fault_tolerance) {
                    self.over_certified_within_f += 1;
                }
            }
            self.violate(
                Invariant::ClaimSafety,
                format!(
                    "mailbox {} has {n} certified recipients; its policy allows {max}",
                    address.short()
                ),
            );
        }
    }

    fn write(&mut self, flow: FlowId, replicas: &[PublicKey], request: ReplicaRequest) -> OpId {
        let (address, record) =
            replica::acknowledged(&request).unwrap_or((Address([0; 32]), [0; 32]));
        self.start_op(
            flow,
            OpKind::Write(Quorum::new(replicas, WriteGather::new(address, record), 0)),
            request,
        )
    }

    /// How many replicas of the set `genesis` names lie.
    fn liars_in(&self, genesis: &Genesis) -> usize {
        genesis
            .header()
            .replicas
            .iter()
            .filter(|k| self.by_key.get(k).is_some_and(|&n| self.nodes[n].liar))
            .count()
    }

    /// A replica proven to lie must be one of the liars: an honest replica is never
    /// accused.
    fn accused(&mut self, proof: &tigress_protocol::record::Equivocation) {
        let liar = proof.liar();
        let honest = self.by_key.get(&liar).is_some_and(|&n| !self.nodes[n].liar);
        if proof.verify().is_err() || honest {
            self.violate(
                Invariant::ClaimSafety,
                format!("replica {} was accused of equivocating", liar.short()),
            );
        }
    }

    fn step(&mut self, flow: FlowId, result: Option<(OpId, OpResult)>) {
        let Some(mut f) = self.flows.remove(&flow) else {
            return;
        };
        let address = f.address;
        let done = match &mut f.kind {
            FlowKind::Race(race) => self.step_race(flow, address, race, result),
            FlowKind::Exchange(ex) => self.step_exchange(flow, address, ex, result),
        };
        self.flows.insert(flow, f);
        if done {
            self.finish_flow(flow);
        }
    }

    fn step_race(
        &mut self,
        flow: FlowId,
        address: Address,
        race: &mut Race,
        result: Option<(OpId, OpResult)>,
    ) -> bool {
        match (&race.phase, result) {
            (RacePhase::Creating, None) => {
                let g = race.genesis.clone();
                self.write(
                    flow,
                    &race.replicas.clone(),
                    ReplicaRequest::StoreGenesis { genesis: g },
                );
            }
            (RacePhase::Creating, Some((_, OpResult::Written(Ok(_))))) => {
                self.acknowledge(address, &race.replicas, Acked::Genesis);
                race.phase = RacePhase::Claiming;
                let targets = self.targets(&race.genesis);
                for i in 0..race.claimants.len() {
                    let claim = race.claimants[i].session.claim().clone();
                    let delay = self.between(0, 30);
                    let op = self.start_op_after(
                        flow,
                        delay,
                        OpKind::Claim(Box::new(Quorum::new(
                            &targets,
                            ClaimGather::new(race.genesis.clone(), claim.clone()),
                            0,
                        ))),
                        ReplicaRequest::Grant { claim },
                    );
                    race.op_for.insert(op, i);
                }
            }
            (RacePhase::Creating, Some(_)) => {
                self.at(RETRY_MS, Event::Step { flow });
            }
            (RacePhase::Claiming, None) => {}
            (RacePhase::Claiming, Some((op, outcome))) => {
                let Some(i) = race.op_for.remove(&op) else {
                    return false;
                };
                let replicas = self.targets(&race.genesis);
                match outcome {
                    OpResult::Claimed(ClaimOutcome::Certified(cert)) => {
                        let who = cert.claim.body.recipient;
                        self.certify(&race.genesis, who);
                        if let Some(c) = race.claimants.get_mut(i) {
                            c.storing = true;
                        }
                        let op = self.write(
                            flow,
                            &replicas,
                            ReplicaRequest::StoreCertificate { certificate: *cert },
                        );
                        race.op_for.insert(op, i);
                    }
                    OpResult::Claimed(ClaimOutcome::Contested(evidence)) => {
                        let op = self.write(
                            flow,
                            &replicas,
                            ReplicaRequest::MarkContested { address, evidence },
                        );
                        race.op_for.insert(op, i);
                    }
                    OpResult::Claimed(ClaimOutcome::Refused(e))
                        if e.code == ErrorCode::Unavailable =>
                    {
                        let claim = race.claimants[i].session.claim().clone();
                        let op = self.start_op_after(
                            flow,
                            RETRY_MS,
                            OpKind::Claim(Box::new(Quorum::new(
                                &replicas,
                                ClaimGather::new(race.genesis.clone(), claim.clone()),
                                0,
                            ))),
                            ReplicaRequest::Grant { claim },
                        );
                        race.op_for.insert(op, i);
                    }
                    OpResult::Written(Ok(_)) => {
                        if let Some(c) = race.claimants.get_mut(i) {
                            if c.storing {
                                let who = c.session.public_key();
                                self.acknowledge(address, &replicas, Acked::Certificate(who));
                            }
                            c.done = true;
                        }
                    }
                    OpResult::Written(Err(_)) => {
                        // The certificate (or the contest) is stored by anti-entropy or a
                        // later claim; the claimant is done either way.
                        if let Some(c) = race.claimants.get_mut(i) {
                            c.done = true;
                        }
                    }
                    _ => {
                        if let Some(c) = race.claimants.get_mut(i) {
                            c.done = true;
                        }
                    }
                }
            }
        }
        race.claimants.iter().all(|c| c.done)
    }

    fn fetch_op(&mut self, flow: FlowId, ex: &Exchange) {
        let now = self.unix();
        let (cursor, reader) = if ex.recipient_writes {
            (ex.sender.cursor(), ex.sender.public_key())
        } else {
            (ex.recipient.cursor(), ex.recipient.public_key())
        };
        let cursor = Cursor::truncated(cursor);
        let scope = ReadScope::Fetch {
            cursor: cursor_digest(&cursor),
        };
        let request = if ex.recipient_writes {
            ex.sender.read_request(now, scope)
        } else {
            ex.recipient.read_request(now, scope)
        };
        let gather = FetchGather::new(request.body.address, reader, cursor.clone());
        let gather = if self.config.rules.accept_stale_cursor {
            gather.danger_accept_stale_cursor()
        } else {
            gather
        };
        let gather = if self.config.rules.fetch_first_answer {
            gather.danger_first_answer()
        } else {
            gather
        };
        self.start_op(
            flow,
            OpKind::Fetch(Box::new(Quorum::new(
                &self.targets(ex.sender.genesis()),
                gather,
                self.config.rules.fetch_grace_ms,
            ))),
            ReplicaRequest::Fetch {
                request,
                cursor,
                wait_ms: 0,
            },
        );
    }

    fn step_exchange(
        &mut self,
        flow: FlowId,
        address: Address,
        ex: &mut Exchange,
        result: Option<(OpId, OpResult)>,
    ) -> bool {
        let replicas = self.targets(ex.sender.genesis());
        let now = self.unix();
        match (&ex.phase, result) {
            (ExchangePhase::Creating, None) => {
                let genesis = ex.sender.genesis().clone();
                self.write(flow, &replicas, ReplicaRequest::StoreGenesis { genesis });
            }
            (ExchangePhase::Creating, Some((_, OpResult::Written(Ok(_))))) => {
                self.acknowledge(address, &replicas, Acked::Genesis);
                ex.phase = ExchangePhase::Claiming;
                self.at(0, Event::Step { flow });
            }
            (ExchangePhase::Claiming, None) => {
                let claim = ex.recipient.claim().clone();
                let gather = ClaimGather::new(ex.sender.genesis().clone(), claim.clone());
                self.start_op(
                    flow,
                    OpKind::Claim(Box::new(Quorum::new(&replicas, gather, 0))),
                    ReplicaRequest::Grant { claim },
                );
            }
            (
                ExchangePhase::Claiming,
                Some((_, OpResult::Claimed(ClaimOutcome::Certified(cert)))),
            ) => {
                let genesis = ex.sender.genesis().clone();
                self.certify(&genesis, cert.claim.body.recipient);
                let ok = ex
                    .recipient
                    .accept_certificate((*cert).clone(), &self.limits, now)
                    .is_ok();
                if !ok {
                    self.violate(
                        Invariant::ClaimSafety,
                        format!(
                            "mailbox {}: a certificate the parties refuse",
                            address.short()
                        ),
                    );
                    return true;
                }
                ex.phase = ExchangePhase::StoringCertificate(cert.clone());
                self.at(0, Event::Step { flow });
            }
            (ExchangePhase::StoringCertificate(cert), None) => {
                let certificate = (**cert).clone();
                self.write(
                    flow,
                    &replicas,
                    ReplicaRequest::StoreCertificate { certificate },
                );
            }
            (ExchangePhase::StoringCertificate(_), Some((_, OpResult::Written(Ok(_))))) => {
                let who = ex.recipient.public_key();
                self.acknowledge(address, &replicas, Acked::Certificate(who));
                ex.phase = ExchangePhase::Learning;
                self.at(0, Event::Step { flow });
            }
            (ExchangePhase::Learning, None) => {
                let gather = ReadGather::new(ex.sender.genesis().clone(), self.limits, now);
                self.start_op(
                    flow,
                    OpKind::Read(Box::new(Quorum::new(&replicas, gather, READ_GRACE_MS))),
                    ReplicaRequest::Read {
                        request: ex.sender.read_request(now, ReadScope::View),
                    },
                );
            }
            (ExchangePhase::Learning, Some((_, OpResult::Read(Ok(view))))) => {
                // The certificate was acknowledged by a majority, and a read hears from a
                // majority: the merged view must show it.
                let who = ex.recipient.public_key();
                let learnt = ex.sender.learn_recipients(&view, &self.limits, now).is_ok()
                    && ex.sender.recipients().iter().any(|r| r.key == who);
                if !learnt {
                    self.violate(
                        Invariant::Durability,
                        format!(
                            "mailbox {}: a read after the certificate was acknowledged does not show it",
                            address.short()
                        ),
                    );
                    return true;
                }
                ex.phase = ExchangePhase::Sending;
                self.seal_burst(ex);
                self.at(0, Event::Step { flow });
            }
            (ExchangePhase::Sending, None) => match ex.outbox.front() {
                Some(m) => {
                    let message = m.clone();
                    self.write(flow, &replicas, ReplicaRequest::StoreMessage { message });
                }
                None => {
                    ex.phase = ExchangePhase::Fetching;
                    self.fetch_op(flow, ex);
                }
            },
            (ExchangePhase::Sending, Some((_, OpResult::Written(Ok(_))))) => {
                if let Some(m) = ex.outbox.pop_front() {
                    let h = m.header();
                    self.acknowledge(address, &replicas, Acked::Message((h.from, h.to, h.seq)));
                }
                self.at(0, Event::Step { flow });
            }
            (ExchangePhase::Fetching, None) => self.fetch_op(flow, ex),
            (ExchangePhase::Fetching, Some((_, OpResult::Fetched(Ok(fetched))))) => {
                self.deliver(address, ex, fetched.messages);
                if ex.expected.is_empty() {
                    if ex.remaining == 0 {
                        ex.phase = ExchangePhase::Deleting;
                    } else {
                        ex.recipient_writes = !ex.recipient_writes;
                        ex.phase = ExchangePhase::Sending;
                        self.seal_burst(ex);
                    }
                    self.at(0, Event::Step { flow });
                } else {
                    self.at(POLL_MS, Event::Step { flow });
                }
            }
            (ExchangePhase::Deleting, None) => {
                let delete = ex
                    .delete
                    .get_or_insert_with(|| ex.sender.delete(now))
                    .clone();
                self.write(flow, &replicas, ReplicaRequest::Delete { delete });
            }
            (ExchangePhase::Deleting, Some((_, OpResult::Written(Ok(_))))) => {
                self.acknowledge(address, &replicas, Acked::Delete);
                return true;
            }
            // Anything refused or unanswered: the same step again, the same bytes.
            (_, Some(_)) => self.at(RETRY_MS, Event::Step { flow }),
        }
        false
    }

    /// Seals the next burst (one to three messages) from the current author.
    fn seal_burst(&mut self, ex: &mut Exchange) {
        let burst = self.between(1, 3).min(ex.remaining);
        ex.remaining -= burst;
        let now = self.unix();
        for _ in 0..burst {
            let mut plaintext = vec![0u8; 24];
            self.rng.fill_bytes(&mut plaintext);
            let request_id = [0u8; 16];
            let sealed = if ex.recipient_writes {
                ex.recipient
                    .seal(&plaintext, request_id, now, &mut self.rng)
            } else {
                let to = ex.recipient.public_key();
                ex.sender
                    .seal(&to, &plaintext, request_id, now, &mut self.rng)
            };
            match sealed {
                Ok(m) => {
                    let h = m.header();
                    ex.expected.push_back((h.from, h.seq, plaintext));
                    ex.outbox.push_back(m);
                }
                Err(e) => unreachable_share(e),
            }
        }
    }

    /// Hands a fetch's messages to the reader, checking the fetch window and the order.
    fn deliver(&mut self, address: Address, ex: &mut Exchange, messages: Vec<Message>) {
        let cursor = if ex.recipient_writes {
            ex.sender.cursor()
        } else {
            ex.recipient.cursor()
        };
        let mut seen = BTreeSet::new();
        for m in &messages {
            let h = m.header();
            let next = cursor
                .iter()
                .find(|(a, _)| *a == h.from)
                .map_or(1, |(_, s)| *s);
            let fresh = seen.insert((h.from, h.to, h.seq));
            if h.seq < next || !fresh {
                self.violate(
                    Invariant::FetchWindow,
                    format!(
                        "mailbox {}: a fetch at {next} returned message {} again",
                        address.short(),
                        h.seq
                    ),
                );
            }
        }
        for m in &messages {
            let delivered = if ex.recipient_writes {
                ex.sender.receive(m)
            } else {
                ex.recipient.receive(m)
            };
            let Ok(delivered) = delivered else {
                continue;
            };
            for d in delivered {
                match ex.expected.pop_front() {
                    Some((from, seq, plaintext))
                        if from == d.from && seq == d.seq && plaintext == d.plaintext =>
                    {
                        self.delivered += 1;
                    }
                    _ => self.violate(
                        Invariant::InOrderDelivery,
                        format!(
                            "mailbox {}: message {} delivered out of order",
                            address.short(),
                            d.seq
                        ),
                    ),
                }
            }
        }
    }
}

fn request_address(request: &ReplicaRequest) -> Option<Address> {
    Some(match request {
        ReplicaRequest::StoreGenesis { genesis } => genesis.header().address,
        ReplicaRequest::Grant { claim } => claim.body.address,
        ReplicaRequest::StoreCertificate { certificate } => certificate.claim.body.address,
        ReplicaRequest::MarkContested { address, .. } => *address,
        ReplicaRequest::StoreMessage { message } => message.header().address,
        ReplicaRequest::Delete { delete } => delete.body.address,
        ReplicaRequest::Relinquish { relinquish } => relinquish.body.address,
        ReplicaRequest::Resolve { resolve } => resolve.body.address,
        _ => return None,
    })
}

/// The simulator makes its shares itself with valid options: a refusal here is a bug in
/// the simulator, reported loudly.
#[allow(clippy::panic)]
fn unreachable_share(e: tigress_protocol::Error) -> ! {
    panic!("the simulator made an invalid share: {e}")
}

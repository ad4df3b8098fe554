//! Quorums, sans-IO: a request fanned out to the replicas of a mailbox, their answers fed
//! in one by one, and the decision of when enough have answered and what they amount to.
//!
//! A [`Quorum`] is driven like this (the node does it with libp2p, the simulator with its
//! event queue):
//!
//! 1. send the request to every replica of [`Quorum::targets`];
//! 2. feed each answer (or the failure to get one) to [`Quorum::handle_answer`];
//! 3. after each answer, and when the clock reaches [`Quorum::poll_deadline`], ask
//!    [`Quorum::is_done`]; once it says so, stop waiting and call [`Quorum::finish`].
//!
//! What "enough" means is the [`Gather`] of the request: a strict majority of durable
//! writes ([`WriteGather`]), a certificate or the end of hope for one ([`ClaimGather`]),
//! a majority of views and a grace for the others ([`ReadGather`]), the first new
//! messages and a grace or a majority ([`FetchGather`]), or the first acceptable answer
//! ([`FirstGather`]). Each gather checks every record it takes, so a replica can add
//! nothing its answer cannot prove, and answers that do not fit are ignored.

use std::collections::BTreeMap;

use crate::crypto::PublicKey;
use crate::error::ErrorCode;
use crate::id::Address;
use crate::mailbox::{self, CheckedReceipt, ClaimTally, Limits, MessageKey};
use crate::record::{Ack, Claim, Equivocation, Genesis, Message, Receipt, Record};
use crate::rpc::{Cursor, MAX_FETCH, MailboxView, RemoteError, ReplicaResponse};
use crate::wire::BoundedVec;

/// Milliseconds on the caller's clock (monotonic; any origin).
pub type Millis = u64;

/// How long a read waits for the replicas beyond the majority, in milliseconds.
pub const READ_GRACE_MS: Millis = 250;

/// How long a fetch waits for other replicas after the first new messages arrived, in
/// milliseconds (unless a majority has answered by then).
pub const FETCH_GRACE_MS: Millis = 250;

/// Why no answer came from a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// It did not answer in time.
    #[error("the replica timed out")]
    Timeout,
    /// It could not be dialled, or the connection closed before the answer.
    #[error("the replica is unreachable")]
    Unreachable,
    /// It does not speak the replica protocol.
    #[error("the replica does not speak the replica protocol")]
    UnsupportedProtocol,
    /// Its answer could not be read.
    #[error("the replica's answer was malformed")]
    Malformed,
    /// Its key is not a peer identity.
    #[error("the replica key is not a peer identity")]
    NotAPeer,
    /// The request was for this node, which stores nothing.
    #[error("this node stores nothing")]
    NoLocalStore,
    /// This node is shutting down.
    #[error("this node is stopping")]
    Stopping,
    /// The replica is proven to lie (it signed two receipts for one slot): not asked.
    #[error("the replica is proven to lie")]
    ProvenLiar,
}

/// One replica's answer, or why there is none.
pub type Answer = Result<ReplicaResponse, CallError>;

/// What counts as enough answers for one kind of request, and what they amount to.
pub trait Gather {
    /// The result.
    type Output;
    /// Takes one replica's answer (each replica at most once).
    fn add(&mut self, from: PublicKey, answer: &Answer);
    /// Whether the answers so far suffice, of `of` replicas asked; the grace for late
    /// answers starts then.
    fn enough(&self, of: usize) -> bool;
    /// Whether late answers can no longer change the result, so the grace may end early.
    fn settled(&self, of: usize) -> bool {
        let _ = of;
        true
    }
    /// The result, from the answers collected (all of them, for refusals).
    fn finish(self, answers: &[(PublicKey, Answer)], of: usize) -> Self::Output;
}

/// A request fanned out to a replica set.
#[derive(Debug)]
pub struct Quorum<G> {
    targets: Vec<PublicKey>,
    answers: Vec<(PublicKey, Answer)>,
    gather: G,
    grace: Millis,
    grace_until: Option<Millis>,
}

impl<G: Gather> Quorum<G> {
    /// A request to `targets` (duplicates removed), with a `grace` in milliseconds for
    /// late answers once the gather has enough.
    pub fn new(targets: &[PublicKey], gather: G, grace: Millis) -> Self {
        let mut unique = Vec::with_capacity(targets.len());
        for t in targets {
            if !unique.contains(t) {
                unique.push(*t);
            }
        }
        Self {
            targets: unique,
            answers: Vec::new(),
            gather,
            grace,
            grace_until: None,
        }
    }

    /// The replicas to ask.
    pub fn targets(&self) -> &[PublicKey] {
        &self.targets
    }

    /// Takes `from`'s answer at time `now`. Answers from outside the set and repeats are
    /// ignored.
    pub fn handle_answer(&mut self, from: PublicKey, answer: Answer, now: Millis) {
        if !self.targets.contains(&from) || self.answers.iter().any(|(k, _)| *k == from) {
            return;
        }
        self.gather.add(from, &answer);
        self.answers.push((from, answer));
        if self.grace_until.is_none() && self.gather.enough(self.of()) {
            self.grace_until = Some(now.saturating_add(self.grace));
        }
    }

    fn of(&self) -> usize {
        self.targets.len()
    }

    /// When to look again if no answer arrives before: the end of the grace, if running.
    pub fn poll_deadline(&self) -> Option<Millis> {
        self.grace_until
    }

    /// Whether to stop waiting at time `now`.
    pub fn is_done(&self, now: Millis) -> bool {
        let answered = self.answers.len();
        if answered >= self.of() {
            return true;
        }
        match self.grace_until {
            None => false,
            Some(until) => now >= until || self.gather.settled(self.of()),
        }
    }

    /// The result.
    pub fn finish(self) -> G::Output {
        let of = self.targets.len();
        self.gather.finish(&self.answers, of)
    }
}

/// A strict majority of `of`.
pub fn majority(of: usize) -> usize {
    of / 2 + 1
}

/// The refusal to report when the answers did not make a quorum: a definitive refusal
/// that a strict majority of the `of` replicas gave, else "unavailable" with the count.
pub fn refusal(answers: &[(PublicKey, Answer)], of: usize, got: usize) -> RemoteError {
    definitive_refusal(answers, majority(of)).unwrap_or_else(|| {
        unavailable(
            answers,
            of,
            got,
            &format!("a majority of {} is needed", majority(of)),
        )
    })
}

/// What the replicas asked said, in short, for an "unavailable": how many answered with
/// what they were asked for, refused (by code), or gave no answer (by reason).
pub fn heard(answers: &[(PublicKey, Answer)], of: usize) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (_, a) in answers {
        let what = match a {
            Ok(ReplicaResponse::Error(e) | ReplicaResponse::Refused { error: e, .. }) => {
                format!("refused ({})", e.code.as_str())
            }
            Ok(_) => "answered".to_owned(),
            Err(e) => match e {
                CallError::Timeout => "timed out",
                CallError::Unreachable => "unreachable",
                CallError::UnsupportedProtocol => "not speaking the protocol",
                CallError::Malformed => "answered malformed",
                CallError::NotAPeer => "not a peer",
                CallError::NoLocalStore => "this node, which stores nothing",
                CallError::Stopping => "not asked (stopping)",
                CallError::ProvenLiar => "not asked (proven liars)",
            }
            .to_owned(),
        };
        *counts.entry(what).or_insert(0) += 1;
    }
    let silent = of.saturating_sub(answers.len());
    if silent > 0 {
        counts.insert("not heard from in time".to_owned(), silent);
    }
    counts
        .into_iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The definitive refusal (not found, gone, unauthorized, ...) that at least `need`
/// replicas gave, if any: enough that the request cannot succeed however the others
/// answer (a strict majority for a write or a read). One replica's word is not enough:
/// a lying one answering "gone" while the honest ones are slow would otherwise end a
/// transfer that only had to wait.
pub fn definitive_refusal(answers: &[(PublicKey, Answer)], need: usize) -> Option<RemoteError> {
    let mut counts: BTreeMap<ErrorCode, (usize, RemoteError)> = BTreeMap::new();
    for (_, a) in answers {
        if let Ok(ReplicaResponse::Error(e) | ReplicaResponse::Refused { error: e, .. }) = a
            && e.code != ErrorCode::Unavailable
            && e.code != ErrorCode::RateLimited
        {
            counts.entry(e.code).or_insert((0, e.clone())).0 += 1;
        }
    }
    counts
        .into_values()
        .filter(|(n, _)| *n >= need.max(1))
        .max_by_key(|(n, e)| (*n, e.code != ErrorCode::NotFound))
        .map(|(_, e)| e)
}

/// "Reached `got` of `of` replicas; `need`, try again later", and what the replicas
/// asked said ([`heard`]).
fn unavailable(answers: &[(PublicKey, Answer)], of: usize, got: usize, need: &str) -> RemoteError {
    RemoteError::new(
        ErrorCode::Unavailable,
        format!(
            "reached {got} of {of} replicas; {need}, try again later ({})",
            heard(answers, of)
        ),
    )
}

fn answered_ok(answers: &[(PublicKey, Answer)]) -> usize {
    answers.iter().filter(|(_, a)| a.is_ok()).count()
}

/// A write: done once a strict majority stored it durably, each proven by the replica's
/// signed acknowledgement of the record's digest (an answer without a valid one counts
/// for nothing).
#[derive(Debug)]
pub struct WriteGather {
    address: Address,
    record: [u8; 32],
    acks: Vec<Ack>,
    fresh: bool,
}

/// What a write came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Whether every replica that stored it already had it.
    pub duplicate: bool,
    /// The acknowledgements, one per replica that stored it.
    pub acks: Vec<Ack>,
}

impl WriteGather {
    /// A gather for the write of the record with digest `record` at `address`.
    pub fn new(address: Address, record: [u8; 32]) -> Self {
        Self {
            address,
            record,
            acks: Vec::new(),
            fresh: false,
        }
    }
}

impl Gather for WriteGather {
    type Output = Result<Written, RemoteError>;

    fn add(&mut self, from: PublicKey, answer: &Answer) {
        if let Ok(ReplicaResponse::Stored { duplicate, ack }) = answer
            && ack.body.replica == from
            && ack.verify(&self.address, &self.record).is_ok()
        {
            self.acks.push(ack.clone());
            self.fresh |= !duplicate;
        }
    }

    fn enough(&self, of: usize) -> bool {
        self.acks.len() >= majority(of)
    }

    fn finish(self, answers: &[(PublicKey, Answer)], of: usize) -> Self::Output {
        if self.acks.len() >= majority(of) {
            Ok(Written {
                duplicate: !self.fresh,
                acks: self.acks,
            })
        } else {
            Err(refusal(answers, of, self.acks.len()))
        }
    }
}

/// Checks that `acks` prove a strict majority of `genesis`'s replicas stored the record
/// with digest `record`: distinct members of its lineup (a standby acknowledges only once
/// it took a replica's place), each signature valid.
pub fn check_acks(genesis: &Genesis, record: &[u8; 32], acks: &[Ack]) -> Result<(), crate::Error> {
    let h = genesis.header();
    let lineup = h.lineup();
    let mut seen: Vec<PublicKey> = Vec::new();
    for ack in acks {
        let replica = ack.body.replica;
        if lineup.members().contains(&replica)
            && !seen.contains(&replica)
            && ack.verify(&h.address, record).is_ok()
        {
            seen.push(replica);
        }
    }
    let need = h.majority();
    if seen.len() >= need {
        Ok(())
    } else {
        Err(crate::Error::Unacknowledged {
            have: seen.len(),
            need,
        })
    }
}

/// A claim: receipts (and the grants refusing replicas attach) are checked once as they
/// arrive and tallied; done at a certificate, else when every replica answered. Two
/// receipts of one replica for one slot and epoch to two claimants are kept as proof that
/// it lied.
#[derive(Debug)]
pub struct ClaimGather {
    genesis: Genesis,
    claim: Claim,
    evidence: Vec<CheckedReceipt>,
    tally: ClaimTally,
}

/// What a claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Certified: store the certificate on the replicas.
    Certified(Box<crate::record::ClaimCertificate>),
    /// Contested: mark it on the replicas with this evidence, and refuse.
    Contested(BoundedVec<Receipt, { crate::rpc::MAX_EVIDENCE }>),
    /// Refused (lost, or not enough answers).
    Refused(RemoteError),
}

impl ClaimGather {
    /// A gather for `claim` on the mailbox of `genesis`.
    pub fn new(genesis: Genesis, claim: Claim) -> Self {
        Self {
            genesis,
            claim,
            evidence: Vec::new(),
            tally: ClaimTally::Pending,
        }
    }
}

impl Gather for ClaimGather {
    type Output = (ClaimOutcome, Vec<Equivocation>);

    fn add(&mut self, _: PublicKey, answer: &Answer) {
        let arrived: Vec<Receipt> = match answer {
            Ok(ReplicaResponse::Granted(r)) => vec![r.clone()],
            Ok(ReplicaResponse::Refused { grants, .. }) => grants.to_vec(),
            _ => return,
        };
        for r in arrived {
            if let Ok(checked) = CheckedReceipt::check(&self.genesis, r)
                && !self.evidence.contains(&checked)
            {
                self.evidence.push(checked);
            }
        }
        self.tally = mailbox::tally_checked(&self.genesis, &self.claim, &self.evidence);
    }

    fn enough(&self, _: usize) -> bool {
        matches!(self.tally, ClaimTally::Certified(_))
    }

    fn finish(self, answers: &[(PublicKey, Answer)], of: usize) -> Self::Output {
        let quorum = self.genesis.header().claim_quorum();
        let receipts: Vec<Receipt> = self.evidence.iter().map(|c| c.receipt().clone()).collect();
        let liars = mailbox::equivocations(&receipts);
        let outcome = match self.tally {
            ClaimTally::Certified(cert) => ClaimOutcome::Certified(cert),
            ClaimTally::Contested => ClaimOutcome::Contested(BoundedVec::truncated(
                self.evidence
                    .into_iter()
                    .map(CheckedReceipt::into_inner)
                    .collect(),
            )),
            ClaimTally::Lost => {
                ClaimOutcome::Refused(definitive_refusal(answers, majority(of)).unwrap_or_else(
                    || RemoteError::new(ErrorCode::Conflict, "the mailbox is already claimed"),
                ))
            }
            // Refused alike by so many that the rest cannot make a claim quorum: that
            // refusal; fewer (a liar's word among silences) is worth a retry.
            ClaimTally::Pending => ClaimOutcome::Refused(
                definitive_refusal(answers, of.saturating_sub(quorum) + 1).unwrap_or_else(|| {
                    unavailable(
                        answers,
                        of,
                        answered_ok(answers),
                        &format!("a claim needs {quorum} of them to grant it"),
                    )
                }),
            ),
        };
        (outcome, liars)
    }
}

/// The refusal a contested claim gets.
pub fn contested() -> RemoteError {
    RemoteError::new(
        ErrorCode::Conflict,
        "the mailbox is contested: claimants raced and no one reached a majority; the sender must resolve it",
    )
}

/// A party's read: done at a majority of views of this genesis plus a grace (the sender
/// needs every claimant's claim to resolve a contest); the views are merged. Fewer than a
/// majority of views is a refusal, never a partial view.
#[derive(Debug)]
pub struct ReadGather {
    genesis: Genesis,
    limits: Limits,
    now: u64,
    views: Vec<MailboxView>,
}

impl ReadGather {
    /// A gather for views of the mailbox of `genesis`, checked with `limits` at `now`
    /// (unix seconds).
    pub fn new(genesis: Genesis, limits: Limits, now: u64) -> Self {
        Self {
            genesis,
            limits,
            now,
            views: Vec::new(),
        }
    }
}

impl Gather for ReadGather {
    type Output = Result<MailboxView, RemoteError>;

    fn add(&mut self, _: PublicKey, answer: &Answer) {
        if let Ok(ReplicaResponse::View(v)) = answer
            && v.genesis == self.genesis
        {
            self.views.push(v.clone());
        }
    }

    fn enough(&self, of: usize) -> bool {
        self.views.len() >= majority(of)
    }

    /// The grace runs to its end (or until every replica answered): the sender needs the
    /// claims of late replicas too.
    fn settled(&self, _: usize) -> bool {
        false
    }

    /// A view merged from fewer than a majority could miss an acknowledged write (a
    /// certificate, a resolve): such a read is refused as unavailable, to be retried.
    fn finish(self, answers: &[(PublicKey, Answer)], of: usize) -> Self::Output {
        if self.views.len() < majority(of) {
            return Err(refusal(answers, of, self.views.len()));
        }
        merge_views(&self.genesis, &self.views, &self.limits, self.now)
            .ok_or_else(|| refusal(answers, of, answered_ok(answers)))
    }
}

/// Merges the views replicas gave of one mailbox, keeping only records that validate
/// against `genesis`: every valid certificate and claim, the first resolve signed by the
/// sender, the union of the flags (a resolve ends a contest), the most messages, and the
/// recipients some view lists that a kept certificate or the resolve proves. `None` when
/// no view is of this genesis.
pub fn merge_views(
    genesis: &Genesis,
    views: &[MailboxView],
    limits: &Limits,
    now: u64,
) -> Option<MailboxView> {
    let views: Vec<&MailboxView> = views.iter().filter(|v| v.genesis == *genesis).collect();
    let mut merged = (*views.first()?).clone();
    let mut certs = Vec::new();
    let mut claims = Vec::new();
    let mut listed = Vec::new();
    let mut relinquished: Vec<crate::record::Relinquish> = Vec::new();
    let digest = genesis.digest();
    merged.resolve = None;
    for v in &views {
        for r in v.relinquished.iter() {
            if !relinquished.contains(r) && mailbox::relinquish_of(genesis, &digest, r) {
                relinquished.push(r.clone());
            }
        }
        for c in v.certificates.iter() {
            if !certs.contains(c) && mailbox::validate_certificate(genesis, c, limits, now).is_ok()
            {
                certs.push(c.clone());
            }
        }
        for c in v.claims.iter() {
            if !claims.contains(c) && mailbox::validate_claim(genesis, c, limits, now).is_ok() {
                claims.push(c.clone());
            }
        }
        if merged.resolve.is_none()
            && let Some(r) = &v.resolve
            && mailbox::resolve_of(genesis, &digest, r)
        {
            merged.resolve = Some(r.clone());
        }
        merged.status.contested |= v.status.contested;
        merged.status.deleted |= v.status.deleted;
        merged.status.messages = merged.status.messages.max(v.status.messages);
        for r in &v.status.recipients {
            if !listed.contains(r) {
                listed.push(*r);
            }
        }
    }
    let gone = |r: &PublicKey| relinquished.iter().any(|x| x.body.by == *r);
    certs.retain(|c| !gone(&c.claim.body.recipient));
    let kept = |r: &PublicKey| {
        certs.iter().any(|c| c.claim.body.recipient == *r)
            || merged
                .resolve
                .as_ref()
                .is_some_and(|res| res.body.keep.iter().any(|c| c.body.recipient == *r))
    };
    merged.status.recipients = listed.into_iter().filter(|r| kept(r)).collect();
    merged.status.resolved = merged.resolve.is_some();
    merged.status.contested &= merged.resolve.is_none();
    merged.certificates = BoundedVec::truncated(certs);
    merged.claims = BoundedVec::truncated(claims);
    merged.relinquished = BoundedVec::truncated(relinquished);
    Some(merged)
}

/// A fetch: the messages the replicas return for a reader at a cursor, merged. Only
/// messages that [`mailbox::fetchable`] allows, of this address, well formed and signed
/// by their author are kept, each once. Done once a majority answered, after a grace for
/// the others (or when every replica answered): one replica answering first can neither
/// hide a new message nor replay an old one.
#[derive(Debug)]
pub struct FetchGather {
    address: Address,
    reader: PublicKey,
    cursor: Cursor,
    merged: BTreeMap<MessageKey, Message>,
    /// Per replica that answered with messages: how many of the merge it had.
    counts: Vec<usize>,
    #[cfg(feature = "danger-simulation")]
    accept_stale: bool,
    #[cfg(feature = "danger-simulation")]
    first_answer: bool,
}

/// What a fetch came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The messages, in (author, recipient, sequence) order, at most [`MAX_FETCH`].
    pub messages: Vec<Message>,
    /// Whether some replica answered with fewer messages than the merge holds (a replica
    /// with a gap: worth reconciling now).
    pub gap: bool,
}

impl FetchGather {
    /// A gather for `reader`'s messages at `address` after `cursor`.
    pub fn new(address: Address, reader: PublicKey, cursor: Cursor) -> Self {
        Self {
            address,
            reader,
            cursor,
            merged: BTreeMap::new(),
            counts: Vec::new(),
            #[cfg(feature = "danger-simulation")]
            accept_stale: false,
            #[cfg(feature = "danger-simulation")]
            first_answer: false,
        }
    }

    /// A mutated rule for the simulator's canary: done at the first answer with new
    /// messages (plus the grace), whoever gave it (the rule a withholding replica exploits).
    #[cfg(feature = "danger-simulation")]
    pub fn danger_first_answer(mut self) -> Self {
        self.first_answer = true;
        self
    }

    /// A mutated rule for the simulator's canary: messages before the cursor are
    /// accepted too (the rule a replica replaying old messages exploits).
    #[cfg(feature = "danger-simulation")]
    pub fn danger_accept_stale_cursor(mut self) -> Self {
        self.accept_stale = true;
        self
    }

    fn in_window(&self, key: &MessageKey) -> bool {
        #[cfg(feature = "danger-simulation")]
        if self.accept_stale {
            return mailbox::visible_in_fetch(&self.reader, &self.cursor, key);
        }
        mailbox::fetchable(&self.reader, &self.cursor, key)
    }

    /// Whether `m` belongs in this fetch's answer.
    pub fn admits(&self, m: &Message) -> bool {
        let h = m.header();
        h.address == self.address
            && self.in_window(&(h.from, h.to, h.seq))
            && m.check_shape().is_ok()
            && m.verify_signature().is_ok()
    }
}

impl Gather for FetchGather {
    type Output = Result<Fetched, RemoteError>;

    fn add(&mut self, _: PublicKey, answer: &Answer) {
        let Ok(ReplicaResponse::Messages { messages }) = answer else {
            return;
        };
        let mut count = 0;
        for m in messages.iter() {
            let h = m.header();
            let key = (h.from, h.to, h.seq);
            if self.merged.contains_key(&key) {
                count += 1;
            } else if self.admits(m) {
                count += 1;
                self.merged.insert(key, m.clone());
            }
        }
        self.counts.push(count);
    }

    fn enough(&self, of: usize) -> bool {
        #[cfg(feature = "danger-simulation")]
        if self.first_answer {
            return !self.merged.is_empty();
        }
        self.counts.len() >= majority(of)
    }

    fn settled(&self, of: usize) -> bool {
        #[cfg(feature = "danger-simulation")]
        if self.first_answer {
            return self.counts.len() >= majority(of);
        }
        self.counts.len() >= of
    }

    fn finish(self, answers: &[(PublicKey, Answer)], of: usize) -> Self::Output {
        if self.counts.is_empty() {
            return Err(refusal(answers, of, 0));
        }
        let gap = self.counts.iter().any(|c| *c < self.merged.len());
        Ok(Fetched {
            messages: self.merged.into_values().take(MAX_FETCH).collect(),
            gap,
        })
    }
}

/// The takeovers of a mailbox, from its holders: the longest chain that checks against
/// the genesis's lineup (a holder that withholds takeovers, or offers forged ones, changes
/// nothing while another reports the real chain). Done once a majority answered.
#[derive(Debug)]
pub struct ChainGather {
    lineup: crate::takeover::Lineup,
    address: Address,
    genesis: [u8; 32],
    best: Vec<crate::takeover::Takeover>,
    answered: usize,
}

impl ChainGather {
    /// A gather for the mailbox of `genesis`.
    pub fn new(genesis: &Genesis) -> Self {
        Self {
            lineup: genesis.header().lineup(),
            address: genesis.header().address,
            genesis: genesis.digest(),
            best: Vec::new(),
            answered: 0,
        }
    }
}

impl Gather for ChainGather {
    type Output = Vec<crate::takeover::Takeover>;

    fn add(&mut self, _: PublicKey, answer: &Answer) {
        if let Ok(ReplicaResponse::Takeovers(chain)) = answer {
            self.answered += 1;
            if chain.len() > self.best.len()
                && crate::takeover::follow(&self.lineup, &self.address, &self.genesis, chain)
                    .is_ok()
            {
                self.best = chain.to_vec();
            }
        }
    }

    fn enough(&self, of: usize) -> bool {
        self.answered > of / 2
    }

    fn settled(&self, of: usize) -> bool {
        self.answered == of
    }

    fn finish(self, _: &[(PublicKey, Answer)], _: usize) -> Self::Output {
        self.best
    }
}

/// The first answer a predicate accepts (a genesis, a status): done at it.
pub struct FirstGather<F> {
    accept: F,
    found: Option<ReplicaResponse>,
}

impl<F> std::fmt::Debug for FirstGather<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirstGather")
            .field("found", &self.found.is_some())
            .finish()
    }
}

impl<F: FnMut(&ReplicaResponse) -> bool> FirstGather<F> {
    /// A gather that takes the first answer `accept` likes.
    pub fn new(accept: F) -> Self {
        Self {
            accept,
            found: None,
        }
    }
}

impl<F: FnMut(&ReplicaResponse) -> bool> Gather for FirstGather<F> {
    type Output = Result<ReplicaResponse, RemoteError>;

    fn add(&mut self, _: PublicKey, answer: &Answer) {
        if self.found.is_none()
            && let Ok(r) = answer
            && (self.accept)(r)
        {
            self.found = Some(r.clone());
        }
    }

    fn enough(&self, _: usize) -> bool {
        self.found.is_some()
    }

    fn finish(self, answers: &[(PublicKey, Answer)], of: usize) -> Self::Output {
        self.found
            .ok_or_else(|| refusal(answers, of, answered_ok(answers)))
    }
}

/// What one node said when asked for a mailbox that the search did not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// It holds nothing at the address.
    Absent,
    /// A definitive refusal other than absence (unauthorized, gone, ...).
    Refused(RemoteError),
    /// No answer, a busy or rate-limited one, or one that proves nothing (a record the
    /// request does not fit): the node may hold the mailbox.
    Silent,
}

impl Heard {
    fn of(answer: &Answer) -> Self {
        match answer {
            Ok(ReplicaResponse::Error(e) | ReplicaResponse::Refused { error: e, .. }) => {
                match e.code {
                    ErrorCode::NotFound => Self::Absent,
                    ErrorCode::Unavailable | ErrorCode::RateLimited => Self::Silent,
                    _ => Self::Refused(e.clone()),
                }
            }
            _ => Self::Silent,
        }
    }
}

/// A search round: the first answer a predicate accepts (as [`FirstGather`]), else what
/// each node asked said, for [`absence`] to weigh with the other rounds.
pub struct SearchGather<F>(FirstGather<F>);

impl<F> std::fmt::Debug for SearchGather<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SearchGather").field(&self.0).finish()
    }
}

impl<F: FnMut(&ReplicaResponse) -> bool> SearchGather<F> {
    /// A search round that takes the first answer `accept` likes.
    pub fn new(accept: F) -> Self {
        Self(FirstGather::new(accept))
    }
}

impl<F: FnMut(&ReplicaResponse) -> bool> Gather for SearchGather<F> {
    type Output = Result<ReplicaResponse, Vec<(PublicKey, Heard)>>;

    fn add(&mut self, from: PublicKey, answer: &Answer) {
        self.0.add(from, answer);
    }

    fn enough(&self, of: usize) -> bool {
        self.0.enough(of)
    }

    fn finish(self, answers: &[(PublicKey, Answer)], _: usize) -> Self::Output {
        self.0
            .found
            .ok_or_else(|| answers.iter().map(|(k, a)| (*k, Heard::of(a))).collect())
    }
}

/// What a search for the mailbox at `address` that found it nowhere comes to, from the
/// nodes `asked` over all its rounds and what they said (`heard`; a node heard twice
/// counts once, by its first word; one asked and not heard is silent). A mailbox lives
/// on the nodes nearest its address, so it is absent only when each of the `r` nearest
/// of those asked said it holds nothing. When one of them was silent it may hold the
/// mailbox (a replica restarting, or one whose answer a lying neighbour's "nothing here"
/// would otherwise hide), and the search is unavailable, to be tried again. A definitive
/// refusal (unauthorized, gone) is passed on when a strict majority of those nearest gave
/// it: one node's word, a liar's perhaps, is not enough to end a transfer.
pub fn absence(
    address: &Address,
    asked: &[PublicKey],
    heard: &[(PublicKey, Heard)],
    r: usize,
) -> RemoteError {
    let silent = Heard::Silent;
    let mut first: Vec<(PublicKey, &Heard)> = Vec::with_capacity(heard.len());
    for (k, h) in heard {
        if !first.iter().any(|(seen, _)| seen == k) {
            first.push((*k, h));
        }
    }
    for k in asked {
        if !first.iter().any(|(seen, _)| seen == k) {
            first.push((*k, &silent));
        }
    }
    let nearest = crate::placement::nearest(first.iter().map(|(k, _)| *k), address, r.max(1));
    let said = |k: &PublicKey| first.iter().find(|(s, _)| s == k).map(|(_, h)| *h);
    let absent = nearest
        .iter()
        .filter(|k| said(k) == Some(&Heard::Absent))
        .count();
    if !nearest.is_empty() && absent == nearest.len() {
        return RemoteError::new(ErrorCode::NotFound, "no such mailbox");
    }
    let mut refusals: BTreeMap<ErrorCode, (usize, RemoteError)> = BTreeMap::new();
    for k in &nearest {
        if let Some(Heard::Refused(e)) = said(k) {
            refusals.entry(e.code).or_insert((0, e.clone())).0 += 1;
        }
    }
    if let Some((_, e)) = refusals
        .into_values()
        .find(|(n, _)| *n >= majority(nearest.len()))
    {
        return e;
    }
    if nearest.is_empty() {
        return RemoteError::new(
            ErrorCode::Unavailable,
            "no node near the mailbox's address answered; try again later",
        );
    }
    RemoteError::new(
        ErrorCode::Unavailable,
        format!(
            "the mailbox was not found, but only {absent} of the {} nodes nearest its \
             address answered that they hold nothing; try again later",
            nearest.len()
        ),
    )
}

/// Whether `genesis` is a self-consistent genesis for `address` (shape, signature).
pub fn genesis_fits(genesis: &Genesis, address: &Address) -> bool {
    genesis.header().address == *address
        && genesis.check_shape().is_ok()
        && genesis.verify_signature().is_ok()
}

//! The mailbox state machine: what a replica accepts, given the records it holds and `now`.
//!
//! A [`MailboxState`] is created from a valid genesis; every other record is applied with a
//! method that first checks everything, then changes the state. On error the state is
//! unchanged. Each method returns an [`Outcome`] telling a new record from a repeat of one
//! already applied, so callers can answer idempotently (the draft's 201 for a repeated
//! `Mailbox-Request-ID`).
//!
//! Replica-local facts (the receipts this replica granted) live here too, since "at most
//! `max_recipients` claimants per replica, same claimant = same receipt" is a rule.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::crypto::{CryptoProvider, HpkePublicKey, PublicKey, SigningKey};
use crate::error::Role;
use crate::id::Address;
use crate::record::{
    Claim, ClaimCertificate, Delete, Equivocation, Genesis, MAX_REPLICAS, Message, ReadRequest,
    ReadScope, Receipt, ReceiptBody, Record, Relinquish, Resolve, Rights, UNKNOWN_GENESIS,
};
use crate::takeover::{Handover, Retired, Seat, Takeover};
use crate::wire::{BoundedVec, FORMAT_VERSION};

/// Network-wide limits every replica applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest mailbox lifetime (default 7 days).
    pub max_ttl_secs: u64,
    /// How far in the future a record's timestamp may lie (default 5 minutes).
    pub max_clock_skew_secs: u64,
    /// How old (or new) a read request may be (default 5 minutes).
    pub read_window_secs: u64,
    /// The algorithms accepted.
    pub provider: CryptoProvider,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ttl_secs: 7 * 24 * 3600,
            max_clock_skew_secs: 300,
            read_window_secs: 300,
            provider: CryptoProvider::default(),
        }
    }
}

impl Limits {
    fn not_future(&self, t: u64, now: u64) -> Result<(), Error> {
        if t > now.saturating_add(self.max_clock_skew_secs) {
            Err(Error::FromTheFuture)
        } else {
            Ok(())
        }
    }
}

/// Whether an operation changed the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The record was new and is now part of the state.
    Applied,
    /// The same record was already applied; nothing changed.
    Duplicate,
}

/// A recipient: a claimant holding a certificate, or kept by a resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recipient {
    /// The recipient's per-share signing key.
    pub key: PublicKey,
    /// The recipient's per-share HPKE key.
    pub hpke: HpkePublicKey,
}

/// A party proven by a signature: the sender or a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party {
    /// Which side.
    pub role: Role,
    /// Its per-share signing key.
    pub key: PublicKey,
}

/// A message's place: (from, to, sequence number).
pub type MessageKey = (PublicKey, PublicKey, u64);

/// How far past the highest sequence number stored in a direction a new message may go:
/// a replica that missed a few still takes the next, and no party can jump ahead to burn
/// numbers or leave a gap that stalls in-order delivery for good.
pub const SEQUENCE_WINDOW: u64 = 8;

/// The most receipts a replica keeps as the evidence of a contest.
pub const MAX_CONTEST_EVIDENCE: usize = crate::rpc::MAX_EVIDENCE;

/// A summary of a mailbox for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxStatus {
    /// Expiry (unix seconds).
    pub expires_at: u64,
    /// Whether it expired.
    pub expired: bool,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Whether claimants raced and the sender must resolve.
    pub contested: bool,
    /// Whether the sender resolved a contest.
    pub resolved: bool,
    /// Certified recipients.
    pub recipients: Vec<PublicKey>,
    /// The policy's limit.
    pub max_recipients: u8,
    /// Messages stored, both directions.
    pub messages: usize,
}

/// What anyone may read of a mailbox: its state, no keys, no counts of messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicStatus {
    /// Expiry (unix seconds).
    pub expires_at: u64,
    /// Whether it expired.
    pub expired: bool,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Whether claimants raced and the sender must resolve.
    pub contested: bool,
    /// Whether the sender resolved a contest.
    pub resolved: bool,
    /// How many recipients hold a slot.
    pub recipients: u8,
    /// The policy's limit.
    pub max_recipients: u8,
    /// The display information the sender made public, if any.
    pub display: Option<crate::record::DisplayInfo>,
    /// The nodes holding the mailbox, in the genesis's order.
    pub replicas: BoundedVec<PublicKey, MAX_REPLICAS>,
}

/// What a replica knows about one mailbox: its genesis, fixed at creation, and its book,
/// which every write changes. Stored apart, so a write rewrites the book only; encoded
/// one after the other, they are the bytes of the whole state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxState {
    genesis: Genesis,
    book: Book,
}

/// Everything a replica records about a mailbox besides its genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    genesis_digest: [u8; 32],
    grants: Vec<Receipt>,
    claims: Vec<Claim>,
    certificates: Vec<ClaimCertificate>,
    recipients: Vec<Recipient>,
    contested: bool,
    contest: Vec<Receipt>,
    resolve: Option<Resolve>,
    relinquished: BTreeSet<PublicKey>,
    relinquishes: Vec<Relinquish>,
    messages: BTreeMap<MessageKey, [u8; 32]>,
    deleted: Option<Delete>,
    /// This replica's place in the lineup: retirements adopted, handed over, pledges.
    seat: Seat,
    /// The takeovers adopted, in chain order.
    takeovers: Vec<Takeover>,
    /// Handovers from the current retirements gathered towards a takeover (one per
    /// signer).
    handovers: Vec<Handover>,
}

/// Checks a genesis completely: shape, signature, keys, times, algorithms.
pub fn validate_genesis(genesis: &Genesis, limits: &Limits, now: u64) -> Result<(), Error> {
    genesis.check_shape()?;
    let h = genesis.header();
    h.sender
        .validate()
        .map_err(|_| Error::InvalidKey("sender"))?;
    h.claim_key
        .validate()
        .map_err(|_| Error::InvalidKey("claim_key"))?;
    limits.provider.check_hpke(h.sender_hpke.suite)?;
    h.sender_hpke.validate()?;
    limits.provider.check_aead(genesis.body.payload.algorithm)?;
    genesis.verify_signature()?;
    limits.not_future(h.created_at, now)?;
    if h.expires_at <= h.created_at {
        return Err(Error::ExpiryBeforeCreation);
    }
    if h.expires_at - h.created_at > limits.max_ttl_secs {
        return Err(Error::ExpiryTooFar {
            max_secs: limits.max_ttl_secs,
        });
    }
    if now >= h.expires_at {
        return Err(Error::Expired);
    }
    Ok(())
}

/// Checks a claim against its genesis: address, both signatures, keys, time.
pub fn validate_claim(
    genesis: &Genesis,
    claim: &Claim,
    limits: &Limits,
    now: u64,
) -> Result<(), Error> {
    claim.check_shape()?;
    if claim.body.address != genesis.header().address {
        return Err(Error::WrongAddress);
    }
    if claim.body.genesis != genesis.digest() {
        return Err(Error::WrongGenesis);
    }
    limits.not_future(claim.body.claimed_at, now)?;
    claim
        .body
        .recipient
        .validate()
        .map_err(|_| Error::InvalidKey("recipient"))?;
    if claim.body.recipient == genesis.header().sender {
        return Err(Error::InvalidField {
            field: "recipient",
            reason: "the sender cannot claim its own mailbox",
        });
    }
    limits
        .provider
        .check_hpke(claim.body.recipient_hpke.suite)?;
    claim.body.recipient_hpke.validate()?;
    claim.verify(&genesis.header().claim_key)
}

/// Checks a receipt's origin: address, a member of the replica set, signature.
fn validate_receipt(genesis: &Genesis, receipt: &Receipt) -> Result<(), Error> {
    receipt.check_shape()?;
    if receipt.body.address != genesis.header().address {
        return Err(Error::WrongAddress);
    }
    let lineup = genesis.header().lineup();
    if !lineup.holds(receipt.body.retired, &receipt.body.replica) {
        return Err(Error::NotAReplica);
    }
    receipt.verify_signature()
}

/// The slot a certificate's receipts grant (all must agree; checked by
/// [`validate_certificate`]).
pub fn certificate_slot(cert: &ClaimCertificate) -> Result<u8, Error> {
    cert.receipts
        .first()
        .map(|r| r.body.slot)
        .ok_or(Error::MinorityCertificate { have: 0, need: 1 })
}

/// Checks a certificate offline against its genesis: a valid claim and valid receipts for
/// exactly that claim and one slot, from [`GenesisHeader::claim_quorum`] distinct
/// replica-set members. Two such sets share `f + 1` replicas, one of them honest, and an
/// honest replica gives a slot to one claimant at a time, so while at most `f` replicas
/// lie each slot has at most one certificate.
///
/// [`GenesisHeader::claim_quorum`]: crate::record::GenesisHeader::claim_quorum
pub fn validate_certificate(
    genesis: &Genesis,
    cert: &ClaimCertificate,
    limits: &Limits,
    now: u64,
) -> Result<(), Error> {
    validate_claim(genesis, &cert.claim, limits, now)?;
    let digest = cert.claim.digest();
    let slot = certificate_slot(cert)?;
    if slot >= genesis.header().policy.max_recipients {
        return Err(Error::InvalidField {
            field: "receipts",
            reason: "slot beyond max_recipients",
        });
    }
    let mut replicas = BTreeSet::new();
    let retired = cert.receipts.first().map(|r| r.body.retired);
    for receipt in cert.receipts.iter() {
        validate_receipt(genesis, receipt)?;
        if receipt.body.recipient != cert.claim.body.recipient
            || receipt.body.claim_digest != digest
            || receipt.body.slot != slot
            || Some(receipt.body.retired) != retired
        {
            return Err(Error::InvalidField {
                field: "receipts",
                reason: "a receipt grants another claim",
            });
        }
        replicas.insert(receipt.body.replica);
    }
    let need = genesis.header().claim_quorum();
    if replicas.len() < need {
        return Err(Error::MinorityCertificate {
            have: replicas.len(),
            need,
        });
    }
    Ok(())
}

/// Where a claim stands, judged from the receipts an entry node collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimTally {
    /// The claim has a majority: here is its certificate.
    Certified(Box<ClaimCertificate>),
    /// The claim may still reach a majority: wait for more answers.
    Pending,
    /// The claim cannot reach a majority, but another claimant can (or did).
    Lost,
    /// No claimant can reach a majority for a free slot: the sender must resolve.
    Contested,
}

/// Which slot each replica granted to each claimant, and under which retirements, from a
/// set of receipts (receipts that fail validation are ignored; a replica's first receipt
/// per claimant counts).
#[derive(Default)]
struct GrantMap {
    /// (replica, claimant) -> (slot, retirements).
    by_pair: BTreeMap<(PublicKey, PublicKey), (u8, Retired)>,
}

impl GrantMap {
    fn new(genesis: &Genesis, receipts: &[Receipt]) -> Self {
        let checked: Vec<CheckedReceipt> = receipts
            .iter()
            .filter_map(|r| CheckedReceipt::check(genesis, r.clone()).ok())
            .collect();
        Self::of_checked(&checked)
    }

    fn of_checked(receipts: &[CheckedReceipt]) -> Self {
        let mut map = GrantMap::default();
        for CheckedReceipt(r) in receipts {
            map.by_pair
                .entry((r.body.replica, r.body.recipient))
                .or_insert((r.body.slot, r.body.retired));
        }
        map
    }

    fn claimants(&self) -> BTreeSet<PublicKey> {
        self.by_pair.keys().map(|(_, c)| *c).collect()
    }

    fn slot_of(&self, replica: &PublicKey, claimant: &PublicKey) -> Option<u8> {
        self.by_pair.get(&(*replica, *claimant)).map(|(s, _)| *s)
    }

    fn slot_taken(&self, replica: &PublicKey, slot: u8) -> bool {
        self.by_pair
            .iter()
            .any(|((r, _), (s, _))| r == replica && *s == slot)
    }

    /// The retirements the receipts name, the latest (most retired) last.
    fn retirements(&self) -> Vec<Retired> {
        let mut all: Vec<Retired> = self.by_pair.values().map(|(_, m)| *m).collect();
        all.sort_by_key(|m| (m.count(), *m));
        all.dedup();
        if all.is_empty() {
            all.push(Retired::NONE);
        }
        all
    }

    /// The most holders, under any one retirements, that granted `claimant` exactly
    /// `slot` under them.
    fn count(&self, genesis: &Genesis, claimant: &PublicKey, slot: u8) -> usize {
        let lineup = genesis.header().lineup();
        self.retirements()
            .into_iter()
            .map(|m| {
                lineup
                    .holders(m)
                    .iter()
                    .filter(|r| self.by_pair.get(&(**r, *claimant)) == Some(&(slot, m)))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    fn is_certified(&self, genesis: &Genesis, claimant: &PublicKey) -> bool {
        (0..genesis.header().policy.max_recipients)
            .any(|slot| self.count(genesis, claimant, slot) >= genesis.header().claim_quorum())
    }

    /// Whether `claimant` can still collect a quorum for some slot from the holders under
    /// the latest retirements seen: holders that granted it that slot, plus holders that
    /// granted it nothing and are not known to have given that slot away (a holder not
    /// heard from counts as free).
    fn can_reach(&self, genesis: &Genesis, claimant: &PublicKey) -> bool {
        let h = genesis.header();
        let latest = self.retirements().pop().unwrap_or(Retired::NONE);
        let holders = h.lineup().holders(latest);
        (0..h.policy.max_recipients).any(|slot| {
            let possible = holders
                .iter()
                .filter(|r| match self.slot_of(r, claimant) {
                    Some(s) => s == slot,
                    None => !self.slot_taken(r, slot),
                })
                .count();
            possible >= h.claim_quorum()
        })
    }

    /// A contest: some claimant is uncertified, none of the uncertified can still reach a
    /// majority for any slot, and fewer slots than the policy allows are certified.
    fn shows_contest(&self, genesis: &Genesis) -> bool {
        let claimants = self.claimants();
        let certified = claimants
            .iter()
            .filter(|c| self.is_certified(genesis, c))
            .count();
        if certified >= usize::from(genesis.header().policy.max_recipients) {
            return false;
        }
        let mut uncertified = claimants
            .iter()
            .filter(|c| !self.is_certified(genesis, c))
            .peekable();
        uncertified.peek().is_some() && uncertified.all(|c| !self.can_reach(genesis, c))
    }
}

/// A receipt that passed [`CheckedReceipt::check`] against a genesis: right address, from
/// a member of the replica set, signature valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedReceipt(Receipt);

impl CheckedReceipt {
    /// Checks `receipt` against `genesis`.
    pub fn check(genesis: &Genesis, receipt: Receipt) -> Result<Self, Error> {
        validate_receipt(genesis, &receipt)?;
        Ok(Self(receipt))
    }

    /// The receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.0
    }

    /// The receipt, unwrapped.
    pub fn into_inner(self) -> Receipt {
        self.0
    }
}

/// Judges `claim` from every receipt collected so far (for it and for rivals; an entry node
/// includes the grants a full replica reports when it refuses). Invalid receipts are
/// ignored.
pub fn tally_claim(genesis: &Genesis, claim: &Claim, receipts: &[Receipt]) -> ClaimTally {
    let checked: Vec<CheckedReceipt> = receipts
        .iter()
        .filter_map(|r| CheckedReceipt::check(genesis, r.clone()).ok())
        .collect();
    tally_checked(genesis, claim, &checked)
}

/// [`tally_claim`] over receipts already checked (each checked once as it arrives, rather
/// than all again at every answer).
pub fn tally_checked(genesis: &Genesis, claim: &Claim, receipts: &[CheckedReceipt]) -> ClaimTally {
    let map = GrantMap::of_checked(receipts);
    let digest = claim.digest();
    let who = claim.body.recipient;
    let lineup = genesis.header().lineup();
    // A certificate is a quorum of receipts for one slot naming the same retirements, by
    // holders under them.
    for retired in map.retirements() {
        let holders = lineup.holders(retired);
        for slot in 0..genesis.header().policy.max_recipients {
            let mut mine: Vec<Receipt> = Vec::new();
            for CheckedReceipt(r) in receipts {
                let fits = r.body.recipient == who
                    && r.body.slot == slot
                    && r.body.retired == retired
                    && r.body.claim_digest == digest
                    && holders.contains(&r.body.replica)
                    && !mine.iter().any(|m| m.body.replica == r.body.replica);
                if fits {
                    mine.push(r.clone());
                }
            }
            if mine.len() >= genesis.header().claim_quorum()
                && let Some(receipts) = BoundedVec::new(mine)
            {
                return ClaimTally::Certified(Box::new(ClaimCertificate {
                    claim: claim.clone(),
                    receipts,
                }));
            }
        }
    }
    if map.can_reach(genesis, &who) {
        ClaimTally::Pending
    } else if map.shows_contest(genesis) {
        ClaimTally::Contested
    } else {
        ClaimTally::Lost
    }
}

impl MailboxState {
    /// A new mailbox from a genesis, which must be valid at `now`.
    pub fn create(genesis: Genesis, limits: &Limits, now: u64) -> Result<Self, Error> {
        validate_genesis(&genesis, limits, now)?;
        Ok(Self {
            book: Book {
                genesis_digest: genesis.digest(),
                grants: Vec::new(),
                claims: Vec::new(),
                certificates: Vec::new(),
                recipients: Vec::new(),
                contested: false,
                contest: Vec::new(),
                resolve: None,
                relinquished: BTreeSet::new(),
                relinquishes: Vec::new(),
                messages: BTreeMap::new(),
                deleted: None,
                seat: Seat::new(),
                takeovers: Vec::new(),
                handovers: Vec::new(),
            },
            genesis,
        })
    }

    /// A genesis arriving for an address that already has this state: the same bytes are
    /// an idempotent success, anything else a conflict (or gone, after a delete).
    pub fn offer_genesis(&self, genesis: &Genesis, now: u64) -> Result<Outcome, Error> {
        self.live(now)?;
        if genesis.digest() == self.book.genesis_digest {
            Ok(Outcome::Duplicate)
        } else {
            Err(Error::GenesisConflict)
        }
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The book: everything but the genesis.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// A state from its parts as stored apart: `None` when the book is not of this
    /// genesis.
    pub fn from_parts(genesis: Genesis, book: Book) -> Option<Self> {
        let digest = genesis.digest();
        Self::from_digested_parts(genesis, &digest, book)
    }

    /// As [`MailboxState::from_parts`], for a caller that knows `genesis`'s digest
    /// (`digest` must be `genesis.digest()`).
    pub fn from_digested_parts(genesis: Genesis, digest: &[u8; 32], book: Book) -> Option<Self> {
        (*digest == book.genesis_digest).then_some(Self { genesis, book })
    }

    /// The mailbox address.
    pub fn address(&self) -> Address {
        self.genesis.header().address
    }

    /// The certified recipients.
    pub fn recipients(&self) -> &[Recipient] {
        &self.book.recipients
    }

    /// The certificates stored.
    pub fn certificates(&self) -> &[ClaimCertificate] {
        &self.book.certificates
    }

    /// The claims this replica granted (what a sender needs to resolve a contest).
    pub fn claims(&self) -> &[Claim] {
        &self.book.claims
    }

    /// The receipts this replica granted.
    pub fn grants(&self) -> &[Receipt] {
        &self.book.grants
    }

    /// The digest of the genesis: every later record names it.
    pub fn genesis_digest(&self) -> [u8; 32] {
        self.book.genesis_digest
    }

    /// The receipts that showed this replica the mailbox is contested (empty if it never
    /// was): anti-entropy hands them on, so a replica that missed the contest learns it
    /// before the resolve.
    pub fn contest_evidence(&self) -> &[Receipt] {
        &self.book.contest
    }

    /// Whether the mailbox is contested now.
    pub fn is_contested(&self) -> bool {
        self.book.contested
    }

    /// What anyone may read: the state without keys, and the display information the
    /// sender made public.
    pub fn public_status(&self, now: u64) -> PublicStatus {
        let h = self.genesis.header();
        PublicStatus {
            expires_at: h.expires_at,
            expired: now >= h.expires_at,
            deleted: self.book.deleted.is_some(),
            contested: self.book.contested,
            resolved: self.book.resolve.is_some(),
            recipients: u8::try_from(self.book.recipients.len()).unwrap_or(u8::MAX),
            max_recipients: h.policy.max_recipients,
            display: h.display.clone(),
            replicas: BoundedVec::truncated(h.lineup().holders(self.book.seat.retired())),
        }
    }

    /// The retirements this replica holds the mailbox under.
    pub fn retired(&self) -> Retired {
        self.book.seat.retired()
    }

    /// The holders under this replica's retirements, in lineup order.
    pub fn holders(&self) -> Vec<PublicKey> {
        self.genesis
            .header()
            .lineup()
            .holders(self.book.seat.retired())
    }

    /// The takeovers adopted, in chain order (what anti-entropy hands to a replica behind).
    pub fn takeovers(&self) -> &[Takeover] {
        &self.book.takeovers
    }

    /// How many handovers this replica gathered towards the next takeover.
    pub fn handovers_len(&self) -> usize {
        self.book.handovers.len()
    }

    /// Signs this replica's handover retiring `retiree` (a holder it has not reached for
    /// the takeover time) and counts it towards the takeover; once signed, this replica
    /// grants nothing more until the takeover is adopted.
    pub fn hand_over(
        &mut self,
        key: &SigningKey,
        retiree: &PublicKey,
    ) -> Result<(Handover, Option<Takeover>), Error> {
        let me = key.public_key();
        // Signed already from these retirements: the same handover again (to resend).
        if let Some(mine) = self.book.handovers.iter().find(|h| h.body.signer == me) {
            return Ok((mine.clone(), None));
        }
        let lineup = self.genesis.header().lineup();
        let handover = self.book.seat.hand_over(
            &lineup,
            key,
            retiree,
            self.address(),
            self.book.genesis_digest,
        )?;
        let takeover = self.add_handover(handover.clone(), &key.public_key())?;
        Ok((handover, takeover))
    }

    /// Keeps another holder's handover from this replica's retirements (one per signer;
    /// others are ignored). Once a claim quorum retires the same holder, the takeover is
    /// assembled, adopted, and returned for the new holders.
    pub fn add_handover(
        &mut self,
        handover: Handover,
        me: &PublicKey,
    ) -> Result<Option<Takeover>, Error> {
        let lineup = self.genesis.header().lineup();
        let b = &handover.body;
        if b.address != self.address() || b.genesis != self.book.genesis_digest {
            return Err(Error::WrongGenesis);
        }
        if b.from != self.book.seat.retired()
            || self
                .book
                .handovers
                .iter()
                .any(|h| h.body.signer == b.signer)
        {
            return Ok(None);
        }
        // Check it alone first (signature, signer and retiree are holders).
        Takeover::assemble(vec![handover.clone()])?.verify_partial(
            &lineup,
            &self.address(),
            &self.book.genesis_digest,
        )?;
        let retiree = b.retiree;
        self.book.handovers.push(handover);
        let agreeing: Vec<Handover> = self
            .book
            .handovers
            .iter()
            .filter(|h| h.body.retiree == retiree)
            .cloned()
            .collect();
        if agreeing.len() < lineup.quorum() {
            return Ok(None);
        }
        let takeover = Takeover::assemble(agreeing)?;
        self.apply_takeover(&takeover, me)?;
        Ok(Some(takeover))
    }

    /// Adopts a takeover that follows this replica's retirements (the standby it brings
    /// in inherits the reported pledges). One already adopted, or older, is a duplicate.
    pub fn apply_takeover(
        &mut self,
        takeover: &Takeover,
        me: &PublicKey,
    ) -> Result<Outcome, Error> {
        if self.book.takeovers.contains(takeover) {
            return Ok(Outcome::Duplicate);
        }
        let lineup = self.genesis.header().lineup();
        let step = takeover.verify(&lineup, &self.address(), &self.book.genesis_digest)?;
        let mine = self.book.seat.retired();
        if step.to.count() <= mine.count() && step.to.within(mine) {
            return Ok(Outcome::Duplicate);
        }
        self.book.seat.adopt(
            &lineup,
            me,
            takeover,
            &self.address(),
            &self.book.genesis_digest,
        )?;
        self.book.takeovers.push(takeover.clone());
        self.book.handovers.clear();
        Ok(Outcome::Applied)
    }

    /// The resolve, if the sender settled a contest.
    pub fn resolution(&self) -> Option<&Resolve> {
        self.book.resolve.as_ref()
    }

    /// The relinquish records applied (what anti-entropy hands to other replicas).
    pub fn relinquishes(&self) -> &[Relinquish] {
        &self.book.relinquishes
    }

    /// The delete record, if the mailbox is a tombstone.
    pub fn deletion(&self) -> Option<&Delete> {
        self.book.deleted.as_ref()
    }

    /// The keys of every message stored, in order.
    pub fn message_keys(&self) -> impl Iterator<Item = (&MessageKey, &[u8; 32])> {
        self.book.messages.iter()
    }

    /// Whether the background sweep may remove this mailbox (live or tombstone).
    pub fn is_sweepable(&self, now: u64) -> bool {
        now >= self.genesis.header().expires_at
    }

    /// Refuses anything on an expired or deleted mailbox.
    pub fn live(&self, now: u64) -> Result<(), Error> {
        if self.book.deleted.is_some() {
            Err(Error::Deleted)
        } else if now >= self.genesis.header().expires_at {
            Err(Error::Expired)
        } else {
            Ok(())
        }
    }

    /// The status summary.
    pub fn status(&self, now: u64) -> MailboxStatus {
        MailboxStatus {
            expires_at: self.genesis.header().expires_at,
            expired: now >= self.genesis.header().expires_at,
            deleted: self.book.deleted.is_some(),
            contested: self.book.contested,
            resolved: self.book.resolve.is_some(),
            recipients: self.book.recipients.iter().map(|r| r.key).collect(),
            max_recipients: self.genesis.header().policy.max_recipients,
            messages: self.book.messages.len(),
        }
    }

    /// The role of `key`, if it is a party.
    pub fn role_of(&self, key: &PublicKey) -> Option<Role> {
        if *key == self.genesis.header().sender {
            Some(Role::Sender)
        } else if self.book.recipients.iter().any(|r| r.key == *key) {
            Some(Role::Recipient)
        } else {
            None
        }
    }

    fn require_right(&self, role: Role, right: Rights) -> Result<(), Error> {
        let policy = &self.genesis.header().policy;
        let rights = match role {
            Role::Sender => policy.sender_rights,
            Role::Recipient => policy.recipient_rights,
            Role::Invitee => return Err(Error::NotAParty),
        };
        if rights.allows(right) {
            Ok(())
        } else {
            Err(Error::RightDenied {
                role,
                right: right.name(),
            })
        }
    }

    fn active_grants(&self) -> impl Iterator<Item = &Receipt> {
        self.book
            .grants
            .iter()
            .filter(|g| !self.book.relinquished.contains(&g.body.recipient))
    }

    /// A replica grants `claim` a slot, signing a receipt with its node key: first come,
    /// the lowest free slot of `0..max_recipients`, each slot to one claimant at a time;
    /// the same claimant gets the same receipt.
    pub fn grant(
        &mut self,
        claim: &Claim,
        replica: &SigningKey,
        limits: &Limits,
        now: u64,
    ) -> Result<(Receipt, Outcome), Error> {
        self.live(now)?;
        validate_claim(&self.genesis, claim, limits, now)?;
        let me = replica.public_key();
        let lineup = self.genesis.header().lineup();
        if !lineup.holds(self.book.seat.retired(), &me) {
            return Err(Error::NotAReplica);
        }
        let who = claim.body.recipient;
        if self.book.relinquished.contains(&who) {
            return Err(Error::Relinquished);
        }
        if let Some(existing) = self.book.grants.iter().find(|g| g.body.recipient == who) {
            return Ok((existing.clone(), Outcome::Duplicate));
        }
        if self.book.resolve.is_some() {
            return Err(Error::AlreadyClaimed);
        }
        if self.book.contested {
            return Err(Error::Contested);
        }
        // A slot is taken by this replica's own live grant, or by a certificate it learned
        // (from the entry node or another replica) for a recipient still holding it.
        let taken = |slot: u8| {
            self.active_grants().any(|g| g.body.slot == slot)
                || self
                    .book
                    .certificates
                    .iter()
                    .any(|c| certificate_slot(c) == Ok(slot))
        };
        let epoch = u16::try_from(self.book.relinquishes.len()).unwrap_or(u16::MAX);
        // A slot the handovers pledged to this claimant is its own; a slot pledged to
        // another (or to two) is nobody's here.
        let slot = self
            .book
            .seat
            .pledged_slot(epoch, &who)
            .filter(|s| !taken(*s))
            .or_else(|| {
                (0..self.genesis.header().policy.max_recipients)
                    .find(|slot| !taken(*slot) && self.book.seat.allows(*slot, epoch, &who))
            })
            .ok_or(Error::AlreadyClaimed)?;
        let retired = self.book.seat.grant(&lineup, &me, slot, epoch, who)?;
        let receipt = Receipt::sign(
            ReceiptBody {
                version: FORMAT_VERSION,
                address: self.address(),
                replica: me,
                recipient: who,
                slot,
                epoch,
                retired,
                claim_digest: claim.digest(),
                granted_at: now,
            },
            replica,
        );
        self.book.grants.push(receipt.clone());
        self.book.claims.push(claim.clone());
        Ok((receipt, Outcome::Applied))
    }

    /// Stores a certificate: its claimant becomes a recipient.
    pub fn accept_certificate(
        &mut self,
        cert: &ClaimCertificate,
        limits: &Limits,
        now: u64,
    ) -> Result<Outcome, Error> {
        self.live(now)?;
        validate_certificate(&self.genesis, cert, limits, now)?;
        let who = cert.claim.body.recipient;
        if self.book.relinquished.contains(&who) {
            return Err(Error::Relinquished);
        }
        if self.book.recipients.iter().any(|r| r.key == who) {
            return Ok(Outcome::Duplicate);
        }
        if self.book.resolve.is_some() {
            return Err(Error::ResolveConflict);
        }
        let slot = certificate_slot(cert)?;
        let slot_held = self
            .book
            .certificates
            .iter()
            .any(|c| certificate_slot(c) == Ok(slot));
        if slot_held
            || self.book.recipients.len()
                >= usize::from(self.genesis.header().policy.max_recipients)
        {
            return Err(Error::AlreadyClaimed);
        }
        self.book.recipients.push(Recipient {
            key: who,
            hpke: cert.claim.body.recipient_hpke.clone(),
        });
        self.book.certificates.push(cert.clone());
        Ok(Outcome::Applied)
    }

    /// Marks the mailbox contested, given receipts (from any replicas) that show no
    /// claimant can still reach a claim quorum for a free slot. The receipts are kept as
    /// the contest's evidence.
    pub fn mark_contested(&mut self, evidence: &[Receipt], now: u64) -> Result<Outcome, Error> {
        self.live(now)?;
        if self.book.contested || !self.book.contest.is_empty() {
            return Ok(Outcome::Duplicate);
        }
        for r in evidence {
            validate_receipt(&self.genesis, r)?;
        }
        let mut all: Vec<Receipt> = Vec::new();
        for r in evidence.iter().chain(self.book.grants.iter()) {
            if !all.contains(r) {
                all.push(r.clone());
            }
        }
        if !GrantMap::new(&self.genesis, &all).shows_contest(&self.genesis) {
            return Err(Error::InvalidField {
                field: "evidence",
                reason: "the receipts do not show a contest",
            });
        }
        all.truncate(MAX_CONTEST_EVIDENCE);
        self.book.contest = all;
        // A resolve that arrived first already settled it.
        self.book.contested = self.book.resolve.is_none();
        Ok(Outcome::Applied)
    }

    /// Applies the sender's resolve: the kept claimants become the recipients.
    pub fn resolve(
        &mut self,
        resolve: &Resolve,
        limits: &Limits,
        now: u64,
    ) -> Result<Outcome, Error> {
        self.live(now)?;
        resolve.check_shape()?;
        if resolve.body.address != self.address() {
            return Err(Error::WrongAddress);
        }
        if resolve.body.genesis != self.book.genesis_digest {
            return Err(Error::WrongGenesis);
        }
        limits.not_future(resolve.body.resolved_at, now)?;
        resolve.verify_signature(&self.genesis.header().sender)?;
        if let Some(existing) = &self.book.resolve {
            return if existing.digest() == resolve.digest() {
                Ok(Outcome::Duplicate)
            } else {
                Err(Error::ResolveConflict)
            };
        }
        // Only a contest is resolved: a resolve never replaces recipients a claim quorum
        // certified.
        if !self.book.contested {
            return Err(Error::NotContested);
        }
        let keep = &resolve.body.keep;
        if keep.is_empty() || keep.len() > usize::from(self.genesis.header().policy.max_recipients)
        {
            return Err(Error::InvalidField {
                field: "keep",
                reason: "between 1 and max_recipients claimants",
            });
        }
        let mut seen = BTreeSet::new();
        for claim in keep.iter() {
            validate_claim(&self.genesis, claim, limits, now)?;
            if self.book.relinquished.contains(&claim.body.recipient) {
                return Err(Error::Relinquished);
            }
            if !seen.insert(claim.body.recipient) {
                return Err(Error::InvalidField {
                    field: "keep",
                    reason: "claimants must be distinct",
                });
            }
        }
        self.book.recipients = keep
            .iter()
            .map(|c| Recipient {
                key: c.body.recipient,
                hpke: c.body.recipient_hpke.clone(),
            })
            .collect();
        self.book.contested = false;
        self.book.resolve = Some(resolve.clone());
        Ok(Outcome::Applied)
    }

    /// Checks a message: only from a party with the write right, to the other party, under a
    /// sequence number not yet used in that direction (any such number: a replica that
    /// missed one still takes the next). The same record again is a duplicate; a different
    /// one under a used number is a replay.
    pub fn check_message(
        &self,
        msg: &Message,
        limits: &Limits,
        now: u64,
    ) -> Result<Outcome, Error> {
        self.live(now)?;
        msg.check_shape()?;
        let h = msg.header();
        if h.address != self.address() {
            return Err(Error::WrongAddress);
        }
        if h.genesis != self.book.genesis_digest {
            return Err(Error::WrongGenesis);
        }
        let role = self.role_of(&h.from).ok_or(Error::NotAParty)?;
        msg.verify_signature()?;
        let to_ok = match role {
            Role::Sender => self.book.recipients.iter().any(|r| r.key == h.to),
            Role::Recipient => h.to == self.genesis.header().sender,
            Role::Invitee => false,
        };
        if !to_ok {
            return Err(Error::WrongRecipient);
        }
        self.require_right(role, Rights::WRITE)?;
        limits.not_future(h.sent_at, now)?;
        if let Some(digest) = self.book.messages.get(&(h.from, h.to, h.seq)) {
            return if *digest == msg.digest() {
                Ok(Outcome::Duplicate)
            } else {
                Err(Error::Replay { seq: h.seq })
            };
        }
        let highest = self
            .book
            .messages
            .range((h.from, h.to, 0)..=(h.from, h.to, u64::MAX))
            .next_back()
            .map_or(0, |((_, _, seq), _)| *seq);
        let ahead = highest.saturating_add(SEQUENCE_WINDOW);
        if h.seq > ahead {
            return Err(Error::SequenceAhead {
                seq: h.seq,
                max: ahead,
            });
        }
        let max = self.genesis.header().policy.max_messages;
        if self.book.messages.len() >= usize::from(max) {
            return Err(Error::TooManyMessages { max });
        }
        Ok(Outcome::Applied)
    }

    /// Applies a message (see [`MailboxState::check_message`]).
    pub fn apply_message(
        &mut self,
        msg: &Message,
        limits: &Limits,
        now: u64,
    ) -> Result<Outcome, Error> {
        let outcome = self.check_message(msg, limits, now)?;
        if outcome == Outcome::Applied {
            let h = msg.header();
            self.book
                .messages
                .insert((h.from, h.to, h.seq), msg.digest());
        }
        Ok(outcome)
    }

    /// Deletes the mailbox: it becomes a tombstone until its original expiry, refusing any
    /// later record.
    pub fn delete(&mut self, delete: &Delete, limits: &Limits, now: u64) -> Result<Outcome, Error> {
        if let Some(existing) = &self.book.deleted {
            return if existing.digest() == delete.digest() {
                Ok(Outcome::Duplicate)
            } else {
                Err(Error::Deleted)
            };
        }
        self.live(now)?;
        let role = self.party_action(&delete.body, limits, now)?;
        delete.verify_signature()?;
        self.require_right(role, Rights::DELETE)?;
        self.book.deleted = Some(delete.clone());
        self.book.messages.clear();
        self.book.certificates.clear();
        self.book.grants.clear();
        self.book.claims.clear();
        Ok(Outcome::Applied)
    }

    fn party_action(
        &self,
        body: &crate::record::ActionBody,
        limits: &Limits,
        now: u64,
    ) -> Result<Role, Error> {
        if body.version != FORMAT_VERSION {
            return Err(Error::Decode(crate::wire::DecodeError::UnsupportedVersion(
                body.version,
            )));
        }
        if body.address != self.address() {
            return Err(Error::WrongAddress);
        }
        if body.genesis != self.book.genesis_digest {
            return Err(Error::WrongGenesis);
        }
        limits.not_future(body.at, now)?;
        self.role_of(&body.by).ok_or(Error::NotAParty)
    }

    /// A recipient (certified, or a claimant holding this replica's grant) gives its slot
    /// back. The key can never claim again; the slot is free for another claimant.
    pub fn relinquish(
        &mut self,
        rel: &Relinquish,
        limits: &Limits,
        now: u64,
    ) -> Result<Outcome, Error> {
        self.live(now)?;
        rel.check_shape()?;
        let who = rel.body.by;
        if self.book.relinquished.contains(&who) {
            rel.verify_signature()?;
            return Ok(Outcome::Duplicate);
        }
        if rel.body.address != self.address() {
            return Err(Error::WrongAddress);
        }
        if rel.body.genesis != self.book.genesis_digest {
            return Err(Error::WrongGenesis);
        }
        limits.not_future(rel.body.at, now)?;
        let certified = self.book.recipients.iter().any(|r| r.key == who);
        let granted = self.book.grants.iter().any(|g| g.body.recipient == who);
        if !certified && !granted {
            return Err(Error::NotAParty);
        }
        rel.verify_signature()?;
        self.book.recipients.retain(|r| r.key != who);
        self.book
            .certificates
            .retain(|c| c.claim.body.recipient != who);
        self.book.relinquished.insert(who);
        self.book.relinquishes.push(rel.clone());
        Ok(Outcome::Applied)
    }

    /// Checks a signed read request for the operation `scope`: a party with the read
    /// right, for this genesis and this operation, signed within the window.
    pub fn authorize_read(
        &self,
        req: &ReadRequest,
        scope: ReadScope,
        limits: &Limits,
        now: u64,
    ) -> Result<Party, Error> {
        self.live(now)?;
        req.check_shape()?;
        if req.body.at.abs_diff(now) > limits.read_window_secs {
            return Err(Error::StaleRequest);
        }
        if req.body.address != self.address() {
            return Err(Error::WrongAddress);
        }
        if req.body.genesis != self.book.genesis_digest || req.body.scope != scope {
            return Err(Error::WrongGenesis);
        }
        let role = self.role_of(&req.body.by).ok_or(Error::NotAParty)?;
        req.verify_signature()?;
        self.require_right(role, Rights::READ)?;
        Ok(Party {
            role,
            key: req.body.by,
        })
    }

    /// Checks a signed request to open the genesis: from a party, or from a holder of the
    /// invitation signing with the claim key (a recipient before it claims, who may not
    /// know the genesis yet).
    pub fn authorize_open(
        &self,
        req: &ReadRequest,
        limits: &Limits,
        now: u64,
    ) -> Result<Party, Error> {
        if req.body.by != self.genesis.header().claim_key {
            return self.authorize_read(req, ReadScope::Open, limits, now);
        }
        self.live(now)?;
        req.check_shape()?;
        if req.body.at.abs_diff(now) > limits.read_window_secs {
            return Err(Error::StaleRequest);
        }
        if req.body.address != self.address() {
            return Err(Error::WrongAddress);
        }
        let genesis_ok =
            req.body.genesis == UNKNOWN_GENESIS || req.body.genesis == self.book.genesis_digest;
        if !genesis_ok || req.body.scope != ReadScope::Open {
            return Err(Error::WrongGenesis);
        }
        req.verify_signature()?;
        Ok(Party {
            role: Role::Invitee,
            key: req.body.by,
        })
    }
}

/// Whether `rel` is a relinquish of the mailbox of `genesis` (whose digest is `digest`),
/// signed by the key it names. Whether that key held a slot is for the state to judge.
pub fn relinquish_of(genesis: &Genesis, digest: &[u8; 32], rel: &Relinquish) -> bool {
    rel.body.address == genesis.header().address
        && rel.body.genesis == *digest
        && rel.verify_signature().is_ok()
}

/// Whether `resolve` is the sender's resolve of the mailbox of `genesis` (whose digest is
/// `digest`).
pub fn resolve_of(genesis: &Genesis, digest: &[u8; 32], resolve: &Resolve) -> bool {
    resolve.body.address == genesis.header().address
        && resolve.body.genesis == *digest
        && resolve.verify_signature(&genesis.header().sender).is_ok()
}

/// Equivocations among `receipts`: every pair that proves a replica gave one slot in one
/// epoch to two claimants (one proof per replica).
pub fn equivocations(receipts: &[Receipt]) -> Vec<Equivocation> {
    let mut proofs: Vec<Equivocation> = Vec::new();
    for (i, a) in receipts.iter().enumerate() {
        if proofs.iter().any(|p| p.liar() == a.body.replica) {
            continue;
        }
        for b in receipts.iter().skip(i + 1) {
            let suspicious = a.body.replica == b.body.replica
                && a.body.slot == b.body.slot
                && a.body.epoch == b.body.epoch
                && a.body.recipient != b.body.recipient;
            if suspicious && let Some(p) = Equivocation::of(a, b) {
                proofs.push(p);
                break;
            }
        }
    }
    proofs
}

/// Whether a fetch by `reader` standing at `cursor` may see the message at `key` at all:
/// it is addressed to the reader, or written by it when it names itself in the cursor (a
/// device that keeps no state resumes its own sequence numbers this way).
pub fn visible_in_fetch(reader: &PublicKey, cursor: &[(PublicKey, u64)], key: &MessageKey) -> bool {
    let (from, to, _) = key;
    let own = cursor.iter().any(|(author, _)| author == reader);
    to == reader || (own && from == reader)
}

/// Whether a fetch by `reader` standing at `cursor` returns the message at `key`: it is
/// [visible](visible_in_fetch), and at or after the cursor's next sequence number for its
/// author (1 when the cursor does not name the author). Replicas select with this rule and
/// entry nodes drop any answer that breaks it, so a replica replaying old messages
/// delivers nothing twice.
pub fn fetchable(reader: &PublicKey, cursor: &[(PublicKey, u64)], key: &MessageKey) -> bool {
    let (from, _, seq) = key;
    let next = cursor
        .iter()
        .find(|(author, _)| author == from)
        .map_or(1, |(_, n)| *n);
    visible_in_fetch(reader, cursor, key) && *seq >= next
}

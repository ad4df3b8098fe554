//! Replicas that leave for good. A mailbox's **lineup** is the R replicas its genesis
//! names followed by its standbys, in the sender's order. Under a set of **retired**
//! positions the mailbox's holders are the first R members of the lineup not retired, so
//! anyone holding the signed lineup and the retirements can name the holders.
//!
//! A position is retired only by a [`Takeover`]: [`Handover`]s signed by a claim quorum
//! of the holders other than the retiree, all from the same retirements. A holder signs
//! at most one handover from one set of retirements, grants nothing under it afterwards,
//! and puts in it every slot it has granted (its [`Pledge`]s). The next standby, taking
//! the retiree's place, starts pledged to whatever the handovers report. ARCHITECTURE.md
//! ("Replicas that leave") proves that any two certificates for one slot, under any
//! retirements of one chain, name the same claimant while at most `f` members of the
//! lineup lie; [`Seat`] is the honest holder's side of that argument, and the model check
//! at the end of this file attacks it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{PublicKey, Signature, SignatureKind, SigningKey};
use crate::id::Address;
use crate::record::{MAX_REPLICAS, claim_quorum, sign_body, verify_body};
use crate::wire::{BoundedVec, FORMAT_VERSION};

/// The most standbys a lineup has after its replicas.
pub const MAX_STANDBYS: usize = 8;

/// The most pledges one handover carries (slots × relinquish epochs a holder granted).
pub const MAX_PLEDGES: usize = 64;

/// The most takeovers one mailbox goes through (a chain longer than this is refused).
pub const MAX_CHAIN: usize = 12;

/// Checks a chain of takeovers from the genesis's own replica set, each following the
/// one before; returns the retirements it ends at.
pub fn follow(
    lineup: &Lineup,
    address: &Address,
    genesis: &[u8; 32],
    chain: &[Takeover],
) -> Result<Retired, TakeoverError> {
    let mut retired = Retired::NONE;
    for t in chain {
        let step = t.verify(lineup, address, genesis)?;
        if step.from != retired {
            return Err(TakeoverError::NotNext);
        }
        retired = step.to;
    }
    Ok(retired)
}

/// The retired positions of a lineup, as a bit set over its indices.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Retired(u32);

impl Retired {
    /// Nobody retired: the genesis's own replica set.
    pub const NONE: Retired = Retired(0);

    /// Whether position `i` is retired.
    pub fn contains(self, i: usize) -> bool {
        i < 32 && self.0 & (1 << i) != 0
    }

    /// These retirements and position `i`.
    pub fn with(self, i: usize) -> Retired {
        Retired(self.0 | (1u32 << (i % 32)))
    }

    /// Whether every position retired here is retired in `other` too.
    pub fn within(self, other: Retired) -> bool {
        self.0 & !other.0 == 0
    }

    /// How many positions are retired.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }
}

/// Why a lineup, a handover or a takeover is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TakeoverError {
    /// The lineup is not one a genesis may name.
    #[error("invalid lineup: {0}")]
    Lineup(&'static str),
    /// A handover or takeover for another mailbox, genesis or format.
    #[error("the handover is for another mailbox")]
    WrongMailbox,
    /// A signer, or the retiree, is not a holder under the retirements it names.
    #[error("{0} is not a holder under those retirements")]
    NotAHolder(PublicKey),
    /// The handovers do not all retire the same position from the same retirements.
    #[error("the handovers disagree on what they hand over")]
    Mixed,
    /// One holder signed twice.
    #[error("{0} signed twice")]
    Duplicate(PublicKey),
    /// Fewer signers than a claim quorum.
    #[error("{have} holders handed over; {need} are needed")]
    TooFewSigners {
        /// Distinct valid signers.
        have: usize,
        /// The claim quorum.
        need: usize,
    },
    /// A signature does not verify.
    #[error("a handover's signature is wrong")]
    BadSignature,
    /// More pledges or handovers than a record may carry.
    #[error("too large")]
    TooLarge,
    /// The takeover does not follow the retirements this holder has.
    #[error("the takeover is not the next step from these retirements")]
    NotNext,
    /// This holder has already handed over from these retirements (it signs one handover
    /// from each, and grants nothing under them afterwards).
    #[error("already handed over from these retirements")]
    HandedOver,
    /// The slot is pledged to another claimant (or blocked by conflicting reports).
    #[error("the slot is pledged to another claimant")]
    Pledged,
}

/// A mailbox's lineup: its replicas, then its standbys, in the sender's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineup {
    nodes: Vec<PublicKey>,
    replicas: usize,
    fault_tolerance: u8,
}

impl Lineup {
    /// The lineup of `replicas` (R) then `standbys`, tolerating `fault_tolerance` liars.
    pub fn new(
        replicas: &[PublicKey],
        standbys: &[PublicKey],
        fault_tolerance: u8,
    ) -> Result<Self, TakeoverError> {
        if replicas.is_empty() || replicas.len() > MAX_REPLICAS {
            return Err(TakeoverError::Lineup("1 to 16 replicas"));
        }
        if standbys.len() > MAX_STANDBYS {
            return Err(TakeoverError::Lineup("at most 8 standbys"));
        }
        let nodes: Vec<PublicKey> = replicas.iter().chain(standbys).copied().collect();
        for (i, n) in nodes.iter().enumerate() {
            if nodes.iter().take(i).any(|m| m == n) {
                return Err(TakeoverError::Lineup("a node appears twice"));
            }
        }
        if usize::from(fault_tolerance) > crate::record::max_fault_tolerance(replicas.len()).into()
        {
            return Err(TakeoverError::Lineup("fault tolerance too high"));
        }
        Ok(Self {
            nodes,
            replicas: replicas.len(),
            fault_tolerance,
        })
    }

    /// A lineup of `replicas` alone, unchecked (for a genesis that failed its shape).
    pub(crate) fn unchecked(replicas: &[PublicKey], fault_tolerance: u8) -> Self {
        Self {
            nodes: replicas.to_vec(),
            replicas: replicas.len(),
            fault_tolerance,
        }
    }

    /// The receipts, and the handovers, a certificate and a takeover need.
    pub fn quorum(&self) -> usize {
        claim_quorum(self.replicas, self.fault_tolerance)
    }

    /// R: how many hold the mailbox at once.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Every member, replicas first.
    pub fn members(&self) -> &[PublicKey] {
        &self.nodes
    }

    /// The position of `key` in the lineup.
    pub fn position(&self, key: &PublicKey) -> Option<usize> {
        self.nodes.iter().position(|n| n == key)
    }

    /// The holders under `retired`: the first R members not retired, in lineup order
    /// (fewer once the standbys run out).
    pub fn holders(&self, retired: Retired) -> Vec<PublicKey> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !retired.contains(*i))
            .take(self.replicas)
            .map(|(_, n)| *n)
            .collect()
    }

    /// Whether `key` holds the mailbox under `retired`.
    pub fn holds(&self, retired: Retired, key: &PublicKey) -> bool {
        self.holders(retired).contains(key)
    }
}

/// One slot a holder granted: to whom, in which relinquish epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pledge {
    /// The recipient slot.
    pub slot: u8,
    /// The relinquish epoch of the grant.
    pub epoch: u16,
    /// The claimant granted (its device key).
    pub recipient: PublicKey,
}

/// The signed part of a handover.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HandoverBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The digest of the mailbox's genesis.
    pub genesis: [u8; 32],
    /// The retirements handed over from.
    pub from: Retired,
    /// The holder being retired (unreachable for the takeover time).
    pub retiree: PublicKey,
    /// The holder signing.
    pub signer: PublicKey,
    /// Every slot the signer granted or was pledged to, up to now.
    pub pledges: BoundedVec<Pledge, MAX_PLEDGES>,
}

/// A holder's signed statement: "from these retirements I retire this holder, and here is
/// every slot I granted". Signing it ends the signer's grants under `from`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handover {
    /// The body.
    pub body: HandoverBody,
    /// The signer's node-key signature.
    pub signature: Signature,
}

impl Handover {
    fn verify(&self, address: &Address, genesis: &[u8; 32]) -> Result<(), TakeoverError> {
        if self.body.version != FORMAT_VERSION
            || self.body.address != *address
            || self.body.genesis != *genesis
        {
            return Err(TakeoverError::WrongMailbox);
        }
        verify_body(
            &self.body.signer,
            SignatureKind::Handover,
            &self.body,
            &self.signature,
        )
        .map_err(|_| TakeoverError::BadSignature)
    }
}

/// A checked takeover: what it retires and who steps in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The retirements before.
    pub from: Retired,
    /// The retirements after.
    pub to: Retired,
    /// The holder retired.
    pub retiree: PublicKey,
    /// The standby that becomes a holder (none once the standbys have run out).
    pub standby: Option<PublicKey>,
    /// The claimants the handovers report for each (slot, epoch): the standby gives the
    /// slot to nobody else, and to nobody at all when two are reported (the sender's
    /// resolve settles it).
    pub inherited: BTreeMap<(u8, u16), Vec<PublicKey>>,
}

/// A claim quorum of handovers retiring one holder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Takeover {
    /// The handovers, one per signer.
    pub handovers: BoundedVec<Handover, MAX_REPLICAS>,
}

impl Takeover {
    /// Gathers handovers into a takeover.
    pub fn assemble(handovers: Vec<Handover>) -> Result<Self, TakeoverError> {
        Ok(Self {
            handovers: BoundedVec::new(handovers).ok_or(TakeoverError::TooLarge)?,
        })
    }

    /// Checks the takeover against the lineup the sender signed: every handover signed,
    /// for this mailbox, from the same retirements, retiring the same holder, by distinct
    /// holders other than the retiree, and at least a claim quorum of them.
    pub fn verify(
        &self,
        lineup: &Lineup,
        address: &Address,
        genesis: &[u8; 32],
    ) -> Result<Step, TakeoverError> {
        self.verify_with(lineup, address, genesis, lineup.quorum())
    }

    /// Checks every handover as [`Takeover::verify`] does, except the quorum (a takeover
    /// still gathering).
    pub fn verify_partial(
        &self,
        lineup: &Lineup,
        address: &Address,
        genesis: &[u8; 32],
    ) -> Result<(), TakeoverError> {
        self.verify_with(lineup, address, genesis, 1).map(|_| ())
    }

    fn verify_with(
        &self,
        lineup: &Lineup,
        address: &Address,
        genesis: &[u8; 32],
        quorum: usize,
    ) -> Result<Step, TakeoverError> {
        let first = self.handovers.first().ok_or(TakeoverError::TooFewSigners {
            have: 0,
            need: quorum,
        })?;
        let (from, retiree) = (first.body.from, first.body.retiree);
        let holders = lineup.holders(from);
        if !holders.contains(&retiree) {
            return Err(TakeoverError::NotAHolder(retiree));
        }
        let mut signers: Vec<PublicKey> = Vec::new();
        let mut reports: BTreeMap<(u8, u16), Vec<PublicKey>> = BTreeMap::new();
        for h in self.handovers.iter() {
            h.verify(address, genesis)?;
            if h.body.from != from || h.body.retiree != retiree {
                return Err(TakeoverError::Mixed);
            }
            let signer = h.body.signer;
            if signer == retiree || !holders.contains(&signer) {
                return Err(TakeoverError::NotAHolder(signer));
            }
            if signers.contains(&signer) {
                return Err(TakeoverError::Duplicate(signer));
            }
            signers.push(signer);
            for p in h.body.pledges.iter() {
                let claimants = reports.entry((p.slot, p.epoch)).or_default();
                if !claimants.contains(&p.recipient) {
                    claimants.push(p.recipient);
                }
            }
        }
        if signers.len() < quorum {
            return Err(TakeoverError::TooFewSigners {
                have: signers.len(),
                need: quorum,
            });
        }
        let position = lineup
            .position(&retiree)
            .ok_or(TakeoverError::NotAHolder(retiree))?;
        let to = from.with(position);
        let standby = lineup
            .holders(to)
            .into_iter()
            .find(|n| !holders.contains(n));
        let inherited = reports;
        Ok(Step {
            from,
            to,
            retiree,
            standby,
            inherited,
        })
    }
}

/// An honest member's place in one mailbox's lineup: the retirements it has adopted,
/// whether it has handed over from them, and what it pledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seat {
    retired: Retired,
    handed_over: bool,
    /// The claimants each (slot, epoch) was granted to or reported for; more than one
    /// blocks the slot here, and every one is reported on.
    pledges: BTreeMap<(u8, u16), Vec<PublicKey>>,
}

impl Seat {
    /// A seat under the genesis's own replica set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The retirements this member has adopted (what its receipts name).
    pub fn retired(&self) -> Retired {
        self.retired
    }

    /// Whether this member may give `slot` of `epoch` to `recipient` (nothing else
    /// pledged there).
    pub fn allows(&self, slot: u8, epoch: u16, recipient: &PublicKey) -> bool {
        self.pledges
            .get(&(slot, epoch))
            .is_none_or(|c| c.iter().all(|r| r == recipient))
    }

    /// The slot of `epoch` this member is pledged to give `recipient` alone, if any (a
    /// standby inherits such pledges).
    pub fn pledged_slot(&self, epoch: u16, recipient: &PublicKey) -> Option<u8> {
        self.pledges
            .iter()
            .find(|((_, e), c)| *e == epoch && c[..] == [*recipient])
            .map(|((slot, _), _)| *slot)
    }

    /// Grants `slot` of `epoch` to `recipient` if this member may: it holds the mailbox
    /// under its retirements, has not handed over from them, and the slot is free or
    /// already this claimant's. Returns the retirements the receipt names.
    pub fn grant(
        &mut self,
        lineup: &Lineup,
        me: &PublicKey,
        slot: u8,
        epoch: u16,
        recipient: PublicKey,
    ) -> Result<Retired, TakeoverError> {
        if !lineup.holds(self.retired, me) {
            return Err(TakeoverError::NotAHolder(*me));
        }
        if self.handed_over {
            return Err(TakeoverError::HandedOver);
        }
        let claimants = self.pledges.entry((slot, epoch)).or_default();
        match claimants[..] {
            [] => claimants.push(recipient),
            [only] if only == recipient => {}
            _ => return Err(TakeoverError::Pledged),
        }
        Ok(self.retired)
    }

    /// Signs this member's handover retiring `retiree` from its current retirements. Once
    /// signed, the member grants nothing more until it adopts the takeover.
    pub fn hand_over(
        &mut self,
        lineup: &Lineup,
        key: &SigningKey,
        retiree: &PublicKey,
        address: Address,
        genesis: [u8; 32],
    ) -> Result<Handover, TakeoverError> {
        let me = key.public_key();
        if !lineup.holds(self.retired, &me) || me == *retiree {
            return Err(TakeoverError::NotAHolder(me));
        }
        if !lineup.holds(self.retired, retiree) {
            return Err(TakeoverError::NotAHolder(*retiree));
        }
        if self.handed_over {
            return Err(TakeoverError::HandedOver);
        }
        // Every claimant, a blocked slot's too: a successor must block it as well.
        let pledges: Vec<Pledge> = self
            .pledges
            .iter()
            .flat_map(|(&(slot, epoch), claimants)| {
                claimants.iter().map(move |&recipient| Pledge {
                    slot,
                    epoch,
                    recipient,
                })
            })
            .collect();
        let body = HandoverBody {
            version: FORMAT_VERSION,
            address,
            genesis,
            from: self.retired,
            retiree: *retiree,
            signer: me,
            pledges: BoundedVec::new(pledges).ok_or(TakeoverError::TooLarge)?,
        };
        let signature = sign_body(key, SignatureKind::Handover, &body);
        self.handed_over = true;
        Ok(Handover { body, signature })
    }

    /// Adopts a checked takeover that follows this member's retirements. The standby it
    /// brings in takes the reported pledges (a slot reported for two claimants is blocked).
    pub fn adopt(
        &mut self,
        lineup: &Lineup,
        me: &PublicKey,
        takeover: &Takeover,
        address: &Address,
        genesis: &[u8; 32],
    ) -> Result<Step, TakeoverError> {
        let step = takeover.verify(lineup, address, genesis)?;
        self.take(me, &step)?;
        Ok(step)
    }

    fn take(&mut self, me: &PublicKey, step: &Step) -> Result<(), TakeoverError> {
        if step.from != self.retired {
            return Err(TakeoverError::NotNext);
        }
        if step.standby.as_ref() == Some(me) {
            for (k, reported) in &step.inherited {
                let claimants = self.pledges.entry(*k).or_default();
                for r in reported {
                    if !claimants.contains(r) {
                        claimants.push(*r);
                    }
                }
            }
        }
        self.retired = step.to;
        self.handed_over = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;

    const ADDRESS: Address = Address([7; 32]);
    const GENESIS: [u8; 32] = [9; 32];

    fn keys(n: usize) -> Vec<SigningKey> {
        (0..n)
            .map(|i| SigningKey::from_seed(&[u8::try_from(i).unwrap() + 1; 32]))
            .collect()
    }

    fn lineup(keys: &[SigningKey], r: usize, f: u8) -> Lineup {
        let public: Vec<PublicKey> = keys.iter().map(SigningKey::public_key).collect();
        Lineup::new(&public[..r], &public[r..], f).unwrap()
    }

    #[test]
    fn holders_skip_the_retired_and_take_standbys_in_order() {
        let k = keys(8);
        let l = lineup(&k, 5, 1);
        let p: Vec<PublicKey> = k.iter().map(SigningKey::public_key).collect();
        assert_eq!(l.holders(Retired::NONE), p[..5]);
        assert_eq!(
            l.holders(Retired::NONE.with(1)),
            [p[0], p[2], p[3], p[4], p[5]]
        );
        let all_gone = (0..7).fold(Retired::NONE, Retired::with);
        assert_eq!(l.holders(all_gone), [p[7]]);
        assert!(Lineup::new(&p[..5], &[p[0]], 1).is_err(), "a node twice");
        assert!(
            Lineup::new(&p[..5], &[], 2).is_err(),
            "f too high for R = 5"
        );
    }

    /// Four of five holders hand over the fifth: the takeover checks and brings in the
    /// first standby with the slot they report.
    #[test]
    fn a_quorum_of_handovers_retires_a_holder_and_the_standby_inherits() {
        let k = keys(7);
        let l = lineup(&k, 5, 1);
        let (claimant, retiree) = (k[6].public_key(), k[4].public_key());
        let mut seats: Vec<Seat> = (0..7).map(|_| Seat::new()).collect();
        for (i, seat) in seats.iter_mut().enumerate().take(4) {
            seat.grant(&l, &k[i].public_key(), 0, 0, claimant).unwrap();
        }
        let handovers: Vec<Handover> = (0..4)
            .map(|i| {
                seats[i]
                    .hand_over(&l, &k[i], &retiree, ADDRESS, GENESIS)
                    .unwrap()
            })
            .collect();
        // Handed over: no more grants under the old retirements.
        assert_eq!(
            seats[0].grant(&l, &k[0].public_key(), 1, 0, claimant),
            Err(TakeoverError::HandedOver)
        );
        let t = Takeover::assemble(handovers.clone()).unwrap();
        let step = t.verify(&l, &ADDRESS, &GENESIS).unwrap();
        assert_eq!(step.standby, Some(k[5].public_key()));
        assert_eq!(step.inherited.get(&(0, 0)), Some(&vec![claimant]));
        let standby = k[5].public_key();
        seats[5]
            .adopt(&l, &standby, &t, &ADDRESS, &GENESIS)
            .unwrap();
        assert_eq!(seats[5].retired(), step.to);
        // The standby holds the mailbox now and is pledged: the slot is the claimant's.
        assert_eq!(
            seats[5].grant(&l, &standby, 0, 0, k[0].public_key()),
            Err(TakeoverError::Pledged)
        );
        assert_eq!(seats[5].grant(&l, &standby, 0, 0, claimant), Ok(step.to));
        // The retired member is no holder; a second adoption is not the next step.
        assert!(!l.holds(step.to, &retiree));
        assert_eq!(
            seats[5].adopt(&l, &standby, &t, &ADDRESS, &GENESIS),
            Err(TakeoverError::NotNext)
        );
    }

    #[test]
    fn takeovers_that_lie_are_refused() {
        let k = keys(8);
        let l = lineup(&k, 5, 1);
        let retiree = k[4].public_key();
        let sign = |i: usize, from: Retired, retiree: PublicKey| {
            let body = HandoverBody {
                version: FORMAT_VERSION,
                address: ADDRESS,
                genesis: GENESIS,
                from,
                retiree,
                signer: k[i].public_key(),
                pledges: BoundedVec::new(Vec::new()).unwrap(),
            };
            let signature = sign_body(&k[i], SignatureKind::Handover, &body);
            Handover { body, signature }
        };
        let verify = |hs: Vec<Handover>| {
            Takeover::assemble(hs)
                .unwrap()
                .verify(&l, &ADDRESS, &GENESIS)
        };
        // One short of a quorum: a liar and two others cannot retire anyone.
        assert_eq!(
            verify((0..3).map(|i| sign(i, Retired::NONE, retiree)).collect()),
            Err(TakeoverError::TooFewSigners { have: 3, need: 4 })
        );
        // The same signer twice does not count twice.
        let mut twice: Vec<Handover> = (0..3).map(|i| sign(i, Retired::NONE, retiree)).collect();
        twice.push(sign(0, Retired::NONE, retiree));
        assert_eq!(
            verify(twice),
            Err(TakeoverError::Duplicate(k[0].public_key()))
        );
        // A standby (not yet a holder) cannot sign, nor can the retiree.
        let mut outsider: Vec<Handover> = (0..3).map(|i| sign(i, Retired::NONE, retiree)).collect();
        outsider.push(sign(6, Retired::NONE, retiree));
        assert_eq!(
            verify(outsider),
            Err(TakeoverError::NotAHolder(k[6].public_key()))
        );
        let mut own: Vec<Handover> = (0..4).map(|i| sign(i, Retired::NONE, retiree)).collect();
        own[3] = sign(4, Retired::NONE, retiree);
        assert_eq!(verify(own), Err(TakeoverError::NotAHolder(retiree)));
        // A standby cannot be "retired" to let the next one in.
        assert_eq!(
            verify(
                (0..4)
                    .map(|i| sign(i, Retired::NONE, k[6].public_key()))
                    .collect()
            ),
            Err(TakeoverError::NotAHolder(k[6].public_key()))
        );
        // Handovers retiring different holders do not mix.
        let mut mixed: Vec<Handover> = (0..3).map(|i| sign(i, Retired::NONE, retiree)).collect();
        mixed.push(sign(3, Retired::NONE, k[2].public_key()));
        assert_eq!(verify(mixed), Err(TakeoverError::Mixed));
        // A forged signature, and a handover of another mailbox.
        let mut forged: Vec<Handover> = (0..4).map(|i| sign(i, Retired::NONE, retiree)).collect();
        forged[3].body.pledges = BoundedVec::new(vec![Pledge {
            slot: 0,
            epoch: 0,
            recipient: k[7].public_key(),
        }])
        .unwrap();
        assert_eq!(verify(forged), Err(TakeoverError::BadSignature));
        let mut elsewhere: Vec<Handover> =
            (0..4).map(|i| sign(i, Retired::NONE, retiree)).collect();
        elsewhere[0].body.genesis = [1; 32];
        assert_eq!(verify(elsewhere), Err(TakeoverError::WrongMailbox));
        // The honest path checks.
        assert!(verify((0..4).map(|i| sign(i, Retired::NONE, retiree)).collect()).is_ok());
    }

    /// The model check of the takeover argument. A lineup of R replicas and S standbys,
    /// up to `f` liars anywhere in it, two claimants racing for one slot, and a random
    /// schedule of grants, departures, handovers and adoptions. Honest members follow
    /// [`Seat`]; liars grant both claimants under every retirement, sign handovers for
    /// anything with any pledges (or none), and the adversary assembles any takeover the
    /// handovers allow. At the end no two certificates (a quorum of receipts naming the
    /// same retirements, by holders under them) may name different claimants.
    struct Model {
        keys: Vec<SigningKey>,
        lineup: Lineup,
        liars: Vec<bool>,
        departed: Vec<bool>,
        seats: Vec<Seat>,
        /// (signer, retirements, claimant) receipts.
        receipts: Vec<(usize, Retired, usize)>,
        handovers: Vec<Handover>,
        /// Takeovers assembled so far (valid under the quorum in force).
        takeovers: Vec<Takeover>,
        quorum: usize,
        standbys_inherit: bool,
    }

    impl Model {
        fn new(r: usize, s: usize, f: u8, liars: &[usize], quorum_slack: usize) -> Self {
            let keys = keys(r + s);
            let lineup = lineup(&keys, r, f);
            let quorum = lineup.quorum() - quorum_slack;
            let mut is_liar = vec![false; r + s];
            for &l in liars {
                is_liar[l] = true;
            }
            Self {
                seats: vec![Seat::new(); r + s],
                departed: vec![false; r + s],
                keys,
                lineup,
                liars: is_liar,
                receipts: Vec::new(),
                handovers: Vec::new(),
                takeovers: Vec::new(),
                quorum,
                standbys_inherit: true,
            }
        }

        fn claimant(&self, c: usize) -> PublicKey {
            // Claimants are keys outside the lineup.
            SigningKey::from_seed(&[200 + u8::try_from(c).unwrap(); 32]).public_key()
        }

        fn step(&mut self, rng: &mut ChaCha20Rng) {
            let n = self.keys.len();
            let who = rng.next_u32() as usize % n;
            match rng.next_u32() % 7 {
                // A claimant asks a member for the slot.
                0 | 1 => {
                    // The first claimant usually asks first; the second races it.
                    let c = usize::from(rng.next_u32().is_multiple_of(4));
                    if self.liars[who] {
                        // A liar grants both, under every retirements anyone has.
                        let mut masks: Vec<Retired> =
                            self.seats.iter().map(Seat::retired).collect();
                        masks.push(Retired::NONE);
                        for m in masks {
                            self.receipts.push((who, m, 0));
                            self.receipts.push((who, m, 1));
                        }
                    } else if !self.departed[who] {
                        let me = self.keys[who].public_key();
                        let claimant = self.claimant(c);
                        if let Ok(m) = self.seats[who].grant(&self.lineup, &me, 0, 0, claimant) {
                            self.receipts.push((who, m, c));
                        }
                    }
                }
                // A member leaves for good (liars stay to make trouble).
                2 if rng.next_u32().is_multiple_of(3) => {
                    // At most as many leave as there are standbys.
                    let gone = self.departed.iter().filter(|d| **d).count();
                    if !self.liars[who] && gone < n - self.lineup.replicas() {
                        self.departed[who] = true;
                    }
                }
                // A member hands over a departed holder (a liar: anyone, any pledges).
                3 => {
                    let retiree = rng.next_u32() as usize % n;
                    if self.liars[who] {
                        let masks: Vec<Retired> = self.seats.iter().map(Seat::retired).collect();
                        let from = masks[rng.next_u32() as usize % masks.len()];
                        let pledges = match rng.next_u32() % 3 {
                            0 => Vec::new(),
                            k => vec![Pledge {
                                slot: 0,
                                epoch: 0,
                                recipient: self.claimant(k as usize - 1),
                            }],
                        };
                        let body = HandoverBody {
                            version: FORMAT_VERSION,
                            address: ADDRESS,
                            genesis: GENESIS,
                            from,
                            retiree: self.keys[retiree].public_key(),
                            signer: self.keys[who].public_key(),
                            pledges: BoundedVec::new(pledges).unwrap(),
                        };
                        let signature = sign_body(&self.keys[who], SignatureKind::Handover, &body);
                        self.handovers.push(Handover { body, signature });
                    } else if !self.departed[who] {
                        // An honest member retires only a holder it cannot reach.
                        let gone: Vec<PublicKey> = self
                            .lineup
                            .holders(self.seats[who].retired())
                            .into_iter()
                            .filter(|h| self.lineup.position(h).is_some_and(|i| self.departed[i]))
                            .collect();
                        let Some(retiree) = gone.get(retiree % gone.len().max(1)).copied() else {
                            return;
                        };
                        let key = self.keys[who].clone();
                        if let Ok(h) = self.seats[who].hand_over(
                            &self.lineup,
                            &key,
                            &retiree,
                            ADDRESS,
                            GENESIS,
                        ) {
                            self.handovers.push(h);
                        }
                    }
                }
                // The adversary assembles a takeover from every group of handovers that
                // agree (sometimes leaving one out).
                4 => {
                    let mut groups: Vec<(Retired, PublicKey)> = self
                        .handovers
                        .iter()
                        .map(|h| (h.body.from, h.body.retiree))
                        .collect();
                    groups.sort_by_key(|(m, r)| (*m, r.0));
                    groups.dedup();
                    for (from, retiree) in groups {
                        let mut signers = Vec::new();
                        let mut chosen = Vec::new();
                        for h in &self.handovers {
                            if h.body.from == from
                                && h.body.retiree == retiree
                                && !signers.contains(&h.body.signer)
                                && !rng.next_u32().is_multiple_of(8)
                            {
                                signers.push(h.body.signer);
                                chosen.push(h.clone());
                            }
                        }
                        let t = Takeover::assemble(chosen).unwrap();
                        if t.verify_with(&self.lineup, &ADDRESS, &GENESIS, self.quorum)
                            .is_ok()
                            && !self.takeovers.contains(&t)
                        {
                            self.takeovers.push(t);
                        }
                    }
                }
                // A member learns of takeovers and adopts the next ones, in order.
                _ => {
                    if self.liars[who] || self.departed[who] {
                        return;
                    }
                    let me = self.keys[who].public_key();
                    let mut order: Vec<usize> = (0..self.takeovers.len()).collect();
                    // The adversary decides which of two competing takeovers arrives first.
                    if rng.next_u32().is_multiple_of(2) {
                        order.reverse();
                    }
                    for i in order {
                        let Ok(mut step) = self.takeovers[i].verify_with(
                            &self.lineup,
                            &ADDRESS,
                            &GENESIS,
                            self.quorum,
                        ) else {
                            continue;
                        };
                        if !self.standbys_inherit {
                            step.inherited.clear();
                        }
                        let _ = self.seats[who].take(&me, &step);
                    }
                }
            }
        }

        /// The claimants that hold a certificate: a quorum of receipts naming the same
        /// retirements, by distinct holders under them.
        fn certified(&self) -> Vec<usize> {
            let mut out = Vec::new();
            for c in 0..2 {
                let mut masks: Vec<Retired> = self.receipts.iter().map(|r| r.1).collect();
                masks.sort();
                masks.dedup();
                for m in masks {
                    let holders = self.lineup.holders(m);
                    let mut signers: Vec<usize> = self
                        .receipts
                        .iter()
                        .filter(|r| r.1 == m && r.2 == c)
                        .map(|r| r.0)
                        .filter(|s| holders.contains(&self.keys[*s].public_key()))
                        .collect();
                    signers.sort_unstable();
                    signers.dedup();
                    if signers.len() >= self.lineup.quorum() && !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
            out
        }
    }

    /// Runs one schedule; returns whether it double-certified.
    fn double_certified(
        seed: u64,
        r: usize,
        s: usize,
        f: u8,
        quorum_slack: usize,
        inherit: bool,
    ) -> bool {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let n = r + s;
        let liars: Vec<usize> = (0..usize::from(f))
            .map(|_| rng.next_u32() as usize % n)
            .collect();
        let mut m = Model::new(r, s, f, &liars, quorum_slack);
        m.standbys_inherit = inherit;
        for _ in 0..240 {
            m.step(&mut rng);
        }
        m.certified().len() > 1
    }

    /// The schedules reach what the argument is about: takeovers adopted while a
    /// certificate stands.
    #[test]
    fn the_model_exercises_takeovers_and_certificates() {
        let mut both = 0;
        for seed in 0..200 {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut m = Model::new(5, 3, 1, &[0], 0);
            for _ in 0..240 {
                m.step(&mut rng);
            }
            let moved = m.seats.iter().any(|s| s.retired() != Retired::NONE);
            if moved && !m.certified().is_empty() {
                both += 1;
            }
        }
        assert!(
            both >= 10,
            "only {both} of 200 schedules had a takeover and a certificate"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        /// R = 5, f = 1 with three standbys, R = 3, f = 0 with two, and R = 9, f = 2
        /// with four (where two quorums overlap in exactly f + 1): no schedule certifies
        /// two claimants.
        #[test]
        fn takeovers_never_make_two_certificates(seed in any::<u64>()) {
            prop_assert!(!double_certified(seed, 5, 3, 1, 0, true));
            prop_assert!(!double_certified(seed, 3, 2, 0, 0, true));
            prop_assert!(!double_certified(seed, 9, 4, 2, 0, true));
        }
    }

    /// The model can find a double claim: with takeovers one handover short of a claim
    /// quorum, or standbys that forget what the handovers report, some schedule
    /// certifies both claimants.
    #[test]
    fn the_model_finds_double_claims_under_weaker_rules() {
        let short = (0..3000).any(|seed| double_certified(seed, 3, 2, 0, 1, true));
        assert!(short, "a takeover quorum one short must be breakable");
        let forgetful = (0..3000).any(|seed| double_certified(seed, 3, 2, 0, 0, false));
        assert!(forgetful, "standbys that inherit nothing must be breakable");
    }
}

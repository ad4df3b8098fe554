//! Anti-entropy, sans-IO: what one replica of a mailbox lacks of what another holds.
//!
//! Replicas compare 32-byte summaries ([`ReplicaDigest::summary`]) first and exchange
//! digests only where they differ ([`worth_comparing`]). [`lacking`] then says which
//! records to copy, and [`Lacking::requests`] gives them as replica requests in an order
//! the receiving state machine accepts: genesis, contest, certificates, resolve,
//! relinquishes, messages, delete. Messages are named by key: the caller fetches their bytes from the
//! side that has them ([`Lacking::message_batches`]). Every copied record passes the
//! receiver's own checks, so a peer can offer nothing that a client could not.

use crate::mailbox::MessageKey;
use crate::rpc::{MAX_FETCH, ReplicaDigest, ReplicaRequest};
use crate::wire::BoundedVec;

/// Whether a mailbox must be compared in full with a peer, from the summaries: this
/// replica holds it and the peer's summary differs (or the peer holds nothing).
pub fn worth_comparing(mine: Option<[u8; 32]>, theirs: Option<[u8; 32]>) -> bool {
    mine.is_some() && mine != theirs
}

/// Whether the holder of `have` should take records from `from`: only records of the same
/// genesis (a different genesis for the address is a conflict nothing resolves).
pub fn same_mailbox(have: &ReplicaDigest, from: &ReplicaDigest) -> bool {
    have.genesis == from.genesis
}

/// What the holder of one digest lacks of another.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lacking {
    /// Everything, starting with the genesis (the holder has no such mailbox).
    pub genesis: Option<crate::record::Genesis>,
    /// The evidence of a contest the holder has not seen (it goes before a resolve).
    pub contest: Option<BoundedVec<crate::record::Receipt, { crate::rpc::MAX_EVIDENCE }>>,
    /// Certificates to store.
    pub certificates: Vec<crate::record::ClaimCertificate>,
    /// The resolve to apply.
    pub resolve: Option<crate::record::Resolve>,
    /// Relinquishes to apply.
    pub relinquishes: Vec<crate::record::Relinquish>,
    /// Keys of the messages to copy.
    pub messages: Vec<MessageKey>,
    /// The delete to apply.
    pub delete: Option<crate::record::Delete>,
    /// The other side's takeover chain, when it has adopted takeovers this side lacks.
    pub takeovers: Option<(crate::record::Genesis, Vec<crate::takeover::Takeover>)>,
}

impl Lacking {
    /// Whether nothing is lacking.
    pub fn is_empty(&self) -> bool {
        *self == Lacking::default()
    }

    /// The requests that copy everything but the messages, split around them: the first
    /// list goes before the messages, the second (the delete) after.
    pub fn requests(&self) -> (Vec<ReplicaRequest>, Vec<ReplicaRequest>) {
        let mut before = Vec::new();
        // A mailbox that went through takeovers reaches a new holder with its chain (a
        // standby is not in the genesis's replica set); otherwise the genesis alone.
        if let Some((genesis, chain)) = &self.takeovers {
            before.push(ReplicaRequest::Takeover {
                genesis: genesis.clone(),
                takeovers: BoundedVec::truncated(chain.clone()),
            });
        } else if let Some(genesis) = &self.genesis {
            before.push(ReplicaRequest::StoreGenesis {
                genesis: genesis.clone(),
            });
        }
        if let Some(evidence) = &self.contest {
            before.push(ReplicaRequest::MarkContested {
                address: evidence_address(evidence),
                evidence: evidence.clone(),
            });
        }
        for certificate in &self.certificates {
            before.push(ReplicaRequest::StoreCertificate {
                certificate: certificate.clone(),
            });
        }
        if let Some(resolve) = &self.resolve {
            before.push(ReplicaRequest::Resolve {
                resolve: resolve.clone(),
            });
        }
        for relinquish in &self.relinquishes {
            before.push(ReplicaRequest::Relinquish {
                relinquish: relinquish.clone(),
            });
        }
        let after = self
            .delete
            .iter()
            .map(|delete| ReplicaRequest::Delete {
                delete: delete.clone(),
            })
            .collect();
        (before, after)
    }

    /// The message keys to fetch from the source, in batches of one request each.
    pub fn message_batches(&self) -> Vec<BoundedVec<MessageKey, MAX_FETCH>> {
        self.messages
            .chunks(MAX_FETCH)
            .map(|c| BoundedVec::truncated(c.to_vec()))
            .collect()
    }
}

fn evidence_address(evidence: &[crate::record::Receipt]) -> crate::id::Address {
    evidence
        .first()
        .map_or(crate::id::Address([0; 32]), |r| r.body.address)
}

/// What the holder of `have` (`None`: it has no such mailbox) lacks of `from`. A holder
/// of another genesis for the address lacks nothing (see [`same_mailbox`]).
pub fn lacking(have: Option<&ReplicaDigest>, from: &ReplicaDigest) -> Lacking {
    let empty;
    let (have, genesis) = match have {
        Some(h) if !same_mailbox(h, from) => return Lacking::default(),
        Some(h) => (h, None),
        None => {
            empty = ReplicaDigest {
                genesis: from.genesis.clone(),
                certificates: BoundedVec::default(),
                resolve: None,
                delete: None,
                relinquished: BoundedVec::default(),
                messages: BoundedVec::default(),
                contest: BoundedVec::default(),
                takeovers: BoundedVec::default(),
            };
            (&empty, Some(from.genesis.clone()))
        }
    };
    Lacking {
        genesis,
        contest: if have.contest.is_empty() && !from.contest.is_empty() {
            Some(from.contest.clone())
        } else {
            None
        },
        certificates: from
            .certificates
            .iter()
            .filter(|c| !have.certificates.contains(c))
            .cloned()
            .collect(),
        resolve: if have.resolve.is_none() {
            from.resolve.clone()
        } else {
            None
        },
        relinquishes: from
            .relinquished
            .iter()
            .filter(|r| !have.relinquished.contains(r))
            .cloned()
            .collect(),
        messages: if have.delete.is_some() {
            Vec::new()
        } else {
            from.messages
                .iter()
                .filter(|k| !have.messages.contains(k))
                .copied()
                .collect()
        },
        delete: if have.delete.is_none() {
            from.delete.clone()
        } else {
            None
        },
        takeovers: if from.takeovers.len() > have.takeovers.len() {
            Some((from.genesis.clone(), from.takeovers.to_vec()))
        } else {
            None
        },
    }
}

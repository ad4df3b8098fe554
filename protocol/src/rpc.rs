//! The wire formats of the two request-response protocols, and their framing.
//!
//! `/tigress/client/1` is what a client speaks to any node (its *entry* node);
//! `/tigress/replica/1` is what an entry node speaks to the replicas of a mailbox. Both
//! carry the records of [`crate::record`]; a frame is a 4-byte big-endian length followed by
//! the canonical encoding, and the length is checked against [`MAX_FRAME`] before anything
//! is read or allocated.

use serde::{Deserialize, Serialize};

use crate::crypto::PublicKey;
use crate::error::ErrorCode;
use crate::id::Address;
use crate::mailbox::{MailboxStatus, MessageKey, PublicStatus};
use crate::oblivious::{GatewayKeys, KnownNode, MAX_NODES, MAX_SEALED};
use crate::record::{
    Ack, Claim, ClaimCertificate, Delete, Equivocation, Genesis, MAX_REPLICAS, Message,
    ReadRequest, Receipt, Relinquish, Resolve,
};
use crate::takeover::{Handover, MAX_CHAIN, MAX_STANDBYS, Takeover};
use crate::wire::{self, BoundedBytes, BoundedString, BoundedVec, DecodeError};

/// The client protocol name.
pub const CLIENT_PROTOCOL: &str = "/tigress/client/1";
/// The replica protocol name.
pub const REPLICA_PROTOCOL: &str = "/tigress/replica/1";
/// The largest frame body accepted (a fetch answer of several full messages fits).
pub const MAX_FRAME: usize = 1024 * 1024;
/// The most messages in one fetch answer.
pub const MAX_FETCH: usize = 64;
/// The most receipts offered as evidence of a contest.
pub const MAX_EVIDENCE: usize = 256;
/// The longest long-poll wait a node honours, in milliseconds.
pub const MAX_WAIT_MS: u32 = 120_000;

/// Where a reader stands: for each author, the next sequence number it expects.
pub type Cursor = BoundedVec<(PublicKey, u64), 17>;

/// A refusal carried over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The class.
    pub code: ErrorCode,
    /// A one-line human message.
    pub message: BoundedString<512>,
}

impl RemoteError {
    /// An error of class `code` with `message` (cut to 512 bytes).
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > 512 {
            let mut cut = 512;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Self {
            code,
            message: BoundedString::new(message).unwrap_or_default(),
        }
    }
}

impl From<&crate::Error> for RemoteError {
    fn from(e: &crate::Error) -> Self {
        RemoteError::new(e.code(), e.to_string())
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message.as_str())
    }
}

impl std::error::Error for RemoteError {}

/// What a node tells clients about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's key (its libp2p identity).
    pub node_key: PublicKey,
    /// The base of share URLs made through this node (its HTTP gateway).
    pub public_url: BoundedString<512>,
    /// The network's replication factor.
    pub replication: u8,
    /// The network's maximum mailbox lifetime.
    pub max_ttl_secs: u64,
    /// The proof of work this node asks for a new mailbox now, in leading zero bits
    /// ([`crate::admission`]; 0 while it is not under pressure).
    pub admission_bits: u8,
}

/// What a party reads about its mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxView {
    /// The genesis.
    pub genesis: Genesis,
    /// The status.
    pub status: MailboxStatus,
    /// The certificates known.
    pub certificates: BoundedVec<ClaimCertificate, 16>,
    /// The claims granted so far (what a sender resolves a contest with).
    pub claims: BoundedVec<Claim, 64>,
    /// The sender's resolve, if any.
    pub resolve: Option<Resolve>,
    /// The relinquishes applied: the certificates of these recipients no longer hold a
    /// slot.
    pub relinquished: BoundedVec<Relinquish, 64>,
}

/// The signed record an entry node shows a replica to be given a mailbox's genesis: the
/// request in hand, which names the genesis (or, for an invitee's open, its claim key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Access {
    /// A read request (open, view or fetch).
    Read(ReadRequest),
    /// A claim.
    Claim(Claim),
    /// A message.
    Message(Message),
    /// A delete.
    Delete(Delete),
    /// A relinquish.
    Relinquish(Relinquish),
    /// A resolve.
    Resolve(Resolve),
}

impl Access {
    /// The address the record is for.
    pub fn address(&self) -> Address {
        match self {
            Access::Read(r) => r.body.address,
            Access::Claim(c) => c.body.address,
            Access::Message(m) => m.header().address,
            Access::Delete(d) => d.body.address,
            Access::Relinquish(r) => r.body.address,
            Access::Resolve(r) => r.body.address,
        }
    }

    /// The digest of the genesis the record names; `None` for an invitee's open, which
    /// names none (it is signed by the claim key instead).
    pub fn named_genesis(&self) -> Option<[u8; 32]> {
        use crate::record::UNKNOWN_GENESIS;
        let named = match self {
            Access::Read(r) => r.body.genesis,
            Access::Claim(c) => c.body.genesis,
            Access::Message(m) => m.header().genesis,
            Access::Delete(d) => d.body.genesis,
            Access::Relinquish(r) => r.body.genesis,
            Access::Resolve(r) => r.body.genesis,
        };
        (named != UNKNOWN_GENESIS).then_some(named)
    }

    /// Whether `genesis` is the one the record is for: the digest it names, or for an
    /// invitee's open (which names none), the claim key it is signed with. A genesis is
    /// co-signed by its claim key, so no node can forge one that fits another's request.
    pub fn fits(&self, genesis: &Genesis) -> bool {
        use crate::record::Record;
        self.fits_with(genesis, || genesis.digest())
    }

    /// As [`Access::fits`], for a caller that knows `genesis`'s digest (`digest` must be
    /// `genesis.digest()`).
    pub fn fits_digested(&self, genesis: &Genesis, digest: &[u8; 32]) -> bool {
        self.fits_with(genesis, || *digest)
    }

    fn fits_with(&self, genesis: &Genesis, digest: impl FnOnce() -> [u8; 32]) -> bool {
        use crate::record::Record;
        if self.address() != genesis.header().address {
            return false;
        }
        match (self.named_genesis(), self) {
            (Some(named), _) => named == digest(),
            (None, Access::Read(r)) => {
                r.body.by == genesis.header().claim_key
                    && genesis.check_shape().is_ok()
                    && genesis.verify_signature().is_ok()
            }
            (None, _) => false,
        }
    }
}

/// A request from a client to its entry node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum ClientRequest {
    /// The node's [`NodeInfo`].
    Info,
    /// The replica set a new mailbox at `address` should name.
    Locate {
        /// The address.
        address: Address,
    },
    /// Store a genesis on its replicas.
    Create {
        /// The genesis.
        genesis: Genesis,
        /// The proof of work for the genesis digest (see [`crate::admission`]); 0 when
        /// the node asks none.
        admission: u64,
    },
    /// The genesis, to a party or to an invitee signing with the claim key.
    Open {
        /// The signed request.
        request: ReadRequest,
    },
    /// Claim the mailbox; answered with the certificate.
    Claim {
        /// The claim.
        claim: Claim,
    },
    /// The party's view of its mailbox.
    Read {
        /// The signed request.
        request: ReadRequest,
    },
    /// Store a message.
    Send {
        /// The message.
        message: Message,
    },
    /// Messages addressed to the reader after `cursor`, waiting up to `wait_ms` for one.
    /// When the reader names itself in the cursor, its own messages after that number
    /// come too (a device resuming its outgoing sequence).
    Fetch {
        /// The signed request.
        request: ReadRequest,
        /// Where the reader stands.
        cursor: Cursor,
        /// How long to wait for a first message (long-poll).
        wait_ms: u32,
    },
    /// Delete the mailbox.
    Delete {
        /// The signed delete.
        delete: Delete,
    },
    /// Give a recipient slot back.
    Relinquish {
        /// The signed relinquish.
        relinquish: Relinquish,
    },
    /// Settle a contest.
    Resolve {
        /// The signed resolve.
        resolve: Resolve,
    },
    /// The public status of a mailbox (no keys, no message counts).
    Status {
        /// The address.
        address: Address,
    },
    /// Reports a replica proven to lie: the node stops placing mailboxes on it and asking
    /// it.
    Report {
        /// The two conflicting receipts.
        proof: Equivocation,
    },
    /// The node's own key record for oblivious requests.
    Keys,
    /// The key record of `target`, fetched from it (signed by it: the asking node cannot
    /// substitute its own).
    KeysOf {
        /// The node.
        target: PublicKey,
    },
    /// The nodes this one knows, with their addresses (candidates for relays and targets).
    Nodes,
    /// Forwards a sealed request to `target` and answers with its sealed answer (this node
    /// is the relay: it learns neither the request nor the answer).
    Relay {
        /// The node that carries the request out.
        target: PublicKey,
        /// An Oblivious HTTP request (`message/ohttp-req`) sealed to the target's key.
        sealed: BoundedBytes<MAX_SEALED>,
    },
    /// A sealed request a relay forwards (this node is the target).
    Oblivious {
        /// An Oblivious HTTP request (`message/ohttp-req`) sealed to this node's key.
        sealed: BoundedBytes<MAX_SEALED>,
    },
}

/// A node's answer to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum ClientResponse {
    /// Node information.
    Info(NodeInfo),
    /// A create without enough proof of work: the node asks `bits` now.
    AdmissionRequired {
        /// The leading zero bits asked.
        bits: u8,
    },
    /// The replica set for a new mailbox.
    Located {
        /// Node keys, closest first.
        replicas: BoundedVec<PublicKey, MAX_REPLICAS>,
        /// The next nearest nodes, in order: the mailbox's standbys.
        standbys: BoundedVec<PublicKey, MAX_STANDBYS>,
    },
    /// A write was stored by a majority.
    Stored {
        /// Whether it was already there (an idempotent repeat).
        duplicate: bool,
        /// The signed acknowledgements of the replicas that stored it.
        acks: BoundedVec<Ack, MAX_REPLICAS>,
    },
    /// The genesis.
    Genesis(Genesis),
    /// The claim's certificate, stored by a majority.
    Certified {
        /// The certificate.
        certificate: ClaimCertificate,
        /// The signed acknowledgements of the replicas that stored it.
        acks: BoundedVec<Ack, MAX_REPLICAS>,
    },
    /// The party's view.
    View(MailboxView),
    /// Messages, in (author, sequence) order.
    Messages {
        /// The messages.
        messages: BoundedVec<Message, MAX_FETCH>,
    },
    /// The public status.
    Status(PublicStatus),
    /// A node's key record for oblivious requests.
    Keys(GatewayKeys),
    /// The nodes a relay knows.
    Nodes(BoundedVec<KnownNode, MAX_NODES>),
    /// The target's sealed answer (`message/ohttp-res`).
    Sealed(BoundedBytes<MAX_SEALED>),
    /// A refusal.
    Error(RemoteError),
}

impl ClientResponse {
    /// The answer's kind, for messages about an answer that does not fit its request.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientResponse::Info(_) => "info",
            ClientResponse::AdmissionRequired { .. } => "admission required",
            ClientResponse::Located { .. } => "located",
            ClientResponse::Stored { .. } => "stored",
            ClientResponse::Genesis(_) => "genesis",
            ClientResponse::Certified { .. } => "certified",
            ClientResponse::View(_) => "view",
            ClientResponse::Messages { .. } => "messages",
            ClientResponse::Status(_) => "status",
            ClientResponse::Keys(_) => "keys",
            ClientResponse::Nodes(_) => "nodes",
            ClientResponse::Sealed(_) => "sealed",
            ClientResponse::Error(_) => "error",
        }
    }
}

/// A request from an entry node to a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum ReplicaRequest {
    /// Store a genesis.
    StoreGenesis {
        /// The genesis.
        genesis: Genesis,
    },
    /// Grant a claim a slot.
    Grant {
        /// The claim.
        claim: Claim,
    },
    /// Store a certificate.
    StoreCertificate {
        /// The certificate.
        certificate: ClaimCertificate,
    },
    /// Mark the mailbox contested, with the receipts that show it.
    MarkContested {
        /// The address.
        address: Address,
        /// Receipts from the replicas.
        evidence: BoundedVec<Receipt, MAX_EVIDENCE>,
    },
    /// Store a message.
    StoreMessage {
        /// The message.
        message: Message,
    },
    /// Delete.
    Delete {
        /// The signed delete.
        delete: Delete,
    },
    /// Relinquish.
    Relinquish {
        /// The signed relinquish.
        relinquish: Relinquish,
    },
    /// Resolve.
    Resolve {
        /// The signed resolve.
        resolve: Resolve,
    },
    /// The genesis of a mailbox, for an entry node carrying a request signed for it
    /// (entry nodes learn the replica set from it).
    GetGenesis {
        /// The signed request in hand.
        access: Access,
    },
    /// The genesis, for a party or an invitee.
    Open {
        /// The signed request.
        request: ReadRequest,
    },
    /// A party's view.
    Read {
        /// The signed request.
        request: ReadRequest,
    },
    /// Messages for the reader after the cursor, waiting up to `wait_ms`.
    Fetch {
        /// The signed request.
        request: ReadRequest,
        /// Where the reader stands.
        cursor: Cursor,
        /// Long-poll wait.
        wait_ms: u32,
    },
    /// The public status.
    Status {
        /// The address.
        address: Address,
    },
    /// Everything this replica holds for the address, as digests (anti-entropy; only to
    /// the mailbox's other replicas).
    Digest {
        /// The address.
        address: Address,
    },
    /// The messages at these keys (anti-entropy).
    GetMessages {
        /// The address.
        address: Address,
        /// The keys wanted.
        keys: BoundedVec<MessageKey, MAX_FETCH>,
    },
    /// A 32-byte summary of what this replica holds for each address (anti-entropy: only
    /// mailboxes whose summaries differ are compared in full).
    Summaries {
        /// The addresses.
        addresses: BoundedVec<Address, MAX_SUMMARIES>,
    },
    /// A holder's handover retiring another holder (from the mailbox's holders only).
    Handover {
        /// The signed handover.
        handover: Handover,
    },
    /// The takeovers of a mailbox, in chain order: a replica behind adopts the ones it
    /// lacks, and a standby taking a place creates the mailbox from the genesis first.
    Takeover {
        /// The genesis (checked, and naming the receiver in its lineup).
        genesis: Genesis,
        /// The chain, from the genesis's own replica set.
        takeovers: BoundedVec<Takeover, MAX_CHAIN>,
    },
    /// The takeovers a replica adopted for a mailbox (where it lives now).
    Takeovers {
        /// The address.
        address: Address,
    },
    /// Signs this replica's handover retiring `retiree` (or returns the one it signed from
    /// its current retirements). Only the node itself may ask (its anti-entropy, once the
    /// retiree has been unreachable for the takeover time).
    SignHandover {
        /// The address.
        address: Address,
        /// The holder to retire.
        retiree: PublicKey,
    },
}

/// The most addresses in one summaries request.
pub const MAX_SUMMARIES: usize = 1024;

impl ReplicaDigest {
    /// A hash of the digest that does not depend on the order records were applied in:
    /// two replicas holding the same records have the same summary.
    pub fn summary(&self) -> [u8; 32] {
        use crate::record::Record;
        let mut certs: Vec<[u8; 32]> = self.certificates.iter().map(Record::digest).collect();
        certs.sort_unstable();
        let mut rels: Vec<[u8; 32]> = self.relinquished.iter().map(Record::digest).collect();
        rels.sort_unstable();
        let mut keys: Vec<MessageKey> = self.messages.to_vec();
        keys.sort_unstable();
        let parts = (
            self.genesis.digest(),
            certs,
            self.resolve.as_ref().map(Record::digest),
            self.delete.as_ref().map(Record::digest),
            rels,
            keys,
            !self.contest.is_empty(),
            self.takeovers.len(),
        );
        crate::crypto::sha256(&[b"tigress/v1/summary", &wire::encode(&parts)])
    }
}

impl ReplicaRequest {
    /// The bytes of records this request asks a replica to store (geneses and messages;
    /// the other records are small and bounded): what budgets of stored bytes count.
    pub fn stored_len(&self) -> usize {
        use crate::record::Record as _;
        match self {
            ReplicaRequest::StoreGenesis { genesis } | ReplicaRequest::Takeover { genesis, .. } => {
                genesis.to_bytes().len()
            }
            ReplicaRequest::StoreMessage { message } => message.to_bytes().len(),
            _ => 0,
        }
    }
}

/// What a replica holds for one mailbox, summarised for anti-entropy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDigest {
    /// The genesis.
    pub genesis: Genesis,
    /// Certificates held.
    pub certificates: BoundedVec<ClaimCertificate, 16>,
    /// The resolve, if any.
    pub resolve: Option<Resolve>,
    /// The delete, if the mailbox is a tombstone.
    pub delete: Option<Delete>,
    /// Relinquishes held.
    pub relinquished: BoundedVec<Relinquish, 64>,
    /// Keys of the messages held.
    pub messages: BoundedVec<MessageKey, 1024>,
    /// The evidence of a contest, if the mailbox was ever contested.
    pub contest: BoundedVec<Receipt, MAX_EVIDENCE>,
    /// The takeovers adopted, in chain order.
    pub takeovers: BoundedVec<Takeover, MAX_CHAIN>,
}

/// A replica's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum ReplicaResponse {
    /// The write is durable.
    Stored {
        /// Whether it was already there.
        duplicate: bool,
        /// The replica's signed acknowledgement.
        ack: Ack,
    },
    /// The claim's receipt.
    Granted(Receipt),
    /// The claim was refused; the replica's own grants are attached so the entry node can
    /// tell a lost race from a contest.
    Refused {
        /// Why.
        error: RemoteError,
        /// The replica's current grants.
        grants: BoundedVec<Receipt, 16>,
    },
    /// The genesis.
    Genesis(Genesis),
    /// A party's view.
    View(MailboxView),
    /// Messages.
    Messages {
        /// The messages.
        messages: BoundedVec<Message, MAX_FETCH>,
    },
    /// The public status.
    Status(PublicStatus),
    /// The anti-entropy digest.
    Digest(ReplicaDigest),
    /// The takeovers adopted, in chain order.
    Takeovers(BoundedVec<Takeover, MAX_CHAIN>),
    /// This replica's handover, and the takeover if it completed one.
    HandedOver {
        /// The handover to send to the other holders.
        handover: Handover,
        /// The takeover, once a claim quorum of handovers retired the holder.
        takeover: Option<Takeover>,
    },
    /// Summaries, in the order asked; `None` where the replica holds nothing.
    Summaries {
        /// One per address asked.
        summaries: BoundedVec<Option<[u8; 32]>, MAX_SUMMARIES>,
    },
    /// A refusal.
    Error(RemoteError),
}

/// Encodes `value` as a frame body (the caller writes the 4-byte length first); refuses a
/// body over [`MAX_FRAME`].
pub fn encode_body<T: Serialize>(value: &T) -> Result<Vec<u8>, DecodeError> {
    wire::encode_frame(value)
}

/// Decodes a frame body of at most [`MAX_FRAME`] bytes.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    wire::decode_with_limit(body, MAX_FRAME)
}

/// Checks a frame's 4-byte length prefix before the body is read.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        Err(DecodeError::TooLarge {
            len,
            max: MAX_FRAME,
        })
    } else {
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversize() {
        let req = ClientRequest::Status {
            address: Address([3; 32]),
        };
        let body = encode_body(&req).unwrap();
        assert_eq!(decode_body::<ClientRequest>(&body).unwrap(), req);
        assert!(decode_body::<ClientRequest>(&body[..body.len() - 1]).is_err());
        assert!(frame_len((MAX_FRAME as u32 + 1).to_be_bytes()).is_err());
        assert_eq!(frame_len(10u32.to_be_bytes()), Ok(10));
        assert!(decode_body::<ClientRequest>(&[0xff; 8]).is_err());
    }

    #[test]
    fn remote_errors_are_cut_on_a_char_boundary() {
        let e = RemoteError::new(ErrorCode::Conflict, "é".repeat(400));
        assert!(e.message.as_str().len() <= 512);
    }
}

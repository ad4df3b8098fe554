//! The signed records of a mailbox (DESIGN §4) and their canonical encoding.
//!
//! Every record is a body, which opens with the format version, plus its signature(s).
//! A signature covers `"tigress/v1/" || kind || 0x00 || canonical bytes of the body`.
//! [`Record::from_bytes`] is the one place where untrusted bytes become a record: the size
//! is checked before decoding, every length is bounded, versions are checked. Whether a
//! record is *valid for a mailbox* is decided by [`crate::mailbox`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};
use crate::crypto::hpke::MAX_HPKE_ENC;
use crate::crypto::pad::BUCKETS;
use crate::crypto::{self, HpkePublicKey, PublicKey, Signature, SignatureKind, SigningKey};
use crate::id::Address;
use crate::takeover::{Lineup, MAX_STANDBYS, Retired};
use crate::wire::{self, BoundedBytes, BoundedString, BoundedVec, FORMAT_VERSION, MAX_ENCODED};

/// The most replicas a genesis may name.
pub const MAX_REPLICAS: usize = 16;
/// The most recipients a policy may allow (the design's 1..=16).
pub const MAX_RECIPIENTS: u8 = 16;
/// The largest sealed payload or message ciphertext: the largest bucket plus a tag.
pub const MAX_SEALED: usize = 65536 + TAG_LEN;
/// The largest opaque device attestation.
pub const MAX_ATTESTATION: usize = 8192;
/// The largest display title.
pub const MAX_TITLE: usize = 256;
/// The largest display description.
pub const MAX_DESCRIPTION: usize = 2048;
/// The largest display image URL.
pub const MAX_IMAGE_URL: usize = 2048;

/// A record type with its canonical encoding.
pub trait Record: Serialize + DeserializeOwned + Sized {
    /// A short name for errors and logs.
    const NAME: &'static str;
    /// The largest encoding accepted.
    const MAX_BYTES: usize = MAX_ENCODED;

    /// The canonical bytes.
    fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes and checks the shape (versions, bounds, enumerations).
    fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let record: Self = wire::decode_versioned(bytes, Self::MAX_BYTES)?;
        record.check_shape()?;
        Ok(record)
    }

    /// Checks what the types alone do not: nested versions and value ranges.
    fn check_shape(&self) -> Result<(), Error>;

    /// SHA-256 of the canonical bytes: identifies this exact record.
    fn digest(&self) -> [u8; 32] {
        crypto::sha256(&[&self.to_bytes()])
    }
}

fn version(v: u8) -> Result<(), Error> {
    if v == FORMAT_VERSION {
        Ok(())
    } else {
        Err(Error::Decode(wire::DecodeError::UnsupportedVersion(v)))
    }
}

pub(crate) fn sign_body<B: Serialize>(
    key: &SigningKey,
    kind: SignatureKind,
    body: &B,
) -> Signature {
    key.sign(kind, &wire::encode(body))
}

pub(crate) fn verify_body<B: Serialize>(
    key: &PublicKey,
    kind: SignatureKind,
    body: &B,
    sig: &Signature,
) -> Result<(), Error> {
    key.verify(kind, &wire::encode(body), sig)
        .map_err(|_| Error::BadSignature(kind))
}

/// The draft's access rights: any of R (read), W (write), D (delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rights(u8);

impl Rights {
    /// Read.
    pub const READ: Rights = Rights(1);
    /// Write (send messages).
    pub const WRITE: Rights = Rights(2);
    /// Delete.
    pub const DELETE: Rights = Rights(4);
    /// Read, write and delete.
    pub const ALL: Rights = Rights(7);
    /// The draft's default: read and delete.
    pub const DRAFT_DEFAULT: Rights = Rights(5);

    /// Whether every right of `other` is included.
    pub fn allows(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The single letter of a single right, for error messages.
    pub fn name(self) -> char {
        self.letter()
    }

    fn letter(self) -> char {
        match self.0 {
            1 => 'R',
            2 => 'W',
            _ => 'D',
        }
    }
}

impl std::str::FromStr for Rights {
    type Err = Error;
    /// Parses a combination of `R`, `W`, `D` (any order, any case, no repeats).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = Error::InvalidField {
            field: "rights",
            reason: "a combination of R, W and D",
        };
        let mut bits = 0u8;
        for c in s.chars() {
            let bit = match c.to_ascii_uppercase() {
                'R' => 1,
                'W' => 2,
                'D' => 4,
                _ => return Err(bad),
            };
            if bits & bit != 0 {
                return Err(bad);
            }
            bits |= bit;
        }
        Ok(Rights(bits))
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (bit, c) in [(1, 'R'), (2, 'W'), (4, 'D')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// What the sender allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// How many recipients may claim (1..=16).
    pub max_recipients: u8,
    /// The sender's rights.
    pub sender_rights: Rights,
    /// Each recipient's rights.
    pub recipient_rights: Rights,
    /// How many messages the mailbox holds at most (both directions together).
    pub max_messages: u16,
}

impl Default for Policy {
    /// One recipient, everyone may read, write and delete, 64 messages.
    fn default() -> Self {
        Self {
            max_recipients: 1,
            sender_rights: Rights::ALL,
            recipient_rights: Rights::ALL,
            max_messages: 64,
        }
    }
}

/// The public display information (the draft's preview page), by the sender's choice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct DisplayInfo {
    /// The title.
    pub title: Option<BoundedString<MAX_TITLE>>,
    /// The description.
    pub description: Option<BoundedString<MAX_DESCRIPTION>>,
    /// An image URL.
    pub image_url: Option<BoundedString<MAX_IMAGE_URL>>,
}

/// The first payload, AEAD-sealed under the payload key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SealedPayload {
    /// The AEAD.
    pub algorithm: crypto::AeadAlgorithm,
    /// The 96-bit random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// `ciphertext || tag` of the padded plaintext.
    pub ciphertext: BoundedBytes<MAX_SEALED>,
}

/// Everything in a genesis except the payload; the payload's associated data binds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GenesisHeader {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// Creation time (unix seconds).
    pub created_at: u64,
    /// Expiry time (unix seconds).
    pub expires_at: u64,
    /// The sender's per-share signing key.
    pub sender: PublicKey,
    /// The sender's per-share HPKE key.
    pub sender_hpke: HpkePublicKey,
    /// The public half of the claim key derived from the invitation.
    pub claim_key: PublicKey,
    /// The replica set: node keys of the replicas that hold the mailbox first.
    pub replicas: BoundedVec<PublicKey, MAX_REPLICAS>,
    /// The standbys, in order: each takes the place of a replica that left for good, by a
    /// takeover (see [`crate::takeover`]).
    pub standbys: BoundedVec<PublicKey, MAX_STANDBYS>,
    /// How many replicas of the set may lie (`f`): a certificate needs
    /// [`GenesisHeader::claim_quorum`] receipts, so any two certificates share `f + 1`
    /// replicas. At most [`max_fault_tolerance`] of the set's size.
    pub fault_tolerance: u8,
    /// The sender's policy.
    pub policy: Policy,
    /// Public display information, when the sender chose to show it.
    pub display: Option<DisplayInfo>,
    /// An opaque device attestation.
    pub attestation: Option<BoundedBytes<MAX_ATTESTATION>>,
}

impl GenesisHeader {
    /// The associated data of the first payload: binds the address and this header.
    pub fn payload_aad(&self) -> Vec<u8> {
        let mut aad = b"tigress/v1/payload\0".to_vec();
        aad.extend_from_slice(&wire::encode(self));
        aad
    }

    /// The replicas, then the standbys (checked distinct by the genesis's shape).
    pub fn lineup(&self) -> Lineup {
        Lineup::new(&self.replicas, &self.standbys, self.fault_tolerance)
            .unwrap_or_else(|_| Lineup::unchecked(&self.replicas, self.fault_tolerance))
    }

    /// How many acknowledgements make a strict majority of the replica set (writes).
    pub fn majority(&self) -> usize {
        self.replicas.len() / 2 + 1
    }

    /// How many receipts for one slot make a certificate: `⌈(R + f + 1) / 2⌉`, so any two
    /// sets of that size share at least `f + 1` replicas, one of them honest.
    pub fn claim_quorum(&self) -> usize {
        claim_quorum(self.replicas.len(), self.fault_tolerance)
    }
}

/// The default and highest number of lying replicas a set of `r` tolerates:
/// `⌊(r − 1) / 4⌋` (R = 1..4: 0; R = 5..8: 1; R = 9..12: 2; R = 13..16: 3). Higher would
/// leave claims no replica to spare.
pub fn max_fault_tolerance(r: usize) -> u8 {
    u8::try_from(r.saturating_sub(1) / 4).unwrap_or(u8::MAX)
}

/// `⌈(r + f + 1) / 2⌉`: receipts for one slot that make a certificate.
pub fn claim_quorum(r: usize, f: u8) -> usize {
    (r + usize::from(f) + 1).div_ceil(2)
}

/// The signed part of a genesis.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GenesisBody {
    /// The header.
    pub header: GenesisHeader,
    /// The first payload.
    pub payload: SealedPayload,
}

/// Creates a mailbox. Signed by the sender's device key and by the invitation's claim
/// key: a genesis that names a claim key was made by someone holding the invitation, so a
/// node cannot forge one that an invitee's signed requests fit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Genesis {
    /// The body.
    pub body: GenesisBody,
    /// The sender's signature.
    pub signature: Signature,
    /// The claim key's signature.
    pub claim_signature: Signature,
}

impl Genesis {
    /// Signs `body` with the sender's key and the claim key.
    pub fn sign(body: GenesisBody, sender: &SigningKey, claim_key: &SigningKey) -> Self {
        let signature = sign_body(sender, SignatureKind::Genesis, &body);
        let claim_signature = sign_body(claim_key, SignatureKind::GenesisClaim, &body);
        Self {
            body,
            signature,
            claim_signature,
        }
    }

    /// The header.
    pub fn header(&self) -> &GenesisHeader {
        &self.body.header
    }

    /// Checks the sender's and the claim key's signatures.
    pub fn verify_signature(&self) -> Result<(), Error> {
        verify_body(
            &self.body.header.sender,
            SignatureKind::Genesis,
            &self.body,
            &self.signature,
        )?;
        verify_body(
            &self.body.header.claim_key,
            SignatureKind::GenesisClaim,
            &self.body,
            &self.claim_signature,
        )
    }
}

impl Record for Genesis {
    const NAME: &'static str = "genesis";
    fn check_shape(&self) -> Result<(), Error> {
        let h = &self.body.header;
        version(h.version)?;
        if h.replicas.is_empty() {
            return Err(Error::InvalidField {
                field: "replicas",
                reason: "at least one replica",
            });
        }
        let mut sorted = h.replicas.to_vec();
        sorted.extend(h.standbys.iter().copied());
        sorted.sort();
        sorted.dedup();
        if sorted.len() != h.replicas.len() + h.standbys.len() {
            return Err(Error::InvalidField {
                field: "replicas",
                reason: "replicas and standbys must be distinct",
            });
        }
        if h.fault_tolerance > max_fault_tolerance(h.replicas.len()) {
            return Err(Error::InvalidField {
                field: "fault_tolerance",
                reason: "at most (replicas - 1) / 4",
            });
        }
        if !(1..=MAX_RECIPIENTS).contains(&h.policy.max_recipients) {
            return Err(Error::InvalidField {
                field: "max_recipients",
                reason: "between 1 and 16",
            });
        }
        if h.policy.max_messages == 0 {
            return Err(Error::InvalidField {
                field: "max_messages",
                reason: "at least 1",
            });
        }
        if !Rights::ALL.allows(h.policy.sender_rights)
            || !Rights::ALL.allows(h.policy.recipient_rights)
        {
            return Err(Error::InvalidField {
                field: "rights",
                reason: "unknown right bits",
            });
        }
        let sealed = self.body.payload.ciphertext.len();
        if !BUCKETS.iter().any(|b| b + TAG_LEN == sealed) {
            return Err(Error::InvalidField {
                field: "payload",
                reason: "not a padded bucket size",
            });
        }
        Ok(())
    }
}

/// The claim body: a recipient's per-share keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The digest of the genesis claimed.
    pub genesis: [u8; 32],
    /// The recipient's per-share signing key: the claimant's identity.
    pub recipient: PublicKey,
    /// The recipient's per-share HPKE key.
    pub recipient_hpke: HpkePublicKey,
    /// Claim time (unix seconds).
    pub claimed_at: u64,
}

/// A claim: signed with the claim key (holds the invitation) and the recipient's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// The body.
    pub body: ClaimBody,
    /// Signature by the invitation's claim key.
    pub claim_signature: Signature,
    /// Signature by the recipient's device key.
    pub recipient_signature: Signature,
}

impl Claim {
    /// Signs a claim with both keys.
    pub fn sign(body: ClaimBody, claim_key: &SigningKey, recipient: &SigningKey) -> Self {
        Self {
            claim_signature: sign_body(claim_key, SignatureKind::Claim, &body),
            recipient_signature: sign_body(recipient, SignatureKind::Claim, &body),
            body,
        }
    }

    /// Checks both signatures against `claim_key` and the recipient key in the body.
    pub fn verify(&self, claim_key: &PublicKey) -> Result<(), Error> {
        verify_body(
            claim_key,
            SignatureKind::Claim,
            &self.body,
            &self.claim_signature,
        )
        .map_err(|_| Error::NotInvited)?;
        verify_body(
            &self.body.recipient,
            SignatureKind::Claim,
            &self.body,
            &self.recipient_signature,
        )
    }
}

impl Record for Claim {
    const NAME: &'static str = "claim";
    const MAX_BYTES: usize = 4096;
    fn check_shape(&self) -> Result<(), Error> {
        version(self.body.version)
    }
}

/// The receipt body: a replica grants a claimant a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The replica's node key.
    pub replica: PublicKey,
    /// The claimant granted.
    pub recipient: PublicKey,
    /// The recipient slot granted, `0..max_recipients`. A certificate needs
    /// [`GenesisHeader::claim_quorum`] receipts for one slot, so no more than
    /// `max_recipients` certificates can exist while at most `f` replicas lie.
    pub slot: u8,
    /// How many relinquishes the replica had applied when it granted: an honest replica
    /// gives a slot to a second claimant only after a relinquish, so two receipts of one
    /// replica for one slot and one epoch to two claimants prove it lied.
    pub epoch: u16,
    /// The retirements the replica held the mailbox under when it granted: a certificate
    /// counts receipts naming the same retirements, by holders under them.
    pub retired: Retired,
    /// SHA-256 of the exact claim granted.
    pub claim_digest: [u8; 32],
    /// Grant time (unix seconds).
    pub granted_at: u64,
}

/// A receipt, signed by the replica's node key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// The body.
    pub body: ReceiptBody,
    /// The replica's signature.
    pub signature: Signature,
}

impl Receipt {
    /// Signs a receipt with the replica's node key.
    pub fn sign(body: ReceiptBody, replica: &SigningKey) -> Self {
        let signature = sign_body(replica, SignatureKind::Receipt, &body);
        Self { body, signature }
    }

    /// Checks the replica's signature.
    pub fn verify_signature(&self) -> Result<(), Error> {
        verify_body(
            &self.body.replica,
            SignatureKind::Receipt,
            &self.body,
            &self.signature,
        )
    }
}

impl Record for Receipt {
    const NAME: &'static str = "receipt";
    const MAX_BYTES: usize = 1024;
    fn check_shape(&self) -> Result<(), Error> {
        version(self.body.version)
    }
}

/// A claim with receipts from a strict majority of the replica set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimCertificate {
    /// The claim.
    pub claim: Claim,
    /// Receipts from distinct replicas.
    pub receipts: BoundedVec<Receipt, MAX_REPLICAS>,
}

impl Record for ClaimCertificate {
    const NAME: &'static str = "certificate";
    const MAX_BYTES: usize = 4096 + MAX_REPLICAS * 1024;
    fn check_shape(&self) -> Result<(), Error> {
        self.claim.check_shape()?;
        self.receipts.iter().try_for_each(Record::check_shape)
    }
}

/// The resolve body: the claimants the sender keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResolveBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The digest of the genesis.
    pub genesis: [u8; 32],
    /// The claims of the recipients kept; they become the recipients.
    pub keep: BoundedVec<Claim, { MAX_RECIPIENTS as usize }>,
    /// Resolve time (unix seconds).
    pub resolved_at: u64,
}

/// A sender-signed settlement of a contested mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resolve {
    /// The body.
    pub body: ResolveBody,
    /// The sender's signature.
    pub signature: Signature,
}

impl Resolve {
    /// Signs with the sender's key.
    pub fn sign(body: ResolveBody, sender: &SigningKey) -> Self {
        let signature = sign_body(sender, SignatureKind::Resolve, &body);
        Self { body, signature }
    }

    /// Checks the signature against `sender`.
    pub fn verify_signature(&self, sender: &PublicKey) -> Result<(), Error> {
        verify_body(sender, SignatureKind::Resolve, &self.body, &self.signature)
    }
}

impl Record for Resolve {
    const NAME: &'static str = "resolve";
    const MAX_BYTES: usize = 4096 * MAX_RECIPIENTS as usize;
    fn check_shape(&self) -> Result<(), Error> {
        version(self.body.version)?;
        self.body.keep.iter().try_for_each(Record::check_shape)
    }
}

/// The signed, cleartext header of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageHeader {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The digest of the genesis.
    pub genesis: [u8; 32],
    /// The author's per-share signing key.
    pub from: PublicKey,
    /// The addressee's per-share signing key.
    pub to: PublicKey,
    /// Sequence number in the (from, to) direction, from 1.
    pub seq: u64,
    /// The draft's `Mailbox-Request-ID` (16 bytes).
    pub request_id: [u8; 16],
    /// Send time (unix seconds).
    pub sent_at: u64,
}

impl MessageHeader {
    /// HPKE `info`: the kind, the address, both parties and the sequence number.
    pub fn hpke_info(&self) -> Vec<u8> {
        let mut info = b"tigress/v1/message\0".to_vec();
        info.extend_from_slice(self.address.as_bytes());
        info.extend_from_slice(self.from.as_bytes());
        info.extend_from_slice(self.to.as_bytes());
        info.extend_from_slice(&self.seq.to_be_bytes());
        info
    }

    /// HPKE associated data: the whole header.
    pub fn hpke_aad(&self) -> Vec<u8> {
        let mut aad = b"tigress/v1/message\0".to_vec();
        aad.extend_from_slice(&wire::encode(self));
        aad
    }
}

/// The message body: header plus HPKE output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageBody {
    /// The header.
    pub header: MessageHeader,
    /// The HPKE encapsulated key.
    pub enc: BoundedBytes<MAX_HPKE_ENC>,
    /// The HPKE ciphertext of the padded plaintext.
    pub ciphertext: BoundedBytes<MAX_SEALED>,
}

/// A round-trip step, signed by its author.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The body.
    pub body: MessageBody,
    /// The author's signature.
    pub signature: Signature,
}

impl Message {
    /// Signs with the author's key.
    pub fn sign(body: MessageBody, author: &SigningKey) -> Self {
        let signature = sign_body(author, SignatureKind::Message, &body);
        Self { body, signature }
    }

    /// The header.
    pub fn header(&self) -> &MessageHeader {
        &self.body.header
    }

    /// Checks the author's signature.
    pub fn verify_signature(&self) -> Result<(), Error> {
        verify_body(
            &self.body.header.from,
            SignatureKind::Message,
            &self.body,
            &self.signature,
        )
    }
}

impl Record for Message {
    const NAME: &'static str = "message";
    fn check_shape(&self) -> Result<(), Error> {
        version(self.body.header.version)?;
        if self.body.header.seq == 0 {
            return Err(Error::SequenceZero);
        }
        let sealed = self.body.ciphertext.len();
        if !BUCKETS.iter().any(|b| b + TAG_LEN == sealed) {
            return Err(Error::InvalidField {
                field: "ciphertext",
                reason: "not a padded bucket size",
            });
        }
        Ok(())
    }
}

/// A simple signed action by one party: delete or relinquish.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActionBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The digest of the genesis.
    pub genesis: [u8; 32],
    /// The signer's per-share key.
    pub by: PublicKey,
    /// Time (unix seconds).
    pub at: u64,
}

macro_rules! action_record {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub struct $name {
            /// The body.
            pub body: ActionBody,
            /// The signer's signature.
            pub signature: Signature,
        }

        impl $name {
            /// Signs an action by `key` on the mailbox of `genesis` (its address and
            /// digest) at `at`.
            pub fn sign(address: Address, genesis: [u8; 32], key: &SigningKey, at: u64) -> Self {
                let body = ActionBody {
                    version: FORMAT_VERSION,
                    address,
                    genesis,
                    by: key.public_key(),
                    at,
                };
                let signature = sign_body(key, $kind, &body);
                Self { body, signature }
            }

            /// Checks the signature against the key in the body.
            pub fn verify_signature(&self) -> Result<(), Error> {
                verify_body(&self.body.by, $kind, &self.body, &self.signature)
            }
        }

        impl Record for $name {
            const NAME: &'static str = $label;
            const MAX_BYTES: usize = 512;
            fn check_shape(&self) -> Result<(), Error> {
                version(self.body.version)
            }
        }
    };
}

action_record!(
    /// Deletes a mailbox, by the sender or a recipient with the delete right.
    Delete,
    SignatureKind::Delete,
    "delete"
);
action_record!(
    /// A recipient gives its slot back (the draft's RelinquishMailbox).
    Relinquish,
    SignatureKind::Relinquish,
    "relinquish"
);

/// The no-genesis marker of a read request: an invitee opening a mailbox does not know
/// its genesis yet (its request is signed by the claim key, which the genesis names).
pub const UNKNOWN_GENESIS: [u8; 32] = [0; 32];

/// What a read request is for: it is valid for that operation only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadScope {
    /// Open the genesis.
    Open,
    /// Read the party's view.
    View,
    /// Fetch messages from exactly this cursor ([`cursor_digest`]).
    Fetch {
        /// The digest of the cursor.
        cursor: [u8; 32],
    },
}

/// The digest a fetch's read request names: binds the request to its cursor.
pub fn cursor_digest(cursor: &[(PublicKey, u64)]) -> [u8; 32] {
    crypto::sha256(&[b"tigress/v1/cursor", &wire::encode(&cursor.to_vec())])
}

/// The read request body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The digest of the genesis, or [`UNKNOWN_GENESIS`] for an invitee's open.
    pub genesis: [u8; 32],
    /// The reader's per-share key (or the claim key, to open).
    pub by: PublicKey,
    /// Time (unix seconds): valid within the read window around it.
    pub at: u64,
    /// The operation it is for.
    pub scope: ReadScope,
}

/// Proves a reader is a party (or holds the invitation, to open), for one operation, with
/// a fresh timestamp; required to read anything of a mailbox but its public status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The body.
    pub body: ReadBody,
    /// The reader's signature.
    pub signature: Signature,
}

impl ReadRequest {
    /// Signs a read request.
    pub fn sign(
        address: Address,
        genesis: [u8; 32],
        key: &SigningKey,
        at: u64,
        scope: ReadScope,
    ) -> Self {
        let body = ReadBody {
            version: FORMAT_VERSION,
            address,
            genesis,
            by: key.public_key(),
            at,
            scope,
        };
        let signature = sign_body(key, SignatureKind::Read, &body);
        Self { body, signature }
    }

    /// Checks the signature against the key in the body.
    pub fn verify_signature(&self) -> Result<(), Error> {
        verify_body(
            &self.body.by,
            SignatureKind::Read,
            &self.body,
            &self.signature,
        )
    }
}

impl Record for ReadRequest {
    const NAME: &'static str = "read request";
    const MAX_BYTES: usize = 512;
    fn check_shape(&self) -> Result<(), Error> {
        version(self.body.version)
    }
}

/// The acknowledgement body: a replica stored a record durably.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AckBody {
    /// Format version.
    pub version: u8,
    /// The mailbox address.
    pub address: Address,
    /// The replica's node key.
    pub replica: PublicKey,
    /// The digest of the record stored.
    pub record: [u8; 32],
}

/// A replica's signed acknowledgement of a write: an entry node cannot claim a write was
/// stored without the acknowledgements of the replicas that stored it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The body.
    pub body: AckBody,
    /// The replica's signature.
    pub signature: Signature,
}

impl Ack {
    /// Acknowledges the record with digest `record` at `address` as `replica`.
    pub fn sign(address: Address, record: [u8; 32], replica: &SigningKey) -> Self {
        let body = AckBody {
            version: FORMAT_VERSION,
            address,
            replica: replica.public_key(),
            record,
        };
        let signature = sign_body(replica, SignatureKind::Ack, &body);
        Self { body, signature }
    }

    /// Whether this acknowledges `record` at `address`, signed by the replica it names.
    pub fn verify(&self, address: &Address, record: &[u8; 32]) -> Result<(), Error> {
        version(self.body.version)?;
        if self.body.address != *address {
            return Err(Error::WrongAddress);
        }
        if self.body.record != *record {
            return Err(Error::InvalidField {
                field: "ack",
                reason: "acknowledges another record",
            });
        }
        verify_body(
            &self.body.replica,
            SignatureKind::Ack,
            &self.body,
            &self.signature,
        )
    }
}

impl Record for Ack {
    const NAME: &'static str = "ack";
    const MAX_BYTES: usize = 512;
    fn check_shape(&self) -> Result<(), Error> {
        version(self.body.version)
    }
}

/// Two receipts by one replica giving one slot, in one epoch, to two claimants: proof that
/// the replica lied (an honest replica gives a slot to one claimant per epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Equivocation {
    /// One receipt.
    pub first: Receipt,
    /// The other.
    pub second: Receipt,
}

impl Equivocation {
    /// The proof, if `a` and `b` are one: same address, replica, slot and epoch, two
    /// claimants, both signatures valid.
    pub fn of(a: &Receipt, b: &Receipt) -> Option<Self> {
        let proof = Self {
            first: a.clone(),
            second: b.clone(),
        };
        proof.verify().ok().map(|()| proof)
    }

    /// The replica proven to lie.
    pub fn liar(&self) -> PublicKey {
        self.first.body.replica
    }

    /// Checks the proof offline.
    pub fn verify(&self) -> Result<(), Error> {
        let (a, b) = (&self.first.body, &self.second.body);
        let conflicting = a.address == b.address
            && a.replica == b.replica
            && a.slot == b.slot
            && a.epoch == b.epoch
            && a.recipient != b.recipient;
        if !conflicting {
            return Err(Error::InvalidField {
                field: "equivocation",
                reason: "the receipts do not conflict",
            });
        }
        self.first.check_shape()?;
        self.second.check_shape()?;
        self.first.verify_signature()?;
        self.second.verify_signature()
    }
}

impl Record for Equivocation {
    const NAME: &'static str = "equivocation";
    const MAX_BYTES: usize = 2048;
    fn check_shape(&self) -> Result<(), Error> {
        self.first.check_shape()?;
        self.second.check_shape()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_parse_and_print() {
        assert_eq!("RWD".parse::<Rights>().unwrap(), Rights::ALL);
        assert_eq!("dr".parse::<Rights>().unwrap(), Rights::DRAFT_DEFAULT);
        assert_eq!(Rights::DRAFT_DEFAULT.to_string(), "RD");
        assert_eq!("".parse::<Rights>().unwrap().to_string(), "");
        assert!("RR".parse::<Rights>().is_err());
        assert!("X".parse::<Rights>().is_err());
        assert!(Rights::ALL.allows(Rights::WRITE));
        assert!(!Rights::DRAFT_DEFAULT.allows(Rights::WRITE));
        assert_eq!(Rights::WRITE.letter(), 'W');
    }
}

//! The error vocabulary shared by every layer of tigress.
//!
//! Every refusal the protocol can make is an [`Error`] variant; each one belongs to one
//! [`ErrorCode`] class, which fixes its HTTP status in the gateway, its exit status in the
//! CLI and its stable string in JSON output.

use crate::crypto::SignatureKind;
use crate::wire::DecodeError;

/// The classes of refusal, one per row of the design's error table.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The input is not well formed (HTTP 400).
    Malformed,
    /// A signature is wrong or the signer is not a party allowed to do this (HTTP 401).
    Unauthorized,
    /// No such mailbox (HTTP 404).
    NotFound,
    /// The request conflicts with what is stored: already claimed, contested, replayed
    /// sequence number, a different genesis (HTTP 409).
    Conflict,
    /// The mailbox expired or was deleted (HTTP 410).
    Gone,
    /// Over a size or count limit (HTTP 413).
    TooLarge,
    /// Too many requests (HTTP 429).
    RateLimited,
    /// Not enough replicas reachable to reach a majority (HTTP 503).
    Unavailable,
}

impl ErrorCode {
    /// Every code, in a fixed order.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::Malformed,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Gone,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
    ];

    /// The stable lowercase name used in JSON error bodies and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Gone => "gone",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the gateway answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Gone => 410,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The exit status of the `tigress` CLI (0 is success, 2 is a usage error).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::NotFound => 3,
            ErrorCode::Conflict => 4,
            ErrorCode::Unauthorized => 5,
            ErrorCode::Gone => 6,
            ErrorCode::Unavailable => 7,
            ErrorCode::TooLarge => 8,
            ErrorCode::RateLimited => 9,
        }
    }

    /// Parses the name produced by [`ErrorCode::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which party a right or a rule concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// The party that created the mailbox.
    Sender,
    /// A party holding a claim certificate (or kept by a resolve).
    Recipient,
    /// A holder of the invitation that has not claimed (signs with the claim key): may
    /// open the genesis, nothing else.
    Invitee,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Recipient => "recipient",
            Role::Invitee => "invitee",
        })
    }
}

/// A refusal by the protocol: malformed input, a failed check or a rule that forbids it.
///
/// On any error, the state the operation was applied to is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // --- Malformed input -------------------------------------------------------------
    /// The bytes do not decode as the expected record.
    #[error("malformed record: {0}")]
    Decode(#[from] DecodeError),
    /// A field is outside the range the protocol allows.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A public key is not a valid key of its kind.
    #[error("invalid public key in `{0}`")]
    InvalidKey(&'static str),
    /// A record is for another mailbox address.
    #[error("record is for another mailbox address")]
    WrongAddress,
    /// A record's timestamp lies too far in the future.
    #[error("timestamp lies in the future")]
    FromTheFuture,
    /// A sequence number of zero (sequences start at 1).
    #[error("sequence numbers start at 1")]
    SequenceZero,
    /// The expiry is missing or before the creation time.
    #[error("expiry must lie after creation")]
    ExpiryBeforeCreation,
    /// The expiry exceeds the network's maximum lifetime.
    #[error("expiry exceeds the maximum lifetime of {max_secs} s")]
    ExpiryTooFar {
        /// The maximum lifetime in seconds.
        max_secs: u64,
    },
    /// A ciphertext did not decrypt, or decrypted to badly padded bytes.
    #[error("ciphertext does not open with this key")]
    Decrypt,
    /// An algorithm or suite that this provider does not support.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(&'static str),

    // --- Unauthorized ----------------------------------------------------------------
    /// A signature does not verify.
    #[error("bad {0} signature")]
    BadSignature(SignatureKind),
    /// The claim is not signed by the mailbox's claim key: the claimant lacks the invitation.
    #[error("claim not signed with the invitation's claim key")]
    NotInvited,
    /// The signer is neither the sender nor a certified recipient.
    #[error("signer is not a party of this mailbox")]
    NotAParty,
    /// The party lacks the access right.
    #[error("the {role} lacks the {right} right")]
    RightDenied {
        /// The party.
        role: Role,
        /// The right letter: R, W or D.
        right: char,
    },
    /// A receipt comes from a node outside the genesis replica set.
    #[error("receipt from a node outside the replica set")]
    NotAReplica,
    /// A certificate lacks the claim quorum of replica receipts.
    #[error("certificate has {have} receipts, the claim quorum is {need}")]
    MinorityCertificate {
        /// Valid distinct receipts found.
        have: usize,
        /// Receipts needed.
        need: usize,
    },
    /// A message is addressed to someone who is not the other party.
    #[error("message is not addressed to the other party")]
    WrongRecipient,
    /// A read request is older (or newer) than the freshness window allows.
    #[error("read request is stale")]
    StaleRequest,
    /// A request names another genesis than the mailbox's (or a read request another
    /// operation or cursor than the one it comes with).
    #[error("the request is for another genesis or operation")]
    WrongGenesis,
    /// A replica signed two receipts giving one slot to two claimants: proven lying.
    #[error("replica {replica} equivocated: it granted one slot to two claimants")]
    Equivocation {
        /// The replica's key.
        replica: crate::crypto::PublicKey,
    },
    /// A write's acknowledgements do not prove that a majority of the replicas stored it.
    #[error("the write was not acknowledged by a majority of the replicas ({have} of {need})")]
    Unacknowledged {
        /// Valid distinct acknowledgements.
        have: usize,
        /// Acknowledgements needed.
        need: usize,
    },

    /// A handover or takeover that does not check against the mailbox's lineup.
    #[error("takeover refused: {0}")]
    Takeover(#[from] crate::takeover::TakeoverError),

    // --- Conflict --------------------------------------------------------------------
    /// A different genesis already exists at this address.
    #[error("a different genesis exists for this mailbox")]
    GenesisConflict,
    /// A sequence number further ahead of the highest stored than the window allows.
    #[error("sequence number {seq} skips ahead; the next is at most {max}")]
    SequenceAhead {
        /// The sequence number offered.
        seq: u64,
        /// The highest accepted now.
        max: u64,
    },
    /// A resolve on a mailbox that is not contested.
    #[error("the mailbox is not contested: there is nothing to resolve")]
    NotContested,
    /// Every recipient slot is taken.
    #[error("the mailbox is already claimed")]
    AlreadyClaimed,
    /// Claimants raced and no one can reach a majority; the sender must resolve it.
    #[error("the mailbox is contested; the sender must resolve it")]
    Contested,
    /// A different record with a sequence number already used in that direction.
    #[error("sequence number {seq} already used by a different message (replay)")]
    Replay {
        /// The reused sequence number.
        seq: u64,
    },
    /// A different resolve was already applied.
    #[error("the mailbox was already resolved differently")]
    ResolveConflict,
    /// The recipient key gave its slot back and cannot claim again.
    #[error("this recipient relinquished the mailbox")]
    Relinquished,

    // --- Gone ------------------------------------------------------------------------
    /// The mailbox expired.
    #[error("the mailbox expired")]
    Expired,
    /// The mailbox was deleted.
    #[error("the mailbox was deleted")]
    Deleted,

    // --- Too large -------------------------------------------------------------------
    /// A plaintext longer than the largest padding bucket.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The plaintext length.
        len: usize,
        /// The largest plaintext accepted.
        max: usize,
    },
    /// The mailbox holds its maximum number of messages.
    #[error("the mailbox holds its maximum of {max} messages")]
    TooManyMessages {
        /// The limit.
        max: u16,
    },
}

impl Error {
    /// The class of this refusal.
    pub fn code(&self) -> ErrorCode {
        use Error::*;
        match self {
            Decode(DecodeError::TooLarge { .. }) => ErrorCode::TooLarge,
            Decode(_)
            | InvalidField { .. }
            | InvalidKey(_)
            | WrongAddress
            | FromTheFuture
            | SequenceZero
            | ExpiryBeforeCreation
            | ExpiryTooFar { .. }
            | Decrypt
            | UnsupportedAlgorithm(_) => ErrorCode::Malformed,
            BadSignature(_)
            | NotInvited
            | NotAParty
            | RightDenied { .. }
            | NotAReplica
            | MinorityCertificate { .. }
            | WrongRecipient
            | StaleRequest
            | WrongGenesis
            | Equivocation { .. }
            | Unacknowledged { .. } => ErrorCode::Unauthorized,
            Takeover(
                crate::takeover::TakeoverError::NotNext
                | crate::takeover::TakeoverError::HandedOver
                | crate::takeover::TakeoverError::Pledged,
            ) => ErrorCode::Conflict,
            Takeover(_) => ErrorCode::Unauthorized,
            GenesisConflict
            | AlreadyClaimed
            | Contested
            | Replay { .. }
            | ResolveConflict
            | SequenceAhead { .. }
            | NotContested
            | Relinquished => ErrorCode::Conflict,
            Expired | Deleted => ErrorCode::Gone,
            PayloadTooLarge { .. } | TooManyMessages { .. } => ErrorCode::TooLarge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_by_name_and_are_distinct() {
        let mut exits = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
            assert!(exits.insert(code.exit_code()), "exit code reused");
            assert!((400..600).contains(&code.http_status()));
        }
        assert_eq!(ErrorCode::from_name("nope"), None);
    }

    #[test]
    fn errors_map_to_the_design_table() {
        assert_eq!(Error::Replay { seq: 3 }.code().http_status(), 409);
        assert_eq!(Error::Deleted.code().http_status(), 410);
        assert_eq!(Error::NotAParty.code().http_status(), 401);
        assert_eq!(
            Error::Decode(DecodeError::TooLarge { len: 9, max: 1 }).code(),
            ErrorCode::TooLarge
        );
        assert_eq!(
            Error::Decode(DecodeError::Truncated).code(),
            ErrorCode::Malformed
        );
    }
}

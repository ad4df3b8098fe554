//! The share flows, sans-IO: what a party sends its entry node at each step of a share,
//! and what each answer means.
//!
//! A share is: locate the replicas and create the mailbox ([`locate`], [`create`],
//! [`stored`]); open the invitation and claim ([`open`], [`genesis`], then
//! `RecipientSession::open_with_device`, [`claim`], [`certified`], and
//! [`kept_by_resolve`] after a contest); read a view and
//! learn the recipients ([`view`], [`learn`]); send and fetch messages ([`send`],
//! [`fetch`], [`fetched`]). The `tigress` client, the HTTP gateway and the benchmark each
//! carry these requests over their own transport (a libp2p connection, the entry role
//! in-process, a pool of connections) and call these functions for everything else.

use crate::crypto::CryptoRng;
use crate::mailbox::Limits;
use crate::record::{Delete, Equivocation, Genesis, Message, ReadRequest, ReadScope, Record};
use crate::rpc::{ClientRequest, ClientResponse, Cursor, MAX_WAIT_MS, MailboxView, RemoteError};
use crate::session::{DeviceKeys, RecipientSession, SenderSession, ShareIdentity, ShareOptions};
use crate::wire::BoundedVec;
use crate::{Error, ErrorCode, ShareUrl};

/// Why a step of a flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The network refused the step.
    #[error(transparent)]
    Refused(RemoteError),
    /// The entry node answered with something else than the step expects.
    #[error("unexpected answer from the node: expected {expected}, got {got}")]
    Unexpected {
        /// What the step expects.
        expected: &'static str,
        /// What came ([`ClientResponse::kind`]).
        got: &'static str,
    },
    /// The answer failed a protocol check.
    #[error(transparent)]
    Protocol(#[from] Error),
    /// The view lists more recipients than the policy allows: some replica lied. The
    /// proofs found are attached (empty when the certificates prove no one).
    #[error("the mailbox is contested: the network shows more recipients than allowed{}", proven(.0))]
    Contested(Vec<Equivocation>),
}

fn proven(proofs: &[Equivocation]) -> String {
    match proofs.first() {
        Some(p) => format!("; replica {} is proven to have lied", p.liar()),
        None => String::new(),
    }
}

impl FlowError {
    /// The class of the failure, when it has one.
    pub fn code(&self) -> ErrorCode {
        match self {
            FlowError::Refused(e) => e.code,
            FlowError::Unexpected { .. } => ErrorCode::Unavailable,
            FlowError::Protocol(e) => e.code(),
            FlowError::Contested(_) => ErrorCode::Conflict,
        }
    }
}

fn refused_or(answer: ClientResponse, expected: &'static str) -> FlowError {
    match answer {
        ClientResponse::Error(e) => FlowError::Refused(e),
        other => FlowError::Unexpected {
            expected,
            got: other.kind(),
        },
    }
}

/// The request that locates the replicas of a new share's address.
pub fn locate(identity: &ShareIdentity) -> ClientRequest {
    ClientRequest::Locate {
        address: identity.address(),
    }
}

/// From the located replicas, the sender's session, the invitation, and the request
/// that stores the genesis.
#[allow(clippy::too_many_arguments)]
pub fn create(
    located: ClientResponse,
    identity: ShareIdentity,
    device: DeviceKeys,
    base_url: &str,
    payload: &[u8],
    options: &ShareOptions,
    now: u64,
    rng: &mut impl CryptoRng,
) -> Result<(SenderSession, ShareUrl, ClientRequest), FlowError> {
    let (replicas, standbys) = match located {
        ClientResponse::Located { replicas, standbys } if !replicas.is_empty() => {
            (replicas.into_vec(), standbys.into_vec())
        }
        ClientResponse::Located { .. } => {
            return Err(FlowError::Refused(RemoteError::new(
                ErrorCode::Unavailable,
                "no relay nodes are known yet",
            )));
        }
        other => return Err(refused_or(other, "located replicas")),
    };
    let options = ShareOptions {
        standbys,
        ..options.clone()
    };
    let (session, url) = SenderSession::create_with_device(
        identity, device, base_url, replicas, payload, &options, now, rng,
    )?;
    let request = ClientRequest::Create {
        genesis: session.genesis().clone(),
        admission: 0,
    };
    Ok((session, url, request))
}

/// A write's answer for the record with digest `record` on the mailbox of `genesis`:
/// whether the record was already stored. The replicas' signed acknowledgements must show
/// a majority stored it ([`Error::Unacknowledged`] otherwise: an entry that dropped the
/// write is caught, and the write can be retried through another).
pub fn stored(
    answer: ClientResponse,
    genesis: &Genesis,
    record: &[u8; 32],
) -> Result<bool, FlowError> {
    match answer {
        ClientResponse::Stored { duplicate, acks } => {
            crate::quorum::check_acks(genesis, record, &acks)?;
            Ok(duplicate)
        }
        other => Err(refused_or(other, "stored")),
    }
}

/// The digest of a record, as acknowledgements name it.
pub fn digest_of(record: &impl Record) -> [u8; 32] {
    record.digest()
}

/// The request that opens an invitation's genesis (signed with the claim key).
pub fn open(url: &ShareUrl, now: u64) -> ClientRequest {
    ClientRequest::Open {
        request: RecipientSession::open_request(url, now),
    }
}

/// The genesis an open returned.
pub fn genesis(answer: ClientResponse) -> Result<Genesis, FlowError> {
    match answer {
        ClientResponse::Genesis(g) => Ok(g),
        other => Err(refused_or(other, "genesis")),
    }
}

/// The request that claims a slot.
pub fn claim(session: &RecipientSession) -> ClientRequest {
    ClientRequest::Claim {
        claim: session.claim().clone(),
    }
}

/// A claim's answer: the certificate is checked and taken by the session.
pub fn certified(
    session: &mut RecipientSession,
    answer: ClientResponse,
    limits: &Limits,
    now: u64,
) -> Result<(), FlowError> {
    match answer {
        ClientResponse::Certified { certificate, acks } => {
            crate::quorum::check_acks(session.genesis(), &certificate.digest(), &acks)?;
            Ok(session.accept_certificate(certificate, limits, now)?)
        }
        other => Err(refused_or(other, "a certificate")),
    }
}

/// After a contest: whether the view holds the sender's resolve keeping this claimant
/// (the session then is a recipient).
pub fn kept_by_resolve(session: &mut RecipientSession, answer: ClientResponse) -> bool {
    match answer {
        ClientResponse::View(view) => view
            .resolve
            .is_some_and(|r| session.accept_resolve(&r).is_ok()),
        _ => false,
    }
}

/// A read's answer, which must be a view of `genesis` (the reader's own).
pub fn view(answer: ClientResponse, genesis: &Genesis) -> Result<MailboxView, FlowError> {
    match answer {
        ClientResponse::View(v) if v.genesis == *genesis => Ok(v),
        ClientResponse::View(_) => Err(FlowError::Protocol(Error::WrongGenesis)),
        other => Err(refused_or(other, "a view")),
    }
}

/// A sender's read: rebuilds the recipients from the view; returns the view. A view with
/// more recipients than the policy allows is refused: [`FlowError::Contested`] carries
/// the proof of the replica that lied, if the certificates hold one (report it with
/// [`report`]).
pub fn learn(
    session: &mut SenderSession,
    answer: ClientResponse,
    limits: &Limits,
    now: u64,
) -> Result<MailboxView, FlowError> {
    let view = view(answer, session.genesis())?;
    match session.learn_recipients(&view, limits, now) {
        Ok(()) => Ok(view),
        Err(Error::Equivocation { .. } | Error::Contested) => Err(FlowError::Contested(
            crate::session::view_equivocations(&view),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The request that reports a replica proven to lie.
pub fn report(proof: Equivocation) -> ClientRequest {
    ClientRequest::Report { proof }
}

/// The request that sends a sealed message.
pub fn send(message: Message) -> ClientRequest {
    ClientRequest::Send { message }
}

/// The request that deletes the mailbox.
pub fn delete(delete: Delete) -> ClientRequest {
    ClientRequest::Delete { delete }
}

/// The request that fetches a reader's messages after `cursor`, waiting up to `wait_ms`
/// (capped at [`MAX_WAIT_MS`]); `sign` makes the read request for the scope given (bound
/// to this cursor).
pub fn fetch(
    sign: impl FnOnce(ReadScope) -> ReadRequest,
    cursor: Vec<(crate::crypto::PublicKey, u64)>,
    wait_ms: u64,
) -> Result<ClientRequest, FlowError> {
    let cursor: Cursor = BoundedVec::new(cursor).ok_or(Error::InvalidField {
        field: "cursor",
        reason: "too many parties",
    })?;
    let request = sign(ReadScope::Fetch {
        cursor: crate::record::cursor_digest(&cursor),
    });
    Ok(ClientRequest::Fetch {
        request,
        cursor,
        wait_ms: u32::try_from(wait_ms.min(u64::from(MAX_WAIT_MS))).unwrap_or(MAX_WAIT_MS),
    })
}

/// A fetch's answer: the messages, to hand to the session in order.
pub fn fetched(answer: ClientResponse) -> Result<Vec<Message>, FlowError> {
    match answer {
        ClientResponse::Messages { messages } => Ok(messages.into_vec()),
        other => Err(refused_or(other, "messages")),
    }
}

//! The replica role, sans-IO: one replica request applied to the mailboxes a replica holds.
//!
//! [`apply`] turns a [`ReplicaRequest`] into the calls on [`MailboxState`] that decide it
//! and the [`ReplicaResponse`] to send back. Where the records live is the caller's: the
//! node keeps them in sled, the simulator in memory; both implement [`Storage`]. What the
//! caller must do afterwards (make the write durable before answering, wake long-polls)
//! comes back in [`Applied`].

use crate::crypto::{PublicKey, SigningKey};
use crate::error::{ErrorCode, Role};
use crate::id::Address;
use crate::mailbox::{self, Limits, MailboxState, MessageKey, Outcome};
use crate::record::{Ack, Message, ReadScope, Record, cursor_digest};
use crate::rpc::{
    Access, Cursor, MAX_FETCH, MailboxView, RemoteError, ReplicaDigest, ReplicaRequest,
    ReplicaResponse,
};
use crate::takeover::Takeover;
use crate::wire::BoundedVec;

/// The most bytes of messages in one fetch answer (well inside a frame).
pub const MAX_FETCH_BYTES: usize = 768 * 1024;

/// Where a replica keeps mailbox states and messages.
///
/// Errors are refusals to send back as they are (a failed disk read is
/// [`ErrorCode::Unavailable`]).
pub trait Storage {
    /// The state stored for `address`, if any.
    fn load(&self, address: &Address) -> Result<Option<MailboxState>, RemoteError>;
    /// Stores `state` under its address, replacing what was there.
    fn save(&mut self, state: &MailboxState) -> Result<(), RemoteError>;
    /// The message stored at `key` of `address`, if any.
    fn message(&self, address: &Address, key: &MessageKey) -> Result<Option<Message>, RemoteError>;
    /// Stores a message (already accepted by the state).
    fn put_message(&mut self, message: &Message) -> Result<(), RemoteError>;
    /// Removes every message of `address` (after a delete).
    fn remove_messages(&mut self, address: &Address);
    /// Refuses when `extra` more bytes would not fit the replica's budget.
    fn check_quota(&self, extra: usize) -> Result<(), RemoteError>;
}

/// A message for `to` arrived at the address: long-polls of that reader wake up.
pub type Arrival = (Address, PublicKey);

/// What applying one request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The answer, to send once a write is durable.
    pub response: ReplicaResponse,
    /// Whether something was written: the answer must wait for durability.
    pub wrote: bool,
    /// A message arrival to announce once durable.
    pub arrival: Option<Arrival>,
}

impl Applied {
    /// An answer that wrote nothing.
    pub fn read(response: ReplicaResponse) -> Self {
        Self {
            response,
            wrote: false,
            arrival: None,
        }
    }

    fn stored(outcome: Outcome, ack: Ack) -> Self {
        Self {
            response: ReplicaResponse::Stored {
                duplicate: outcome == Outcome::Duplicate,
                ack,
            },
            wrote: outcome == Outcome::Applied,
            arrival: None,
        }
    }
}

/// For a write, the address and the digest of the record its acknowledgements name (the
/// contest's evidence digest for a contest mark); `None` for a read.
pub fn acknowledged(request: &ReplicaRequest) -> Option<(Address, [u8; 32])> {
    Some(match request {
        ReplicaRequest::StoreGenesis { genesis } => (genesis.header().address, genesis.digest()),
        ReplicaRequest::StoreCertificate { certificate } => {
            (certificate.claim.body.address, certificate.digest())
        }
        ReplicaRequest::MarkContested { address, evidence } => {
            (*address, contest_digest(address, evidence))
        }
        ReplicaRequest::StoreMessage { message } => (message.header().address, message.digest()),
        ReplicaRequest::Delete { delete } => (delete.body.address, delete.digest()),
        ReplicaRequest::Relinquish { relinquish } => (relinquish.body.address, relinquish.digest()),
        ReplicaRequest::Resolve { resolve } => (resolve.body.address, resolve.digest()),
        ReplicaRequest::Handover { handover } => (
            handover.body.address,
            crate::crypto::sha256(&[&crate::wire::encode(handover)]),
        ),
        ReplicaRequest::Takeover { genesis, takeovers } => {
            (genesis.header().address, takeover_digest(takeovers))
        }
        _ => return None,
    })
}

/// The digest a replica acknowledges for a contest marked with `evidence`.
pub fn contest_digest(address: &Address, evidence: &[crate::record::Receipt]) -> [u8; 32] {
    crate::crypto::sha256(&[
        b"tigress/v1/contest",
        address.as_bytes(),
        &crate::wire::encode(&evidence.to_vec()),
    ])
}

fn unauthorized(what: &str) -> RemoteError {
    RemoteError::new(ErrorCode::Unauthorized, what)
}

/// Whether the signed request `access` entitles its bearer to the genesis of `state`: it
/// names this genesis (or is an invitee's open signed with its claim key) and is signed
/// by a party, a claimant holding the invitation, or the claim key.
fn authorize(
    state: &MailboxState,
    access: &Access,
    limits: &Limits,
    now: u64,
) -> Result<(), crate::Error> {
    use crate::Error;
    if access
        .named_genesis()
        .is_some_and(|d| d != state.genesis_digest())
    {
        return Err(Error::WrongGenesis);
    }
    let party = |k: &PublicKey| state.role_of(k).map(|_| ()).ok_or(Error::NotAParty);
    match access {
        // An open is an invitee's (claim key, no genesis named yet) or a party's.
        Access::Read(r) if r.body.scope == ReadScope::Open => {
            state.authorize_open(r, limits, now).map(|_| ())
        }
        Access::Read(r) => state
            .authorize_read(r, r.body.scope, limits, now)
            .map(|_| ()),
        Access::Claim(c) => mailbox::validate_claim(state.genesis(), c, limits, now),
        Access::Message(m) => {
            party(&m.header().from)?;
            m.verify_signature()
        }
        Access::Delete(d) => {
            party(&d.body.by)?;
            d.verify_signature()
        }
        Access::Relinquish(r) => {
            let granted = state.grants().iter().any(|g| g.body.recipient == r.body.by);
            if !granted {
                party(&r.body.by)?;
            }
            r.verify_signature()
        }
        Access::Resolve(r) => r.verify_signature(&state.genesis().header().sender),
    }
}

/// Whether `peer` is one of the replicas of `state` (anti-entropy reads are theirs only).
fn is_replica_of(state: &MailboxState, peer: Option<&PublicKey>) -> bool {
    peer.is_some_and(|p| state.genesis().header().lineup().members().contains(p))
}

fn refusal(e: &crate::Error) -> RemoteError {
    RemoteError::from(e)
}

fn not_found() -> RemoteError {
    RemoteError::new(ErrorCode::NotFound, "no such mailbox")
}

fn existing(storage: &impl Storage, address: &Address) -> Result<MailboxState, RemoteError> {
    storage.load(address)?.ok_or_else(not_found)
}

/// What a replica holds for one mailbox, as a digest (anti-entropy).
pub fn digest_of(state: &MailboxState) -> ReplicaDigest {
    let keys: Vec<MessageKey> = state.message_keys().map(|(k, _)| *k).collect();
    ReplicaDigest {
        genesis: state.genesis().clone(),
        certificates: BoundedVec::truncated(state.certificates().to_vec()),
        resolve: state.resolution().cloned(),
        delete: state.deletion().cloned(),
        relinquished: BoundedVec::truncated(state.relinquishes().to_vec()),
        messages: BoundedVec::truncated(keys),
        contest: BoundedVec::truncated(state.contest_evidence().to_vec()),
        takeovers: BoundedVec::truncated(state.takeovers().to_vec()),
    }
}

/// The digest a takeover's acknowledgement signs.
pub fn takeover_digest(takeovers: &[Takeover]) -> [u8; 32] {
    crate::crypto::sha256(&[b"tigress/v1/takeover", &crate::wire::encode(&takeovers)])
}

/// Applies one request from the node `from` (`None`: not a node, e.g. a test) as the
/// replica whose receipt-signing key is `key`. A failed write changes nothing stored.
pub fn apply(
    storage: &mut impl Storage,
    key: &SigningKey,
    limits: &Limits,
    from: Option<&PublicKey>,
    request: ReplicaRequest,
    now: u64,
) -> Applied {
    match try_apply(storage, key, limits, from, request, now) {
        Ok(a) => a,
        Err(e) => Applied::read(ReplicaResponse::Error(e)),
    }
}

fn save_if_applied(
    storage: &mut impl Storage,
    key: &SigningKey,
    state: &MailboxState,
    outcome: Outcome,
    record: [u8; 32],
) -> Result<Applied, RemoteError> {
    if outcome == Outcome::Applied {
        storage.save(state)?;
    }
    Ok(Applied::stored(
        outcome,
        Ack::sign(state.address(), record, key),
    ))
}

fn try_apply(
    storage: &mut impl Storage,
    key: &SigningKey,
    limits: &Limits,
    from: Option<&PublicKey>,
    request: ReplicaRequest,
    now: u64,
) -> Result<Applied, RemoteError> {
    match request {
        ReplicaRequest::StoreGenesis { genesis } => {
            let address = genesis.header().address;
            match storage.load(&address)? {
                Some(state) => {
                    let outcome = state
                        .offer_genesis(&genesis, now)
                        .map_err(|e| refusal(&e))?;
                    let digest = state.genesis_digest();
                    Ok(Applied::stored(outcome, Ack::sign(address, digest, key)))
                }
                None => {
                    storage.check_quota(genesis.to_bytes().len())?;
                    let state =
                        MailboxState::create(genesis, limits, now).map_err(|e| refusal(&e))?;
                    if !state
                        .genesis()
                        .header()
                        .replicas
                        .contains(&key.public_key())
                    {
                        return Err(refusal(&crate::Error::NotAReplica));
                    }
                    let digest = state.genesis_digest();
                    save_if_applied(storage, key, &state, Outcome::Applied, digest)
                }
            }
        }
        ReplicaRequest::Grant { claim } => {
            let mut state = existing(storage, &claim.body.address)?;
            match state.grant(&claim, key, limits, now) {
                Ok((receipt, outcome)) => {
                    if outcome == Outcome::Applied {
                        storage.check_quota(claim.to_bytes().len() + receipt.to_bytes().len())?;
                        storage.save(&state)?;
                    }
                    Ok(Applied {
                        response: ReplicaResponse::Granted(receipt),
                        wrote: outcome == Outcome::Applied,
                        arrival: None,
                    })
                }
                Err(e) => Ok(Applied::read(ReplicaResponse::Refused {
                    error: refusal(&e),
                    grants: BoundedVec::truncated(state.grants().to_vec()),
                })),
            }
        }
        ReplicaRequest::StoreCertificate { certificate } => {
            let mut state = existing(storage, &certificate.claim.body.address)?;
            let outcome = state
                .accept_certificate(&certificate, limits, now)
                .map_err(|e| refusal(&e))?;
            save_if_applied(storage, key, &state, outcome, certificate.digest())
        }
        ReplicaRequest::MarkContested { address, evidence } => {
            let mut state = existing(storage, &address)?;
            let outcome = state
                .mark_contested(&evidence, now)
                .map_err(|e| refusal(&e))?;
            let digest = contest_digest(&address, &evidence);
            save_if_applied(storage, key, &state, outcome, digest)
        }
        ReplicaRequest::StoreMessage { message } => {
            let h = message.header().clone();
            let mut state = existing(storage, &h.address)?;
            let outcome = state
                .apply_message(&message, limits, now)
                .map_err(|e| refusal(&e))?;
            let ack = Ack::sign(h.address, message.digest(), key);
            if outcome == Outcome::Duplicate {
                return Ok(Applied::stored(outcome, ack));
            }
            storage.check_quota(message.to_bytes().len())?;
            storage.put_message(&message)?;
            storage.save(&state)?;
            Ok(Applied {
                response: ReplicaResponse::Stored {
                    duplicate: false,
                    ack,
                },
                wrote: true,
                arrival: Some((h.address, h.to)),
            })
        }
        ReplicaRequest::Delete { delete } => {
            let mut state = existing(storage, &delete.body.address)?;
            let outcome = state
                .delete(&delete, limits, now)
                .map_err(|e| refusal(&e))?;
            if outcome == Outcome::Applied {
                storage.remove_messages(&state.address());
            }
            save_if_applied(storage, key, &state, outcome, delete.digest())
        }
        ReplicaRequest::Relinquish { relinquish } => {
            let mut state = existing(storage, &relinquish.body.address)?;
            let outcome = state
                .relinquish(&relinquish, limits, now)
                .map_err(|e| refusal(&e))?;
            save_if_applied(storage, key, &state, outcome, relinquish.digest())
        }
        ReplicaRequest::Resolve { resolve } => {
            let mut state = existing(storage, &resolve.body.address)?;
            let outcome = state
                .resolve(&resolve, limits, now)
                .map_err(|e| refusal(&e))?;
            save_if_applied(storage, key, &state, outcome, resolve.digest())
        }
        ReplicaRequest::GetGenesis { access } => {
            let state = existing(storage, &access.address())?;
            state.live(now).map_err(|e| refusal(&e))?;
            authorize(&state, &access, limits, now).map_err(|e| refusal(&e))?;
            Ok(Applied::read(ReplicaResponse::Genesis(
                state.genesis().clone(),
            )))
        }
        ReplicaRequest::Open { request } => {
            let state = existing(storage, &request.body.address)?;
            state
                .authorize_open(&request, limits, now)
                .map_err(|e| refusal(&e))?;
            Ok(Applied::read(ReplicaResponse::Genesis(
                state.genesis().clone(),
            )))
        }
        ReplicaRequest::Read { request } => {
            let state = existing(storage, &request.body.address)?;
            let party = state
                .authorize_read(&request, ReadScope::View, limits, now)
                .map_err(|e| refusal(&e))?;
            let claims = if party.role == Role::Sender {
                state.claims().to_vec()
            } else {
                Vec::new()
            };
            Ok(Applied::read(ReplicaResponse::View(MailboxView {
                genesis: state.genesis().clone(),
                status: state.status(now),
                certificates: BoundedVec::truncated(state.certificates().to_vec()),
                claims: BoundedVec::truncated(claims),
                resolve: state.resolution().cloned(),
                relinquished: BoundedVec::truncated(state.relinquishes().to_vec()),
            })))
        }
        ReplicaRequest::Fetch {
            request, cursor, ..
        } => {
            let state = existing(storage, &request.body.address)?;
            let scope = ReadScope::Fetch {
                cursor: cursor_digest(&cursor),
            };
            let party = state
                .authorize_read(&request, scope, limits, now)
                .map_err(|e| refusal(&e))?;
            Ok(Applied::read(fetch(storage, &state, &party.key, &cursor)?))
        }
        ReplicaRequest::Status { address } => {
            let state = existing(storage, &address)?;
            state.live(now).map_err(|e| refusal(&e))?;
            Ok(Applied::read(ReplicaResponse::Status(
                state.public_status(now),
            )))
        }
        ReplicaRequest::Digest { address } => {
            let state = existing(storage, &address)?;
            if !is_replica_of(&state, from) {
                return Err(unauthorized("digests go to the mailbox's replicas only"));
            }
            Ok(Applied::read(ReplicaResponse::Digest(digest_of(&state))))
        }
        ReplicaRequest::Summaries { addresses } => {
            let mut out = Vec::with_capacity(addresses.len());
            for address in addresses.iter() {
                let state = storage.load(address)?;
                out.push(
                    state
                        .filter(|s| is_replica_of(s, from))
                        .map(|s| digest_of(&s).summary()),
                );
            }
            Ok(Applied::read(ReplicaResponse::Summaries {
                summaries: BoundedVec::truncated(out),
            }))
        }
        ReplicaRequest::Handover { handover } => {
            let mut state = existing(storage, &handover.body.address)?;
            state.live(now).map_err(|e| refusal(&e))?;
            let digest = crate::crypto::sha256(&[&crate::wire::encode(&handover)]);
            let before = state.takeovers().len();
            let handed = state.handovers_len();
            state
                .add_handover(handover, &key.public_key())
                .map_err(|e| refusal(&e))?;
            let outcome = if state.takeovers().len() != before || state.handovers_len() != handed {
                Outcome::Applied
            } else {
                Outcome::Duplicate
            };
            save_if_applied(storage, key, &state, outcome, digest)
        }
        ReplicaRequest::Takeover { genesis, takeovers } => {
            let address = genesis.header().address;
            let me = key.public_key();
            let digest = takeover_digest(&takeovers);
            let (mut state, new) = match storage.load(&address)? {
                Some(state) => {
                    if *state.genesis() != genesis {
                        return Err(refusal(&crate::Error::GenesisConflict));
                    }
                    (state, false)
                }
                None => {
                    if !genesis.header().lineup().members().contains(&me) {
                        return Err(refusal(&crate::Error::NotAReplica));
                    }
                    storage.check_quota(genesis.to_bytes().len())?;
                    let state =
                        MailboxState::create(genesis, limits, now).map_err(|e| refusal(&e))?;
                    (state, true)
                }
            };
            // A tombstone takes takeovers too: its holders must agree on where it lives.
            let mut outcome = if new {
                Outcome::Applied
            } else {
                Outcome::Duplicate
            };
            for t in takeovers.iter() {
                if state.apply_takeover(t, &me).map_err(|e| refusal(&e))? == Outcome::Applied {
                    outcome = Outcome::Applied;
                }
            }
            // A standby creates the mailbox only to hold it.
            if new && !state.holders().contains(&me) {
                return Err(refusal(&crate::Error::NotAReplica));
            }
            save_if_applied(storage, key, &state, outcome, digest)
        }
        ReplicaRequest::SignHandover { address, retiree } => {
            if from != Some(&key.public_key()) {
                return Err(unauthorized("only the node itself signs its handovers"));
            }
            let mut state = existing(storage, &address)?;
            state.live(now).map_err(|e| refusal(&e))?;
            let (handover, takeover) = state.hand_over(key, &retiree).map_err(|e| refusal(&e))?;
            storage.save(&state)?;
            Ok(Applied {
                response: ReplicaResponse::HandedOver { handover, takeover },
                wrote: true,
                arrival: None,
            })
        }
        ReplicaRequest::Takeovers { address } => {
            let state = existing(storage, &address)?;
            Ok(Applied::read(ReplicaResponse::Takeovers(
                BoundedVec::truncated(state.takeovers().to_vec()),
            )))
        }
        ReplicaRequest::GetMessages { address, keys } => {
            let state = existing(storage, &address)?;
            if !is_replica_of(&state, from) {
                return Err(unauthorized("messages go to the mailbox's replicas only"));
            }
            let mut out = Vec::new();
            for key in keys.iter() {
                if let Some(m) = storage.message(&address, key)? {
                    out.push(m);
                }
            }
            Ok(Applied::read(ReplicaResponse::Messages {
                messages: BoundedVec::truncated(out),
            }))
        }
    }
}

/// Messages for `reader` at or after the cursor ([`mailbox::fetchable`]), in (author,
/// recipient, sequence) order, bounded by count and bytes.
fn fetch(
    storage: &impl Storage,
    state: &MailboxState,
    reader: &PublicKey,
    cursor: &Cursor,
) -> Result<ReplicaResponse, RemoteError> {
    let address = state.address();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for (key, _) in state.message_keys() {
        if !mailbox::fetchable(reader, cursor, key) {
            continue;
        }
        if let Some(m) = storage.message(&address, key)? {
            let len = m.to_bytes().len();
            if out.len() == MAX_FETCH || bytes + len > MAX_FETCH_BYTES {
                break;
            }
            bytes += len;
            out.push(m);
        }
    }
    Ok(ReplicaResponse::Messages {
        messages: BoundedVec::truncated(out),
    })
}

//! The client: share operations for both roles, on top of a [`Connection`] and a
//! [`StateDir`]. Every rule is the protocol crate's; this module moves records and keeps
//! the device's state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::Multiaddr;
use rand_core::UnwrapErr;
use tigress_protocol::crypto::PublicKey;
use tigress_protocol::flow;
use tigress_protocol::mailbox::{Limits, MailboxStatus, PublicStatus};
use tigress_protocol::placement;
use tigress_protocol::record::MAX_REPLICAS;
use tigress_protocol::record::{Genesis, Message, ReadScope, Record};
use tigress_protocol::rpc::{ClientRequest, ClientResponse, MailboxView, NodeInfo};
use tigress_protocol::session::{
    Delivered, DeviceKeys, RecipientSession, SenderSession, ShareIdentity, ShareOptions,
};
use tigress_protocol::takeover::MAX_STANDBYS;
use tigress_protocol::wire::BoundedVec;
use tigress_protocol::{Address, ErrorCode, MailboxId, ShareUrl};

use crate::connection::Connection;
use crate::error::ClientError;
use crate::state::{Party, ShareState, StateDir};

/// The current unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn rng() -> UnwrapErr<getrandom::SysRng> {
    UnwrapErr(getrandom::SysRng)
}

/// A new share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The invitation.
    pub url: ShareUrl,
    /// The mailbox ID.
    pub share_id: MailboxId,
    /// Expiry (unix seconds).
    pub expires_at: u64,
}

/// A message this device sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// To whom.
    pub to: PublicKey,
    /// Its sequence number.
    pub seq: u64,
}

/// What `recv` found.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// Messages delivered in order.
    pub messages: Vec<Delivered>,
    /// Whether the mailbox is contested (the sender must resolve or delete).
    pub contested: bool,
}

/// A client of the tigress network, bound to one entry node and one state directory.
/// Other known nodes (alternates) give it a second path: it confirms the replica set an
/// entry names with another entry, and retries a write whose acknowledgements do not
/// prove it was stored through another entry.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Connection,
    alternates: Vec<Multiaddr>,
    state: StateDir,
    limits: Limits,
    clock: ClientClock,
}

/// Where a client reads the time: the system clock, or one a test moves.
#[derive(Clone)]
struct ClientClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for ClientClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientClock")
    }
}

impl Client {
    /// Connects to the node at `addr` and uses `state` for per-share state.
    pub async fn connect(addr: &Multiaddr, state: StateDir) -> Result<Self, ClientError> {
        Ok(Self {
            conn: Connection::connect(addr).await?,
            alternates: Vec::new(),
            state,
            limits: Limits::default(),
            clock: ClientClock(Arc::new(unix_now)),
        })
    }

    /// Uses `clock` (unix seconds) instead of the system's for the times records carry (a
    /// test runs the network on a simulated clock).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = ClientClock(Arc::new(clock));
        self
    }

    fn now(&self) -> u64 {
        (self.clock.0)()
    }

    /// Other nodes this client may use as a second entry (tried in order).
    pub fn with_alternates(mut self, alternates: Vec<Multiaddr>) -> Self {
        self.alternates = alternates;
        self
    }

    /// A connection to alternate `i`, if it answers and is not the entry itself.
    async fn alternate(&self, i: usize) -> Option<Connection> {
        let addr = self.alternates.get(i)?;
        match Connection::connect(addr).await {
            Ok(c) if c.peer_id() != self.conn.peer_id() => Some(c),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "an alternate entry is unreachable");
                None
            }
        }
    }

    /// Checks the replica set an entry named for `address` against a second entry's:
    /// the `r` nearest of both answers are used, and a set naming a node that is not
    /// among them is refused (a lying entry cannot place a mailbox on its own nodes).
    async fn confirm_locate(
        &self,
        address: &Address,
        located: ClientResponse,
        r: usize,
    ) -> ClientResponse {
        let ClientResponse::Located {
            replicas: first,
            standbys: first_standbys,
        } = &located
        else {
            return located;
        };
        let first_all: Vec<_> = first.iter().chain(first_standbys.iter()).copied().collect();
        for i in 0..self.alternates.len() {
            let Some(alt) = self.alternate(i).await else {
                continue;
            };
            let Ok(ClientResponse::Located {
                replicas: second,
                standbys: second_standbys,
            }) = alt
                .request(ClientRequest::Locate { address: *address })
                .await
            else {
                continue;
            };
            let r = r.max(first.len()).max(second.len()).min(MAX_REPLICAS);
            let s = first_standbys
                .len()
                .max(second_standbys.len())
                .min(MAX_STANDBYS);
            let second_all: Vec<_> = second
                .iter()
                .chain(second_standbys.iter())
                .copied()
                .collect();
            return match placement::confirm(&first_all, &second_all, address, r + s) {
                Ok(_) => located,
                Err(mut best) => {
                    tracing::warn!(
                        "the entry node named replicas that are not the nearest to the address; using the nearest both entries know"
                    );
                    let standbys = best.split_off(r.min(best.len()));
                    ClientResponse::Located {
                        replicas: BoundedVec::truncated(best),
                        standbys: BoundedVec::truncated(standbys),
                    }
                }
            };
        }
        located
    }

    /// The connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The entry node's information.
    pub async fn info(&self) -> Result<NodeInfo, ClientError> {
        match self.conn.request(ClientRequest::Info).await? {
            ClientResponse::Info(info) => Ok(info),
            _ => Err(ClientError::UnexpectedResponse("info")),
        }
    }

    /// The public status of a mailbox: its state, no keys, no message counts.
    pub async fn status(&self, address: Address) -> Result<PublicStatus, ClientError> {
        match self.conn.request(ClientRequest::Status { address }).await? {
            ClientResponse::Status(s) => Ok(s),
            _ => Err(ClientError::UnexpectedResponse("status")),
        }
    }

    /// A party's status of its mailbox (recipient keys and message count), read with its
    /// signed request: `None` when this device is not a party of it or may not read.
    pub async fn party_status(&self, id: &MailboxId) -> Result<Option<MailboxStatus>, ClientError> {
        if !self.state.contains(id) {
            return Ok(None);
        }
        let mut state = self.state.load(id)?;
        let view = match &mut state.party {
            Party::Sender(session) => self.refresh_sender(session).await,
            Party::Recipient(session) if session.is_recipient() => {
                let request = session.read_request(self.now(), ReadScope::View);
                let answer = self.conn.request(ClientRequest::Read { request }).await?;
                Ok(flow::view(answer, session.genesis())?)
            }
            Party::Recipient(_) => return Ok(None),
        };
        match view {
            Ok(v) => Ok(Some(v.status)),
            Err(ClientError::Remote(e)) if e.code == ErrorCode::Unauthorized => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a write and checks the acknowledgements of the answer: a majority of the
    /// mailbox's replicas must have signed that they stored `record`. An entry whose
    /// answer does not prove it is caught, and the write goes through an alternate.
    async fn stored(
        &self,
        request: ClientRequest,
        genesis: &Genesis,
        record: [u8; 32],
    ) -> Result<bool, ClientError> {
        let first = flow::stored(self.conn.request(request.clone()).await?, genesis, &record);
        let err = match first {
            Ok(duplicate) => return Ok(duplicate),
            Err(flow::FlowError::Protocol(e @ tigress_protocol::Error::Unacknowledged { .. })) => e,
            Err(e) => return Err(e.into()),
        };
        tracing::warn!(error = %err, "the entry node's answer does not prove the write; retrying through another entry");
        for i in 0..self.alternates.len() {
            let Some(alt) = self.alternate(i).await else {
                continue;
            };
            let Ok(answer) = alt.request(request.clone()).await else {
                continue;
            };
            if let Ok(duplicate) = flow::stored(answer, genesis, &record) {
                return Ok(duplicate);
            }
        }
        Err(flow::FlowError::Protocol(err).into())
    }

    /// Creates a share of `payload`; the invitation's base is `base_url` or the entry
    /// node's public URL.
    pub async fn share(
        &self,
        payload: &[u8],
        options: &ShareOptions,
        base_url: Option<&str>,
    ) -> Result<Shared, ClientError> {
        let info = self.info().await?;
        let mut rng = rng();
        let identity = ShareIdentity::random(&mut rng);
        let located = self.conn.request(flow::locate(&identity)).await?;
        let located = self
            .confirm_locate(&identity.address(), located, usize::from(info.replication))
            .await;
        let base = base_url.unwrap_or(info.public_url.as_str());
        let device = DeviceKeys::generate(options.hpke, &mut rng);
        let (session, url, create) = flow::create(
            located,
            identity,
            device,
            base,
            payload,
            options,
            self.now(),
            &mut rng,
        )?;
        let expires_at = session.genesis().header().expires_at;
        let state = ShareState {
            party: Party::Sender(session),
            outbox: Vec::new(),
        };
        // Saved first: a share the network stored but the device forgot would be lost.
        self.state.save(&state)?;
        let Party::Sender(session) = &state.party else {
            return Err(ClientError::UnexpectedResponse("sender state"));
        };
        self.stored(create, session.genesis(), session.genesis().digest())
            .await?;
        Ok(Shared {
            share_id: url.mailbox_id(),
            url,
            expires_at,
        })
    }

    /// Opens and claims an invitation; returns the first payload.
    pub async fn accept(&self, url: &ShareUrl) -> Result<Vec<u8>, ClientError> {
        let id = url.mailbox_id();
        let mut state = if self.state.contains(&id) {
            self.state.load(&id)?
        } else {
            let genesis = flow::genesis(self.conn.request(flow::open(url, self.now())).await?)?;
            let device = DeviceKeys::generate(genesis.header().sender_hpke.suite, &mut rng());
            let now = self.now();
            let (session, _) =
                RecipientSession::open_with_device(url, genesis, device, now, &self.limits, now)?;
            let state = ShareState {
                party: Party::Recipient(session),
                outbox: Vec::new(),
            };
            self.state.save(&state)?;
            state
        };
        let Party::Recipient(session) = &mut state.party else {
            return Err(ClientError::Usage(
                "this device is the sender of this share".into(),
            ));
        };
        if !session.is_recipient() {
            match self.conn.request(flow::claim(session)).await {
                Ok(answer) => flow::certified(session, answer, &self.limits, self.now())?,
                // A contest the sender settled in this claimant's favour: the resolve in
                // the mailbox makes it a recipient.
                Err(ClientError::Remote(e)) if e.code == tigress_protocol::ErrorCode::Conflict => {
                    let request = session.read_request(self.now(), ReadScope::View);
                    let kept = match self.conn.request(ClientRequest::Read { request }).await {
                        Ok(answer) => flow::kept_by_resolve(session, answer),
                        Err(_) => false,
                    };
                    if !kept {
                        return Err(ClientError::Remote(e));
                    }
                }
                Err(e) => return Err(e),
            }
            self.state.save(&state)?;
        }
        let Party::Recipient(session) = &state.party else {
            return Err(ClientError::UnexpectedResponse("recipient state"));
        };
        Ok(session.first_payload()?)
    }

    /// Reads the sender's view and rebuilds the recipients from it. A view showing more
    /// recipients than the policy allows is refused as contested; a replica it proves
    /// lying is reported to the entry node.
    async fn refresh_sender(
        &self,
        session: &mut SenderSession,
    ) -> Result<MailboxView, ClientError> {
        let request = session.read_request(self.now(), ReadScope::View);
        let answer = self.conn.request(ClientRequest::Read { request }).await?;
        match flow::learn(session, answer, &self.limits, self.now()) {
            Err(flow::FlowError::Contested(proofs)) => {
                for proof in &proofs {
                    tracing::warn!(replica = %proof.liar(), "a replica is proven to have lied; reporting it");
                    let _ = self.conn.request(flow::report(proof.clone())).await;
                }
                Err(flow::FlowError::Contested(proofs).into())
            }
            other => Ok(other?),
        }
    }

    /// Sends the outbox in order. A sender's message to a key that is no longer a
    /// recipient (it relinquished) can never be stored: it is dropped and reported, so it
    /// does not hold back the messages behind it.
    async fn flush_outbox(&self, state: &mut ShareState) -> Result<Vec<Sent>, ClientError> {
        let mut dropped = Vec::new();
        if let Party::Sender(session) = &state.party {
            let current: Vec<PublicKey> = session.recipients().iter().map(|r| r.key).collect();
            let before = state.outbox.len();
            state.outbox.retain(|m| {
                let keep = current.contains(&m.header().to);
                if !keep {
                    tracing::warn!(
                        to = %m.header().to,
                        seq = m.header().seq,
                        "dropping an undeliverable message: its recipient is no longer a recipient"
                    );
                    dropped.push(Sent {
                        to: m.header().to,
                        seq: m.header().seq,
                    });
                }
                keep
            });
            if state.outbox.len() != before {
                self.state.save(state)?;
            }
        }
        let genesis = match &state.party {
            Party::Sender(s) => s.genesis().clone(),
            Party::Recipient(r) => r.genesis().clone(),
        };
        while let Some(message) = state.outbox.first().cloned() {
            let record = message.digest();
            self.stored(flow::send(message), &genesis, record).await?;
            state.outbox.remove(0);
            self.state.save(state)?;
        }
        Ok(dropped)
    }

    /// Sends `payload` as the next message: from the recipient to the sender, or from the
    /// sender to `to` (default: every recipient).
    pub async fn send(
        &self,
        id: &MailboxId,
        payload: &[u8],
        to: Option<PublicKey>,
    ) -> Result<Vec<Sent>, ClientError> {
        let mut state = self.state.load(id)?;
        if let Party::Sender(session) = &mut state.party {
            self.refresh_sender(session).await?;
        }
        self.flush_outbox(&mut state).await?;
        let now = self.now();
        let mut rng = rng();
        let mut request_id = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng, &mut request_id);
        let sealed: Vec<Message> = match &mut state.party {
            Party::Sender(session) => {
                let targets: Vec<PublicKey> = match to {
                    Some(key) => vec![key],
                    None => session.recipients().iter().map(|r| r.key).collect(),
                };
                if targets.is_empty() {
                    return Err(ClientError::Usage(
                        "nobody has claimed this share yet; try again after the recipient accepts"
                            .into(),
                    ));
                }
                targets
                    .iter()
                    .map(|t| session.seal(t, payload, request_id, now, &mut rng))
                    .collect::<Result<_, _>>()?
            }
            Party::Recipient(session) => {
                if to.is_some() {
                    return Err(ClientError::Usage(
                        "a recipient always sends to the sender".into(),
                    ));
                }
                vec![session.seal(payload, request_id, now, &mut rng)?]
            }
        };
        let sent = sealed
            .iter()
            .map(|m| Sent {
                to: m.header().to,
                seq: m.header().seq,
            })
            .collect();
        state.outbox.extend(sealed);
        self.state.save(&state)?;
        self.flush_outbox(&mut state).await?;
        Ok(sent)
    }

    /// Fetches new messages, waiting up to `wait` for the first one; delivers in order.
    pub async fn recv(&self, id: &MailboxId, wait: Duration) -> Result<Received, ClientError> {
        let mut state = self.state.load(id)?;
        let mut contested = false;
        let now = self.now();
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let fetch = match &mut state.party {
            Party::Sender(session) => {
                let view = self.refresh_sender(session).await?;
                contested = view.status.contested;
                let cursor = session.cursor();
                flow::fetch(|scope| session.read_request(now, scope), cursor, wait_ms)?
            }
            Party::Recipient(session) => {
                if !session.is_recipient() {
                    return Err(ClientError::Usage(
                        "this share is not claimed yet: run `tigress accept` first".into(),
                    ));
                }
                let cursor = session.cursor();
                flow::fetch(|scope| session.read_request(now, scope), cursor, wait_ms)?
            }
        };
        let messages = flow::fetched(self.conn.request(fetch).await?)?;
        let mut delivered = Vec::new();
        for m in &messages {
            let got = match &mut state.party {
                Party::Sender(s) => s.receive(m),
                Party::Recipient(r) => r.receive(m),
            };
            match got {
                Ok(d) => delivered.extend(d),
                Err(e) => tracing::warn!(error = %e, "ignoring an invalid message from the node"),
            }
        }
        self.state.save(&state)?;
        Ok(Received {
            messages: delivered,
            contested,
        })
    }

    /// Deletes the mailbox (the sender, or a recipient with the delete right).
    pub async fn delete(&self, id: &MailboxId) -> Result<(), ClientError> {
        let state = self.state.load(id)?;
        let (delete, genesis) = match &state.party {
            Party::Sender(s) => (s.delete(self.now()), s.genesis()),
            Party::Recipient(r) => (r.delete(self.now()), r.genesis()),
        };
        let record = delete.digest();
        self.stored(flow::delete(delete), genesis, record)
            .await
            .map(|_| ())
    }

    /// Gives this recipient's slot back.
    pub async fn relinquish(&self, id: &MailboxId) -> Result<(), ClientError> {
        let state = self.state.load(id)?;
        let Party::Recipient(r) = &state.party else {
            return Err(ClientError::Usage("only a recipient can relinquish".into()));
        };
        let relinquish = r.relinquish(self.now());
        let record = relinquish.digest();
        self.stored(
            ClientRequest::Relinquish { relinquish },
            r.genesis(),
            record,
        )
        .await
        .map(|_| ())
    }

    /// Settles a contest by keeping the claimant whose key is `keep`.
    pub async fn resolve(&self, id: &MailboxId, keep: &[PublicKey]) -> Result<(), ClientError> {
        let mut state = self.state.load(id)?;
        let Party::Sender(session) = &mut state.party else {
            return Err(ClientError::Usage("only the sender can resolve".into()));
        };
        let view = self.refresh_sender(session).await?;
        let claims = keep
            .iter()
            .map(|k| {
                view.claims
                    .iter()
                    .find(|c| c.body.recipient == *k)
                    .cloned()
                    .ok_or_else(|| ClientError::Usage(format!("no claimant with key {k}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let resolve = session.resolve(claims, &self.limits, self.now())?;
        let genesis = session.genesis().clone();
        self.state.save(&state)?;
        let record = resolve.digest();
        self.stored(ClientRequest::Resolve { resolve }, &genesis, record)
            .await
            .map(|_| ())
    }

    /// The claimants known for a share this device sent (for `resolve`).
    pub async fn claimants(&self, id: &MailboxId) -> Result<Vec<PublicKey>, ClientError> {
        let mut state = self.state.load(id)?;
        let Party::Sender(session) = &mut state.party else {
            return Err(ClientError::Usage("only the sender lists claimants".into()));
        };
        let view = self.refresh_sender(session).await?;
        Ok(view.claims.iter().map(|c| c.body.recipient).collect())
    }
}

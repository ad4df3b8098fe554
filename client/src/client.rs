//! The client: share operations for both roles, on top of a [`Connection`] and a
//! [`StateDir`]. Every rule is the protocol crate's; this module moves records and keeps
//! the device's state.

use std::net::IpAddr;
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
use crate::oblivious::{Directory, KeyCache, Route};
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

/// A client of the tigress network, bound to the node the user named and one state
/// directory.
///
/// By default every operation on a mailbox is an oblivious request
/// ([`crate::oblivious`]): a fresh connection to a relay, the request sealed to a target
/// among the mailbox's nodes, so no single node learns both who asks and what about. In
/// a network of one node (no one to hide from), and with [`Client::connect_direct`],
/// requests go straight to the named node (the entry).
///
/// A second path checks the first: the client confirms the replica set an entry names
/// with another entry (or target), and retries a write whose acknowledgements do not
/// prove it was stored through another. Direct clients take their second entries from
/// [`Client::with_alternates`].
#[derive(Debug, Clone)]
pub struct Client {
    home: Multiaddr,
    /// The connection to the entry, for a direct client.
    direct: Option<Connection>,
    /// What the named node says about the network, for an oblivious client.
    directory: Option<Arc<Directory>>,
    /// Whether the client went direct because only one node is known.
    alone: bool,
    keys: KeyCache,
    alternates: Vec<Multiaddr>,
    state: StateDir,
    limits: Limits,
    clock: ClientClock,
    /// The local address connections leave from (the kernel's choice when `None`).
    source: Option<IpAddr>,
}

/// Where a client reads the time: the system clock, or one a test moves.
#[derive(Clone)]
struct ClientClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl std::fmt::Debug for ClientClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientClock")
    }
}

/// How long a client keeps the network directory it fetched from the named node.
pub const DIRECTORY_MAX_AGE_SECS: u64 = 600;

/// How one operation reaches the network.
enum Via {
    /// Straight to the entry (alternates are second entries).
    Direct(Connection),
    /// Through a relay to targets among the mailbox's nodes.
    Oblivious(Route),
}

impl Via {
    async fn request(&self, request: ClientRequest) -> Result<ClientResponse, ClientError> {
        let answer = match self {
            Via::Direct(c) => c.request(request).await,
            Via::Oblivious(r) => r.request(request).await,
        };
        match answer {
            Ok(ClientResponse::AdmissionRequired { bits }) => Err(ClientError::Admission { bits }),
            other => other,
        }
    }
}

/// `create` with a proof of `bits` of work for `genesis`, found on a blocking thread (what
/// a node asks, in `AdmissionRequired`, before it stores a new mailbox).
pub async fn with_admission(
    create: ClientRequest,
    genesis: &Genesis,
    bits: u8,
) -> Result<ClientRequest, ClientError> {
    let digest = genesis.digest();
    let nonce = tokio::task::spawn_blocking(move || {
        tigress_protocol::admission::solve_from(&digest, bits, getrandom::u64().unwrap_or(0))
    })
    .await
    .ok()
    .flatten()
    .ok_or(ClientError::Admission { bits })?;
    Ok(match create {
        ClientRequest::Create { genesis, .. } => ClientRequest::Create {
            genesis,
            admission: nonce,
        },
        other => other,
    })
}

impl Client {
    /// Connects to the node at `addr` and uses `state` for per-share state; requests are
    /// oblivious when the node knows others, direct otherwise (see [`Client::is_alone`]).
    ///
    /// The directory (the named node's `Info` and the nodes it knows) is kept in the state
    /// directory for [`DIRECTORY_MAX_AGE_SECS`]: within that time a run does not contact
    /// the named node at all unless it picks it as a relay, so that node cannot tell from
    /// a directory fetch when an operation follows.
    pub async fn connect(addr: &Multiaddr, state: StateDir) -> Result<Self, ClientError> {
        Self::connect_from(addr, state, None).await
    }

    /// Like [`Client::connect`], with every connection leaving from the local address
    /// `source` when given (a host with several addresses).
    pub async fn connect_from(
        addr: &Multiaddr,
        state: StateDir,
        source: Option<IpAddr>,
    ) -> Result<Self, ClientError> {
        let home = addr.to_string();
        let now = unix_now();
        if let Some(directory) = state.load_directory(&home, now, DIRECTORY_MAX_AGE_SECS)
            && directory.has_others(&directory.info.node_key)
        {
            let mut client = Self::with_state(addr, state, source);
            client.directory = Some(Arc::new(directory));
            return Ok(client);
        }
        let conn = Connection::connect_from(addr, source).await?;
        let directory = Directory::fetch(&conn).await?;
        let key = crate::oblivious::key_of(&conn.peer_id());
        let alone = key.is_none_or(|h| !directory.has_others(&h));
        let mut client = Self::with_state(addr, state, source);
        if alone {
            client.direct = Some(conn);
            client.alone = true;
        } else {
            if let Err(e) = client.state.save_directory(&home, now, &directory) {
                tracing::debug!(error = %e, "the directory could not be kept");
            }
            client.directory = Some(Arc::new(directory));
        }
        Ok(client)
    }

    /// Connects to the node at `addr` as the entry of every request (no relay).
    pub async fn connect_direct(addr: &Multiaddr, state: StateDir) -> Result<Self, ClientError> {
        Self::connect_direct_from(addr, state, None).await
    }

    /// Like [`Client::connect_direct`], leaving from the local address `source` when given.
    pub async fn connect_direct_from(
        addr: &Multiaddr,
        state: StateDir,
        source: Option<IpAddr>,
    ) -> Result<Self, ClientError> {
        let mut client = Self::with_state(addr, state, source);
        client.direct = Some(Connection::connect_from(addr, source).await?);
        Ok(client)
    }

    fn with_state(addr: &Multiaddr, state: StateDir, source: Option<IpAddr>) -> Self {
        Self {
            home: addr.clone(),
            direct: None,
            directory: None,
            alone: false,
            keys: KeyCache::default(),
            alternates: Vec::new(),
            state,
            limits: Limits::default(),
            clock: ClientClock(Arc::new(unix_now)),
            source,
        }
    }

    /// Whether requests are oblivious.
    pub fn is_oblivious(&self) -> bool {
        self.directory.is_some()
    }

    /// Whether the client went direct because the named node knows no other node (a
    /// network of one has no one to hide from).
    pub fn is_alone(&self) -> bool {
        self.alone
    }

    /// The way to the network for an operation on `address`.
    async fn via(&self, address: &Address) -> Result<Via, ClientError> {
        match (&self.direct, &self.directory) {
            (Some(conn), _) => Ok(Via::Direct(conn.clone())),
            (None, Some(dir)) => Ok(Via::Oblivious(
                Route::open(
                    &self.home,
                    dir,
                    address,
                    usize::from(dir.info.replication),
                    self.keys.clone(),
                    self.source,
                )
                .await?,
            )),
            (None, None) => Err(ClientError::Unreachable("not connected".into())),
        }
    }

    /// How many second paths `via` has.
    fn seconds(&self, via: &Via) -> usize {
        match via {
            Via::Direct(_) => self.alternates.len(),
            Via::Oblivious(r) => r.seconds(),
        }
    }

    /// `request` through the `i`-th second path: another entry, or another target. `None`
    /// when that path is not there.
    async fn second(
        &self,
        via: &Via,
        i: usize,
        request: ClientRequest,
    ) -> Option<Result<ClientResponse, ClientError>> {
        match via {
            Via::Direct(conn) => {
                let alt = self.alternate(i, conn).await?;
                Some(alt.request(request).await)
            }
            Via::Oblivious(r) => r.request_second(i, request).await,
        }
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
    async fn alternate(&self, i: usize, entry: &Connection) -> Option<Connection> {
        let addr = self.alternates.get(i)?;
        match Connection::connect_from(addr, self.source).await {
            Ok(c) if c.peer_id() != entry.peer_id() => Some(c),
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
        via: &Via,
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
        for i in 0..self.seconds(via) {
            let Some(Ok(ClientResponse::Located {
                replicas: second,
                standbys: second_standbys,
            })) = self
                .second(via, i, ClientRequest::Locate { address: *address })
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

    /// The connection to the entry, for a direct client.
    pub fn connection(&self) -> Option<&Connection> {
        self.direct.as_ref()
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The named node's information.
    pub async fn info(&self) -> Result<NodeInfo, ClientError> {
        if let Some(dir) = &self.directory {
            return Ok(dir.info.clone());
        }
        let conn = self
            .direct
            .as_ref()
            .ok_or_else(|| ClientError::Unreachable("not connected".into()))?;
        match conn.request(ClientRequest::Info).await? {
            ClientResponse::Info(info) => Ok(info),
            _ => Err(ClientError::UnexpectedResponse("info".into())),
        }
    }

    /// The public status of a mailbox: its state and counts, no keys.
    pub async fn status(&self, address: Address) -> Result<PublicStatus, ClientError> {
        let via = self.via(&address).await?;
        match via.request(ClientRequest::Status { address }).await? {
            ClientResponse::Status(s) => Ok(s),
            _ => Err(ClientError::UnexpectedResponse("status".into())),
        }
    }

    /// A party's status of its mailbox (recipient keys and message count), read with its
    /// signed request: `None` when this device is not a party of it or may not read.
    pub async fn party_status(&self, id: &MailboxId) -> Result<Option<MailboxStatus>, ClientError> {
        if !self.state.contains(id) {
            return Ok(None);
        }
        let mut state = self.state.load(id)?;
        let via = self.via(&id.address()).await?;
        let view = match &mut state.party {
            Party::Sender(session) => self.refresh_sender(&via, session).await,
            Party::Recipient(session) if session.is_recipient() => {
                let request = session.read_request(self.now(), ReadScope::View);
                let answer = via.request(ClientRequest::Read { request }).await?;
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
        via: &Via,
        request: ClientRequest,
        genesis: &Genesis,
        record: [u8; 32],
    ) -> Result<bool, ClientError> {
        let first = flow::stored(via.request(request.clone()).await?, genesis, &record);
        let err = match first {
            Ok(duplicate) => return Ok(duplicate),
            Err(flow::FlowError::Protocol(e @ tigress_protocol::Error::Unacknowledged { .. })) => e,
            Err(e) => return Err(e.into()),
        };
        tracing::warn!(error = %err, "the entry node's answer does not prove the write; retrying through another entry");
        for i in 0..self.seconds(via) {
            let Some(Ok(answer)) = self.second(via, i, request.clone()).await else {
                continue;
            };
            if let Ok(duplicate) = flow::stored(answer, genesis, &record) {
                return Ok(duplicate);
            }
        }
        Err(flow::FlowError::Protocol(err).into())
    }

    /// Creates a share of `payload`; the invitation's base is `base_url` or the public URL
    /// of the node this client was connected to (never that of a relay or a target).
    pub async fn share(
        &self,
        payload: &[u8],
        options: &ShareOptions,
        base_url: Option<&str>,
    ) -> Result<Shared, ClientError> {
        let info = self.info().await?;
        let mut rng = rng();
        let identity = ShareIdentity::random(&mut rng);
        let via = self.via(&identity.address()).await?;
        let located = via.request(flow::locate(&identity)).await?;
        let located = self
            .confirm_locate(
                &via,
                &identity.address(),
                located,
                usize::from(info.replication),
            )
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
            return Err(ClientError::UnexpectedResponse("sender state".into()));
        };
        // The proof of work the node asks for a new mailbox: as its information says,
        // and again as its refusal says if that rose meanwhile (never past MAX_BITS).
        let genesis = session.genesis().clone();
        let mut bits = info.admission_bits;
        let mut create = create;
        loop {
            if bits > 0 {
                create = with_admission(create, &genesis, bits).await?;
            }
            match self
                .stored(&via, create.clone(), &genesis, genesis.digest())
                .await
            {
                Err(ClientError::Admission { bits: asked })
                    if tigress_protocol::admission::work_again(bits, asked) =>
                {
                    bits = asked;
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        Ok(Shared {
            share_id: url.mailbox_id(),
            url,
            expires_at,
        })
    }

    /// Opens and claims an invitation; returns the first payload.
    pub async fn accept(&self, url: &ShareUrl) -> Result<Vec<u8>, ClientError> {
        let id = url.mailbox_id();
        let via = self.via(&id.address()).await?;
        let mut state = if self.state.contains(&id) {
            self.state.load(&id)?
        } else {
            let genesis = flow::genesis(via.request(flow::open(url, self.now())).await?)?;
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
            match via.request(flow::claim(session)).await {
                Ok(answer) => flow::certified(session, answer, &self.limits, self.now())?,
                // A contest the sender settled in this claimant's favour: the resolve in
                // the mailbox makes it a recipient.
                Err(ClientError::Remote(e)) if e.code == tigress_protocol::ErrorCode::Conflict => {
                    let request = session.read_request(self.now(), ReadScope::View);
                    let kept = match via.request(ClientRequest::Read { request }).await {
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
            return Err(ClientError::UnexpectedResponse("recipient state".into()));
        };
        Ok(session.first_payload()?)
    }

    /// Reads the sender's view and rebuilds the recipients from it. A view showing more
    /// recipients than the policy allows is refused as contested; a replica it proves
    /// lying is reported to the entry node.
    async fn refresh_sender(
        &self,
        via: &Via,
        session: &mut SenderSession,
    ) -> Result<MailboxView, ClientError> {
        let request = session.read_request(self.now(), ReadScope::View);
        let answer = via.request(ClientRequest::Read { request }).await?;
        match flow::learn(session, answer, &self.limits, self.now()) {
            Err(flow::FlowError::Contested(proofs)) => {
                for proof in &proofs {
                    tracing::warn!(replica = %proof.liar(), "a replica is proven to have lied; reporting it");
                    let _ = via.request(flow::report(proof.clone())).await;
                }
                Err(flow::FlowError::Contested(proofs).into())
            }
            other => Ok(other?),
        }
    }

    /// Sends the outbox in order. A sender's message to a key that is no longer a
    /// recipient (it relinquished) can never be stored: it is dropped and reported, so it
    /// does not hold back the messages behind it.
    async fn flush_outbox(
        &self,
        via: &Via,
        state: &mut ShareState,
    ) -> Result<Vec<Sent>, ClientError> {
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
            self.stored(via, flow::send(message), &genesis, record)
                .await?;
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
        let via = self.via(&id.address()).await?;
        if let Party::Sender(session) = &mut state.party {
            self.refresh_sender(&via, session).await?;
        }
        self.flush_outbox(&via, &mut state).await?;
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
        self.flush_outbox(&via, &mut state).await?;
        Ok(sent)
    }

    /// Fetches new messages, waiting up to `wait` for the first one; delivers in order.
    pub async fn recv(&self, id: &MailboxId, wait: Duration) -> Result<Received, ClientError> {
        let mut state = self.state.load(id)?;
        let via = self.via(&id.address()).await?;
        let mut contested = false;
        let now = self.now();
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let fetch = match &mut state.party {
            Party::Sender(session) => {
                let view = self.refresh_sender(&via, session).await?;
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
        let messages = flow::fetched(via.request(fetch).await?)?;
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
        let via = self.via(&id.address()).await?;
        let (delete, genesis) = match &state.party {
            Party::Sender(s) => (s.delete(self.now()), s.genesis()),
            Party::Recipient(r) => (r.delete(self.now()), r.genesis()),
        };
        let record = delete.digest();
        self.stored(&via, flow::delete(delete), genesis, record)
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
        let via = self.via(&id.address()).await?;
        self.stored(
            &via,
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
        let via = self.via(&id.address()).await?;
        let view = self.refresh_sender(&via, session).await?;
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
        self.stored(&via, ClientRequest::Resolve { resolve }, &genesis, record)
            .await
            .map(|_| ())
    }

    /// The claimants known for a share this device sent (for `resolve`).
    pub async fn claimants(&self, id: &MailboxId) -> Result<Vec<PublicKey>, ClientError> {
        let mut state = self.state.load(id)?;
        let Party::Sender(session) = &mut state.party else {
            return Err(ClientError::Usage("only the sender lists claimants".into()));
        };
        let via = self.via(&id.address()).await?;
        let view = self.refresh_sender(&via, session).await?;
        Ok(view.claims.iter().map(|c| c.body.recipient).collect())
    }
}

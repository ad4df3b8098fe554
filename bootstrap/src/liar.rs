//! Lying nodes, for tests and for `tigress-cluster up --byzantine K --behaviour B`: each
//! behaviour is a pair of test doubles ([`tigress_node::Doubles`]) that a development
//! build (`tigress-liar`) or a test plugs into an otherwise honest node. The shipped
//! `tigress-node` has no way to lie.

use std::sync::Arc;

use rand_core::UnwrapErr;
use tigress_node::entry::ClientFilter;
use tigress_node::replica::ResponseFilter;
use tigress_node::{Doubles, NodeIdentity};
use tigress_protocol::Address;
use tigress_protocol::crypto::{AeadAlgorithm, HpkeKeyPair, HpkeSuite, PublicKey, SigningKey};
use tigress_protocol::crypto::{aead::NONCE_LEN, aead::TAG_LEN};
use tigress_protocol::record::{
    Ack, Genesis, GenesisBody, GenesisHeader, Policy, Receipt, ReceiptBody, Record, SealedPayload,
};
use tigress_protocol::rpc::{ClientRequest, ClientResponse, ReplicaRequest, ReplicaResponse};
use tigress_protocol::wire::{BoundedBytes, BoundedVec, FORMAT_VERSION};

/// How a node lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Behaviour {
    /// Does not lie.
    Honest,
    /// As a replica, grants every claimant slot 0, as if it had granted nothing.
    Equivocate,
    /// As a replica, answers genesis requests with a genesis of its own making for the
    /// address (naming itself as the only replica).
    ForgeGenesis,
    /// As a replica, answers fetches with nothing.
    Withhold,
    /// As an entry, acknowledges writes without storing them (with its own
    /// acknowledgement only).
    DropWrites,
    /// As an entry, names itself and its fellow liars as the replica set of any address.
    LieLocate,
    /// A node whose peer ID is ground to be near one address, lying as a replica every
    /// way above.
    Sybil,
    /// As a replica, answers every request with "gone", as if each mailbox had been
    /// deleted (a refusal that would end a transfer if one node's word were taken).
    SayGone,
}

impl Behaviour {
    /// The name `cluster.json` and the flags use.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Honest => "honest",
            Behaviour::Equivocate => "equivocate",
            Behaviour::ForgeGenesis => "forge-genesis",
            Behaviour::Withhold => "withhold",
            Behaviour::DropWrites => "drop-writes",
            Behaviour::LieLocate => "lie-locate",
            Behaviour::Sybil => "sybil",
            Behaviour::SayGone => "say-gone",
        }
    }

    /// The test doubles of this behaviour for the node with `identity`; `fellows` are the
    /// other liars (named by a lying locate).
    pub fn doubles(self, identity: &NodeIdentity, fellows: &[PublicKey]) -> Doubles {
        let key = identity.signing.clone();
        let replica = |lies: ReplicaLies| Some(Arc::new(lies) as Arc<dyn ResponseFilter>);
        match self {
            Behaviour::Honest => Doubles::default(),
            Behaviour::Equivocate => Doubles {
                replica: replica(ReplicaLies::new(key).equivocate()),
                entry: None,
                ..Doubles::default()
            },
            Behaviour::ForgeGenesis => Doubles {
                replica: replica(ReplicaLies::new(key).forge_genesis()),
                entry: None,
                ..Doubles::default()
            },
            Behaviour::Withhold => Doubles {
                replica: replica(ReplicaLies::new(key).withhold()),
                entry: None,
                ..Doubles::default()
            },
            Behaviour::Sybil => Doubles {
                replica: replica(
                    ReplicaLies::new(key)
                        .equivocate()
                        .forge_genesis()
                        .withhold(),
                ),
                entry: None,
                ..Doubles::default()
            },
            Behaviour::SayGone => Doubles {
                replica: replica(ReplicaLies::new(key).say_gone()),
                entry: None,
                ..Doubles::default()
            },
            Behaviour::DropWrites => Doubles {
                replica: None,
                entry: Some(Arc::new(EntryLies::DropWrites(key))),
                ..Doubles::default()
            },
            Behaviour::LieLocate => {
                let mut set = vec![key.public_key()];
                set.extend(fellows.iter().copied());
                Doubles {
                    replica: None,
                    entry: Some(Arc::new(EntryLies::LieLocate(set))),
                    ..Doubles::default()
                }
            }
        }
    }
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A node key whose peer ID lies nearer to `address` than `rank` of `others` (ground by
/// drawing keys until one is): a Sybil's identity.
pub fn ground_near(address: &Address, others: &[PublicKey], rank: usize) -> [u8; 32] {
    let mut ranked: Vec<[u8; 32]> = others
        .iter()
        .map(|k| tigress_protocol::placement::distance(k, address))
        .collect();
    ranked.sort();
    let bar = ranked
        .get(rank.min(ranked.len().saturating_sub(1)))
        .copied()
        .unwrap_or([0xff; 32]);
    grind(address, |d| *d < bar)
}

/// A replica's lies.
struct ReplicaLies {
    key: SigningKey,
    equivocate: bool,
    forge_genesis: bool,
    withhold: bool,
    say_gone: bool,
}

impl ReplicaLies {
    fn new(key: SigningKey) -> Self {
        Self {
            key,
            equivocate: false,
            forge_genesis: false,
            withhold: false,
            say_gone: false,
        }
    }

    fn equivocate(mut self) -> Self {
        self.equivocate = true;
        self
    }

    fn forge_genesis(mut self) -> Self {
        self.forge_genesis = true;
        self
    }

    fn withhold(mut self) -> Self {
        self.withhold = true;
        self
    }

    fn say_gone(mut self) -> Self {
        self.say_gone = true;
        self
    }

    /// A genesis for `address` made by this node, naming itself as the only replica.
    fn forged(&self, address: Address) -> Genesis {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let claim = SigningKey::generate(&mut rng);
        let now = tigress_client::unix_now();
        let mut nonce = [0u8; NONCE_LEN];
        rand_core::Rng::fill_bytes(&mut rng, &mut nonce);
        let mut ciphertext = vec![0u8; 256 + TAG_LEN];
        rand_core::Rng::fill_bytes(&mut rng, &mut ciphertext);
        let body = GenesisBody {
            header: GenesisHeader {
                version: FORMAT_VERSION,
                address,
                created_at: now,
                expires_at: now + 3600,
                sender: self.key.public_key(),
                sender_hpke: HpkeKeyPair::generate(HpkeSuite::default(), &mut rng)
                    .public_key()
                    .clone(),
                claim_key: claim.public_key(),
                replicas: BoundedVec::truncated(vec![self.key.public_key()]),
                standbys: BoundedVec::default(),
                fault_tolerance: 0,
                policy: Policy::default(),
                display: None,
                attestation: None,
            },
            payload: SealedPayload {
                algorithm: AeadAlgorithm::default(),
                nonce,
                ciphertext: BoundedBytes::new(ciphertext).unwrap_or_default(),
            },
        };
        Genesis::sign(body, &self.key, &claim)
    }
}

impl ResponseFilter for ReplicaLies {
    fn filter(&self, request: &ReplicaRequest, response: ReplicaResponse) -> ReplicaResponse {
        if self.say_gone {
            return ReplicaResponse::Error(tigress_protocol::rpc::RemoteError::new(
                tigress_protocol::ErrorCode::Gone,
                "the mailbox expired or was deleted",
            ));
        }
        match request {
            ReplicaRequest::Grant { claim } if self.equivocate => {
                if matches!(response, ReplicaResponse::Granted(_)) {
                    return response;
                }
                // Refused (the slot is taken): grant it anyway.
                ReplicaResponse::Granted(Receipt::sign(
                    ReceiptBody {
                        version: FORMAT_VERSION,
                        address: claim.body.address,
                        replica: self.key.public_key(),
                        recipient: claim.body.recipient,
                        slot: 0,
                        epoch: 0,
                        retired: tigress_protocol::takeover::Retired::NONE,
                        claim_digest: claim.digest(),
                        granted_at: claim.body.claimed_at,
                    },
                    &self.key,
                ))
            }
            ReplicaRequest::GetGenesis { access } if self.forge_genesis => {
                ReplicaResponse::Genesis(self.forged(access.address()))
            }
            ReplicaRequest::Open { request } if self.forge_genesis => {
                ReplicaResponse::Genesis(self.forged(request.body.address))
            }
            ReplicaRequest::Fetch { .. } if self.withhold => ReplicaResponse::Messages {
                messages: BoundedVec::default(),
            },
            _ => response,
        }
    }
}

/// An entry's lies.
enum EntryLies {
    /// Acknowledge writes without carrying them out.
    DropWrites(SigningKey),
    /// Name these nodes as every replica set.
    LieLocate(Vec<PublicKey>),
}

impl ClientFilter for EntryLies {
    fn intercept(&self, request: &ClientRequest) -> Option<ClientResponse> {
        match self {
            EntryLies::DropWrites(key) => {
                let (address, record) = match request {
                    ClientRequest::Create { genesis, .. } => {
                        (genesis.header().address, genesis.digest())
                    }
                    ClientRequest::Send { message } => (message.header().address, message.digest()),
                    ClientRequest::Delete { delete } => (delete.body.address, delete.digest()),
                    ClientRequest::Relinquish { relinquish } => {
                        (relinquish.body.address, relinquish.digest())
                    }
                    ClientRequest::Resolve { resolve } => (resolve.body.address, resolve.digest()),
                    _ => return None,
                };
                Some(ClientResponse::Stored {
                    duplicate: false,
                    acks: BoundedVec::truncated(vec![Ack::sign(address, record, key)]),
                })
            }
            EntryLies::LieLocate(set) => match request {
                ClientRequest::Locate { .. } => Some(ClientResponse::Located {
                    replicas: BoundedVec::truncated(set.clone()),
                    standbys: BoundedVec::default(),
                }),
                _ => None,
            },
        }
    }
}

/// Leading zero bits of XOR distance a ground Sybil identity has to its address (one key
/// in 4 096 is that near: nearer than every node of a network of a few thousand).
pub const SYBIL_BITS: u32 = 12;

/// A node key whose peer ID shares at least `bits` leading bits with `address` in the
/// DHT's key space (XOR distance below 2^(256 − bits)).
pub fn ground_within(address: &Address, bits: u32) -> [u8; 32] {
    grind(address, |d| {
        let zeros = d.iter().position(|b| *b != 0).map_or(256, |i| {
            u32::try_from(i).unwrap_or(0) * 8 + d.get(i).map_or(0, |b| b.leading_zeros())
        });
        zeros >= bits
    })
}

/// Draws node keys until one's XOR distance to `address` satisfies `near`.
fn grind(address: &Address, near: impl Fn(&[u8; 32]) -> bool) -> [u8; 32] {
    let mut rng = UnwrapErr(getrandom::SysRng);
    loop {
        let mut seed = [0u8; 32];
        rand_core::Rng::fill_bytes(&mut rng, &mut seed);
        let key = SigningKey::from_seed(&seed).public_key();
        if near(&tigress_protocol::placement::distance(&key, address)) {
            return seed;
        }
    }
}

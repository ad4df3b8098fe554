//! `tigress-protocol`: the sans-IO core of the tigress relay network.
//!
//! This crate decides what is valid. It holds the identifiers and the invitation URL
//! ([`id`], [`invitation`]), every cryptographic operation behind one provider
//! ([`crypto`]), the signed records and their canonical, bounded encoding ([`record`],
//! [`wire`]), the mailbox state machine every replica runs ([`mailbox`]), the two
//! parties' sessions ([`session`]), the wire formats of the client and replica
//! protocols with their framing ([`rpc`]), and the coordination between nodes: a replica
//! answering a request ([`replica`]), an entry node's quorums over the replicas and the
//! merge of their answers ([`quorum`]), and what anti-entropy copies ([`reconcile`]).
//!
//! It is not a node or a client: it does no I/O, starts no runtime, reads no clock and no
//! system randomness. Time comes in as `now` (unix seconds) and randomness as a
//! [`crypto::CryptoRng`], so everything here is deterministic under test.
//!
//! ```
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use tigress_protocol::crypto::SigningKey;
//! use tigress_protocol::mailbox::{tally_claim, ClaimTally, Limits, MailboxState};
//! use tigress_protocol::session::{RecipientSession, SenderSession, ShareIdentity, ShareOptions};
//! use tigress_protocol::invitation::ShareUrl;
//!
//! let mut rng = ChaCha20Rng::from_seed([7; 32]);
//! let limits = Limits::default();
//! let now = 1_800_000_000;
//! let replica = SigningKey::generate(&mut rng);
//!
//! // The sender creates the share; a replica stores the genesis.
//! let identity = ShareIdentity::random(&mut rng);
//! let (mut sender, url) = SenderSession::create(
//!     identity, "https://relay.example", vec![replica.public_key()], b"car key",
//!     &ShareOptions::default(), now, &mut rng,
//! )?;
//! let mut state = MailboxState::create(sender.genesis().clone(), &limits, now)?;
//!
//! // The recipient opens the invitation and claims; the replica grants.
//! let url = ShareUrl::parse(&url.expose_url()).unwrap();
//! let (mut recipient, first) =
//!     RecipientSession::open(&url, state.genesis().clone(), &limits, now, &mut rng)?;
//! assert_eq!(first, b"car key");
//! let (receipt, _) = state.grant(recipient.claim(), &replica, &limits, now)?;
//! let ClaimTally::Certified(cert) = tally_claim(state.genesis(), recipient.claim(), &[receipt])
//!     else { panic!("one replica is a majority of one") };
//! state.accept_certificate(&cert, &limits, now)?;
//! recipient.accept_certificate((*cert).clone(), &limits, now)?;
//! sender.add_certificate(&cert, &limits, now)?;
//!
//! // A round trip.
//! let msg = recipient.seal(b"device info", [1; 16], now, &mut rng)?;
//! state.apply_message(&msg, &limits, now)?;
//! assert_eq!(sender.receive(&msg)?[0].plaintext, b"device info");
//! # Ok::<(), tigress_protocol::Error>(())
//! ```

#![warn(missing_docs)]

pub mod admission;
pub mod crypto;
pub mod error;
pub mod flow;
pub mod id;
pub mod invitation;
pub mod mailbox;
pub mod oblivious;
pub mod placement;
pub mod quorum;
pub mod reconcile;
pub mod record;
pub mod replica;
pub mod rpc;
pub mod session;
pub mod takeover;
pub mod wire;

pub use error::{Error, ErrorCode};
pub use id::{Address, MailboxId, Secret};
pub use invitation::{ShareUrl, UrlError, Vertical};

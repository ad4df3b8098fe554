//! The two parties of a share, sans-IO: what the sender and the recipient compute.
//!
//! A [`SenderSession`] creates a share (genesis + invitation), learns its recipients from
//! their certificates, and seals and opens messages. A [`RecipientSession`] opens an
//! invitation (derives the keys, verifies the genesis, decrypts the first payload), makes
//! the claim, and then does the same with messages. Both deliver incoming messages strictly
//! in order per direction, holding back anything after a gap until the gap fills.
//!
//! Sessions are plain data: [`SenderSession::to_bytes`] and friends let a client persist
//! them (they contain secrets: store them privately).

use std::collections::BTreeMap;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::crypto::aead::NONCE_LEN;
use crate::crypto::{
    self, AeadAlgorithm, HpkeContext, HpkeKeyPair, HpkeSuite, PublicKey, SigningKey, pad,
};
use crate::id::{Address, MailboxId, Secret};
use crate::invitation::{ShareUrl, Vertical};
use crate::mailbox::{self, Limits, Recipient};
use crate::record::{
    Claim, ClaimBody, ClaimCertificate, Delete, DisplayInfo, Genesis, GenesisBody, GenesisHeader,
    Message, MessageBody, MessageHeader, Policy, ReadRequest, ReadScope, Record, Relinquish,
    Resolve, ResolveBody, SealedPayload, UNKNOWN_GENESIS,
};
use crate::wire::{self, BoundedBytes, BoundedVec, FORMAT_VERSION};

/// What the sender chooses when creating a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOptions {
    /// Lifetime in seconds (default 24 h; at most the network's maximum).
    pub ttl_secs: u64,
    /// Recipients, rights and message limit.
    pub policy: Policy,
    /// Public display information for the preview page (none by default).
    pub display: Option<DisplayInfo>,
    /// An opaque device attestation.
    pub attestation: Option<Vec<u8>>,
    /// The AEAD of the first payload.
    pub aead: AeadAlgorithm,
    /// The HPKE suite of the device keys.
    pub hpke: HpkeSuite,
    /// The vertical named in the invitation.
    pub vertical: Vertical,
    /// How many lying replicas claims must withstand (`f`); `None`: the most the replica
    /// set allows ([`crate::record::max_fault_tolerance`]).
    pub fault_tolerance: Option<u8>,
    /// The standbys, in order (the nodes next nearest after the replicas): each can take
    /// over from a replica that leaves for good.
    pub standbys: Vec<PublicKey>,
}

impl Default for ShareOptions {
    fn default() -> Self {
        Self {
            ttl_secs: 24 * 3600,
            policy: Policy::default(),
            display: None,
            attestation: None,
            aead: AeadAlgorithm::default(),
            hpke: HpkeSuite::default(),
            vertical: Vertical::General,
            fault_tolerance: None,
            standbys: Vec::new(),
        }
    }
}

/// The identity of a new share: its mailbox ID and secret. Drawn first, so the sender can
/// locate the replicas of the address before it signs the genesis that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareIdentity {
    /// The mailbox ID.
    pub id: MailboxId,
    /// The secret.
    pub secret: Secret,
}

impl ShareIdentity {
    /// A fresh random mailbox ID and secret.
    pub fn random(rng: &mut impl CryptoRng) -> Self {
        Self {
            id: MailboxId::random(rng),
            secret: Secret::random(rng),
        }
    }

    /// The DHT address.
    pub fn address(&self) -> Address {
        self.id.address()
    }
}

/// A device's per-share keys: an Ed25519 signing key and an HPKE key pair.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceKeys {
    /// The signing key.
    pub signing: SigningKey,
    /// The HPKE key pair.
    pub hpke: HpkeKeyPair,
}

impl DeviceKeys {
    /// Fresh random keys.
    pub fn generate(suite: HpkeSuite, rng: &mut impl CryptoRng) -> Self {
        Self {
            signing: SigningKey::generate(rng),
            hpke: HpkeKeyPair::generate(suite, rng),
        }
    }

    /// Keys derived from 32 secret bytes (for a party that holds keys on behalf of a
    /// device, like the HTTP gateway): HKDF-SHA256 with the infos
    /// `tigress/v1/device/signing` and `tigress/v1/device/hpke`.
    pub fn derive(suite: HpkeSuite, seed: &[u8; 32]) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, seed);
        let mut signing = zeroize::Zeroizing::new([0u8; 32]);
        let mut hpke_ikm = zeroize::Zeroizing::new([0u8; 32]);
        // 32-byte outputs are far below HKDF's limit: expand cannot fail.
        let _ = hk.expand(b"tigress/v1/device/signing", signing.as_mut());
        let _ = hk.expand(b"tigress/v1/device/hpke", hpke_ikm.as_mut());
        Self {
            signing: SigningKey::from_seed(&signing),
            hpke: HpkeKeyPair::derive(suite, hpke_ikm.as_ref()),
        }
    }
}

/// A message opened and delivered in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The author's per-share key.
    pub from: PublicKey,
    /// The sequence number in the author's direction.
    pub seq: u64,
    /// The request ID the author gave.
    pub request_id: [u8; 16],
    /// When the author sent it (unix seconds).
    pub sent_at: u64,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// The message machinery both parties share: sequence numbers out, ordered delivery in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Channel {
    address: Address,
    genesis: [u8; 32],
    signing: SigningKey,
    hpke: HpkeKeyPair,
    next_out: BTreeMap<PublicKey, u64>,
    next_in: BTreeMap<PublicKey, u64>,
    held: BTreeMap<PublicKey, BTreeMap<u64, Delivered>>,
}

/// The most messages held back behind a gap per direction.
const MAX_HELD: usize = 64;

impl Channel {
    fn new(address: Address, genesis: [u8; 32], signing: SigningKey, hpke: HpkeKeyPair) -> Self {
        Self {
            address,
            genesis,
            signing,
            hpke,
            next_out: BTreeMap::new(),
            next_in: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    fn seal(
        &mut self,
        to: &Recipient,
        psk: &[u8; 32],
        plaintext: &[u8],
        request_id: [u8; 16],
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Message, Error> {
        let padded = pad::pad(plaintext)?;
        let seq = self.next_out.get(&to.key).copied().unwrap_or(1);
        let header = MessageHeader {
            version: FORMAT_VERSION,
            address: self.address,
            genesis: self.genesis,
            from: self.signing.public_key(),
            to: to.key,
            seq,
            request_id,
            sent_at: now,
        };
        let ctx_info = header.hpke_info();
        let ctx_aad = header.hpke_aad();
        let ctx = HpkeContext {
            info: &ctx_info,
            aad: &ctx_aad,
            psk,
            psk_id: self.address.as_bytes(),
        };
        let (enc, ciphertext) = crypto::hpke::seal(&to.hpke, &ctx, &padded, rng)?;
        let body = MessageBody {
            header,
            enc: BoundedBytes::new(enc).ok_or(Error::InvalidKey("hpke enc"))?,
            ciphertext: BoundedBytes::new(ciphertext).ok_or(Error::PayloadTooLarge {
                len: plaintext.len(),
                max: pad::MAX_PLAINTEXT,
            })?,
        };
        self.next_out.insert(to.key, seq.saturating_add(1));
        Ok(Message::sign(body, &self.signing))
    }

    fn receive(
        &mut self,
        msg: &Message,
        from_allowed: &[PublicKey],
        psk: &[u8; 32],
    ) -> Result<Vec<Delivered>, Error> {
        let h = msg.header();
        let next = self.next_in.get(&h.from).copied().unwrap_or(1);
        let already = self
            .held
            .get(&h.from)
            .is_some_and(|held| held.contains_key(&h.seq));
        if h.seq < next || already {
            // Delivered or held already; still refuse it if it is not valid at all.
            msg.check_shape()?;
            return Ok(Vec::new());
        }
        if self.held.get(&h.from).map_or(0, BTreeMap::len) >= MAX_HELD {
            return Err(Error::TooManyMessages {
                max: MAX_HELD as u16,
            });
        }
        let delivered = self.open(msg, from_allowed, psk)?;
        let held = self.held.entry(delivered.from).or_default();
        held.insert(delivered.seq, delivered);
        let mut out = Vec::new();
        let mut next = next;
        while let Some(d) = held.remove(&next) {
            out.push(d);
            next = next.saturating_add(1);
        }
        self.next_in.insert(h.from, next);
        Ok(out)
    }

    fn held_back(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }

    /// Verifies and opens one message, outside the ordered delivery.
    fn open(
        &self,
        msg: &Message,
        from_allowed: &[PublicKey],
        psk: &[u8; 32],
    ) -> Result<Delivered, Error> {
        msg.check_shape()?;
        let h = msg.header();
        if h.address != self.address {
            return Err(Error::WrongAddress);
        }
        if h.to != self.signing.public_key() {
            return Err(Error::WrongRecipient);
        }
        if !from_allowed.contains(&h.from) {
            return Err(Error::NotAParty);
        }
        msg.verify_signature()?;
        let info = h.hpke_info();
        let aad = h.hpke_aad();
        let ctx = HpkeContext {
            info: &info,
            aad: &aad,
            psk,
            psk_id: self.address.as_bytes(),
        };
        let padded = self.hpke.open(&ctx, &msg.body.enc, &msg.body.ciphertext)?;
        Ok(Delivered {
            from: h.from,
            seq: h.seq,
            request_id: h.request_id,
            sent_at: h.sent_at,
            plaintext: pad::unpad(padded)?,
        })
    }

    fn delete(&self, now: u64) -> Delete {
        Delete::sign(self.address, self.genesis, &self.signing, now)
    }

    fn read_request(&self, now: u64, scope: ReadScope) -> ReadRequest {
        ReadRequest::sign(self.address, self.genesis, &self.signing, now, scope)
    }

    fn cursor(&self, authors: &[PublicKey]) -> Vec<(PublicKey, u64)> {
        authors
            .iter()
            .map(|a| (*a, self.next_in.get(a).copied().unwrap_or(1)))
            .collect()
    }
}

/// The sender's side of one share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderSession {
    id: MailboxId,
    secret: Secret,
    vertical: Vertical,
    genesis: Genesis,
    recipients: Vec<Recipient>,
    channel: Channel,
}

impl SenderSession {
    /// Creates a share from its new identity (see [`ShareIdentity::random`]): fresh device
    /// keys, the genesis (naming `replicas`) with the first payload sealed, and the
    /// invitation on `base_url`.
    pub fn create(
        identity: ShareIdentity,
        base_url: &str,
        replicas: Vec<PublicKey>,
        payload: &[u8],
        options: &ShareOptions,
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, ShareUrl), Error> {
        let device = DeviceKeys::generate(options.hpke, rng);
        Self::create_with_device(
            identity, device, base_url, replicas, payload, options, now, rng,
        )
    }

    /// Like [`SenderSession::create`], with the device keys given.
    #[allow(clippy::too_many_arguments)]
    pub fn create_with_device(
        identity: ShareIdentity,
        device: DeviceKeys,
        base_url: &str,
        replicas: Vec<PublicKey>,
        payload: &[u8],
        options: &ShareOptions,
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, ShareUrl), Error> {
        let ShareIdentity { id, secret } = identity;
        let DeviceKeys { signing, hpke } = device;
        let url = invitation(base_url, id, options.vertical, &secret)?;
        let keys = secret.derive_keys(&id);
        let attestation = match &options.attestation {
            None => None,
            Some(a) => Some(BoundedBytes::new(a.clone()).ok_or(Error::InvalidField {
                field: "attestation",
                reason: "at most 8192 bytes",
            })?),
        };
        let header = GenesisHeader {
            version: FORMAT_VERSION,
            address: id.address(),
            created_at: now,
            expires_at: now.saturating_add(options.ttl_secs),
            sender: signing.public_key(),
            sender_hpke: hpke.public_key().clone(),
            claim_key: keys.claim.public_key(),
            fault_tolerance: options
                .fault_tolerance
                .unwrap_or_else(|| crate::record::max_fault_tolerance(replicas.len())),
            standbys: BoundedVec::new(
                options
                    .standbys
                    .iter()
                    .filter(|s| !replicas.contains(s))
                    .copied()
                    .collect(),
            )
            .ok_or(Error::InvalidField {
                field: "standbys",
                reason: "at most 8 standbys",
            })?,
            replicas: BoundedVec::new(replicas).ok_or(Error::InvalidField {
                field: "replicas",
                reason: "at most 16 replicas",
            })?,
            policy: options.policy,
            display: options.display.clone(),
            attestation,
        };
        let padded = pad::pad(payload)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let ciphertext =
            options
                .aead
                .seal(&keys.payload_key, &nonce, &header.payload_aad(), &padded);
        let body = GenesisBody {
            header,
            payload: SealedPayload {
                algorithm: options.aead,
                nonce,
                ciphertext: BoundedBytes::from_vec_unchecked(ciphertext),
            },
        };
        let genesis = Genesis::sign(body, &signing, &keys.claim);
        genesis.check_shape()?;
        let digest = genesis.digest();
        let session = Self {
            id,
            secret,
            vertical: options.vertical,
            genesis,
            recipients: Vec::new(),
            channel: Channel::new(id.address(), digest, signing, hpke),
        };
        Ok((session, url))
    }

    /// The first payload, decrypted from the genesis.
    pub fn first_payload(&self) -> Result<Vec<u8>, Error> {
        let keys = self.secret.derive_keys(&self.id);
        open_first_payload(&self.genesis, &keys.payload_key)
    }

    /// Resumes the sender's side of an existing mailbox from its identity, its genesis
    /// and the sender's device keys (which must be the genesis's).
    pub fn resume(
        identity: ShareIdentity,
        genesis: Genesis,
        device: DeviceKeys,
        vertical: Vertical,
    ) -> Result<Self, Error> {
        let ShareIdentity { id, secret } = identity;
        if genesis.header().address != id.address() {
            return Err(Error::WrongAddress);
        }
        if genesis.header().claim_key != secret.derive_keys(&id).claim.public_key() {
            return Err(Error::NotInvited);
        }
        if genesis.header().sender != device.signing.public_key()
            || genesis.header().sender_hpke != *device.hpke.public_key()
        {
            return Err(Error::NotAParty);
        }
        let digest = genesis.digest();
        Ok(Self {
            id,
            secret,
            vertical,
            genesis,
            recipients: Vec::new(),
            channel: Channel::new(id.address(), digest, device.signing, device.hpke),
        })
    }

    /// Sets the next sequence number towards `to` (when resuming a session whose sent
    /// messages are known from the network).
    pub fn set_next_seq(&mut self, to: PublicKey, next: u64) {
        self.channel.next_out.insert(to, next.max(1));
    }

    /// Verifies and opens one message from a recipient, outside the ordered delivery.
    pub fn open_message(&self, msg: &Message) -> Result<Delivered, Error> {
        let allowed: Vec<PublicKey> = self.recipients.iter().map(|r| r.key).collect();
        let psk = self.secret.derive_keys(&self.id).psk;
        self.channel.open(msg, &allowed, &psk)
    }

    /// The mailbox ID.
    pub fn mailbox_id(&self) -> MailboxId {
        self.id
    }

    /// The mailbox address.
    pub fn address(&self) -> Address {
        self.channel.address
    }

    /// The genesis to store on the replicas.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The invitation again, on `base_url`.
    pub fn share_url(&self, base_url: &str) -> Result<ShareUrl, Error> {
        invitation(base_url, self.id, self.vertical, &self.secret)
    }

    /// The sender's per-share signing key (public half).
    pub fn public_key(&self) -> PublicKey {
        self.channel.signing.public_key()
    }

    /// The recipients learned so far.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// Learns a recipient from its certificate, checked against the genesis.
    pub fn add_certificate(
        &mut self,
        cert: &ClaimCertificate,
        limits: &Limits,
        now: u64,
    ) -> Result<Recipient, Error> {
        mailbox::validate_certificate(&self.genesis, cert, limits, now)?;
        let recipient = Recipient {
            key: cert.claim.body.recipient,
            hpke: cert.claim.body.recipient_hpke.clone(),
        };
        if !self.recipients.contains(&recipient) {
            self.recipients.push(recipient.clone());
        }
        Ok(recipient)
    }

    /// Rebuilds the recipients from a (merged) view: the sender's resolve if the view
    /// holds a valid one, else every valid certificate, less the recipients that
    /// relinquished. More recipients than the policy allows means some replica lied: the
    /// recipients are left as they were and the error names a replica proven to lie
    /// ([`Error::Equivocation`], the proof is in [`view_equivocations`]) or says the
    /// mailbox is contested.
    pub fn learn_recipients(
        &mut self,
        view: &crate::rpc::MailboxView,
        limits: &Limits,
        now: u64,
    ) -> Result<(), Error> {
        if view.genesis != self.genesis {
            return Err(Error::WrongGenesis);
        }
        let gone: Vec<PublicKey> = view
            .relinquished
            .iter()
            .filter(|r| mailbox::relinquish_of(&self.genesis, &self.channel.genesis, r))
            .map(|r| r.body.by)
            .collect();
        let resolve = view
            .resolve
            .as_ref()
            .filter(|r| mailbox::resolve_of(&self.genesis, &self.channel.genesis, r));
        let mut found: Vec<Recipient> = Vec::new();
        let mut add = |r: Recipient| {
            if !gone.contains(&r.key) && !found.contains(&r) {
                found.push(r);
            }
        };
        match resolve {
            Some(resolve) => {
                for claim in resolve.body.keep.iter() {
                    mailbox::validate_claim(&self.genesis, claim, limits, now)?;
                    add(Recipient {
                        key: claim.body.recipient,
                        hpke: claim.body.recipient_hpke.clone(),
                    });
                }
            }
            None => {
                for cert in view.certificates.iter() {
                    if mailbox::validate_certificate(&self.genesis, cert, limits, now).is_ok() {
                        add(Recipient {
                            key: cert.claim.body.recipient,
                            hpke: cert.claim.body.recipient_hpke.clone(),
                        });
                    }
                }
            }
        }
        if found.len() > usize::from(self.genesis.header().policy.max_recipients) {
            return Err(match view_equivocations(view).first() {
                Some(proof) => Error::Equivocation {
                    replica: proof.liar(),
                },
                None => Error::Contested,
            });
        }
        self.recipients = found;
        Ok(())
    }

    /// Settles a contest: keeps the claimants of `keep`, who become the recipients.
    pub fn resolve(
        &mut self,
        keep: Vec<Claim>,
        limits: &Limits,
        now: u64,
    ) -> Result<Resolve, Error> {
        for claim in &keep {
            mailbox::validate_claim(&self.genesis, claim, limits, now)?;
        }
        let recipients: Vec<Recipient> = keep
            .iter()
            .map(|c| Recipient {
                key: c.body.recipient,
                hpke: c.body.recipient_hpke.clone(),
            })
            .collect();
        let body = ResolveBody {
            version: FORMAT_VERSION,
            address: self.address(),
            genesis: self.channel.genesis,
            keep: BoundedVec::new(keep).ok_or(Error::InvalidField {
                field: "keep",
                reason: "at most 16 claimants",
            })?,
            resolved_at: now,
        };
        self.recipients = recipients;
        Ok(Resolve::sign(body, &self.channel.signing))
    }

    /// Seals the next message to the recipient `to`.
    pub fn seal(
        &mut self,
        to: &PublicKey,
        plaintext: &[u8],
        request_id: [u8; 16],
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Message, Error> {
        let recipient = self
            .recipients
            .iter()
            .find(|r| r.key == *to)
            .cloned()
            .ok_or(Error::NotAParty)?;
        let psk = self.secret.derive_keys(&self.id).psk;
        self.channel
            .seal(&recipient, &psk, plaintext, request_id, now, rng)
    }

    /// Opens a message from a recipient; returns what is now deliverable, in order.
    pub fn receive(&mut self, msg: &Message) -> Result<Vec<Delivered>, Error> {
        let allowed: Vec<PublicKey> = self.recipients.iter().map(|r| r.key).collect();
        let psk = self.secret.derive_keys(&self.id).psk;
        self.channel.receive(msg, &allowed, &psk)
    }

    /// Messages received but held back behind a sequence gap.
    pub fn held_back(&self) -> usize {
        self.channel.held_back()
    }

    /// For each recipient, the next sequence number expected from it.
    pub fn cursor(&self) -> Vec<(PublicKey, u64)> {
        let authors: Vec<PublicKey> = self.recipients.iter().map(|r| r.key).collect();
        self.channel.cursor(&authors)
    }

    /// A signed delete.
    pub fn delete(&self, now: u64) -> Delete {
        self.channel.delete(now)
    }

    /// A signed read request for the operation `scope`.
    pub fn read_request(&self, now: u64, scope: ReadScope) -> ReadRequest {
        self.channel.read_request(now, scope)
    }

    /// Local persistence (contains secrets).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        Ok(wire::encode_local(self)?)
    }

    /// Restores a session saved with [`SenderSession::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Ok(wire::decode_local(bytes)?)
    }
}

/// The recipient's side of one share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientSession {
    id: MailboxId,
    secret: Secret,
    genesis: Genesis,
    claim: Claim,
    certificate: Option<ClaimCertificate>,
    kept_by: Option<Resolve>,
    channel: Channel,
}

impl RecipientSession {
    /// Opens an invitation against the genesis fetched from the network: checks that the
    /// genesis belongs to the invitation and is valid, decrypts the first payload, and
    /// makes fresh device keys and the claim.
    pub fn open(
        url: &ShareUrl,
        genesis: Genesis,
        limits: &Limits,
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, Vec<u8>), Error> {
        let device = DeviceKeys::generate(genesis.header().sender_hpke.suite, rng);
        Self::open_with_device(url, genesis, device, now, limits, now)
    }

    /// Like [`RecipientSession::open`], with the device keys and the claim time given (the
    /// HPKE suite must be the sender's). The same keys and time make the same claim, so a
    /// party that re-derives a device's keys (the HTTP gateway) claims idempotently.
    pub fn open_with_device(
        url: &ShareUrl,
        genesis: Genesis,
        device: DeviceKeys,
        claimed_at: u64,
        limits: &Limits,
        now: u64,
    ) -> Result<(Self, Vec<u8>), Error> {
        let id = url.mailbox_id();
        let keys = url.secret().derive_keys(&id);
        if genesis.header().address != id.address() {
            return Err(Error::WrongAddress);
        }
        if genesis.header().claim_key != keys.claim.public_key() {
            return Err(Error::NotInvited);
        }
        mailbox::validate_genesis(&genesis, limits, now)?;
        let first = open_first_payload(&genesis, &keys.payload_key)?;
        let DeviceKeys { signing, hpke } = device;
        let digest = genesis.digest();
        let claim = Claim::sign(
            ClaimBody {
                version: FORMAT_VERSION,
                address: id.address(),
                genesis: digest,
                recipient: signing.public_key(),
                recipient_hpke: hpke.public_key().clone(),
                claimed_at,
            },
            &keys.claim,
            &signing,
        );
        let session = Self {
            id,
            secret: url.secret().clone(),
            genesis,
            claim,
            certificate: None,
            kept_by: None,
            channel: Channel::new(id.address(), digest, signing, hpke),
        };
        Ok((session, first))
    }

    /// The mailbox ID.
    pub fn mailbox_id(&self) -> MailboxId {
        self.id
    }

    /// The mailbox address.
    pub fn address(&self) -> Address {
        self.channel.address
    }

    /// The genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The first payload again, decrypted from the stored genesis.
    pub fn first_payload(&self) -> Result<Vec<u8>, Error> {
        let keys = self.secret.derive_keys(&self.id);
        open_first_payload(&self.genesis, &keys.payload_key)
    }

    /// The claim to submit.
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The recipient's per-share signing key (public half).
    pub fn public_key(&self) -> PublicKey {
        self.channel.signing.public_key()
    }

    /// The certificate, once accepted.
    pub fn certificate(&self) -> Option<&ClaimCertificate> {
        self.certificate.as_ref()
    }

    /// Whether this claimant is a recipient: certified, or kept by the sender's resolve.
    pub fn is_recipient(&self) -> bool {
        self.certificate.is_some() || self.kept_by.is_some()
    }

    /// Accepts the certificate for this session's claim, checked against the genesis.
    pub fn accept_certificate(
        &mut self,
        cert: ClaimCertificate,
        limits: &Limits,
        now: u64,
    ) -> Result<(), Error> {
        if cert.claim != self.claim {
            return Err(Error::InvalidField {
                field: "certificate",
                reason: "certifies another claim",
            });
        }
        mailbox::validate_certificate(&self.genesis, &cert, limits, now)?;
        self.certificate = Some(cert);
        Ok(())
    }

    /// Accepts a resolve that keeps this claimant, in place of a certificate.
    pub fn accept_resolve(&mut self, resolve: &Resolve) -> Result<(), Error> {
        resolve.verify_signature(&self.genesis.header().sender)?;
        if resolve.body.address != self.address() {
            return Err(Error::WrongAddress);
        }
        if resolve.body.genesis != self.channel.genesis {
            return Err(Error::WrongGenesis);
        }
        if !resolve.body.keep.contains(&self.claim) {
            return Err(Error::NotAParty);
        }
        self.kept_by = Some(resolve.clone());
        Ok(())
    }

    fn sender(&self) -> Recipient {
        Recipient {
            key: self.genesis.header().sender,
            hpke: self.genesis.header().sender_hpke.clone(),
        }
    }

    /// Seals the next message to the sender. Requires a certificate (or a resolve).
    pub fn seal(
        &mut self,
        plaintext: &[u8],
        request_id: [u8; 16],
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Message, Error> {
        if !self.is_recipient() {
            return Err(Error::NotAParty);
        }
        let sender = self.sender();
        let psk = self.secret.derive_keys(&self.id).psk;
        self.channel
            .seal(&sender, &psk, plaintext, request_id, now, rng)
    }

    /// Opens a message from the sender; returns what is now deliverable, in order.
    pub fn receive(&mut self, msg: &Message) -> Result<Vec<Delivered>, Error> {
        let psk = self.secret.derive_keys(&self.id).psk;
        let sender = self.genesis.header().sender;
        self.channel.receive(msg, &[sender], &psk)
    }

    /// Messages received but held back behind a sequence gap.
    pub fn held_back(&self) -> usize {
        self.channel.held_back()
    }

    /// Sets the next sequence number towards the sender (when resuming).
    pub fn set_next_seq(&mut self, next: u64) {
        let sender = self.genesis.header().sender;
        self.channel.next_out.insert(sender, next.max(1));
    }

    /// Verifies and opens one message from the sender, outside the ordered delivery.
    pub fn open_message(&self, msg: &Message) -> Result<Delivered, Error> {
        let psk = self.secret.derive_keys(&self.id).psk;
        self.channel
            .open(msg, &[self.genesis.header().sender], &psk)
    }

    /// The next sequence number expected from the sender.
    pub fn cursor(&self) -> Vec<(PublicKey, u64)> {
        self.channel.cursor(&[self.genesis.header().sender])
    }

    /// A signed request to open the genesis, made with the invitation's claim key (before
    /// claiming, the recipient is not yet a party).
    pub fn open_request(url: &ShareUrl, now: u64) -> ReadRequest {
        let keys = url.secret().derive_keys(&url.mailbox_id());
        ReadRequest::sign(
            url.mailbox_id().address(),
            UNKNOWN_GENESIS,
            &keys.claim,
            now,
            ReadScope::Open,
        )
    }

    /// A signed relinquish.
    pub fn relinquish(&self, now: u64) -> Relinquish {
        Relinquish::sign(
            self.address(),
            self.channel.genesis,
            &self.channel.signing,
            now,
        )
    }

    /// A signed delete (effective only with the delete right).
    pub fn delete(&self, now: u64) -> Delete {
        self.channel.delete(now)
    }

    /// A signed read request for the operation `scope`.
    pub fn read_request(&self, now: u64, scope: ReadScope) -> ReadRequest {
        self.channel.read_request(now, scope)
    }

    /// Local persistence (contains secrets).
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        Ok(wire::encode_local(self)?)
    }

    /// Restores a session saved with [`RecipientSession::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Ok(wire::decode_local(bytes)?)
    }
}

fn open_first_payload(genesis: &Genesis, payload_key: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let payload = &genesis.body.payload;
    let padded = payload.algorithm.open(
        payload_key,
        &payload.nonce,
        &genesis.header().payload_aad(),
        &payload.ciphertext,
    )?;
    pad::unpad(padded)
}

/// The invitation on `base_url`, refusing a base that is not `http(s)://host[:port]`.
fn invitation(
    base_url: &str,
    id: MailboxId,
    vertical: Vertical,
    secret: &Secret,
) -> Result<ShareUrl, Error> {
    ShareUrl::new(base_url, id, vertical, secret.clone()).map_err(|_| Error::InvalidField {
        field: "base_url",
        reason: "an http(s)://host[:port] URL",
    })
}

/// Every equivocation the certificates of a view prove: a replica whose receipts give one
/// slot, in one epoch, to two claimants.
pub fn view_equivocations(view: &crate::rpc::MailboxView) -> Vec<crate::record::Equivocation> {
    let receipts: Vec<crate::record::Receipt> = view
        .certificates
        .iter()
        .flat_map(|c| c.receipts.iter().cloned())
        .collect();
    mailbox::equivocations(&receipts)
}

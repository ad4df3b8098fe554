//! Ed25519 signatures with domain separation and strict verification.

use std::fmt;

use ed25519_dalek::Signer as _;
use rand_core::CryptoRng;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The prefix of every signed context: `"tigress/v1/" || kind || 0x00 || body`.
pub const SIGNATURE_DOMAIN: &str = "tigress/v1/";

/// What a signature is for. Each kind is its own domain: a signature of one kind never
/// verifies as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureKind {
    /// A genesis, by the sender's device key.
    Genesis,
    /// A claim, by the claim key and by the recipient's device key.
    Claim,
    /// A receipt, by a replica's node key.
    Receipt,
    /// A message, by its author.
    Message,
    /// A delete, by the sender or a recipient with the delete right.
    Delete,
    /// A relinquish, by a recipient.
    Relinquish,
    /// A resolve of a contested mailbox, by the sender.
    Resolve,
    /// A read request, by the reader (a request, not a stored record).
    Read,
    /// A replica's acknowledgement that it stored a record durably, by its node key.
    Ack,
    /// A genesis, co-signed by the invitation's claim key (only invitation holders can
    /// make one that an invitee's requests fit).
    GenesisClaim,
    /// A holder's handover of a departed holder's place, by the holder's node key.
    Handover,
    /// A node's Oblivious HTTP key configuration, by its node key.
    GatewayKeys,
}

impl SignatureKind {
    /// Every kind, in a fixed order.
    pub const ALL: [SignatureKind; 12] = [
        SignatureKind::Genesis,
        SignatureKind::Claim,
        SignatureKind::Receipt,
        SignatureKind::Message,
        SignatureKind::Delete,
        SignatureKind::Relinquish,
        SignatureKind::Resolve,
        SignatureKind::Read,
        SignatureKind::Ack,
        SignatureKind::GenesisClaim,
        SignatureKind::Handover,
        SignatureKind::GatewayKeys,
    ];

    /// The kind's name inside the signed context.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureKind::Genesis => "genesis",
            SignatureKind::Claim => "claim",
            SignatureKind::Receipt => "receipt",
            SignatureKind::Message => "message",
            SignatureKind::Delete => "delete",
            SignatureKind::Relinquish => "relinquish",
            SignatureKind::Resolve => "resolve",
            SignatureKind::Read => "read",
            SignatureKind::Ack => "ack",
            SignatureKind::GenesisClaim => "genesis-claim",
            SignatureKind::Handover => "handover",
            SignatureKind::GatewayKeys => "gateway-keys",
        }
    }
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exactly the bytes an Ed25519 signature of `kind` over `body` covers.
pub fn signed_bytes(kind: SignatureKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_DOMAIN.len() + kind.as_str().len() + 1 + body.len());
    out.extend_from_slice(SIGNATURE_DOMAIN.as_bytes());
    out.extend_from_slice(kind.as_str().as_bytes());
    out.push(0);
    out.extend_from_slice(body);
    out
}

/// Signatures this process has already verified, so that a record checked by several
/// code paths (a long-poll's read request before and after its wait, a certificate in
/// each replica's view, a message in each replica's answer) costs one verification.
///
/// Only successes are kept, under SHA-256 of everything the verdict depends on (domain,
/// key, signature, body): a hit is a signature that verified over exactly these bytes.
/// Two generations of at most [`verified::GENERATION`] entries each (about 4 MiB in all);
/// when the current one fills, it becomes the previous one and the oldest is dropped, so
/// a peer sending valid signatures of its own can only push others out, never grow it.
pub(crate) mod verified {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use sha2::{Digest as _, Sha256};

    use super::{PublicKey, Signature, SignatureKind};

    /// Entries per generation.
    pub(crate) const GENERATION: usize = 32_768;

    struct Generations {
        current: HashSet<[u8; 32]>,
        previous: HashSet<[u8; 32]>,
    }

    static SEEN: Mutex<Option<Generations>> = Mutex::new(None);

    /// Ed25519 verifications run, and verdicts taken from memory instead.
    pub(crate) static RUN: AtomicU64 = AtomicU64::new(0);
    pub(crate) static REMEMBERED: AtomicU64 = AtomicU64::new(0);

    pub(crate) fn fingerprint(
        key: &PublicKey,
        kind: SignatureKind,
        body: &[u8],
        signature: &Signature,
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tigress/v1/verified\0");
        h.update(kind.as_str().as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        h.update(signature.0);
        h.update(body);
        h.finalize().into()
    }

    pub(crate) fn contains(f: &[u8; 32]) -> bool {
        SEEN.lock().ok().is_some_and(|s| {
            s.as_ref()
                .is_some_and(|g| g.current.contains(f) || g.previous.contains(f))
        })
    }

    pub(crate) fn insert(f: [u8; 32]) {
        if let Ok(mut s) = SEEN.lock() {
            let g = s.get_or_insert_with(|| Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
            });
            if g.current.len() >= GENERATION {
                g.previous = std::mem::take(&mut g.current);
            }
            g.current.insert(f);
        }
    }

    /// Entries held (both generations).
    #[cfg(test)]
    pub(crate) fn len() -> usize {
        SEEN.lock().ok().map_or(0, |s| {
            s.as_ref().map_or(0, |g| g.current.len() + g.previous.len())
        })
    }
}

/// Public keys this process decoded (decompressed to a curve point and found not weak),
/// so that verifying another signature of a key it has seen (a sender's messages, a
/// node's receipts) skips the square root of decompression. Only keys that decoded are
/// kept, under their exact bytes; two generations of at most [`decoded::GENERATION`]
/// entries each, as for verified signatures, so a peer presenting new keys can only push
/// others out.
pub(crate) mod decoded {
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Entries per generation.
    pub(crate) const GENERATION: usize = 4096;

    type Keys = HashMap<[u8; 32], ed25519_dalek::VerifyingKey>;

    static KEYS: Mutex<Option<(Keys, Keys)>> = Mutex::new(None);

    pub(crate) fn get(bytes: &[u8; 32]) -> Option<ed25519_dalek::VerifyingKey> {
        let keys = KEYS.lock().ok()?;
        let (current, previous) = keys.as_ref()?;
        current.get(bytes).or_else(|| previous.get(bytes)).copied()
    }

    pub(crate) fn insert(bytes: [u8; 32], key: ed25519_dalek::VerifyingKey) {
        if let Ok(mut keys) = KEYS.lock() {
            let (current, previous) = keys.get_or_insert_with(Default::default);
            if current.len() >= GENERATION {
                *previous = std::mem::take(current);
            }
            current.insert(bytes, key);
        }
    }

    /// Entries held (both generations).
    #[cfg(test)]
    pub(crate) fn len() -> usize {
        KEYS.lock()
            .ok()
            .map_or(0, |k| k.as_ref().map_or(0, |(c, p)| c.len() + p.len()))
    }
}

/// Signature verifications this process ran (Ed25519, strict) and those it answered from
/// the memory of verified signatures, since it started.
pub fn verification_counts() -> (u64, u64) {
    (
        verified::RUN.load(std::sync::atomic::Ordering::Relaxed),
        verified::REMEMBERED.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// The signature did not verify (or the key is invalid or weak).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature verification failed")]
pub struct SignatureError;

/// An Ed25519 secret key. Zeroized on drop; `Debug` prints nothing secret.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    /// The key whose 32-byte seed (RFC 8032 secret key) is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed. Handle with care: it is the secret.
    pub fn to_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `body` in the domain of `kind`.
    pub fn sign(&self, kind: SignatureKind, body: &[u8]) -> Signature {
        #[cfg(feature = "danger-simulation")]
        if let Some(sig) = super::danger::sign(self, kind, body) {
            return sig;
        }
        let signature = Signature(self.0.sign(&signed_bytes(kind, body)).to_bytes());
        // A signature this process made verifies (its key is never weak, its encoding
        // canonical): remembered, so that checking it later (a node's own replica
        // answering its entry) costs no verification.
        verified::insert(verified::fingerprint(
            &self.public_key(),
            kind,
            body,
            &signature,
        ));
        signature
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey(public={}, secret=<redacted>)",
            self.public_key()
        )
    }
}

impl Serialize for SigningKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0.as_bytes())
    }
}

impl<'de> Deserialize<'de> for SigningKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes =
            zeroize::Zeroizing::new(serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec());
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| de::Error::custom("a signing key seed is 32 bytes"))?;
        Ok(Self::from_seed(&seed))
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}
impl Eq for SigningKey {}

/// An Ed25519 public key as its 32 bytes. Whether the bytes are a valid, non-weak key is
/// checked by [`PublicKey::verify`] and [`PublicKey::validate`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks that the bytes decode to a curve point that is not of small order.
    pub fn validate(&self) -> Result<(), SignatureError> {
        self.decode().map(|_| ())
    }

    fn decode(&self) -> Result<ed25519_dalek::VerifyingKey, SignatureError> {
        if let Some(key) = decoded::get(&self.0) {
            return Ok(key);
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError)?;
        if key.is_weak() {
            return Err(SignatureError);
        }
        decoded::insert(self.0, key);
        Ok(key)
    }

    /// Verifies `signature` over `body` in the domain of `kind`, strictly: non-canonical
    /// encodings and small-order keys are refused.
    pub fn verify(
        &self,
        kind: SignatureKind,
        body: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        #[cfg(feature = "danger-simulation")]
        if let Some(result) = super::danger::verify(self, kind, body, signature) {
            return result;
        }
        let seen = verified::fingerprint(self, kind, body, signature);
        if verified::contains(&seen) {
            verified::REMEMBERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        verified::RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = self.decode()?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&signed_bytes(kind, body), &sig)
            .map_err(|_| SignatureError)?;
        verified::insert(seen);
        Ok(())
    }

    /// The first 8 bytes in hex: enough to tell keys apart in logs.
    pub fn short(&self) -> String {
        hex_lower(self.0.get(..8).unwrap_or(&[]))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_lower(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = SignatureError;

    /// Parses 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex_decode(s).ok_or(SignatureError)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SignatureError)?;
        Ok(PublicKey(arr))
    }
}

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Signature({}…)",
            hex_lower(self.0.get(..8).unwrap_or(&[]))
        )
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SigVisitor;
        impl<'de> Visitor<'de> for SigVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        deserializer.deserialize_tuple(64, SigVisitor)
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            if let Some(d) = DIGITS.get(usize::from(nibble)) {
                s.push(char::from(*d));
            }
        }
    }
    s
}

pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = char::from(*pair.first()?).to_digit(16)?;
            let lo = char::from(*pair.get(1)?).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    /// Held by the tests that look into the memories or fill them: a test filling one
    /// would otherwise push out what another has just checked is there.
    fn memories() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key is decoded once and its decoding reused; a weak or invalid key is never
    /// kept, and is refused every time.
    #[test]
    fn decoded_keys_are_kept_and_refused_ones_never() {
        let _memories = memories();
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let key = SigningKey::generate(&mut rng);
        let public = key.public_key();
        assert!(decoded::get(public.as_bytes()).is_none());
        assert!(public.validate().is_ok());
        let kept = decoded::get(public.as_bytes()).expect("kept once decoded");
        assert_eq!(kept.to_bytes(), public.0);
        // The identity point: small order, so weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // Not on the curve: the first small y without an x.
        let off_curve = (2u8..)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
            .expect("about half of all y have no x");
        for bytes in [identity, off_curve] {
            for _ in 0..2 {
                assert!(PublicKey(bytes).validate().is_err());
                let sig = key.sign(SignatureKind::Message, b"x");
                assert!(
                    PublicKey(bytes)
                        .verify(SignatureKind::Message, b"x", &sig)
                        .is_err()
                );
            }
            assert!(decoded::get(&bytes).is_none());
        }
    }

    #[test]
    fn the_memory_of_decoded_keys_is_bounded() {
        let _memories = memories();
        let key = ed25519_dalek::VerifyingKey::from_bytes(
            SigningKey::from_seed(&[8; 32]).public_key().as_bytes(),
        )
        .unwrap();
        for i in 0..(2 * decoded::GENERATION + 10) {
            let mut label = [0xee; 32];
            label[..8].copy_from_slice(&(i as u64).to_le_bytes());
            decoded::insert(label, key);
        }
        assert!(decoded::len() <= 2 * decoded::GENERATION);
    }

    #[test]
    fn a_signature_made_here_is_remembered_as_verified_and_holds_up() {
        let _memories = memories();
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let key = SigningKey::generate(&mut rng);
        let public = key.public_key();
        let sig = key.sign(SignatureKind::Receipt, b"made here");
        assert!(verified::contains(&verified::fingerprint(
            &public,
            SignatureKind::Receipt,
            b"made here",
            &sig
        )));
        // What the memory vouches for is what strict verification says.
        let strict = ed25519_dalek::VerifyingKey::from_bytes(public.as_bytes())
            .unwrap()
            .verify_strict(
                &signed_bytes(SignatureKind::Receipt, b"made here"),
                &ed25519_dalek::Signature::from_bytes(&sig.0),
            );
        assert!(strict.is_ok());
        assert!(
            public
                .verify(SignatureKind::Receipt, b"made there", &sig)
                .is_err()
        );
    }

    #[test]
    fn a_verified_signature_is_remembered_and_a_bad_one_never() {
        let _memories = memories();
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let key = SigningKey::generate(&mut rng);
        let public = key.public_key();
        let sig = key.sign(SignatureKind::Message, b"remembered");
        let f = verified::fingerprint(&public, SignatureKind::Message, b"remembered", &sig);
        assert!(
            public
                .verify(SignatureKind::Message, b"remembered", &sig)
                .is_ok()
        );
        assert!(verified::contains(&f));
        // A hit still names exactly what verified: another body, kind, key or signature
        // is verified afresh, and fails.
        assert!(
            public
                .verify(SignatureKind::Message, b"rememberes", &sig)
                .is_err()
        );
        assert!(
            public
                .verify(SignatureKind::Claim, b"remembered", &sig)
                .is_err()
        );
        let other = SigningKey::generate(&mut rng).public_key();
        assert!(
            other
                .verify(SignatureKind::Message, b"remembered", &sig)
                .is_err()
        );
        let mut bent = sig;
        bent.0[3] ^= 1;
        assert!(
            public
                .verify(SignatureKind::Message, b"remembered", &bent)
                .is_err()
        );
        for (k, kind, body, s) in [
            (&public, SignatureKind::Message, &b"rememberes"[..], &sig),
            (&public, SignatureKind::Claim, &b"remembered"[..], &sig),
            (&other, SignatureKind::Message, &b"remembered"[..], &sig),
            (&public, SignatureKind::Message, &b"remembered"[..], &bent),
        ] {
            assert!(!verified::contains(&verified::fingerprint(
                k, kind, body, s
            )));
        }
    }

    #[test]
    fn the_memory_of_verified_signatures_is_bounded() {
        let _memories = memories();
        for i in 0..(3 * verified::GENERATION as u64) {
            let mut f = [0xa5u8; 32];
            f[..8].copy_from_slice(&i.to_le_bytes());
            verified::insert(f);
        }
        assert!(verified::len() <= 2 * verified::GENERATION);
        let mut newest = [0xa5u8; 32];
        newest[..8].copy_from_slice(&(3 * verified::GENERATION as u64 - 1).to_le_bytes());
        assert!(verified::contains(&newest));
    }

    #[test]
    fn signatures_are_bound_to_their_kind_and_body() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let key = SigningKey::generate(&mut rng);
        let sig = key.sign(SignatureKind::Message, b"body");
        let public = key.public_key();
        assert!(public.verify(SignatureKind::Message, b"body", &sig).is_ok());
        assert!(public.verify(SignatureKind::Delete, b"body", &sig).is_err());
        assert!(
            public
                .verify(SignatureKind::Message, b"bodY", &sig)
                .is_err()
        );
        let other = SigningKey::generate(&mut rng).public_key();
        assert!(other.verify(SignatureKind::Message, b"body", &sig).is_err());
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point (small order) encodes as 0x01 followed by zeros.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey(identity).validate().is_err());
        // A y-coordinate that is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(PublicKey(off_curve).validate().is_err());
    }

    #[test]
    fn non_canonical_signature_scalar_is_refused() {
        let key = SigningKey::from_seed(&[7; 32]);
        let mut sig = key.sign(SignatureKind::Claim, b"x");
        // Add the group order to s: same value mod l, but a non-canonical encoding.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (s, l) in sig.0[32..].iter_mut().zip(L) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = (sum & 0xff) as u8;
            carry = sum >> 8;
        }
        assert!(
            key.public_key()
                .verify(SignatureKind::Claim, b"x", &sig)
                .is_err()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = SigningKey::from_seed(&[9; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&hex_lower(&[9; 32])));
    }

    #[test]
    fn hex_round_trip() {
        let key = SigningKey::from_seed(&[3; 32]).public_key();
        assert_eq!(key.to_string().parse::<PublicKey>(), Ok(key));
        assert!("zz".parse::<PublicKey>().is_err());
    }
}

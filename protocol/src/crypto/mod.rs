//! Every cryptographic operation of tigress, behind one small provider.
//!
//! The [`CryptoProvider`] names the algorithms a build supports and which ones it uses by
//! default; the submodules implement them: Ed25519 signatures ([`sign`]), the AEAD of the
//! first payload ([`aead`]), HPKE for later messages ([`hpke`]), size-bucket padding
//! ([`pad`]) and the per-share key schedule ([`derive_share_keys`]). Randomness is always
//! passed in as a [`CryptoRng`], so tests can seed it.

pub mod aead;
pub mod batch;
#[cfg(feature = "danger-simulation")]
pub mod danger;
pub mod gateway;
pub mod hpke;
pub mod pad;
pub mod sign;

pub use self::aead::AeadAlgorithm;
pub use self::gateway::GatewaySecret;
pub use self::hpke::{HpkeContext, HpkeKeyPair, HpkePublicKey, HpkeSuite};
pub use self::sign::{PublicKey, Signature, SignatureKind, SigningKey};
pub use rand_core::CryptoRng;

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The algorithms a build of tigress offers, and its defaults. Modelled on rustls's
/// `CryptoProvider`: one value that says what is supported, consulted before any record
/// that names an algorithm is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoProvider {
    /// AEADs accepted for first payloads.
    pub aead_algorithms: &'static [AeadAlgorithm],
    /// HPKE suites accepted for device keys.
    pub hpke_suites: &'static [HpkeSuite],
    /// The AEAD used when the caller does not choose.
    pub default_aead: AeadAlgorithm,
    /// The HPKE suite used when the caller does not choose.
    pub default_hpke: HpkeSuite,
}

/// The provider of version 1: AES-256-GCM and AES-128-GCM; HPKE with X25519 and
/// ChaCha20-Poly1305 or AES-128-GCM, or X-Wing.
pub const DEFAULT_PROVIDER: CryptoProvider = CryptoProvider {
    aead_algorithms: &[AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Aes128Gcm],
    hpke_suites: &[
        HpkeSuite::X25519ChaCha20Poly1305,
        HpkeSuite::X25519Aes128Gcm,
        HpkeSuite::XWingChaCha20Poly1305,
    ],
    default_aead: AeadAlgorithm::Aes256Gcm,
    default_hpke: HpkeSuite::X25519ChaCha20Poly1305,
};

impl Default for CryptoProvider {
    fn default() -> Self {
        DEFAULT_PROVIDER
    }
}

impl CryptoProvider {
    /// Refuses an AEAD this provider does not offer.
    pub fn check_aead(&self, alg: AeadAlgorithm) -> Result<(), crate::Error> {
        if self.aead_algorithms.contains(&alg) {
            Ok(())
        } else {
            Err(crate::Error::UnsupportedAlgorithm(alg.name()))
        }
    }

    /// Refuses an HPKE suite this provider does not offer.
    pub fn check_hpke(&self, suite: HpkeSuite) -> Result<(), crate::Error> {
        if self.hpke_suites.contains(&suite) {
            Ok(())
        } else {
            Err(crate::Error::UnsupportedAlgorithm("hpke suite"))
        }
    }
}

/// SHA-256 of `parts`, concatenated.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The keys every holder of an invitation derives from the secret and the mailbox ID.
pub struct ShareKeys {
    /// The AEAD key of the first payload (AES-128-GCM uses its first 16 bytes).
    pub payload_key: Zeroizing<[u8; 32]>,
    /// The claim key pair: proves a claimant holds the invitation.
    pub claim: SigningKey,
    /// The HPKE pre-shared key of every later message.
    pub psk: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ShareKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareKeys")
            .field("claim_public", &self.claim.public_key())
            .finish_non_exhaustive()
    }
}

/// HKDF-SHA256 with ikm = `secret`, salt = the 16 mailbox ID bytes, and the infos
/// `tigress/v1/payload`, `tigress/v1/claim`, `tigress/v1/psk`.
pub fn derive_share_keys(secret: &[u8; 32], mailbox_id: &[u8; 16]) -> ShareKeys {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(mailbox_id), secret);
    let expand = |info: &[u8]| {
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
        if hk.expand(info, okm.as_mut()).is_err() {
            okm.fill(0);
        }
        okm
    };
    let payload_key = expand(b"tigress/v1/payload");
    let claim_seed = expand(b"tigress/v1/claim");
    let psk = expand(b"tigress/v1/psk");
    ShareKeys {
        payload_key,
        claim: SigningKey::from_seed(&claim_seed),
        psk,
    }
}

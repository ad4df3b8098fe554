//! HPKE (RFC 9180) in mode_psk for messages to a known device key.

use std::fmt;

use hpke::aead::{AesGcm128, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable as _, OpModeR, OpModeS, PskBundle, Serializable as _};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::wire::BoundedBytes;

/// The largest HPKE public key of any suite (X-Wing: 1216 bytes).
pub const MAX_HPKE_PUBLIC_KEY: usize = 1216;
/// The largest encapsulated key of any suite (X-Wing: 1120 bytes).
pub const MAX_HPKE_ENC: usize = 1120;

/// RFC 9180 mode_psk.
pub const MODE_PSK: u8 = 1;

/// The HPKE suites tigress speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum HpkeSuite {
    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 (the default).
    #[default]
    X25519ChaCha20Poly1305,
    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM.
    X25519Aes128Gcm,
    /// X-Wing (ML-KEM-768 + X25519), HKDF-SHA256, ChaCha20-Poly1305: post-quantum.
    XWingChaCha20Poly1305,
}

impl HpkeSuite {
    /// The RFC 9180 (and X-Wing draft) numeric identifiers: (kem_id, kdf_id, aead_id).
    pub fn ids(self) -> (u16, u16, u16) {
        match self {
            HpkeSuite::X25519ChaCha20Poly1305 => (0x0020, 0x0001, 0x0003),
            HpkeSuite::X25519Aes128Gcm => (0x0020, 0x0001, 0x0001),
            HpkeSuite::XWingChaCha20Poly1305 => (0x647a, 0x0001, 0x0003),
        }
    }

    fn public_key_len(self) -> usize {
        match self {
            HpkeSuite::X25519ChaCha20Poly1305 | HpkeSuite::X25519Aes128Gcm => 32,
            HpkeSuite::XWingChaCha20Poly1305 => 1216,
        }
    }
}

/// An HPKE public key of a given suite. Validated by [`HpkePublicKey::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HpkePublicKey {
    /// The suite this key belongs to.
    pub suite: HpkeSuite,
    /// The serialized key.
    pub bytes: BoundedBytes<MAX_HPKE_PUBLIC_KEY>,
}

impl HpkePublicKey {
    /// Checks the key decodes for its suite.
    pub fn validate(&self) -> Result<(), Error> {
        if self.bytes.len() != self.suite.public_key_len() {
            return Err(Error::InvalidKey("hpke public key"));
        }
        let ok = match self.suite {
            HpkeSuite::X25519ChaCha20Poly1305 | HpkeSuite::X25519Aes128Gcm => {
                <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&self.bytes).is_ok()
            }
            HpkeSuite::XWingChaCha20Poly1305 => {
                <XWing as hpke::Kem>::PublicKey::from_bytes(&self.bytes).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidKey("hpke public key"))
        }
    }
}

/// An HPKE key pair. The private half is zeroized on drop and never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct HpkeKeyPair {
    suite: HpkeSuite,
    #[serde(with = "crate::wire::zeroizing_bytes")]
    private: Zeroizing<Vec<u8>>,
    public: HpkePublicKey,
}

impl fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HpkeKeyPair")
            .field("suite", &self.suite)
            .field("private", &"<redacted>")
            .finish()
    }
}

impl PartialEq for HpkeKeyPair {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.suite == other.suite && bool::from(self.private.as_slice().ct_eq(&other.private))
    }
}

fn keypair_of<K: hpke::Kem>(suite: HpkeSuite, rng: &mut impl CryptoRng) -> HpkeKeyPair {
    let (sk, pk) = K::gen_keypair_with_rng(rng);
    pair_from::<K>(suite, &sk, &pk)
}

fn derived_of<K: hpke::Kem>(suite: HpkeSuite, ikm: &[u8]) -> HpkeKeyPair {
    let (sk, pk) = K::derive_keypair(ikm);
    pair_from::<K>(suite, &sk, &pk)
}

fn pair_from<K: hpke::Kem>(suite: HpkeSuite, sk: &K::PrivateKey, pk: &K::PublicKey) -> HpkeKeyPair {
    HpkeKeyPair {
        suite,
        private: Zeroizing::new(sk.to_bytes().to_vec()),
        public: HpkePublicKey {
            suite,
            bytes: BoundedBytes::from_vec_unchecked(pk.to_bytes().to_vec()),
        },
    }
}

impl HpkeKeyPair {
    /// A fresh key pair for `suite`.
    pub fn generate(suite: HpkeSuite, rng: &mut impl CryptoRng) -> Self {
        match suite {
            HpkeSuite::X25519ChaCha20Poly1305 | HpkeSuite::X25519Aes128Gcm => {
                keypair_of::<X25519HkdfSha256>(suite, rng)
            }
            HpkeSuite::XWingChaCha20Poly1305 => keypair_of::<XWing>(suite, rng),
        }
    }

    /// The key pair RFC 9180 `DeriveKeyPair` makes from `ikm` (at least 32 secret bytes).
    pub fn derive(suite: HpkeSuite, ikm: &[u8]) -> Self {
        match suite {
            HpkeSuite::X25519ChaCha20Poly1305 | HpkeSuite::X25519Aes128Gcm => {
                derived_of::<X25519HkdfSha256>(suite, ikm)
            }
            HpkeSuite::XWingChaCha20Poly1305 => derived_of::<XWing>(suite, ikm),
        }
    }

    /// The public half.
    pub fn public_key(&self) -> &HpkePublicKey {
        &self.public
    }

    /// The serialized private key. Handle with care.
    pub fn private_bytes(&self) -> &[u8] {
        &self.private
    }

    /// Opens a ciphertext sealed to this key pair with [`seal`].
    pub fn open(
        &self,
        ctx: &HpkeContext<'_>,
        enc: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        match self.suite {
            HpkeSuite::X25519ChaCha20Poly1305 => {
                open_with::<ChaCha20Poly1305, X25519HkdfSha256>(&self.private, ctx, enc, ciphertext)
            }
            HpkeSuite::X25519Aes128Gcm => {
                open_with::<AesGcm128, X25519HkdfSha256>(&self.private, ctx, enc, ciphertext)
            }
            HpkeSuite::XWingChaCha20Poly1305 => {
                open_with::<ChaCha20Poly1305, XWing>(&self.private, ctx, enc, ciphertext)
            }
        }
    }
}

/// The inputs that bind an HPKE operation to its context.
#[derive(Debug, Clone, Copy)]
pub struct HpkeContext<'a> {
    /// RFC 9180 `info`.
    pub info: &'a [u8],
    /// The AEAD associated data.
    pub aad: &'a [u8],
    /// The pre-shared key.
    pub psk: &'a [u8],
    /// The pre-shared key's identifier.
    pub psk_id: &'a [u8],
}

/// Seals `plaintext` to `recipient` in mode_psk; returns `(enc, ciphertext)`.
pub fn seal(
    recipient: &HpkePublicKey,
    ctx: &HpkeContext<'_>,
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    match recipient.suite {
        HpkeSuite::X25519ChaCha20Poly1305 => {
            seal_with::<ChaCha20Poly1305, X25519HkdfSha256>(&recipient.bytes, ctx, plaintext, rng)
        }
        HpkeSuite::X25519Aes128Gcm => {
            seal_with::<AesGcm128, X25519HkdfSha256>(&recipient.bytes, ctx, plaintext, rng)
        }
        HpkeSuite::XWingChaCha20Poly1305 => {
            seal_with::<ChaCha20Poly1305, XWing>(&recipient.bytes, ctx, plaintext, rng)
        }
    }
}

fn seal_with<A: hpke::aead::Aead, K: hpke::Kem>(
    public: &[u8],
    ctx: &HpkeContext<'_>,
    plaintext: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pk = K::PublicKey::from_bytes(public).map_err(|_| Error::InvalidKey("hpke public key"))?;
    let bundle = PskBundle::new(ctx.psk, ctx.psk_id).map_err(|_| Error::InvalidKey("psk"))?;
    let mode = OpModeS::<K>::Psk(bundle);
    let (enc, ct) = hpke::single_shot_seal_with_rng::<A, HkdfSha256, K>(
        &mode, &pk, ctx.info, plaintext, ctx.aad, rng,
    )
    .map_err(|_| Error::InvalidKey("hpke public key"))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

fn open_with<A: hpke::aead::Aead, K: hpke::Kem>(
    private: &[u8],
    ctx: &HpkeContext<'_>,
    enc: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let sk =
        K::PrivateKey::from_bytes(private).map_err(|_| Error::InvalidKey("hpke private key"))?;
    let enc = K::EncappedKey::from_bytes(enc).map_err(|_| Error::Decrypt)?;
    let bundle = PskBundle::new(ctx.psk, ctx.psk_id).map_err(|_| Error::InvalidKey("psk"))?;
    let mode = OpModeR::<K>::Psk(bundle);
    hpke::single_shot_open::<A, HkdfSha256, K>(&mode, &sk, &enc, ctx.info, ciphertext, ctx.aad)
        .map_err(|_| Error::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn every_suite_seals_and_opens_and_binds_its_context() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        for suite in [
            HpkeSuite::X25519ChaCha20Poly1305,
            HpkeSuite::X25519Aes128Gcm,
            HpkeSuite::XWingChaCha20Poly1305,
        ] {
            let pair = HpkeKeyPair::generate(suite, &mut rng);
            pair.public_key().validate().unwrap();
            let ctx = HpkeContext {
                info: b"info",
                aad: b"aad",
                psk: &[9; 32],
                psk_id: b"id",
            };
            let (enc, ct) = seal(pair.public_key(), &ctx, b"secret", &mut rng).unwrap();
            assert!(enc.len() <= MAX_HPKE_ENC);
            assert_eq!(pair.open(&ctx, &enc, &ct).unwrap(), b"secret");
            let wrong_psk = HpkeContext {
                psk: &[8; 32],
                ..ctx
            };
            assert_eq!(pair.open(&wrong_psk, &enc, &ct), Err(Error::Decrypt));
            let wrong_info = HpkeContext {
                info: b"other",
                ..ctx
            };
            assert_eq!(pair.open(&wrong_info, &enc, &ct), Err(Error::Decrypt));
            let other = HpkeKeyPair::generate(suite, &mut rng);
            assert_eq!(other.open(&ctx, &enc, &ct), Err(Error::Decrypt));
            assert!(
                !format!("{pair:?}")
                    .contains(&crate::crypto::sign::hex_lower(pair.private_bytes()))
            );
        }
    }

    #[test]
    fn wrong_length_public_key_is_invalid() {
        let key = HpkePublicKey {
            suite: HpkeSuite::XWingChaCha20Poly1305,
            bytes: BoundedBytes::from_vec_unchecked(vec![0; 32]),
        };
        assert!(key.validate().is_err());
    }
}

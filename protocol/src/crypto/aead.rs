//! The AEAD of the first payload (the draft's `AEAD_AES_256_GCM` / `AEAD_AES_128_GCM`).

use aes_gcm::aead::{Aead as _, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit as _};
use serde::{Deserialize, Serialize};

/// The length of an AEAD nonce (96 bits).
pub const NONCE_LEN: usize = 12;
/// The length of an AEAD tag.
pub const TAG_LEN: usize = 16;

/// The AEAD algorithms for the first payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum AeadAlgorithm {
    /// AES-256-GCM with the whole 32-byte payload key (the default).
    #[default]
    Aes256Gcm,
    /// AES-128-GCM with the first 16 bytes of the payload key.
    Aes128Gcm,
}

impl AeadAlgorithm {
    /// The name used in test vectors: `AES-256-GCM` or `AES-128-GCM`.
    pub fn name(self) -> &'static str {
        match self {
            AeadAlgorithm::Aes256Gcm => "AES-256-GCM",
            AeadAlgorithm::Aes128Gcm => "AES-128-GCM",
        }
    }

    /// The draft's name: `AEAD_AES_256_GCM` or `AEAD_AES_128_GCM`.
    pub fn draft_name(self) -> &'static str {
        match self {
            AeadAlgorithm::Aes256Gcm => "AEAD_AES_256_GCM",
            AeadAlgorithm::Aes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// Parses a draft name.
    pub fn from_draft_name(name: &str) -> Option<Self> {
        [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Aes128Gcm]
            .into_iter()
            .find(|a| a.draft_name() == name)
    }

    /// Seals `plaintext` under `key` (AES-128 uses its first 16 bytes).
    pub fn seal(
        self,
        key: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Vec<u8> {
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        let nonce = aes_gcm::Nonce::from(*nonce);
        let sealed = match self {
            AeadAlgorithm::Aes256Gcm => {
                Aes256Gcm::new(&aes_gcm::Key::<Aes256Gcm>::from(*key)).encrypt(&nonce, payload)
            }
            AeadAlgorithm::Aes128Gcm => {
                let (short, _) = key.split_at(16);
                Aes128Gcm::new_from_slice(short)
                    .map_err(|_| aes_gcm::Error)
                    .and_then(|c| c.encrypt(&nonce, payload))
            }
        };
        // Encryption fails only for plaintexts beyond 2^36 bytes, far above any limit here.
        sealed.unwrap_or_default()
    }

    /// Opens `ciphertext || tag`.
    pub fn open(
        self,
        key: &[u8; 32],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, crate::Error> {
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        let nonce = aes_gcm::Nonce::from(*nonce);
        match self {
            AeadAlgorithm::Aes256Gcm => {
                Aes256Gcm::new(&aes_gcm::Key::<Aes256Gcm>::from(*key)).decrypt(&nonce, payload)
            }
            AeadAlgorithm::Aes128Gcm => {
                let (short, _) = key.split_at(16);
                Aes128Gcm::new_from_slice(short)
                    .map_err(|_| aes_gcm::Error)
                    .and_then(|c| c.decrypt(&nonce, payload))
            }
        }
        .map_err(|_| crate::Error::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::Aes128Gcm] {
            let key = [4u8; 32];
            let nonce = [5u8; NONCE_LEN];
            let mut ct = alg.seal(&key, &nonce, b"aad", b"hello");
            assert_eq!(ct.len(), 5 + TAG_LEN);
            assert_eq!(
                alg.open(&key, &nonce, b"aad", &ct).as_deref(),
                Ok(&b"hello"[..])
            );
            assert!(alg.open(&key, &nonce, b"aaD", &ct).is_err());
            ct[0] ^= 1;
            assert!(alg.open(&key, &nonce, b"aad", &ct).is_err());
            assert_eq!(AeadAlgorithm::from_draft_name(alg.draft_name()), Some(alg));
        }
    }

    #[test]
    fn aes128_uses_the_first_half_of_the_key() {
        let mut key = [4u8; 32];
        let nonce = [0u8; NONCE_LEN];
        let ct = AeadAlgorithm::Aes128Gcm.seal(&key, &nonce, b"", b"x");
        key[31] ^= 0xff;
        assert!(
            AeadAlgorithm::Aes128Gcm
                .open(&key, &nonce, b"", &ct)
                .is_ok()
        );
        key[0] ^= 0xff;
        assert!(
            AeadAlgorithm::Aes128Gcm
                .open(&key, &nonce, b"", &ct)
                .is_err()
        );
    }
}

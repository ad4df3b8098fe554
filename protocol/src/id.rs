//! Identifiers of a share: the mailbox ID, the secret and the DHT address.

use std::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, ShareKeys};

/// A mailbox identifier: a UUID (version 4 when tigress makes it). It names the mailbox in
/// the invitation and in the draft's HTTP API; nodes never see it, only its [`Address`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailboxId([u8; 16]);

impl MailboxId {
    /// A fresh random UUIDv4.
    pub fn random(rng: &mut impl CryptoRng) -> Self {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        Self(*uuid::Builder::from_random_bytes(bytes).as_uuid().as_bytes())
    }

    /// The ID with these 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The DHT address of this mailbox.
    pub fn address(&self) -> Address {
        Address(crypto::sha256(&[b"tigress/v1/address", &self.0]))
    }
}

/// The text did not parse as a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a UUID")]
pub struct InvalidMailboxId;

impl std::str::FromStr for MailboxId {
    type Err = InvalidMailboxId;

    /// Parses the hyphenated form (any case). Other UUID versions than 4 are accepted, as
    /// the draft's examples use them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 36 {
            return Err(InvalidMailboxId);
        }
        uuid::Uuid::try_parse(s)
            .map(|u| Self(*u.as_bytes()))
            .map_err(|_| InvalidMailboxId)
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxId({self})")
    }
}

/// The DHT key of a mailbox: `SHA-256("tigress/v1/address" || mailbox ID bytes)`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 bytes in hex, for logs.
    pub fn short(&self) -> String {
        crypto::sign::hex_lower(self.0.get(..8).unwrap_or(&[]))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crypto::sign::hex_lower(&self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.short())
    }
}

impl std::str::FromStr for Address {
    type Err = InvalidMailboxId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = crypto::sign::hex_decode(s).ok_or(InvalidMailboxId)?;
        Ok(Address(bytes.try_into().map_err(|_| InvalidMailboxId)?))
    }
}

/// The 32-byte share secret. It travels only in the invitation's fragment. Zeroized on
/// drop; `Debug` is redacted; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<[u8; 32]>);

impl Secret {
    /// The length of a secret.
    pub const LEN: usize = 32;

    /// A fresh random secret.
    pub fn random(rng: &mut impl CryptoRng) -> Self {
        let mut s = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(s.as_mut());
        Self(s)
    }

    /// The secret with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes. Handle with care.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the share's keys (HKDF-SHA256, salt = the mailbox ID bytes).
    pub fn derive_keys(&self, id: &MailboxId) -> ShareKeys {
        crypto::derive_share_keys(&self.0, id.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0.as_ref())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom("a secret is 32 bytes"))?;
        Ok(Self::from_bytes(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn random_ids_are_v4_and_round_trip() {
        let mut rng = ChaCha20Rng::from_seed([0; 32]);
        let id = MailboxId::random(&mut rng);
        let text = id.to_string();
        assert_eq!(text.as_bytes()[14], b'4');
        assert_eq!(text.parse::<MailboxId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<MailboxId>(), Ok(id));
        assert!("not-a-uuid".parse::<MailboxId>().is_err());
        assert!(text.replace('-', "").parse::<MailboxId>().is_err());
    }

    #[test]
    fn address_is_domain_separated_sha256() {
        let id = MailboxId::from_bytes([0x11; 16]);
        let mut input = b"tigress/v1/address".to_vec();
        input.extend_from_slice(&[0x11; 16]);
        assert_eq!(id.address().0, crypto::sha256(&[&input]));
        assert_eq!(
            id.address().to_string().parse::<Address>(),
            Ok(id.address())
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::from_bytes([0xab; 32]);
        assert!(!format!("{s:?}").contains("ab"));
    }
}

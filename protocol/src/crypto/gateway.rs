//! The keys an HTTP gateway derives for its clients.
//!
//! A draft client (draft-vinokurov-tigress-http-00) holds no keys: its gateway derives
//! them. From one 32-byte secret, shared by an operator's gateways, come the secret of
//! each share the gateway creates, the per-share device keys of each
//! `Mailbox-Device-Claim`, and the mailbox ID a (device, request) pair creates, so every
//! gateway with the secret serves the same devices and a repeated create names the same
//! mailbox. Each is HKDF-SHA256 with a versioned, domain-separated info.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// A gateway's secret. Zeroized on drop; `Debug` prints nothing of it.
pub struct GatewaySecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySecret(<redacted>)")
    }
}

impl GatewaySecret {
    /// The secret with these bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    fn derive(&self, salt: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(salt), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit: expand cannot fail.
        if hk.expand(&info.concat(), out.as_mut()).is_err() {
            out.fill(0);
        }
        out
    }

    /// The invitation secret of the share with this mailbox ID.
    pub fn share_secret(&self, mailbox_id: &[u8; 16]) -> Zeroizing<[u8; 32]> {
        self.derive(mailbox_id, &[b"tigress/v1/gateway/share"])
    }

    /// The seed of the device keys of `device_claim` on the share with this mailbox ID.
    pub fn device_seed(
        &self,
        mailbox_id: &[u8; 16],
        device_claim: &[u8; 16],
    ) -> Zeroizing<[u8; 32]> {
        self.derive(mailbox_id, &[b"tigress/v1/gateway/device", device_claim])
    }

    /// The mailbox ID (a UUIDv4) that `device_claim` creates with `request_id`.
    pub fn created_mailbox_id(&self, device_claim: &[u8; 16], request_id: &[u8; 16]) -> [u8; 16] {
        let h = self.derive(device_claim, &[b"tigress/v1/gateway/create", request_id]);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(h.get(..16).unwrap_or(&[0; 16]));
        // Version 4, RFC 4122 variant.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_separated_and_stable() {
        let a = GatewaySecret::from_bytes(Zeroizing::new([7; 32]));
        let b = GatewaySecret::from_bytes(Zeroizing::new([8; 32]));
        let id = [1u8; 16];
        assert_eq!(*a.share_secret(&id), *a.share_secret(&id));
        assert_ne!(*a.share_secret(&id), *b.share_secret(&id));
        assert_ne!(*a.share_secret(&id), *a.device_seed(&id, &[2; 16]));
        assert_ne!(*a.device_seed(&id, &[2; 16]), *a.device_seed(&id, &[3; 16]));
        let created = a.created_mailbox_id(&[2; 16], &[3; 16]);
        assert_eq!(created[6] >> 4, 4);
        assert_eq!(created[8] >> 6, 0b10);
        assert_eq!(format!("{a:?}"), "GatewaySecret(<redacted>)");
    }
}

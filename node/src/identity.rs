//! The node's identity: an Ed25519 key kept in the data directory, created on first start.
//! It is both the libp2p identity (peer ID) and the key that signs receipts.

use std::io::Write;
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand_core::{Rng as _, UnwrapErr};
use tigress_protocol::crypto::{PublicKey, SigningKey};
use zeroize::Zeroizing;

/// The file holding the 32-byte secret seed (mode 0600).
pub const IDENTITY_FILE: &str = "identity.key";

/// The node's keys.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The libp2p keypair.
    pub keypair: Keypair,
    /// The same key as a protocol signing key (receipts).
    pub signing: SigningKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeIdentity({})", self.peer_id())
    }
}

impl NodeIdentity {
    /// The identity with this seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_seed(seed);
        let mut copy = Zeroizing::new(*seed);
        // A 32-byte seed is always a valid Ed25519 secret key.
        let keypair = Keypair::ed25519_from_bytes(copy.as_mut())
            .unwrap_or_else(|_| Keypair::generate_ed25519());
        Self { keypair, signing }
    }

    /// Loads the identity from `dir`, creating it if missing.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let seed = load_or_create_secret(&dir.join(IDENTITY_FILE))?;
        Ok(Self::from_seed(&seed))
    }

    /// The peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The public key as the protocol names replicas.
    pub fn public_key(&self) -> PublicKey {
        self.signing.public_key()
    }
}

/// A 32-byte secret kept in `path` (mode 0600), created on first use.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<Zeroizing<[u8; 32]>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key", path.display()),
                )
            })?;
            Ok(Zeroizing::new(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = Zeroizing::new([0u8; 32]);
            UnwrapErr(getrandom::SysRng).fill_bytes(seed.as_mut());
            let tmp = path.with_extension("tmp");
            {
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(seed.as_ref())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            Ok(seed)
        }
        Err(e) => Err(e),
    }
}

/// The peer ID of a replica named by its protocol key.
pub fn peer_of(key: &PublicKey) -> Option<PeerId> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// The protocol key of a peer, when its peer ID embeds an Ed25519 key.
pub fn key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    let public = libp2p::identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(PublicKey(ed.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_keys_map_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeIdentity::load_or_create(dir.path()).unwrap();
        let b = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(key_of(&a.peer_id()), Some(a.public_key()));
        assert_eq!(peer_of(&a.public_key()), Some(a.peer_id()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_corrupt_identity_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"short").unwrap();
        assert!(NodeIdentity::load_or_create(dir.path()).is_err());
    }
}

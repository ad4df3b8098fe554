//! Oblivious requests: a client's request reaches the node that carries it out (the
//! *target*) through another node (the *relay*), sealed to the target's key with the
//! encapsulation of Oblivious HTTP (RFC 9458), so that no single node learns both who
//! asks and what about.
//!
//! The relay sees the client's connection and opaque bytes; the target sees the request
//! and the relay, never the client. What the target answers is sealed to the client. The
//! target's key configuration (RFC 9458 §3) travels in [`GatewayKeys`], signed by the
//! target's node key: a relay that hands out its own key is caught.
//!
//! Inside the encapsulation, a native request is a Binary HTTP (RFC 9292) `POST` of
//! [`NATIVE_PATH`] whose content is the client-protocol request, so one gateway on every
//! node serves both the draft's HTTP clients and native ones.
//!
//! Which relay and which targets a client uses is [`choose`]: targets among the nodes
//! nearest the mailbox's address (they hold it, and learn the address anyway), the relay
//! among the nodes that never see that address.

use rand_core::Rng;
use serde::{Deserialize, Serialize};

use crate::crypto::{PublicKey, Signature, SignatureKind, SigningKey};
use crate::id::Address;
use crate::placement;
use crate::wire::{self, BoundedBytes, BoundedString, BoundedVec};

/// The path of a native request inside an oblivious request.
pub const NATIVE_PATH: &str = "/tigress/client/1";
/// The media type of a native request's and answer's content.
pub const NATIVE_MEDIA_TYPE: &str = "application/x-tigress-client";
/// The largest key configuration list carried.
pub const MAX_KEY_CONFIG: usize = 1024;
/// The largest sealed request or answer carried (a frame less room for its envelope).
pub const MAX_SEALED: usize = crate::rpc::MAX_FRAME - 4096;
/// The most nodes a relay lists.
pub const MAX_NODES: usize = 64;
/// The most addresses listed for one node.
pub const MAX_NODE_ADDRS: usize = 4;

/// What a node's key configuration record says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayKeysBody {
    /// The node whose gateway this is.
    pub node: PublicKey,
    /// Its key configurations, as served at `/.well-known/ohttp-gateway`
    /// (`application/ohttp-keys`, RFC 9540).
    pub key_config: BoundedBytes<MAX_KEY_CONFIG>,
    /// When the node signed it (unix seconds).
    pub issued_at: u64,
}

/// A node's OHTTP key configuration, signed by its node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayKeys {
    /// The body.
    pub body: GatewayKeysBody,
    /// The node key's signature over the body.
    pub signature: Signature,
}

/// Why a key record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The record is for another node than the one asked.
    #[error("the key record is for node {found}, not {expected}")]
    WrongNode {
        /// The node asked.
        expected: String,
        /// The node named.
        found: String,
    },
    /// The signature does not verify.
    #[error("the key record's signature does not verify")]
    BadSignature,
    /// The configuration does not fit.
    #[error("the key configuration is larger than {MAX_KEY_CONFIG} bytes")]
    TooLarge,
}

impl GatewayKeys {
    /// Signs `key_config` as the gateway keys of the node with key `signer`.
    pub fn sign(
        key_config: Vec<u8>,
        issued_at: u64,
        signer: &SigningKey,
    ) -> Result<Self, KeysError> {
        let body = GatewayKeysBody {
            node: signer.public_key(),
            key_config: BoundedBytes::new(key_config).ok_or(KeysError::TooLarge)?,
            issued_at,
        };
        let signature = signer.sign(SignatureKind::GatewayKeys, &wire::encode(&body));
        Ok(Self { body, signature })
    }

    /// The key configurations, once the record is shown to be `node`'s.
    pub fn verify(&self, node: &PublicKey) -> Result<&[u8], KeysError> {
        if self.body.node != *node {
            return Err(KeysError::WrongNode {
                expected: node.to_string(),
                found: self.body.node.to_string(),
            });
        }
        node.verify(
            SignatureKind::GatewayKeys,
            &wire::encode(&self.body),
            &self.signature,
        )
        .map_err(|_| KeysError::BadSignature)?;
        Ok(&self.body.key_config)
    }
}

/// A node a relay knows, with where to dial it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownNode {
    /// Its key.
    pub key: PublicKey,
    /// Its multiaddrs (without `/p2p/`).
    pub addrs: BoundedVec<BoundedString<256>, MAX_NODE_ADDRS>,
}

/// The relay and targets of one oblivious operation on one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The relay to use: `None` keeps the current one.
    pub relay: Option<PublicKey>,
    /// The targets to try, in order.
    pub targets: Vec<PublicKey>,
    /// Whether the relay is among the nodes that see the address (a network too small to
    /// keep them apart).
    pub relay_sees_address: bool,
}

/// Picks the relay and the targets for an operation on `address`, given the nodes known
/// and the relay connected to. The nodes that may see the address are the `2r` nearest
/// (replicas, and the nodes an entry asks for a genesis); the targets are the `r`
/// nearest in random order, so two parties pick independently; no target is the relay.
/// The relay is outside the `2r`, and where `prefix_of` tells nodes' network prefixes
/// apart, in a prefix none of the targets is in (one operator's network should not hold
/// both ends): the current relay when it qualifies, else a random node that does, else a
/// random node outside the `2r`.
pub fn choose(
    nodes: &[PublicKey],
    address: &Address,
    r: usize,
    current: &PublicKey,
    prefix_of: &dyn Fn(&PublicKey) -> Option<Vec<u8>>,
    rng: &mut impl Rng,
) -> Route {
    let all: Vec<PublicKey> = placement::nearest(
        nodes.iter().copied().chain(std::iter::once(*current)),
        address,
        usize::MAX,
    );
    let near: Vec<PublicKey> = all.iter().take(2 * r).copied().collect();
    let far: Vec<PublicKey> = all.iter().skip(2 * r).copied().collect();
    let target_prefixes: Vec<Vec<u8>> = all.iter().take(r + 1).filter_map(prefix_of).collect();
    let apart = |k: &PublicKey| prefix_of(k).is_none_or(|p| !target_prefixes.contains(&p));
    let (relay, relay_key, sees) = if !near.contains(current) && apart(current) {
        (None, *current, false)
    } else {
        let distinct: Vec<PublicKey> = far.iter().filter(|k| apart(k)).copied().collect();
        let pool = if distinct.is_empty() { &far } else { &distinct };
        match pool.get(pick_index(rng, pool.len())) {
            Some(pick) if pick == current => (None, *current, false),
            Some(pick) => (Some(*pick), *pick, false),
            None => (None, *current, true),
        }
    };
    let mut targets: Vec<PublicKey> = all
        .iter()
        .filter(|k| **k != relay_key)
        .take(r)
        .copied()
        .collect();
    shuffle(&mut targets, rng);
    Route {
        relay,
        targets,
        relay_sees_address: sees,
    }
}

fn pick_index(rng: &mut impl Rng, len: usize) -> usize {
    let n = u64::try_from(len).unwrap_or(u64::MAX).max(1);
    usize::try_from(rng.next_u64() % n).unwrap_or(0)
}

fn shuffle<T>(items: &mut [T], rng: &mut impl Rng) {
    for i in (1..items.len()).rev() {
        let j = pick_index(rng, i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn keys(n: usize, rng: &mut ChaCha20Rng) -> Vec<SigningKey> {
        (0..n).map(|_| SigningKey::generate(rng)).collect()
    }

    #[test]
    fn a_key_record_verifies_only_for_its_node_and_its_bytes() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let ks = keys(2, &mut rng);
        let record = GatewayKeys::sign(vec![1, 2, 3], 7, &ks[0]).unwrap();
        assert_eq!(record.verify(&ks[0].public_key()).unwrap(), &[1, 2, 3]);
        assert!(matches!(
            record.verify(&ks[1].public_key()),
            Err(KeysError::WrongNode { .. })
        ));
        // A relay substituting its own configuration under the node's name is caught.
        let mut swapped = record.clone();
        swapped.body.key_config = BoundedBytes::new(vec![9, 9, 9]).unwrap();
        assert_eq!(
            swapped.verify(&ks[0].public_key()),
            Err(KeysError::BadSignature)
        );
        // So is one it signed itself.
        let mut own = GatewayKeys::sign(vec![9], 7, &ks[1]).unwrap();
        own.body.node = ks[0].public_key();
        assert_eq!(
            own.verify(&ks[0].public_key()),
            Err(KeysError::BadSignature)
        );
        assert_eq!(
            GatewayKeys::sign(vec![0; MAX_KEY_CONFIG + 1], 7, &ks[0]),
            Err(KeysError::TooLarge)
        );
    }

    #[test]
    fn the_relay_never_sees_the_address_when_the_network_can_keep_them_apart() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for n in [7usize, 10, 40] {
            let nodes: Vec<PublicKey> = keys(n, &mut rng).iter().map(|k| k.public_key()).collect();
            for trial in 0..200u32 {
                let address = Address(crate::crypto::sha256(&[&trial.to_be_bytes()]));
                let r = 3;
                let current = nodes[usize::try_from(trial).unwrap() % n];
                let route = choose(&nodes, &address, r, &current, &|_| None, &mut rng);
                let relay = route.relay.unwrap_or(current);
                let near = placement::nearest(nodes.iter().copied(), &address, 2 * r);
                assert!(
                    !near.contains(&relay),
                    "n={n}: the relay is near the address"
                );
                assert!(!route.relay_sees_address);
                assert_eq!(route.relay.is_none(), !near.contains(&current));
                let mut targets = route.targets.clone();
                targets.sort();
                let mut want = placement::nearest(nodes.iter().copied(), &address, r);
                want.sort();
                assert_eq!(targets, want, "the targets are the replicas");
            }
        }
    }

    #[test]
    fn in_a_network_too_small_the_relay_stays_and_is_never_a_target() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let nodes: Vec<PublicKey> = keys(4, &mut rng).iter().map(|k| k.public_key()).collect();
        let address = Address([5; 32]);
        let route = choose(&nodes, &address, 3, &nodes[0], &|_| None, &mut rng);
        assert_eq!(route.relay, None);
        assert!(route.relay_sees_address);
        assert!(!route.targets.contains(&nodes[0]));
        assert_eq!(route.targets.len(), 3);
    }

    #[test]
    fn two_parties_pick_targets_independently() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let nodes: Vec<PublicKey> = keys(20, &mut rng).iter().map(|k| k.public_key()).collect();
        let address = Address([7; 32]);
        let far = placement::nearest(nodes.iter().copied(), &address, 20)[19];
        let firsts: std::collections::HashSet<PublicKey> = (0..50)
            .map(|_| choose(&nodes, &address, 5, &far, &|_| None, &mut rng).targets[0])
            .collect();
        assert!(firsts.len() > 1, "the first target varies");
    }

    #[test]
    fn the_relay_is_taken_from_another_network_than_the_targets() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let nodes: Vec<PublicKey> = keys(12, &mut rng).iter().map(|k| k.public_key()).collect();
        for trial in 0..100u32 {
            let address = Address(crate::crypto::sha256(&[b"p", &trial.to_be_bytes()]));
            let order = placement::nearest(nodes.iter().copied(), &address, usize::MAX);
            // The targets' network, and one far node alone in another.
            let other = order[11];
            let prefix_of = |k: &PublicKey| Some(vec![u8::from(*k == other)]);
            let current = order[8];
            let route = choose(&nodes, &address, 3, &current, &prefix_of, &mut rng);
            assert_eq!(route.relay, Some(other), "the only node of another network");
            // Without prefixes, the current far relay is kept.
            let plain = choose(&nodes, &address, 3, &current, &|_| None, &mut rng);
            assert_eq!(plain.relay, None);
        }
    }
}

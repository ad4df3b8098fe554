//! Where a mailbox lives: the R relay nodes nearest to its address by the DHT's XOR
//! distance, computed exactly as Kademlia does (SHA-256 of the node's peer ID against
//! SHA-256 of the address). Clients check an entry node's answer with it, replicas check
//! that a genesis they are given is theirs to hold, and the simulator places mailboxes
//! with it.

use crate::crypto::{self, PublicKey};
use crate::id::Address;

/// The libp2p peer ID of a node key: the identity multihash of the key's protobuf
/// encoding (Ed25519).
pub fn peer_id_bytes(key: &PublicKey) -> [u8; 38] {
    let mut out = [0u8; 38];
    let prefix = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    for (o, b) in out.iter_mut().zip(prefix.iter().chain(key.as_bytes())) {
        *o = *b;
    }
    out
}

/// The XOR distance between a node and an address in the DHT's key space.
pub fn distance(key: &PublicKey, address: &Address) -> [u8; 32] {
    let node = crypto::sha256(&[&peer_id_bytes(key)]);
    let target = crypto::sha256(&[address.as_bytes()]);
    let mut d = [0u8; 32];
    for ((b, n), t) in d.iter_mut().zip(node).zip(target) {
        *b = n ^ t;
    }
    d
}

/// At most `r` of `keys` (each once), nearest to `address` first.
pub fn nearest(
    keys: impl IntoIterator<Item = PublicKey>,
    address: &Address,
    r: usize,
) -> Vec<PublicKey> {
    let mut all: Vec<([u8; 32], PublicKey)> = keys
        .into_iter()
        .map(|k| (distance(&k, address), k))
        .collect();
    all.sort();
    all.dedup();
    all.into_iter().take(r).map(|(_, k)| k).collect()
}

/// How many of `known` are nearer to `address` than `me`.
pub fn nearer_than(me: &PublicKey, known: &[PublicKey], address: &Address) -> usize {
    let mine = distance(me, address);
    known
        .iter()
        .filter(|k| *k != me && distance(k, address) < mine)
        .count()
}

/// What a client makes of an entry node's `located` answer for `address`, given the
/// answer of a second entry (`confirmed`): the `r` nearest of both. `Ok` when the first
/// answer is exactly that set; otherwise `Err` with the set to use instead (the first
/// named a node that is not among the nearest the client can find).
pub fn confirm(
    located: &[PublicKey],
    confirmed: &[PublicKey],
    address: &Address,
    r: usize,
) -> Result<Vec<PublicKey>, Vec<PublicKey>> {
    let best = nearest(located.iter().chain(confirmed).copied(), address, r);
    let mut a = located.to_vec();
    a.sort();
    a.dedup();
    let mut b = best.clone();
    b.sort();
    if a == b { Ok(best) } else { Err(best) }
}

//! When a cluster is ready: when every node's lookup of an address finds the same R
//! closest nodes that the whole cluster would name. That is what a transfer needs (any
//! entry places and finds a mailbox on the same replicas); a full routing table is not
//! needed, and Kademlia does not promise one past a few dozen nodes.

use std::time::{Duration, Instant};

use futures::StreamExt as _;

use libp2p::PeerId;
use tigress_protocol::Address;
use tigress_protocol::crypto::{PublicKey, sha256};

/// How many addresses a readiness check looks up from every node.
pub const PROBES: u32 = 4;

/// Readiness lookups in flight at once.
const CONCURRENT_LOOKUPS: usize = 64;

/// The `i`-th probe address.
pub fn probe(i: u32) -> Address {
    Address(sha256(&[b"tigress/v1/readiness-probe", &i.to_be_bytes()]))
}

/// The `r` nodes of `peers` closest to `address`, by the rule entry nodes place with.
pub fn closest(peers: &[PeerId], address: &Address, r: usize) -> Vec<PublicKey> {
    tigress_node::entry::nearest(peers.to_vec(), address, r)
}

/// Waits until, for every node `0..nodes` and every probe address, `lookup(node,
/// address, r)` names the `r` nodes of `peers` closest to the address (`r` is
/// `replication(node)`); fails after `limit` with how many lookups still disagree.
pub async fn wait(
    nodes: usize,
    peers: &[PeerId],
    replication: impl Fn(usize) -> usize,
    limit: Duration,
    lookup: impl AsyncFn(usize, Address, usize) -> Vec<PublicKey>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<(usize, u32)> = (0..nodes)
        .flat_map(|i| (0..PROBES).map(move |p| (i, p)))
        .collect();
    loop {
        // The pending lookups, a bounded number at a time: each is a DHT query of its own,
        // and hundreds at once on a small machine time out instead of settling.
        let lookup = &lookup;
        let replication = &replication;
        let checks = pending.iter().map(|&(i, p)| async move {
            let address = probe(p);
            let r = replication(i);
            let found = lookup(i, address, r).await;
            let want = closest(peers, &address, r);
            (!agrees(&found, &want)).then_some(Miss {
                node: i,
                probe: p,
                missing: want
                    .iter()
                    .filter(|k| !found.contains(k))
                    .copied()
                    .collect(),
                extra: found
                    .iter()
                    .filter(|k| !want.contains(k))
                    .copied()
                    .collect(),
            })
        });
        // What the disagreeing lookups found, for the error.
        let mut misses: Vec<Miss> = futures::stream::iter(checks)
            .buffer_unordered(CONCURRENT_LOOKUPS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        pending = misses.iter().map(|m| (m.node, m.probe)).collect();
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(
            disagreeing = pending.len(),
            of = nodes * PROBES as usize,
            "cluster not ready yet"
        );
        if Instant::now() >= deadline {
            misses.sort_by_key(|m| (m.node, m.probe));
            let examples: Vec<String> = misses.iter().take(8).map(Miss::to_string).collect();
            anyhow::bail!(
                "the cluster was not ready within {limit:?}: {} of {} node lookups still disagree on the closest nodes ({})",
                pending.len(),
                nodes * PROBES as usize,
                examples.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A lookup that did not name the closest nodes: which it missed, which it named wrongly.
struct Miss {
    node: usize,
    probe: u32,
    missing: Vec<PublicKey>,
    extra: Vec<PublicKey>,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short =
            |keys: &[PublicKey]| keys.iter().map(|k| k.short()).collect::<Vec<_>>().join(",");
        write!(
            f,
            "node {} probe {}: missed [{}], named [{}] instead",
            self.node,
            self.probe,
            short(&self.missing),
            short(&self.extra)
        )
    }
}

/// Whether a node's answer names the same set as the cluster would.
pub fn agrees(found: &[PublicKey], want: &[PublicKey]) -> bool {
    found.len() == want.len() && want.iter().all(|k| found.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_takes_the_nearest_and_agreement_ignores_order() {
        let peers: Vec<PeerId> = (0..10)
            .map(|_| {
                libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
            })
            .collect();
        let a = closest(&peers, &probe(0), 3);
        assert_eq!(a.len(), 3);
        let mut reversed = a.clone();
        reversed.reverse();
        assert!(agrees(&reversed, &a));
        assert!(!agrees(&a[..2], &a));
        assert_ne!(probe(0), probe(1));
    }
}

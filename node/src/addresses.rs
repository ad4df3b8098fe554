//! Where to dial nodes that are not in the routing table: a network behaviour that keeps
//! the addresses lookups found.
//!
//! A routing table holds at most k nodes per distance bucket, so in a network of a few
//! hundred nodes an entry's table lacks most of the nodes far from its own ID, and with
//! them most of a given mailbox's replicas. A lookup finds those replicas with their
//! addresses, but libp2p's Kademlia offers a peer's addresses for a dial only while the
//! query that found it runs, and this node puts in its table only addresses it reached
//! itself. So a request to a replica a little later (a claim after the genesis search, a
//! read after the connection idled out) failed to dial: "unreachable". This book keeps
//! what lookups found, for dialing only (never for the routing table), and offers it when
//! a dial to one of those peers starts. What a lying peer puts in a lookup's answer can
//! only make a dial fail: Noise checks the peer's identity at any address.
//!
//! Bounded: at most [`MAX_PEERS`] peers (least recently found first out), at most
//! [`MAX_ADDRS`] addresses each.

use std::convert::Infallible;
use std::task::{Context, Poll};

use hashlink::LruCache;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// The most peers the book holds.
pub const MAX_PEERS: usize = 8192;

/// The most addresses kept per peer.
pub const MAX_ADDRS: usize = 4;

/// The addresses lookups found, by peer.
pub struct AddressBook {
    peers: LruCache<PeerId, Vec<Multiaddr>>,
}

impl Default for AddressBook {
    fn default() -> Self {
        Self {
            peers: LruCache::new(MAX_PEERS),
        }
    }
}

impl AddressBook {
    /// Keeps `addrs` (the first [`MAX_ADDRS`]) as where `peer` was found, replacing what
    /// was kept for it.
    pub fn found(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if addrs.is_empty() {
            return;
        }
        let kept: Vec<Multiaddr> = addrs.iter().take(MAX_ADDRS).cloned().collect();
        self.peers.insert(peer, kept);
    }

    /// Where `peer` was found, if a lookup found it.
    pub fn get(&mut self, peer: &PeerId) -> Option<&[Multiaddr]> {
        self.peers.get(peer).map(Vec::as_slice)
    }

    /// How many peers the book holds.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book holds no peer.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl NetworkBehaviour for AddressBook {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(maybe_peer
            .and_then(|p| self.get(&p).map(<[Multiaddr]>::to_vec))
            .unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn a_found_peer_is_dialed_where_it_was_found_within_bounds() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let many: Vec<Multiaddr> = (1..=10).map(addr).collect();
        book.found(peer, &many);
        let offered = book
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(1),
                Some(peer),
                &[],
                Endpoint::Dialer,
            )
            .unwrap();
        assert_eq!(offered, many[..MAX_ADDRS].to_vec());
        let stranger = book
            .handle_pending_outbound_connection(
                ConnectionId::new_unchecked(2),
                Some(PeerId::random()),
                &[],
                Endpoint::Dialer,
            )
            .unwrap();
        assert!(stranger.is_empty());
        // However many peers lookups name, the book holds at most MAX_PEERS.
        for i in 0..MAX_PEERS + 100 {
            book.found(PeerId::random(), &[addr((i % 60_000) as u16)]);
        }
        assert_eq!(book.len(), MAX_PEERS);
        assert!(book.get(&peer).is_none(), "the oldest peer went first");
    }
}

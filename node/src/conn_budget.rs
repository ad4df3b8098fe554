//! Inbound libp2p connections per source prefix: a network behaviour that refuses a
//! connection, before its handshake where it can, once the prefix it comes from holds
//! its share (pending and established together). Peer IDs are free; addresses are not.

use std::collections::HashMap;
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::budget::{Classifier, PrefixKey};

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("the network prefix of {addr} holds its {limit} connections")]
pub struct PrefixFull {
    addr: Multiaddr,
    limit: u32,
}

/// The behaviour.
pub struct ConnBudget {
    classify: Classifier,
    limit: u32,
    by_prefix: HashMap<PrefixKey, u32>,
    counted: HashMap<ConnectionId, PrefixKey>,
}

impl ConnBudget {
    /// At most `limit` inbound connections per prefix (0: none).
    pub fn new(classify: Classifier, limit: u32) -> Self {
        Self {
            classify,
            limit,
            by_prefix: HashMap::new(),
            counted: HashMap::new(),
        }
    }

    /// Counts `id` against the prefix of `remote`, or refuses it.
    fn take(&mut self, id: ConnectionId, remote: &Multiaddr) -> Result<(), ConnectionDenied> {
        if self.limit == 0 || self.counted.contains_key(&id) {
            return Ok(());
        }
        let source = self.classify.of_addr(Some(remote));
        if source.exempt {
            return Ok(());
        }
        let held = self.by_prefix.entry(source.prefix).or_default();
        if *held >= self.limit {
            return Err(ConnectionDenied::new(PrefixFull {
                addr: remote.clone(),
                limit: self.limit,
            }));
        }
        *held += 1;
        self.counted.insert(id, source.prefix);
        Ok(())
    }

    fn give_back(&mut self, id: ConnectionId) {
        if let Some(prefix) = self.counted.remove(&id)
            && let Some(n) = self.by_prefix.get_mut(&prefix)
        {
            *n -= 1;
            if *n == 0 {
                self.by_prefix.remove(&prefix);
            }
        }
    }

    /// Connections counted in all.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.counted.len()
    }
}

impl NetworkBehaviour for ConnBudget {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.take(connection_id, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Counted when pending already, unless the transport has no pending step.
        self.take(connection_id, remote)?;
        Ok(dummy::ConnectionHandler)
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

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            // A connection that closes, fails its handshake or is refused by another
            // behaviour gives its place back.
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.give_back(connection_id)
            }
            _ => {}
        }
    }

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
    use crate::budget::BudgetConfig;

    #[test]
    fn a_prefix_holds_at_most_its_share() {
        let classify = Classifier::new(&BudgetConfig {
            exempt: vec!["127.0.0.1".into()],
            ..BudgetConfig::default()
        })
        .unwrap();
        let mut b = ConnBudget::new(classify, 2);
        let local: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        let a1: Multiaddr = "/ip4/203.0.113.5/tcp/1000".parse().unwrap();
        let a2: Multiaddr = "/ip4/203.0.113.9/tcp/1001".parse().unwrap();
        let other: Multiaddr = "/ip4/192.0.2.1/tcp/1000".parse().unwrap();
        let loopback: Multiaddr = "/ip4/127.0.0.1/tcp/1000".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..6)
            .map(|_| ConnectionId::new_unchecked(rand_id()))
            .collect();
        assert!(
            b.handle_pending_inbound_connection(ids[0], &local, &a1)
                .is_ok()
        );
        assert!(
            b.handle_pending_inbound_connection(ids[1], &local, &a2)
                .is_ok()
        );
        let denied = b.handle_pending_inbound_connection(ids[2], &local, &a1);
        assert!(denied.is_err(), "a third connection from the /24");
        assert!(
            b.handle_pending_inbound_connection(ids[3], &local, &other)
                .is_ok()
        );
        assert!(
            b.handle_pending_inbound_connection(ids[4], &local, &loopback)
                .is_ok()
        );
        // Established after pending: counted once.
        assert!(
            b.handle_established_inbound_connection(ids[0], PeerId::random(), &local, &a1)
                .is_ok()
        );
        assert_eq!(b.held(), 3);
        // A closed one makes room.
        b.give_back(ids[1]);
        assert!(
            b.handle_pending_inbound_connection(ids[5], &local, &a1)
                .is_ok()
        );
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

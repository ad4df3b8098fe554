//! How many routing-table entries one network prefix may hold: an IPv4 /24 or an IPv6
//! /48, in total and per Kademlia bucket. Peer IDs cost nothing, addresses do; so one
//! machine (or one small network) cannot fill a node's routing table, or the part of it
//! nearest an address, with identities of its own. The prefix is the one the connection
//! came from, not what the peer says it listens on.

use std::collections::HashMap;
use std::net::IpAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// A network prefix: an IPv4 /24 or an IPv6 /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
}

impl Prefix {
    /// The prefix of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Prefix::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Prefix::of(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    Prefix::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            },
        }
    }

    /// The prefix of the first IP address in `addr`, if it has one.
    pub fn of_addr(addr: &Multiaddr) -> Option<Self> {
        addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(Prefix::of(IpAddr::V4(ip))),
            Protocol::Ip6(ip) => Some(Prefix::of(IpAddr::V6(ip))),
            _ => None,
        })
    }
}

/// The limits (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries of one prefix in the whole table.
    pub total: usize,
    /// Entries of one prefix in one bucket.
    pub per_bucket: usize,
}

/// The prefix and bucket of each routing-table entry this node inserted. Kademlia's table
/// stays the truth: entries it dropped are forgotten with [`PrefixTable::retain`] before
/// each count.
#[derive(Debug, Default)]
pub struct PrefixTable {
    entries: HashMap<PeerId, (Prefix, u32)>,
}

impl PrefixTable {
    /// Counts `peer`, from `prefix`, in bucket `bucket`, if the table has room for it under
    /// `limits`; whether it is counted. A peer already counted stays counted where it was:
    /// seen again from another prefix (over another connection), it neither frees its
    /// place nor passes the other prefix's limit.
    pub fn take(&mut self, limits: Limits, peer: &PeerId, prefix: Prefix, bucket: u32) -> bool {
        if self.entries.contains_key(peer) {
            return true;
        }
        let same = || self.entries.values().filter(|(p, _)| *p == prefix);
        let total_ok = limits.total == 0 || same().count() < limits.total;
        let bucket_ok = limits.per_bucket == 0
            || same().filter(|(_, b)| *b == bucket).count() < limits.per_bucket;
        let room = total_ok && bucket_ok;
        if room {
            self.entries.insert(*peer, (prefix, bucket));
        }
        room
    }

    /// Whether `peer` is counted.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.entries.contains_key(peer)
    }

    /// Forgets every entry that is no longer in the table.
    pub fn retain(&mut self, in_table: impl Fn(&PeerId) -> bool) {
        self.entries.retain(|p, _| in_table(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_48() {
        let a = Prefix::of("10.1.2.3".parse().unwrap());
        assert_eq!(a, Prefix::of("10.1.2.250".parse().unwrap()));
        assert_ne!(a, Prefix::of("10.1.3.3".parse().unwrap()));
        assert_eq!(a, Prefix::of("::ffff:10.1.2.9".parse().unwrap()));
        let b = Prefix::of("2001:db8:1::1".parse().unwrap());
        assert_eq!(b, Prefix::of("2001:db8:1:ffff::2".parse().unwrap()));
        assert_ne!(b, Prefix::of("2001:db8:2::1".parse().unwrap()));
        let addr: Multiaddr = "/ip4/127.0.2.9/tcp/1".parse().unwrap();
        assert_eq!(
            Prefix::of_addr(&addr),
            Some(Prefix::of("127.0.2.1".parse().unwrap()))
        );
    }

    #[test]
    fn one_prefix_fills_no_more_than_its_share() {
        let limits = Limits {
            total: 3,
            per_bucket: 2,
        };
        let mut table = PrefixTable::default();
        let sybil = Prefix::of("192.0.2.1".parse().unwrap());
        let honest = Prefix::of("198.51.100.1".parse().unwrap());
        let mut admitted = 0;
        for i in 0..10u32 {
            let p = peer();
            if table.take(limits, &p, sybil, 250 + i % 2) {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3, "three in total");
        // Two in one bucket at most.
        let mut table = PrefixTable::default();
        let mut in_bucket = 0;
        for _ in 0..10 {
            let p = peer();
            if table.take(limits, &p, sybil, 255) {
                in_bucket += 1;
            }
        }
        assert_eq!(in_bucket, 2);
        // Another prefix is not held back, and a peer already in stays.
        let other = peer();
        assert!(table.take(limits, &other, honest, 255));
        assert!(table.take(limits, &other, honest, 255));
        // An entry Kademlia dropped stops counting.
        let p = peer();
        assert!(table.take(limits, &p, sybil, 254));
        assert!(!table.take(limits, &peer(), sybil, 253));
        table.retain(|x| *x != p);
        assert!(table.take(limits, &peer(), sybil, 253));
        // No limits.
        let none = Limits {
            total: 0,
            per_bucket: 0,
        };
        assert!(table.take(none, &peer(), sybil, 255));
    }

    /// A counted peer identified again over a connection from another prefix (on
    /// loopback, or a host with two networks) stays where it was counted: moving it
    /// would free its place for one more of its prefix and put it past the other's limit.
    #[test]
    fn a_peer_seen_from_another_prefix_does_not_move() {
        let limits = Limits {
            total: 2,
            per_bucket: 2,
        };
        let mut table = PrefixTable::default();
        let a = Prefix::of("192.0.2.1".parse().unwrap());
        let b = Prefix::of("198.51.100.1".parse().unwrap());
        let crowd: Vec<PeerId> = (0..6).map(|_| peer()).collect();
        // Two from each prefix fill both.
        for p in &crowd[..2] {
            assert!(table.take(limits, p, a, 255));
        }
        for p in &crowd[2..4] {
            assert!(table.take(limits, p, b, 255));
        }
        // One seen again from the other prefix: still in, and still counted under the
        // first.
        assert!(table.take(limits, &crowd[0], b, 255));
        // So neither prefix has room for another.
        assert!(!table.take(limits, &crowd[4], a, 255));
        assert!(!table.take(limits, &crowd[5], b, 255));
        assert_eq!(crowd.iter().filter(|p| table.contains(p)).count(), 4);
    }
}

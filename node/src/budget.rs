//! Budgets per source. Peer IDs and mailboxes cost nothing to make, addresses do: so what
//! one party may hold of this node (connections, requests in flight, long-polls) and how
//! fast it may ask is counted per network prefix (an IPv4 /24, an IPv6 /48 by default),
//! and within a prefix per member (one host: an IPv4 address or an IPv6 /64; on the
//! replica protocol, one calling node), and for the node overall. A member may hold only
//! part of its prefix's share, so an honest host in an attacker's prefix still finds
//! room; the overall limit stays above any one prefix's, so one prefix never takes all.
//!
//! Sources listed as exempt (a local cluster's shared loopback address, an operator's own
//! gateway) are counted only against the overall limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use libp2p::PeerId;
use libp2p::multiaddr::{Multiaddr, Protocol};
use serde::Deserialize;

/// The budgets of a node, as configured (`[budgets]` in the configuration file). A limit
/// of 0 means none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// The length of a source prefix for IPv4 addresses.
    pub prefix_v4: u8,
    /// The length of a source prefix for IPv6 addresses.
    pub prefix_v6: u8,
    /// Sources counted only against the overall limits (`127.0.0.1/32`, `10.0.0.0/8`).
    pub exempt: Vec<String>,
    /// Requests in flight (client and replica protocols, HTTP) per prefix.
    pub requests_per_prefix: usize,
    /// Requests in flight per member of a prefix.
    pub requests_per_member: usize,
    /// Long-polls waiting per prefix: they never take the slots of other requests.
    pub long_polls_per_prefix: usize,
    /// Long-polls waiting per member of a prefix.
    pub long_polls_per_member: usize,
    /// Long-polls waiting for one mailbox.
    pub long_polls_per_mailbox: usize,
    /// Long-polls waiting in all.
    pub long_polls_total: usize,
    /// Requests per second per prefix on average (HTTP and the client protocol).
    pub rate_per_prefix: u32,
    /// Requests per second per member on average.
    pub rate_per_member: u32,
    /// Libp2p connections per prefix (inbound).
    pub connections_per_prefix: u32,
    /// Bytes of requests not yet answered that one libp2p connection may have this node
    /// hold (frames being read, requests being served).
    pub held_bytes_per_connection: usize,
    /// The same for all connections from one prefix.
    pub held_bytes_per_prefix: usize,
    /// Bytes per second one host may send over its libp2p connections, on average (bursts
    /// of two seconds' worth); past it the node reads its connections no faster.
    pub read_bytes_per_sec_per_host: u32,
    /// The same for one prefix.
    pub read_bytes_per_sec_per_prefix: u32,
    /// HTTP connections open per prefix.
    pub http_connections_per_prefix: usize,
    /// HTTP connections open per member.
    pub http_connections_per_member: usize,
    /// HTTP connections open in all.
    pub http_connections: usize,
    /// Seconds an HTTP client has to send a request's headers (and the most a
    /// connection stays idle between requests).
    pub http_header_timeout_secs: u64,
    /// Seconds an HTTP client has to send a request's body.
    pub http_body_timeout_secs: u64,
    /// Replica-protocol requests in flight from one calling node (an entry forwards all
    /// its clients' requests, so this is larger than a host's share).
    pub replica_requests_per_node: usize,
    /// Replica-protocol requests in flight from one prefix of nodes.
    pub replica_requests_per_prefix: usize,
    /// Replica-protocol requests per second from one calling node on average (bursts of
    /// two seconds' worth), checked as they arrive, before they queue for the dispatcher.
    pub replica_rate_per_node: u32,
    /// The same for one prefix of nodes.
    pub replica_rate_per_prefix: u32,
    /// Replica-protocol long-polls waiting from one calling node.
    pub replica_long_polls_per_node: usize,
    /// Replica-protocol long-polls waiting from one prefix of nodes.
    pub replica_long_polls_per_prefix: usize,
    /// The least proof of work (leading zero bits) asked for a new mailbox through the
    /// client protocol, whatever the load (0: none while the node is not under pressure).
    pub admission_bits_min: u8,
    /// Bytes of geneses and messages a calling node may have this node store, per
    /// second on average (bursts of a minute's worth): what one node can make the others
    /// write to disk.
    pub replica_bytes_per_sec_per_node: u32,
    /// The same for a prefix of nodes.
    pub replica_bytes_per_sec_per_prefix: u32,
    /// Mailboxes a prefix may create per minute through the HTTP gateway (draft clients,
    /// which carry no proof of work); one host may make a third of them.
    pub http_creates_per_prefix_per_min: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            prefix_v4: 24,
            prefix_v6: 48,
            exempt: Vec::new(),
            requests_per_prefix: 64,
            requests_per_member: 16,
            long_polls_per_prefix: 64,
            long_polls_per_member: 16,
            long_polls_per_mailbox: 8,
            long_polls_total: 2048,
            rate_per_prefix: 200,
            rate_per_member: 50,
            connections_per_prefix: 64,
            held_bytes_per_connection: 8 << 20,
            held_bytes_per_prefix: 16 << 20,
            read_bytes_per_sec_per_host: 4 << 20,
            read_bytes_per_sec_per_prefix: 8 << 20,
            http_connections_per_prefix: 128,
            http_connections_per_member: 32,
            http_connections: 768,
            http_header_timeout_secs: 10,
            http_body_timeout_secs: 15,
            http_creates_per_prefix_per_min: 60,
            admission_bits_min: 0,
            replica_bytes_per_sec_per_node: 1 << 20,
            replica_bytes_per_sec_per_prefix: 2 << 20,
            replica_requests_per_node: 128,
            replica_requests_per_prefix: 192,
            replica_rate_per_node: 1000,
            replica_rate_per_prefix: 2000,
            replica_long_polls_per_node: 512,
            replica_long_polls_per_prefix: 768,
        }
    }
}

impl BudgetConfig {
    /// Checks the values; the message names what is wrong.
    pub fn check(&self) -> Result<Vec<Cidr>, String> {
        if self.prefix_v4 == 0 || self.prefix_v4 > 32 {
            return Err(format!(
                "budgets.prefix_v4 must be 1..=32, not {}",
                self.prefix_v4
            ));
        }
        if self.prefix_v6 == 0 || self.prefix_v6 > 128 {
            return Err(format!(
                "budgets.prefix_v6 must be 1..=128, not {}",
                self.prefix_v6
            ));
        }
        if self.admission_bits_min > tigress_protocol::admission::MAX_BITS {
            return Err(format!(
                "budgets.admission_bits_min must be at most {}",
                tigress_protocol::admission::MAX_BITS
            ));
        }
        if self.http_header_timeout_secs == 0 || self.http_body_timeout_secs == 0 {
            return Err("budgets: HTTP timeouts must be positive".into());
        }
        self.exempt.iter().map(|c| Cidr::parse(c)).collect()
    }
}

/// An address block, `ip/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    ip: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses `ip/len` (or a bare address: one host).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("budgets.exempt: {text:?} is not an address block like 10.0.0.0/8");
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if len > max {
            return Err(bad());
        }
        Ok(Self { ip, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, canonical(ip)) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                masked(u128::from(u32::from(a)) << 96, self.len)
                    == masked(u128::from(u32::from(b)) << 96, self.len)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                masked(u128::from(a), self.len) == masked(u128::from(b), self.len)
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The first `len` bits of `bits`.
fn masked(bits: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

/// A source prefix: the address's first bits, IPv4 and IPv6 kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixKey {
    v6: bool,
    bits: u128,
}

/// One member of a prefix: a host (IPv4 address, IPv6 /64) or a calling node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    /// A host.
    Host(u128),
    /// A node on the replica protocol.
    Peer(PeerId),
}

/// Where a request or connection comes from, as the budgets count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// Its prefix.
    pub prefix: PrefixKey,
    /// Its member within the prefix.
    pub member: Member,
    /// Whether it is exempt from per-source limits.
    pub exempt: bool,
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// The source's own share (its prefix's or its member's).
    Source,
    /// The node's overall limit.
    Node,
}

/// How sources are told apart: the prefix lengths and the exempt blocks.
#[derive(Debug, Clone)]
pub struct Classifier {
    v4: u8,
    v6: u8,
    exempt: Vec<Cidr>,
}

impl Classifier {
    /// From the configuration (checked).
    pub fn new(config: &BudgetConfig) -> Result<Self, String> {
        Ok(Self {
            exempt: config.check()?,
            v4: config.prefix_v4,
            v6: config.prefix_v6,
        })
    }

    /// The source of a connection from `ip`.
    pub fn of_ip(&self, ip: IpAddr) -> Source {
        let ip = canonical(ip);
        let exempt = self.exempt.iter().any(|c| c.contains(ip));
        match ip {
            IpAddr::V4(v4) => {
                let bits = u128::from(u32::from(v4)) << 96;
                Source {
                    prefix: PrefixKey {
                        v6: false,
                        bits: masked(bits, self.v4),
                    },
                    member: Member::Host(bits),
                    exempt,
                }
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                Source {
                    prefix: PrefixKey {
                        v6: true,
                        bits: masked(bits, self.v6),
                    },
                    member: Member::Host(masked(bits, 64)),
                    exempt,
                }
            }
        }
    }

    /// The source of a libp2p connection from `addr`: its IP address, or one source for
    /// all connections without one (relayed, in memory).
    pub fn of_addr(&self, addr: Option<&Multiaddr>) -> Source {
        let ip = addr.and_then(|a| {
            a.iter().find_map(|p| match p {
                Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
                Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
                _ => None,
            })
        });
        self.of_ip(ip.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)))
    }

    /// The source of a replica-protocol request: the calling node, within its prefix.
    pub fn of_node(&self, peer: PeerId, addr: Option<&Multiaddr>) -> Source {
        Source {
            member: Member::Peer(peer),
            ..self.of_addr(addr)
        }
    }
}

/// `Summaries` requests in flight: one calling node (anti-entropy asks one peer at a time),
/// a prefix of nodes, and in all.
pub const SUMMARIES_SLOTS: SlotLimits = SlotLimits {
    per_prefix: 4,
    per_member: 2,
    total: 8,
};

/// Limits of a slot pool (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLimits {
    /// Per prefix.
    pub per_prefix: usize,
    /// Per member of a prefix.
    pub per_member: usize,
    /// In all.
    pub total: usize,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    prefixes: HashMap<PrefixKey, usize>,
    members: HashMap<(PrefixKey, Member), usize>,
}

/// Slots held at once (connections, requests in flight, long-polls), counted per source
/// and in all. Maps hold only sources with slots taken, so memory follows what is held.
#[derive(Debug, Clone)]
pub struct Slots {
    limits: SlotLimits,
    counts: Arc<Mutex<Counts>>,
}

/// A slot taken; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    key: Option<(PrefixKey, Member)>,
}

fn over(limit: usize, count: usize) -> bool {
    limit != 0 && count >= limit
}

impl Slots {
    /// A pool under `limits`.
    pub fn new(limits: SlotLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Takes a slot for `source`, or says which limit is reached.
    pub fn take(&self, source: &Source) -> Result<Slot, Exhausted> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if over(self.limits.total, c.total) {
            return Err(Exhausted::Node);
        }
        let key = (!source.exempt).then_some((source.prefix, source.member));
        if let Some((prefix, member)) = key {
            if over(
                self.limits.per_prefix,
                c.prefixes.get(&prefix).copied().unwrap_or(0),
            ) || over(
                self.limits.per_member,
                c.members.get(&(prefix, member)).copied().unwrap_or(0),
            ) {
                return Err(Exhausted::Source);
            }
            *c.prefixes.entry(prefix).or_default() += 1;
            *c.members.entry((prefix, member)).or_default() += 1;
        }
        c.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Slots held in all.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some((prefix, member)) = self.key {
            if let Some(n) = c.prefixes.get_mut(&prefix) {
                *n -= 1;
                if *n == 0 {
                    c.prefixes.remove(&prefix);
                }
            }
            if let Some(n) = c.members.get_mut(&(prefix, member)) {
                *n -= 1;
                if *n == 0 {
                    c.members.remove(&(prefix, member));
                }
            }
        }
    }
}

/// Keyed rate limiters hold a state per key seen within its burst window (two seconds
/// of its rate); past this many keys the stale ones are dropped at once rather than at
/// the next round.
const MAX_RATE_KEYS: usize = 100_000;
/// How often stale rate-limiter keys are dropped.
const RETAIN_EVERY: Duration = Duration::from_secs(10);

type Keyed<K, C> = RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Request rates per prefix and per member (governor's GCRA).
pub struct Rates<C: Clock = DefaultClock> {
    prefixes: Option<Keyed<PrefixKey, C>>,
    members: Option<Keyed<(PrefixKey, Member), C>>,
    overall: Option<Direct<C>>,
    retained: Mutex<Instant>,
}

fn quota(per_sec: u32, burst_secs: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(per_sec.saturating_mul(burst_secs.max(1)))?;
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Rates {
    /// `per_prefix` and `per_member` requests per second on average, with bursts of two
    /// seconds' worth; `overall` for the node (0: no limit).
    pub fn new(per_prefix: u32, per_member: u32, overall: u32) -> Self {
        Self::with_clock(per_prefix, per_member, overall, DefaultClock::default())
    }

    /// `count` per `period` for each prefix (no bursts beyond `count`), e.g. creates per
    /// minute.
    pub fn per_period(count: u32, period: Duration) -> Self {
        Self::per_period_with_clock(count, period, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Rates<C> {
    /// [`Rates::new`] on `clock`.
    pub fn with_clock(per_prefix: u32, per_member: u32, overall: u32, clock: C) -> Self {
        Self {
            prefixes: quota(per_prefix, 2)
                .map(|q| RateLimiter::hashmap_with_clock(q, clock.clone())),
            members: quota(per_member, 2)
                .map(|q| RateLimiter::hashmap_with_clock(q, clock.clone())),
            overall: quota(overall, 2).map(|q| RateLimiter::direct_with_clock(q, clock)),
            retained: Mutex::new(Instant::now()),
        }
    }

    /// Units (bytes) per second per prefix and per member, with bursts of `burst_secs`
    /// seconds' worth, on `clock`; counted with [`Rates::check_n`].
    pub fn with_clock_and_burst(
        per_prefix: u32,
        per_member: u32,
        burst_secs: u32,
        clock: C,
    ) -> Self {
        Self {
            prefixes: quota(per_prefix, burst_secs)
                .map(|q| RateLimiter::hashmap_with_clock(q, clock.clone())),
            members: quota(per_member, burst_secs)
                .map(|q| RateLimiter::hashmap_with_clock(q, clock)),
            overall: None,
            retained: Mutex::new(Instant::now()),
        }
    }

    /// Whether `source` may spend `n` units now (more than a whole burst: never).
    pub fn check_n(&self, source: &Source, n: u32) -> Result<(), Exhausted> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        self.retain();
        if source.exempt {
            return Ok(());
        }
        if let Some(m) = &self.members
            && !matches!(
                m.check_key_n(&(source.prefix, source.member), n),
                Ok(Ok(()))
            )
        {
            return Err(Exhausted::Source);
        }
        if let Some(p) = &self.prefixes
            && !matches!(p.check_key_n(&source.prefix, n), Ok(Ok(())))
        {
            return Err(Exhausted::Source);
        }
        Ok(())
    }

    /// [`Rates::per_period`] on `clock`.
    pub fn per_period_with_clock(count: u32, period: Duration, clock: C) -> Self {
        let quota = |count: u32| {
            NonZeroU32::new(count)
                .and_then(|n| Quota::with_period(period / n.get()).map(|q| q.allow_burst(n)))
        };
        Self {
            prefixes: quota(count).map(|q| RateLimiter::hashmap_with_clock(q, clock.clone())),
            // A host gets a third of its prefix's share.
            members: (count > 0)
                .then(|| quota((count / 3).max(1)))
                .flatten()
                .map(|q| RateLimiter::hashmap_with_clock(q, clock)),
            overall: None,
            retained: Mutex::new(Instant::now()),
        }
    }

    /// Whether `source` may make one more request now.
    pub fn check(&self, source: &Source) -> Result<(), Exhausted> {
        self.retain();
        if !source.exempt {
            // The member first: a host over its own rate spends none of its prefix's.
            if let Some(m) = &self.members
                && m.check_key(&(source.prefix, source.member)).is_err()
            {
                return Err(Exhausted::Source);
            }
            if let Some(p) = &self.prefixes
                && p.check_key(&source.prefix).is_err()
            {
                return Err(Exhausted::Source);
            }
        }
        if let Some(o) = &self.overall
            && o.check().is_err()
        {
            return Err(Exhausted::Node);
        }
        Ok(())
    }

    fn retain(&self) {
        let mut last = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        let big = self
            .prefixes
            .as_ref()
            .is_some_and(|p| p.len() > MAX_RATE_KEYS)
            || self
                .members
                .as_ref()
                .is_some_and(|m| m.len() > MAX_RATE_KEYS);
        if !big && last.elapsed() < RETAIN_EVERY {
            return;
        }
        *last = Instant::now();
        if let Some(p) = &self.prefixes {
            p.retain_recent();
        }
        if let Some(m) = &self.members {
            m.retain_recent();
        }
    }
}

/// Long-polls: per source, per mailbox and in all, apart from the request slots so a
/// flood of waiting reads never takes the room writes need.
#[derive(Debug, Clone)]
pub struct LongPolls {
    by_source: Slots,
    per_mailbox: usize,
    mailboxes: Arc<Mutex<HashMap<[u8; 32], usize>>>,
}

/// A long-poll admitted; dropping it frees its places.
#[derive(Debug)]
pub struct LongPoll {
    _slot: Slot,
    mailboxes: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    mailbox: [u8; 32],
}

impl LongPolls {
    /// Long-polls of clients (hosts), from the configuration.
    pub fn new(config: &BudgetConfig) -> Self {
        Self::with(
            SlotLimits {
                per_prefix: config.long_polls_per_prefix,
                per_member: config.long_polls_per_member,
                total: config.long_polls_total,
            },
            config.long_polls_per_mailbox,
        )
    }

    /// Long-polls under `limits`, at most `per_mailbox` on one mailbox.
    pub fn with(limits: SlotLimits, per_mailbox: usize) -> Self {
        Self {
            by_source: Slots::new(limits),
            per_mailbox,
            mailboxes: Arc::default(),
        }
    }

    /// Admits a long-poll by `source` on the mailbox `mailbox` (its address).
    pub fn take(&self, source: &Source, mailbox: [u8; 32]) -> Result<LongPoll, Exhausted> {
        let mut m = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        let here = m.get(&mailbox).copied().unwrap_or(0);
        if over(self.per_mailbox, here) {
            return Err(Exhausted::Source);
        }
        let slot = self.by_source.take(source)?;
        *m.entry(mailbox).or_default() += 1;
        Ok(LongPoll {
            _slot: slot,
            mailboxes: self.mailboxes.clone(),
            mailbox,
        })
    }

    /// Long-polls waiting in all.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.by_source.held()
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        let mut m = self.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.mailbox) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.mailbox);
            }
        }
    }
}

/// The proof of work a node asks for a new mailbox, from its load: none while fewer
/// than half its request permits are taken, then [`FIRST_LEVEL`] bits, one more for each
/// further tenth taken (each doubles the work), never less than the configured floor.
///
/// [`FIRST_LEVEL`]: tigress_protocol::admission::FIRST_LEVEL
pub struct AdmissionLevel {
    inflight: Arc<tokio::sync::Semaphore>,
    max: usize,
    floor: u8,
}

impl AdmissionLevel {
    /// The level of a node whose request permits are `inflight`, `max` in all.
    pub fn new(inflight: Arc<tokio::sync::Semaphore>, max: usize, floor: u8) -> Self {
        Self {
            inflight,
            max: max.max(1),
            floor,
        }
    }

    /// The bits asked now.
    pub fn bits(&self) -> u8 {
        use tigress_protocol::admission::{FIRST_LEVEL, MAX_BITS};
        let taken = self.max.saturating_sub(self.inflight.available_permits());
        // In tenths of the permits.
        let tenths = taken * 10 / self.max;
        let raised = if tenths < 5 {
            0
        } else {
            FIRST_LEVEL.saturating_add(u8::try_from(tenths - 5).unwrap_or(u8::MAX))
        };
        raised.max(self.floor).min(MAX_BITS)
    }
}

/// Every budget of a node, by protocol.
pub struct Budgets {
    /// How sources are told apart.
    pub classify: Classifier,
    /// The configuration.
    pub config: BudgetConfig,
    /// Client-protocol request rates.
    pub client_rates: Rates,
    /// Client-protocol requests in flight.
    pub client_slots: Slots,
    /// Client-protocol long-polls.
    pub client_polls: LongPolls,
    /// Replica-protocol requests in flight.
    pub replica_slots: Slots,
    /// Replica-protocol long-polls.
    pub replica_polls: LongPolls,
    /// Replica-protocol request rates.
    pub replica_rates: Rates,
    /// `Summaries` requests in flight ([`SUMMARIES_SLOTS`]): each makes the store look up
    /// to a thousand mailboxes, so a few at a time is all anti-entropy needs.
    pub summaries: Slots,
    /// Bytes stored for calling nodes.
    pub replica_bytes: Rates,
    /// HTTP request rates.
    pub http_rates: Rates,
    /// HTTP requests in flight.
    pub http_slots: Slots,
    /// HTTP long-polls.
    pub http_polls: LongPolls,
    /// HTTP connections open.
    pub http_connections: Slots,
    /// New HTTP connections per second (a source over its request rate is refused at
    /// accept, before its request is read).
    pub http_accepts: Rates,
    /// Mailboxes created through the HTTP gateway.
    pub http_creates: Arc<Rates>,
}

impl Budgets {
    /// From the configuration.
    pub fn new(config: &BudgetConfig) -> Result<Self, String> {
        let requests = SlotLimits {
            per_prefix: config.requests_per_prefix,
            per_member: config.requests_per_member,
            total: 0,
        };
        Ok(Self {
            classify: Classifier::new(config)?,
            config: config.clone(),
            client_rates: Rates::new(config.rate_per_prefix, config.rate_per_member, 0),
            client_slots: Slots::new(requests),
            client_polls: LongPolls::new(config),
            summaries: Slots::new(SUMMARIES_SLOTS),
            replica_rates: Rates::new(
                config.replica_rate_per_prefix,
                config.replica_rate_per_node,
                0,
            ),
            replica_slots: Slots::new(SlotLimits {
                per_prefix: config.replica_requests_per_prefix,
                per_member: config.replica_requests_per_node,
                total: 0,
            }),
            replica_polls: LongPolls::with(
                SlotLimits {
                    per_prefix: config.replica_long_polls_per_prefix,
                    per_member: config.replica_long_polls_per_node,
                    total: config.long_polls_total,
                },
                config.long_polls_per_mailbox,
            ),
            replica_bytes: Rates::with_clock_and_burst(
                config.replica_bytes_per_sec_per_prefix,
                config.replica_bytes_per_sec_per_node,
                60,
                DefaultClock::default(),
            ),
            http_rates: Rates::new(config.rate_per_prefix, config.rate_per_member, 0),
            http_slots: Slots::new(requests),
            http_polls: LongPolls::new(config),
            http_connections: Slots::new(SlotLimits {
                per_prefix: config.http_connections_per_prefix,
                per_member: config.http_connections_per_member,
                total: config.http_connections,
            }),
            http_accepts: Rates::new(config.rate_per_prefix, config.rate_per_member, 0),
            http_creates: Arc::new(Rates::per_period(
                config.http_creates_per_prefix_per_min,
                Duration::from_secs(60),
            )),
        })
    }
}

/// The answer to a request a budget refused: `429` for the source's own share, `503`
/// when the node as a whole is full. `what` names the budget (`long-polls`).
pub fn refusal(e: Exhausted, what: &str) -> tigress_protocol::rpc::RemoteError {
    use tigress_protocol::ErrorCode;
    match e {
        Exhausted::Source => tigress_protocol::rpc::RemoteError::new(
            ErrorCode::RateLimited,
            format!("too many {what} from this source; slow down"),
        ),
        Exhausted::Node => tigress_protocol::rpc::RemoteError::new(
            ErrorCode::Unavailable,
            format!("the node is at its limit of {what}; retry shortly"),
        ),
    }
}

tokio::task_local! {
    /// The request being served, as its budgets admitted it.
    static ADMISSION: Admission;
}

/// What a request holds while it is served: its source, its request slots (given back
/// when it turns into a long-poll) and the long-poll budget of the protocol it came by.
pub struct Admission {
    source: Source,
    polls: LongPolls,
    creates: Option<Arc<Rates>>,
    held: Mutex<Vec<Box<dyn Send>>>,
    poll: Mutex<Option<LongPoll>>,
}

impl Admission {
    /// A request from `source` holding `held` (slots, permits), with long-polls counted
    /// in `polls`.
    pub fn new(source: Source, polls: LongPolls, held: Vec<Box<dyn Send>>) -> Self {
        Self {
            source,
            polls,
            creates: None,
            held: Mutex::new(held),
            poll: Mutex::new(None),
        }
    }

    /// Charges the mailboxes this request creates to `creates` (draft clients over HTTP).
    pub fn with_creates(mut self, creates: Arc<Rates>) -> Self {
        self.creates = Some(creates);
        self
    }

    /// Runs `serve` as this request.
    pub async fn scope<F: std::future::Future>(self, serve: F) -> F::Output {
        ADMISSION.scope(self, serve).await
    }
}

/// Charges a mailbox created by the request being served to its source's budget of
/// creates, where it has one (HTTP requests; also the draft requests sealed inside an
/// oblivious one, charged to the source that brought it).
pub fn charge_create() -> Result<(), Exhausted> {
    ADMISSION
        .try_with(|a| match &a.creates {
            Some(rates) => rates.check(&a.source),
            None => Ok(()),
        })
        .unwrap_or(Ok(()))
}

/// Turns the request being served into a long-poll on `mailbox`: it takes a place in its
/// protocol's long-poll budget and gives back its request slots, so waiting reads never
/// hold the room other requests need. Outside an admitted request (the node's own
/// calls) it always succeeds.
pub fn long_poll(mailbox: [u8; 32]) -> Result<(), Exhausted> {
    ADMISSION
        .try_with(|a| {
            let mut poll = a.poll.lock().unwrap_or_else(|e| e.into_inner());
            if poll.is_none() {
                *poll = Some(a.polls.take(&a.source, mailbox)?);
                a.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier(exempt: &[&str]) -> Classifier {
        Classifier::new(&BudgetConfig {
            exempt: exempt.iter().map(|s| s.to_string()).collect(),
            ..BudgetConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn sources_are_prefixes_and_hosts() {
        let c = classifier(&["127.0.0.1/32"]);
        let a = c.of_ip("198.51.100.7".parse().unwrap());
        let b = c.of_ip("198.51.100.8".parse().unwrap());
        let mapped = c.of_ip("::ffff:198.51.100.7".parse().unwrap());
        assert_eq!(a.prefix, b.prefix);
        assert_ne!(a.member, b.member);
        assert_eq!(a, mapped);
        assert_ne!(a.prefix, c.of_ip("198.51.101.7".parse().unwrap()).prefix);
        let v6 = c.of_ip("2001:db8:1:2:3::1".parse().unwrap());
        let same_64 = c.of_ip("2001:db8:1:2:ffff::9".parse().unwrap());
        let same_48 = c.of_ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(v6, same_64, "one /64 is one host");
        assert_eq!(v6.prefix, same_48.prefix);
        assert_ne!(v6.member, same_48.member);
        assert!(c.of_ip("127.0.0.1".parse().unwrap()).exempt);
        assert!(!c.of_ip("127.0.0.2".parse().unwrap()).exempt);
        let addr: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
        assert_eq!(c.of_addr(Some(&addr)), a);
        let peer = PeerId::random();
        assert_eq!(c.of_node(peer, Some(&addr)).prefix, a.prefix);
        assert_eq!(c.of_node(peer, Some(&addr)).member, Member::Peer(peer));
    }

    #[test]
    fn bad_configuration_is_named() {
        for exempt in ["10.0.0.0/33", "not an address", "::1/129", "10.0.0.0/x"] {
            let config = BudgetConfig {
                exempt: vec![exempt.into()],
                ..BudgetConfig::default()
            };
            let e = Classifier::new(&config).unwrap_err();
            assert!(e.contains("budgets.exempt"), "{e}");
        }
        let config = BudgetConfig {
            prefix_v4: 33,
            ..BudgetConfig::default()
        };
        assert!(Classifier::new(&config).unwrap_err().contains("prefix_v4"));
        assert!(
            Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains("10.200.1.1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains("11.0.0.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn a_host_takes_part_of_its_prefix_and_a_prefix_part_of_the_node() {
        let c = classifier(&[]);
        let slots = Slots::new(SlotLimits {
            per_prefix: 8,
            per_member: 3,
            total: 10,
        });
        let attacker = c.of_ip("203.0.113.5".parse().unwrap());
        let neighbour = c.of_ip("203.0.113.6".parse().unwrap());
        let mut held: Vec<Slot> = (0..3).map(|_| slots.take(&attacker).unwrap()).collect();
        assert_eq!(slots.take(&attacker).unwrap_err(), Exhausted::Source);
        // A neighbour in the attacker's prefix still gets in.
        held.push(slots.take(&neighbour).unwrap());
        // More hosts of one prefix fill the prefix's share, not the node's.
        for i in 10..20 {
            if let Ok(s) = slots.take(&c.of_ip(format!("203.0.113.{i}").parse().unwrap())) {
                held.push(s);
            }
        }
        assert_eq!(held.len(), 8);
        let other = c.of_ip("192.0.2.1".parse().unwrap());
        held.push(slots.take(&other).unwrap());
        held.push(slots.take(&other).unwrap());
        assert_eq!(slots.take(&other).unwrap_err(), Exhausted::Node);
        // Given back, the slots are free again and the maps empty.
        held.clear();
        assert_eq!(slots.held(), 0);
        assert!(slots.counts.lock().unwrap().prefixes.is_empty());
        assert!(slots.counts.lock().unwrap().members.is_empty());
        assert!(slots.take(&attacker).is_ok());
    }

    #[test]
    fn exempt_sources_count_only_overall() {
        let c = classifier(&["127.0.0.1"]);
        let slots = Slots::new(SlotLimits {
            per_prefix: 1,
            per_member: 1,
            total: 3,
        });
        let local = c.of_ip("127.0.0.1".parse().unwrap());
        let held: Vec<Slot> = (0..3).map(|_| slots.take(&local).unwrap()).collect();
        assert_eq!(slots.take(&local).unwrap_err(), Exhausted::Node);
        drop(held);
    }

    #[test]
    fn rates_are_per_prefix_and_per_member() {
        let c = classifier(&[]);
        // A clock that stands still unless moved: the test does not depend on its speed.
        let clock = governor::clock::FakeRelativeClock::default();
        let rates = Rates::with_clock(10, 4, 0, clock.clone());
        let a = c.of_ip("203.0.113.5".parse().unwrap());
        let b = c.of_ip("203.0.113.6".parse().unwrap());
        // A member's burst: two seconds' worth.
        let passed = (0..100).filter(|_| rates.check(&a).is_ok()).count();
        assert_eq!(passed, 8);
        // The neighbour has its own member budget: the attacker's refused requests did
        // not spend the prefix's.
        let passed = (0..100).filter(|_| rates.check(&b).is_ok()).count();
        assert_eq!(passed, 8);
        // Together they spent 16 of the prefix's 20: a third host gets the 4 left.
        let c3 = c.of_ip("203.0.113.7".parse().unwrap());
        let passed = (0..100).filter(|_| rates.check(&c3).is_ok()).count();
        assert_eq!(passed, 4);
        // A second later the attacker has 4 more (its own rate), no more.
        clock.advance(Duration::from_secs(1));
        let passed = (0..100).filter(|_| rates.check(&a).is_ok()).count();
        assert_eq!(passed, 4);
        let elsewhere = c.of_ip("192.0.2.1".parse().unwrap());
        assert!(rates.check(&elsewhere).is_ok());
    }

    #[test]
    fn stored_bytes_are_counted_per_node_and_prefix() {
        let c = classifier(&[]);
        let clock = governor::clock::FakeRelativeClock::default();
        let bytes = Rates::with_clock_and_burst(2000, 1000, 10, clock.clone());
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/203.0.113.5/tcp/1".parse().unwrap();
        let node = c.of_node(peer, Some(&addr));
        // A burst of ten seconds' worth, then refusals until time passes.
        assert!(bytes.check_n(&node, 6000).is_ok());
        assert!(bytes.check_n(&node, 4000).is_ok());
        assert_eq!(bytes.check_n(&node, 1).unwrap_err(), Exhausted::Source);
        // More than a whole burst at once: never.
        let other = c.of_node(PeerId::random(), Some(&addr));
        assert!(bytes.check_n(&other, 10_001).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(bytes.check_n(&node, 1000).is_ok());
        assert!(bytes.check_n(&node, 1).is_err());
    }

    #[test]
    fn creates_per_period() {
        let c = classifier(&[]);
        let clock = governor::clock::FakeRelativeClock::default();
        let rates = Rates::per_period_with_clock(6, Duration::from_secs(60), clock.clone());
        let a = c.of_ip("203.0.113.5".parse().unwrap());
        let b = c.of_ip("203.0.113.6".parse().unwrap());
        let d = c.of_ip("203.0.113.7".parse().unwrap());
        let e = c.of_ip("203.0.113.8".parse().unwrap());
        // A host gets a third of its prefix's six.
        assert_eq!((0..10).filter(|_| rates.check(&a).is_ok()).count(), 2);
        assert_eq!((0..10).filter(|_| rates.check(&b).is_ok()).count(), 2);
        assert_eq!((0..10).filter(|_| rates.check(&d).is_ok()).count(), 2);
        assert!(rates.check(&e).is_err(), "the prefix's six are spent");
        // Ten seconds give the prefix one back; a host waits thirty for its own.
        clock.advance(Duration::from_secs(10));
        assert!(rates.check(&a).is_err());
        assert!(rates.check(&e).is_ok());
        clock.advance(Duration::from_secs(20));
        assert!(rates.check(&a).is_ok());
        let elsewhere = c.of_ip("192.0.2.1".parse().unwrap());
        assert!(rates.check(&elsewhere).is_ok());
    }

    #[test]
    fn admission_rises_with_load_from_its_floor() {
        use tigress_protocol::admission::{FIRST_LEVEL, MAX_BITS};
        let permits = Arc::new(tokio::sync::Semaphore::new(100));
        let level = AdmissionLevel::new(permits.clone(), 100, 0);
        assert_eq!(level.bits(), 0, "quiet: no work");
        let _held = permits.clone().try_acquire_many_owned(49).unwrap();
        assert_eq!(level.bits(), 0);
        let _more = permits.clone().try_acquire_many_owned(1).unwrap();
        assert_eq!(level.bits(), FIRST_LEVEL, "half the permits taken");
        let _most = permits.clone().try_acquire_many_owned(30).unwrap();
        assert_eq!(level.bits(), FIRST_LEVEL + 3);
        let _all = permits.clone().try_acquire_many_owned(20).unwrap();
        assert_eq!(level.bits(), (FIRST_LEVEL + 5).min(MAX_BITS));
        let floor = AdmissionLevel::new(Arc::new(tokio::sync::Semaphore::new(10)), 10, 12);
        assert_eq!(floor.bits(), 12, "the configured floor when quiet");
    }

    #[test]
    fn long_polls_have_their_own_budget() {
        let c = classifier(&[]);
        let config = BudgetConfig {
            long_polls_per_prefix: 4,
            long_polls_per_member: 4,
            long_polls_per_mailbox: 2,
            long_polls_total: 5,
            ..BudgetConfig::default()
        };
        let polls = LongPolls::new(&config);
        let a = c.of_ip("203.0.113.5".parse().unwrap());
        let one = polls.take(&a, [1; 32]).unwrap();
        let two = polls.take(&a, [1; 32]).unwrap();
        assert_eq!(
            polls.take(&a, [1; 32]).unwrap_err(),
            Exhausted::Source,
            "per mailbox"
        );
        let _three = polls.take(&a, [2; 32]).unwrap();
        let _four = polls.take(&a, [3; 32]).unwrap();
        assert_eq!(polls.take(&a, [4; 32]).unwrap_err(), Exhausted::Source);
        let other = c.of_ip("192.0.2.1".parse().unwrap());
        let _five = polls.take(&other, [5; 32]).unwrap();
        assert_eq!(polls.take(&other, [6; 32]).unwrap_err(), Exhausted::Node);
        drop((one, two));
        assert_eq!(polls.waiting(), 3);
        assert!(polls.take(&a, [1; 32]).is_ok());
    }
}

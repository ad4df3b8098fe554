//! Per-peer rate limits for client requests: a token bucket per peer.
//!
//! A bucket that has refilled completely is the same as no bucket, so such buckets are
//! dropped (at most once a second, all of them): memory follows the peers active in the
//! last `burst / rate` seconds, and a peer that disconnects and reconnects finds its
//! bucket as it left it, not full again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How often full buckets are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// Token buckets keyed by peer.
#[derive(Debug)]
pub struct PeerThrottle {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
    pruned: Option<Instant>,
}

impl PeerThrottle {
    /// `rate` requests per second on average, bursts of up to `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
            pruned: None,
        }
    }

    fn tokens_at(&self, tokens: f64, last: Instant, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
        (tokens + refill).min(self.burst)
    }

    /// Takes a token for `peer` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        self.prune(now);
        let (tokens, last) = self
            .buckets
            .get(&peer)
            .copied()
            .unwrap_or((self.burst, now));
        let tokens = self.tokens_at(tokens, last, now);
        let (left, allowed) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        self.buckets.insert(peer, (left, now));
        allowed
    }

    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|p| now.saturating_duration_since(p) < PRUNE_EVERY)
        {
            return;
        }
        self.pruned = Some(now);
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, (tokens, last)| {
            *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
        });
    }

    /// How many peers have a bucket.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_per_peer() {
        let mut t = PeerThrottle::new(10, 3);
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert!(t.allow(a, t0) && t.allow(a, t0) && t.allow(a, t0));
        assert!(!t.allow(a, t0), "the burst is spent");
        assert!(t.allow(b, t0), "another peer has its own bucket");
        assert!(
            t.allow(a, t0 + Duration::from_millis(100)),
            "one token back after 100 ms at 10/s"
        );
        assert!(!t.allow(a, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn full_buckets_are_dropped_and_spent_ones_kept() {
        let mut t = PeerThrottle::new(10, 3);
        let t0 = Instant::now();
        let spent = PeerId::random();
        for _ in 0..3 {
            assert!(t.allow(spent, t0));
        }
        // Ten thousand peers with one request each: ten thousand buckets for now.
        for _ in 0..10_000 {
            t.allow(PeerId::random(), t0);
        }
        assert_eq!(t.tracked(), 10_001);
        // 0.25 s later no bucket is full yet (2.5 of 3 tokens back); nothing is dropped,
        // and the spent peer still has no token to spare beyond its refill.
        let t1 = t0 + Duration::from_millis(250);
        assert!(t.allow(spent, t1) && t.allow(spent, t1));
        assert!(!t.allow(spent, t1), "its bucket was not reset");
        // Later, once they refilled, the idle buckets go: only the peer asking now is left.
        let t2 = t0 + Duration::from_millis(1_300);
        assert!(t.allow(spent, t2));
        assert_eq!(t.tracked(), 1);
    }
}

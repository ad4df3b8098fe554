//! Per-peer rate limits for client requests: a token bucket per connected peer.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// Token buckets keyed by peer.
#[derive(Debug)]
pub struct PeerThrottle {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, (f64, Instant)>,
}

impl PeerThrottle {
    /// `rate` requests per second on average, bursts of up to `burst`.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `peer` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        let (tokens, last) = self.buckets.entry(peer).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets a peer (when its last connection closes).
    pub fn forget(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        t.forget(&a);
        assert!(t.allow(a, t0 + Duration::from_millis(100)));
    }
}

//! The node's one clock. Every rule that depends on time (expiry, the sweep, freshness
//! windows, record timestamps) reads it from here, so tests set the time instead of
//! waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Unix time in seconds: the system's, or a manual one a test moves.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands at `unix` seconds until it is moved.
    pub fn manual(unix: u64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(unix))),
        }
    }

    /// The current unix time in seconds.
    pub fn unix(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Moves a manual clock forward by `secs` (the system clock cannot be moved).
    pub fn advance(&self, secs: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(secs, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.unix(), 1_000);
        copy.advance(5);
        assert_eq!(clock.unix(), 1_005);
        assert!(Clock::system().unix() > 1_700_000_000);
    }
}

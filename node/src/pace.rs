//! Bytes read from libp2p connections, paced per source: a host, and its prefix, may
//! send at most so many bytes per second on average (bursts of two seconds' worth).
//!
//! Everything a peer sends costs the node decryption and multiplexing before any budget
//! above the transport sees it, so a peer that streams as fast as it can spends the
//! node's CPU even when every frame it sends is refused. Pacing sits on the TCP stream,
//! below Noise: when a source is over its rate the node stops reading its connections for
//! a while, and TCP's flow control holds the rest at the sender, at no cost to the node.
//! Bytes already read are always delivered; the next read waits until they are paid for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p::Multiaddr;

use governor::clock::{Clock, DefaultClock};

use crate::budget::{Classifier, Rates, Source};

/// The most bytes read at once: a read never owes more than this.
const MAX_READ: usize = 16 * 1024;

/// How long a read waits before it asks again whether the bytes it owes are paid for.
const RETRY: Duration = Duration::from_millis(50);

/// The byte rates of a node's libp2p connections.
pub struct Pacing<C: Clock = DefaultClock> {
    classify: Classifier,
    rates: Rates<C>,
}

impl Pacing {
    /// `per_prefix` and `per_host` bytes per second (0: no limit).
    pub fn new(classify: Classifier, per_prefix: u32, per_host: u32) -> Arc<Self> {
        Self::with_clock(classify, per_prefix, per_host, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Pacing<C> {
    /// Like [`Pacing::new`], on `clock`.
    pub fn with_clock(classify: Classifier, per_prefix: u32, per_host: u32, clock: C) -> Arc<Self> {
        Arc::new(Self {
            classify,
            rates: Rates::with_clock_and_burst(per_prefix, per_host, 2, clock),
        })
    }

    /// Paces `inner`, a connection with `remote`.
    pub fn wrap<S>(self: &Arc<Self>, inner: S, remote: &Multiaddr) -> Paced<S, C> {
        Paced {
            inner,
            pacing: self.clone(),
            source: self.classify.of_addr(Some(remote)),
            owed: 0,
            wait: None,
        }
    }
}

/// A connection whose reads are paced by its source's byte rate.
pub struct Paced<S, C: Clock = DefaultClock> {
    inner: S,
    pacing: Arc<Pacing<C>>,
    source: Source,
    /// Bytes delivered that the source's rate has not covered yet.
    owed: u32,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin, C: Clock + Clone> AsyncRead for Paced<S, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.source.exempt {
            // Not paced: read as the transport would.
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.owed > 0 {
            if let Some(wait) = this.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.wait = None;
            }
            if this.pacing.rates.check_n(&this.source, this.owed).is_ok() {
                this.owed = 0;
            } else {
                this.wait = Some(Box::pin(tokio::time::sleep(RETRY)));
            }
        }
        let len = buf.len().min(MAX_READ);
        let read = Pin::new(&mut this.inner).poll_read(cx, buf.get_mut(..len).unwrap_or_default());
        if let Poll::Ready(Ok(n)) = &read {
            let n = u32::try_from(*n).unwrap_or(u32::MAX);
            if n > 0 && this.pacing.rates.check_n(&this.source, n).is_err() {
                this.owed = n;
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin, C: Clock> AsyncWrite for Paced<S, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetConfig;
    use futures::AsyncReadExt;

    fn remote(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/1").parse().unwrap()
    }

    /// Tokio's (paused) time, for the rates.
    #[derive(Clone)]
    struct TokioClock(tokio::time::Instant);

    impl Clock for TokioClock {
        type Instant = governor::nanos::Nanos;
        fn now(&self) -> Self::Instant {
            self.0.elapsed().into()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_over_its_rate_is_read_no_faster_than_its_rate() {
        let classify = Classifier::new(&BudgetConfig::default()).unwrap();
        // 64 KiB/s per host: bursts of 128 KiB.
        let clock = TokioClock(tokio::time::Instant::now());
        let pacing = Pacing::with_clock(classify, 0, 64 * 1024, clock);
        let data = vec![1u8; 512 * 1024];
        let mut fast = pacing.wrap(futures::io::Cursor::new(data.clone()), &remote("10.0.0.1"));
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        fast.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), data.len());
        // 128 KiB of burst, then 384 KiB at 64 KiB/s: 6 s of (paused) time, less what the
        // last read owes.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(5700) && took <= Duration::from_millis(6100),
            "{took:?}"
        );
        // Another host is not slowed by the first one's debt.
        let mut other = pacing.wrap(
            futures::io::Cursor::new(vec![2u8; 100 * 1024]),
            &remote("10.0.9.1"),
        );
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        other.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 100 * 1024);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn exempt_sources_are_not_paced() {
        let config = BudgetConfig {
            exempt: vec!["10.0.0.1/32".into()],
            ..BudgetConfig::default()
        };
        let clock = TokioClock(tokio::time::Instant::now());
        let pacing = Pacing::with_clock(Classifier::new(&config).unwrap(), 0, 64 * 1024, clock);
        let mut exempt = pacing.wrap(
            futures::io::Cursor::new(vec![1u8; 512 * 1024]),
            &remote("10.0.0.1"),
        );
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        exempt.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 512 * 1024);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}

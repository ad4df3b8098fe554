//! Bytes a peer has sent that this node has not answered yet, held to a budget per
//! connection and per source prefix.
//!
//! The frame codec reads each request as it arrives and caps a frame and the whole
//! process (`tigress_transport::codec`), but it cannot tell connections apart: a peer that
//! opens hundreds of streams, announces large frames and stalls would fill the process's
//! share and starve everyone else's requests. This layer sits on each connection's
//! muxer, below the codec: every byte an inbound substream reads before the node first
//! writes on it (the request, not yet answered) counts against its connection and its
//! source prefix until the node answers or the stream ends. A read past the prefix's
//! limit fails that stream; a read past the connection's own limit closes the whole
//! connection (no honest peer sends megabytes it has not had answered, and a peer that
//! does would otherwise go on sending for nothing at the node's cost). Outbound substreams (the node's own requests) are not
//! counted: the node chose to open them. Exempt sources count only per connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::Multiaddr;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};

use crate::budget::{Classifier, PrefixKey, Source};

/// The limits, shared by every connection of a node.
#[derive(Debug)]
pub struct HeldBudget {
    classify: Classifier,
    per_connection: usize,
    per_prefix: usize,
    prefixes: Mutex<HashMap<PrefixKey, usize>>,
}

impl HeldBudget {
    /// Unanswered bytes: at most `per_connection` on one connection and `per_prefix` from
    /// one source prefix (0: no limit).
    pub fn new(classify: Classifier, per_connection: usize, per_prefix: usize) -> Arc<Self> {
        Arc::new(Self {
            classify,
            per_connection,
            per_prefix,
            prefixes: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes held from `source`'s prefix now.
    #[cfg(test)]
    fn held_by(&self, source: &Source) -> usize {
        self.prefixes
            .lock()
            .map(|p| p.get(&source.prefix).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn charge(&self, conn: &Connection, n: usize) -> Result<(), Refused> {
        let Ok(mut prefixes) = self.prefixes.lock() else {
            return Err(Refused::Prefix);
        };
        let Ok(mut held) = conn.held.lock() else {
            return Err(Refused::Connection);
        };
        if self.per_connection > 0 && held.saturating_add(n) > self.per_connection {
            return Err(Refused::Connection);
        }
        if !conn.source.exempt {
            let of_prefix = prefixes.entry(conn.source.prefix).or_insert(0);
            if self.per_prefix > 0 && of_prefix.saturating_add(n) > self.per_prefix {
                return Err(Refused::Prefix);
            }
            *of_prefix += n;
        }
        *held += n;
        Ok(())
    }

    fn release(&self, conn: &Connection, n: usize) {
        if n == 0 {
            return;
        }
        if let Ok(mut prefixes) = self.prefixes.lock() {
            if !conn.source.exempt
                && let Some(of_prefix) = prefixes.get_mut(&conn.source.prefix)
            {
                *of_prefix = of_prefix.saturating_sub(n);
                if *of_prefix == 0 {
                    prefixes.remove(&conn.source.prefix);
                }
            }
            if let Ok(mut held) = conn.held.lock() {
                *held = held.saturating_sub(n);
            }
        }
    }
}

#[derive(Debug)]
struct Connection {
    budget: Arc<HeldBudget>,
    source: Source,
    held: Mutex<usize>,
    /// Set when a read went past the connection's limit: the connection is closed.
    over: std::sync::atomic::AtomicBool,
}

/// Why a read was refused.
enum Refused {
    Connection,
    Prefix,
}

/// A connection's muxer whose inbound substreams count what they hold.
pub struct Held<M> {
    inner: M,
    conn: Arc<Connection>,
}

impl<M> Held<M> {
    /// Wraps the muxer of a connection with `remote`.
    pub fn new(inner: M, remote: &Multiaddr, budget: Arc<HeldBudget>) -> Self {
        let source = budget.classify.of_addr(Some(remote));
        Self {
            inner,
            conn: Arc::new(Connection {
                budget,
                source,
                held: Mutex::new(0),
                over: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

impl<M> Held<M> {
    fn closing(&self) -> Option<std::io::Error> {
        self.conn.over.load(Ordering::Relaxed).then(|| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "the peer sent more unanswered bytes than a connection may hold",
            )
        })
    }
}

impl<M> StreamMuxer for Held<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
    M::Error: std::error::Error + Send + Sync + 'static,
{
    type Substream = HeldStream<M::Substream>;
    type Error = std::io::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(e) = this.closing() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner)
            .poll_inbound(cx)
            .map_ok(|s| HeldStream {
                inner: s,
                conn: Some(this.conn.clone()),
                held: 0,
                waker: Some(cx.waker().clone()),
            })
            .map_err(std::io::Error::other)
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        if let Some(e) = this.closing() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|s| HeldStream {
                inner: s,
                conn: None,
                held: 0,
                waker: None,
            })
            .map_err(std::io::Error::other)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(std::io::Error::other)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        if let Some(e) = this.closing() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner)
            .poll(cx)
            .map_err(std::io::Error::other)
    }
}

/// A substream that counts the bytes it read until the node answers on it.
pub struct HeldStream<S> {
    inner: S,
    /// The connection, while the stream is inbound and unanswered.
    conn: Option<Arc<Connection>>,
    held: usize,
    /// Wakes the connection's muxer when the stream finds the connection over its limit.
    waker: Option<std::task::Waker>,
}

impl<S> HeldStream<S> {
    /// The node answers: what the stream read is no longer held for it.
    fn answered(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.budget.release(&conn, std::mem::take(&mut self.held));
        }
    }
}

impl<S> Drop for HeldStream<S> {
    fn drop(&mut self) {
        self.answered();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeldStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(conn)) = (&read, &this.conn)
            && *n > 0
        {
            if let Err(refused) = conn.budget.charge(conn, *n) {
                if matches!(refused, Refused::Connection) {
                    conn.over.store(true, Ordering::Relaxed);
                    if let Some(w) = this.waker.take() {
                        w.wake();
                    }
                }
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    "this source has as many unanswered bytes on this node as it may",
                )));
            }
            this.held += n;
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeldStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.answered();
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.answered();
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetConfig;

    fn budget(per_connection: usize, per_prefix: usize) -> Arc<HeldBudget> {
        HeldBudget::new(
            Classifier::new(&BudgetConfig::default()).unwrap(),
            per_connection,
            per_prefix,
        )
    }

    fn conn(budget: &Arc<HeldBudget>, ip: &str) -> Arc<Connection> {
        let remote: Multiaddr = format!("/ip4/{ip}/tcp/1").parse().unwrap();
        Arc::new(Connection {
            budget: budget.clone(),
            source: budget.classify.of_addr(Some(&remote)),
            held: Mutex::new(0),
            over: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn stream(conn: &Arc<Connection>, data: &[u8]) -> HeldStream<futures::io::Cursor<Vec<u8>>> {
        HeldStream {
            inner: futures::io::Cursor::new(data.to_vec()),
            conn: Some(conn.clone()),
            held: 0,
            waker: None,
        }
    }

    #[tokio::test]
    async fn unanswered_bytes_are_held_to_the_connection_and_the_prefix() {
        use futures::{AsyncReadExt, AsyncWriteExt};
        let b = budget(100, 150);
        let (a1, a2) = (conn(&b, "10.0.0.1"), conn(&b, "10.0.0.2"));
        let other = conn(&b, "10.9.0.1");
        let mut buf = vec![0u8; 200];
        // One connection: 80 bytes fit; 30 more on another stream do not.
        let mut s1 = stream(&a1, &[1; 80]);
        assert_eq!(s1.read(&mut buf).await.unwrap(), 80);
        let mut s2 = stream(&a1, &[1; 30]);
        let e = s2.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
        assert!(
            a1.over.load(Ordering::Relaxed),
            "the connection is to be closed"
        );
        // Another connection of the prefix: 70 reach the prefix's 150; one more does not.
        let mut s3 = stream(&a2, &[1; 70]);
        assert_eq!(s3.read(&mut buf).await.unwrap(), 70);
        let mut s4 = stream(&a2, &[1; 1]);
        assert!(s4.read(&mut buf).await.is_err());
        assert!(
            !a2.over.load(Ordering::Relaxed),
            "the prefix's limit fails the stream only"
        );
        assert_eq!(b.held_by(&a1.source), 150);
        // Another prefix is not touched.
        let mut s5 = stream(&other, &[1; 90]);
        assert_eq!(s5.read(&mut buf).await.unwrap(), 90);
        // An answer releases a stream's bytes; a dropped stream releases them too.
        let _ = s1.write(b"answer").await;
        assert_eq!(b.held_by(&a1.source), 70);
        drop(s3);
        assert_eq!(b.held_by(&a1.source), 0);
        let mut s6 = stream(&a2, &[1; 100]);
        assert_eq!(s6.read(&mut buf).await.unwrap(), 100);
        // Bytes read after the answer are not held.
        let mut s7 = stream(&a1, &[1; 20]);
        s7.close().await.unwrap();
        assert_eq!(s7.read(&mut buf).await.unwrap(), 20);
        assert_eq!(b.held_by(&a1.source), 100);
    }

    #[tokio::test]
    async fn exempt_sources_count_only_per_connection() {
        use futures::AsyncReadExt;
        let config = BudgetConfig {
            exempt: vec!["10.0.0.1/32".into()],
            ..BudgetConfig::default()
        };
        let b = HeldBudget::new(Classifier::new(&config).unwrap(), 100, 50);
        let c = conn(&b, "10.0.0.1");
        let mut buf = vec![0u8; 200];
        let mut s = stream(&c, &[1; 90]);
        assert_eq!(s.read(&mut buf).await.unwrap(), 90);
        let mut t = stream(&c, &[1; 20]);
        assert!(t.read(&mut buf).await.is_err());
    }
}

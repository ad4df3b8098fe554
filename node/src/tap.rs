//! A test double that records what a node receives: every byte of every libp2p substream
//! after the transport's decryption (Kademlia, identify, client, replica, everything the
//! connection carries), with the peer and address it came from, and every HTTP request
//! with its source address. A curious operator sees exactly this; the curious-node test
//! searches it for what no single node may learn. Honest nodes run without one
//! ([`crate::Doubles::tap`]); it keeps everything, so only tests use it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::{Multiaddr, PeerId};

/// What one inbound byte stream carried.
#[derive(Debug)]
pub struct Received {
    /// The peer, for libp2p traffic.
    pub peer: Option<PeerId>,
    /// Where it came from: the connection's remote multiaddr or HTTP socket address.
    pub from: String,
    /// `"libp2p"` or `"http"`.
    pub kind: &'static str,
    bytes: Mutex<Vec<u8>>,
}

impl Received {
    /// The bytes received so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn push(&self, chunk: &[u8]) {
        if let Ok(mut b) = self.bytes.lock() {
            b.extend_from_slice(chunk);
        }
    }
}

/// One node's record of everything it received.
#[derive(Debug, Clone, Default)]
pub struct Tap {
    log: Arc<Mutex<Vec<Arc<Received>>>>,
}

impl Tap {
    /// An empty tap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stream recorded so far.
    pub fn received(&self) -> Vec<Arc<Received>> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn open(&self, peer: Option<PeerId>, from: String, kind: &'static str) -> Arc<Received> {
        let r = Arc::new(Received {
            peer,
            from,
            kind,
            bytes: Mutex::new(Vec::new()),
        });
        if let Ok(mut l) = self.log.lock() {
            l.push(r.clone());
        }
        r
    }

    /// Records an HTTP request from `from`: its head and body.
    pub fn http(&self, from: String, head: &str, body: &[u8]) {
        let r = self.open(None, from, "http");
        r.push(head.as_bytes());
        r.push(body);
    }
}

/// A connection's muxer whose substreams record what they read.
pub struct Tapped<M> {
    inner: M,
    peer: PeerId,
    from: Multiaddr,
    tap: Tap,
}

impl<M> Tapped<M> {
    /// Wraps the muxer of the connection to `peer` at `from`.
    pub fn new(inner: M, peer: PeerId, from: Multiaddr, tap: Tap) -> Self {
        Self {
            inner,
            peer,
            from,
            tap,
        }
    }

    fn wrap<S>(&self, inner: S) -> TapStream<S> {
        TapStream {
            inner,
            log: self
                .tap
                .open(Some(self.peer), self.from.to_string(), "libp2p"),
        }
    }
}

impl<M> StreamMuxer for Tapped<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = TapStream<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_inbound(cx) {
            Poll::Ready(Ok(s)) => Poll::Ready(Ok(this.wrap(s))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_outbound(cx) {
            Poll::Ready(Ok(s)) => Poll::Ready(Ok(this.wrap(s))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A substream that records what it reads.
pub struct TapStream<S> {
    inner: S,
    log: Arc<Received>,
}

impl<S: AsyncRead + Unpin> AsyncRead for TapStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &read
            && let Some(chunk) = buf.get(..*n)
        {
            this.log.push(chunk);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TapStream<S> {
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

//! libp2p request-response codec for the tigress protocols: a 4-byte big-endian length,
//! then the canonical encoding of `tigress_protocol::rpc`. The length is checked before
//! the body is read, so an oversized frame costs nothing to refuse; the body is buffered
//! as it arrives (never the announced length up front), and a frame that started must
//! finish within [`FRAME_DEADLINE`], so a peer that announces a large frame and stalls
//! holds only what it sent, and not for long.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tigress_protocol::rpc;

/// A codec for requests `Req` and responses `Resp`.
pub struct FrameCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Clone for FrameCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Default for FrameCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// How long a frame may take to arrive once it started (its first byte for a request,
/// its length for an answer, which may come after a long-poll's wait): far shorter than
/// the long-poll and request timeouts.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(15);

/// The most bytes read at once into a frame's body.
const CHUNK: usize = 16 * 1024;

/// The most bytes of unfinished frames held at once in this process (a node), all
/// streams and connections together: a frame that would go past it is refused.
pub const MAX_BUFFERED: usize = 64 << 20;

static BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of a frame being read, counted in [`BUFFERED`] until dropped.
struct Held(usize);

impl Held {
    /// Counts `n` more bytes, unless that would pass [`MAX_BUFFERED`].
    fn grow(&mut self, n: usize) -> io::Result<()> {
        let mut now = BUFFERED.load(Ordering::Relaxed);
        loop {
            if now.saturating_add(n) > MAX_BUFFERED {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "the node holds as many unfinished frames as it can",
                ));
            }
            match BUFFERED.compare_exchange_weak(now, now + n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.0 += n;
                    return Ok(());
                }
                Err(seen) => now = seen,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        BUFFERED.fetch_sub(self.0, Ordering::AcqRel);
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the frame did not arrive in time")
}

/// Reads a frame's body of the length in `prefix`, as it arrives, counted against
/// [`MAX_BUFFERED`] while it is read.
pub(crate) async fn read_body_bytes<T>(io: &mut T, prefix: [u8; 4]) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin,
{
    let len = rpc::frame_len(prefix).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut held = Held(0);
    let mut body = Vec::with_capacity(len.min(CHUNK));
    let mut chunk = vec![0u8; len.min(CHUNK)];
    held.grow(chunk.len())?;
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let n = io.read(chunk.get_mut(..want).unwrap_or_default()).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        held.grow(n)?;
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    Ok(body)
}

async fn read_body<T, V>(io: &mut T, prefix: [u8; 4]) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: DeserializeOwned,
{
    let body = read_body_bytes(io, prefix).await?;
    rpc::decode_body(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A request: the whole frame within [`FRAME_DEADLINE`] of the stream opening.
async fn read_request_frame<T, V>(io: &mut T) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: DeserializeOwned,
{
    tokio::time::timeout(FRAME_DEADLINE, async {
        let mut prefix = [0u8; 4];
        io.read_exact(&mut prefix).await?;
        read_body(io, prefix).await
    })
    .await
    .map_err(|_| timed_out())?
}

/// An answer: its length whenever it comes (after a long-poll's wait), then the body
/// within [`FRAME_DEADLINE`].
async fn read_response_frame<T, V>(io: &mut T) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    tokio::time::timeout(FRAME_DEADLINE, read_body(io, prefix))
        .await
        .map_err(|_| timed_out())?
}

/// `value` as a frame, after `tag` (empty for a request-response frame, the request's id
/// on a replica link): the tag, the body's 4-byte length, the canonical body.
pub(crate) fn encode_frame<V: Serialize>(tag: &[u8], value: &V) -> io::Result<Vec<u8>> {
    let body =
        rpc::encode_body(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Vec::with_capacity(tag.len() + 4 + body.len());
    frame.extend_from_slice(tag);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes a whole frame in one write: the prefix and the body go out in one encrypted
/// transport frame.
pub(crate) async fn write_encoded<T: AsyncWrite + Unpin>(
    io: &mut T,
    frame: &[u8],
) -> io::Result<()> {
    io.write_all(frame).await?;
    io.flush().await
}

async fn write_frame<T, V>(io: &mut T, value: &V) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    V: Serialize,
{
    write_encoded(io, &encode_frame(&[], value)?).await
}

impl<Req, Resp> libp2p::request_response::Codec for FrameCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_request_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_response_frame(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

/// The codec of `/tigress/client/1`.
pub type ClientCodec = FrameCodec<rpc::ClientRequest, rpc::ClientResponse>;
/// The codec of `/tigress/replica/1`.
pub type ReplicaCodec = FrameCodec<rpc::ReplicaRequest, rpc::ReplicaResponse>;

/// The client protocol's name as a libp2p stream protocol.
pub const CLIENT_STREAM: StreamProtocol = StreamProtocol::new(rpc::CLIENT_PROTOCOL);
/// The replica protocol's name as a libp2p stream protocol.
pub const REPLICA_STREAM: StreamProtocol = StreamProtocol::new(rpc::REPLICA_PROTOCOL);

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    /// Announces a frame of `announced` bytes, sends `sent` of them, then stalls; records
    /// the largest buffer the reader ever offered.
    struct Stalling {
        data: Vec<u8>,
        at: usize,
        largest: Arc<Mutex<usize>>,
    }

    impl AsyncRead for Stalling {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if let Ok(mut l) = this.largest.lock() {
                *l = (*l).max(buf.len());
            }
            let rest = this.data.get(this.at..).unwrap_or_default();
            if rest.is_empty() {
                return Poll::Pending;
            }
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.at += n;
            Poll::Ready(Ok(n))
        }
    }

    fn stalling(announced: u32, sent: usize) -> (Stalling, Arc<Mutex<usize>>) {
        let mut data = announced.to_be_bytes().to_vec();
        data.extend(std::iter::repeat_n(7u8, sent));
        let largest = Arc::new(Mutex::new(0));
        (
            Stalling {
                data,
                at: 0,
                largest: largest.clone(),
            },
            largest,
        )
    }

    #[tokio::test(start_paused = true)]
    #[allow(clippy::unwrap_used)]
    async fn a_stalled_frame_holds_only_what_arrived_and_times_out() {
        let announced = u32::try_from(rpc::MAX_FRAME - 1).unwrap();
        let (mut io, largest) = stalling(announced, 10);
        let started = tokio::time::Instant::now();
        let r: io::Result<rpc::ClientRequest> = read_request_frame(&mut io).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= FRAME_DEADLINE);
        // Never the announced megabyte: at most one chunk was offered to the stream.
        assert!(*largest.lock().unwrap() <= CHUNK);
        // An answer's length may come late (a long-poll), its body may not.
        let (mut io, _) = stalling(announced, 10);
        let r: io::Result<rpc::ClientResponse> = read_response_frame(&mut io).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn unfinished_frames_hold_no_more_than_the_node_budget() {
        // Most of the budget held by frames already being read...
        let mut others = Held(0);
        others.grow(MAX_BUFFERED - 200_000).unwrap();
        // ...a frame that would pass it is refused as its bytes arrive.
        let (mut io, _) = stalling(500_000, 500_000);
        let r: io::Result<rpc::ClientRequest> = read_request_frame(&mut io).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::OutOfMemory);
        // What the refused frame held is given back, and so is the rest once done.
        let mut more = Held(0);
        assert!(more.grow(150_000).is_ok());
        drop((others, more));
        let mut again = Held(0);
        assert!(again.grow(MAX_BUFFERED / 2).is_ok());
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_frame_arriving_in_pieces_is_read_whole() {
        let request = rpc::ClientRequest::Info;
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &request).await.unwrap();
        let mut io = futures::io::Cursor::new(bytes);
        let back: rpc::ClientRequest = read_request_frame(&mut io).await.unwrap();
        assert_eq!(back, request);
    }
}

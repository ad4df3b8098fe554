//! Frames of `/tigress/replica/2`: the replica protocol over one stream kept open between
//! two nodes, instead of a new substream per request. Each frame is an 8-byte big-endian
//! request id, then a frame of [`crate::codec`] (4-byte length, canonical body). The
//! asking node numbers its requests; the answering node tags each answer with the id of
//! its request, in whatever order answers are ready, so a long-poll never holds up the
//! requests behind it.
//!
//! The rules of the one-request codec hold per frame: the length is checked before the
//! body is read, the body is buffered as it arrives and counted against the process's
//! budget of unfinished frames, and a frame that started must finish within
//! [`FRAME_DEADLINE`]. Between frames a stream may be quiet: how long is the reader's
//! choice.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tigress_protocol::rpc;

use crate::codec::{FRAME_DEADLINE, encode_frame, read_body_bytes, write_encoded};

/// The replica protocol over a kept stream.
pub const REPLICA_LINK: StreamProtocol = StreamProtocol::new("/tigress/replica/2");

/// One frame read: its id, and its body decoded, or why it could not be. A body that does
/// not decode leaves the stream in step (its length was read), so the error is the
/// frame's alone.
pub type Tagged<V> = (u64, Result<V, io::Error>);

/// `value` tagged with `id`: the whole frame, as [`write_tagged`] writes it.
pub fn encode_tagged<V: Serialize>(id: u64, value: &V) -> io::Result<Vec<u8>> {
    encode_frame(&id.to_be_bytes(), value)
}

/// Writes `value` tagged with `id`, in one write.
pub async fn write_tagged<T, V>(io: &mut T, id: u64, value: &V) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
    V: Serialize,
{
    write_frame(io, &encode_tagged(id, value)?).await
}

/// Writes a frame of [`encode_tagged`], in one write.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, frame: &[u8]) -> io::Result<()> {
    write_encoded(io, frame).await
}

/// Reads the next frame. `quiet` bounds the wait for its first byte (`None`: no bound);
/// the rest must follow within [`FRAME_DEADLINE`]. `Ok(None)`: the stream ended between
/// frames, or stayed quiet for `quiet`. An error (a cut frame, a length over the limit,
/// the process's frame budget spent, a frame too slow) leaves the stream out of step:
/// the caller closes it.
pub async fn read_tagged<T, V>(io: &mut T, quiet: Option<Duration>) -> io::Result<Option<Tagged<V>>>
where
    T: AsyncRead + Unpin,
    V: DeserializeOwned,
{
    let mut first = [0u8; 1];
    let n = match quiet {
        Some(quiet) => match tokio::time::timeout(quiet, io.read(&mut first)).await {
            Ok(n) => n?,
            Err(_) => return Ok(None),
        },
        None => io.read(&mut first).await?,
    };
    if n == 0 {
        return Ok(None);
    }
    tokio::time::timeout(FRAME_DEADLINE, async {
        let mut head = [0u8; 12];
        head[0] = first[0];
        io.read_exact(head.get_mut(1..).unwrap_or_default()).await?;
        let mut id = [0u8; 8];
        id.copy_from_slice(head.get(..8).unwrap_or_default());
        let mut len = [0u8; 4];
        len.copy_from_slice(head.get(8..).unwrap_or_default());
        let body = read_body_bytes(io, len).await?;
        let value =
            rpc::decode_body(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        Ok(Some((u64::from_be_bytes(id), value)))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the frame did not arrive in time"))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tigress_protocol::ErrorCode;
    use tigress_protocol::rpc::{RemoteError, ReplicaResponse};

    fn answer(text: &str) -> ReplicaResponse {
        ReplicaResponse::Error(RemoteError::new(ErrorCode::NotFound, text))
    }

    async fn next(
        io: &mut futures::io::Cursor<Vec<u8>>,
    ) -> io::Result<Option<Tagged<ReplicaResponse>>> {
        read_tagged(io, None).await
    }

    #[tokio::test]
    async fn frames_keep_their_ids_and_a_bad_body_is_its_frame_alone() {
        let mut bytes = Vec::new();
        write_tagged(&mut bytes, 7, &answer("a")).await.unwrap();
        // A frame whose body does not decode, then a good one.
        bytes.extend_from_slice(&9u64.to_be_bytes());
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        write_tagged(&mut bytes, u64::MAX, &answer("b"))
            .await
            .unwrap();
        let mut io = futures::io::Cursor::new(bytes);
        let (id, v) = next(&mut io).await.unwrap().unwrap();
        assert_eq!((id, v.unwrap()), (7, answer("a")));
        let (id, v) = next(&mut io).await.unwrap().unwrap();
        assert_eq!(id, 9);
        assert_eq!(v.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (id, v) = next(&mut io).await.unwrap().unwrap();
        assert_eq!((id, v.unwrap()), (u64::MAX, answer("b")));
        // The end between frames is a clean end.
        assert!(next(&mut io).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cut_or_oversized_frame_is_an_error() {
        let mut bytes = Vec::new();
        write_tagged(&mut bytes, 1, &answer("cut")).await.unwrap();
        bytes.truncate(bytes.len() - 1);
        let mut io = futures::io::Cursor::new(bytes);
        assert!(next(&mut io).await.is_err());
        let mut big = 1u64.to_be_bytes().to_vec();
        big.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut io = futures::io::Cursor::new(big);
        assert_eq!(
            next(&mut io).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    /// Yields its bytes, then nothing ever again.
    struct Stalls(Vec<u8>);

    impl AsyncRead for Stalls {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.0.is_empty() {
                return Poll::Pending;
            }
            let n = this.0.len().min(buf.len());
            buf[..n].copy_from_slice(&this.0[..n]);
            this.0.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_ends_after_its_wait_and_a_stalled_frame_fails() {
        let started = tokio::time::Instant::now();
        let quiet = Duration::from_secs(90);
        let r = read_tagged::<_, ReplicaResponse>(&mut Stalls(Vec::new()), Some(quiet)).await;
        assert!(r.unwrap().is_none());
        assert!(started.elapsed() >= quiet);
        // A frame that started must finish within the frame deadline, quiet or not.
        let started = tokio::time::Instant::now();
        let r = read_tagged::<_, ReplicaResponse>(&mut Stalls(vec![0, 0, 0]), Some(quiet)).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < quiet);
    }
}

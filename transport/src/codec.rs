//! libp2p request-response codec for the tigress protocols: a 4-byte big-endian length,
//! then the canonical encoding of `tigress_protocol::rpc`. The length is checked before
//! the body is read, so an oversized or hostile frame costs nothing to refuse.

use std::io;
use std::marker::PhantomData;

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

async fn read_frame<T, V>(io: &mut T) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = rpc::frame_len(prefix).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    rpc::decode_body(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T, V>(io: &mut T, value: &V) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    V: Serialize,
{
    let body =
        rpc::encode_body(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    // One write: the prefix and the body go out in one encrypted transport frame.
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    io.flush().await
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
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
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

//! The frame codec reading a request and a response from a stream that delivers
//! arbitrary bytes in arbitrary pieces, as a peer's substream does, and a replica link
//! reading tagged frames from it until it ends. Must return, never panic.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::AsyncRead;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec as _;
use tigress_protocol::rpc::{ReplicaRequest, ReplicaResponse};
use tigress_transport::link::read_tagged;
use tigress_transport::{CLIENT_STREAM, ClientCodec, REPLICA_STREAM, ReplicaCodec};

/// Bytes handed out in pieces whose sizes come from the input itself.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let size = usize::from(
            *self
                .sizes
                .get(self.turn % self.sizes.len().max(1))
                .unwrap_or(&255),
        )
        .max(1);
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, rest)) = input.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (sizes, data) = rest.split_at(split);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // The same pieces, read afresh by each of the four readers.
    let io = || Pieces {
        data,
        sizes,
        turn: 0,
    };
    runtime.block_on(async {
        let _ = ClientCodec::default()
            .read_request(&CLIENT_STREAM, &mut io())
            .await;
        let _ = ClientCodec::default()
            .read_response(&CLIENT_STREAM, &mut io())
            .await;
        let _ = ReplicaCodec::default()
            .read_request(&REPLICA_STREAM, &mut io())
            .await;
        let _ = ReplicaCodec::default()
            .read_response(&REPLICA_STREAM, &mut io())
            .await;
        // A link reads frame after frame until the stream ends or breaks step; a frame
        // whose body does not decode is that frame's error alone.
        let mut link = io();
        while let Ok(Some(_)) = read_tagged::<_, ReplicaRequest>(&mut link, None).await {}
        let mut link = io();
        while let Ok(Some(_)) = read_tagged::<_, ReplicaResponse>(&mut link, None).await {}
    });
});

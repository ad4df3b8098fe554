//! A hostile peer: garbage on the TCP port, malformed and oversized frames on the client
//! protocol, forged, replayed and unknown-version records. Each is refused, nothing stored
//! changes, and the node keeps serving a transfer.

use std::io::Write;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol};
use tigress_client::ClientError;
use tigress_protocol::ErrorCode;
use tigress_protocol::record::{Message, Record};
use tigress_protocol::rpc::{ClientRequest, ClientResponse};
use tigress_protocol::session::ShareOptions;

use crate::support::NodeProc;

/// Writes raw bytes as a request and reads whatever comes back.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let mut out = Vec::new();
        io.take(1 << 20).read_to_end(&mut out).await?;
        if out.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(out)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// Sends each raw frame on `/tigress/client/1` and returns, per frame, whether the node
/// answered (`Some(bytes)`) or closed the stream (`None`).
async fn send_raw(addr: &Multiaddr, frames: Vec<Vec<u8>>) -> Vec<Option<Vec<u8>>> {
    let mut swarm = crate::support::stranger_swarm(request_response::Behaviour::with_codec(
        RawCodec,
        [(
            StreamProtocol::new("/tigress/client/1"),
            ProtocolSupport::Outbound,
        )],
        request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
    ));
    swarm.dial(addr.clone()).unwrap();
    let peer = loop {
        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
            break peer_id;
        }
    };
    let ids: Vec<_> = frames
        .into_iter()
        .map(|f| swarm.behaviour_mut().send_request(&peer, f))
        .collect();
    let mut results = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while results.len() < ids.len() {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) => {
                    results.insert(request_id, Some(response));
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    ..
                }) => {
                    results.insert(request_id, None);
                }
                _ => {}
            }
        }
    })
    .await
    .expect("every hostile request is answered or closed");
    ids.iter().map(|id| results.remove(id).unwrap()).collect()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn code_of(result: Result<ClientResponse, ClientError>) -> Option<ErrorCode> {
    match result {
        Err(e) => e.code(),
        Ok(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_are_refused_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let node = NodeProc::start(&tmp.path().join("node"), &[]);
    let addr: Multiaddr = node.addr().parse().unwrap();

    // Start a transfer.
    let alice = crate::support::client(&addr, tmp.path().join("alice")).await;
    let bob = crate::support::client(&addr, tmp.path().join("bob")).await;
    let shared = alice
        .share(b"first", &ShareOptions::default(), None)
        .await
        .unwrap();
    let id = shared.share_id;
    bob.accept(&shared.url).await.unwrap();
    // The recipient's state before its first send: a copy that can sign a different
    // message under sequence number 1.
    let before_first_send = bob.state().load(&id).unwrap();
    bob.send(&id, b"one", None).await.unwrap();

    // Garbage straight onto the TCP port, from several connections.
    let tcp_addr = node
        .listen
        .trim_start_matches("/ip4/")
        .replace("/tcp/", ":");
    for i in 0..8u8 {
        let mut s = std::net::TcpStream::connect(&tcp_addr).unwrap();
        let garbage: Vec<u8> = (0..4096u32)
            .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i))
            .collect();
        let _ = s.write_all(&garbage);
        if i % 2 == 0 {
            // Leave half of them open and silent.
            std::mem::forget(s);
        }
    }

    // Malformed frames on the client protocol.
    let mut huge = (u32::MAX).to_be_bytes().to_vec();
    huge.extend_from_slice(&[0; 64]);
    let mut truncated = 1000u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[1; 10]);
    let garbage_body = framed(&[0xff; 200]);
    let answers = send_raw(&addr, vec![huge, truncated, garbage_body, vec![1, 2]]).await;
    assert!(
        answers.iter().all(Option::is_none),
        "undecodable frames get a closed stream: {answers:?}"
    );

    // Well-framed but hostile records get typed errors.
    let conn = bob.connection().unwrap();
    let mut state = bob.state().load(&id).unwrap();
    let tigress_client::Party::Recipient(session) = &mut state.party else {
        panic!("bob is the recipient")
    };
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([7; 32]);
    // Forged: a signature bit flipped.
    let mut forged = session
        .seal(b"forged", [9; 16], tigress_client::unix_now(), &mut rng)
        .unwrap();
    forged.signature.0[0] ^= 1;
    assert_eq!(
        code_of(conn.request(ClientRequest::Send { message: forged }).await),
        Some(ErrorCode::Unauthorized)
    );
    // Replayed: sequence 1 again, with other content.
    let tigress_client::Party::Recipient(mut twin) = before_first_send.party else {
        panic!("bob is the recipient")
    };
    let replay = twin
        .seal(
            b"not what was sent",
            [3; 16],
            tigress_client::unix_now(),
            &mut rng,
        )
        .unwrap();
    assert_eq!(replay.header().seq, 1);
    assert_eq!(
        code_of(conn.request(ClientRequest::Send { message: replay }).await),
        Some(ErrorCode::Conflict)
    );
    // An unknown (or retired) version inside a well-formed frame.
    for version in [1, tigress_protocol::wire::FORMAT_VERSION + 1] {
        let mut other = session
            .seal(b"other", [8; 16], tigress_client::unix_now(), &mut rng)
            .unwrap();
        other.body.header.version = version;
        assert_eq!(
            code_of(conn.request(ClientRequest::Send { message: other }).await),
            Some(ErrorCode::Malformed)
        );
    }
    // A message cut short does not decode.
    let bytes = session
        .seal(b"cut", [1; 16], tigress_client::unix_now(), &mut rng)
        .unwrap()
        .to_bytes();
    assert!(Message::from_bytes(&bytes[..bytes.len() / 2]).is_err());

    // The transfer goes on: nothing hostile was stored.
    bob.send(&id, b"two", None).await.unwrap();
    let got = alice.recv(&id, Duration::from_secs(10)).await.unwrap();
    let texts: Vec<&[u8]> = got
        .messages
        .iter()
        .map(|m| m.plaintext.as_slice())
        .collect();
    assert_eq!(texts, vec![&b"one"[..], b"two"]);
    assert_eq!(node.terminate(), Some(0));
}

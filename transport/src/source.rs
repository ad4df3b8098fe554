//! TCP dialling from a chosen local address: for hosts with several addresses, where the
//! one the kernel would pick is not the one to use (a multi-homed server, a client that
//! must leave through one interface, a test that plays several hosts on one machine).
//!
//! libp2p's own TCP transport binds an outgoing socket either to nothing (the kernel
//! picks the source) or, with port reuse, to the unspecified address and a listening
//! port; neither names a source address. [`SourceTcp`] only dials: it listens nowhere.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;

/// A dial-only TCP transport whose connections leave from one local IP address.
#[derive(Debug, Clone, Copy)]
pub struct SourceTcp {
    source: IpAddr,
}

impl SourceTcp {
    /// Connections leave from `source` (any free port); only addresses of its family
    /// (IPv4 or IPv6) can be dialled.
    pub fn new(source: IpAddr) -> Self {
        Self { source }
    }
}

/// The TCP endpoint `addr` names (`/ip4|ip6/…/tcp/…`, an optional `/p2p/…` after it).
fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    match parts.next() {
        None | Some(Protocol::P2p(_)) if parts.next().is_none() => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

type Dialling = Pin<Box<dyn Future<Output = io::Result<libp2p::tcp::tokio::TcpStream>> + Send>>;

impl Transport for SourceTcp {
    type Output = libp2p::tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Pending<io::Result<Self::Output>>;
    type Dial = Dialling;

    fn listen_on(
        &mut self,
        _id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _id: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(to) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if to.is_ipv4() != self.source.is_ipv4() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let from = SocketAddr::new(self.source, 0);
        Ok(Box::pin(async move {
            let socket = if from.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(from)?;
            let stream = socket.connect(to).await?;
            stream.set_nodelay(true)?;
            Ok(libp2p::tcp::tokio::TcpStream(stream))
        }))
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;

    fn opts() -> DialOpts {
        DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        }
    }

    #[test]
    fn reads_tcp_addresses_only() {
        let ok: Multiaddr =
            "/ip4/127.0.0.1/tcp/7/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                .parse()
                .unwrap();
        assert_eq!(socket_addr(&ok), Some("127.0.0.1:7".parse().unwrap()));
        for bad in [
            "/ip4/127.0.0.1/udp/7/quic-v1",
            "/dns4/example.com/tcp/7",
            "/ip4/127.0.0.1/tcp/7/tcp/8",
        ] {
            assert_eq!(socket_addr(&bad.parse().unwrap()), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn connections_leave_from_the_source() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut transport = SourceTcp::new("127.66.0.9".parse().unwrap());
        let dial = transport
            .dial(
                format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
                opts(),
            )
            .unwrap();
        let (dialled, accepted) = tokio::join!(dial, listener.accept());
        dialled.unwrap();
        let (_, from) = accepted.unwrap();
        assert_eq!(from.ip(), "127.66.0.9".parse::<IpAddr>().unwrap());
        // Another family is not this transport's to dial.
        assert!(matches!(
            transport.dial(format!("/ip6/::1/tcp/{port}").parse().unwrap(), opts()),
            Err(TransportError::MultiaddrNotSupported(_))
        ));
    }
}

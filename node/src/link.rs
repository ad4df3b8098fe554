//! The replica protocol over one stream per peer (`/tigress/replica/2`,
//! [`tigress_transport::link`]).
//!
//! A node asks another replica many things in a row: a transfer at R = 5 sends each
//! replica a dozen requests. Over request-response each of them opened a substream,
//! negotiated the protocol, and closed it: frames, syscalls and a round through the swarm's
//! event loop per request, each way. Here a node keeps one stream to each replica it
//! talks to ([`Links`]) and numbers its requests on it; the replica answers each as it is
//! ready ([`serve`]), so a long-poll holds up nothing. A link closes after the node's idle
//! timeout without requests, so the connection below it can idle out as before.
//!
//! A peer that does not speak `/tigress/replica/2` is asked over `/tigress/replica/1`
//! (request-response, which every node still serves), and remembered as such.
//!
//! What a replica spends on a link is bounded: at most [`MAX_STREAMS_PER_PEER`] links
//! from one peer, at most [`MAX_IN_FLIGHT`] requests read and not yet answered on each
//! (beyond it the node stops reading, and the peer's writes wait on the muxer's window),
//! at most [`MAX_UNWRITTEN`] bytes of answers the peer has not read, and every request
//! goes through the admission checks of request-response: the source's rate, the
//! dispatcher's queue, then the dispatcher's slots and byte budgets. A frame
//! that does not decode ends the link; a link with no request for [`SERVE_QUIET`] is
//! closed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::PeerId;
use tigress_protocol::ErrorCode;
use tigress_protocol::quorum::CallError;
use tigress_protocol::rpc::{RemoteError, ReplicaRequest, ReplicaResponse};
use tigress_transport::REQUEST_TIMEOUT;
use tigress_transport::link::{
    REPLICA_LINK, encode_tagged, read_tagged, write_frame, write_tagged,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::network::{
    Inbound, NetworkHandle, ReplicaChannel, admit_replica, only_from_known_nodes,
};

/// The most requests one link has sent and not had answered; more wait for a slot.
const MAX_PENDING: usize = 1024;

/// The most requests a replica reads from one link and has not answered. Above what the
/// dispatcher's budgets let one node have in flight (its long-polls and its other
/// requests), so that those budgets, which refuse at once, decide, and a flood of
/// long-polls never holds up the requests behind it on the link.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// The most bytes of answers a link holds that its peer has not read: past it, answers
/// wait (and hold their slots, so the peer's next requests are refused by the budgets).
pub(crate) const MAX_UNWRITTEN: usize = 8 << 20;

/// The most links one peer may hold open to this node at once.
pub(crate) const MAX_STREAMS_PER_PEER: usize = 4;

/// How long a replica keeps a link that sends no request. An honest node closes its end
/// after its idle timeout; this only ends a peer's link that it keeps open for nothing.
pub(crate) const SERVE_QUIET: Duration = Duration::from_secs(120);

/// How long opening a link (and dialing the peer, if need be) may take: as long as
/// request-response gave a request's dial and negotiation, since on a saturated machine
/// they take seconds. A peer that is down refuses the dial at once.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a link drops the requests whose askers stopped waiting.
const SWEEP: Duration = Duration::from_secs(5);

/// The most peers remembered as speaking only `/tigress/replica/1`.
const MAX_LEGACY: usize = 4096;

/// What became of a request sent over a link (moved once per request, as the answer is).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    /// The peer answered, or why it did not.
    Answered(Result<ReplicaResponse, CallError>),
    /// The peer does not speak the link protocol: the request, to send the old way.
    Legacy(ReplicaRequest),
    /// The link closed before it sent the request: the request, to send on a new one.
    Closed(ReplicaRequest),
    /// The peer could not be dialed (no address known for it, or none answered): the
    /// request, to send once the peer is found.
    Undialable(ReplicaRequest),
}

struct Call {
    request: ReplicaRequest,
    reply: oneshot::Sender<Outcome>,
}

/// Has the node dial a peer unless it is connected or dialing, and answer `true` once it
/// is connected, `false` if the dial failed (the sender dropped: not known). A link asks
/// for its stream only then. libp2p-stream dials a peer it is asked a stream to and is
/// not connected to, but it hands its dials to the swarm through a channel of one (of
/// several links opened at once to peers not connected, all but one would wait until
/// something else connected their peer), and a request made as another connection to
/// the peer is being set up waits in a channel no connection takes.
pub(crate) type Connect = Arc<dyn Fn(PeerId, oneshot::Sender<bool>) + Send + Sync>;

/// The links of one node to the replicas it asks.
pub(crate) struct Links {
    control: Mutex<libp2p_stream::Control>,
    connect: Connect,
    peers: Mutex<HashMap<PeerId, mpsc::Sender<Call>>>,
    legacy: Mutex<HashSet<PeerId>>,
    /// Peers whose identification lists the link protocol: a refused negotiation with
    /// one of them is a stream it dropped (multistream-select reads a stream closed
    /// mid-negotiation as a refusal), not a node of the old kind.
    serving: Mutex<HashSet<PeerId>>,
    idle: Duration,
    stopped: AtomicBool,
    /// Asks every peer over request-response (a node of the old kind, in tests).
    disabled: bool,
}

impl Links {
    pub(crate) fn new(
        control: libp2p_stream::Control,
        idle: Duration,
        disabled: bool,
        connect: Connect,
    ) -> Arc<Self> {
        Arc::new(Self {
            control: Mutex::new(control),
            connect,
            peers: Mutex::new(HashMap::new()),
            legacy: Mutex::new(HashSet::new()),
            serving: Mutex::new(HashSet::new()),
            idle: idle.max(Duration::from_secs(1)),
            stopped: AtomicBool::new(false),
            disabled,
        })
    }

    /// The node stopped: no more links, and the open ones are failed by their streams.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Ok(mut peers) = self.peers.lock() {
            peers.clear();
        }
    }

    /// Links open now.
    pub(crate) fn open(&self) -> usize {
        self.peers.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn is_legacy(&self, peer: &PeerId) -> bool {
        self.legacy.lock().is_ok_and(|l| l.contains(peer))
    }

    /// `peer` identified itself, listing the link protocol or not.
    pub(crate) fn identified(&self, peer: PeerId, serves_links: bool) {
        if let Ok(mut serving) = self.serving.lock() {
            if serves_links {
                if serving.len() >= MAX_LEGACY {
                    serving.clear();
                }
                serving.insert(peer);
            } else {
                serving.remove(&peer);
            }
        }
        if serves_links && let Ok(mut legacy) = self.legacy.lock() {
            legacy.remove(&peer);
        }
    }

    /// `peer` refused to negotiate the link protocol: remembered as a node of the old
    /// kind, unless it said it serves links (then the stream was dropped, and the
    /// requests go over a new link). Returns whether it is taken for the old kind.
    fn refused(&self, peer: PeerId) -> bool {
        if self.serving.lock().is_ok_and(|s| s.contains(&peer)) {
            return false;
        }
        self.mark_legacy(peer);
        true
    }

    fn mark_legacy(&self, peer: PeerId) {
        if let Ok(mut legacy) = self.legacy.lock() {
            if legacy.len() >= MAX_LEGACY {
                legacy.clear();
            }
            legacy.insert(peer);
        }
    }

    /// Sends `request` to `peer` over its link (opened if need be) and awaits the answer
    /// within the request timeout.
    pub(crate) async fn call(self: &Arc<Self>, peer: PeerId, request: ReplicaRequest) -> Outcome {
        if self.stopped.load(Ordering::Acquire) {
            return Outcome::Answered(Err(CallError::Stopping));
        }
        if self.disabled || self.is_legacy(&peer) {
            return Outcome::Legacy(request);
        }
        let asked = async {
            let mut request = request;
            // A link that closes on its idle timeout as the request reaches it hands the
            // request back; it goes over a new link.
            for _ in 0..3 {
                let (reply, answer) = oneshot::channel();
                self.send(peer, Call { request, reply }).await;
                match answer.await {
                    Ok(Outcome::Closed(back)) => request = back,
                    Ok(outcome) => return outcome,
                    Err(_) => break,
                }
            }
            Outcome::Answered(Err(CallError::Unreachable))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, asked)
            .await
            .unwrap_or(Outcome::Answered(Err(CallError::Timeout)))
    }

    /// Hands `call` to `peer`'s link, opening one if there is none (or the one found has
    /// just closed).
    async fn send(self: &Arc<Self>, peer: PeerId, mut call: Call) {
        for _ in 0..3 {
            let link = {
                let Ok(mut peers) = self.peers.lock() else {
                    break;
                };
                if self.stopped.load(Ordering::Acquire) {
                    break;
                }
                // A call that raced a link found refused (its channel closed under it)
                // goes the old way, not over another link that would be refused too.
                if !peers.contains_key(&peer) && self.is_legacy(&peer) {
                    let _ = call.reply.send(Outcome::Legacy(call.request));
                    return;
                }
                peers
                    .entry(peer)
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
                        let control = self
                            .control
                            .lock()
                            .map(|c| c.clone())
                            .unwrap_or_else(|e| e.into_inner().clone());
                        tokio::spawn(run(self.clone(), peer, control, tx.clone(), rx));
                        tx
                    })
                    .clone()
            };
            match link.send(call).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    call = back;
                    self.forget(peer, &link);
                }
            }
        }
        let _ = call
            .reply
            .send(Outcome::Answered(Err(CallError::Unreachable)));
    }

    /// Removes `link` as `peer`'s, unless another link took its place.
    fn forget(&self, peer: PeerId, link: &mpsc::Sender<Call>) {
        if let Ok(mut peers) = self.peers.lock()
            && peers.get(&peer).is_some_and(|l| l.same_channel(link))
        {
            peers.remove(&peer);
        }
    }
}

/// A request sent and not answered yet.
struct Waiting {
    reply: oneshot::Sender<Outcome>,
    /// The request itself, kept until the link carried its first answer: a stream the
    /// peer dropped unread (a busy node may drop a new stream) hands its requests back to
    /// go over a new link.
    request: Option<ReplicaRequest>,
}

type Pending = Arc<Mutex<HashMap<u64, Waiting>>>;

/// The link ended: requests it never showed to be read go back to be sent again, the
/// others fail.
fn answer_all(pending: &Pending) {
    if let Ok(mut p) = pending.lock() {
        for (_, waiting) in p.drain() {
            let _ = waiting.reply.send(match waiting.request {
                Some(request) => Outcome::Closed(request),
                None => Outcome::Answered(Err(CallError::Unreachable)),
            });
        }
    }
}

/// How many times a link's stream is asked for again after the connection it was asked
/// on closed under it.
const OPEN_AGAIN: u32 = 4;

/// Opens a link's stream to `peer`, once the node has a connection to it (dialing it if
/// need be). libp2p-stream asks for the stream on a connection it holds, and a connection
/// that closes before the stream is negotiated (one idling out as the link picks it) fails
/// the request with `ConnectionReset`, though the peer is up: the peer is dialed and asked
/// again, after a moment for the swarm to forget the closed connection. A failed dial
/// (`NotConnected`) is final.
async fn open(
    links: &Links,
    peer: PeerId,
    control: &mut libp2p_stream::Control,
) -> Result<libp2p::Stream, libp2p_stream::OpenStreamError> {
    let mut again = 0;
    loop {
        let (reply, connected) = oneshot::channel();
        (links.connect)(peer, reply);
        if connected.await == Ok(false) {
            return Err(libp2p_stream::OpenStreamError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no address of the peer answered",
            )));
        }
        match control.open_stream(peer, REPLICA_LINK).await {
            Err(libp2p_stream::OpenStreamError::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionReset && again < OPEN_AGAIN =>
            {
                tracing::debug!(%peer, "a connection closed under a link being opened; asked again");
                again += 1;
                tokio::time::sleep(Duration::from_millis(20) * 2u32.pow(again)).await;
            }
            opened => return opened,
        }
    }
}

/// One link: opens the stream, then writes the calls handed to it and matches the
/// answers, until it has been idle for the node's idle timeout or the stream fails.
async fn run(
    links: Arc<Links>,
    peer: PeerId,
    mut control: libp2p_stream::Control,
    me: mpsc::Sender<Call>,
    mut calls: mpsc::Receiver<Call>,
) {
    let opened = tokio::time::timeout(OPEN_TIMEOUT, open(&links, peer, &mut control)).await;
    let stream = match opened {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
            let legacy = links.refused(peer);
            tracing::debug!(%peer, legacy, "replica link refused by the peer");
            links.forget(peer, &me);
            calls.close();
            while let Some(call) = calls.recv().await {
                let _ = call.reply.send(if legacy {
                    Outcome::Legacy(call.request)
                } else {
                    Outcome::Closed(call.request)
                });
            }
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "replica link not opened");
            links.forget(peer, &me);
            calls.close();
            while let Some(call) = calls.recv().await {
                let _ = call.reply.send(Outcome::Undialable(call.request));
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "replica link not opened in time");
            None
        }
    };
    let Some(stream) = stream else {
        links.forget(peer, &me);
        calls.close();
        while let Some(call) = calls.recv().await {
            let _ = call
                .reply
                .send(Outcome::Answered(Err(CallError::Unreachable)));
        }
        return;
    };
    let (mut reader, mut writer) = stream.split();
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let confirmed = AtomicBool::new(false);
    let reading = {
        let pending = pending.clone();
        let confirmed = &confirmed;
        async move {
            loop {
                match read_tagged::<_, ReplicaResponse>(&mut reader, None).await {
                    Ok(Some((id, answer))) => {
                        let waiting = pending.lock().ok().and_then(|mut p| {
                            if !confirmed.swap(true, Ordering::AcqRel) {
                                p.values_mut().for_each(|w| w.request = None);
                            }
                            p.remove(&id)
                        });
                        if let Some(waiting) = waiting {
                            let _ = waiting
                                .reply
                                .send(Outcome::Answered(answer.map_err(|_| CallError::Malformed)));
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "replica link: answer not read");
                        return;
                    }
                }
            }
        }
    };
    let writing = async {
        let mut next: u64 = 0;
        let mut quiet_since = tokio::time::Instant::now();
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            let waiting = pending.lock().map(|p| p.len()).unwrap_or(0);
            tokio::select! {
                call = calls.recv(), if waiting < MAX_PENDING => {
                    let Some(call) = call else { return true };
                    let id = next;
                    next = next.wrapping_add(1);
                    // In the map before it leaves: its answer may come back at once.
                    let kept = (!confirmed.load(Ordering::Acquire)).then(|| call.request.clone());
                    if let Ok(mut p) = pending.lock() {
                        p.insert(id, Waiting { reply: call.reply, request: kept });
                    }
                    if write_tagged(&mut writer, id, &call.request).await.is_err() {
                        return false;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                _ = sweep.tick() => {
                    let left = pending
                        .lock()
                        .map(|mut p| {
                            p.retain(|_, w| !w.reply.is_closed());
                            p.len()
                        })
                        .unwrap_or(0);
                    if left == 0 && quiet_since.elapsed() >= links.idle {
                        return true;
                    }
                    if left > 0 {
                        quiet_since = tokio::time::Instant::now();
                    }
                }
            }
        }
    };
    let idle = tokio::select! {
        () = reading => false,
        idle = writing => idle,
    };
    links.forget(peer, &me);
    drop(me);
    calls.close();
    if idle {
        let _ = writer.close().await;
    }
    answer_all(&pending);
    // Calls that reached this link after it decided to close go over a new one.
    while let Some(call) = calls.recv().await {
        let _ = call.reply.send(Outcome::Closed(call.request));
    }
}

/// What the replica side of the links needs from the node.
pub(crate) struct ServeContext {
    pub(crate) inbound: mpsc::Sender<Inbound>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) budgets: Arc<crate::budget::Budgets>,
    pub(crate) net: NetworkHandle,
    /// Answers handed to links and not yet written: a stopping node waits for them.
    pub(crate) answering: Arc<AtomicUsize>,
}

/// An answer's way back to its link: the request's id, and its slot among the link's
/// requests in flight, given back once the answer is written.
pub(crate) struct LinkAnswer {
    id: u64,
    to: mpsc::Sender<Written>,
    slot: Slot,
    unwritten: Arc<Semaphore>,
}

/// An answer's frame on its way out, with what it holds until written.
struct Written {
    frame: Vec<u8>,
    _slot: Slot,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl LinkAnswer {
    /// Encodes the answer and hands it to the link's writer, once the link's unread
    /// answers leave room for it.
    pub(crate) async fn send(self, response: ReplicaResponse) {
        let frame = match encode_tagged(self.id, &response) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "an answer could not be encoded");
                let error = ReplicaResponse::Error(RemoteError::new(
                    ErrorCode::TooLarge,
                    "the answer does not fit a frame",
                ));
                match encode_tagged(self.id, &error) {
                    Ok(frame) => frame,
                    Err(_) => return,
                }
            }
        };
        let want = u32::try_from(frame.len().min(MAX_UNWRITTEN)).unwrap_or(u32::MAX);
        let bytes = self.unwritten.acquire_many_owned(want).await.ok();
        let _ = self
            .to
            .send(Written {
                frame,
                _slot: self.slot,
                _bytes: bytes,
            })
            .await;
    }
}

/// A request's slot on its link, counted in [`ServeContext::answering`] until dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    answering: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the links other nodes open to this replica until `incoming` ends.
pub(crate) async fn serve(mut incoming: libp2p_stream::IncomingStreams, ctx: Arc<ServeContext>) {
    let open: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    while let Some((peer, stream)) = incoming.next().await {
        let admitted = open.lock().is_ok_and(|mut open| {
            let n = open.entry(peer).or_insert(0);
            if *n >= MAX_STREAMS_PER_PEER {
                false
            } else {
                *n += 1;
                true
            }
        });
        if !admitted {
            tracing::debug!(%peer, "replica link refused: the peer holds as many as it may");
            ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (ctx, open) = (ctx.clone(), open.clone());
        tokio::spawn(async move {
            serve_one(peer, stream, &ctx).await;
            if let Ok(mut open) = open.lock()
                && let Some(n) = open.get_mut(&peer)
            {
                *n -= 1;
                if *n == 0 {
                    open.remove(&peer);
                }
            }
        });
    }
}

/// Serves one link: reads requests while it has slots for them, admits each as
/// request-response does, writes the answers as they come.
async fn serve_one(peer: PeerId, stream: libp2p::Stream, ctx: &ServeContext) {
    let from = ctx.net.remote_of(peer).await;
    let (mut reader, mut writer) = stream.split();
    let (to, mut answers) = mpsc::channel::<Written>(MAX_IN_FLIGHT);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let unwritten = Arc::new(Semaphore::new(MAX_UNWRITTEN));
    let reading = async move {
        // Owned by the body, so that it is dropped when reading ends and the writer
        // sees the last answer owed.
        let to = to;
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let request = match read_tagged::<_, ReplicaRequest>(&mut reader, Some(SERVE_QUIET))
                .await
            {
                Ok(Some((id, Ok(request)))) => (id, request),
                Ok(Some((_, Err(e)))) | Err(e) => {
                    tracing::debug!(%peer, error = %e, "replica link: a request could not be read; closing");
                    return;
                }
                Ok(None) => return,
            };
            let (id, request) = request;
            ctx.answering.fetch_add(1, Ordering::AcqRel);
            let slot = Slot {
                _permit: permit,
                answering: ctx.answering.clone(),
            };
            let known = only_from_known_nodes(&request) && ctx.net.in_routing_table(peer).await;
            let channel = ReplicaChannel::Link(LinkAnswer {
                id,
                to: to.clone(),
                slot,
                unwritten: unwritten.clone(),
            });
            let refused = admit_replica(
                &ctx.budgets,
                &ctx.inbound,
                peer,
                from.clone(),
                known,
                request,
                channel,
            )
            .err()
            .and_then(|(channel, e)| match channel {
                ReplicaChannel::Link(answer) => Some((answer, e)),
                ReplicaChannel::Swarm(_) => None,
            });
            if let Some((answer, e)) = refused {
                ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
                answer.send(ReplicaResponse::Error(e)).await;
            }
        }
    };
    let writing = async {
        while let Some(answer) = answers.recv().await {
            if write_frame(&mut writer, &answer.frame).await.is_err() {
                return;
            }
        }
        let _ = writer.close().await;
    };
    tokio::pin!(reading, writing);
    tokio::select! {
        () = &mut reading => {
            // The peer is done asking (or broke the stream): the answers still owed go
            // out, then the stream closes.
            writing.await;
        }
        () = &mut writing => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream dropped mid-negotiation reads as a refusal of the protocol. A peer whose
    /// identification lists the link protocol is not taken for a node of the old kind for
    /// that (its requests would go over request-response for good); a peer that does not
    /// list it is, until it identifies itself as serving links.
    #[test]
    fn a_refusal_from_a_peer_that_serves_links_is_not_taken_for_an_old_node() {
        let control = libp2p_stream::Behaviour::new().new_control();
        let links = Links::new(control, Duration::from_secs(5), false, Arc::new(|_, _| {}));
        let (old, new, unknown) = (PeerId::random(), PeerId::random(), PeerId::random());
        links.identified(old, false);
        links.identified(new, true);
        assert!(!links.refused(new));
        assert!(!links.is_legacy(&new));
        assert!(links.refused(old));
        assert!(links.is_legacy(&old));
        assert!(links.refused(unknown));
        assert!(links.is_legacy(&unknown));
        // Upgraded: identified as serving links, asked over links again.
        links.identified(old, true);
        assert!(!links.is_legacy(&old));
        // Downgraded: no longer listing the protocol, a refusal is believed.
        links.identified(new, false);
        assert!(links.refused(new));
        assert!(links.is_legacy(&new));
    }

    /// A call that reaches a peer's link as the link closes on a refusal (its channel
    /// closed under it) is handed on: it goes the old way, and no second link is opened to
    /// be refused again.
    #[tokio::test]
    async fn a_call_handed_on_after_a_refusal_opens_no_other_link() {
        let control = libp2p_stream::Behaviour::new().new_control();
        let dialed = Arc::new(AtomicUsize::new(0));
        let counted = dialed.clone();
        let links = Links::new(
            control,
            Duration::from_secs(5),
            false,
            Arc::new(move |_, _| {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let old = PeerId::random();
        links.mark_legacy(old);
        let (reply, answer) = oneshot::channel();
        let request = ReplicaRequest::Digest {
            address: tigress_protocol::Address([7; 32]),
        };
        links.send(old, Call { request, reply }).await;
        let outcome = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("the call was never handed back");
        assert!(
            matches!(outcome, Ok(Outcome::Legacy(_))),
            "not sent the old way"
        );
        assert_eq!(dialed.load(Ordering::Relaxed), 0, "a link was opened");
        assert_eq!(links.open(), 0);
    }

    /// Links whose requests for a connection come out of the receiver, to be answered
    /// as the node's network loop would.
    fn links_asking(
        control: libp2p_stream::Control,
    ) -> (
        Arc<Links>,
        mpsc::UnboundedReceiver<(PeerId, oneshot::Sender<bool>)>,
    ) {
        let (connect_tx, connect) = mpsc::unbounded_channel();
        let links = Links::new(
            control,
            Duration::from_secs(5),
            false,
            Arc::new(move |peer, reply| {
                let _ = connect_tx.send((peer, reply));
            }),
        );
        (links, connect)
    }

    /// A link opened while a connection to its peer is being set up (the swarm has made
    /// the connection's handlers and not yet told the behaviours it is established: a
    /// peer dialing this node as this node opens a link to it) gets its stream on that
    /// connection. Asked for at once, the stream would wait in libp2p-stream's channel for
    /// a connection still to come, which no connection takes, until the link's open
    /// timeout: the replica taken for unreachable.
    #[tokio::test]
    async fn a_link_opened_as_a_connection_is_set_up_gets_its_stream_on_it() {
        use libp2p::core::ConnectedPoint;
        use libp2p::swarm::behaviour::ConnectionEstablished;
        use libp2p::swarm::{
            ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut behaviour = libp2p_stream::Behaviour::new();
        let peer = PeerId::random();
        let connection = ConnectionId::new_unchecked(1);
        let local: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let remote: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/50000".parse().unwrap();

        // The swarm sets up an inbound connection from the peer: its handler first...
        let mut handler = behaviour
            .handle_established_inbound_connection(connection, peer, &local, &remote)
            .expect("the connection is accepted");
        // ...a link to the peer is opened now...
        let (links, mut connect) = links_asking(behaviour.new_control());
        let request = ReplicaRequest::Status {
            address: tigress_protocol::Address([3; 32]),
        };
        let call = tokio::spawn(async move { links.call(peer, request).await });
        let (asked, reply) = tokio::time::timeout_at(deadline, connect.recv())
            .await
            .expect("the link never asked for a connection")
            .expect("the link asks");
        assert_eq!(asked, peer);
        // ...and then the behaviours hear the connection is established, and the node's
        // network loop (which hears it after them) tells the link.
        let endpoint = ConnectedPoint::Listener {
            local_addr: local,
            send_back_addr: remote,
        };
        behaviour.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: connection,
            endpoint: &endpoint,
            failed_addresses: &[],
            other_established: 0,
        }));
        let _ = reply.send(true);

        let requested = tokio::time::timeout_at(
            deadline,
            std::future::poll_fn(|cx| match handler.poll(cx) {
                std::task::Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    ..
                }) => std::task::Poll::Ready(()),
                _ => std::task::Poll::Pending,
            }),
        )
        .await;
        call.abort();
        assert!(
            requested.is_ok(),
            "the link's stream was never asked of the connection"
        );
    }

    #[derive(libp2p::swarm::NetworkBehaviour)]
    #[behaviour(prelude = "libp2p::swarm::derive_prelude")]
    struct Streams {
        stream: libp2p_stream::Behaviour,
        addresses: crate::addresses::AddressBook,
    }

    fn swarm() -> libp2p::Swarm<Streams> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                Default::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("a TCP transport")
            .with_behaviour(|_| Streams {
                stream: libp2p_stream::Behaviour::new(),
                addresses: Default::default(),
            })
            .expect("a behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// A connection that closes as a link is opened on it (one idling out) fails the
    /// stream with a reset, though the peer is up. The link dials the peer and opens the
    /// stream again: the request is answered, not handed back as if the peer could not be
    /// dialed (then a node looked the peer up and, having found it, gave up).
    #[tokio::test]
    async fn a_link_opened_on_a_connection_closing_under_it_is_opened_again() {
        use libp2p::swarm::SwarmEvent;
        use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);

        // The replica: answers every request on every link with "not found".
        let mut replica = swarm();
        let replica_id = *replica.local_peer_id();
        let mut incoming = replica
            .behaviour()
            .stream
            .new_control()
            .accept(REPLICA_LINK)
            .expect("accepting links");
        replica
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .expect("listening");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = replica.select_next_some().await {
                break address;
            }
        };
        tokio::spawn(async move {
            while let Some((_, mut stream)) = incoming.next().await {
                tokio::spawn(async move {
                    while let Ok(Some((id, _))) =
                        read_tagged::<_, ReplicaRequest>(&mut stream, None).await
                    {
                        let answer = ReplicaResponse::Error(RemoteError::new(
                            ErrorCode::NotFound,
                            "nothing here",
                        ));
                        if write_tagged(&mut stream, id, &answer).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match replica.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        let _ = seen_tx.send(true);
                    }
                    SwarmEvent::ConnectionClosed { .. } => {
                        let _ = seen_tx.send(false);
                    }
                    _ => {}
                }
            }
        });

        // The asker, connected to the replica (both ends see it).
        let mut asker = swarm();
        asker.behaviour_mut().addresses.found(replica_id, &[addr]);
        asker.dial(replica_id).expect("dialing the replica");
        tokio::time::timeout_at(deadline, async {
            loop {
                if let SwarmEvent::ConnectionEstablished { .. } = asker.select_next_some().await {
                    break;
                }
            }
        })
        .await
        .expect("the asker never connected");
        let established = tokio::time::timeout_at(deadline, seen.recv()).await;
        assert_eq!(
            established,
            Ok(Some(true)),
            "the replica never saw the connection"
        );

        // The connection closes; the asker's swarm has not yet seen it go, so a stream
        // asked for now is asked on the closed connection.
        asker.disconnect_peer_id(replica_id).expect("connected");
        let closed = tokio::time::timeout_at(deadline, seen.recv()).await;
        assert_eq!(closed, Ok(Some(false)), "the connection never closed");
        let (links, mut connect) = links_asking(asker.behaviour().stream.new_control());
        let request = ReplicaRequest::Status {
            address: tigress_protocol::Address([9; 32]),
        };
        let mut call = tokio::spawn(async move { links.call(replica_id, request).await });
        // The link asks whether the peer is connected: yes, as far as the asker's swarm
        // knows. It asks for its stream as soon as it runs (on this single-threaded
        // runtime, before the asker's swarm runs again).
        let first = tokio::time::timeout_at(deadline, connect.recv())
            .await
            .expect("the link never asked for a connection")
            .expect("the link asks");
        assert_eq!(first.0, replica_id);
        assert!(asker.is_connected(&replica_id));
        let _ = first.1.send(true);
        tokio::task::yield_now().await;

        // Then as the node's network loop does: dial, and answer once connected.
        let mut waiting = Vec::new();
        let outcome = tokio::time::timeout_at(deadline, async {
            loop {
                tokio::select! {
                    outcome = &mut call => break outcome.expect("the call ran"),
                    Some((peer, reply)) = connect.recv() => {
                        if asker.is_connected(&peer) {
                            let _ = reply.send(true);
                        } else {
                            let opts = DialOpts::peer_id(peer)
                                .condition(PeerCondition::DisconnectedAndNotDialing)
                                .build();
                            let _ = asker.dial(opts);
                            waiting.push(reply);
                        }
                    }
                    event = asker.select_next_some() => {
                        if let SwarmEvent::ConnectionEstablished { .. } = event {
                            for reply in waiting.drain(..) {
                                let _ = reply.send(true);
                            }
                        }
                    }
                }
            }
        })
        .await
        .expect("the call never ended");
        match outcome {
            Outcome::Answered(Ok(ReplicaResponse::Error(e))) => {
                assert_eq!(e.code, ErrorCode::NotFound)
            }
            Outcome::Answered(answer) => panic!("answered {answer:?}"),
            Outcome::Undialable(_) => panic!("taken for a peer that cannot be dialed"),
            Outcome::Legacy(_) => panic!("taken for a node of the old kind"),
            Outcome::Closed(_) => panic!("handed back"),
        }
    }
}

//! Counters for `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tigress_protocol::rpc::{ClientRequest, ClientResponse, ReplicaRequest, ReplicaResponse};

use crate::store::StoreStats;

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// Requests refused before handling (rate limit, shutdown).
    pub refused: AtomicU64,
    /// Searches for a mailbox answered from the memory of addresses found absent.
    pub absent_hits: AtomicU64,
    /// Creates refused for want of proof of work.
    pub admission_refused: AtomicU64,
    /// Connected peers.
    pub peers: AtomicU64,
    /// Long-polls waiting for a message right now.
    pub long_polls: AtomicU64,
    /// Whether other nodes can dial this one (it serves in routing tables and as a replica).
    pub reachable: std::sync::atomic::AtomicBool,
    /// Peers in the Kademlia routing table.
    pub routing_table: AtomicU64,
    /// Anti-entropy rounds completed.
    pub anti_entropy_rounds: AtomicU64,
    /// Records anti-entropy copied (pulled or pushed).
    pub anti_entropy_repaired: AtomicU64,
    /// Lookups run to find a replica this node had no address for.
    pub replica_lookups: AtomicU64,
    /// Replicas this node had no address for and did not look up: one a lookup recently
    /// did not find, every lookup slot busy, or a request that came through a relay.
    pub replica_lookups_spared: AtomicU64,
}

/// The name of a client operation.
pub fn client_op(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::Info => "info",
        ClientRequest::Locate { .. } => "locate",
        ClientRequest::Create { .. } => "create",
        ClientRequest::Open { .. } => "open",
        ClientRequest::Claim { .. } => "claim",
        ClientRequest::Read { .. } => "read",
        ClientRequest::Send { .. } => "send",
        ClientRequest::Fetch { .. } => "fetch",
        ClientRequest::Delete { .. } => "delete",
        ClientRequest::Relinquish { .. } => "relinquish",
        ClientRequest::Resolve { .. } => "resolve",
        ClientRequest::Status { .. } => "status",
        ClientRequest::Report { .. } => "report",
        ClientRequest::Keys => "keys",
        ClientRequest::KeysOf { .. } => "keys_of",
        ClientRequest::Nodes => "nodes",
        ClientRequest::Relay { .. } => "relay",
        ClientRequest::Oblivious { .. } => "oblivious",
    }
}

/// The name of a replica operation.
pub fn replica_op(request: &ReplicaRequest) -> &'static str {
    match request {
        ReplicaRequest::StoreGenesis { .. } => "store_genesis",
        ReplicaRequest::Grant { .. } => "grant",
        ReplicaRequest::StoreCertificate { .. } => "store_certificate",
        ReplicaRequest::MarkContested { .. } => "mark_contested",
        ReplicaRequest::StoreMessage { .. } => "store_message",
        ReplicaRequest::Delete { .. } => "delete",
        ReplicaRequest::Relinquish { .. } => "relinquish",
        ReplicaRequest::Resolve { .. } => "resolve",
        ReplicaRequest::GetGenesis { .. } => "get_genesis",
        ReplicaRequest::Open { .. } => "open",
        ReplicaRequest::Read { .. } => "read",
        ReplicaRequest::Fetch { .. } => "fetch",
        ReplicaRequest::Status { .. } => "status",
        ReplicaRequest::Digest { .. } => "digest",
        ReplicaRequest::GetMessages { .. } => "get_messages",
        ReplicaRequest::Summaries { .. } => "summaries",
        ReplicaRequest::Handover { .. } => "handover",
        ReplicaRequest::Takeover { .. } => "takeover",
        ReplicaRequest::Takeovers { .. } => "takeovers",
        ReplicaRequest::SignHandover { .. } => "sign_handover",
    }
}

impl Metrics {
    fn bump(&self, protocol: &'static str, op: &'static str, outcome: &'static str) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((protocol, op, outcome)).or_insert(0) += 1;
        }
    }

    /// Counts a client request by operation and outcome.
    pub fn record_client(&self, op: &'static str, response: &ClientResponse) {
        let outcome = match response {
            ClientResponse::Error(e) => e.code.as_str(),
            _ => "ok",
        };
        self.bump("client", op, outcome);
    }

    /// Counts a replica request by operation and outcome.
    pub fn record_replica(&self, op: &'static str, response: &ReplicaResponse) {
        let outcome = match response {
            ReplicaResponse::Error(e) | ReplicaResponse::Refused { error: e, .. } => {
                e.code.as_str()
            }
            _ => "ok",
        };
        self.bump("replica", op, outcome);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store: Option<&StoreStats>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tigress_requests_total Requests handled, by protocol, operation and outcome."
        );
        let _ = writeln!(out, "# TYPE tigress_requests_total counter");
        if let Ok(map) = self.requests.lock() {
            for ((protocol, op, outcome), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "tigress_requests_total{{protocol=\"{protocol}\",op=\"{op}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "tigress_requests_refused_total",
            "Requests refused before handling (rate limit or shutdown).",
            "counter",
            self.refused.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_absent_hits_total",
            "Searches for a mailbox answered from the memory of addresses found absent.",
            "counter",
            self.absent_hits.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_admission_refused_total",
            "Creates refused for want of proof of work.",
            "counter",
            self.admission_refused.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_peers",
            "Connected peers.",
            "gauge",
            self.peers.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_reachable",
            "1 when other nodes can dial this one (it serves as a replica), else 0.",
            "gauge",
            u64::from(self.reachable.load(Ordering::Relaxed)),
        );
        gauge(
            &mut out,
            "tigress_routing_table_peers",
            "Peers in the Kademlia routing table.",
            "gauge",
            self.routing_table.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_long_polls_waiting",
            "Fetches waiting for a message.",
            "gauge",
            self.long_polls.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_anti_entropy_rounds_total",
            "Anti-entropy rounds completed.",
            "counter",
            self.anti_entropy_rounds.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_anti_entropy_repaired_total",
            "Records anti-entropy copied between replicas.",
            "counter",
            self.anti_entropy_repaired.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_replica_lookups_total",
            "Lookups run to find a replica this node had no address for.",
            "counter",
            self.replica_lookups.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "tigress_replica_lookups_spared_total",
            "Replicas without an address not looked up (recently not found, lookups busy, or a relayed request).",
            "counter",
            self.replica_lookups_spared.load(Ordering::Relaxed),
        );
        if let Some(s) = store {
            gauge(
                &mut out,
                "tigress_mailboxes_stored",
                "Mailboxes stored, tombstones included.",
                "gauge",
                s.mailboxes.load(Ordering::Relaxed),
            );
            gauge(
                &mut out,
                "tigress_messages_stored",
                "Messages stored.",
                "gauge",
                s.messages.load(Ordering::Relaxed),
            );
            gauge(
                &mut out,
                "tigress_records_stored",
                "Records stored (mailboxes and messages).",
                "gauge",
                s.mailboxes.load(Ordering::Relaxed) + s.messages.load(Ordering::Relaxed),
            );
            gauge(
                &mut out,
                "tigress_bytes_stored",
                "Bytes stored.",
                "gauge",
                s.bytes.load(Ordering::Relaxed),
            );
            gauge(
                &mut out,
                "tigress_sweep_runs_total",
                "Sweeps of expired mailboxes run.",
                "counter",
                s.sweeps.load(Ordering::Relaxed),
            );
            let (run, remembered) = tigress_protocol::crypto::sign::verification_counts();
            gauge(
                &mut out,
                "tigress_signature_verifications_total",
                "Ed25519 verifications run by this process.",
                "counter",
                run,
            );
            gauge(
                &mut out,
                "tigress_signatures_remembered_total",
                "Signature checks answered from the memory of signatures already verified.",
                "counter",
                remembered,
            );
            gauge(
                &mut out,
                "tigress_summaries_decoded_total",
                "Mailbox states decoded to answer anti-entropy summaries (the rest came from the cache).",
                "counter",
                s.summaries_decoded.load(Ordering::Relaxed),
            );
        }
        out
    }
}

//! Takeovers through the replica protocol, as peers send them: a handover signed only at the
//! node's own request, forged or misplaced handovers refused with the state unchanged, a
//! takeover that completes at a claim quorum, and a standby that creates a mailbox only
//! when the chain makes it a holder.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tigress_protocol::crypto::{PublicKey, SigningKey};
use tigress_protocol::mailbox::{Limits, MailboxState, MessageKey};
use tigress_protocol::record::{Genesis, Message};
use tigress_protocol::replica::{self, Storage};
use tigress_protocol::rpc::{RemoteError, ReplicaRequest, ReplicaResponse};
use tigress_protocol::session::{SenderSession, ShareIdentity, ShareOptions};
use tigress_protocol::takeover::{Handover, Pledge, Takeover};
use tigress_protocol::wire::BoundedVec;
use tigress_protocol::{Address, ErrorCode};

const NOW: u64 = 1_800_000_000;

#[derive(Default)]
struct Memory {
    states: BTreeMap<Address, MailboxState>,
}

impl Storage for Memory {
    fn load(&self, address: &Address) -> Result<Option<MailboxState>, RemoteError> {
        Ok(self.states.get(address).cloned())
    }
    fn save(&mut self, state: &MailboxState) -> Result<(), RemoteError> {
        self.states.insert(state.address(), state.clone());
        Ok(())
    }
    fn message(&self, _: &Address, _: &MessageKey) -> Result<Option<Message>, RemoteError> {
        Ok(None)
    }
    fn put_message(&mut self, _: &Message) -> Result<(), RemoteError> {
        Ok(())
    }
    fn remove_messages(&mut self, _: &Address) {}
    fn check_quota(&self, _: usize) -> Result<(), RemoteError> {
        Ok(())
    }
}

/// Five replicas and three standbys, each with its own store holding what it should.
struct Net {
    keys: Vec<SigningKey>,
    stores: Vec<Memory>,
    genesis: Genesis,
}

impl Net {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let keys: Vec<SigningKey> = (0..8).map(|_| SigningKey::generate(&mut rng)).collect();
        let public: Vec<PublicKey> = keys.iter().map(SigningKey::public_key).collect();
        let options = ShareOptions {
            standbys: public[5..].to_vec(),
            ..ShareOptions::default()
        };
        let (sender, _) = SenderSession::create(
            ShareIdentity::random(&mut rng),
            "https://relay.example",
            public[..5].to_vec(),
            b"payload",
            &options,
            NOW,
            &mut rng,
        )
        .unwrap();
        let genesis = sender.genesis().clone();
        let mut net = Self {
            stores: (0..8).map(|_| Memory::default()).collect(),
            keys,
            genesis,
        };
        for i in 0..5 {
            let g = net.genesis.clone();
            assert!(matches!(
                net.apply(i, None, ReplicaRequest::StoreGenesis { genesis: g }),
                ReplicaResponse::Stored { .. }
            ));
        }
        net
    }

    fn key(&self, i: usize) -> PublicKey {
        self.keys[i].public_key()
    }

    /// Node `i` answers `request` from the node `from` (a key index).
    fn apply(&mut self, i: usize, from: Option<usize>, request: ReplicaRequest) -> ReplicaResponse {
        let from = from.map(|f| self.key(f));
        replica::apply(
            &mut self.stores[i],
            &self.keys[i],
            &Limits::default(),
            from.as_ref(),
            request,
            NOW,
        )
        .response
    }

    fn state(&self, i: usize) -> Option<&MailboxState> {
        self.stores[i].states.get(&self.genesis.header().address)
    }

    /// Node `i` signs its handover retiring node `retiree`, at its own request.
    fn hand_over(&mut self, i: usize, retiree: usize) -> Handover {
        let request = ReplicaRequest::SignHandover {
            address: self.genesis.header().address,
            retiree: self.key(retiree),
        };
        match self.apply(i, Some(i), request) {
            ReplicaResponse::HandedOver { handover, .. } => handover,
            other => panic!("node {i} did not hand over: {other:?}"),
        }
    }
}

fn refused(response: &ReplicaResponse, code: ErrorCode) -> bool {
    matches!(response, ReplicaResponse::Error(e) if e.code == code)
}

#[test]
fn only_the_node_itself_makes_its_replica_sign_a_handover() {
    let mut net = Net::new();
    let request = ReplicaRequest::SignHandover {
        address: net.genesis.header().address,
        retiree: net.key(4),
    };
    // Another holder, a stranger, and no node at all are refused; nothing is signed.
    for from in [Some(1), Some(6), None] {
        let r = net.apply(0, from, request.clone());
        assert!(refused(&r, ErrorCode::Unauthorized), "{from:?}: {r:?}");
        assert_eq!(net.state(0).unwrap().handovers_len(), 0);
    }
    let before = net.state(0).unwrap().clone();
    net.hand_over(0, 4);
    assert_ne!(net.state(0).unwrap(), &before);
    // Asked again, the same handover (to resend), not a second one.
    let again = net.hand_over(0, 4);
    assert_eq!(again, net.hand_over(0, 4));
    assert_eq!(net.state(0).unwrap().handovers_len(), 1);
}

#[test]
fn forged_and_misplaced_handovers_leave_the_state_unchanged() {
    let mut net = Net::new();
    let honest = net.hand_over(1, 4);
    let before = net.state(0).unwrap().clone();
    // A pledge added after signing.
    let mut forged = honest.clone();
    forged.body.pledges = BoundedVec::new(vec![Pledge {
        slot: 0,
        epoch: 0,
        recipient: net.key(7),
    }])
    .unwrap();
    let r = net.apply(0, Some(1), ReplicaRequest::Handover { handover: forged });
    assert!(refused(&r, ErrorCode::Unauthorized), "{r:?}");
    // A standby is no holder yet: its handover counts for nothing.
    let mut outsider = honest.clone();
    outsider.body.signer = net.key(6);
    outsider.signature = net.keys[6].sign(
        tigress_protocol::crypto::SignatureKind::Handover,
        &tigress_protocol::wire::encode(&outsider.body),
    );
    let r = net.apply(0, Some(6), ReplicaRequest::Handover { handover: outsider });
    assert!(refused(&r, ErrorCode::Unauthorized), "{r:?}");
    // Another mailbox's genesis.
    let mut elsewhere = honest.clone();
    elsewhere.body.genesis = [3; 32];
    let r = net.apply(
        0,
        Some(1),
        ReplicaRequest::Handover {
            handover: elsewhere,
        },
    );
    assert!(matches!(r, ReplicaResponse::Error(_)), "{r:?}");
    assert_eq!(net.state(0).unwrap(), &before);
}

#[test]
fn a_quorum_of_handovers_takes_over_and_only_the_next_standby_joins() {
    let mut net = Net::new();
    // Holders 0..4 hand over holder 4 (gone); holder 0 gathers the others'.
    let handovers: Vec<Handover> = (0..4).map(|i| net.hand_over(i, 4)).collect();
    for h in &handovers[1..3] {
        net.apply(
            0,
            None,
            ReplicaRequest::Handover {
                handover: h.clone(),
            },
        );
        assert!(
            net.state(0).unwrap().takeovers().is_empty(),
            "not yet a quorum"
        );
    }
    net.apply(
        0,
        None,
        ReplicaRequest::Handover {
            handover: handovers[3].clone(),
        },
    );
    let chain: Vec<Takeover> = net.state(0).unwrap().takeovers().to_vec();
    assert_eq!(chain.len(), 1, "four of five make the claim quorum");
    assert!(!net.state(0).unwrap().holders().contains(&net.key(4)));
    assert!(net.state(0).unwrap().holders().contains(&net.key(5)));

    let request = ReplicaRequest::Takeover {
        genesis: net.genesis.clone(),
        takeovers: BoundedVec::truncated(chain.clone()),
    };
    // The second standby is not brought in by this chain: it stores nothing.
    let r = net.apply(6, Some(0), request.clone());
    assert!(refused(&r, ErrorCode::Unauthorized), "{r:?}");
    assert!(net.state(6).is_none());
    // The next standby creates the mailbox and holds it.
    assert!(matches!(
        net.apply(5, Some(0), request.clone()),
        ReplicaResponse::Stored {
            duplicate: false,
            ..
        }
    ));
    assert_eq!(
        net.state(5).unwrap().holders(),
        net.state(0).unwrap().holders()
    );
    // A chain cut short, or with a takeover of too few handovers, is refused.
    let mut short = chain[0].clone();
    short.handovers = BoundedVec::truncated(short.handovers.to_vec()[..3].to_vec());
    let r = net.apply(
        1,
        Some(0),
        ReplicaRequest::Takeover {
            genesis: net.genesis.clone(),
            takeovers: BoundedVec::truncated(vec![short]),
        },
    );
    assert!(refused(&r, ErrorCode::Unauthorized), "{r:?}");
    assert!(net.state(1).unwrap().takeovers().is_empty());
}

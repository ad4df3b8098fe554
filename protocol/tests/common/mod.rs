//! A mailbox replicated on several in-memory states, for the rule and transfer tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tigress_protocol::ShareUrl;
use tigress_protocol::crypto::SigningKey;
use tigress_protocol::mailbox::{ClaimTally, Limits, MailboxState, tally_claim};
use tigress_protocol::record::{ClaimCertificate, Receipt};
use tigress_protocol::session::{RecipientSession, SenderSession, ShareOptions};

pub(crate) const NOW: u64 = 1_800_000_000;

pub(crate) struct Fixture {
    pub(crate) rng: ChaCha20Rng,
    pub(crate) limits: Limits,
    pub(crate) replicas: Vec<SigningKey>,
    pub(crate) states: Vec<MailboxState>,
    pub(crate) sender: SenderSession,
    pub(crate) url: ShareUrl,
}

impl Fixture {
    pub(crate) fn new(replicas: usize, options: ShareOptions) -> Self {
        Self::with_payload(replicas, options, b"first payload: the car key")
    }

    pub(crate) fn with_payload(replicas: usize, options: ShareOptions, payload: &[u8]) -> Self {
        let mut rng = ChaCha20Rng::from_seed([42; 32]);
        let limits = Limits::default();
        let replicas: Vec<SigningKey> = (0..replicas)
            .map(|_| SigningKey::generate(&mut rng))
            .collect();
        let (sender, url) = SenderSession::create(
            tigress_protocol::session::ShareIdentity::random(&mut rng),
            "https://relay.example",
            replicas.iter().map(SigningKey::public_key).collect(),
            payload,
            &options,
            NOW,
            &mut rng,
        )
        .unwrap();
        let states = replicas
            .iter()
            .map(|_| MailboxState::create(sender.genesis().clone(), &limits, NOW).unwrap())
            .collect();
        Self {
            rng,
            limits,
            replicas,
            states,
            sender,
            url,
        }
    }

    /// A recipient that opened the invitation (not yet claimed).
    pub(crate) fn recipient(&mut self) -> RecipientSession {
        let url = ShareUrl::parse(&self.url.expose_url()).unwrap();
        let genesis = self.states[0].genesis().clone();
        RecipientSession::open(&url, genesis, &self.limits, NOW, &mut self.rng)
            .unwrap()
            .0
    }

    /// Asks every replica in `which` to grant the recipient's claim; returns the receipts.
    pub(crate) fn grant_on(&mut self, r: &RecipientSession, which: &[usize]) -> Vec<Receipt> {
        which
            .iter()
            .filter_map(|&i| {
                self.states[i]
                    .grant(r.claim(), &self.replicas[i], &self.limits, NOW)
                    .ok()
                    .map(|(receipt, _)| receipt)
            })
            .collect()
    }

    /// Claims on every replica, certifies, stores the certificate everywhere and tells both
    /// parties.
    pub(crate) fn certify(&mut self, r: &mut RecipientSession) -> ClaimCertificate {
        let all: Vec<usize> = (0..self.states.len()).collect();
        let receipts = self.grant_on(r, &all);
        let ClaimTally::Certified(cert) = tally_claim(self.sender.genesis(), r.claim(), &receipts)
        else {
            panic!("an uncontested claim must be certified");
        };
        for state in &mut self.states {
            state.accept_certificate(&cert, &self.limits, NOW).unwrap();
        }
        r.accept_certificate((*cert).clone(), &self.limits, NOW)
            .unwrap();
        self.sender
            .add_certificate(&cert, &self.limits, NOW)
            .unwrap();
        *cert
    }
}

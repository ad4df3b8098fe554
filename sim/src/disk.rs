//! A simulated replica's storage: the protocol's [`Storage`] over memory, with an undo
//! log of everything written since the last flush, so a crash loses exactly what was not
//! flushed.

use std::collections::BTreeMap;

use tigress_protocol::Address;
use tigress_protocol::mailbox::{MailboxState, MessageKey};
use tigress_protocol::record::Message;
use tigress_protocol::replica::Storage;
use tigress_protocol::rpc::RemoteError;

enum Undo {
    State(Address, Option<Box<MailboxState>>),
    Message((Address, MessageKey), Option<Box<Message>>),
}

/// Memory that forgets unflushed writes on a crash.
#[derive(Default)]
pub(crate) struct Disk {
    states: BTreeMap<Address, MailboxState>,
    messages: BTreeMap<(Address, MessageKey), Message>,
    undo: Vec<Undo>,
}

impl Disk {
    /// Makes every write so far durable.
    pub(crate) fn flush(&mut self) {
        self.undo.clear();
    }

    /// Forgets every write since the last flush.
    pub(crate) fn crash(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::State(a, Some(s)) => {
                    self.states.insert(a, *s);
                }
                Undo::State(a, None) => {
                    self.states.remove(&a);
                }
                Undo::Message(k, Some(m)) => {
                    self.messages.insert(k, *m);
                }
                Undo::Message(k, None) => {
                    self.messages.remove(&k);
                }
            }
        }
    }

    /// The state held for `address`.
    pub(crate) fn state(&self, address: &Address) -> Option<&MailboxState> {
        self.states.get(address)
    }

    /// Every mailbox held.
    pub(crate) fn states(&self) -> impl Iterator<Item = (&Address, &MailboxState)> {
        self.states.iter()
    }

    /// Whether the message at `key` of `address` is held.
    pub(crate) fn has_message(&self, address: &Address, key: &MessageKey) -> bool {
        self.messages.contains_key(&(*address, *key))
    }
}

impl Storage for Disk {
    fn load(&self, address: &Address) -> Result<Option<MailboxState>, RemoteError> {
        Ok(self.states.get(address).cloned())
    }

    fn save(&mut self, state: &MailboxState) -> Result<(), RemoteError> {
        let address = state.address();
        let old = self.states.insert(address, state.clone());
        self.undo.push(Undo::State(address, old.map(Box::new)));
        Ok(())
    }

    fn message(&self, address: &Address, key: &MessageKey) -> Result<Option<Message>, RemoteError> {
        Ok(self.messages.get(&(*address, *key)).cloned())
    }

    fn put_message(&mut self, message: &Message) -> Result<(), RemoteError> {
        let h = message.header();
        let k = (h.address, (h.from, h.to, h.seq));
        let old = self.messages.insert(k, message.clone());
        self.undo.push(Undo::Message(k, old.map(Box::new)));
        Ok(())
    }

    fn remove_messages(&mut self, address: &Address) {
        let keys: Vec<(Address, MessageKey)> = self
            .messages
            .range((*address, min_key())..)
            .take_while(|((a, _), _)| a == address)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let old = self.messages.remove(&k);
            self.undo.push(Undo::Message(k, old.map(Box::new)));
        }
    }

    fn check_quota(&self, _extra: usize) -> Result<(), RemoteError> {
        Ok(())
    }
}

fn min_key() -> MessageKey {
    use tigress_protocol::crypto::PublicKey;
    (PublicKey([0; 32]), PublicKey([0; 32]), 0)
}

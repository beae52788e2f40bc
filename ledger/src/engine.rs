//! The in-memory ledger: state plus idempotency keys, with all-or-nothing groups of events.

use crate::keyed::{HashMap, HashSet};

use crate::error::LedgerError;
use crate::event::LedgerEvent;
use crate::ids::IdemKey;
use crate::invariants;
use crate::state::{Change, LedgerState, Undo};

/// What appending one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        seq: u64,
    },
    /// The key was seen before: nothing changed; `seq` is the first event's.
    Duplicate {
        seq: u64,
    },
}

impl AppendOutcome {
    pub fn seq(self) -> u64 {
        match self {
            AppendOutcome::Appended { seq } | AppendOutcome::Duplicate { seq } => seq,
        }
    }
}

/// A group applied to memory but not yet made durable; `Ledger::rollback` undoes it.
#[derive(Debug, Default)]
pub struct Prepared {
    pub outcomes: Vec<AppendOutcome>,
    /// The events actually appended (duplicates excluded), with their changes, in order.
    pub appended: Vec<(u64, Change)>,
    undos: Vec<Undo>,
    keys: Vec<IdemKey>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    state: LedgerState,
    keys: HashMap<IdemKey, u64>,
    next_seq: u64,
}

impl Ledger {
    pub fn new() -> Self {
        Ledger {
            next_seq: 1,
            ..Ledger::default()
        }
    }

    /// A ledger whose state is a snapshot taken after event `next_seq - 1`. It knows no
    /// idempotency key: the store looks keys up on disk.
    pub fn resume(state: LedgerState, next_seq: u64) -> Self {
        Ledger {
            state,
            keys: HashMap::default(),
            next_seq,
        }
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut LedgerState {
        &mut self.state
    }

    /// A key found on disk, so that the next group treats it as a duplicate.
    pub fn note_key(&mut self, key: IdemKey, seq: u64) {
        self.keys.insert(key, seq);
    }

    /// Forget the keys and payment references seen so far (a store keeping open work only, once
    /// everything is on disk: it looks them up there).
    pub fn forget_history(&mut self) {
        self.keys = HashMap::default();
        self.state.forget_payment_refs();
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn seq_of_key(&self, key: &IdemKey) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// Apply a group all or nothing. Duplicated keys are no-ops returning the first outcome.
    pub fn prepare(&mut self, events: &[LedgerEvent]) -> Result<Prepared, LedgerError> {
        let mut prepared = Prepared::default();
        let mut seen = HashSet::with_capacity_and_hasher(events.len(), Default::default());
        for (index, event) in events.iter().enumerate() {
            if !seen.insert(&event.key) {
                self.rollback(prepared);
                return Err(LedgerError::KeyRepeatedInGroup(event.key.clone()));
            }
            if let Some(&seq) = self.keys.get(&event.key) {
                prepared.outcomes.push(AppendOutcome::Duplicate { seq });
                continue;
            }
            let seq = self.next_seq;
            let change = match self.state.plan(seq, event) {
                Ok(change) => change,
                Err(source) => {
                    self.rollback(prepared);
                    return Err(LedgerError::Refused {
                        index,
                        key: event.key.clone(),
                        source,
                    });
                }
            };
            let undo = self.state.commit(seq, &change, true);
            if cfg!(debug_assertions) {
                if let Err(why) = invariants::check_change(&self.state, &change) {
                    panic!("invariant broken by event {seq} ({}): {why}", event.key);
                }
            }
            self.keys.insert(event.key.clone(), seq);
            self.next_seq += 1;
            prepared.undos.push(undo);
            prepared.keys.push(event.key.clone());
            prepared.outcomes.push(AppendOutcome::Appended { seq });
            prepared.appended.push((seq, change));
        }
        Ok(prepared)
    }

    /// Undo a prepared group (e.g. when writing it to disk failed).
    pub fn rollback(&mut self, prepared: Prepared) {
        for undo in prepared.undos.into_iter().rev() {
            self.state.rollback(undo);
            self.next_seq -= 1;
        }
        for key in prepared.keys {
            self.keys.remove(&key);
        }
    }

    /// Apply one event without keeping an undo record (replay and verify). Returns the change,
    /// or `None` for a duplicate key.
    pub fn apply(&mut self, event: &LedgerEvent) -> Result<Option<(u64, Change)>, LedgerError> {
        if self.keys.contains_key(&event.key) {
            return Ok(None);
        }
        let seq = self.next_seq;
        let change = self
            .state
            .plan(seq, event)
            .map_err(|source| LedgerError::Refused {
                index: 0,
                key: event.key.clone(),
                source,
            })?;
        self.state.commit(seq, &change, false);
        self.keys.insert(event.key.clone(), seq);
        self.next_seq += 1;
        Ok(Some((seq, change)))
    }

    /// Append one event (a group of one).
    pub fn append(&mut self, event: &LedgerEvent) -> Result<AppendOutcome, LedgerError> {
        let prepared = self.prepare(std::slice::from_ref(event))?;
        Ok(prepared.outcomes[0])
    }
}

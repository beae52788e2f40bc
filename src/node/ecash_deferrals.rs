//! Ecash the Cashu rail cannot decide yet, and when to look at it again: a NutZap or a request
//! token whose mint could not be asked for its keysets, whose job is not recorded yet, or whose
//! pending row could not be written (seconds, doubling). A token whose job is not quoted yet is
//! not deferred: it is swapped at once and only its credit waits for the quote
//! (`ecash_attempts`).
//!
//! The rail keeps each deferred event in the pending store too (`PendingRows::keep_deferred`),
//! so a restart or a standby taking over decides it without the relays offering it again.

use std::time::Duration;

use nostr_sdk::prelude::{Event, EventId};

/// First wait before a look again; doubles per try (at most 2^8 times: 256 s).
const FIRST: Duration = Duration::from_secs(1);
/// Events deferred at most: past this a new one is not kept (logged), so a flood of NutZaps
/// naming a trusted mint that is down cannot grow memory and the store without bound.
pub(super) const MAX_WAITING: usize = 10_000;

/// How long to wait before try `tries + 1` (after `tries` tries).
fn delay(tries: u32) -> Duration {
    FIRST.saturating_mul(1 << tries.min(8))
}

/// One deferred event: looked at again at `at` (unix ms), after `tries` tries; first put off
/// at `first` (unix ms).
pub(super) struct Deferred {
    pub event: Box<Event>,
    pub at: u64,
    pub tries: u32,
    pub first: u64,
}

impl Deferred {
    /// Waited `wait_ms` or longer by `now`. A request's tokens are then given up (the customer
    /// is told; never swapped, they stay the customer's). A NutZap is never given up: its
    /// proofs are locked to our key, so no one but us can redeem them.
    pub(super) fn waited(&self, now: u64, wait_ms: u64) -> bool {
        now.saturating_sub(self.first) >= wait_ms
    }
}

/// The deferred events, one entry per event, in no order.
#[derive(Default)]
pub(super) struct Deferrals {
    waiting: Vec<Deferred>,
}

/// [`Deferrals::push`] found [`MAX_WAITING`] events deferred already.
#[derive(Debug)]
pub(super) struct Full;

impl Deferrals {
    /// Defers `event` (tried `tries` times so far, first put off at `first`) from `now` (unix
    /// ms). An event deferred already is rescheduled, keeping the larger count of tries and the
    /// earlier first time.
    pub(super) fn push(
        &mut self,
        event: Box<Event>,
        now: u64,
        (tries, first): (u32, u64),
    ) -> Result<&Deferred, Full> {
        let (tries, first) = match self.remove(&event.id) {
            Some(d) => (d.tries.max(tries), d.first.min(first)),
            None => (tries, first),
        };
        let delay = delay(tries).as_millis() as u64;
        self.restore(Deferred {
            event,
            at: now.saturating_add(delay),
            tries: tries + 1,
            first,
        })
    }

    /// Adds an event as it was kept (read back from the store at start).
    pub(super) fn restore(&mut self, deferred: Deferred) -> Result<&Deferred, Full> {
        if self.waiting.len() >= MAX_WAITING {
            return Err(Full);
        }
        self.waiting.push(deferred);
        Ok(self.waiting.last().expect("just pushed"))
    }

    /// Takes `id` out if it waits here.
    pub(super) fn remove(&mut self, id: &EventId) -> Option<Deferred> {
        let at = self.waiting.iter().position(|d| d.event.id == *id)?;
        Some(self.waiting.swap_remove(at))
    }

    /// Removes and returns the events due at `now`.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<Deferred> {
        let (due, wait) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|d| d.at <= now);
        self.waiting = wait;
        due
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// When the next event is due (unix ms), if one waits.
    pub(super) fn next_at(&self) -> Option<u64> {
        self.waiting.iter().map(|d| d.at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mint_is_waited_for_in_doubling_seconds_up_to_256() {
        let waits: Vec<u64> = (0..10).map(|t| delay(t).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
        assert_eq!(delay(20), FIRST * 256);
    }

    #[test]
    fn only_what_is_due_is_taken_and_the_next_due_time_is_the_earliest() {
        let event = || {
            let keys = nostr_sdk::prelude::Keys::generate();
            Box::new(
                nostr_sdk::prelude::EventBuilder::text_note("x")
                    .sign_with_keys(&keys)
                    .unwrap(),
            )
        };
        let mut d = Deferrals::default();
        assert_eq!(d.next_at(), None);
        d.push(event(), 1_000, (0, 1_000)).unwrap();
        d.push(event(), 1_000, (1, 1_000)).unwrap();
        assert_eq!(d.next_at(), Some(2_000));
        let due = d.take_due(2_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].tries, 1);
        assert_eq!(d.next_at(), Some(3_000));
        assert!(d.take_due(2_999).is_empty());
        assert_eq!(d.take_due(3_000).len(), 1);
        assert_eq!(d.next_at(), None);
    }

    #[test]
    fn an_event_has_waited_once_the_wait_since_it_was_first_put_off_has_passed() {
        let keys = nostr_sdk::prelude::Keys::generate();
        let note = nostr_sdk::prelude::EventBuilder::text_note("x")
            .sign_with_keys(&keys)
            .unwrap();
        let mut d = Deferrals::default();
        d.push(Box::new(note.clone()), 5_000, (0, 1_000)).unwrap();
        // Seen again (as new) while it waits: the first time stays.
        d.push(Box::new(note), 9_000, (0, 9_000)).unwrap();
        let due = d.take_due(u64::MAX);
        assert!(!due[0].waited(1_999, 1_000));
        assert!(due[0].waited(2_000, 1_000));
    }

    #[test]
    fn an_event_deferred_again_has_one_entry_with_its_larger_tries_and_the_count_is_bounded() {
        let keys = nostr_sdk::prelude::Keys::generate();
        let note = |text: &str| {
            Box::new(
                nostr_sdk::prelude::EventBuilder::text_note(text)
                    .sign_with_keys(&keys)
                    .unwrap(),
            )
        };
        let mut d = Deferrals::default();
        let first = note("a");
        let id = first.id;
        d.push(first.clone(), 0, (5, 10)).unwrap();
        // Seen again on the relay (tries 0) while it waits: still one entry, tries kept.
        d.push(first, 0, (0, 20)).unwrap();
        let due = d.take_due(u64::MAX);
        assert_eq!(due.len(), 1);
        // Each look counts as a try: 5 before, this one, the one seen again.
        assert_eq!((due[0].tries, due[0].first), (7, 10));
        assert!(d.remove(&id).is_none(), "taken out when due");
        for i in 0..MAX_WAITING {
            d.push(note(&i.to_string()), 0, (0, 0)).unwrap();
        }
        assert!(d.push(note("one too many"), 0, (0, 0)).is_err());
    }
}

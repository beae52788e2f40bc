//! Ecash the Cashu rail cannot decide yet, and when to look at it again: a NutZap or a request
//! token whose mint could not be asked for its keysets, or whose pending row could not be
//! written (seconds, doubling). A token whose job is not quoted yet is not deferred: it is
//! swapped at once and only its credit waits for the quote (`ecash_attempts`).

use std::time::Duration;

use nostr_sdk::prelude::Event;

/// First wait before a look again; doubles per try (at most 2^8 times).
const FIRST: Duration = Duration::from_secs(1);
/// Tries before the event is given up in this run (a restart sees it again on the relay): about
/// 21 minutes in all.
const MAX_TRIES: u32 = 12;

/// How long to wait before try `tries + 1` (after `tries` tries).
fn delay(tries: u32) -> Duration {
    FIRST.saturating_mul(1 << tries.min(8))
}

/// One deferred event: looked at again at `at` (unix ms), after `tries` tries.
pub(super) struct Deferred {
    pub event: Box<Event>,
    pub at: u64,
    pub tries: u32,
}

impl Deferred {
    /// Tried too often: given up in this run.
    pub(super) fn exhausted(&self) -> bool {
        self.tries > MAX_TRIES
    }
}

/// The deferred events, in no order.
#[derive(Default)]
pub(super) struct Deferrals {
    waiting: Vec<Deferred>,
}

impl Deferrals {
    /// Defers `event` (tried `tries` times so far) from `now` (unix ms).
    pub(super) fn push(&mut self, event: Box<Event>, now: u64, tries: u32) {
        let delay = delay(tries).as_millis() as u64;
        self.waiting.push(Deferred {
            event,
            at: now.saturating_add(delay),
            tries: tries + 1,
        });
    }

    /// Removes and returns the events due at `now`.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<Deferred> {
        let (due, wait) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|d| d.at <= now);
        self.waiting = wait;
        due
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
    fn a_mint_is_waited_for_in_doubling_seconds_about_21_minutes_in_all() {
        let waits: Vec<u64> = (0..10).map(|t| delay(t).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
        let all: Duration = (0..MAX_TRIES).map(delay).sum();
        assert_eq!(all, Duration::from_secs(1_279));
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
        d.push(event(), 1_000, 0);
        d.push(event(), 1_000, 1);
        assert_eq!(d.next_at(), Some(2_000));
        let due = d.take_due(2_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].tries, 1);
        assert!(!due[0].exhausted());
        assert_eq!(d.next_at(), Some(3_000));
        assert!(d.take_due(2_999).is_empty());
        assert_eq!(d.take_due(3_000).len(), 1);
        assert_eq!(d.next_at(), None);
    }

    #[test]
    fn an_event_tried_past_the_limit_is_given_up() {
        let keys = nostr_sdk::prelude::Keys::generate();
        let note = nostr_sdk::prelude::EventBuilder::text_note("x")
            .sign_with_keys(&keys)
            .unwrap();
        let mut d = Deferrals::default();
        d.push(Box::new(note.clone()), 0, MAX_TRIES - 1);
        d.push(Box::new(note), 0, MAX_TRIES);
        let due = d.take_due(u64::MAX);
        let given_up: Vec<bool> = due.iter().map(Deferred::exhausted).collect();
        assert_eq!(given_up, [false, true]);
    }
}

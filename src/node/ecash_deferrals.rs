//! Ecash the Cashu rail cannot decide yet, and when to look at it again: a NutZap or a token
//! whose mint could not be asked for its keysets (seconds, doubling), or a request whose token
//! waits for the job's quote. The core tells the rail when that quote is written
//! (`Command::WhenQuoted`); the timer here (milliseconds at first: the quote is usually being
//! written while the rail looks) is the fallback for a tell that was dropped.

use std::time::Duration;

use nostr_sdk::prelude::{Event, EventId};

/// What a deferred event waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Its mint's keysets (the mint unreachable), or a pending store that could not be written.
    Mint,
    /// Its job's quote (the job still `received`: its invoice is being made).
    Quote,
}

/// First wait before a look again for [`Wait::Mint`]; doubles per try (at most 2^8 times).
const MINT_FIRST: Duration = Duration::from_secs(1);
/// Tries for [`Wait::Mint`] before the event is given up in this run (a restart sees it again on
/// the relay): about 21 minutes in all.
const MINT_TRIES: u32 = 12;
/// First wait for [`Wait::Quote`]: 5, 10, 20, … ms for [`QUOTE_QUICK_TRIES`] tries (1.3 s in
/// all), then the [`Wait::Mint`] schedule, so a slow Lightning backend still has its minutes.
const QUOTE_FIRST: Duration = Duration::from_millis(5);
const QUOTE_QUICK_TRIES: u32 = 8;

impl Wait {
    /// How long to wait before try `tries + 1` (after `tries` tries).
    pub(super) fn delay(self, tries: u32) -> Duration {
        match self {
            Wait::Quote if tries < QUOTE_QUICK_TRIES => QUOTE_FIRST.saturating_mul(1 << tries),
            Wait::Quote => MINT_FIRST.saturating_mul(1 << (tries - QUOTE_QUICK_TRIES).min(8)),
            Wait::Mint => MINT_FIRST.saturating_mul(1 << tries.min(8)),
        }
    }

    /// Tries after which the event is given up.
    pub(super) fn max_tries(self) -> u32 {
        match self {
            Wait::Quote => MINT_TRIES + QUOTE_QUICK_TRIES,
            Wait::Mint => MINT_TRIES,
        }
    }
}

/// One deferred event: looked at again at `at` (unix ms), after `tries` tries.
pub(super) struct Deferred {
    pub event: Box<Event>,
    pub at: u64,
    pub tries: u32,
    pub wait: Wait,
}

/// The deferred events, in no order.
#[derive(Default)]
pub(super) struct Deferrals {
    waiting: Vec<Deferred>,
}

impl Deferrals {
    /// Defers `event` (tried `tries` times so far) from `now` (unix ms).
    pub(super) fn push(&mut self, event: Box<Event>, now: u64, tries: u32, wait: Wait) {
        let delay = wait.delay(tries).as_millis() as u64;
        self.waiting.push(Deferred {
            event,
            at: now.saturating_add(delay),
            tries: tries + 1,
            wait,
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

    /// Removes and returns what waits for the quote of the job `request` asked for.
    pub(super) fn take_quoted(&mut self, request: &EventId) -> Vec<Deferred> {
        let (quoted, wait) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|d| d.wait == Wait::Quote && d.event.id == *request);
        self.waiting = wait;
        quoted
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
    fn a_quote_is_waited_for_in_milliseconds_first_then_as_long_as_a_mint() {
        let waits: Vec<u128> = (0..10).map(|t| Wait::Quote.delay(t).as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 2000]);
        let quick: Duration = (0..QUOTE_QUICK_TRIES).map(|t| Wait::Quote.delay(t)).sum();
        assert_eq!(quick, Duration::from_millis(1275));
        let slow = |w: Wait, from: u32| (from..w.max_tries()).map(|t| w.delay(t)).sum::<Duration>();
        assert_eq!(slow(Wait::Quote, QUOTE_QUICK_TRIES), slow(Wait::Mint, 0));
        assert_eq!(Wait::Mint.delay(0), MINT_FIRST);
        assert_eq!(Wait::Mint.delay(20), MINT_FIRST * 256);
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
        d.push(event(), 1_000, 0, Wait::Mint);
        d.push(event(), 1_000, 0, Wait::Quote);
        assert_eq!(d.next_at(), Some(1_005));
        let due = d.take_due(1_005);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].tries, due[0].wait), (1, Wait::Quote));
        assert_eq!(d.next_at(), Some(2_000));
        assert!(d.take_due(1_999).is_empty());
        assert_eq!(d.take_due(2_000).len(), 1);
        assert_eq!(d.next_at(), None);
    }

    #[test]
    fn a_quote_takes_only_what_waits_for_that_quote() {
        let keys = nostr_sdk::prelude::Keys::generate();
        let note = |text: &str| {
            Box::new(
                nostr_sdk::prelude::EventBuilder::text_note(text)
                    .sign_with_keys(&keys)
                    .unwrap(),
            )
        };
        let (a, b) = (note("a"), note("b"));
        let (a_id, b_id) = (a.id, b.id);
        let mut d = Deferrals::default();
        d.push(a.clone(), 1_000, 0, Wait::Quote);
        d.push(a, 1_000, 0, Wait::Mint);
        d.push(b, 1_000, 2, Wait::Quote);
        let taken = d.take_quoted(&a_id);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].event.id, taken[0].wait), (a_id, Wait::Quote));
        assert!(d.take_quoted(&a_id).is_empty());
        assert_eq!(d.take_quoted(&b_id)[0].tries, 3);
        assert_eq!(d.next_at(), Some(2_000), "the mint wait stays");
    }
}

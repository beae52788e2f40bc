//! The NutZap rail (NIP-61): kind 9321 events from intake are verified offline
//! ([`paydvm_mints::verify_nutzap`]), recorded as pending, swapped at the mint with our P2PK key,
//! and only then handed to the core as a [`VerifiedPayment`]. A kind 7376 redemption marker is
//! published once the ledger holds the payment.
//!
//! It runs as its own task so a slow or dead mint never blocks the core; the swaps and credits
//! run several at once ([`super::ecash_attempts`]), each row by one attempt at a time. A swap the
//! mint could not finish stays in the pending store and is retried with back-off, also after a
//! restart.
//!
//! Cashu tokens in job requests ([`super::tokens`]) take the same path after their own checks:
//! pending store, swap, then a payment on the `cashu_token` rail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::prelude::{Event, JsonUtil, Keys};
use paydvm_ledger::{JobId, Msat};
use paydvm_mints::{
    DeferredRow, MintRegistry, MintStatus, NutZapEvent, Origin, PendingState, PendingSwap,
    ReceiveKey, Recipient, Redeemer, Reject, TrustedMint, VerifiedNutZap, NUTZAP_KIND,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::core::Command;
use super::ecash_attempts::{Attempter, Attempts, Ended, Finished};
use super::ecash_deferrals::{Deferrals, Deferred, Full, MAX_WAITING};
use super::held_credits::HeldCredits;
use super::now_ms;
use super::pending_store::PendingStore;
use super::telemetry::Telemetry;
use crate::config::{InputFees, PublicTokens};

/// How often pending swaps are looked for (deferred events wake the rail when they are due).
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// What to do with a NutZap after the offline checks.
enum Decision {
    Swap(VerifiedNutZap),
    /// Already credited or already pending.
    Nothing,
    Reject(String),
    /// Not decidable now (mint unreachable for its keysets): check it again later.
    Later(String),
}

enum Checked {
    Reject(String),
    Later(String),
}

/// What the rail has done, for operators and tests. Request tokens count here too (not in
/// `received`); their refusals are keyed by the job id.
#[derive(Debug, Default)]
pub struct NutZapStats {
    ready: AtomicBool,
    received: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) credited: AtomicU64,
    /// Events waiting because their mint could not be asked (or their job was not recorded).
    deferred: AtomicU64,
    /// The latest refusals: (NutZap event id, reason), oldest first, at most [`KEPT_REFUSALS`].
    refusals: Mutex<VecDeque<(String, String)>>,
    /// Each trusted mint and whether its keysets could be fetched.
    mints: Mutex<Vec<(String, MintStatus)>>,
}

/// How many recent refusals [`NutZapStats::refusals`] keeps.
pub const KEPT_REFUSALS: usize = 64;

impl NutZapStats {
    /// The first keyset fetch from every trusted mint was tried (each is up or reported down).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    /// NutZaps already credited or already pending when seen again, and requests seen again
    /// after their tokens were given up: nothing done.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::SeqCst)
    }
    /// Kind 9321 events handed to the rail.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
    /// NutZaps refused (offline checks, already credited, spent or refused at the mint).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::SeqCst)
    }
    /// Swap or credit attempts that must be tried again.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::SeqCst)
    }
    /// NutZaps and token requests deferred now (see `ecash_deferrals`).
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::SeqCst)
    }
    /// NutZaps swapped and booked in the ledger.
    pub fn credited(&self) -> u64 {
        self.credited.load(Ordering::SeqCst)
    }
    /// Each trusted mint and its status as of the last keyset fetch (down is reported, not fatal).
    pub fn mints(&self) -> Vec<(String, MintStatus)> {
        self.mints.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The latest refusals: (NutZap event id, reason), oldest first.
    pub fn refusals(&self) -> Vec<(String, String)> {
        self.refusals
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn refused(&self, id: &str, reason: &str) {
        self.rejected.fetch_add(1, Ordering::SeqCst);
        warn!(nutzap = %id, "ecash refused: {reason}");
        if let Ok(mut r) = self.refusals.lock() {
            if r.len() == KEPT_REFUSALS {
                r.pop_front();
            }
            r.push_back((id.to_owned(), reason.to_owned()));
        }
    }
}

pub struct NutZapRailParts {
    pub identity: Keys,
    /// Request kinds we serve: tokens in requests of other kinds are left alone.
    pub offered: Vec<u16>,
    /// What to do with a token in a clear request tag.
    pub public_tokens: PublicTokens,
    /// Who bears the mint's input fee on our swap.
    pub input_fees: InputFees,
    /// How long a request's tokens wait for their mint before the customer is told.
    pub token_wait: Duration,
    pub p2pk: ReceiveKey,
    pub mints: Vec<TrustedMint>,
    /// The cdk wallet, shared with the ecash-refund desk.
    pub redeemer: Arc<Redeemer>,
    pub pending: Arc<dyn paydvm_mints::PendingRows>,
    pub commands: mpsc::Sender<Command>,
    /// Relay hint for the 7376 `e` tag (our first relay).
    pub relay_hint: String,
    /// Where the count of deferred events is shown (`paydvm_ecash_deferred`).
    pub telemetry: Telemetry,
}

pub struct NutZapRail {
    events: mpsc::Sender<Box<Event>>,
    task: JoinHandle<()>,
    stats: Arc<NutZapStats>,
}

pub(super) struct Worker {
    pub(super) identity: Keys,
    pub(super) offered: Vec<u16>,
    pub(super) public_tokens: PublicTokens,
    pub(super) us: Recipient,
    pub(super) registry: MintRegistry,
    pub(super) pending: PendingStore,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) stats: Arc<NutZapStats>,
    /// Swaps and credits, several at once.
    pub(super) attempter: Attempter,
    pub(super) attempts: Attempts,
    /// NutZaps and requests whose tokens wait for their mint's keysets.
    deferred: Deferrals,
    /// How long a request's tokens may wait there (ms).
    token_wait_ms: u64,
    telemetry: Telemetry,
    /// Swapped request tokens whose credit waits for their job's quote.
    held: HeldCredits,
    /// Where the core tells which jobs were quoted (`Command::WhenQuoted`).
    quoted: mpsc::Sender<JobId>,
}

impl NutZapRail {
    /// Opens the pending store, then runs the rail: keysets are fetched in the
    /// background (a mint that is down is logged, not fatal) and pending swaps are retried.
    pub async fn start(parts: NutZapRailParts) -> anyhow::Result<NutZapRail> {
        let pending = PendingStore::new(parts.pending);
        let stats = Arc::new(NutZapStats::default());
        let (quoted, quoted_rx) = mpsc::channel(super::queues::QUOTED);
        let attempter = Attempter {
            identity: parts.identity.clone(),
            input_fees: parts.input_fees,
            redeemer: parts.redeemer,
            pending: pending.clone(),
            commands: parts.commands.clone(),
            relay_hint: parts.relay_hint,
            stats: Arc::clone(&stats),
        };
        let worker = Worker {
            us: Recipient {
                identity: parts.identity.public_key().to_hex(),
                p2pk: parts.p2pk.xonly_hex(),
            },
            identity: parts.identity,
            offered: parts.offered,
            public_tokens: parts.public_tokens,
            registry: MintRegistry::new(parts.mints),
            pending,
            commands: parts.commands,
            stats: Arc::clone(&stats),
            attempter,
            attempts: Attempts::default(),
            deferred: Deferrals::default(),
            token_wait_ms: u64::try_from(parts.token_wait.as_millis()).unwrap_or(u64::MAX),
            telemetry: parts.telemetry,
            held: HeldCredits::default(),
            quoted,
        };
        let (events, rx) = mpsc::channel(super::queues::NUTZAPS);
        let task = tokio::spawn(worker.run(rx, quoted_rx));
        Ok(NutZapRail {
            events,
            task,
            stats,
        })
    }

    /// Where intake sends kind 9321 events, and job requests that may carry tokens.
    pub fn sender(&self) -> mpsc::Sender<Box<Event>> {
        self.events.clone()
    }

    pub fn stats(&self) -> Arc<NutZapStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the task; anything not credited stays in the pending store for the next start.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Box<Event>>, mut quoted: mpsc::Receiver<JobId>) {
        self.restore_deferred().await;
        self.registry.refresh_all().await;
        self.report_mints();
        self.stats.ready.store(true, Ordering::SeqCst);
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = self.attempts.has_room();
            tokio::select! {
                event = rx.recv(), if room => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                done = self.attempts.next_finished() => self.on_finished(done).await,
                _ = retry.tick() => self.retry_due().await,
                _ = wake_at(self.deferred.next_at()), if room => self.deferred_due().await,
                Some(job) = quoted.recv(), if room => self.quoted(job).await,
            }
        }
    }

    /// An attempt ended: a request whose token the mint refused is told why; a token swapped
    /// before its job was quoted waits for the quote.
    async fn on_finished(&mut self, done: Finished) {
        match done.ended {
            Ended::Done => {}
            Ended::Refused(reason) => {
                if let Some(tell) = done.tell {
                    let reason = format!("cashu token not redeemed: {reason}");
                    self.tell(&tell.request, &tell.job, reason).await;
                }
            }
            Ended::Held(job, row) => {
                debug!(%job, "token swapped; its credit waits for the quote");
                if self.held.hold(job.clone(), *row, now_ms()) {
                    // Answered at once if the quote was written since the attempt asked.
                    self.when_quoted(job);
                }
            }
        }
    }

    async fn on_event(&mut self, event: Box<Event>) {
        if event.kind.as_u16() == NUTZAP_KIND {
            self.stats.received.fetch_add(1, Ordering::SeqCst);
        }
        self.decide(event, (0, now_ms())).await;
    }

    /// `tries`: how often it was put off already (0: never), since `first` (unix ms). An event
    /// that cannot be decided yet is deferred; one decided now leaves the deferrals (and the
    /// store) if it waited there.
    async fn decide(&mut self, event: Box<Event>, (tries, first): (u32, u64)) {
        let later = match event.kind.as_u16() == NUTZAP_KIND {
            true => self.decide_nutzap(&event).await,
            false => self.take_request_tokens(&event).await,
        };
        match later {
            Some(reason) => self.defer(event, (tries, first), &reason).await,
            None if tries > 0 || self.deferred.remove(&event.id).is_some() => {
                self.forget_deferred(&event).await
            }
            None => {}
        }
    }

    /// Shows how many events wait (the stats, `paydvm_ecash_deferred`); called where the
    /// deferrals change, not for every event the rail decides.
    fn count_deferred(&self) {
        let waiting = self.deferred.len();
        self.stats.deferred.store(waiting as u64, Ordering::SeqCst);
        self.telemetry.ecash_deferred(waiting);
    }

    /// A NutZap: swapped, refused or a duplicate; Some(reason) when it cannot be decided yet.
    async fn decide_nutzap(&mut self, event: &Event) -> Option<String> {
        let id = event.id.to_hex();
        match self.accept(event).await {
            Decision::Swap(nutzap) => {
                let row = PendingSwap {
                    nutzap,
                    state: PendingState::Verified,
                    attempts: 0,
                    next_try_ms: 0,
                };
                self.attempts.start(&self.attempter, row, None);
            }
            Decision::Nothing => self.stats.duplicate(),
            Decision::Reject(reason) => self.stats.refused(&id, &reason),
            Decision::Later(reason) => return Some(reason),
        }
        None
    }

    /// Looks at `event` again later: its mint could not be asked, its job is not recorded yet,
    /// or its pending row could not be written. Kept in the pending store too, so a restart
    /// does not depend on the relays offering it again.
    async fn defer(&mut self, event: Box<Event>, tried: (u32, u64), reason: &str) {
        self.stats.retried.fetch_add(1, Ordering::SeqCst);
        let id = event.id;
        let row = match self.deferred.push(event, now_ms(), tried) {
            Ok(d) => DeferredRow {
                event_id: id.to_hex(),
                event: d.event.as_json(),
                tries: d.tries,
                next_try_ms: d.at,
                first_ms: d.first,
            },
            Err(Full) => {
                return warn!(
                    event = %id,
                    "ecash not checked yet: {reason}; {MAX_WAITING} events wait already, so this \
                     one is not kept (the relays may offer it again after a restart)"
                )
            }
        };
        warn!(event = %id, "ecash not checked yet: {reason}; will retry");
        self.count_deferred();
        if let Err(e) = self.pending.keep_deferred(row).await {
            warn!(event = %id, "the deferred event is kept in memory only: {e}");
        }
    }

    /// An event that waited is decided or given up: out of the store (already out of memory).
    async fn forget_deferred(&self, event: &Event) {
        self.count_deferred();
        if let Err(e) = self.pending.forget_deferred(&event.id.to_hex()).await {
            warn!(event = %event.id, "a decided event stays in the deferred store: {e}");
        }
    }

    /// A request whose tokens were given up (its customer told): out of the store, and
    /// remembered so that the relays offering it again does not redeem them after all.
    async fn mark_given_up(&self, event: &Event, now: u64) {
        self.count_deferred();
        if let Err(e) = self.pending.give_up_deferred(&event.id.to_hex(), now).await {
            warn!(event = %event.id, "a given-up request is not remembered as given up: {e}");
        }
    }

    /// The events deferred before the last stop (or by the node a standby took over from),
    /// read back at start; each is decided when it is due.
    async fn restore_deferred(&mut self) {
        let rows = match self.pending.deferred().await {
            Ok(rows) => rows,
            Err(e) => return warn!("the deferred ecash events cannot be read: {e}"),
        };
        for row in rows {
            let event = match kept_event(&row) {
                Ok(event) => event,
                Err(why) => {
                    warn!(event = %row.event_id, "a kept deferred event is dropped: {why}");
                    let _ = self.pending.forget_deferred(&row.event_id).await;
                    continue;
                }
            };
            let kept = Deferred {
                event: Box::new(event),
                at: row.next_try_ms,
                tries: row.tries,
                first: row.first_ms,
            };
            if self.deferred.restore(kept).is_err() {
                warn!("{MAX_WAITING} deferred events read back; the rest wait in the store");
                break;
            }
        }
        self.count_deferred();
    }

    /// Asks the core to say when `job` is quoted. Without waiting: a full queue leaves the held
    /// rows to the retry timer.
    fn when_quoted(&self, job: JobId) {
        let tell = self.quoted.clone();
        if let Err(e) = self.commands.try_send(Command::WhenQuoted { job, tell }) {
            debug!("the core's queue is full; a held token waits for the retry timer: {e}");
        }
    }

    /// The core wrote `job`'s quote (or the job left `received` another way): the tokens its
    /// request carried, swapped already, are credited now.
    async fn quoted(&mut self, job: JobId) {
        for row in self.held.take(&job) {
            self.attempts.start(&self.attempter, row, None);
        }
    }

    /// Offline checks, then the ledger's memory of the proofs; records the NutZap as pending.
    async fn accept(&mut self, event: &Event) -> Decision {
        match self.check(event).await {
            Ok(Some(nutzap)) => Decision::Swap(nutzap),
            Ok(None) => Decision::Nothing,
            Err(Checked::Reject(reason)) => Decision::Reject(reason),
            Err(Checked::Later(reason)) => Decision::Later(reason),
        }
    }

    async fn check(&mut self, event: &Event) -> Result<Option<VerifiedNutZap>, Checked> {
        let fields = NutZapFields::of(event);
        let (id, nutzap) = (&fields.id, fields.view());
        let now_secs = now_ms() / 1000;
        let verified =
            match paydvm_mints::verify_nutzap(&nutzap, &self.us, &self.registry, now_secs) {
                // A keyset we have not cached (new keyset, or the mint was down at start): fetch
                // the mint's keysets and check again. A mint we cannot reach is asked again later,
                // not held against the sender.
                Err(Reject::UnknownKeyset { .. }) => {
                    let mint = paydvm_mints::nutzap::parse(&nutzap)
                        .map(|p| p.mint)
                        .unwrap_or_default();
                    if let Err(e) = self.registry.refresh(&mint).await {
                        return Err(Checked::Later(format!("cannot fetch keysets: {e}")));
                    }
                    paydvm_mints::verify_nutzap(&nutzap, &self.us, &self.registry, now_secs)
                }
                other => other,
            }
            .map_err(|e| Checked::Reject(e.to_string()))?;
        let reference = reference(&verified);
        let mut refs = vec![reference.clone()];
        refs.extend(verified.ys.iter().cloned());
        let credited = self.attempter.credited(refs).await;
        if credited.contains(&reference) {
            debug!(nutzap = %id, "NutZap already credited");
            return Ok(None);
        }
        if !credited.is_empty() {
            return Err(Checked::Reject(format!(
                "{} of its proofs were already credited under another payment",
                credited.len()
            )));
        }
        match self.pending.insert(&verified, now_ms()).await {
            Ok(true) => Ok(Some(verified)),
            Ok(false) => {
                debug!(nutzap = %id, "NutZap already pending");
                Ok(None)
            }
            Err(e) => Err(Checked::Later(format!("cannot record it as pending: {e}"))),
        }
    }

    /// Decides again the deferred events that are due; gives up requests that waited
    /// `token_wait` (a NutZap is tried for as long as it takes, see `ecash_deferrals`).
    async fn deferred_due(&mut self) {
        let now = now_ms();
        for d in self.deferred.take_due(now) {
            if d.waited(now, self.token_wait_ms) && d.event.kind.as_u16() != NUTZAP_KIND {
                self.give_up_request(&d.event).await;
                self.mark_given_up(&d.event, now).await;
                continue;
            }
            self.decide(d.event, (d.tries, d.first)).await;
        }
    }

    /// Starts attempts for pending rows that are due (deferred events have their own wake-up in
    /// `run`, taken only while there is room for attempts).
    async fn retry_due(&mut self) {
        let now = now_ms();
        self.held.let_go_stale(now);
        let due = match self.pending.due(now).await {
            Ok(due) => due,
            Err(e) => {
                warn!("pending NutZaps: {e}");
                return;
            }
        };
        // Rows being attempted are due too (a row is due once written): skipped, not doubled.
        // Held rows wait for their quote's tell.
        for row in due {
            if !self.attempts.has_room() {
                break;
            }
            if !self.held.holds(&row.nutzap.event_id) {
                self.attempts.start(&self.attempter, row, None);
            }
        }
    }

    fn report_mints(&self) {
        if let Ok(mut m) = self.stats.mints.lock() {
            *m = self.registry.statuses();
        }
    }
}

/// The payment reference of a NutZap: its event id; of a request token: its id (a hash of its
/// Ys). The proof Ys are the linked references, so the same proofs under another event or
/// in another token are refused too.
pub(super) fn reference(nutzap: &VerifiedNutZap) -> String {
    match nutzap.origin {
        Origin::NutZap => format!("nutzap:{}", nutzap.event_id),
        Origin::RequestToken => nutzap.event_id.clone(),
    }
}

/// The mint's input fee (in the ecash unit) in msat: the unit's msat value is `amount / units`
/// (exact for the units we accept). Never more than the ecash was worth.
pub(super) fn input_fee_msat(ecash: &VerifiedNutZap, fee_units: u64) -> Msat {
    let per_unit = ecash.amount.as_msat().checked_div(ecash.units).unwrap_or(0);
    let fee = per_unit.saturating_mul(fee_units);
    Msat::from_msat(fee.min(ecash.amount.as_msat()))
}

/// The mint a NutZap names, read as the rail reads it (`paydvm_mints::nutzap::parse`): `None`
/// for another kind of event or a NutZap that does not parse.
pub fn nutzap_mint(event: &Event) -> Option<String> {
    if event.kind.as_u16() != NUTZAP_KIND {
        return None;
    }
    let fields = NutZapFields::of(event);
    paydvm_mints::nutzap::parse(&fields.view())
        .ok()
        .map(|p| p.mint)
}

/// An event's id, author and tags as text, for the NutZap parser and checks
/// ([`NutZapEvent`] borrows them).
struct NutZapFields {
    id: String,
    author: String,
    tags: Vec<Vec<String>>,
}

impl NutZapFields {
    fn of(event: &Event) -> NutZapFields {
        NutZapFields {
            id: event.id.to_hex(),
            author: event.pubkey.to_hex(),
            tags: event.tags.iter().map(|t| t.as_slice().to_vec()).collect(),
        }
    }

    fn view(&self) -> NutZapEvent<'_> {
        NutZapEvent {
            id: &self.id,
            author: &self.author,
            tags: &self.tags,
        }
    }
}

/// A kept event read back: it must parse, carry the id it was kept under and verify (the store
/// is ours, but a row that does not check is not worth deciding on).
fn kept_event(row: &DeferredRow) -> Result<Event, String> {
    let event = Event::from_json(&row.event).map_err(|e| format!("not an event: {e}"))?;
    if event.id.to_hex() != row.event_id {
        return Err(format!("kept under another id ({})", event.id));
    }
    event
        .verify()
        .map_err(|e| format!("does not verify: {e}"))?;
    Ok(event)
}

/// Sleeps until `at` (unix ms; at once if it is past), or for ever if nothing is deferred.
async fn wake_at(at: Option<u64>) {
    match at {
        Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
        None => std::future::pending().await,
    }
}

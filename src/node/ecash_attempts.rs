//! Swapping and crediting ecash that passed the offline checks and sits in the pending store:
//! several at once, each in its own task, so one slow swap (a mint round trip, two fsyncs of
//! the pending store, a ledger commit) does not hold up the NutZaps and tokens behind it. With
//! one at a time the rail took at most ~50 NutZaps/s here and its queue grew without bound
//! beyond that (`benchmarks.md`, "Paid jobs under load").
//!
//! Two attempts never run for the same pending row ([`Attempts::start`] refuses a row already
//! running): a row is due for a retry as soon as it is written, and a second swap of the same
//! proofs would find them spent and refuse a payment that the first one is crediting. Each
//! attempt's own steps and their order are unchanged (swap, record it swapped, book the
//! payment, clear the row), so a crash leaves what it left before. Outputs are derived per
//! NutZap (`intake:<id>`), so attempts for different rows share nothing at the mint.
//!
//! A request token's attempt asks the core, before it swaps, to be told when the job is quoted
//! (`Command::WhenQuoted`): the token is usually taken while the quote is still being written,
//! and a payment for a job still `received` would be returned, not applied. So the swap runs
//! beside the quote's write and the credit follows the quote. An attempt keeps its slot for the
//! quote at most [`QUOTE_HOLD`]; then the swapped row is held by the rail
//! ([`super::held_credits`]) until the core tells it, and stays in the pending store as swapped
//! meanwhile (a restart credits it after the job is quoted again).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nostr_sdk::nips::nip44;
use nostr_sdk::prelude::{Event, EventBuilder, Keys, Kind, Tag};
use paydvm_ledger::{Asset, JobId, Msat, Rail};
use paydvm_mints::pending::PendingError;
use paydvm_mints::{Origin, PendingState, PendingSwap, Redeemer, SwapOutcome, VerifiedNutZap};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{self, JoinSet};
use tracing::{info, warn};

use super::core::{Command, VerifiedPayment};
use super::now_ms;
use super::nutzaps::{input_fee_msat, reference, NutZapStats};
use super::pending_store::PendingStore;
use crate::config::InputFees;

/// At most this many attempts run at once; the rail takes no new event while they do.
pub(super) const ATTEMPTS_AT_ONCE: usize = 16;

/// How long an attempt for a request token keeps its slot waiting for the job's quote after the
/// swap (usually milliseconds: the quote is written beside the swap); then the rail holds the
/// swapped row, so a slow Lightning backend does not take the slots of other ecash.
const QUOTE_HOLD: Duration = Duration::from_millis(500);

/// What an attempt needs; cloned into each attempt's task.
#[derive(Clone)]
pub(super) struct Attempter {
    pub identity: Keys,
    pub input_fees: InputFees,
    pub redeemer: Arc<Redeemer>,
    pub pending: PendingStore,
    pub commands: mpsc::Sender<Command>,
    /// Relay hint for the 7376 `e` tag (our first relay).
    pub relay_hint: String,
    pub stats: Arc<NutZapStats>,
}

/// A request whose token an attempt redeems: told under its job if the mint refuses it.
pub(super) struct TellOnRefusal {
    pub request: Box<Event>,
    pub job: String,
}

/// An attempt that ended, and whom to tell if its ecash was refused.
pub(super) struct Finished {
    pub ended: Ended,
    pub tell: Option<TellOnRefusal>,
}

/// How an attempt ended.
pub(super) enum Ended {
    /// Credited, or left pending for a retry.
    Done,
    /// Refused for good: the mint's reason (it never holds a proof secret).
    Refused(String),
    /// A request token swapped before its job was quoted: the row (now swapped) waits for the
    /// quote.
    Held(JobId, Box<PendingSwap>),
}

/// The attempts running (at most [`ATTEMPTS_AT_ONCE`], so a scan is cheap): task → row.
#[derive(Default)]
pub(super) struct Attempts {
    running: HashMap<task::Id, String>,
    tasks: JoinSet<Finished>,
}

impl Attempts {
    pub(super) fn has_room(&self) -> bool {
        self.running.len() < ATTEMPTS_AT_ONCE
    }

    fn is_running(&self, id: &str) -> bool {
        self.running.values().any(|r| r == id)
    }

    /// Starts an attempt for `row`, unless one is running for it (then nothing happens: that
    /// attempt finishes the row).
    pub(super) fn start(
        &mut self,
        attempter: &Attempter,
        row: PendingSwap,
        tell: Option<TellOnRefusal>,
    ) {
        let id = row.nutzap.event_id.clone();
        if self.is_running(&id) {
            return;
        }
        let attempter = attempter.clone();
        let task = self.tasks.spawn(async move {
            let ended = attempter.attempt(row).await;
            Finished { ended, tell }
        });
        self.running.insert(task.id(), id);
    }

    /// The next attempt to end; pending while none runs. Cancel-safe.
    pub(super) async fn next_finished(&mut self) -> Finished {
        loop {
            match self.tasks.join_next_with_id().await {
                None => std::future::pending::<()>().await,
                Some(Ok((task, done))) => {
                    self.running.remove(&task);
                    return done;
                }
                Some(Err(e)) => {
                    // A panicked attempt: its row stays pending and is tried again later.
                    let row = self.running.remove(&e.id()).unwrap_or_default();
                    warn!(nutzap = %row, "an ecash attempt ended abnormally: {e}");
                }
            }
        }
    }
}

impl Attempter {
    /// One step for pending ecash: swap it if not swapped yet, then credit it (a request token
    /// once its job is quoted). A refusal's reason is the mint's answer; it never holds a proof
    /// secret.
    async fn attempt(&self, mut row: PendingSwap) -> Ended {
        let id = row.nutzap.event_id.clone();
        // Asked before the swap, so the answer is usually there when the swap is done.
        let quoted = self.when_quoted(&row.nutzap).await;
        let (received, fee) = match row.state {
            PendingState::Swapped { received, fee } => (received, fee),
            PendingState::Verified => match self.redeemer.swap(&row.nutzap).await {
                SwapOutcome::Swapped { received, fee } => {
                    if let Err(e) = self.pending.mark_swapped(&id, received, fee).await {
                        warn!(nutzap = %id, "swapped, but cannot record it: {e}");
                    }
                    (received, fee)
                }
                SwapOutcome::AlreadySpent => {
                    let reason = "its proofs were already spent at the mint".to_owned();
                    self.drop_row(&id, &reason).await;
                    return Ended::Refused(reason);
                }
                SwapOutcome::Refused { reason } => {
                    let reason = format!("the mint refused the swap: {reason}");
                    self.drop_row(&id, &reason).await;
                    return Ended::Refused(reason);
                }
                SwapOutcome::Retry { reason } => {
                    self.back_off(&id, &format!("swap not done: {reason}"))
                        .await;
                    return Ended::Done;
                }
            },
        };
        if fee > 0 {
            info!(nutzap = %id, fee, unit = %row.nutzap.unit, "mint input fee paid on the swap");
        }
        if let Some((job, told)) = quoted {
            if !is_quoted(told).await {
                row.state = PendingState::Swapped { received, fee };
                return Ended::Held(job, Box::new(row));
            }
        }
        self.credit(&row.nutzap, received, fee).await;
        Ended::Done
    }

    /// For a request token: asks the core to tell when its job is past `received` (at once if
    /// it is). `None` for a NutZap (credited whatever its job's state: the policy decides).
    async fn when_quoted(&self, ecash: &VerifiedNutZap) -> Option<(JobId, mpsc::Receiver<JobId>)> {
        if ecash.origin != Origin::RequestToken {
            return None;
        }
        // A token's target is its request, which the rail checked is our job.
        let job = JobId::new(ecash.target.clone()?).ok()?;
        let (tell, told) = mpsc::channel(1);
        let ask = Command::WhenQuoted {
            job: job.clone(),
            tell,
        };
        // A closed core drops `tell`: then the row is held, never credited unquoted.
        let _ = self.commands.send(ask).await;
        Some((job, told))
    }

    async fn credit(&self, nutzap: &VerifiedNutZap, received: u64, fee: u64) {
        let reference = reference(nutzap);
        let fee = input_fee_msat(nutzap, fee);
        let mut payment = match nutzap.origin {
            Origin::NutZap => VerifiedPayment {
                idem: super::decide::keys::ecash_payment(&reference),
                rail: Rail::NutZap,
                asset: Asset::Mint {
                    url: nutzap.mint.clone(),
                },
                reference: reference.clone(),
                linked: nutzap.ys.clone(),
                amount: nutzap.amount,
                fee,
                evidence: Some(nutzap.event_id.clone()),
                payer: Some(nutzap.sender.clone()),
                names: nutzap.target.clone(),
            },
            Origin::RequestToken => super::tokens::payment(nutzap, fee),
        };
        if self.input_fees == InputFees::Customer {
            // The fee never was ours: only what reached our wallet counts toward the job.
            payment.amount = payment.amount.checked_sub(fee).unwrap_or(Msat::ZERO);
            payment.fee = Msat::ZERO;
        }
        if self
            .commands
            .send(Command::Payment(Box::new(payment)))
            .await
            .is_err()
        {
            return;
        }
        // Commands are handled in order: this answer comes after the payment was booked.
        if self.credited(vec![reference]).await.is_empty() {
            return self
                .back_off(&nutzap.event_id, "the ledger did not book the payment")
                .await;
        }
        if let Err(e) = self.pending.remove(&nutzap.event_id).await {
            warn!(nutzap = %nutzap.event_id, "credited, but cannot clear it from pending: {e}");
        }
        self.stats.credited.fetch_add(1, Ordering::SeqCst);
        info!(nutzap = %nutzap.event_id, amount_msat = nutzap.amount.as_msat(), "ecash credited");
        if nutzap.origin != Origin::NutZap {
            return;
        }
        match self.redemption_marker(nutzap, received) {
            Ok(marker) => {
                let _ = self.commands.send(Command::Announce(vec![marker])).await;
            }
            Err(e) => warn!(nutzap = %nutzap.event_id, "no redemption marker: {e:#}"),
        }
    }

    /// Kind 7376: public `e … redeemed` and `p` tags; amount and unit NIP-44 encrypted to us.
    fn redemption_marker(
        &self,
        nutzap: &VerifiedNutZap,
        received: u64,
    ) -> anyhow::Result<EventBuilder> {
        let content = nip44::encrypt(
            self.identity.secret_key(),
            &self.identity.public_key(),
            paydvm_mints::events::redemption_content(received, &nutzap.unit),
            nip44::Version::V2,
        )?;
        let tags = paydvm_mints::events::redemption_tags(
            &nutzap.event_id,
            &self.relay_hint,
            &nutzap.sender,
        )
        .into_iter()
        .map(Tag::parse)
        .collect::<Result<Vec<_>, _>>()?;
        Ok(EventBuilder::new(Kind::from(paydvm_mints::nutzap::HISTORY_KIND), content).tags(tags))
    }

    async fn drop_row(&self, id: &str, reason: &str) {
        self.stats.refused(id, reason);
        if let Err(e) = self.pending.remove(id).await {
            warn!(nutzap = %id, "cannot clear it from pending: {e}");
        }
    }

    async fn back_off(&self, id: &str, reason: &str) {
        self.stats.retried.fetch_add(1, Ordering::SeqCst);
        match self.pending.back_off(id, now_ms()).await {
            Ok(next) => warn!(nutzap = %id, retry_at_ms = next, "{reason}; will retry"),
            Err(PendingError::Sql(e)) => warn!(nutzap = %id, "{reason}; cannot schedule: {e}"),
            Err(e) => warn!(nutzap = %id, "{reason}; cannot schedule: {e}"),
        }
    }

    /// Which of `refs` the ledger has credited (asked of the core).
    pub(super) async fn credited(&self, refs: Vec<String>) -> Vec<String> {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::CreditedRefs { refs, reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Whether the core said the job is quoted within [`QUOTE_HOLD`]. A dropped tell (the core's
/// waiting list full, or the core gone) counts as not yet: the row is held, not credited early.
async fn is_quoted(mut told: mpsc::Receiver<JobId>) -> bool {
    matches!(
        tokio::time::timeout(QUOTE_HOLD, told.recv()).await,
        Ok(Some(_))
    )
}

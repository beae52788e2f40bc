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

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nostr_sdk::nips::nip44;
use nostr_sdk::prelude::{Event, EventBuilder, Keys, Kind, Tag};
use paydvm_ledger::{Asset, Msat, Rail};
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

/// An attempt that ended: why its ecash was refused for good, if it was.
pub(super) struct Finished {
    pub refused: Option<String>,
    pub tell: Option<TellOnRefusal>,
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
            let refused = attempter.attempt(row).await;
            Finished { refused, tell }
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
    /// One step for pending ecash: swap it if not swapped yet, then credit it. Returns why it
    /// was refused for good, if it was (the mint's answer; it never holds a proof secret).
    async fn attempt(&self, row: PendingSwap) -> Option<String> {
        let id = row.nutzap.event_id.clone();
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
                    return Some(reason);
                }
                SwapOutcome::Refused { reason } => {
                    let reason = format!("the mint refused the swap: {reason}");
                    self.drop_row(&id, &reason).await;
                    return Some(reason);
                }
                SwapOutcome::Retry { reason } => {
                    self.back_off(&id, &format!("swap not done: {reason}"))
                        .await;
                    return None;
                }
            },
        };
        if fee > 0 {
            info!(nutzap = %id, fee, unit = %row.nutzap.unit, "mint input fee paid on the swap");
        }
        self.credit(&row.nutzap, received, fee).await;
        None
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

//! Start-up of the shell: what only the ledger file can tell (stored requests, the quotes'
//! invoices, the assets of refunds older nodes wrote) is read here, before the decision core
//! resumes the open work ([`Input::Restarted`]).

use std::collections::HashMap;

use anyhow::anyhow;
use nostr_sdk::prelude::{Event, JsonUtil};
use paydvm_ledger::{
    Asset, EventBody, JobId, JobRecord, JobState, LedgerError, LedgerStore, Msat, PaymentOption,
    RefundId, UnixMs,
};
use tracing::warn;

use super::Core;
use crate::lightning::IssuedInvoice;
use crate::node::decide::{needs_request_after_restart, Input, JobRequest};
use crate::node::invoicing::InvoiceDesk;
use crate::protocol::{Inbound, ProtocolAdapter};

/// What start-up found: where intake catches up from and which requests it must fetch again.
#[derive(Debug, Default)]
pub struct Startup {
    /// The newest `at` in the ledger, if any event exists.
    pub newest_at: Option<u64>,
    /// Request event ids (hex) of jobs that may still run but whose request the ledger did not
    /// store (ledgers written before requests were stored).
    pub pending_requests: Vec<String>,
}

impl Core {
    /// Re-sends every undelivered effect, resumes the jobs whose request the ledger stored, looks
    /// up or routes open refunds, and lists the requests that must come from a relay again.
    pub fn startup(&mut self) -> anyhow::Result<Startup> {
        self.watch_open_invoices()?;
        self.abandon_unstarted_ecash_refunds();
        let (requests, pending_requests) = self.stored_requests()?;
        let legacy_sources = self.legacy_sources()?;
        self.input(Input::Restarted {
            requests,
            legacy_sources,
        });
        let memory = self.decider.memory();
        self.contexts.retain(|job, _| memory.holds(job));
        self.flush_durable();
        // The first write drives the open refunds, which may stage `refund_deferred`: write it.
        self.flush_durable();
        let (seq, _) = self.store.head();
        let newest_at = if seq == 0 {
            None
        } else {
            self.store.event(seq)?.map(|e| e.event.at.0)
        };
        Ok(Startup {
            newest_at,
            pending_requests,
        })
    }

    /// The stored requests of jobs that may still run, or still owe a refund (where it goes),
    /// checked again as if just received; and the ids of those the ledger did not store.
    fn stored_requests(&mut self) -> anyhow::Result<(Vec<JobRequest>, Vec<String>)> {
        let (mut requests, mut missing) = (Vec::new(), Vec::new());
        let grace = self.decider.policy().payments().late_grace_ms;
        let wanted = jobs_needing_requests(&self.store, grace, self.now())?;
        for (job, request_event, runs) in wanted {
            match self.stored_request(&job) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) if runs => missing.push(request_event),
                Ok(None) => {}
                Err(e) => {
                    warn!(%job, "stored request unusable, fetching it again: {e:#}");
                    if runs {
                        missing.push(request_event);
                    }
                }
            }
        }
        Ok((requests, missing))
    }

    /// The request stored with `job`, read by the adapter as if it had just arrived.
    fn stored_request(&mut self, job: &JobId) -> anyhow::Result<Option<JobRequest>> {
        let Some(json) = self.store.stored_request(job)? else {
            return Ok(None);
        };
        let event = Event::from_json(json)?;
        event.verify()?;
        if event.id.to_hex() != job.as_str() {
            return Err(anyhow!("the stored request is another event"));
        }
        match self.adapter.read(&event) {
            Inbound::Request { request, context } => {
                self.contexts.insert(job.clone(), *context);
                Ok(Some(*request))
            }
            Inbound::Unparsable { reason, .. } => Err(anyhow!("{reason}")),
            Inbound::Ignore => Err(anyhow!("no longer a request for us")),
        }
    }

    /// For each open refund an older node wrote without an asset: the asset its job's payments
    /// brought the most of (ties to Lightning, then mints by URL), or `None` when the job was
    /// paid from prepaid credit.
    fn legacy_sources(&self) -> anyhow::Result<Vec<(RefundId, Option<Asset>)>> {
        let legacy: Vec<(RefundId, JobId)> = self
            .store
            .state()
            .refunds()
            .filter(|r| !r.state.is_closed() && r.asset.is_none())
            .filter_map(|r| r.job.clone().map(|j| (r.refund.clone(), j)))
            .collect();
        let mut out = Vec::with_capacity(legacy.len());
        for (refund, job) in legacy {
            let mut by_asset: HashMap<Asset, Msat> = HashMap::new();
            for event in self
                .store
                .audit(job.as_str())?
                .map(|t| t.events)
                .unwrap_or_default()
            {
                if let EventBody::PaymentReceived(payment) = event.event {
                    let sum = by_asset.entry(payment.asset).or_insert(Msat::ZERO);
                    *sum = sum.checked_add(payment.amount)?;
                }
            }
            let asset = by_asset
                .into_iter()
                .max_by(|(a, x), (b, y)| x.cmp(y).then_with(|| b.cmp(a)))
                .map(|(asset, _)| asset);
            out.push((refund, asset));
        }
        Ok(out)
    }

    /// Watches again the invoices of quotes still open: a settlement that happened while the
    /// node was down is found by the first look-up.
    fn watch_open_invoices(&self) -> anyhow::Result<()> {
        let Some(desk) = &self.invoices else {
            return Ok(());
        };
        let open: Vec<(JobId, UnixMs)> = self
            .store
            .state()
            .jobs()
            .filter(|j| matches!(j.state, JobState::Quoted | JobState::PartiallyPaid))
            .filter_map(|j| j.expires_at.map(|e| (j.job.clone(), e)))
            .collect();
        for (job, expires_at) in open {
            let Some(trail) = self.store.audit(job.as_str())? else {
                continue;
            };
            for event in &trail.events {
                let EventBody::QuoteIssued { options, .. } = &event.event else {
                    continue;
                };
                watch_invoices(desk, options, job.as_str(), expires_at);
            }
        }
        self.watch_subscription_invoices(desk)
    }

    /// The same for subscriptions quoted and not yet paid, and for renewal quotes of running
    /// ones (an invoice the backend says expired is dropped by the desk).
    fn watch_subscription_invoices(&self, desk: &InvoiceDesk) -> anyhow::Result<()> {
        use paydvm_ledger::EntitlementState;
        let open: Vec<String> = self
            .store
            .state()
            .subscriptions()
            .filter(|s| s.cancelled_at.is_none())
            .filter(|s| s.state == EntitlementState::Quoted || s.renewal_quoted.is_some())
            .map(|s| s.subscription.to_string())
            .collect();
        for subscription in open {
            let Some(trail) = self.store.audit(&subscription)? else {
                continue;
            };
            for event in &trail.events {
                match &event.event {
                    EventBody::SubscriptionQuoted {
                        options,
                        expires_at,
                        ..
                    }
                    | EventBody::SubscriptionRenewalQuoted {
                        options,
                        expires_at,
                        ..
                    } => watch_invoices(desk, options, &subscription, *expires_at),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Releases the ecash attempts an earlier run prepared but never recorded as started.
    fn abandon_unstarted_ecash_refunds(&self) {
        let Some(desk) = &self.ecash_refunds else {
            return;
        };
        let live = self
            .store
            .state()
            .refunds()
            .filter(|r| r.state.can_resolve())
            .filter_map(|r| r.route.as_ref())
            .filter(|route| matches!(route.asset, Asset::Mint { .. }))
            .map(|route| route.lookup.clone())
            .collect();
        desk.abandon_unstarted(live, self.now().0);
    }
}

/// (job, request event, may still run) for every job that may still run (open ones, and expired
/// ones a late payment within `grace_ms` may still revive) or still owes a refund, in job order.
/// Ended jobs are read from the store: one keeping open work only no longer holds them in memory.
pub(crate) fn jobs_needing_requests<S: LedgerStore>(
    store: &S,
    grace_ms: u64,
    now: UnixMs,
) -> Result<Vec<(JobId, String, bool)>, LedgerError> {
    let state = store.state();
    let mut jobs: HashMap<JobId, JobRecord> = state
        .jobs()
        .filter(|j| needs_request_after_restart(j.state))
        .map(|j| (j.job.clone(), j.clone()))
        .collect();
    for j in store.jobs_by_state(JobState::Expired)? {
        if j.expires_at
            .is_some_and(|e| e.0.saturating_add(grace_ms) > now.0)
        {
            jobs.insert(j.job.clone(), j);
        }
    }
    let owing: Vec<JobId> = state
        .refunds()
        .filter(|r| !r.state.is_closed())
        .filter_map(|r| r.job.clone())
        .collect();
    for job in owing {
        if let std::collections::hash_map::Entry::Vacant(slot) = jobs.entry(job) {
            if let Some(record) = store.job(slot.key())? {
                slot.insert(record);
            }
        }
    }
    let mut wanted: Vec<(JobId, String, bool)> = jobs
        .into_values()
        .map(|j| {
            let runs = needs_request_after_restart(j.state);
            (j.job, j.request_event.to_string(), runs)
        })
        .collect();
    wanted.sort();
    Ok(wanted)
}

/// Watches each invoice among a quote's payment `options`; its settlement names `tag`.
fn watch_invoices(desk: &InvoiceDesk, options: &[PaymentOption], tag: &str, expires_at: UnixMs) {
    for option in options {
        if let PaymentOption::Invoice {
            payment_hash,
            bolt11,
        } = option
        {
            let invoice = IssuedInvoice {
                bolt11: bolt11.clone(),
                payment_hash: payment_hash.clone(),
            };
            desk.watch(&invoice, tag, expires_at.0);
        }
    }
}

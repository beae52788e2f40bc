//! The shell's half of zapbacks (Lightning refunds sent as zaps, [`crate::node::refunds::zapback`]):
//! what a refund's zap points at, and which refund a zap receipt from a customer's LNURL server
//! answers. Receipts are attacker-written: the refund is found by the zap request the receipt
//! claims, and the receipt is then checked against what that refund's route recorded.

use std::borrow::Cow;

use nostr_sdk::prelude::{Event, EventId, JsonUtil, PublicKey};
use paydvm_ledger::{JobId, LedgerStore, RefundId};
use tracing::{debug, info};

use super::Core;
use crate::node::decide::{Input, RefundZapReceipt};
use crate::node::refunds::zapback::{self, ExpectedReceipt, ZapTarget};
use crate::protocol::nip90::Nip90Context;
use crate::protocol::Inbound;

impl Core {
    /// The job's request (the zap's `e`) and the customer's reply relays, as far as known.
    pub(super) fn zap_target(&self, refund: &RefundId) -> ZapTarget {
        let state = self.store.state();
        let Some(job) = state.refund(refund).and_then(|r| r.job.clone()) else {
            return ZapTarget::default();
        };
        ZapTarget {
            job_request: state
                .job(&job)
                .and_then(|j| EventId::from_hex(j.request_event.as_str()).ok()),
            customer_relays: self
                .reply_context(&job)
                .map(|c| c.request.relays.clone())
                .unwrap_or_default(),
        }
    }

    /// The job's reply context: held while the job runs, else read again from the request the
    /// ledger stored with `job_received` (a failed job's context is forgotten when it fails,
    /// but its refund still points at it and its last feedback names the refund).
    pub(super) fn reply_context(&self, job: &JobId) -> Option<Cow<'_, Nip90Context>> {
        if let Some(context) = self.contexts.get(job) {
            return Some(Cow::Borrowed(context));
        }
        let stored = self.store.stored_request(job).ok()??;
        let event = Event::from_json(stored).ok()?;
        match self.adapter.read_from(&event, None) {
            Inbound::Request { request, context } if request.job == *job => {
                Some(Cow::Owned(*context))
            }
            _ => None,
        }
    }

    /// A kind 9735 whose `P` is us: the receipt of one of our refund zaps, if it checks out.
    pub(super) fn refund_zap_receipt(&self, receipt: &Event) -> Option<Input> {
        let request = zapback::claimed_request(receipt)?;
        // The zap request id is indexed with the route that recorded it, whatever the refund's
        // state (a settled refund may have left memory).
        let trail = match self.store.audit(&request.to_hex()) {
            Ok(trail) => trail?,
            Err(e) => {
                info!(receipt = %receipt.id, "cannot look a refund zap receipt up: {e}");
                return None;
            }
        };
        let record = trail.refunds.into_iter().find(|r| {
            r.route
                .as_ref()
                .and_then(|route| route.zap.as_ref())
                .is_some_and(|zap| zap.request.as_str() == request.to_hex())
        })?;
        let route = record.route.as_ref()?;
        let zap = route.zap.as_ref()?;
        let expect = ExpectedReceipt {
            us: self.us,
            customer: PublicKey::from_hex(record.customer.as_str()).ok()?,
            zap,
            bolt11: &route.destination,
        };
        if let Err(why) = zapback::check_receipt(receipt, &expect) {
            info!(receipt = %receipt.id, refund = %record.refund, "refund zap receipt refused: {why}");
            return None;
        }
        debug!(receipt = %receipt.id, refund = %record.refund, "refund zap receipt verified");
        // What the receipt itself says: the core compares it with the route once more.
        Some(Input::RefundZapReceipt(RefundZapReceipt {
            refund: record.refund.clone(),
            receipt: paydvm_ledger::EventId::new(receipt.id.to_hex()).ok()?,
            request: paydvm_ledger::EventId::new(request.to_hex()).ok()?,
            signer: paydvm_ledger::Pubkey::new(receipt.pubkey.to_hex()).ok()?,
            bolt11: zapback::paid_invoice(receipt)?.to_owned(),
        }))
    }
}

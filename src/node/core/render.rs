//! Commands in, replies out: what a command means as an input of the decision core, and each
//! decided reply rendered by the protocol adapter as a signed event, recorded in the same group
//! as `effect_requested` under its job.

use anyhow::anyhow;
use nostr_sdk::prelude::Event;
use paydvm_ledger::{EffectId, JobId, LedgerEvent, LedgerStore, UnixMs};
use tracing::{debug, warn};

use super::{job_id, pubkey, publication_from_payload, Command, Core};
use crate::node::decide::{record_notice, record_reply, ExecFailure, Group, Input, ReplyKind};
use crate::node::invoicing::check_issued;
use crate::node::outbox::Publication;
use crate::protocol::nip88;
use crate::protocol::{AdapterError, Inbound, ProtocolAdapter};

impl Core {
    /// What `command` means to the decision core (`None`: nothing to decide).
    pub(super) fn input_of(&mut self, command: Command) -> anyhow::Result<Option<Input>> {
        Ok(Some(match command {
            Command::Request { event, relay } => return Ok(self.read_request(*event, relay)),
            Command::Deletion(event) => cancellation(&event)?,
            Command::Subscribe(event) => return Ok(self.read_subscribe(&event)),
            Command::Payment(payment) => Input::PaymentVerified(payment),
            Command::PaymentRefused {
                job,
                reason,
                request,
            } => {
                self.reply_context_from(&job, &request);
                Input::PaymentRefused { job, reason }
            }
            Command::InvoiceIssued { request, invoice } => {
                let checked = check_issued(&request, invoice).map_err(|reason| {
                    warn!(job = %request.job, %reason, "refusing the backend's invoice; quoting without one");
                    format!("{NO_INVOICE}: the one the Lightning backend made failed the node's checks ({reason})")
                });
                invoice_input(&request, checked)?
            }
            Command::InvoiceFailed { request, reason } => {
                warn!(job = %request.job, %reason, "no invoice; quoting without one");
                // The backend's own words stay in the log: they may name its internals.
                let why = format!("{NO_INVOICE}: the Lightning backend did not make one");
                invoice_input(&request, Err(why))?
            }
            Command::RefundRouted {
                refund,
                attempt,
                route,
            } => Input::RefundRouted {
                refund,
                attempt,
                route,
            },
            Command::RefundDeferred { refund, reason } => Input::RefundDeferred { refund, reason },
            Command::RefundOutcome {
                refund,
                attempt,
                status,
            } => Input::RefundOutcome {
                refund,
                attempt,
                status,
            },
            Command::ExecFinished {
                job,
                attempt,
                outcome,
            } => self.exec_finished(job, attempt, outcome),
            Command::RefundZapReceipt(receipt) => return Ok(self.refund_zap_receipt(&receipt)),
            Command::Published { effect, detail } => Input::EffectDelivered { effect, detail },
            Command::PublishGaveUp { effect } => Input::EffectGaveUp { effect },
            Command::Tick => Input::ClockTicked,
            _ => return Ok(None),
        }))
    }

    /// A request event, read by the adapter; its reply context is kept while the job lives.
    fn read_request(
        &mut self,
        event: Event,
        relay: Option<nostr_sdk::prelude::RelayUrl>,
    ) -> Option<Input> {
        match self.adapter.read_from(&event, relay) {
            Inbound::Ignore => None,
            Inbound::Unparsable {
                job,
                customer,
                kind,
                reason,
            } => {
                self.rejected.insert(job.clone(), event);
                Some(Input::RequestUnparsable {
                    job,
                    customer,
                    kind,
                    reason,
                })
            }
            Inbound::Request { request, context } => {
                // A new job its executor would refuse is rejected before it is quoted, so the
                // customer never pays for it; a job the ledger has runs as it was admitted. The
                // error is a reply to the parsed request (encrypted if it was): its context is
                // kept for this command only.
                let known = self.store.state().job(&request.job).is_some();
                let checked = if known {
                    Ok(())
                } else {
                    self.executors.check(&request.work)
                };
                self.contexts.entry(request.job.clone()).or_insert(*context);
                if let Err(refused) = checked {
                    return Some(Input::RequestUnparsable {
                        job: request.job,
                        customer: request.customer,
                        kind: request.work.kind,
                        reason: refused.to_string(),
                    });
                }
                Some(Input::RequestArrived(request))
            }
        }
    }

    /// A subscribe request for one of our tiers (named by address, or by the id of a 37001 we
    /// published and stored), or an unsubscribe request.
    fn read_subscribe(&self, event: &Event) -> Option<Input> {
        let us = self.adapter.keys().public_key();
        let effects = self.store.state();
        let our_tier = |id: &str| {
            let effect = effects.effect(&EffectId::new(id).ok()?)?;
            let stored = publication_from_payload(id, &effect.payload).ok()?;
            nip88::tier_of(&stored.event, &us)
        };
        if event.kind.as_u16() == nip88::UNSUBSCRIBE_KIND {
            return nip88::read_unsubscribe(event, &us).map(Input::UnsubscribeArrived);
        }
        match nip88::read_subscribe(event, &us, our_tier) {
            nip88::Subscribe::Request(request) => Some(Input::SubscribeArrived(request)),
            nip88::Subscribe::Ignore => None,
        }
    }

    /// A reply context for `job` read from its request event, unless one is held already.
    fn reply_context_from(&mut self, job: &JobId, request: &Event) {
        if self.contexts.contains_key(job) {
            return;
        }
        if let Inbound::Request { request, context } = self.adapter.read_from(request, None) {
            if request.job == *job {
                self.contexts.insert(request.job, *context);
            }
        }
    }

    /// An attempt's output that cannot be delivered (too large for relays) is a failed
    /// attempt, decided as such before anything is recorded.
    fn exec_finished(
        &self,
        job: JobId,
        attempt: u32,
        outcome: Result<String, ExecFailure>,
    ) -> Input {
        let outcome = match (outcome, self.contexts.get(&job)) {
            (Ok(content), Some(context)) => {
                let trial = ReplyKind::Result {
                    content,
                    expires_at: None,
                };
                let checked = self.adapter.check(context, &trial);
                let ReplyKind::Result { content, .. } = trial else {
                    unreachable!("built as a result above")
                };
                match checked {
                    Err(AdapterError::Undeliverable(reason)) => Err(ExecFailure {
                        reason,
                        retryable: false,
                    }),
                    _ => Ok(content),
                }
            }
            (outcome, _) => outcome,
        };
        Input::ExecutorFinished {
            job,
            attempt,
            outcome,
        }
    }

    /// Renders each reply of `group` as a signed event, recorded as `effect_requested` under its
    /// job; a result's event id goes into the group's `result_published`.
    pub(super) fn render(
        &self,
        group: &mut Group,
    ) -> anyhow::Result<Vec<(LedgerEvent, Option<Publication>)>> {
        let at = self.now();
        let mut out = Vec::with_capacity(group.replies.len());
        for reply in &group.replies {
            let is_result = matches!(reply.kind, ReplyKind::Result { .. });
            // A refund's note comes after the job ended: its context is read again if need be.
            let context = match &reply.kind {
                ReplyKind::Refunded { .. } => self.reply_context(&reply.job),
                _ => self
                    .contexts
                    .get(&reply.job)
                    .map(std::borrow::Cow::Borrowed),
            };
            let outbound = match (context, self.rejected.get(&reply.job)) {
                (Some(context), _) => self.adapter.render(&context, &reply.kind)?,
                (None, Some(event)) => match &reply.kind {
                    ReplyKind::Error { reason } => self.adapter.render_rejection(event, reason)?,
                    _ => continue,
                },
                (None, None) if is_result => {
                    return Err(anyhow!("no reply context for the result of {}", reply.job))
                }
                (None, None) => {
                    debug!(job = %reply.job, "no reply context; reply not sent");
                    continue;
                }
            };
            let payload = outbound.payload.clone();
            out.push((
                record_reply(&mut group.events, reply, &outbound.id, payload, at)?,
                publication_from_payload(&outbound.id, &outbound.payload).ok(),
            ));
        }
        for notice in &group.notices {
            let us = self.adapter.keys().public_key();
            let builder = nip88::notice_event(notice, &us).map_err(|e| anyhow!(e))?;
            let (_, outbound) = self
                .adapter
                .outbound(builder, &self.adapter.reply_relays(None))?;
            out.push((
                record_notice(&outbound.id, notice, outbound.payload.clone(), at)?,
                publication_from_payload(&outbound.id, &outbound.payload).ok(),
            ));
        }
        Ok(out)
    }
}

/// How a quote's note begins when the quote carries no invoice although Lightning is set up.
const NO_INVOICE: &str = "no Lightning invoice in this quote";

fn invoice_input(
    request: &crate::node::invoicing::InvoiceRequest,
    invoice: Result<crate::lightning::IssuedInvoice, String>,
) -> anyhow::Result<Input> {
    if request.subscription {
        return Ok(Input::SubscriptionInvoiceIssued {
            subscription: paydvm_ledger::SubscriptionId::new(request.job.clone())?,
            expires_at: UnixMs(request.expires_at_ms),
            invoice,
        });
    }
    Ok(Input::InvoiceIssued {
        job: job_id(&request.job)?,
        amount: request.amount,
        expires_at: UnixMs(request.expires_at_ms),
        invoice,
    })
}

/// A NIP-09 deletion: the jobs its `e` tags name, by its author.
fn cancellation(event: &Event) -> anyhow::Result<Input> {
    let targets = event
        .tags
        .iter()
        .filter_map(|t| match t.as_slice() {
            [name, id, ..] if name == "e" => JobId::new(id.clone()).ok(),
            _ => None,
        })
        .collect();
    Ok(Input::CancellationArrived {
        deletion: event.id.to_hex(),
        author: pubkey(event.pubkey.to_hex())?,
        targets,
    })
}

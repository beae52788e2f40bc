//! Invoices per quote, off the core's thread: the core asks for an invoice ([`InvoiceDesk::request`])
//! and goes on; a task asks the Lightning backend and answers with [`Command::InvoiceIssued`] or
//! [`Command::InvoiceFailed`]. Once the quote is in the ledger the core watches the payment hash;
//! a settlement becomes a [`Command::Payment`] (rail `invoice`, idempotency key
//! `invoice:<payment hash>`, reference = the payment hash) naming the job.

use std::sync::Arc;
use std::time::Duration;

use paydvm_ledger::{Asset, Msat, Rail};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::core::{Command, VerifiedPayment};
use crate::lightning::bolt11::Role;
use crate::lightning::watch::{Settled, Watcher};
use crate::lightning::{Invoice, InvoiceDescription, IssuedInvoice, LightningBackend};

/// What the core asked for, handed back with the answer so the core keeps no extra state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRequest {
    /// The job, or the subscription when `subscription` is set (its settlement names it).
    pub job: String,
    /// For a subscription's period rather than a job.
    pub subscription: bool,
    pub amount: Msat,
    /// The quote's expiry, unix ms; the invoice expires with it.
    pub expires_at_ms: u64,
}

/// Invoices being made at once, at most; further requests wait their turn.
pub const MAX_INVOICES_IN_FLIGHT: usize = 16;

/// The core's handle on the Lightning rail.
pub struct InvoiceDesk {
    backend: Arc<dyn LightningBackend>,
    in_flight: Arc<Semaphore>,
    commands: mpsc::Sender<Command>,
    timeout: Duration,
    watcher: Watcher,
    forwarder: JoinHandle<()>,
}

impl Drop for InvoiceDesk {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

impl std::fmt::Debug for InvoiceDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvoiceDesk")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

/// The description of an invoice: names the job (or subscription), so a wallet's history says
/// what was paid.
pub fn invoice_description(request: &InvoiceRequest) -> String {
    let what = if request.subscription {
        "subscription"
    } else {
        "job"
    };
    format!("paydvm {what} {}", request.job)
}

impl InvoiceDesk {
    pub fn start(
        backend: Arc<dyn LightningBackend>,
        commands: mpsc::Sender<Command>,
        timeout: Duration,
    ) -> InvoiceDesk {
        let (settled_tx, settled_rx) = mpsc::channel(super::queues::SETTLEMENTS);
        let watcher = Watcher::start(Arc::clone(&backend), settled_tx);
        let forwarder = tokio::spawn(forward(settled_rx, commands.clone()));
        InvoiceDesk {
            backend,
            in_flight: Arc::new(Semaphore::new(MAX_INVOICES_IN_FLIGHT)),
            commands,
            timeout,
            watcher,
            forwarder,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Asks the backend for an invoice; the answer comes back as a command.
    pub fn request(&self, request: InvoiceRequest, now_ms: u64) {
        let backend = Arc::clone(&self.backend);
        let commands = self.commands.clone();
        let timeout = self.timeout;
        let in_flight = Arc::clone(&self.in_flight);
        let expiry_secs = request
            .expires_at_ms
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1);
        tokio::spawn(async move {
            // The semaphore is never closed, so this only waits for a turn.
            let _permit = in_flight.acquire_owned().await;
            let description = InvoiceDescription::Text(invoice_description(&request));
            let created = tokio::time::timeout(
                timeout,
                backend.create_invoice(request.amount, description, expiry_secs),
            )
            .await;
            let command = match created {
                Ok(Ok(invoice)) => Command::InvoiceIssued { request, invoice },
                Ok(Err(e)) => Command::InvoiceFailed {
                    request,
                    reason: e.to_string(),
                },
                Err(_) => Command::InvoiceFailed {
                    request,
                    reason: format!("no invoice from the backend within {timeout:?}"),
                },
            };
            let _ = commands.send(command).await;
        });
    }

    /// Watches an invoice recorded in a quote until it settles or expires.
    pub fn watch(&self, invoice: &IssuedInvoice, job: &str, expires_at_ms: u64) {
        self.watcher
            .watch(&invoice.payment_hash, job, expires_at_ms.div_ceil(1000));
    }
}

/// Settlements of watched invoices → verified payments for the core.
async fn forward(mut settled: mpsc::Receiver<Settled>, commands: mpsc::Sender<Command>) {
    while let Some(Settled { tag, settlement }) = settled.recv().await {
        info!(job = %tag, hash = %settlement.payment_hash,
              amount_msat = settlement.amount.as_msat(), "invoice settled");
        let payment = VerifiedPayment {
            idem: super::decide::keys::invoice_payment(&settlement.payment_hash),
            rail: Rail::Invoice,
            asset: Asset::Lightning,
            reference: settlement.payment_hash,
            linked: Vec::new(),
            amount: settlement.amount,
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            names: Some(tag),
        };
        if commands
            .send(Command::Payment(Box::new(payment)))
            .await
            .is_err()
        {
            warn!("core stopped; the settlement is found again by lookup at next start");
            return;
        }
    }
}

/// The backend's invoice is checked, not trusted: it must parse, carry the payment hash the
/// backend reported and exactly the quoted amount, and not expire before the quote does (less a
/// second for the BOLT 11 timestamp's rounding). The checked invoice, or why not.
pub fn check_issued(
    request: &InvoiceRequest,
    invoice: IssuedInvoice,
) -> Result<IssuedInvoice, String> {
    let parsed = Invoice::parse_as(&invoice.bolt11, Role::Payee).map_err(|e| e.to_string())?;
    if parsed.payment_hash() != invoice.payment_hash.to_ascii_lowercase() {
        return Err("payment hash differs from the one the backend reported".into());
    }
    if parsed.amount() != Some(request.amount) {
        return Err(format!(
            "amount {:?} differs from the quoted {} msat",
            parsed.amount().map(Msat::as_msat),
            request.amount.as_msat()
        ));
    }
    if parsed.expires_at() + 1 < request.expires_at_ms / 1000 {
        return Err("invoice expires before the quote".into());
    }
    Ok(IssuedInvoice {
        bolt11: parsed.as_str().to_owned(),
        payment_hash: parsed.payment_hash(),
    })
}

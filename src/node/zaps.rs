//! Zap intake: kind 9735 receipts that intake saw (`#p` = us) are verified against our own
//! LNURL server's `nostrPubkey` and handed to the core as payments.
//!
//! Runs in its own task because learning the `nostrPubkey` may take an HTTP call; the core
//! never waits on the network. A refused receipt is logged with its reason and credits nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nostr_sdk::prelude::{Event, PublicKey};
use paydvm_ledger::{Asset, Msat, Rail};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{PaymentSink, VerifiedPayment};
use crate::payments::lnurl::PayEndpointCache;
use crate::payments::zap::{verify_receipt, VerifiedZap, ZapExpectation};

/// The payment a verified zap is: keyed by the receipt (the same receipt from several relays or
/// after a restart is one input) and referenced by the payment hash (the same payment inside a
/// second receipt credits nothing).
pub fn zap_payment(zap: &VerifiedZap) -> VerifiedPayment {
    VerifiedPayment {
        idem: super::decide::keys::zap_payment(&zap.receipt_id.to_hex()),
        rail: Rail::Zap,
        asset: Asset::Lightning,
        reference: zap.payment_hash.clone(),
        linked: Vec::new(),
        amount: zap.amount,
        fee: Msat::ZERO,
        evidence: Some(zap.receipt_id.to_hex()),
        payer: Some(zap.payer.to_hex()),
        names: zap.target.map(|t| t.to_hex()),
    }
}

/// What zap intake has done so far in this run.
#[derive(Debug, Default)]
pub struct ZapStats {
    /// Receipts that passed every check and were handed to the core (before the count moves).
    pub verified: AtomicU64,
    /// Receipts refused (or not checkable because our LNURL endpoint was unreachable).
    pub refused: AtomicU64,
}

pub struct ZapIntake {
    receipts: mpsc::Sender<Box<Event>>,
    stats: Arc<ZapStats>,
    task: JoinHandle<()>,
}

impl ZapIntake {
    pub fn start(recipient: PublicKey, lnurl: Arc<PayEndpointCache>, sink: PaymentSink) -> Self {
        let (receipts, rx) = mpsc::channel(super::queues::ZAP_RECEIPTS);
        let stats = Arc::new(ZapStats::default());
        let task = tokio::spawn(run(rx, recipient, lnurl, sink, stats.clone()));
        ZapIntake {
            receipts,
            stats,
            task,
        }
    }

    pub fn stats(&self) -> Arc<ZapStats> {
        self.stats.clone()
    }

    /// Where intake sends the receipts it sees.
    pub fn sender(&self) -> mpsc::Sender<Box<Event>> {
        self.receipts.clone()
    }

    pub fn shutdown(self) {
        self.task.abort();
    }
}

async fn run(
    mut receipts: mpsc::Receiver<Box<Event>>,
    recipient: PublicKey,
    lnurl: Arc<PayEndpointCache>,
    sink: PaymentSink,
    stats: Arc<ZapStats>,
) {
    // Learn the key at start, so a wrong lud16 shows in the log before the first zap.
    match lnurl.zap_signer().await {
        Ok(key) => info!(nostr_pubkey = %key, "zaps accepted when signed by our LNURL server"),
        Err(e) => warn!("our lud16 does not give a zap signing key (yet): {e}"),
    }
    while let Some(receipt) = receipts.recv().await {
        let lnurl_signer = match lnurl.zap_signer().await {
            Ok(key) => key,
            Err(e) => {
                // Not lost for good: the next start's catch-up reads the receipt again.
                warn!(receipt = %receipt.id, "cannot check a zap receipt, our LNURL nostrPubkey is unknown: {e}");
                stats.refused.fetch_add(1, Ordering::SeqCst);
                continue;
            }
        };
        let expect = ZapExpectation {
            recipient,
            lnurl_signer,
        };
        match verify_receipt(&receipt, &expect) {
            Ok(zap) => {
                debug!(receipt = %zap.receipt_id, amount_msat = zap.amount.as_msat(), "zap receipt verified");
                if !sink.send(zap_payment(&zap)).await {
                    break;
                }
                stats.verified.fetch_add(1, Ordering::SeqCst);
            }
            Err(why) => {
                info!(
                    receipt = %receipt.id,
                    category = ?why.category(),
                    "zap receipt refused: {why}"
                );
                stats.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

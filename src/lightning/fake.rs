//! `FakeLightning`: a built-in backend for `paydvm demo` and tests. Invoices are REAL regtest
//! BOLT 11 invoices signed by the fake node's key, so everything that reads them (our parser,
//! customers, NWC peers) treats them like any other. Money moves only when a test or the demo
//! says so: [`FakeLightning::settle`] pays an invoice (and notifies), and outgoing payments follow
//! a script ([`PayOutcome`]) so unknown outcomes and late settlements can be exercised.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use paydvm_ledger::Msat;
use tokio::sync::broadcast;

use super::bolt11::Invoice;
use super::{
    InvoiceDescription, InvoiceStatus, IssuedInvoice, LightningBackend, LightningError,
    PaymentStatus, Settlement,
};

/// Settlement notifications buffered for a slow listener before it sees `Lagged`.
const NOTIFY_BUFFER: usize = 1024;
/// Longest expiry the fake accepts (BOLT 11 allows more; no paydvm quote lasts a year).
const MAX_EXPIRY_SECS: u64 = 365 * 24 * 3600;

/// What the next `pay_invoice` call does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid, with this routing fee.
    Settle { fee: Msat },
    /// The backend says explicitly that it failed.
    Fail(String),
    /// The answer is lost: `pay_invoice` and lookups say `Unknown` until
    /// [`FakeLightning::resolve_payment`].
    Unknown,
    /// `pay_invoice` says `Unknown`, but the payment did go through: lookups say `Settled`.
    UnknownThenSettle,
    /// The payment leaves (lookups say `Unknown` until resolved) and `pay_invoice` never
    /// answers: a node that dies mid-payment.
    Hang,
    /// The request never reaches the wallet: nothing is paid or recorded (lookups say
    /// `NotFound`) and `pay_invoice` never answers. A node that dies after recording the refund
    /// but before its pay request left; counted by [`FakeLightning::lost_requests`].
    LostBeforeSending,
}

/// Misuse of the fake's hooks (a test bug or a demo script bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FakeError {
    #[error("no invoice with payment hash {0}")]
    NoSuchInvoice(String),
    #[error("invoice {0} is already settled")]
    AlreadySettled(String),
    #[error("invoice {0} has expired")]
    Expired(String),
    #[error("no outgoing payment with payment hash {0}")]
    NoSuchPayment(String),
}

/// One outgoing payment as the fake recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPayment {
    pub bolt11: String,
    pub payment_hash: String,
    pub amount: Msat,
    pub max_fee: Msat,
    pub status: PaymentStatus,
}

#[derive(Debug, Clone)]
struct IncomingInvoice {
    bolt11: String,
    amount: Msat,
    expires_at: u64,
    settled: Option<(Msat, u64)>,
    preimage: [u8; 32],
}

#[derive(Default)]
struct Book {
    invoices: HashMap<String, IncomingInvoice>,
    /// Every `pay_invoice` call that reached the "network", in order (including repeats).
    payments: Vec<OutgoingPayment>,
    script: VecDeque<PayOutcome>,
    /// `pay_invoice` calls that were lost before reaching the "network" (`LostBeforeSending`).
    lost: usize,
    /// `lookup_payment` calls per payment hash.
    lookups: HashMap<String, usize>,
    /// Payment hashes whose `UnknownThenSettle` / resolved outcome lookups report.
    resolved: HashMap<String, PaymentStatus>,
    /// Where payees' preimages come from (a real payer learns them from the payee).
    payees: Option<PreimageSource>,
}

/// Gives the preimage of an invoice the fake pays (by payment hash), when the test knows it.
pub type PreimageSource = Arc<dyn Fn(&str) -> Option<[u8; 32]> + Send + Sync>;

/// The built-in fake Lightning node. Cheap to clone; clones share the same book.
#[derive(Clone)]
pub struct FakeLightning {
    key: SecretKey,
    notify: bool,
    book: Arc<Mutex<Book>>,
    settled_tx: broadcast::Sender<Settlement>,
}

impl std::fmt::Debug for FakeLightning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLightning")
            .field("node", &self.node_id())
            .field("notify", &self.notify)
            .finish_non_exhaustive()
    }
}

impl Default for FakeLightning {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeLightning {
    /// A fake node with a fresh key that sends settlement notifications.
    pub fn new() -> Self {
        let (settled_tx, _) = broadcast::channel(NOTIFY_BUFFER);
        FakeLightning {
            key: SecretKey::new(&mut rand::thread_rng()),
            notify: true,
            book: Arc::new(Mutex::new(Book::default())),
            settled_tx,
        }
    }

    /// A fake node that sends no notifications: callers must poll `lookup_invoice`.
    pub fn without_notifications() -> Self {
        FakeLightning {
            notify: false,
            ..Self::new()
        }
    }

    /// Settled payments report the payee's real preimage when `source` knows it (otherwise a
    /// random one): what a wallet behind NWC must show to prove a payment.
    pub fn learn_preimages_from(&self, source: PreimageSource) {
        self.book().payees = Some(source);
    }

    /// The node key invoices are signed with (compressed, hex).
    pub fn node_id(&self) -> String {
        PublicKey::from_secret_key(&Secp256k1::signing_only(), &self.key).to_string()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock leaves a consistent book (every update is one insert).
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pays one of our invoices in full, as a customer's wallet would.
    pub fn settle(&self, payment_hash: &str) -> Result<Settlement, FakeError> {
        let amount = self
            .book()
            .invoices
            .get(payment_hash)
            .map(|i| i.amount)
            .ok_or_else(|| FakeError::NoSuchInvoice(payment_hash.to_owned()))?;
        self.settle_amount(payment_hash, amount)
    }

    /// Pays one of our invoices with `amount` (a payer may pay more than asked; BOLT 4).
    pub fn settle_amount(&self, payment_hash: &str, amount: Msat) -> Result<Settlement, FakeError> {
        let now = unix_now();
        let settlement = {
            let mut book = self.book();
            let invoice = book
                .invoices
                .get_mut(payment_hash)
                .ok_or_else(|| FakeError::NoSuchInvoice(payment_hash.to_owned()))?;
            if invoice.settled.is_some() {
                return Err(FakeError::AlreadySettled(payment_hash.to_owned()));
            }
            if now >= invoice.expires_at {
                return Err(FakeError::Expired(payment_hash.to_owned()));
            }
            invoice.settled = Some((amount, now));
            Settlement {
                payment_hash: payment_hash.to_owned(),
                amount,
                settled_at: now,
            }
        };
        if self.notify {
            // No listener is fine: a poller will see it through lookup_invoice.
            let _ = self.settled_tx.send(settlement.clone());
        }
        Ok(settlement)
    }

    /// The bolt11 of one of our invoices.
    pub fn invoice(&self, payment_hash: &str) -> Option<String> {
        self.book()
            .invoices
            .get(payment_hash)
            .map(|i| i.bolt11.clone())
    }

    /// The preimage of one of our invoices (what a payer learns once it pays).
    pub fn preimage(&self, payment_hash: &str) -> Option<[u8; 32]> {
        self.book().invoices.get(payment_hash).map(|i| i.preimage)
    }

    /// How many invoices were created.
    pub fn invoices_created(&self) -> usize {
        self.book().invoices.len()
    }

    /// Queues the outcome of the next `pay_invoice` call (default when the queue is empty:
    /// settle with zero fee).
    pub fn script_payment(&self, outcome: PayOutcome) {
        self.book().script.push_back(outcome);
    }

    /// Every `pay_invoice` call that went out, in order.
    pub fn payments(&self) -> Vec<OutgoingPayment> {
        self.book().payments.clone()
    }

    /// How many `pay_invoice` calls were lost before sending (`PayOutcome::LostBeforeSending`).
    pub fn lost_requests(&self) -> usize {
        self.book().lost
    }

    /// How many times `lookup_payment` was asked about `payment_hash`.
    pub fn lookups_of(&self, payment_hash: &str) -> usize {
        self.book().lookups.get(payment_hash).copied().unwrap_or(0)
    }

    /// How many times `payment_hash` was paid (sent out), whatever the outcome: the exactly-once
    /// check for refunds.
    pub fn times_paid(&self, payment_hash: &str) -> usize {
        self.book()
            .payments
            .iter()
            .filter(|p| p.payment_hash == payment_hash)
            .count()
    }

    /// Ends an `Unknown` payment: later lookups return `status`.
    pub fn resolve_payment(
        &self,
        payment_hash: &str,
        status: PaymentStatus,
    ) -> Result<(), FakeError> {
        let mut book = self.book();
        if !book.payments.iter().any(|p| p.payment_hash == payment_hash) {
            return Err(FakeError::NoSuchPayment(payment_hash.to_owned()));
        }
        book.resolved.insert(payment_hash.to_owned(), status);
        Ok(())
    }

    fn sign_invoice(
        &self,
        amount: Msat,
        description: InvoiceDescription,
        expiry_secs: u64,
        payment_hash: sha256::Hash,
    ) -> Result<String, LightningError> {
        let builder = InvoiceBuilder::new(Currency::Regtest);
        let builder = match description {
            InvoiceDescription::Text(text) => builder.description(text),
            InvoiceDescription::Hash(hash) => {
                builder.description_hash(sha256::Hash::from_byte_array(hash))
            }
        };
        let secp = Secp256k1::signing_only();
        let invoice = builder
            .amount_milli_satoshis(amount.as_msat())
            .payment_hash(payment_hash)
            .payment_secret(PaymentSecret(rand::random()))
            .duration_since_epoch(Duration::from_secs(unix_now()))
            .expiry_time(Duration::from_secs(expiry_secs))
            .min_final_cltv_expiry_delta(18)
            .build_signed(|msg| secp.sign_ecdsa_recoverable(msg, &self.key))
            .map_err(|e| LightningError::Refused(e.to_string()))?;
        Ok(invoice.to_string())
    }
}

#[async_trait]
impl LightningBackend for FakeLightning {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn create_invoice(
        &self,
        amount: Msat,
        description: InvoiceDescription,
        expiry_secs: u64,
    ) -> Result<IssuedInvoice, LightningError> {
        if amount.is_zero() || amount > Msat::MAX_SUPPLY {
            return Err(LightningError::Amount(amount.to_string()));
        }
        let expiry_secs = expiry_secs.clamp(1, MAX_EXPIRY_SECS);
        let preimage: [u8; 32] = rand::random();
        let hash = sha256::Hash::hash(&preimage);
        let bolt11 = self.sign_invoice(amount, description, expiry_secs, hash)?;
        let payment_hash = hash.to_string();
        let expires_at = unix_now().saturating_add(expiry_secs);
        self.book().invoices.insert(
            payment_hash.clone(),
            IncomingInvoice {
                bolt11: bolt11.clone(),
                amount,
                expires_at,
                settled: None,
                preimage,
            },
        );
        Ok(IssuedInvoice {
            bolt11,
            payment_hash,
        })
    }

    async fn lookup_invoice(&self, payment_hash: &str) -> InvoiceStatus {
        let book = self.book();
        match book.invoices.get(payment_hash) {
            None => InvoiceStatus::Unknown(format!("no invoice {payment_hash}")),
            Some(IncomingInvoice {
                settled: Some((amount, at)),
                ..
            }) => InvoiceStatus::Settled {
                amount: *amount,
                settled_at: *at,
            },
            Some(i) if unix_now() >= i.expires_at => InvoiceStatus::Expired,
            Some(_) => InvoiceStatus::Open,
        }
    }

    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> PaymentStatus {
        let (invoice, amount) = match Invoice::parse_payable(bolt11, unix_now()) {
            Ok(parsed) => parsed,
            // Refused before anything left: an explicit failure.
            Err(e) => return PaymentStatus::Failed(e.to_string()),
        };
        let outcome = self
            .book()
            .script
            .pop_front()
            .unwrap_or(PayOutcome::Settle { fee: Msat::ZERO });
        if outcome == PayOutcome::LostBeforeSending {
            self.book().lost += 1;
            return std::future::pending().await;
        }
        let (status, hang) = {
            let mut book = self.book();
            let payment_hash = invoice.payment_hash();
            let hang = outcome == PayOutcome::Hang;
            let status = match outcome {
                PayOutcome::Settle { fee } if fee > max_fee => {
                    PaymentStatus::Failed(format!("fee {fee} above the cap of {max_fee}"))
                }
                PayOutcome::Settle { fee } => PaymentStatus::Settled {
                    preimage: hex::encode(
                        book.payees
                            .as_ref()
                            .and_then(|source| source(&payment_hash))
                            .unwrap_or_else(rand::random),
                    ),
                    fee,
                },
                PayOutcome::Fail(reason) => PaymentStatus::Failed(reason),
                PayOutcome::Unknown | PayOutcome::Hang | PayOutcome::LostBeforeSending => {
                    PaymentStatus::Unknown("no answer from the network".into())
                }
                PayOutcome::UnknownThenSettle => {
                    book.resolved.insert(
                        payment_hash.clone(),
                        PaymentStatus::Settled {
                            preimage: hex::encode(rand::random::<[u8; 32]>()),
                            fee: Msat::ZERO,
                        },
                    );
                    PaymentStatus::Unknown("no answer from the network".into())
                }
            };
            book.payments.push(OutgoingPayment {
                bolt11: invoice.as_str().to_owned(),
                payment_hash,
                amount,
                max_fee,
                status: status.clone(),
            });
            (status, hang)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        status
    }

    async fn lookup_payment(&self, payment_hash: &str) -> PaymentStatus {
        let mut book = self.book();
        *book.lookups.entry(payment_hash.to_owned()).or_default() += 1;
        if let Some(status) = book.resolved.get(payment_hash) {
            return status.clone();
        }
        match book
            .payments
            .iter()
            .rev()
            .find(|p| p.payment_hash == payment_hash)
        {
            Some(p) => p.status.clone(),
            // It was never asked to pay this hash.
            None => PaymentStatus::NotFound,
        }
    }

    /// Received (settled invoices) minus paid out (settled payments and their fees).
    async fn balance(&self) -> Result<Msat, LightningError> {
        let book = self.book();
        let mut held = Msat::ZERO;
        for (amount, _) in book.invoices.values().filter_map(|i| i.settled) {
            held = held
                .checked_add(amount)
                .map_err(|e| LightningError::Amount(e.to_string()))?;
        }
        for p in &book.payments {
            if let PaymentStatus::Settled { fee, .. } = &p.status {
                held = p
                    .amount
                    .checked_add(*fee)
                    .and_then(|out| held.checked_sub(out))
                    .map_err(|e| LightningError::Amount(e.to_string()))?;
            }
        }
        Ok(held)
    }

    fn settlements(&self) -> Option<broadcast::Receiver<Settlement>> {
        self.notify.then(|| self.settled_tx.subscribe())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lightning::bolt11::{Description, Network};

    fn text(s: &str) -> InvoiceDescription {
        InvoiceDescription::Text(s.into())
    }

    #[tokio::test]
    async fn issues_real_signed_regtest_invoices() {
        let ln = FakeLightning::new();
        let issued = ln
            .create_invoice(Msat::from_msat(21_000), text("paydvm job abc"), 600)
            .await
            .unwrap();
        let inv = Invoice::parse(&issued.bolt11).unwrap();
        assert!(
            issued.bolt11.starts_with("lnbcrt210n1"),
            "{}",
            issued.bolt11
        );
        assert_eq!(inv.network(), Network::Regtest);
        assert_eq!(inv.amount(), Some(Msat::from_msat(21_000)));
        assert_eq!(inv.payment_hash(), issued.payment_hash);
        assert_eq!(
            inv.description(),
            Description::Text("paydvm job abc".into())
        );
        assert_eq!(inv.expiry_secs(), 600);
        assert_eq!(inv.payee(), ln.node_id());

        let hashed = ln
            .create_invoice(Msat::from_msat(1), InvoiceDescription::Hash([7; 32]), 60)
            .await
            .unwrap();
        assert_eq!(
            Invoice::parse(&hashed.bolt11).unwrap().description(),
            Description::Hash([7; 32])
        );
        assert!(ln
            .create_invoice(Msat::ZERO, text("nothing"), 60)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn settle_notifies_once_and_lookup_agrees() {
        let ln = FakeLightning::new();
        let mut rx = ln.settlements().expect("the fake notifies");
        let issued = ln
            .create_invoice(Msat::from_msat(5_000), text("x"), 600)
            .await
            .unwrap();
        assert_eq!(
            ln.lookup_invoice(&issued.payment_hash).await,
            InvoiceStatus::Open
        );
        let s = ln.settle(&issued.payment_hash).unwrap();
        assert_eq!(rx.recv().await.unwrap(), s);
        assert_eq!(s.amount, Msat::from_msat(5_000));
        assert_eq!(
            ln.lookup_invoice(&issued.payment_hash).await,
            InvoiceStatus::Settled {
                amount: s.amount,
                settled_at: s.settled_at
            }
        );
        assert_eq!(
            ln.settle(&issued.payment_hash),
            Err(FakeError::AlreadySettled(issued.payment_hash.clone()))
        );
        assert!(rx.try_recv().is_err(), "a second settle must not notify");
        assert!(matches!(
            ln.lookup_invoice(&"00".repeat(32)).await,
            InvoiceStatus::Unknown(_)
        ));
        assert!(FakeLightning::without_notifications()
            .settlements()
            .is_none());
    }

    #[tokio::test]
    async fn payments_follow_the_script_and_are_counted() {
        let payee = FakeLightning::new();
        let payer = FakeLightning::new();
        let cap = Msat::from_msat(10);
        let mut hashes = Vec::new();
        for _ in 0..4 {
            let i = payee
                .create_invoice(Msat::from_msat(1_000), text("refund"), 600)
                .await
                .unwrap();
            hashes.push(i);
        }
        payer.script_payment(PayOutcome::Settle {
            fee: Msat::from_msat(3),
        });
        payer.script_payment(PayOutcome::Fail("no route".into()));
        payer.script_payment(PayOutcome::UnknownThenSettle);
        payer.script_payment(PayOutcome::Unknown);

        let paid = payer.pay_invoice(&hashes[0].bolt11, cap).await;
        assert!(matches!(paid, PaymentStatus::Settled { fee, .. } if fee == Msat::from_msat(3)));
        assert_eq!(
            payer.pay_invoice(&hashes[1].bolt11, cap).await,
            PaymentStatus::Failed("no route".into())
        );
        assert!(matches!(
            payer.pay_invoice(&hashes[2].bolt11, cap).await,
            PaymentStatus::Unknown(_)
        ));
        assert!(matches!(
            payer.lookup_payment(&hashes[2].payment_hash).await,
            PaymentStatus::Settled { .. }
        ));
        assert!(matches!(
            payer.pay_invoice(&hashes[3].bolt11, cap).await,
            PaymentStatus::Unknown(_)
        ));
        assert!(matches!(
            payer.lookup_payment(&hashes[3].payment_hash).await,
            PaymentStatus::Unknown(_)
        ));
        payer
            .resolve_payment(
                &hashes[3].payment_hash,
                PaymentStatus::Failed("expired in flight".into()),
            )
            .unwrap();
        assert_eq!(
            payer.lookup_payment(&hashes[3].payment_hash).await,
            PaymentStatus::Failed("expired in flight".into())
        );
        for h in &hashes {
            assert_eq!(payer.times_paid(&h.payment_hash), 1);
        }
        assert_eq!(payer.payments().len(), 4);
        assert!(payer
            .payments()
            .iter()
            .all(|p| p.amount == Msat::from_msat(1_000)));
    }

    #[tokio::test]
    async fn a_payment_never_asked_for_is_not_found_and_a_lost_request_pays_nothing() {
        let payee = FakeLightning::new();
        let payer = FakeLightning::new();
        let i = payee
            .create_invoice(Msat::from_msat(1_000), text("refund"), 600)
            .await
            .unwrap();
        assert_eq!(
            payer.lookup_payment(&i.payment_hash).await,
            PaymentStatus::NotFound
        );
        // The payee's own book knows the invoice (incoming), not a payment.
        assert_eq!(
            payee.lookup_payment(&i.payment_hash).await,
            PaymentStatus::NotFound
        );
        assert_eq!(
            sha256::Hash::hash(&payee.preimage(&i.payment_hash).unwrap()).to_string(),
            i.payment_hash
        );

        payer.script_payment(PayOutcome::LostBeforeSending);
        let lost = tokio::spawn({
            let payer = payer.clone();
            let bolt11 = i.bolt11.clone();
            async move { payer.pay_invoice(&bolt11, Msat::ZERO).await }
        });
        while payer.lost_requests() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(payer.times_paid(&i.payment_hash), 0);
        assert_eq!(
            payer.lookup_payment(&i.payment_hash).await,
            PaymentStatus::NotFound
        );
        assert!(!lost.is_finished(), "a lost request never answers");
        lost.abort();

        // Sent again: paid once.
        assert!(matches!(
            payer.pay_invoice(&i.bolt11, Msat::ZERO).await,
            PaymentStatus::Settled { .. }
        ));
        assert_eq!(payer.times_paid(&i.payment_hash), 1);
        assert!(matches!(
            payer.lookup_payment(&i.payment_hash).await,
            PaymentStatus::Settled { .. }
        ));
    }

    #[tokio::test]
    async fn refuses_to_pay_what_it_cannot_check() {
        let payer = FakeLightning::new();
        let cap = Msat::from_msat(10);
        assert!(matches!(
            payer.pay_invoice("lnbc1garbage", cap).await,
            PaymentStatus::Failed(_)
        ));
        payer.script_payment(PayOutcome::Settle {
            fee: Msat::from_msat(11),
        });
        let payee = FakeLightning::new();
        let i = payee
            .create_invoice(Msat::from_msat(1_000), text("refund"), 600)
            .await
            .unwrap();
        assert!(matches!(
            payer.pay_invoice(&i.bolt11, cap).await,
            PaymentStatus::Failed(reason) if reason.contains("cap")
        ));
        // The garbage invoice was refused before anything left; the fee-cap refusal is the
        // wallet's answer to a payment it tried, so it is recorded.
        assert_eq!(payer.payments().len(), 1);
    }
}

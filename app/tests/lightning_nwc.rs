//! The NWC backend against a real NIP-47 wallet service: cdk-nostr's `NwcService` on a LocalRelay
//! on 127.0.0.1, answering through a handler backed by `FakeLightning` (real regtest invoices).
//! The node makes the quote's invoice over NWC and finds the settlement by `lookup_invoice`
//! polling (the service sends no notifications). A wallet that notifies only over NIP-44
//! (kind 23197, which the `nwc` 0.44 client never hears) is covered by the same polling.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cdk_nostr::nwc::nip47::{
    ErrorCode, GetBalanceResponse, GetInfoResponse, ListTransactionsRequest, LookupInvoiceRequest,
    LookupInvoiceResponse, MakeInvoiceRequest, MakeInvoiceResponse, NIP47Error, PayInvoiceRequest,
    PayInvoiceResponse, TransactionState, TransactionType,
};
use cdk_nostr::nwc::{NwcRequestHandler, NwcService, NwcServiceConfig};
use nostr_sdk::prelude::*;
use paydvm::lightning::fake::FakeLightning;
use paydvm::lightning::nwc::NwcLightning;
use paydvm::lightning::{
    Invoice, InvoiceDescription, InvoiceStatus, LightningBackend, PaymentStatus,
};
use paydvm::node::NodeOptions;
use paydvm_ledger::{JobState, Msat};
use tokio_util::sync::CancellationToken;

use crate::lightning::{assert_paid_trail, quoted_invoice};
use crate::node::{is_status, setup, wait_state, Customer};

/// A wallet service's Lightning side: the fake node.
struct FakeWallet(FakeLightning);

fn refused(code: ErrorCode, message: &str) -> NIP47Error {
    NIP47Error {
        code,
        message: message.to_owned(),
    }
}

#[async_trait]
impl NwcRequestHandler for FakeWallet {
    async fn get_info(&self) -> Result<GetInfoResponse, NIP47Error> {
        Err(refused(ErrorCode::NotImplemented, "get_info"))
    }

    async fn get_balance(&self) -> Result<GetBalanceResponse, NIP47Error> {
        let balance = self
            .0
            .balance()
            .await
            .map_err(|e| refused(ErrorCode::Internal, &e.to_string()))?;
        Ok(GetBalanceResponse {
            balance: balance.as_msat(),
        })
    }

    async fn make_invoice(
        &self,
        request: MakeInvoiceRequest,
    ) -> Result<MakeInvoiceResponse, NIP47Error> {
        let description = match (request.description, request.description_hash) {
            (_, Some(hash)) => {
                let bytes: [u8; 32] = hex::decode(hash)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| refused(ErrorCode::Other, "bad description_hash"))?;
                InvoiceDescription::Hash(bytes)
            }
            (text, None) => InvoiceDescription::Text(text.unwrap_or_default()),
        };
        let issued = self
            .0
            .create_invoice(
                Msat::from_msat(request.amount),
                description,
                request.expiry.unwrap_or(3600),
            )
            .await
            .map_err(|e| refused(ErrorCode::Internal, &e.to_string()))?;
        Ok(MakeInvoiceResponse {
            invoice: issued.bolt11,
            payment_hash: Some(issued.payment_hash),
            description: None,
            description_hash: None,
            preimage: None,
            amount: Some(request.amount),
            created_at: None,
            expires_at: None,
        })
    }

    async fn pay_invoice(
        &self,
        request: PayInvoiceRequest,
    ) -> Result<PayInvoiceResponse, NIP47Error> {
        match self
            .0
            .pay_invoice(&request.invoice, Msat::from_msat(u64::MAX))
            .await
        {
            PaymentStatus::Settled { preimage, fee } => Ok(PayInvoiceResponse {
                preimage,
                fees_paid: Some(fee.as_msat()),
            }),
            PaymentStatus::Failed(reason) => Err(refused(ErrorCode::PaymentFailed, &reason)),
            PaymentStatus::Unknown(reason) => Err(refused(ErrorCode::Internal, &reason)),
            // `pay_invoice` never answers it; were it to, it says nothing about this payment.
            PaymentStatus::NotFound => Err(refused(ErrorCode::Internal, "no answer")),
        }
    }

    async fn lookup_invoice(
        &self,
        request: LookupInvoiceRequest,
    ) -> Result<LookupInvoiceResponse, NIP47Error> {
        let hash = request
            .payment_hash
            .ok_or_else(|| refused(ErrorCode::NotImplemented, "lookup by hash only"))?;
        let Some(bolt11) = self.0.invoice(&hash) else {
            return self.outgoing(hash).await;
        };
        let parsed =
            Invoice::parse(&bolt11).map_err(|e| refused(ErrorCode::Internal, &e.to_string()))?;
        let (state, amount, settled_at) = match self.0.lookup_invoice(&hash).await {
            InvoiceStatus::Settled { amount, settled_at } => (
                TransactionState::Settled,
                amount.as_msat(),
                Some(Timestamp::from_secs(settled_at)),
            ),
            InvoiceStatus::Expired => (TransactionState::Expired, 0, None),
            InvoiceStatus::Open => (TransactionState::Pending, 0, None),
            InvoiceStatus::Unknown(reason) => return Err(refused(ErrorCode::NotFound, &reason)),
        };
        Ok(LookupInvoiceResponse {
            transaction_type: Some(TransactionType::Incoming),
            state: Some(state),
            invoice: Some(bolt11),
            description: None,
            description_hash: None,
            preimage: None,
            payment_hash: hash,
            amount: if amount == 0 {
                parsed.amount().map_or(0, Msat::as_msat)
            } else {
                amount
            },
            fees_paid: 0,
            created_at: Timestamp::from_secs(parsed.timestamp()),
            expires_at: Some(Timestamp::from_secs(parsed.expires_at())),
            settled_at,
            metadata: None,
        })
    }

    async fn list_transactions(
        &self,
        _: ListTransactionsRequest,
    ) -> Result<Vec<LookupInvoiceResponse>, NIP47Error> {
        Err(refused(ErrorCode::NotImplemented, "list_transactions"))
    }
}

impl FakeWallet {
    /// A payment the wallet made, looked up as cdk's `WalletNwcHandler` does (its history and
    /// its payments in progress); `NOT_FOUND` only for a hash it was never asked to pay.
    async fn outgoing(&self, hash: String) -> Result<LookupInvoiceResponse, NIP47Error> {
        let (state, preimage, fee) = match self.0.lookup_payment(&hash).await {
            PaymentStatus::NotFound => return Err(refused(ErrorCode::NotFound, "no such invoice")),
            PaymentStatus::Settled { preimage, fee } => {
                (TransactionState::Settled, Some(preimage), fee.as_msat())
            }
            PaymentStatus::Failed(_) => (TransactionState::Failed, None, 0),
            PaymentStatus::Unknown(_) => (TransactionState::Pending, None, 0),
        };
        let paid = self
            .0
            .payments()
            .into_iter()
            .rev()
            .find(|p| p.payment_hash == hash)
            .ok_or_else(|| refused(ErrorCode::Internal, "payment vanished"))?;
        let parsed = Invoice::parse(&paid.bolt11)
            .map_err(|e| refused(ErrorCode::Internal, &e.to_string()))?;
        Ok(LookupInvoiceResponse {
            transaction_type: Some(TransactionType::Outgoing),
            state: Some(state),
            invoice: Some(paid.bolt11),
            description: None,
            description_hash: None,
            preimage,
            payment_hash: hash,
            amount: paid.amount.as_msat(),
            fees_paid: fee,
            created_at: Timestamp::from_secs(parsed.timestamp()),
            expires_at: Some(Timestamp::from_secs(parsed.expires_at())),
            settled_at: None,
            metadata: None,
        })
    }
}

/// A running wallet service on `relays` and an NWC backend connected to it.
pub struct Wallet {
    pub fake: FakeLightning,
    pub backend: Arc<NwcLightning>,
    /// The connection URI (a secret in real life), for a node config's `nwc_uri_file`.
    pub uri: NostrWalletConnectURI,
    /// The wallet service's own keys (it signs its answers and notifications with them).
    service_keys: Keys,
    cancel: CancellationToken,
}

impl Drop for Wallet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn wallet(relays: &[RelayUrl]) -> Wallet {
    let service_keys = Keys::generate();
    let service = NwcService::new(NwcServiceConfig {
        service_keys: service_keys.clone(),
        client_secret: Keys::generate().secret_key().clone(),
        relays: relays.to_vec(),
        lud16: None,
    })
    .unwrap();
    let fake = FakeLightning::without_notifications();
    let cancel = CancellationToken::new();
    let handler = Arc::new(FakeWallet(fake.clone()));
    let uri = service.connection_uri();
    let token = cancel.clone();
    tokio::spawn(async move { service.run(handler, token).await });
    // Requests are ephemeral events: one sent before the service has subscribed is lost. Probe
    // with short timeouts until the service answers (NOT_FOUND for an unknown hash).
    let probe = NwcLightning::from_uri(uri.clone(), Duration::from_secs(1));
    let mut answered = false;
    for _ in 0..50 {
        if let InvoiceStatus::Unknown(reason) = probe.lookup_invoice(&"00".repeat(32)).await {
            if reason.contains("no such invoice") {
                answered = true;
                break;
            }
        }
    }
    assert!(answered, "the wallet service never answered");
    probe.shutdown().await;
    let backend = Arc::new(NwcLightning::from_uri(uri.clone(), Duration::from_secs(10)));
    Wallet {
        fake,
        backend,
        uri,
        service_keys,
        cancel,
    }
}

impl Wallet {
    /// Sends the NIP-47 `payment_received` notification for our invoice `hash` as a NIP-44-only
    /// wallet does: kind 23197, NIP-44 encrypted to the client, and no kind 23196.
    async fn notify_nip44_only(&self, relays: &[RelayUrl], hash: &str, bolt11: &str) {
        let parsed = Invoice::parse(bolt11).unwrap();
        let preimage = hex::encode(self.fake.preimage(hash).unwrap());
        let body = serde_json::json!({
            "notification_type": "payment_received",
            "notification": {
                "type": "incoming",
                "state": "settled",
                "invoice": bolt11,
                "preimage": preimage,
                "payment_hash": hash,
                "amount": parsed.amount().unwrap().as_msat(),
                "fees_paid": 0,
                "created_at": parsed.timestamp(),
                "settled_at": Timestamp::now().as_secs(),
            }
        });
        let client_key = Keys::new(self.uri.secret.clone()).public_key();
        let content = nip44::encrypt(
            self.service_keys.secret_key(),
            &client_key,
            body.to_string(),
            nip44::Version::V2,
        )
        .unwrap();
        // What the client would read, were it listening for kind 23197.
        let read = nip44::decrypt(&self.uri.secret, &self.service_keys.public_key(), &content);
        let read = nip47::Notification::from_value(serde_json::from_str(&read.unwrap()).unwrap());
        let read = read.unwrap().to_pay_notification().unwrap();
        assert_eq!(read.payment_hash, hash);
        let note = EventBuilder::new(Kind::Custom(23197), content)
            .tag(Tag::public_key(client_key))
            .sign_with_keys(&self.service_keys)
            .unwrap();
        let client = Client::new(self.service_keys.clone());
        for url in relays {
            client.add_relay(url.clone()).await.unwrap();
        }
        client.connect().await;
        let sent = client.send_event(&note).await.unwrap();
        assert!(!sent.success.is_empty(), "a relay took the notification");
        client.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nwc_invoices_are_made_looked_up_and_checked() {
    let s = setup(1, "refund").await;
    let w = wallet(&s.urls).await;
    let issued = w
        .backend
        .create_invoice(
            Msat::from_msat(21_000),
            InvoiceDescription::Text("paydvm job x".into()),
            600,
        )
        .await
        .unwrap();
    let parsed = Invoice::parse(&issued.bolt11).unwrap();
    assert_eq!(parsed.payee(), w.fake.node_id());
    assert_eq!(parsed.amount(), Some(Msat::from_msat(21_000)));
    assert_eq!(
        w.backend.lookup_invoice(&issued.payment_hash).await,
        InvoiceStatus::Open
    );
    let settled = w.fake.settle(&issued.payment_hash).unwrap();
    assert_eq!(
        w.backend.lookup_invoice(&issued.payment_hash).await,
        InvoiceStatus::Settled {
            amount: Msat::from_msat(21_000),
            settled_at: settled.settled_at
        }
    );
    assert!(matches!(
        w.backend.lookup_invoice(&"00".repeat(32)).await,
        InvoiceStatus::Unknown(_)
    ));

    // Outgoing: the fake wallet's preimage is not the invoice's (it cannot know it), so the
    // backend must not call the payment settled; an explicit PAYMENT_FAILED is a failure.
    let payee = FakeLightning::new();
    let refund = payee
        .create_invoice(
            Msat::from_msat(1_000),
            InvoiceDescription::Text("refund".into()),
            600,
        )
        .await
        .unwrap();
    assert!(matches!(
        w.backend
            .pay_invoice(&refund.bolt11, Msat::from_msat(10))
            .await,
        PaymentStatus::Unknown(_)
    ));
    w.fake
        .script_payment(paydvm::lightning::fake::PayOutcome::Fail("no route".into()));
    assert!(matches!(
        w.backend.pay_invoice(&refund.bolt11, Msat::from_msat(10)).await,
        PaymentStatus::Failed(reason) if reason.contains("no route")
    ));
    assert_eq!(w.fake.times_paid(&refund.payment_hash), 2);

    // Looking payments up. Only the wallet's own NOT_FOUND, for a hash it was never asked to
    // pay, is "no record"; our own invoice's hash is not a payment of ours.
    let cap = Msat::from_msat(10);
    assert_eq!(
        w.backend.lookup_payment(&"00".repeat(32)).await,
        PaymentStatus::NotFound
    );
    assert!(matches!(
        w.backend.lookup_payment(&issued.payment_hash).await,
        PaymentStatus::Unknown(reason) if reason.contains("invoice of ours")
    ));
    assert!(matches!(
        w.backend.lookup_payment(&refund.payment_hash).await,
        PaymentStatus::Failed(_)
    ));
    let fresh = payee
        .create_invoice(
            Msat::from_msat(1_000),
            InvoiceDescription::Text("refund".into()),
            600,
        )
        .await
        .unwrap();
    assert_eq!(
        w.backend.lookup_payment(&fresh.payment_hash).await,
        PaymentStatus::NotFound
    );
    let knows = payee.clone();
    w.fake
        .learn_preimages_from(Arc::new(move |hash: &str| knows.preimage(hash)));
    let paid = w.backend.pay_invoice(&fresh.bolt11, cap).await;
    assert!(matches!(paid, PaymentStatus::Settled { .. }), "{paid:?}");
    assert_eq!(w.backend.lookup_payment(&fresh.payment_hash).await, paid);
    assert_eq!(w.fake.times_paid(&fresh.payment_hash), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_paid_job_over_nwc_end_to_end() {
    quoted_job_paid_over_nwc(false).await;
}

/// rust-nostr 1392: the `nwc` 0.44 client listens for NIP-04 notifications (kind 23196) only. A
/// wallet service that notifies only over NIP-44 (kind 23197) must still get the job paid: the
/// watcher's `lookup_invoice` polling finds the settlement, and the ledger records it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_paid_through_a_nip44_only_notifying_wallet_runs_once() {
    quoted_job_paid_over_nwc(true).await;
}

/// A job quoted with an invoice from the NWC wallet, paid there (with a NIP-44-only
/// notification when `notify_nip44`, none otherwise): it runs and the ledger holds one payment.
async fn quoted_job_paid_over_nwc(notify_nip44: bool) {
    let s = setup(1, "refund").await;
    let w = wallet(&s.urls).await;
    let node = s
        .start_with(NodeOptions {
            lightning: Some(w.backend.clone()),
            ..NodeOptions::default()
        })
        .await;
    let mut customer = Customer::connect(&s.urls).await;
    let request = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let invoice = quoted_invoice(&quote, &job);
    assert_eq!(
        invoice.payee(),
        w.fake.node_id(),
        "the invoice came from the wallet"
    );
    let hash = invoice.payment_hash();

    w.fake.settle(&hash).unwrap();
    if notify_nip44 {
        w.notify_nip44_only(&s.urls, &hash, invoice.as_str()).await;
    }
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "ABC");
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;
    assert_paid_trail(&s.store(), &job, &hash);
}

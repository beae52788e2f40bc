//! NWC (NIP-47) backend: the node is a wallet *client*; a wallet service holds the money.
//! Requests go through the `nwc` crate (`nwc::NWC`). cdk-nostr's wallet service and many others
//! send no payment notifications, so [`LightningBackend::settlements`] is `None` and the
//! [`watch`](super::watch) module polls `lookup_invoice` with back-off.
//!
//! Everything the wallet answers is checked: an issued invoice must parse and carry the amount
//! asked for; a preimage must hash to the payment hash; a lookup must be about the hash asked.
//! The connection URI holds the client's secret key: it is parsed from a [`Secret`] and never
//! printed (errors do not echo it).

use std::time::Duration;

use async_trait::async_trait;
use bitcoin::hashes::{sha256, Hash};
use nostr_sdk::nips::nip47::{
    self, ErrorCode, LookupInvoiceRequest, LookupInvoiceResponse, MakeInvoiceRequest,
    NostrWalletConnectURI, PayInvoiceRequest, TransactionState, TransactionType,
};
use nwc::{NostrWalletConnectOptions, NWC};
use paydvm_ledger::Msat;
use tokio::sync::broadcast;

use super::bolt11::{Invoice, Role};
use super::{
    InvoiceDescription, InvoiceStatus, IssuedInvoice, LightningBackend, LightningError,
    PaymentStatus, Settlement,
};
use crate::config::Secret;

/// A wallet reached over Nostr Wallet Connect.
pub struct NwcLightning {
    client: NWC,
}

impl std::fmt::Debug for NwcLightning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NwcLightning { .. }")
    }
}

impl NwcLightning {
    /// `timeout` bounds each request/response round trip.
    pub fn new(uri: &Secret<String>, timeout: Duration) -> Result<NwcLightning, LightningError> {
        let uri = NostrWalletConnectURI::parse(uri.expose().trim())
            .map_err(|_| LightningError::Refused("the NWC connection URI does not parse".into()))?;
        Ok(Self::from_uri(uri, timeout))
    }

    pub fn from_uri(uri: NostrWalletConnectURI, timeout: Duration) -> NwcLightning {
        NwcLightning {
            client: NWC::with_opts(uri, NostrWalletConnectOptions::new().timeout(timeout)),
        }
    }

    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

/// The wallet's explicit error code, if the call got one.
fn wallet_error(e: &nwc::Error) -> Option<&nip47::NIP47Error> {
    match e {
        nwc::Error::NIP47(nip47::Error::ErrorCode(err)) => Some(err),
        _ => None,
    }
}

/// Codes by which a wallet says it did not (and will not) make the payment.
fn explicitly_not_paid(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::PaymentFailed
            | ErrorCode::InsufficientBalance
            | ErrorCode::QuotaExceeded
            | ErrorCode::Restricted
            | ErrorCode::Unauthorized
            | ErrorCode::NotImplemented
            | ErrorCode::RateLimited
    )
}

fn preimage_matches(preimage: &str, payment_hash: &str) -> bool {
    let Ok(bytes) = hex::decode(preimage) else {
        return false;
    };
    sha256::Hash::hash(&bytes).to_string() == payment_hash
}

fn invoice_status(hash: &str, found: LookupInvoiceResponse, now: u64) -> InvoiceStatus {
    if !found.payment_hash.eq_ignore_ascii_case(hash) {
        return InvoiceStatus::Unknown("the wallet answered about another invoice".into());
    }
    let settled = match found.state {
        Some(TransactionState::Settled) => true,
        // Older services send no state: a settlement time means paid (NIP-47).
        None => found.settled_at.is_some(),
        Some(_) => false,
    };
    if settled {
        return InvoiceStatus::Settled {
            amount: Msat::from_msat(found.amount),
            settled_at: found.settled_at.map_or(now, |t| t.as_secs()),
        };
    }
    match found.state {
        Some(TransactionState::Expired) => InvoiceStatus::Expired,
        Some(TransactionState::Failed) => InvoiceStatus::Unknown("the wallet says failed".into()),
        _ if found.expires_at.is_some_and(|t| t.as_secs() <= now) => InvoiceStatus::Expired,
        _ => InvoiceStatus::Open,
    }
}

/// A `lookup_invoice` for an outgoing payment that got no transaction back. Only the wallet's
/// own, explicit `NOT_FOUND` means it has no such payment; a timeout, a relay error or any
/// other code says nothing.
fn lookup_error_status(e: &nwc::Error) -> PaymentStatus {
    match wallet_error(e) {
        Some(err) if err.code == ErrorCode::NotFound => PaymentStatus::NotFound,
        _ => PaymentStatus::Unknown(e.to_string()),
    }
}

/// An outgoing payment of ours, as the wallet's `lookup_invoice` answer describes it.
fn payment_status(hash: &str, found: LookupInvoiceResponse) -> PaymentStatus {
    if !found.payment_hash.eq_ignore_ascii_case(hash) {
        return PaymentStatus::Unknown("the wallet answered about another payment".into());
    }
    if found.transaction_type == Some(TransactionType::Incoming) {
        return PaymentStatus::Unknown(
            "the wallet holds an invoice of ours under this hash".into(),
        );
    }
    match (found.state, found.preimage) {
        (Some(TransactionState::Failed), _) => {
            PaymentStatus::Failed("the wallet says the payment failed".into())
        }
        (_, Some(preimage)) if preimage_matches(&preimage, hash) => PaymentStatus::Settled {
            preimage: preimage.to_ascii_lowercase(),
            fee: Msat::from_msat(found.fees_paid),
        },
        (state, _) => PaymentStatus::Unknown(format!("wallet state {state:?}")),
    }
}

#[async_trait]
impl LightningBackend for NwcLightning {
    fn name(&self) -> &'static str {
        "nwc"
    }

    async fn create_invoice(
        &self,
        amount: Msat,
        description: InvoiceDescription,
        expiry_secs: u64,
    ) -> Result<IssuedInvoice, LightningError> {
        let (description, description_hash) = match description {
            InvoiceDescription::Text(text) => (Some(text), None),
            InvoiceDescription::Hash(hash) => (None, Some(hex::encode(hash))),
        };
        let made = self
            .client
            .make_invoice(MakeInvoiceRequest {
                amount: amount.as_msat(),
                description,
                description_hash,
                expiry: Some(expiry_secs),
            })
            .await
            .map_err(|e| match wallet_error(&e) {
                Some(err) => LightningError::Refused(err.to_string()),
                None => LightningError::Unreachable(e.to_string()),
            })?;
        let invoice = Invoice::parse_as(&made.invoice, Role::Payee)?;
        if invoice.amount() != Some(amount) {
            return Err(LightningError::BadAnswer(format!(
                "invoice for {:?} msat, asked for {} msat",
                invoice.amount().map(Msat::as_msat),
                amount.as_msat()
            )));
        }
        if let Some(hash) = &made.payment_hash {
            if !hash.eq_ignore_ascii_case(&invoice.payment_hash()) {
                return Err(LightningError::BadAnswer(
                    "payment hash differs from the invoice's".into(),
                ));
            }
        }
        Ok(IssuedInvoice {
            bolt11: invoice.as_str().to_owned(),
            payment_hash: invoice.payment_hash(),
        })
    }

    async fn lookup_invoice(&self, payment_hash: &str) -> InvoiceStatus {
        let asked = LookupInvoiceRequest {
            payment_hash: Some(payment_hash.to_owned()),
            invoice: None,
        };
        match self.client.lookup_invoice(asked).await {
            Ok(found) => invoice_status(payment_hash, found, unix_now()),
            Err(e) => InvoiceStatus::Unknown(e.to_string()),
        }
    }

    /// NIP-47 `pay_invoice` has no fee limit: the cap is checked on the answer (a wallet
    /// budget is the operator's real limit). The invoice is checked before it is sent.
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> PaymentStatus {
        let invoice = match Invoice::parse_payable(bolt11, unix_now()) {
            Ok((invoice, _)) => invoice,
            Err(e) => return PaymentStatus::Failed(e.to_string()),
        };
        match self
            .client
            .pay_invoice(PayInvoiceRequest::new(invoice.as_str()))
            .await
        {
            Ok(paid) if preimage_matches(&paid.preimage, &invoice.payment_hash()) => {
                let fee = Msat::from_msat(paid.fees_paid.unwrap_or(0));
                if fee > max_fee {
                    tracing::warn!(
                        fee = fee.as_msat(),
                        cap = max_fee.as_msat(),
                        "the wallet paid more in fees than the cap"
                    );
                }
                PaymentStatus::Settled {
                    preimage: paid.preimage.to_ascii_lowercase(),
                    fee,
                }
            }
            Ok(_) => PaymentStatus::Unknown("the wallet's preimage does not match".into()),
            Err(e) => match wallet_error(&e) {
                Some(err) if explicitly_not_paid(&err.code) => {
                    PaymentStatus::Failed(err.to_string())
                }
                _ => PaymentStatus::Unknown(e.to_string()),
            },
        }
    }

    async fn lookup_payment(&self, payment_hash: &str) -> PaymentStatus {
        let asked = LookupInvoiceRequest {
            payment_hash: Some(payment_hash.to_owned()),
            invoice: None,
        };
        match self.client.lookup_invoice(asked).await {
            Ok(found) => payment_status(payment_hash, found),
            Err(e) => lookup_error_status(&e),
        }
    }

    async fn balance(&self) -> Result<Msat, LightningError> {
        self.client
            .get_balance()
            .await
            .map(Msat::from_msat)
            .map_err(|e| match wallet_error(&e) {
                // The wallet answered (e.g. it does not grant get_balance).
                Some(err) => LightningError::Refused(err.to_string()),
                None => LightningError::Unreachable(e.to_string()),
            })
    }

    fn settlements(&self) -> Option<broadcast::Receiver<Settlement>> {
        None
    }
}

fn unix_now() -> u64 {
    crate::node::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::Timestamp;

    fn found(hash: &str) -> LookupInvoiceResponse {
        LookupInvoiceResponse {
            transaction_type: None,
            state: None,
            invoice: None,
            description: None,
            description_hash: None,
            preimage: None,
            payment_hash: hash.to_owned(),
            amount: 5_000,
            fees_paid: 0,
            created_at: Timestamp::from_secs(100),
            expires_at: Some(Timestamp::from_secs(200)),
            settled_at: None,
            metadata: None,
        }
    }

    #[test]
    fn lookups_map_to_tri_state_statuses() {
        let h = "ab".repeat(32);
        assert_eq!(invoice_status(&h, found(&h), 150), InvoiceStatus::Open);
        assert_eq!(invoice_status(&h, found(&h), 200), InvoiceStatus::Expired);
        let mut paid = found(&h);
        paid.settled_at = Some(Timestamp::from_secs(150));
        assert_eq!(
            invoice_status(&h, paid.clone(), 300),
            InvoiceStatus::Settled {
                amount: Msat::from_msat(5_000),
                settled_at: 150
            }
        );
        paid.state = Some(TransactionState::Pending);
        assert_eq!(invoice_status(&h, paid, 150), InvoiceStatus::Open);
        let other = found(&"cd".repeat(32));
        assert!(matches!(
            invoice_status(&h, other, 150),
            InvoiceStatus::Unknown(_)
        ));
    }

    #[test]
    fn payment_lookups_map_to_statuses_and_only_not_found_means_no_record() {
        let preimage = [9u8; 32];
        let h = sha256::Hash::hash(&preimage).to_string();
        let mut sent = found(&h);
        sent.transaction_type = Some(TransactionType::Outgoing);
        sent.state = Some(TransactionState::Settled);
        sent.preimage = Some(hex::encode(preimage).to_ascii_uppercase());
        sent.fees_paid = 3;
        assert_eq!(
            payment_status(&h, sent.clone()),
            PaymentStatus::Settled {
                preimage: hex::encode(preimage),
                fee: Msat::from_msat(3)
            }
        );
        let mut failed = sent.clone();
        failed.state = Some(TransactionState::Failed);
        failed.preimage = None;
        assert!(matches!(
            payment_status(&h, failed),
            PaymentStatus::Failed(_)
        ));
        let mut pending = sent.clone();
        pending.state = Some(TransactionState::Pending);
        pending.preimage = None;
        let mut wrong_preimage = sent.clone();
        wrong_preimage.preimage = Some(hex::encode([8u8; 32]));
        let mut incoming = sent.clone();
        incoming.transaction_type = Some(TransactionType::Incoming);
        for unknown in [pending, wrong_preimage, incoming, found(&"cd".repeat(32))] {
            assert!(matches!(
                payment_status(&h, unknown),
                PaymentStatus::Unknown(_)
            ));
        }

        let code = |code| {
            nwc::Error::NIP47(nip47::Error::ErrorCode(nip47::NIP47Error {
                code,
                message: "x".into(),
            }))
        };
        assert_eq!(
            lookup_error_status(&code(ErrorCode::NotFound)),
            PaymentStatus::NotFound
        );
        for other in [
            code(ErrorCode::Internal),
            code(ErrorCode::Other),
            code(ErrorCode::RateLimited),
            nwc::Error::PrematureExit,
            nwc::Error::Timeout,
        ] {
            assert!(matches!(
                lookup_error_status(&other),
                PaymentStatus::Unknown(_)
            ));
        }
    }

    #[test]
    fn only_explicit_refusals_count_as_failed_and_preimages_are_checked() {
        assert!(explicitly_not_paid(&ErrorCode::PaymentFailed));
        assert!(!explicitly_not_paid(&ErrorCode::Internal));
        assert!(!explicitly_not_paid(&ErrorCode::Other));
        assert!(!explicitly_not_paid(&ErrorCode::NotFound));
        let preimage = [9u8; 32];
        let hash = sha256::Hash::hash(&preimage).to_string();
        assert!(preimage_matches(&hex::encode(preimage), &hash));
        assert!(!preimage_matches(&hex::encode([8u8; 32]), &hash));
        assert!(!preimage_matches("zz", &hash));
    }

    #[test]
    fn a_bad_uri_is_refused_without_echoing_it() {
        let secret = Secret::new("nostr+walletconnect://nothex?secret=verysecret".to_owned());
        let err = NwcLightning::new(&secret, Duration::from_secs(1)).unwrap_err();
        assert!(!err.to_string().contains("verysecret"), "{err}");
    }
}

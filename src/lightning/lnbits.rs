//! LNbits backend: one LNbits wallet reached over its REST API (checked against LNbits 1.6.2).
//!
//! Two keys, kept apart: the wallet's *invoice key* creates and looks up invoices and reads the
//! balance; the *admin key*, which can spend, is used for paying (refunds) only, and is optional:
//! without it [`LightningBackend::pay_invoice`] refuses before sending anything.
//!
//! Every answer is checked: an issued invoice must parse, carry the amount and description asked
//! for and the hash LNbits reported; a preimage must hash to the payment hash; a row must be
//! about the hash asked and go in the right direction. LNbits sends no settlement notification
//! we use, so the node polls (see [`watch`](super::watch)). Keys travel only in the `X-Api-Key`
//! header (marked sensitive) and never appear in errors, logs or `Debug`.

/// LNbits' answers and what they mean: pure, public for the fuzz target (`fuzz/`).
pub mod answers;
/// The wallet's payment list, page by page (for `paydvm reconcile`).
mod history;

use std::time::Duration;

use async_trait::async_trait;
use nostr_sdk::Url;
use paydvm_ledger::Msat;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use self::answers::{ErrorBody, Lookup, PaymentRow, WalletInfo};
use super::bolt11::{Description, Invoice, Role};
use super::{
    InvoiceDescription, InvoiceStatus, IssuedInvoice, LightningBackend, LightningError,
    PaymentStatus, Settlement,
};
use crate::config::Secret;

/// Largest answer body read from LNbits (a payment row is about 1 KiB).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// LNbits cuts memos at this many characters.
pub const MAX_MEMO_CHARS: usize = 640;
/// What [`LightningBackend::pay_invoice`] answers when no admin key is configured.
pub const NO_ADMIN_KEY: &str = "refunds need the admin key";

/// An LNbits wallet.
pub struct LnbitsLightning {
    http: reqwest::Client,
    /// Ends with `/`, so API paths join below it (LNbits may live under a path prefix).
    base: Url,
    invoice_key: HeaderValue,
    admin_key: Option<HeaderValue>,
}

impl std::fmt::Debug for LnbitsLightning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LnbitsLightning")
            .field("origin", &self.base.origin().ascii_serialization())
            .field("can_pay", &self.admin_key.is_some())
            .finish_non_exhaustive()
    }
}

/// Which key a request carries.
#[derive(Clone, Copy)]
enum Key {
    Invoice,
    Admin,
}

/// An answer that came back, whatever its status.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("unexpected JSON from LNbits: {e}"))
    }

    fn error(&self) -> ErrorBody {
        ErrorBody::parse(&self.body)
    }

    /// The status and LNbits' own message, for errors.
    fn describe(&self) -> String {
        format!("HTTP {}: {}", self.status.as_u16(), self.error().detail())
    }
}

/// `POST /api/v1/payments` (incoming) answers the new payment row plus the invoice.
#[derive(Deserialize)]
struct CreatedInvoice {
    payment_hash: String,
    bolt11: String,
}

impl LnbitsLightning {
    /// `timeout` bounds each HTTP round trip. Nothing is sent until the first call.
    pub fn new(
        url: &Url,
        invoice_key: &Secret<String>,
        admin_key: Option<&Secret<String>>,
        timeout: Duration,
    ) -> Result<LnbitsLightning, LightningError> {
        let header = |name: &str, key: &Secret<String>| {
            let mut value = HeaderValue::from_str(key.expose().trim()).map_err(|_| {
                LightningError::Refused(format!("the LNbits {name} is not a valid header value"))
            })?;
            value.set_sensitive(true);
            Ok::<_, LightningError>(value)
        };
        if url.scheme() == "http" && !is_loopback(url) {
            tracing::warn!(
                origin = %url.origin().ascii_serialization(),
                "LNbits over plain http to another host: its keys cross the network in clear"
            );
        }
        let mut base = url.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LightningError::Refused(format!("HTTP client: {e}")))?;
        Ok(LnbitsLightning {
            http,
            base,
            invoice_key: header("invoice key", invoice_key)?,
            admin_key: admin_key.map(|k| header("admin key", k)).transpose()?,
        })
    }

    /// Sends one request; `Err` when no answer came back (the request may still have arrived).
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Key,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, String> {
        let key = match key {
            Key::Invoice => &self.invoice_key,
            Key::Admin => self.admin_key.as_ref().ok_or(NO_ADMIN_KEY)?,
        };
        let url = self
            .base
            .join(path)
            .map_err(|e| format!("bad LNbits path: {e}"))?;
        let mut request = self
            .http
            .request(method, url)
            .header("X-Api-Key", key.clone());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("LNbits unreachable: {}", e.without_url()))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("LNbits answer cut: {}", e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err("LNbits answer too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body })
    }

    /// Our wallet's row for `hash`: `Ok(None)` when LNbits says it has none (its own 404,
    /// "Payment does not exist."; any other 404, e.g. a proxy's or a wrong path, is an error).
    async fn lookup(&self, hash: &str) -> Result<Option<Lookup>, String> {
        if !answers::is_payment_hash(hash) {
            return Err("not a payment hash".into());
        }
        let answer = self
            .call(
                Method::GET,
                &format!("api/v1/payments/{}", hash.to_ascii_lowercase()),
                Key::Invoice,
                None,
            )
            .await?;
        match answer.status {
            StatusCode::OK => answer.json().map(Some),
            StatusCode::NOT_FOUND if answer.error().says_no_such_payment() => Ok(None),
            _ => Err(answer.describe()),
        }
    }

    /// LNbits refused to pay `hash` (an explicit "failed"). It also says so for an invoice that
    /// is already paid, including by us on an earlier try whose answer was lost: our own row
    /// decides. LNbits shows a row's details only to its wallet's key and hides other wallets'
    /// rows from a valid key (404), so a row without details means our invoice key is not
    /// valid and nothing can be confirmed.
    async fn confirm_refusal(&self, hash: &str, refusal: String) -> PaymentStatus {
        match self.lookup(hash).await {
            Ok(None) => PaymentStatus::Failed(refusal),
            Ok(Some(found)) => match found.details {
                Some(row) => match answers::payment_status(hash, &row, found.preimage.as_deref()) {
                    PaymentStatus::Failed(_) => PaymentStatus::Failed(refusal),
                    other => other,
                },
                None => PaymentStatus::Unknown(format!(
                    "{refusal}; then LNbits did not recognise the invoice key"
                )),
            },
            Err(e) => PaymentStatus::Unknown(format!("{refusal}; then {e}")),
        }
    }
}

/// Checks an invoice LNbits says it created for us.
fn check_issued(
    created: CreatedInvoice,
    amount: Msat,
    description: &InvoiceDescription,
) -> Result<IssuedInvoice, LightningError> {
    let invoice = Invoice::parse_as(&created.bolt11, Role::Payee)?;
    if invoice.amount() != Some(amount) {
        return Err(LightningError::BadAnswer(format!(
            "invoice for {:?} msat, asked for {} msat",
            invoice.amount().map(Msat::as_msat),
            amount.as_msat()
        )));
    }
    if !created
        .payment_hash
        .eq_ignore_ascii_case(&invoice.payment_hash())
    {
        return Err(LightningError::BadAnswer(
            "payment hash differs from the invoice's".into(),
        ));
    }
    let described_as_asked = match (description, invoice.description()) {
        (InvoiceDescription::Hash(asked), Description::Hash(got)) => *asked == got,
        // An empty memo becomes LNbits' site title.
        (InvoiceDescription::Text(asked), Description::Text(got)) => {
            asked.is_empty() || *asked == got
        }
        _ => false,
    };
    if !described_as_asked {
        return Err(LightningError::BadAnswer(
            "the invoice's description is not the one asked for".into(),
        ));
    }
    Ok(IssuedInvoice {
        bolt11: invoice.as_str().to_owned(),
        payment_hash: invoice.payment_hash(),
    })
}

#[async_trait]
impl LightningBackend for LnbitsLightning {
    fn name(&self) -> &'static str {
        "lnbits"
    }

    /// LNbits invoices are in whole sats: another amount is refused rather than rounded.
    async fn create_invoice(
        &self,
        amount: Msat,
        description: InvoiceDescription,
        expiry_secs: u64,
    ) -> Result<IssuedInvoice, LightningError> {
        if amount.is_zero() || amount.whole_sat_floor() * 1_000 != amount.as_msat() {
            return Err(LightningError::Amount(format!(
                "LNbits makes invoices in whole sats; {} msat is not",
                amount.as_msat()
            )));
        }
        let mut request = json!({
            "out": false,
            "unit": "sat",
            "amount": amount.whole_sat_floor(),
            "expiry": expiry_secs.clamp(1, i64::MAX as u64),
        });
        match &description {
            InvoiceDescription::Text(text) => {
                if text.chars().count() > MAX_MEMO_CHARS {
                    return Err(LightningError::Refused(format!(
                        "LNbits keeps at most {MAX_MEMO_CHARS} characters of a description"
                    )));
                }
                request["memo"] = json!(text);
            }
            InvoiceDescription::Hash(hash) => {
                request["description_hash"] = json!(hex::encode(hash))
            }
        }
        let answer = self
            .call(Method::POST, "api/v1/payments", Key::Invoice, Some(request))
            .await
            .map_err(LightningError::Unreachable)?;
        match answer.status {
            StatusCode::OK | StatusCode::CREATED => {
                let created = answer.json().map_err(LightningError::BadAnswer)?;
                check_issued(created, amount, &description)
            }
            s if s.is_client_error() || s.as_u16() == 520 => {
                Err(LightningError::Refused(answer.describe()))
            }
            _ => Err(LightningError::Unreachable(answer.describe())),
        }
    }

    async fn lookup_invoice(&self, payment_hash: &str) -> InvoiceStatus {
        match self.lookup(payment_hash).await {
            Ok(Some(found)) => answers::invoice_status(payment_hash, found, unix_now()),
            Ok(None) => InvoiceStatus::Unknown("LNbits has no such invoice".into()),
            Err(e) => InvoiceStatus::Unknown(e),
        }
    }

    /// LNbits takes no fee limit (it reserves max(2 sat, 1 %) itself): the cap is checked on
    /// the answer. The invoice is checked before it is sent.
    async fn pay_invoice(&self, bolt11: &str, max_fee: Msat) -> PaymentStatus {
        if self.admin_key.is_none() {
            return PaymentStatus::Failed(NO_ADMIN_KEY.into());
        }
        let invoice = match Invoice::parse_payable(bolt11, unix_now()) {
            Ok((invoice, _)) => invoice,
            Err(e) => return PaymentStatus::Failed(e.to_string()),
        };
        let hash = invoice.payment_hash();
        let request = json!({ "out": true, "bolt11": invoice.as_str() });
        let answer = match self
            .call(Method::POST, "api/v1/payments", Key::Admin, Some(request))
            .await
        {
            Ok(answer) => answer,
            Err(e) => return PaymentStatus::Unknown(e),
        };
        let status = match answer.status {
            StatusCode::OK | StatusCode::CREATED => match answer.json::<PaymentRow>() {
                Ok(row) => answers::payment_status(&hash, &row, None),
                Err(e) => PaymentStatus::Unknown(e),
            },
            // The key check refused the request before the pay handler ran.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                PaymentStatus::Failed(answer.describe())
            }
            StatusCode::BAD_REQUEST => self.confirm_refusal(&hash, answer.describe()).await,
            s if s.as_u16() == 520 => match answer.error().status.as_deref() {
                Some(answers::FAILED) => self.confirm_refusal(&hash, answer.describe()).await,
                // "already paid": by us, our row shows it; otherwise it stays unknown.
                Some(answers::SUCCESS) => match self.lookup_payment(&hash).await {
                    PaymentStatus::Failed(e) => PaymentStatus::Unknown(e),
                    PaymentStatus::NotFound => PaymentStatus::Unknown(
                        "LNbits says already paid, and not by this wallet".into(),
                    ),
                    other => other,
                },
                _ => PaymentStatus::Unknown(answer.describe()),
            },
            _ => PaymentStatus::Unknown(answer.describe()),
        };
        if let PaymentStatus::Settled { fee, .. } = &status {
            if *fee > max_fee {
                tracing::warn!(
                    fee = fee.as_msat(),
                    cap = max_fee.as_msat(),
                    "LNbits paid more in fees than the cap"
                );
            }
        }
        status
    }

    async fn lookup_payment(&self, payment_hash: &str) -> PaymentStatus {
        match self.lookup(payment_hash).await {
            Ok(Some(found)) => match found.details {
                Some(row) => answers::payment_status(payment_hash, &row, found.preimage.as_deref()),
                None => PaymentStatus::Unknown("LNbits gave no details of our payment".into()),
            },
            // LNbits' definite "no row for this wallet" (with an invalid key: for any wallet).
            // A pay request still on its way is not here yet either: the refund desk trusts
            // this only when two look-ups some time apart agree.
            Ok(None) => PaymentStatus::NotFound,
            Err(e) => PaymentStatus::Unknown(e),
        }
    }

    async fn balance(&self) -> Result<Msat, LightningError> {
        let answer = self
            .call(Method::GET, "api/v1/wallet", Key::Invoice, None)
            .await
            .map_err(LightningError::Unreachable)?;
        if answer.status != StatusCode::OK {
            return Err(if answer.status.is_client_error() {
                LightningError::Refused(answer.describe())
            } else {
                LightningError::Unreachable(answer.describe())
            });
        }
        let wallet: WalletInfo = answer.json().map_err(LightningError::BadAnswer)?;
        u64::try_from(wallet.balance)
            .map(Msat::from_msat)
            .map_err(|_| LightningError::BadAnswer(format!("balance {} msat", wallet.balance)))
    }

    fn settlements(&self) -> Option<broadcast::Receiver<Settlement>> {
        None
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

fn unix_now() -> u64 {
    crate::node::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_out_of_debug_and_errors() {
        let url = Url::parse("http://user:pw@127.0.0.1:5000/lnbits").unwrap();
        let backend = LnbitsLightning::new(
            &url,
            &Secret::new("invoicekeysecret".into()),
            Some(&Secret::new("adminkeysecret".into())),
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{backend:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
        assert_eq!(backend.base.path(), "/lnbits/");
        for (url, loopback) in [
            ("http://127.0.0.1:5000", true),
            ("http://[::1]:5000", true),
            ("http://localhost", true),
            ("http://10.0.0.1", false),
            ("https://lnbits.example.com", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).unwrap()), loopback, "{url}");
        }
        let err = LnbitsLightning::new(
            &url,
            &Secret::new("bad\nkeysecret".into()),
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn without_an_admin_key_nothing_is_paid_and_odd_amounts_are_refused() {
        // Port 9 (discard) on loopback: any request that went out would fail as Unknown /
        // Unreachable, so the explicit answers below prove nothing was sent.
        let url = Url::parse("http://127.0.0.1:9").unwrap();
        let backend =
            LnbitsLightning::new(&url, &Secret::new("k".into()), None, Duration::from_secs(1))
                .unwrap();
        assert_eq!(
            backend.pay_invoice("lnbc1", Msat::ZERO).await,
            PaymentStatus::Failed(NO_ADMIN_KEY.into())
        );
        assert!(matches!(
            backend
                .create_invoice(
                    Msat::from_msat(1_500),
                    InvoiceDescription::Text("x".into()),
                    60
                )
                .await,
            Err(LightningError::Amount(_))
        ));
        assert!(matches!(
            backend.lookup_invoice("../wallet").await,
            InvoiceStatus::Unknown(reason) if reason == "not a payment hash"
        ));
    }
}

//! The payer's side of a zap, as a wallet does it: sign a 9734, fetch the recipient's LNURL-pay
//! endpoint, ask its callback for an invoice and check that invoice before "paying" it.

use std::str::FromStr;

use bitcoin::hashes::{sha256, Hash};
use lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescriptionRef};
use nostr_sdk::prelude::{
    Event, EventBuilder, EventId, JsonUtil, Keys, Kind, PublicKey, RelayUrl, Tag,
};
use paydvm_ledger::Msat;

use paydvm::payments::lnurl::{self, LnurlError, LnurlHttp, Lud16};
use paydvm::payments::zap::ZAP_REQUEST_KIND;

/// What to zap.
pub struct ZapOrder<'a> {
    pub lud16: &'a Lud16,
    /// Loopback hosts allowed, over plain http (tests, the demo); otherwise public hosts only.
    pub http_loopback: bool,
    pub recipient: PublicKey,
    /// The event zapped (a job's payment-required feedback, or its request).
    pub target: EventId,
    pub amount: Msat,
    /// Where the receipt is to be published.
    pub relays: &'a [RelayUrl],
}

/// A zap invoice, checked, with the zap request it pays.
pub struct ZapInvoice {
    pub zap_request: Event,
    pub bolt11: String,
}

/// Signs the zap request and gets its invoice. Refuses an invoice whose amount or description
/// hash is not what was asked.
pub async fn request_zap_invoice(
    payer: &Keys,
    order: &ZapOrder<'_>,
) -> Result<ZapInvoice, LnurlError> {
    let invalid = |why: &str| LnurlError::Invalid(why.to_owned());
    let http = LnurlHttp::loopback(order.http_loopback)?;
    let endpoint = lnurl::fetch_pay_endpoint(&http, http.pay_url(order.lud16)?).await?;
    endpoint.zap_signer()?;
    let mut relays = vec!["relays".to_owned()];
    relays.extend(order.relays.iter().map(|r| r.to_string()));
    let tag = |values: Vec<String>| Tag::parse(values).map_err(|_| invalid("bad tag"));
    let zap_request = EventBuilder::new(Kind::from(ZAP_REQUEST_KIND), "")
        .tags([
            tag(relays)?,
            tag(vec!["amount".into(), order.amount.as_msat().to_string()])?,
            tag(vec!["p".into(), order.recipient.to_hex()])?,
            tag(vec!["e".into(), order.target.to_hex()])?,
        ])
        .sign_with_keys(payer)
        .map_err(|e| LnurlError::Invalid(e.to_string()))?;
    let json = zap_request.as_json();
    let bolt11 = lnurl::request_invoice(&http, &endpoint, order.amount, Some(&json)).await?;
    let invoice = Bolt11Invoice::from_str(&bolt11)
        .map_err(|_| invalid("the callback's invoice does not parse"))?;
    if invoice.amount_milli_satoshis() != Some(order.amount.as_msat()) {
        return Err(invalid("the callback's invoice is for another amount"));
    }
    let expected = sha256::Hash::hash(json.as_bytes());
    if !matches!(invoice.description(), Bolt11InvoiceDescriptionRef::Hash(h) if h.0 == expected) {
        return Err(invalid(
            "the callback's invoice does not commit to the zap request",
        ));
    }
    Ok(ZapInvoice {
        zap_request,
        bolt11,
    })
}

//! Real, signed regtest BOLT 11 invoices made from a given key and preimage: what the testkit
//! zapper issues, and what the zap-vector unit tests and the fuzz targets build their inputs with.

use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret};

/// The CLTV delta every zapper invoice asks for (the BOLT 11 default).
const MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 18;

/// What goes into one invoice.
pub struct InvoiceSpec {
    pub amount_msat: u64,
    /// `h`: for a zap, SHA-256 of the exact zap request JSON.
    pub description_hash: sha256::Hash,
    pub preimage: [u8; 32],
    /// The invoice timestamp (unix time).
    pub created: Duration,
    pub expiry: Duration,
}

/// Builds and signs (with `node_key`) a regtest invoice; its payment hash is
/// SHA-256(`spec.preimage`).
pub fn regtest_invoice(
    node_key: &SecretKey,
    spec: &InvoiceSpec,
) -> Result<Bolt11Invoice, lightning_invoice::CreationError> {
    let secp = Secp256k1::new();
    // The payment secret only has to be unpredictable to third parties; deriving it from the
    // preimage keeps invoice building deterministic for tests.
    let secret = sha256::Hash::hash(&[&spec.preimage[..], b"payment-secret"].concat());
    InvoiceBuilder::new(Currency::Regtest)
        .amount_milli_satoshis(spec.amount_msat)
        .description_hash(spec.description_hash)
        .payment_hash(sha256::Hash::hash(&spec.preimage))
        .payment_secret(PaymentSecret(secret.to_byte_array()))
        .duration_since_epoch(spec.created)
        .expiry_time(spec.expiry)
        .min_final_cltv_expiry_delta(MIN_FINAL_CLTV_EXPIRY_DELTA)
        .build_signed(|hash| secp.sign_ecdsa_recoverable(hash, node_key))
}

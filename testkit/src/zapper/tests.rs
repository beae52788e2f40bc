//! The zapper with and without a wallet behind it: who signs the invoice, and where the money
//! goes when it is "paid".

use bitcoin::hashes::{sha256, Hash};
use nostr_sdk::prelude::Keys;
use paydvm_ledger::Msat;

use super::customer::{request_zap_invoice, ZapOrder};
use super::*;
use paydvm::lightning::{Invoice, InvoiceStatus, LightningBackend};
use paydvm::node::local_relay::start_local_relay;
use paydvm::payments::zap::{verify_receipt, ZapExpectation};

const AMOUNT: Msat = Msat::from_msat(5_000);

/// A zap of `AMOUNT` through `zapper`, taking zaps for `recipient`: the invoice and the zap
/// request's relays.
async fn zap_invoice(zapper: &Zapper, recipient: PublicKey, relays: &[RelayUrl]) -> String {
    let paid = request_zap_invoice(
        &Keys::generate(),
        &ZapOrder {
            lud16: &zapper.lud16(),
            http_loopback: true,
            recipient,
            target: nostr_sdk::prelude::EventId::all_zeros(),
            amount: AMOUNT,
            relays,
        },
    )
    .await
    .unwrap();
    paid.bolt11
}

#[tokio::test]
async fn with_a_wallet_the_zap_invoice_is_the_wallets_and_settling_pays_it_there() {
    let (_relay, url) = start_local_relay().await.unwrap();
    let recipient = Keys::generate().public_key();
    let wallet = FakeLightning::without_notifications();
    let mut options = ZapperOptions::new("dvm", recipient);
    options.wallet = Some(wallet.clone());
    let zapper = Zapper::start(options).await.unwrap();

    let bolt11 = zap_invoice(&zapper, recipient, &[url]).await;
    let invoice = Invoice::parse(&bolt11).unwrap();
    assert_eq!(invoice.payee(), wallet.node_id(), "made in the wallet");
    let hash = invoice.payment_hash();
    assert_eq!(wallet.lookup_invoice(&hash).await, InvoiceStatus::Open);
    assert_eq!(wallet.balance().await.unwrap(), Msat::ZERO);

    let receipt = zapper.settle(&bolt11).await.unwrap();
    assert!(matches!(
        wallet.lookup_invoice(&hash).await,
        InvoiceStatus::Settled { amount, .. } if amount == AMOUNT
    ));
    assert_eq!(
        wallet.balance().await.unwrap(),
        AMOUNT,
        "the money is there"
    );
    // The receipt carries the wallet's preimage for that invoice.
    let preimage = receipt
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t[0] == "preimage")
        .map(|t| t[1].clone())
        .unwrap();
    assert_eq!(
        sha256::Hash::hash(&hex::decode(preimage).unwrap()).to_string(),
        hash
    );
    let expect = ZapExpectation {
        lnurl_signer: zapper.nostr_pubkey(),
        recipient,
    };
    let verified = verify_receipt(&receipt, &expect).unwrap();
    assert_eq!((verified.amount, verified.payment_hash), (AMOUNT, hash));
    assert!(matches!(
        zapper.settle(&bolt11).await,
        Err(ZapperError::AlreadySettled)
    ));
    assert_eq!(wallet.balance().await.unwrap(), AMOUNT, "paid once");
}

#[tokio::test]
async fn without_a_wallet_the_zapper_signs_its_own_invoices() {
    let (_relay, url) = start_local_relay().await.unwrap();
    let recipient = Keys::generate().public_key();
    let options = ZapperOptions::new("dvm", recipient);
    let own = bitcoin::secp256k1::PublicKey::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::signing_only(),
        &options.node_key,
    );
    let zapper = Zapper::start(options).await.unwrap();
    let bolt11 = zap_invoice(&zapper, recipient, &[url]).await;
    assert_eq!(Invoice::parse(&bolt11).unwrap().payee(), own.to_string());
    zapper.settle(&bolt11).await.unwrap();
    assert!(zapper.issued()[0].settled);
}

#[tokio::test]
async fn an_invoice_the_wallet_will_not_settle_is_not_marked_paid() {
    let recipient = Keys::generate().public_key();
    let wallet = FakeLightning::without_notifications();
    let mut options = ZapperOptions::new("dvm", recipient);
    options.wallet = Some(wallet.clone());
    let zapper = Zapper::start(options).await.unwrap();
    let (_relay, url) = start_local_relay().await.unwrap();
    let bolt11 = zap_invoice(&zapper, recipient, &[url]).await;
    let hash = Invoice::parse(&bolt11).unwrap().payment_hash();
    // Paid behind the zapper's back: the wallet refuses to settle it again, so the zapper
    // publishes no receipt and does not call it settled.
    wallet.settle(&hash).unwrap();
    assert!(matches!(
        zapper.settle(&bolt11).await,
        Err(ZapperError::Wallet(FakeError::AlreadySettled(_)))
    ));
    assert!(!zapper.issued()[0].settled);
}

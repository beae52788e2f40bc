//! `paydvm reconcile` against real backends: a node paid over NWC (cdk-nostr's wallet service on
//! a LocalRelay) and by a NutZap (an in-process cdk mint). Reconcile agrees with both after the
//! payments; money moved outside the ledger (an invoice settled while the node is down, a
//! payment received at the wallet directly, ecash minted into the node's wallet) is reported on
//! the right asset with the right difference, and the command exits 1 without booking anything.

use std::path::Path;
use std::sync::Arc;

use cdk_sqlite::WalletSqliteDatabase;
use nostr_sdk::prelude::*;
use paydvm::config::wallet_path;
use paydvm::lightning::{InvoiceDescription, LightningBackend};
use paydvm_ledger::{JobState, Msat, PaymentRef};
use serde_json::Value;

use crate::cashu::{nutzap, quoted_job_for};
use crate::cashu_mint::{mint_proofs, wallet, wallet_in, CashuSetup};
use crate::cli::{paydvm, stderr, stdout};
use crate::lightning::quoted_invoice;
use crate::node::{is_status, wait_state, Customer};

/// The cashu setup (relay, mint, NutZap key) plus `[lightning]` over NWC to `uri`.
fn add_nwc(s: &CashuSetup, uri: &str) {
    let dir = s.config.parent().unwrap();
    let uri_file = dir.join("nwc.uri");
    std::fs::write(&uri_file, uri).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&uri_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str("\n[lightning]\nbackend = \"nwc\"\nnwc_uri_file = \"nwc.uri\"\n");
    std::fs::write(&s.config, text).unwrap();
}

/// Runs the real binary; returns the exit code and the JSON report.
async fn reconcile_json(config: &Path) -> (i32, Value) {
    let config = config.to_str().unwrap().to_owned();
    let out =
        tokio::task::spawn_blocking(move || paydvm(&["reconcile", "--config", &config, "--json"]))
            .await
            .unwrap();
    let report: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), report)
}

fn asset<'a>(report: &'a Value, account: &str) -> &'a Value {
    report["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .unwrap_or_else(|| panic!("no {account} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_matches_real_backends_then_reports_money_outside_the_ledger() {
    let s = crate::cashu_mint::setup().await;
    let nwc = crate::lightning_nwc::wallet(&s.urls).await;
    add_nwc(&s, &nwc.uri.to_string());
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let mint_account = format!("asset:mint:{}", s.mint.url);

    // Job 1 paid by its quote's invoice, through the NWC wallet.
    let (paid_by_invoice, quote) = quoted_job_for(&mut customer, "one").await;
    let job1 = paid_by_invoice.id.to_hex();
    let invoice1 = quoted_invoice(&quote, &job1);
    nwc.fake.settle(&invoice1.payment_hash()).unwrap();
    customer
        .wait_for(paid_by_invoice.id, |e| e.kind == Kind::Custom(6050))
        .await;
    wait_state(&node, &job1, JobState::Succeeded).await;

    // Job 2 paid by a NutZap at the trusted mint (its invoice stays open).
    let (paid_by_nutzap, quote) = quoted_job_for(&mut customer, "two").await;
    let job2 = paid_by_nutzap.id.to_hex();
    let proofs = mint_proofs(&wallet(&s.mint.url).await, 5, Some(&s.lock())).await;
    let zap = nutzap(
        &customer.keys,
        &proofs,
        &s.mint.url,
        "sat",
        Some(quote.id),
        &node.pubkey(),
        "job 2",
    );
    customer.client.send_event(&zap).await.unwrap();
    customer
        .wait_for(paid_by_nutzap.id, |e| e.kind == Kind::Custom(6050))
        .await;
    wait_state(&node, &job2, JobState::Succeeded).await;

    // Job 3 is quoted and left unpaid while the node runs.
    let (unpaid, quote) = quoted_job_for(&mut customer, "three").await;
    let job3 = unpaid.id.to_hex();
    assert!(is_status("payment-required")(&quote));
    let invoice3 = quoted_invoice(&quote, &job3);

    node.shutdown().await;

    // Everything agrees.
    let (code, report) = reconcile_json(&s.config).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    let lightning = asset(&report, "asset:lightning");
    assert_eq!(lightning["status"], "match", "{lightning:#}");
    assert_eq!(lightning["ledger_msat"], 5_000);
    assert_eq!(lightning["backend_msat"], 5_000);
    let mint = asset(&report, &mint_account);
    assert_eq!(mint["status"], "match", "{report:#}");
    assert_eq!(mint["ledger_msat"], 5_000);
    assert_eq!(mint["backend_msat"], 5_000, "{report:#}");
    let head = s.store().head();

    // Money the ledger does not know: job 3's invoice settles while the node is down, a payment
    // reaches the Lightning wallet from elsewhere, 3 sat are minted into the node's cdk wallet.
    nwc.fake.settle(&invoice3.payment_hash()).unwrap();
    let outside = nwc
        .fake
        .create_invoice(
            Msat::from_msat(7_000),
            InvoiceDescription::Text("not from paydvm".into()),
            600,
        )
        .await
        .unwrap();
    nwc.fake.settle(&outside.payment_hash).unwrap();
    let node_wallet = WalletSqliteDatabase::new(wallet_path(&s.ledger()))
        .await
        .unwrap();
    mint_proofs(&wallet_in(&s.mint.url, Arc::new(node_wallet)), 3, None).await;

    let (code, report) = reconcile_json(&s.config).await;
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["ok"], false);
    let lightning = asset(&report, "asset:lightning");
    assert_eq!(lightning["status"], "backend_has_more", "{lightning:#}");
    assert_eq!(lightning["ledger_msat"], 5_000);
    assert_eq!(lightning["backend_msat"], 17_000);
    assert_eq!(lightning["difference_msat"], 12_000);
    assert_eq!(lightning["unexplained_msat"], 12_000);
    assert_eq!(
        lightning["unbooked_settlements"],
        serde_json::json!([{
            "id": invoice3.payment_hash(),
            "amount_msat": 5_000,
            "job": job3,
        }]),
        "only job 3's invoice is ours and unbooked; job 2's is still open"
    );
    let mint = asset(&report, &mint_account);
    assert_eq!(mint["status"], "backend_has_more", "{mint:#}");
    assert_eq!(mint["ledger_msat"], 5_000);
    assert_eq!(mint["backend_msat"], 8_000);
    assert_eq!(mint["difference_msat"], 3_000);

    // The text form says it too, and reconcile booked nothing.
    let config = s.config.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || paydvm(&["reconcile", "--config", &config]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("asset:lightning  backend_has_more"), "{text}");
    assert!(text.contains(&invoice3.payment_hash()), "{text}");
    assert!(text.contains("reconcile: MISMATCH"), "{text}");
    let store = s.store();
    assert_eq!(store.head(), head, "reconcile wrote to the ledger");
    let hash3 = PaymentRef::new(invoice3.payment_hash()).unwrap();
    assert_eq!(store.state().payment_ref_seq(&hash3), None);
    let job3 = paydvm_ledger::JobId::new(job3).unwrap();
    assert_eq!(store.state().job(&job3).unwrap().state, JobState::Quoted);
}

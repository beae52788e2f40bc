//! `paydvm reconcile` against real backends: a node paid over NWC (cdk-nostr's wallet service on
//! a LocalRelay) and by a NutZap (an in-process cdk mint). Reconcile agrees with both after the
//! payments; money moved outside the ledger (an invoice settled while the node is down, a
//! payment received at the wallet directly, ecash minted into the node's wallet) is reported on
//! the right asset with the right difference, and the command exits 1 without booking anything.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cdk::mint_url::MintUrl;
use cdk::nuts::{CurrencyUnit, Token};
use cdk_sqlite::WalletSqliteDatabase;
use nostr_sdk::prelude::*;
use paydvm::config::{load_key_file, wallet_path};
use paydvm::lightning::fake::PayOutcome;
use paydvm::lightning::{Invoice, InvoiceDescription, LightningBackend, PaymentStatus};
use paydvm::node::NodeHandle;
use paydvm::protocol::nip90::Encryption;
use paydvm_ledger::{Account, FeePayer, JobState, Msat, PaymentRef, RefundId, RefundState};
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};
use serde_json::Value;

use crate::cashu::{nutzap, quoted_job_for};
use crate::cashu_mint::{
    fetch, input_fee, mint_proofs, setup_on, wallet, wallet_balance, wallet_in, CashuSetup,
    TestMint,
};
use crate::cli::{paydvm, paydvm_with_config, stderr, stdout};
use crate::ecash_refunds::{claim, publish_10019, refund_nutzaps};
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
pub async fn reconcile_json(config: &Path) -> (i32, Value) {
    let config = config.to_str().unwrap().to_owned();
    let out =
        tokio::task::spawn_blocking(move || paydvm(&["reconcile", "--config", &config, "--json"]))
            .await
            .unwrap();
    let report: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {} / {}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), report)
}

pub fn asset<'a>(report: &'a Value, account: &str) -> &'a Value {
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

/// Who bears the mint's input fee (`[cashu] input_fees`) in an every-rail run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MintFees {
    Customer,
    Operator,
}

/// The test mint's NUT-02 input fee: 0.4 sat a proof, the sum rounded up. (cdk's wallet splits
/// amounts at a fee-charging mint into more, smaller proofs: the fees below are always worked
/// out from the proofs actually used.)
const MINT_FEE_PPK: u64 = 400;
const PRICE: u64 = 5_000;
/// Operator float put into the NWC wallet and booked with `paydvm float add lightning`: each
/// Lightning refund reserves its 10-sat fee cap from the account.
const LIGHTNING_FLOAT: u64 = 20_000;
/// Carol's prepaid credit, paid into the NWC wallet and recorded by the operator.
const CREDIT: u64 = 5_000;
/// What the wallet charges in routing fees for the two Lightning refunds, in order.
const ROUTING_FEES: [u64; 2] = [1_234, 567];
/// The ecash the operator swaps into the node's wallet as float: enough for the operator-borne
/// fees of two intake and two refund swaps.
const MINT_FLOAT_SAT: u64 = 32;

/// A node paid on every rail: NWC Lightning (the quote's invoice), zaps through our own LNURL
/// server backed by the same NWC wallet, NutZaps and request tokens at one mint that charges an
/// input fee, and prepaid credit. Three customers: Alice (lud16 in her profile, a 10019 at our
/// mint), Bob (no 10019: ecash refunds come by private message), Carol (prepaid credit).
struct EveryRail {
    s: CashuSetup,
    fees: MintFees,
    nwc: crate::lightning_nwc::Wallet,
    /// Our lud16's server; its invoices are the NWC wallet's.
    zapper: Zapper,
    /// Alice's own wallet, where her Lightning refunds go.
    alice_wallet: Arc<Zapper>,
    alice: Customer,
    alice_p2pk: Keys,
    bob: Customer,
    carol: Customer,
    /// What the mint float swap left in the node's wallet, in sat.
    mint_float_sat: u64,
}

/// Money reaching the NWC wallet from outside the node (an invoice made and paid there).
async fn paid_into_the_wallet(nwc: &crate::lightning_nwc::Wallet, msat: u64, what: &str) {
    let invoice = nwc
        .fake
        .create_invoice(
            Msat::from_msat(msat),
            InvoiceDescription::Text(what.into()),
            600,
        )
        .await
        .unwrap();
    nwc.fake.settle(&invoice.payment_hash).unwrap();
}

impl EveryRail {
    async fn new(fees: MintFees) -> EveryRail {
        let cashu = match fees {
            MintFees::Customer => "input_fees = \"customer\"\n",
            MintFees::Operator => "input_fees = \"operator\"\n",
        };
        let s = setup_on(TestMint::with_fee(MINT_FEE_PPK).await, cashu).await;
        let nwc = crate::lightning_nwc::wallet(&s.urls).await;
        add_nwc(&s, &nwc.uri.to_string());
        let dir = s.config.parent().unwrap().to_owned();
        let node_key = load_key_file(&dir.join("paydvm.key"))
            .unwrap()
            .expose()
            .public_key();
        let mut ours = ZapperOptions::new("dvm", node_key);
        ours.wallet = Some(nwc.fake.clone());
        let zapper = Zapper::start(ours).await.unwrap();
        s.add_node_settings(&format!(
            "lud16 = \"{}\"\nlnurl_http_loopback = true",
            zapper.lud16()
        ));

        let alice = Customer::connect(&s.urls).await;
        let alice_wallet = Arc::new(
            Zapper::start(ZapperOptions::new("alice", alice.keys.public_key()))
                .await
                .unwrap(),
        );
        // The NWC wallet learns the payee's preimage when it pays, as a real payment does.
        let payee = Arc::clone(&alice_wallet);
        nwc.fake.learn_preimages_from(Arc::new(move |hash: &str| {
            payee
                .issued()
                .into_iter()
                .find(|i| i.payment_hash == hash)
                .map(|i| i.preimage)
        }));
        let profile = Metadata::new().lud16(alice_wallet.lud16().to_string());
        alice
            .client
            .send_event_builder(EventBuilder::metadata(&profile))
            .await
            .unwrap();
        let alice_p2pk = publish_10019(&s, &alice).await;
        let bob = Customer::connect(&s.urls).await;
        let carol = Customer::connect(&s.urls).await;
        EveryRail {
            s,
            fees,
            nwc,
            zapper,
            alice_wallet,
            alice,
            alice_p2pk,
            bob,
            carol,
            mint_float_sat: 0,
        }
    }

    /// Before the node starts: Carol's credit reaches the NWC wallet and the operator records it
    /// (a manual payment to her credit); the operator swaps a token of their own into the
    /// node's cdk wallet and books it with `paydvm float add mint:<url>` on the stopped node.
    async fn fund_while_stopped(&mut self) {
        paid_into_the_wallet(&self.nwc, CREDIT, "carol's top-up").await;
        crate::node::top_up(&self.s.ledger(), &self.carol.keys.public_key(), CREDIT);

        let url = self.s.mint.url.clone();
        let float_proofs = mint_proofs(&wallet(&url).await, MINT_FLOAT_SAT, None).await;
        let float_fee = input_fee(&self.s.mint, float_proofs.len());
        let token = Token::new(
            MintUrl::from_str(&url).unwrap(),
            float_proofs,
            None,
            CurrencyUnit::Sat,
        )
        .to_string();
        let key =
            paydvm_mints::ReceiveKey::from_secret_bytes(&self.s.p2pk.secret_key().secret_bytes())
                .unwrap();
        let redeemer = paydvm_mints::Redeemer::open(&wallet_path(&self.s.ledger()), key)
            .await
            .unwrap();
        self.mint_float_sat = redeemer.receive_float(&url, "sat", &token).await.unwrap();
        drop(redeemer);
        assert_eq!(
            self.mint_float_sat,
            MINT_FLOAT_SAT - float_fee,
            "the token's worth in, the mint's fee for its proofs out"
        );
        let msat = (self.mint_float_sat * 1000).to_string();
        let (code, said) = paydvm_with_config(
            &self.s.config,
            &[
                "float",
                "add",
                &format!("mint:{url}"),
                &msat,
                "--note",
                "ecash float",
            ],
        );
        assert_eq!(code, 0, "{said}");
        assert!(said.contains("node stopped"), "{said}");
    }

    /// Proofs (locked to `lock` if given) that pay a job exactly: worth the price, or with the
    /// customer bearing the fee, worth the price plus the fee for swapping them.
    async fn ecash_payment(&self, lock: Option<&str>) -> EcashPayment {
        let price = PRICE / 1000;
        let w = wallet(&self.s.mint.url).await;
        for sat in price..price + 10 {
            let proofs = mint_proofs(&w, sat, lock).await;
            let fee = input_fee(&self.s.mint, proofs.len());
            let counted = match self.fees {
                MintFees::Customer => sat - fee,
                MintFees::Operator => sat,
            };
            if counted == price {
                return EcashPayment { proofs, fee };
            }
        }
        panic!("no amount near {price} sat pays a job exactly");
    }
}

/// Ecash that pays one job exactly, and what the mint takes for swapping it (sat).
struct EcashPayment {
    proofs: Vec<cdk::nuts::Proof>,
    fee: u64,
}

impl EcashPayment {
    /// What the intake swap leaves in the node's wallet, in msat.
    fn kept_msat(&self) -> u64 {
        let value: u64 = self.proofs.iter().map(|p| u64::from(p.amount)).sum();
        (value - self.fee) * 1000
    }
}

/// A 5050 job in mode `fail` whose tags (with the `cashu` token) are NIP-44 encrypted to us.
fn encrypted_token_request(customer: &Customer, us: &PublicKey, token: &str) -> Event {
    let inner = serde_json::json!([
        ["i", "abc", "text"],
        ["param", "mode", "fail"],
        ["cashu", token]
    ])
    .to_string();
    let content = Encryption::Nip44
        .encrypt(&customer.keys, us, &inner)
        .unwrap();
    EventBuilder::new(Kind::Custom(5050), content)
        .tags([
            Tag::parse(["p", &us.to_hex()]).unwrap(),
            Tag::parse(["encrypted"]).unwrap(),
        ])
        .sign_with_keys(&customer.keys)
        .unwrap()
}

/// A 5050 request for `text` in mode `fail`, answered with `payment-required`: (job id, the
/// quote). One customer's requests need distinct texts: identical ones signed in the same second
/// are one event, hence one job.
async fn failing_quoted_job(customer: &mut Customer, text: &str) -> (String, Event) {
    let request = customer.request(5050, text, &[&["param", "mode", "fail"]]);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    (request.id.to_hex(), quote)
}

/// One failing job per rail and what it must end as.
struct FailingJobs {
    invoice: String,
    zap: String,
    nutzap: String,
    token: String,
    credit: String,
    /// The NutZap's and the request token's ecash.
    ecash: [EcashPayment; 2],
}

impl FailingJobs {
    fn expected(&self) -> [(&'static str, &str, JobState); 5] {
        [
            ("invoice", &self.invoice, JobState::Refunded),
            ("zap", &self.zap, JobState::Refunded),
            ("nutzap", &self.nutzap, JobState::Refunded),
            ("token", &self.token, JobState::Refunded),
            ("credit", &self.credit, JobState::Credited),
        ]
    }
}

impl EveryRail {
    /// One paid job per rail, each failing on every attempt.
    async fn failing_jobs(&mut self, us: PublicKey) -> FailingJobs {
        let (invoice, quote) = failing_quoted_job(&mut self.alice, "invoice").await;
        let hash = quoted_invoice(&quote, &invoice).payment_hash();
        self.nwc.fake.settle(&hash).unwrap();

        // A zap on the quote, through our lud16: the invoice is the NWC wallet's.
        let (zap, quote) = failing_quoted_job(&mut self.alice, "zap").await;
        let paid = request_zap_invoice(
            &self.alice.keys,
            &ZapOrder {
                lud16: &self.zapper.lud16(),
                http_loopback: true,
                recipient: us,
                target: quote.id,
                amount: Msat::from_msat(PRICE),
                relays: &self.s.urls,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            Invoice::parse(&paid.bolt11).unwrap().payee(),
            self.nwc.fake.node_id()
        );
        self.zapper.settle(&paid.bolt11).await.unwrap();

        let (nutzap, quote) = failing_quoted_job(&mut self.alice, "nutzap").await;
        let zapped = self.ecash_payment(Some(&self.s.lock())).await;
        let event = crate::cashu::nutzap(
            &self.alice.keys,
            &zapped.proofs,
            &self.s.mint.url,
            "sat",
            Some(quote.id),
            &quote.pubkey,
            "pay",
        );
        self.alice.client.send_event(&event).await.unwrap();

        let url = self.s.mint.url.clone();
        let sent = self.ecash_payment(None).await;
        let token = Token::new(
            MintUrl::from_str(&url).unwrap(),
            sent.proofs.clone(),
            None,
            CurrencyUnit::Sat,
        )
        .to_string();
        let request = encrypted_token_request(&self.bob, &us, &token);
        self.bob.client.send_event(&request).await.unwrap();
        let token = request.id.to_hex();

        let request = self
            .carol
            .request(5050, "abc", &[&["param", "mode", "fail"]]);
        self.carol.client.send_event(&request).await.unwrap();
        FailingJobs {
            invoice,
            zap,
            nutzap,
            token,
            credit: request.id.to_hex(),
            ecash: [zapped, sent],
        }
    }

    /// The settled refund of `job`.
    fn refund(&self, job: &str) -> paydvm_ledger::RefundRecord {
        let id = RefundId::new(format!("{job}:fail")).unwrap();
        let r = self.s.store().state().refund(&id).cloned().unwrap();
        assert_eq!(r.state, RefundState::Settled, "{r:?}");
        assert_eq!(r.amount, Msat::from_msat(PRICE));
        r
    }

    /// What an ecash refund token must be worth, in sat: what is owed, less the mint's fee for
    /// making it when the customer bears it.
    fn token_value(&self, refund: &paydvm_ledger::RefundRecord) -> u64 {
        assert!(
            refund.fee.as_msat() > 0,
            "the mint charged for the refund swap"
        );
        match self.fees {
            MintFees::Customer => {
                assert_eq!(refund.fee_paid_by, FeePayer::Customer, "{refund:?}");
                (PRICE - refund.fee.as_msat()) / 1000
            }
            MintFees::Operator => {
                assert_eq!(refund.fee_paid_by, FeePayer::Operator, "{refund:?}");
                PRICE / 1000
            }
        }
    }

    /// Every refund arrived, as the customers see it: two Lightning payments to Alice's wallet
    /// (with the scripted routing fees), a NutZap Alice claims with her 10019 key, a token in a
    /// private message Bob claims.
    async fn check_what_customers_got(&mut self, jobs: &FailingJobs) {
        let paid = self.nwc.fake.payments();
        assert_eq!(paid.len(), 2, "{paid:?}");
        let issued = self.alice_wallet.issued();
        let mut fees = Vec::new();
        for p in &paid {
            assert!(issued.iter().any(|i| i.bolt11 == p.bolt11), "{p:?}");
            assert_eq!(p.amount, Msat::from_msat(PRICE));
            match &p.status {
                PaymentStatus::Settled { fee, .. } => fees.push(fee.as_msat()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(fees, ROUTING_FEES);
        for job in [&jobs.invoice, &jobs.zap] {
            let r = self.refund(job);
            assert!(ROUTING_FEES.contains(&r.fee.as_msat()), "{r:?}");
            assert_eq!(r.fee_paid_by, FeePayer::Operator);
        }

        let value = self.token_value(&self.refund(&jobs.nutzap));
        let zaps = refund_nutzaps(&self.s.urls, &self.alice, &jobs.nutzap).await;
        assert_eq!(zaps.len(), 1, "one refund NutZap");
        let proofs = zaps[0].clone();
        assert_eq!(
            proofs.iter().map(|p| u64::from(p.amount)).sum::<u64>(),
            value
        );
        let fee = input_fee(&self.s.mint, proofs.len());
        let claimed = claim(&self.s, proofs, Some(&self.alice_p2pk)).await;
        assert_eq!(claimed, value - fee);

        let value = self.token_value(&self.refund(&jobs.token));
        let wraps = fetch(
            &self.s.urls,
            Filter::new()
                .kind(Kind::GiftWrap)
                .pubkey(self.bob.keys.public_key()),
        )
        .await;
        assert_eq!(wraps.len(), 1, "one private message");
        let opened = self.bob.client.unwrap_gift_wrap(&wraps[0]).await.unwrap();
        let text = opened.rumor.content;
        assert!(text.contains(&jobs.token), "{text}");
        let token = Token::from_str(text.split_whitespace().last().unwrap()).unwrap();
        assert_eq!(u64::from(token.value().unwrap()), value);
    }
}

/// Waits for `job` (paid on `rail`) to reach `want`, saying which rail did not.
async fn wait_rail(node: &NodeHandle, rail: &str, job: &str, want: JobState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = node.job(job).await.map(|j| j.state);
        if state == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the {rail} job is {state:?}, never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every asset in `report` is `match` to the msat with nothing in flight; returns
/// (account, ledger msat) per asset.
fn all_match(report: &Value) -> Vec<(String, i128)> {
    assert_eq!(report["ok"], true, "{report:#}");
    let assets = report["assets"].as_array().unwrap();
    assets
        .iter()
        .map(|a| {
            assert_eq!(a["status"], "match", "{a:#}");
            assert_eq!(a["difference_msat"], 0, "{a:#}");
            assert_eq!(a["unexplained_msat"], 0, "{a:#}");
            assert_eq!(a["ledger_msat"], a["backend_msat"], "{a:#}");
            for list in [
                "outgoing_in_flight",
                "incoming_in_flight",
                "unbooked_settlements",
            ] {
                assert_eq!(a[list], serde_json::json!([]), "{list}: {a:#}");
            }
            (
                a["account"].as_str().unwrap().to_owned(),
                a["ledger_msat"].as_i64().unwrap().into(),
            )
        })
        .collect()
}

/// The every-rail run: money put in outside the node and booked by the operator, one failing
/// paid job per rail, every refund settled (or the credit back), then the node stopped and
/// `paydvm reconcile` run on it.
async fn every_rail(fees: MintFees) {
    let mut r = EveryRail::new(fees).await;
    r.fund_while_stopped().await;
    let node = r.s.start().await;
    paid_into_the_wallet(&r.nwc, LIGHTNING_FLOAT, "operator float").await;
    let amount = LIGHTNING_FLOAT.to_string();
    let (code, said) = paydvm_with_config(
        &r.s.config,
        &[
            "float",
            "add",
            "lightning",
            &amount,
            "--note",
            "routing-fee float",
        ],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("by the running node"), "{said}");
    for fee in ROUTING_FEES {
        r.nwc.fake.script_payment(PayOutcome::Settle {
            fee: Msat::from_msat(fee),
        });
    }
    let jobs = r.failing_jobs(node.pubkey()).await;
    for (rail, job, want) in jobs.expected() {
        wait_rail(&node, rail, job, want).await;
    }
    node.shutdown().await;
    r.check_what_customers_got(&jobs).await;

    let ledger = r.s.ledger();
    let out = paydvm(&["ledger", "verify", ledger.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let (code, report) = reconcile_json(&r.s.config).await;
    assert_eq!(code, 0, "{report:#}");
    let mint_account = format!("asset:mint:{}", r.s.mint.url);
    let routing: u64 = ROUTING_FEES.iter().sum();
    // Each ecash payment left what it was worth less the intake swap's fee (two proofs) in the
    // wallet; each refund took what was owed, plus the refund swap's fee when it was ours.
    let intake: u64 = jobs.ecash.iter().map(EcashPayment::kept_msat).sum();
    let operator_refund_fees: u64 = [&jobs.nutzap, &jobs.token]
        .iter()
        .map(|job| r.refund(job))
        .filter(|f| f.fee_paid_by == FeePayer::Operator)
        .map(|f| f.fee.as_msat())
        .sum();
    let mint = r.mint_float_sat * 1000 + intake - 2 * PRICE - operator_refund_fees;
    assert_eq!(
        all_match(&report),
        [
            (
                "asset:lightning".to_owned(),
                i128::from(LIGHTNING_FLOAT + CREDIT - routing)
            ),
            (mint_account, i128::from(mint)),
        ]
    );
    assert_eq!(
        wallet_balance(&r.s).await * 1000,
        mint,
        "the wallet, read directly"
    );
    let intake_fees = match fees {
        MintFees::Customer => 0,
        MintFees::Operator => jobs.ecash.iter().map(|e| e.fee * 1000).sum(),
    };
    let store = r.s.store();
    assert_eq!(
        store.state().balance(&Account::Fees).signed(true),
        i128::from(routing + intake_fees + operator_refund_fees),
        "expense:fees holds every fee the operator bore"
    );
}

/// Issue 10, done-when: after failing paid jobs on every rail (quote invoice over NWC, a zap
/// through our own LNURL server backed by that wallet, a NutZap, an encrypted request token,
/// prepaid credit), each refunded on its own rail (Lightning to the customer's lud16 with routing
/// fees, ecash as a NutZap or a private-message token from a mint charging an input fee the
/// customer bears) or credited back, `paydvm reconcile` says `match` to the msat for every asset
/// and `ledger verify` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_matches_to_the_msat_after_failing_jobs_on_every_rail() {
    every_rail(MintFees::Customer).await;
}

/// The same run with the operator bearing the mint's input fees: the intake swaps' and refund
/// swaps' fees go to `expense:fees`, paid from ecash float the operator swapped into the wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_matches_after_failing_jobs_on_every_rail_with_operator_borne_mint_fees() {
    every_rail(MintFees::Operator).await;
}

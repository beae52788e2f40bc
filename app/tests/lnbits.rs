//! The LNbits backend against a real LNbits 1.6.2 (PyPI, installed by `tools/peer-venv.sh lnbits`)
//! with its FakeWallet funding source, on 127.0.0.1. Two wallets on it: the node's and a
//! customer's. Payments between wallets of one LNbits settle inside LNbits, so the customer pays
//! the node's invoices for real (and the node refunds the customer's). The customer's balance
//! comes from the super user's top-up (`PUT /users/api/v1/balance`), which needs the admin UI on
//! and a first-install login.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use nostr_sdk::prelude::*;
use paydvm::config::{Config, Secret};
use paydvm::lightning::bolt11::Description;
use paydvm::lightning::lnbits::{LnbitsLightning, NO_ADMIN_KEY};
use paydvm::lightning::{
    Invoice, InvoiceDescription, InvoiceStatus, LightningBackend, LightningError, PaymentStatus,
};
use paydvm::node::Node;
use paydvm_ledger::store::Store;
use paydvm_ledger::{JobState, Msat};
use serde_json::{json, Value};

use crate::lightning::{assert_paid_trail, quoted_invoice};
use crate::node::{is_status, start_relay, tag_values, wait_state, write_node_dir, Customer};
use crate::reconcile::{asset, reconcile_json};

/// How long LNbits may take to start (it imports a lot; the test machine is shared).
const START_TIMEOUT: Duration = Duration::from_secs(180);
const SUPER_USER: &str = "paydvmtest";

/// Starts LNbits' own `main`, unpatched: its FakeWallet issues invoices with a payment secret
/// and no features field (`9`), as BOLT 9 allows (`payment_secret` and `var_onion_optin` are
/// assumed), and paydvm must take them (see docs/lightning.md, "Feature bits").
const LAUNCH: &str = "import sys\nfrom lnbits.server import main\nsys.exit(main())\n";
const SUPER_PASSWORD: &str = "paydvm-test-only";

/// One LNbits wallet's keys.
pub struct Wallet {
    pub id: String,
    pub invoice_key: String,
    pub admin_key: String,
}

/// A running LNbits; the whole process group is killed on drop.
pub struct Lnbits {
    child: Child,
    data: tempfile::TempDir,
    pub url: Url,
    http: reqwest::Client,
    token: String,
}

impl Drop for Lnbits {
    fn drop(&mut self) {
        // The child leads its own process group (see `start`): end it and anything it spawned.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> std::path::PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/peer-venv.sh");
    let out = Command::new(&script)
        .arg("lnbits")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "tools/peer-venv.sh lnbits failed ({}): LNbits is needed for these tests (PyPI access \
         once, python3 -m venv)",
        out.status
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// `<venv>/lib/python3.X/site-packages`, whatever Python made the venv.
fn site_packages(venv: &Path) -> std::path::PathBuf {
    std::fs::read_dir(venv.join("lib"))
        .expect("the LNbits venv has a lib/")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("site-packages"))
        .find(|path| path.join("lnbits").is_dir())
        .expect("LNbits is installed in the venv")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Lnbits {
    pub async fn start() -> Lnbits {
        let venv = venv();
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(data.path().join("lnbits.log")).unwrap();
        let child = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                LAUNCH,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            // LNbits serves ./lnbits/static relative to its working directory.
            .current_dir(site_packages(&venv))
            .env("LNBITS_BACKEND_WALLET_CLASS", "FakeWallet")
            .env("LNBITS_DATA_FOLDER", data.path())
            .env("LNBITS_ADMIN_UI", "true")
            .env("LNBITS_EXTENSIONS_MANIFESTS", "[]")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("LNbits starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let mut lnbits = Lnbits {
            child,
            data,
            url,
            http,
            token: String::new(),
        };
        lnbits.wait_ready().await;
        lnbits.token = lnbits.first_install().await;
        lnbits
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.path().join("lnbits.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Any HTTP answer on the health route means the server is up (before the first install it
    /// redirects there).
    async fn wait_ready(&mut self) {
        let health = self.url.join("api/v1/health").unwrap();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if self.http.get(health.clone()).send().await.is_ok() {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("LNbits exited ({exit}) at start:\n{}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "LNbits did not answer within {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("LNbits answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Gives the super user a password and returns its bearer token.
    async fn first_install(&self) -> String {
        let (status, body) = self
            .send(
                self.http
                    .put(self.url.join("api/v1/auth/first_install").unwrap())
                    .json(&json!({
                        "username": SUPER_USER,
                        "password": SUPER_PASSWORD,
                        "password_repeat": SUPER_PASSWORD,
                    })),
            )
            .await;
        assert_eq!(status, 200, "first install: {body}\n{}", self.log_tail());
        body["access_token"].as_str().expect("a token").to_owned()
    }

    pub async fn wallet(&self, name: &str) -> Wallet {
        let (status, body) = self
            .send(
                self.http
                    .post(self.url.join("api/v1/account").unwrap())
                    .json(&json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 200, "new account: {body}");
        let field = |f: &str| body[f].as_str().expect(f).to_owned();
        Wallet {
            id: field("id"),
            invoice_key: field("inkey"),
            admin_key: field("adminkey"),
        }
    }

    /// Credits `sats` to `wallet` (the super user's top-up: LNbits books it as a paid invoice).
    pub async fn top_up(&self, wallet: &Wallet, sats: u64) {
        let (status, body) = self
            .send(
                self.http
                    .put(self.url.join("users/api/v1/balance").unwrap())
                    .bearer_auth(&self.token)
                    .json(&json!({ "id": wallet.id, "amount": sats })),
            )
            .await;
        assert_eq!(status, 200, "top-up: {body}");
    }

    /// `wallet` pays `bolt11`; returns LNbits' payment row.
    pub async fn pay(&self, wallet: &Wallet, bolt11: &str) -> Value {
        let (status, body) = self
            .send(
                self.http
                    .post(self.url.join("api/v1/payments").unwrap())
                    .header("X-Api-Key", &wallet.admin_key)
                    .json(&json!({ "out": true, "bolt11": bolt11 })),
            )
            .await;
        assert_eq!(status, 201, "payment: {body}");
        body
    }

    /// An invoice of `wallet` for `sats`, made through LNbits' API directly.
    pub async fn invoice(&self, wallet: &Wallet, sats: u64) -> String {
        let (status, body) = self
            .send(
                self.http
                    .post(self.url.join("api/v1/payments").unwrap())
                    .header("X-Api-Key", &wallet.invoice_key)
                    .json(&json!({ "out": false, "amount": sats, "memo": "refund" })),
            )
            .await;
        assert_eq!(status, 201, "invoice: {body}");
        body["bolt11"].as_str().unwrap().to_owned()
    }

    /// What LNbits says `wallet` holds, msat.
    pub async fn balance(&self, wallet: &Wallet) -> u64 {
        let (status, body) = self
            .send(
                self.http
                    .get(self.url.join("api/v1/wallet").unwrap())
                    .header("X-Api-Key", &wallet.invoice_key),
            )
            .await;
        assert_eq!(status, 200, "wallet: {body}");
        body["balance"].as_u64().unwrap()
    }

    /// The backend for `wallet`, with or without its admin key.
    pub fn backend(&self, wallet: &Wallet, can_pay: bool) -> LnbitsLightning {
        let admin = Secret::new(wallet.admin_key.clone());
        LnbitsLightning::new(
            &self.url,
            &Secret::new(wallet.invoice_key.clone()),
            can_pay.then_some(&admin),
            Duration::from_secs(30),
        )
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lnbits_backend_creates_looks_up_and_pays() {
    let lnbits = Lnbits::start().await;
    let node = lnbits.wallet("dvm").await;
    let customer = lnbits.wallet("customer").await;
    lnbits.top_up(&customer, 1_000).await;
    let backend = lnbits.backend(&node, true);
    let read_only = lnbits.backend(&node, false);
    assert_eq!(backend.balance().await.unwrap(), Msat::ZERO);

    // Invoices: text and description hash, as asked, looked up open.
    let issued = backend
        .create_invoice(
            Msat::from_msat(21_000),
            InvoiceDescription::Text("paydvm job x".into()),
            600,
        )
        .await
        .unwrap();
    // The stock FakeWallet writes no `9` field, which lightning-invoice on its own refuses ("The
    // invoice's features are invalid"): this test covers that case only while it is so.
    let raw: lightning_invoice::SignedRawBolt11Invoice = issued.bolt11.parse().unwrap();
    assert!(
        raw.raw_invoice().features().is_none(),
        "LNbits' FakeWallet now writes feature bits; an invoice without them is untested here"
    );
    assert!(lightning_invoice::Bolt11Invoice::from_signed(raw).is_err());
    let parsed = Invoice::parse(&issued.bolt11).unwrap();
    assert_eq!(parsed.amount(), Some(Msat::from_msat(21_000)));
    assert_eq!(parsed.payment_hash(), issued.payment_hash);
    assert_eq!(
        parsed.description(),
        Description::Text("paydvm job x".into())
    );
    assert_eq!(parsed.expiry_secs(), 600);
    let zap_hash = sha256::Hash::hash(br#"{"kind":9734}"#).to_byte_array();
    let hashed = backend
        .create_invoice(
            Msat::from_msat(5_000),
            InvoiceDescription::Hash(zap_hash),
            600,
        )
        .await
        .unwrap();
    assert_eq!(
        Invoice::parse(&hashed.bolt11).unwrap().description(),
        Description::Hash(zap_hash)
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
    assert_eq!(
        read_only.lookup_invoice(&issued.payment_hash).await,
        InvoiceStatus::Open
    );

    // The customer pays: settled with the amount, the balance moved.
    let paid = lnbits.pay(&customer, &issued.bolt11).await;
    assert_eq!(paid["status"], "success");
    assert!(matches!(
        read_only.lookup_invoice(&issued.payment_hash).await,
        InvoiceStatus::Settled { amount, .. } if amount == Msat::from_msat(21_000)
    ));
    assert_eq!(read_only.balance().await.unwrap(), Msat::from_msat(21_000));
    assert_eq!(lnbits.balance(&customer).await, 1_000_000 - 21_000);
    assert!(matches!(
        read_only.lookup_invoice(&"00".repeat(32)).await,
        InvoiceStatus::Unknown(_)
    ));
    // The customer's invoice is not the node's: LNbits does not show it to the node's key.
    let theirs = lnbits.invoice(&customer, 1).await;
    let theirs_hash = Invoice::parse(&theirs).unwrap().payment_hash();
    assert!(matches!(
        read_only.lookup_invoice(&theirs_hash).await,
        InvoiceStatus::Unknown(_)
    ));

    // Paying (a refund): never without the admin key, and then nothing moves.
    let refund = lnbits.invoice(&customer, 3).await;
    let refund_hash = Invoice::parse(&refund).unwrap().payment_hash();
    assert_eq!(
        read_only
            .pay_invoice(&refund, Msat::from_msat(10_000))
            .await,
        PaymentStatus::Failed(NO_ADMIN_KEY.into())
    );
    assert_eq!(read_only.balance().await.unwrap(), Msat::from_msat(21_000));
    // Not paid by us: LNbits' own 404 for our wallet ("no record"), though the customer's
    // wallet on the same LNbits holds an invoice with this hash. So is a hash nobody has. Our
    // own invoice's hash is not a payment of ours.
    assert_eq!(
        read_only.lookup_payment(&refund_hash).await,
        PaymentStatus::NotFound
    );
    assert_eq!(
        read_only.lookup_payment(&"00".repeat(32)).await,
        PaymentStatus::NotFound
    );
    assert!(matches!(
        read_only.lookup_payment(&issued.payment_hash).await,
        PaymentStatus::Unknown(reason) if reason.contains("invoice of ours")
    ));

    // With the admin key: settled, the preimage hashes to the invoice's hash.
    let settled = backend.pay_invoice(&refund, Msat::from_msat(10_000)).await;
    let PaymentStatus::Settled { preimage, fee } = settled.clone() else {
        panic!("refund not settled: {settled:?}");
    };
    assert_eq!(
        sha256::Hash::hash(&hex::decode(&preimage).unwrap()).to_string(),
        refund_hash
    );
    assert_eq!(
        fee,
        Msat::ZERO,
        "a payment inside one LNbits has no routing fee"
    );
    assert_eq!(backend.balance().await.unwrap(), Msat::from_msat(18_000));
    assert_eq!(lnbits.balance(&customer).await, 1_000_000 - 21_000 + 3_000);
    assert_eq!(read_only.lookup_payment(&refund_hash).await, settled);

    // Paying it again (a retry after a lost answer): LNbits says "already paid, failed"; our own
    // row shows it was us, so it is settled, and nothing moves.
    assert_eq!(
        backend.pay_invoice(&refund, Msat::from_msat(10_000)).await,
        settled
    );
    assert_eq!(backend.balance().await.unwrap(), Msat::from_msat(18_000));

    // More than the wallet holds: an explicit failure, nothing paid.
    let too_big = lnbits.invoice(&customer, 50).await;
    assert!(matches!(
        backend.pay_invoice(&too_big, Msat::from_msat(10_000)).await,
        PaymentStatus::Failed(reason) if reason.contains("Insufficient balance")
    ));
    assert_eq!(backend.balance().await.unwrap(), Msat::from_msat(18_000));

    // Keys LNbits does not know: refused, and a payment with them is an explicit failure.
    let unknown_keys = LnbitsLightning::new(
        &lnbits.url,
        &Secret::new("0".repeat(32)),
        Some(&Secret::new("1".repeat(32))),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(matches!(
        unknown_keys.balance().await,
        Err(LightningError::Refused(_))
    ));
    assert!(matches!(
        unknown_keys
            .create_invoice(
                Msat::from_msat(1_000),
                InvoiceDescription::Text("x".into()),
                60
            )
            .await,
        Err(LightningError::Refused(_))
    ));
    // LNbits answers anyone `paid: true` about a paid invoice, but shows the row only to its
    // wallet's key: without the row it is not taken as settled.
    assert!(matches!(
        unknown_keys.lookup_invoice(&issued.payment_hash).await,
        InvoiceStatus::Unknown(_)
    ));
    // With a key it does not know, LNbits looks in every wallet: our paid refund is there (so
    // not "no record", yet unconfirmed without our row); a hash nobody has is not.
    assert!(matches!(
        unknown_keys.lookup_payment(&refund_hash).await,
        PaymentStatus::Unknown(_)
    ));
    assert_eq!(
        unknown_keys.lookup_payment(&"11".repeat(32)).await,
        PaymentStatus::NotFound
    );
    // A 404 that is not LNbits' answer about a payment (a wrong path prefix) says nothing.
    let wrong_path = LnbitsLightning::new(
        &lnbits.url.join("not-lnbits/").unwrap(),
        &Secret::new(node.invoice_key.clone()),
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(matches!(
        wrong_path.lookup_payment(&"11".repeat(32)).await,
        PaymentStatus::Unknown(_)
    ));
    let small = lnbits.invoice(&customer, 1).await;
    assert!(matches!(
        unknown_keys
            .pay_invoice(&small, Msat::from_msat(10_000))
            .await,
        PaymentStatus::Failed(_)
    ));
    assert_eq!(backend.balance().await.unwrap(), Msat::from_msat(18_000));
}

/// A node directory whose `[lightning]` is this LNbits wallet, keys in 0600 files, as an
/// operator would write it (invoice key only: this node pays no refunds).
fn write_lnbits_node_dir(dir: &Path, relay: &RelayUrl, lnbits: &Lnbits, wallet: &Wallet) {
    let config = write_node_dir(dir, std::slice::from_ref(relay), "refund");
    add_lnbits(&config, lnbits, wallet);
}

/// Gives the node of `config` this LNbits wallet as its `[lightning]` (the invoice key in a
/// 0600 file beside it).
pub fn add_lnbits(config: &Path, lnbits: &Lnbits, wallet: &Wallet) {
    add_lnbits_at(config, lnbits.url.as_str(), wallet);
}

/// As [`add_lnbits`], with LNbits reached at `url` (a proxy in front of it).
pub fn add_lnbits_at(config: &Path, url: &str, wallet: &Wallet) {
    write_key_beside(config, "lnbits-invoice.key", &wallet.invoice_key);
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        "\n[lightning]\nbackend = \"lnbits\"\nlnbits_url = \"{url}\"\n\
         lnbits_invoice_key_file = \"lnbits-invoice.key\"\n"
    ));
    std::fs::write(config, text).unwrap();
}

/// Lets the node of `config` (after [`add_lnbits`]) pay refunds from `wallet`: its admin key,
/// in a 0600 file beside the config.
pub fn add_lnbits_admin(config: &Path, wallet: &Wallet) {
    write_key_beside(config, "lnbits-admin.key", &wallet.admin_key);
    let mut text = std::fs::read_to_string(config).unwrap();
    assert!(text
        .trim_end()
        .ends_with("lnbits_invoice_key_file = \"lnbits-invoice.key\""));
    text.push_str("lnbits_admin_key_file = \"lnbits-admin.key\"\n");
    std::fs::write(config, text).unwrap();
}

/// Writes `key` to the file `name` beside `config`, mode 0600 (as an operator would keep it).
fn write_key_beside(config: &Path, name: &str, key: &str) {
    let key_file = config.parent().unwrap().join(name);
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoice_paid_job_over_lnbits_end_to_end() {
    let lnbits = Lnbits::start().await;
    let wallet = lnbits.wallet("dvm").await;
    let payer = lnbits.wallet("customer").await;
    lnbits.top_up(&payer, 100).await;
    let (_relay, relay_url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    write_lnbits_node_dir(dir.path(), &relay_url, &lnbits, &wallet);
    let config = Config::load(dir.path().join("paydvm.toml")).unwrap();
    let node = Node::start(config).await.unwrap();

    let mut customer = Customer::connect(std::slice::from_ref(&relay_url)).await;
    let request = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let job = request.id.to_hex();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    let invoice = quoted_invoice(&quote, &job);
    assert_eq!(lnbits.balance(&wallet).await, 0);

    let paid = lnbits.pay(&payer, invoice.as_str()).await;
    assert_eq!(paid["status"], "success");
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6050))
        .await;
    assert_eq!(result.content, "ABC");
    wait_state(&node, &job, JobState::Succeeded).await;
    node.shutdown().await;
    assert_paid_trail(
        &Store::open_read_only(dir.path().join("paydvm.db")).unwrap(),
        &job,
        &invoice.payment_hash(),
    );
    assert_eq!(lnbits.balance(&wallet).await, 5_000);
    assert_eq!(lnbits.balance(&payer).await, 100_000 - 5_000);
}

/// The quote's `status` tag's third element (its note), if any.
fn quote_note(quote: &Event) -> Option<String> {
    quote
        .tags
        .iter()
        .find(|t| t.as_slice().first().map(String::as_str) == Some("status"))
        .and_then(|t| t.as_slice().get(2).cloned())
}

/// Starts a node on `wallet`, sends one priced job and returns its quote.
async fn quote_from_node_on(lnbits: &Lnbits, wallet: &Wallet, text: &str) -> Event {
    let (_relay, relay_url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    write_lnbits_node_dir(dir.path(), &relay_url, lnbits, wallet);
    let node = Node::start(Config::load(dir.path().join("paydvm.toml")).unwrap())
        .await
        .unwrap();
    let mut customer = Customer::connect(std::slice::from_ref(&relay_url)).await;
    let request = customer.request(5050, text, &[&["param", "mode", "upper"]]);
    customer.client.send_event(&request).await.unwrap();
    let quote = customer
        .wait_for(request.id, is_status("payment-required"))
        .await;
    node.shutdown().await;
    quote
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_without_an_invoice_says_why() {
    let lnbits = Lnbits::start().await;
    // A stock LNbits invoice is taken: the quote carries it and no note.
    let wallet = lnbits.wallet("dvm").await;
    let quote = quote_from_node_on(&lnbits, &wallet, "abc").await;
    assert_eq!(tag_values(&quote, "amount").unwrap().len(), 2, "{quote:?}");
    assert_eq!(quote_note(&quote), None);
    // Keys LNbits does not know: no invoice, and the quote says so.
    let unknown = Wallet {
        id: "nobody".into(),
        invoice_key: "0".repeat(32),
        admin_key: "1".repeat(32),
    };
    let quote = quote_from_node_on(&lnbits, &unknown, "def").await;
    assert_eq!(
        tag_values(&quote, "amount").unwrap(),
        ["5000"],
        "no bolt11 in the amount tag"
    );
    assert_eq!(
        quote_note(&quote).as_deref(),
        Some("no Lightning invoice in this quote: the Lightning backend did not make one")
    );
}

/// `paydvm reconcile` on an LNbits node: the wallet's balance and its payment list (paged)
/// against the ledger. It agrees after a paid job; then money moved outside the ledger (a
/// quote's invoice and a subscription period's invoice paid while the node is down, a payment
/// straight into the wallet, a payment out of it made by hand) is reported, each payment named
/// with what it was for, exit 1, nothing booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_over_lnbits_matches_then_names_money_outside_the_ledger() {
    let lnbits = Lnbits::start().await;
    let wallet = lnbits.wallet("dvm").await;
    let payer = lnbits.wallet("customer").await;
    lnbits.top_up(&payer, 100).await;
    let (_relay, relay_url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    write_lnbits_node_dir(dir.path(), &relay_url, &lnbits, &wallet);
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text + crate::subscriptions::TIER).unwrap();
    let config = dir.path().join("paydvm.toml");
    let node = Node::start(Config::load(&config).unwrap()).await.unwrap();
    let mut customer = Customer::connect(std::slice::from_ref(&relay_url)).await;
    let (_subscriber, subscribe, sub_quote) =
        crate::subscriptions::subscribed(std::slice::from_ref(&relay_url), &node.pubkey()).await;
    let sub_invoice = tag_values(&sub_quote, "amount").unwrap()[1].clone();

    let paid = customer.request(5050, "abc", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&paid).await.unwrap();
    let quote = customer
        .wait_for(paid.id, is_status("payment-required"))
        .await;
    lnbits
        .pay(&payer, quoted_invoice(&quote, &paid.id.to_hex()).as_str())
        .await;
    wait_state(&node, &paid.id.to_hex(), JobState::Succeeded).await;
    let unpaid = customer.request(5050, "def", &[&["param", "mode", "upper"]]);
    customer.client.send_event(&unpaid).await.unwrap();
    let quote = customer
        .wait_for(unpaid.id, is_status("payment-required"))
        .await;
    let unpaid_invoice = quoted_invoice(&quote, &unpaid.id.to_hex());
    node.shutdown().await;

    let (code, report) = reconcile_json(&config).await;
    assert_eq!(code, 0, "{report:#}");
    let lightning = asset(&report, "asset:lightning");
    assert_eq!(lightning["status"], "match", "{lightning:#}");
    assert_eq!(lightning["ledger_msat"], 5_000);
    assert_eq!(lightning["backend_msat"], 5_000);
    assert_eq!(lightning["notes"], json!([]), "{lightning:#}");
    let head = Store::open_read_only(dir.path().join("paydvm.db"))
        .unwrap()
        .head();

    lnbits.pay(&payer, unpaid_invoice.as_str()).await;
    lnbits.pay(&payer, &sub_invoice).await;
    let direct = lnbits.invoice(&wallet, 7).await;
    lnbits.pay(&payer, &direct).await;
    let theirs = lnbits.invoice(&payer, 2).await;
    lnbits.pay(&wallet, &theirs).await;
    let hash = |bolt11: &str| Invoice::parse(bolt11).unwrap().payment_hash();

    let (code, report) = reconcile_json(&config).await;
    assert_eq!(code, 1, "{report:#}");
    let lightning = asset(&report, "asset:lightning");
    assert_eq!(lightning["status"], "backend_has_more", "{lightning:#}");
    assert_eq!(lightning["ledger_msat"], 5_000);
    assert_eq!(lightning["backend_msat"], 35_000);
    assert_eq!(lightning["difference_msat"], 30_000);
    let mut unbooked = lightning["unbooked_settlements"]
        .as_array()
        .unwrap()
        .clone();
    unbooked.sort_by_key(|item| item["amount_msat"].as_u64());
    assert_eq!(
        unbooked,
        [
            json!({ "id": unpaid_invoice.payment_hash(), "amount_msat": 5_000,
                    "job": unpaid.id.to_hex() }),
            json!({ "id": hash(&sub_invoice), "amount_msat": 20_000,
                    "subscription": subscribe.id.to_hex() })
        ]
    );
    assert_eq!(
        lightning["received_outside"],
        json!([{ "id": hash(&direct), "amount_msat": 7_000 }])
    );
    assert_eq!(
        lightning["paid_outside"],
        json!([{ "id": hash(&theirs), "amount_msat": 2_000 }])
    );
    assert_eq!(
        lightning["notes"],
        json!([]),
        "the list adds up to the balance"
    );

    let config_arg = config.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        crate::cli::paydvm(&["reconcile", "--config", &config_arg])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = crate::cli::stdout(&out);
    assert!(text.contains("asset:lightning  backend_has_more"), "{text}");
    assert!(
        text.contains(&format!(
            "unbooked settlement: {} 20000 msat subscription {}",
            hash(&sub_invoice),
            subscribe.id.to_hex()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("received outside the node: {}", hash(&direct))),
        "{text}"
    );
    assert!(
        text.contains(&format!("paid outside the node: {}", hash(&theirs))),
        "{text}"
    );
    let store = Store::open_read_only(dir.path().join("paydvm.db")).unwrap();
    assert_eq!(store.head(), head, "reconcile wrote to the ledger");
}

//! Interop: the NutZap rail against Nutshell, the Python reference mint, started by the test as
//! a child process on 127.0.0.1 with its FakeWallet backend. The checks are app/tests/cashu.rs's,
//! which run there against the in-process cdk mint: here both the customer's and the node's cdk
//! wallets talk to a mint nobody on this project wrote.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cdk::nuts::Proof;
use nostr_sdk::Keys;

use paydvm_ledger::{Account, Asset, JobId, JobState, Msat, Rail};

use crate::cashu::{
    check_a_nutzap_pays_a_quoted_job, check_bad_nutzaps_credit_nothing, input_fee, mint_proofs,
    nutzap, payments, quoted_job_for, setup, setup_on, wait_until, wallet, MintUnderTest,
};
use crate::cashu_mint::wallet_balance;
use crate::ecash_refunds::{claim, pay_by_nutzap, publish_10019, quoted_job, refund_nutzaps};
use crate::node::{is_status, tag_values, wait_state, Customer};
use paydvm_testkit::local_mint::MintProxy;

/// Nutshell's default `MINT_INPUT_FEE_PPK`, set explicitly so the tests know the fee.
const INPUT_FEE_PPK: u64 = 100;
const STARTUP: Duration = Duration::from_secs(90);

/// A running Nutshell mint; its whole process group is killed on drop.
pub struct Nutshell {
    url: String,
    venv: PathBuf,
    child: Child,
    /// Database, home and log of this run.
    dir: tempfile::TempDir,
}

impl Nutshell {
    /// Installs the pinned Nutshell (tools/peer-venv.sh) if needed and starts it on a free port.
    pub async fn start() -> Nutshell {
        let venv = peer_venv("nutshell").await;
        let mut last_log = String::new();
        // The free port is found by binding and releasing it; another process may take it in
        // between, so a mint that exits before answering is started again on another port.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let child = spawn_mint(&venv, dir.path(), port);
            let mut mint = Nutshell {
                url: format!("http://127.0.0.1:{port}"),
                venv: venv.clone(),
                child,
                dir,
            };
            if mint.wait_ready().await {
                return mint;
            }
            last_log = log_tail(&mint.dir.path().join("mint.log"));
        }
        panic!("Nutshell did not start on 127.0.0.1; the end of its log:\n{last_log}");
    }

    /// Polls `GET /v1/info` until it names Nutshell; false if the process exits first.
    async fn wait_ready(&mut self) -> bool {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + STARTUP;
        while tokio::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let info = http
                .get(format!("{}/v1/info", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Ok(info) = info {
                if let Ok(info) = info.json::<serde_json::Value>().await {
                    let version = info["version"].as_str().unwrap_or_default();
                    assert!(version.starts_with("Nutshell/"), "not Nutshell: {version}");
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

impl Nutshell {
    /// Nutshell's own wallet as the customer (app/tests/peers/nutshell_p2pk_send.py): mints here and
    /// swaps to `sat` sat of proofs P2PK-locked to `lock`, as its `cashu send --lock` would.
    async fn nutshell_wallet_proofs(&self, sat: u64, lock: String) -> Vec<Proof> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/nutshell_p2pk_send.py");
        let home = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(self.venv.join("bin/python"))
            .arg(&script)
            .args([&self.url, &lock, &sat.to_string()])
            .arg(home.path().join("wallet"))
            .current_dir(home.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CASHU_DIR", home.path())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "Nutshell's wallet failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Nutshell's wallet also prints notices to stdout; the proofs are the last line.
        let proofs = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(proofs).unwrap_or_else(|e| panic!("{e}: {proofs}"))
    }
}

impl MintUnderTest for Nutshell {
    fn url(&self) -> &str {
        &self.url
    }

    fn input_fee_ppk(&self) -> u64 {
        INPUT_FEE_PPK
    }
}

impl Drop for Nutshell {
    fn drop(&mut self) {
        // The mint was started as the leader of its own process group: end all of it.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .status();
        let _ = self.child.wait();
    }
}

/// `tools/peer-venv.sh <name>`: the pinned peer's virtualenv (installed on first use).
async fn peer_venv(name: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/peer-venv.sh");
    let out = tokio::process::Command::new(&script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {name} failed ({}): the {name} interop tests need Python 3 with venv and PyPI",
        script.display(),
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `<venv>/bin/mint` with FakeWallet, its database and home in `dir`, and a fresh private
/// key; only the variables it needs, so nothing from the caller's environment reaches it.
fn spawn_mint(venv: &Path, dir: &Path, port: u16) -> Child {
    use std::os::unix::process::CommandExt;
    let log = File::create(dir.join("mint.log")).unwrap();
    let key = Keys::generate().secret_key().to_secret_hex();
    Command::new(venv.join("bin/mint"))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("CASHU_DIR", dir.join("cashu"))
        .env("MINT_DATABASE", dir.join("mint"))
        .env("MINT_PRIVATE_KEY", key)
        .env("MINT_LISTEN_HOST", "127.0.0.1")
        .env("MINT_LISTEN_PORT", port.to_string())
        .env("MINT_BACKEND_BOLT11_SAT", "FakeWallet")
        .env("MINT_INPUT_FEE_PPK", INPUT_FEE_PPK.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", venv.join("bin/mint").display()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One Nutshell serves three nodes in turn: a job paid with ecash from a cdk wallet, one paid
/// with ecash from Nutshell's own wallet, then every must-reject case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nutzaps_at_nutshell_pay_a_job_and_bad_ones_credit_nothing() {
    let mint = Nutshell::start().await;
    let cdk_customer = wallet(mint.url()).await;
    check_a_nutzap_pays_a_quoted_job(&setup(&mint).await, |sat, lock| async move {
        mint_proofs(&cdk_customer, sat, Some(&lock)).await
    })
    .await;
    check_a_nutzap_pays_a_quoted_job(&setup(&mint).await, |sat, lock| {
        mint.nutshell_wallet_proofs(sat, lock)
    })
    .await;
    check_bad_nutzaps_credit_nothing(&setup(&mint).await).await;
    check_the_customer_covers_the_input_fee(&mint).await;
}

/// With `input_fees = "customer"` the quote says so, and a NutZap of exactly the price counts
/// face minus the mint's input fee: the job stays partially paid and the customer is told what
/// is still owed. The ledger's mint account holds what the wallet holds; no fee is our expense.
async fn check_the_customer_covers_the_input_fee(mint: &Nutshell) {
    let s = setup_on(mint, "input_fees = \"customer\"\n").await;
    let node = s.start().await;
    let mut customer = Customer::connect(&s.urls).await;
    let (request, quote) = quoted_job_for(&mut customer, "fee").await;
    let job = request.id.to_hex();
    assert_eq!(
        tag_values(&quote, "cashu_fees"),
        Some(vec!["customer".to_owned()])
    );
    let proofs = mint_proofs(&wallet(mint.url()).await, 5, Some(&s.lock())).await;
    let fee = input_fee(mint, proofs.len());
    assert!(fee > 0, "Nutshell charges an input fee");
    let zap = nutzap(
        &customer.keys,
        &proofs,
        mint.url(),
        "sat",
        Some(quote.id),
        &node.pubkey(),
        "price only",
    );
    customer.client.send_event(&zap).await.unwrap();
    let owed = customer
        .wait_for(request.id, |e| {
            is_status("payment-required")(e) && e.id != quote.id
        })
        .await;
    assert_eq!(
        tag_values(&owed, "amount").unwrap()[0],
        (fee * 1000).to_string()
    );
    wait_state(&node, &job, JobState::PartiallyPaid).await;
    let stats = node.nutzap_stats().unwrap();
    wait_until("the rail saw the credit", || stats.credited() == 1).await;
    node.shutdown().await;

    let store = s.store();
    assert!(store.verify().is_ok());
    let paid = payments(&store, Rail::NutZap);
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].amount, Msat::from_msat((5 - fee) * 1000));
    assert_eq!(paid[0].fee, Msat::ZERO);
    let asset = Account::Asset(Asset::Mint {
        url: mint.url().to_owned(),
    });
    let wallet_sat = wallet_balance(&s).await;
    assert_eq!(wallet_sat, 5 - fee);
    assert_eq!(
        store.state().balance(&asset).signed(true),
        i128::from(wallet_sat * 1000)
    );
    assert_eq!(store.state().balance(&Account::Fees).signed(true), 0);
    assert_eq!(
        store.state().held(&Account::Job(JobId::new(&job).unwrap())),
        Msat::from_msat((5 - fee) * 1000)
    );
}

/// Nutshell behind our fault proxy: the node and the customer both use the proxy's URL.
struct ProxiedNutshell {
    proxy: MintProxy,
    _mint: Nutshell,
}

impl MintUnderTest for ProxiedNutshell {
    fn url(&self) -> &str {
        &self.proxy.url
    }

    fn input_fee_ppk(&self) -> u64 {
        INPUT_FEE_PPK
    }
}

/// Ecash refunds at Nutshell: our saga's P2PK outputs (nonces derived from the attempt) and the
/// NUT-07/NUT-09 recovery work against a mint nobody here wrote. The refund's swap is performed
/// but its answer lost, and the node stops; after the restart it learns from Nutshell that its
/// inputs are spent, restores its outputs and hands the token over once. With
/// `input_fees = "customer"` the token is worth what is owed minus Nutshell's fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecash_refund_at_nutshell_survives_a_lost_swap_answer_and_a_restart() {
    let mint = Nutshell::start().await;
    let proxy = MintProxy::start(mint.url()).await.unwrap();
    let mint = ProxiedNutshell { proxy, _mint: mint };
    let s = setup_on(&mint, "input_fees = \"customer\"\n").await;
    let mut customer = Customer::connect(&s.urls).await;
    let p2pk = publish_10019(&s, &customer).await;
    let node = s.start().await;
    let (job, quote) = quoted_job(&mut customer, "fail").await;
    mint.proxy.hold_swaps(Duration::from_secs(2));
    // 6 sat face at one input fee (Nutshell's 100 ppk, ≤ 10 proofs): exactly the 5-sat price.
    pay_by_nutzap(&s, &customer, &quote, 6).await;
    wait_state(&node, &job, JobState::Refunding).await;
    mint.proxy.lose_swap_answers(1);
    wait_state(&node, &job, JobState::RefundPending).await;
    node.shutdown().await;
    mint.proxy.hold_swaps(Duration::ZERO);

    let node = s.start().await;
    wait_state(&node, &job, JobState::Refunded).await;
    node.shutdown().await;
    let handed_over = refund_nutzaps(&s.urls, &customer, &job).await;
    assert_eq!(handed_over.len(), 1, "one hand-over");
    let face: u64 = handed_over[0].iter().map(|p| u64::from(p.amount)).sum();
    let fee = input_fee(&mint, 1).max(1);
    assert!(
        face < 5 && face >= 5 - 2 * fee,
        "owed 5 minus the refund swap's fee: {face}"
    );
    assert!(claim(&s, handed_over[0].clone(), Some(&p2pk)).await > 0);
    assert_eq!(
        wallet_balance(&s).await,
        0,
        "nothing stranded in the node's wallet"
    );
    assert!(s.store().verify().is_ok());
}

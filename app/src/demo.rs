//! `paydvm demo`: everything on 127.0.0.1 in a temporary directory. An embedded relay, an
//! embedded LNURL-pay zapper (the node's lud16), the node with a fresh key and the built-in fake
//! Lightning backend, and a scripted customer running a free job, a job paid from prepaid credit,
//! an invoice-paid job that fails and is refunded over Lightning to the customer's own lightning
//! address (a second LNURL-pay server that allows Nostr: the refund is a zap pointing at the job,
//! and its receipt is linked in the ledger), a job paid by a Lightning invoice (a real regtest invoice
//! the demo pays), a job left at `payment-required`, a job paid with a zap on its
//! payment-required feedback, and, against an embedded Cashu mint, a job paid with a NutZap and
//! a NutZap-paid job that fails and is refunded as a NutZap locked to the customer's 10019 key
//! (which the customer then claims). Then a subscriber buys the node's tier (see [`subscriber`]).
//! Then the audit trail of each job and of the subscription, and the `verify` summary.
//! Prints no secret key.

mod subscriber;

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use nostr_sdk::prelude::{
    Event, EventBuilder, Filter, Keys, Kind, RelayPoolNotification, Tag, Timestamp,
};
use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::{
    Asset, EventBody, IdemKey, JobState, LedgerEvent, Msat, Payment, PaymentRef, PaymentTarget,
    Pubkey, Rail, UnixMs,
};

use paydvm::cli::{output, render_trail, verify_summary as summary, EXIT_OK, EXIT_VERIFY_FAILED};
use paydvm::lightning::Invoice;
use paydvm::node::{now_ms, NodeHandle};
use paydvm_mints::events::nutzap_tags;
use paydvm_mints::{NUTZAP_INFO_KIND, NUTZAP_KIND};
use paydvm_testkit::fixture::{Fixture, NodeDir, PRICE_MSAT};
use paydvm_testkit::local_mint;
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};

/// Prepaid credit the demo customer starts with: one 5050 job.
const TOP_UP_MSAT: u64 = 5_000;
const WAIT: Duration = Duration::from_secs(20);

pub fn run() -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(demo());
    runtime.shutdown_timeout(Duration::from_secs(2));
    outcome
}

struct Script {
    label: &'static str,
    kind: u16,
    text: &'static str,
    params: &'static [(&'static str, &'static str)],
    until: JobState,
    /// Pay the quote's invoice, then wait for this state.
    pay_then: Option<JobState>,
    /// Zap the job's payment-required feedback, then wait for it to succeed.
    zap: bool,
    /// Ask for refunds to the customer's own lightning address (`["refund", …]`).
    refund_to_wallet: bool,
    /// Pay the quote with a NutZap from the customer's Cashu wallet, then wait for this state.
    nutzap_then: Option<JobState>,
}

const SCRIPT: [Script; 8] = [
    Script {
        label: "free job (5001 word count)",
        kind: 5001,
        text: "the quick brown fox jumps",
        params: &[],
        until: JobState::Succeeded,
        pay_then: None,
        zap: false,
        refund_to_wallet: false,
        nutzap_then: None,
    },
    Script {
        label: "job paid from prepaid credit (5050 upper)",
        kind: 5050,
        text: "hello paydvm",
        params: &[("mode", "upper")],
        until: JobState::Succeeded,
        pay_then: None,
        zap: false,
        refund_to_wallet: false,
        nutzap_then: None,
    },
    Script {
        label: "invoice-paid job that fails (5050 mode fail): refunded over Lightning",
        kind: 5050,
        text: "this will fail",
        params: &[("mode", "fail")],
        until: JobState::Quoted,
        pay_then: Some(JobState::Refunded),
        zap: false,
        refund_to_wallet: true,
        nutzap_then: None,
    },
    Script {
        label: "job paid by Lightning invoice (5050 reverse)",
        kind: 5050,
        text: "lightning",
        params: &[("mode", "reverse")],
        until: JobState::Quoted,
        pay_then: Some(JobState::Succeeded),
        zap: false,
        refund_to_wallet: false,
        nutzap_then: None,
    },
    Script {
        label: "job without credit left: payment required",
        kind: 5050,
        text: "pay me first",
        params: &[],
        until: JobState::Quoted,
        pay_then: None,
        zap: false,
        refund_to_wallet: false,
        nutzap_then: None,
    },
    Script {
        label: "job paid with a zap (5050 upper, NIP-57)",
        kind: 5050,
        text: "zapped",
        params: &[("mode", "upper")],
        until: JobState::Quoted,
        pay_then: None,
        zap: true,
        refund_to_wallet: false,
        nutzap_then: None,
    },
    Script {
        label: "job paid with a NutZap (5050 upper, NIP-61)",
        kind: 5050,
        text: "ecash",
        params: &[("mode", "upper")],
        until: JobState::Quoted,
        pay_then: None,
        zap: false,
        refund_to_wallet: false,
        nutzap_then: Some(JobState::Succeeded),
    },
    Script {
        label: "NutZap-paid job that fails (5050 mode fail): refunded in ecash",
        kind: 5050,
        text: "this fails too",
        params: &[("mode", "fail")],
        until: JobState::Quoted,
        pay_then: None,
        zap: false,
        refund_to_wallet: false,
        nutzap_then: Some(JobState::Refunded),
    },
];

async fn demo() -> anyhow::Result<u8> {
    // The demo's directory is removed when `fixture` drops, at the end of this function.
    let mut fixture = Fixture::builder(
        NodeDir::text_node("paydvm demo", 1, "refund")
            .cashu_setting("mint_requests_per_minute = 0")
            .policy(subscriber::TIER),
    )
    .named_dir("demo")
    .zapper("paydvm")
    .local_mint()
    .fake_lightning()
    .build()
    .await?;
    let dir = fixture.dir().to_owned();
    let url = fixture.urls[0].clone();
    say(&format!(
        "embedded relay: {url}\nnode directory: {}",
        dir.display()
    ))?;
    let node_pubkey = fixture.node_pubkey;
    let zapper = fixture.zapper.as_ref().context("the fixture's zapper")?;
    let lud16 = zapper.lud16();
    say(&format!(
        "embedded LNURL-pay zapper: {lud16} (receipts signed by {})",
        zapper.nostr_pubkey().to_hex()
    ))?;
    let mint = fixture.mint.as_ref().context("the fixture's mint")?;
    say(&format!(
        "embedded Cashu mint: {} (its FakeWallet pays its own quotes)",
        mint.url
    ))?;
    let node_lock = fixture.nutzap_lock().context("the node's NutZap key")?;
    let customer = Keys::generate();
    // The customer's Cashu wallet, and the key their kind 10019 says to lock NutZaps to.
    let cashu_wallet = local_mint::memory_wallet(&mint.url).await?;
    let customer_p2pk = Keys::generate();
    // The customer's own wallet, where refunds go: another LNURL-pay server on loopback.
    let wallet = Zapper::start(ZapperOptions::new("customer", customer.public_key())).await?;
    let wallet_address = wallet.lud16().to_string();
    say(&format!(
        "customer's wallet (refunds go here): {wallet_address}"
    ))?;
    top_up(&dir.join("paydvm.db"), &customer)?;
    say(&format!(
        "customer {} starts with {} of prepaid credit (recorded by the operator)",
        customer.public_key().to_hex(),
        Msat::from_msat(TOP_UP_MSAT)
    ))?;
    say(&format!(
        "operator float in the Lightning wallet: {} (refunds reserve their routing-fee cap from it)",
        Msat::from_msat(FLOAT_MSAT)
    ))?;

    let lightning = fixture
        .lightning
        .clone()
        .context("the fixture's Lightning")?;
    let node = fixture.start().await?;
    say(&format!("node {} started", node.pubkey().to_hex()))?;

    let client = paydvm::node::transport::client(customer.clone());
    client.add_relay(url.clone()).await?;
    let mut replies = client.notifications();
    client.try_connect(Duration::from_secs(5)).await;
    client
        .subscribe(
            Filter::new()
                .kinds([Kind::Custom(6001), Kind::Custom(6050), Kind::Custom(7000)])
                .since(Timestamp::now() - 60),
            None,
        )
        .await?;
    client
        .send_event_builder(EventBuilder::new(Kind::from(NUTZAP_INFO_KIND), "").tags([
            Tag::parse(["relay", url.as_str()])?,
            Tag::parse(["mint", mint.url.as_str(), "sat"])?,
            Tag::parse(["pubkey", customer_p2pk.public_key().to_hex().as_str()])?,
        ]))
        .await?;

    let mut jobs = Vec::new();
    let outcome = async {
        for step in &SCRIPT {
            let refund_to = step.refund_to_wallet.then_some(wallet_address.as_str());
            let request = request(&customer, step, refund_to)?;
            say(&format!(
                "\n> {}: request {}",
                step.label,
                request.id.to_hex()
            ))?;
            client.send_event(&request).await?;
            wait_state(&node, &request.id.to_hex(), step.until).await?;
            if let Some(after) = step.nutzap_then {
                let quote = wait_reply(&mut replies, &request, "payment-required").await?;
                let sat = PRICE_MSAT / 1000;
                let proofs = local_mint::mint_ecash(&cashu_wallet, sat, Some(&node_lock)).await?;
                let proofs: Vec<String> = proofs
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<_, _>>()?;
                let tags = nutzap_tags(
                    &proofs,
                    &mint.url,
                    "sat",
                    &node_pubkey.to_hex(),
                    &quote.id.to_hex(),
                )
                .into_iter()
                .map(Tag::parse)
                .collect::<Result<Vec<_>, _>>()?;
                let zap = EventBuilder::new(Kind::from(NUTZAP_KIND), "demo payment")
                    .tags(tags)
                    .sign_with_keys(&customer)?;
                client.send_event(&zap).await?;
                say(&format!(
                    "  customer NutZaps {sat} sat at {} locked to the node's 10019 key (event {})",
                    mint.url,
                    zap.id.to_hex()
                ))?;
                wait_state(&node, &request.id.to_hex(), after).await?;
                if after == JobState::Refunded {
                    let claimed =
                        claim_ecash_refund(&client, &request, &cashu_wallet, &customer_p2pk)
                            .await?;
                    say(&format!(
                        "  customer claimed the ecash refund NutZap with their 10019 key: {claimed} sat"
                    ))?;
                }
            }
            if step.zap {
                let quote = wait_reply(&mut replies, &request, "payment-required").await?;
                let paid = request_zap_invoice(
                    &customer,
                    &ZapOrder {
                        lud16: &lud16,
                        http_loopback: true,
                        recipient: node_pubkey,
                        target: quote.id,
                        amount: Msat::from_msat(PRICE_MSAT),
                        relays: std::slice::from_ref(&url),
                    },
                )
                .await?;
                say(&format!(
                    "  customer zaps feedback {} through {lud16}: invoice {}…",
                    quote.id.to_hex(),
                    &paid.bolt11[..24]
                ))?;
                let receipt = zapper.settle(&paid.bolt11).await?;
                say(&format!(
                    "  zapper published zap receipt {}",
                    receipt.id.to_hex()
                ))?;
                wait_state(&node, &request.id.to_hex(), JobState::Succeeded).await?;
            }
            // Let the replies of this job arrive before the next request.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut bolt11 = None;
            while let Ok(n) = replies.try_recv() {
                if let RelayPoolNotification::Event { event, .. } = n {
                    say(&describe(&event))?;
                    if event.tags.event_ids().any(|id| *id == request.id) {
                        bolt11 = bolt11.or_else(|| invoice_of(&event));
                    }
                }
            }
            if let Some(after) = step.pay_then {
                let bolt11 = bolt11.context("the quote carried no invoice")?;
                let invoice = Invoice::parse(&bolt11)?;
                say(&format!(
                    "  customer pays the invoice ({} msat, payment hash {})",
                    invoice.amount().map_or(0, Msat::as_msat),
                    invoice.payment_hash()
                ))?;
                lightning.settle(&invoice.payment_hash())?;
                wait_state(&node, &request.id.to_hex(), after).await?;
                for paid in lightning.payments() {
                    say(&format!(
                        "  node paid {} to the customer's wallet (payment hash {})",
                        paid.amount, paid.payment_hash
                    ))?;
                }
                if after == JobState::Refunded {
                    zapback_receipt(&node, &wallet, &lightning, &request.id.to_hex()).await?;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                while let Ok(n) = replies.try_recv() {
                    if let RelayPoolNotification::Event { event, .. } = n {
                        say(&describe(&event))?;
                    }
                }
            }
            jobs.push((step.label, request.id.to_hex()));
        }
        let world = subscriber::World {
            node: &node,
            relay: &url,
            lightning: &lightning,
            zapper,
        };
        jobs.push(subscriber::run(&world).await?);
        anyhow::Ok(())
    }
    .await;
    client.shutdown().await;
    node.shutdown().await;
    wallet.shutdown().await;
    fixture.shutdown().await;
    outcome?;

    let store = Store::open_read_only(dir.join("paydvm.db"))?;
    say("\n== audit trails ==")?;
    for (label, job) in &jobs {
        let trail = store
            .audit(job)?
            .with_context(|| format!("no trail for {job}"))?;
        say(&format!("\n# {label}\n{}", render_trail(&trail)))?;
    }
    match store.verify() {
        Ok(report) => {
            say(&format!("\n{}", summary(&report)))?;
            Ok(EXIT_OK)
        }
        Err(failure) => {
            say(&format!("\nledger verification FAILED: {failure}"))?;
            Ok(EXIT_VERIFY_FAILED)
        }
    }
}

/// Finds the refund NutZap for `request` on the relay and claims it into the customer's wallet.
async fn claim_ecash_refund(
    client: &nostr_sdk::Client,
    request: &Event,
    wallet: &cdk::wallet::Wallet,
    p2pk: &Keys,
) -> anyhow::Result<u64> {
    let filter = Filter::new()
        .kind(Kind::from(NUTZAP_KIND))
        .pubkey(request.pubkey)
        .event(request.id);
    let refund = client
        .fetch_events(filter, WAIT)
        .await?
        .into_iter()
        .next()
        .context("no refund NutZap on the relay")?;
    let proofs = refund
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(|t| t.len() > 1 && t[0] == "proof")
        .map(|t| serde_json::from_str::<cdk::nuts::Proof>(&t[1]))
        .collect::<Result<Vec<_>, _>>()?;
    let key = cdk::nuts::SecretKey::from_slice(&p2pk.secret_key().secret_bytes())?;
    let options = cdk::wallet::ReceiveOptions {
        p2pk_signing_keys: vec![key],
        ..Default::default()
    };
    Ok(u64::from(
        wallet.receive_proofs(proofs, options, None, None).await?,
    ))
}

/// Operator float booked in the Lightning wallet (as `paydvm float add lightning` does).
const FLOAT_MSAT: u64 = 10_000;

/// The customer's prepaid credit and the operator's float, recorded before the node starts.
fn top_up(ledger: &Path, customer: &Keys) -> anyhow::Result<()> {
    let mut store = Store::open(ledger, Durability::Normal)?;
    store.append(&LedgerEvent::new(
        IdemKey::new("demo-float-1")?,
        UnixMs(now_ms()),
        EventBody::FloatAdded {
            asset: Asset::Lightning,
            amount: Msat::from_msat(FLOAT_MSAT),
            cause: paydvm_ledger::Cause::Operator {
                note: "demo: float for refund fees".into(),
            },
        },
    ))?;
    let reference = "demo-topup-1";
    store.append(&LedgerEvent::new(
        IdemKey::new(reference)?,
        UnixMs(now_ms()),
        EventBody::PaymentReceived(Payment {
            rail: Rail::Manual,
            asset: Asset::Lightning,
            reference: PaymentRef::new(reference)?,
            linked: Vec::new(),
            amount: Msat::from_msat(TOP_UP_MSAT),
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            target: PaymentTarget::Credit {
                pubkey: Pubkey::new(customer.public_key().to_hex())?,
            },
        }),
    ))?;
    store.close()?;
    Ok(())
}

fn request(customer: &Keys, step: &Script, refund_to: Option<&str>) -> anyhow::Result<Event> {
    let mut tags = vec![Tag::parse(["i", step.text, "text"])?];
    for (k, v) in step.params {
        tags.push(Tag::parse(["param", k, v])?);
    }
    if let Some(address) = refund_to {
        tags.push(Tag::parse(["refund", address])?);
    }
    Ok(EventBuilder::new(Kind::Custom(step.kind), "")
        .tags(tags)
        .sign_with_keys(customer)?)
}

async fn wait_state(node: &NodeHandle, job: &str, want: JobState) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = node.job(job).await.map(|j| j.state);
        if state == Some(want) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("job {job} did not reach {want} in time (state {state:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The refund of `job` went out as a zap: the customer's wallet sees the invoice paid and
/// publishes the zap receipt, which the node links to the refund.
async fn zapback_receipt(
    node: &NodeHandle,
    wallet: &Zapper,
    lightning: &paydvm::lightning::fake::FakeLightning,
    job: &str,
) -> anyhow::Result<()> {
    let issued = wallet.issued();
    let Some(paid) = lightning
        .payments()
        .into_iter()
        .find(|p| issued.iter().any(|i| i.bolt11 == p.bolt11 && !i.settled))
    else {
        return Ok(());
    };
    let receipt = wallet.settle(&paid.bolt11).await?;
    say(&format!(
        "  the refund was a zap: the customer's wallet published zap receipt {}",
        receipt.id.to_hex()
    ))?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let _ = node.job(job).await;
        let store = Store::open_read_only(node.ledger_path())?;
        let linked = store
            .state()
            .refunds()
            .any(|r| r.job.as_ref().is_some_and(|j| j.as_str() == job) && r.zap_receipt.is_some());
        if linked {
            say("  node verified the receipt and linked it to the refund")?;
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the refund zap receipt of job {job} was not linked in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `request`'s feedback with `status`, printing every reply seen meanwhile.
async fn wait_reply(
    replies: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    request: &Event,
    status: &str,
) -> anyhow::Result<Event> {
    let has_status = |event: &Event| {
        event.kind == Kind::Custom(7000)
            && tag(event, "status").is_some_and(|s| s.first().map(String::as_str) == Some(status))
    };
    wait_event(replies, request, &format!("{status} feedback"), has_status).await
}

/// Waits for an event that e-tags `request` and passes `wanted`, printing every reply seen
/// meanwhile; `what` names it in the time-out error.
async fn wait_event(
    replies: &mut tokio::sync::broadcast::Receiver<RelayPoolNotification>,
    request: &Event,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> anyhow::Result<Event> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, replies.recv())
            .await
            .with_context(|| format!("no {what} in time"))??;
        let RelayPoolNotification::Event { event, .. } = n else {
            continue;
        };
        say(&describe(&event))?;
        if event.tags.event_ids().any(|id| *id == request.id) && wanted(&event) {
            return Ok(*event);
        }
    }
}

/// The bolt11 of a `payment-required` feedback's `["amount", msat, bolt11]` tag.
fn invoice_of(event: &Event) -> Option<String> {
    tag(event, "amount").and_then(|values| values.get(1).cloned())
}

/// The values after the name of `event`'s first `name` tag.
fn tag(event: &Event, name: &str) -> Option<Vec<String>> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|s| s.first().map(String::as_str) == Some(name))
        .map(|s| s[1..].to_vec())
}

/// Prints `text` and a newline.
fn say(text: &str) -> anyhow::Result<()> {
    output::print(&format!("{text}\n"))
}

/// One line per reply the customer saw.
fn describe(event: &Event) -> String {
    let tag = |name: &str| tag(event, name).map(|values| values.join(" "));
    if event.kind == Kind::Custom(7003) {
        return format!(
            "  subscriber got the node's receipt (7003): valid {}",
            tag("valid").unwrap_or_default()
        );
    }
    if event.kind == Kind::Custom(7000) {
        let mut line = format!(
            "  customer got feedback: {}",
            tag("status").unwrap_or_default()
        );
        if let Some(amount) = tag("amount") {
            let (msat, bolt11) = amount.split_once(' ').unwrap_or((amount.as_str(), ""));
            line.push_str(&format!(" (amount {msat} msat)"));
            if !bolt11.is_empty() {
                line.push_str(&format!(
                    " with invoice {}…",
                    &bolt11[..bolt11.len().min(24)]
                ));
            }
        }
        line
    } else {
        format!(
            "  customer got result (kind {}): {:?}",
            event.kind.as_u16(),
            event.content
        )
    }
}

//! The customers' side of the paid-jobs bench: a payment made ready for each job on its rail
//! (untimed), then made when its slot comes (timed).

use std::collections::HashMap;
use std::str::FromStr;

use anyhow::Context;
use cdk::mint_url::MintUrl;
use cdk::nuts::{CurrencyUnit, Proof, Token};
use cdk::wallet::Wallet;
use clap::ValueEnum;
use nostr_sdk::prelude::*;
use paydvm::lightning::fake::FakeLightning;
use paydvm::node::NodeHandle;
use paydvm::payments::lnurl::Lud16;
use paydvm::protocol::nip90::Encryption;
use paydvm_ledger::Msat;
use paydvm_testkit::bench_node::{nutzap_event, quoted_invoices, PRICE_MSAT};
use paydvm_testkit::fixture::Fixture;
use paydvm_testkit::local_mint;
use paydvm_testkit::zapper::customer::{request_zap_invoice, ZapOrder};
use paydvm_testkit::zapper::Zapper;

use super::Customer;

/// How a job is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Rail {
    /// The quote's Lightning invoice, settled by the node's backend.
    Invoice,
    /// A zap (NIP-57) of the request through the node's lud16.
    Zap,
    /// A NutZap (NIP-61) of the request, ecash from a mint the node trusts.
    Nutzap,
    /// A Cashu token in the request's NIP-44 encrypted tags: the request is the payment.
    Token,
}

impl Rail {
    pub fn name(self) -> &'static str {
        match self {
            Rail::Invoice => "invoice",
            Rail::Zap => "zap",
            Rail::Nutzap => "nutzap",
            Rail::Token => "token",
        }
    }
}

/// One job's payment, ready to be made.
#[derive(Clone)]
pub struct Payment {
    pub job: EventId,
    pub rail: Rail,
    how: How,
}

#[derive(Clone)]
enum How {
    /// Payment hash of the quote's invoice.
    Invoice(String),
    /// The zap invoice the zapper issued for the customer's zap request.
    Zap(String),
    /// An event the customer publishes on its connection: the signed kind 9321 of a NutZap,
    /// or a request carrying its token.
    Publish(Box<(Event, Client)>),
}

/// What the customers pay through: the node's Lightning backend, its lud16 (the zapper) and
/// the mint it trusts.
pub struct Payer {
    lightning: FakeLightning,
    zapper: Zapper,
    lud16: Lud16,
    mint_url: String,
    /// The node's NutZap lock ("02" + x-only key).
    lock: String,
    node: PublicKey,
    relays: Vec<RelayUrl>,
}

impl Payer {
    /// Takes the fixture's zapper (shut down by [`Payer::shutdown`]).
    pub fn new(fixture: &mut Fixture) -> anyhow::Result<Payer> {
        let zapper = fixture.zapper.take().context("the fixture's zapper")?;
        Ok(Payer {
            lightning: fixture
                .lightning
                .clone()
                .context("the fixture's Lightning")?,
            lud16: zapper.lud16(),
            zapper,
            mint_url: fixture
                .mint
                .as_ref()
                .context("the fixture's mint")?
                .url
                .clone(),
            lock: fixture.nutzap_lock().context("the node's NutZap key")?,
            node: fixture.node_pubkey,
            relays: fixture.urls.clone(),
        })
    }

    /// A payment for each of `jobs` jobs: job k is customer k mod C's, on rail k mod R (the
    /// plan `publish_requests` followed).
    pub async fn prepare(
        &self,
        node: &NodeHandle,
        customers: &[Customer],
        jobs: usize,
        rails: &[Rail],
    ) -> anyhow::Result<Vec<Payment>> {
        let invoices = invoices(node, customers)?;
        let wallet = local_mint::memory_wallet(&self.mint_url).await?;
        let mut quoted = customers
            .iter()
            .map(|c| c.quoted.iter())
            .collect::<Vec<_>>();
        let mut payments = Vec::with_capacity(jobs);
        for k in 0..jobs {
            let c = &customers[k % customers.len()];
            let rail = rails[k % rails.len()];
            if rail == Rail::Token {
                let request = self.token_request(&wallet, &c.keys, k).await?;
                payments.push(Payment {
                    job: request.id,
                    rail,
                    how: How::Publish(Box::new((request, c.client.clone()))),
                });
                continue;
            }
            let job = *quoted[k % customers.len()]
                .next()
                .context("a customer has fewer quoted jobs than planned")?;
            let how = match rail {
                Rail::Invoice => How::Invoice(invoices[&job.to_hex()].clone()),
                Rail::Zap => How::Zap(self.zap_invoice(&c.keys, job).await?),
                _ => {
                    let proofs = self.mint(&wallet, Some(&self.lock)).await?;
                    let event = nutzap_event(&c.keys, &proofs, &self.mint_url, job, self.node)?;
                    How::Publish(Box::new((event, c.client.clone())))
                }
            };
            payments.push(Payment { job, rail, how });
        }
        Ok(payments)
    }

    /// One job's price in ecash, locked to `lock` if given.
    async fn mint(&self, wallet: &Wallet, lock: Option<&str>) -> anyhow::Result<Vec<Proof>> {
        Ok(local_mint::mint_ecash(wallet, PRICE_MSAT / 1000, lock).await?)
    }

    /// A kind 5050 request whose NIP-44 encrypted tags carry a token for its price.
    async fn token_request(
        &self,
        wallet: &Wallet,
        customer: &Keys,
        k: usize,
    ) -> anyhow::Result<Event> {
        let proofs = self.mint(wallet, None).await?;
        let mint = MintUrl::from_str(&self.mint_url)?;
        let token = Token::new(mint, proofs, None, CurrencyUnit::Sat).to_string();
        let text = format!("token job {k}");
        let inner = serde_json::json!([["i", text, "text"], ["cashu", token]]);
        let content = Encryption::Nip44.encrypt(customer, &self.node, &inner.to_string())?;
        Ok(EventBuilder::new(Kind::Custom(5050), content)
            .tags([Tag::public_key(self.node), Tag::parse(["encrypted"])?])
            .sign_with_keys(customer)?)
    }

    async fn zap_invoice(&self, payer: &Keys, job: EventId) -> anyhow::Result<String> {
        let order = ZapOrder {
            lud16: &self.lud16,
            http_loopback: true,
            recipient: self.node,
            target: job,
            amount: Msat::from_msat(PRICE_MSAT),
            relays: &self.relays,
        };
        Ok(request_zap_invoice(payer, &order).await?.bolt11)
    }

    /// Makes the payment: the evidence reaches the node from here on.
    pub async fn pay(&self, payment: &Payment) -> anyhow::Result<()> {
        match &payment.how {
            How::Invoice(hash) => {
                self.lightning.settle(hash)?;
            }
            How::Zap(bolt11) => {
                self.zapper.settle(bolt11).await?;
            }
            How::Publish(publish) => {
                let (event, client) = &**publish;
                client.send_event(event).await?;
            }
        }
        Ok(())
    }

    pub async fn shutdown(self) {
        self.zapper.shutdown().await;
    }
}

/// The quoted invoice (payment hash) of every quoted job, by job id.
fn invoices(node: &NodeHandle, customers: &[Customer]) -> anyhow::Result<HashMap<String, String>> {
    let jobs: Vec<String> = customers
        .iter()
        .flat_map(|c| c.quoted.iter().map(EventId::to_hex))
        .collect();
    Ok(quoted_invoices(node, &jobs)?.into_iter().collect())
}

//! A small LNURL-pay server with NIP-57 zap support, on 127.0.0.1, for tests and `paydvm demo`.
//!
//! It behaves as a real zapper does (NIP-57 Appendix D/E): `/.well-known/lnurlp/<name>` answers
//! with `allowsNostr` and its `nostrPubkey`; the callback checks the zap request (`nostr`),
//! issues a real regtest invoice whose description hash is SHA-256 of the request exactly as
//! received, and [`Zapper::settle`] (the "invoice was paid" hook) publishes the signed 9735
//! receipt to the loopback relays the zap request names. There is no Lightning network behind
//! it: settling is a call, which is what makes it a test double.
//!
//! By default it signs its own invoices and no wallet holds the money. With
//! [`ZapperOptions::wallet`] it issues them through that [`FakeLightning`] instead, and settling
//! pays the invoice in it: a lud16 server backed by the node's own wallet, as in a real
//! deployment, so the money a zap brings is in the wallet `paydvm reconcile` asks.

pub mod customer;
mod routes;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use bitcoin::secp256k1::SecretKey;
use nostr_sdk::prelude::{
    Client, Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, RelayUrl, Tag, Timestamp,
};
use paydvm_ledger::Msat;
use thiserror::Error;
use tokio::task::JoinHandle;

use paydvm::lightning::fake::{FakeError, FakeLightning};
use paydvm::payments::lnurl::Lud16;
use paydvm::payments::zap::ZAP_RECEIPT_KIND;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Invoice lifetime.
pub const INVOICE_EXPIRY: Duration = Duration::from_secs(600);

#[derive(Debug, Error)]
pub enum ZapperError {
    #[error("binding the zapper: {0}")]
    Bind(#[from] std::io::Error),
    #[error("no invoice {0:?} was issued here")]
    UnknownInvoice(String),
    #[error("the invoice was already settled")]
    AlreadySettled,
    #[error("the wallet behind the address did not take the payment: {0}")]
    Wallet(#[from] FakeError),
    #[error("the invoice is a plain LNURL payment, not a zap")]
    NotAZap,
    #[error("signing the receipt: {0}")]
    Sign(String),
    #[error("no loopback relay in the zap request accepted the receipt")]
    NotPublished,
}

/// Who the zapper is.
pub struct ZapperOptions {
    /// The lightning address user name (`<name>@127.0.0.1:<port>`).
    pub name: String,
    /// Signs receipts: its public key is the endpoint's `nostrPubkey`.
    pub signer: Keys,
    /// The Lightning node key that signs invoices.
    pub node_key: SecretKey,
    /// Whom this address takes zaps for: the zap request's single `p` must be this key.
    pub recipient: PublicKey,
    pub min_sendable: Msat,
    pub max_sendable: Msat,
    /// Added to every invoice's amount: a wallet that asks for more than it was told to.
    pub overcharge: Msat,
    /// The callback URL the pay endpoint announces instead of its own (a hostile server
    /// pointing the payer elsewhere).
    pub callback: Option<String>,
    /// How long its invoices stay payable ([`INVOICE_EXPIRY`] by default; refund tests make it
    /// short to see an invoice expire).
    pub invoice_expiry: Duration,
    /// The wallet behind the address: invoices are made in it (signed by its key, not
    /// `node_key`) and [`Zapper::settle`] pays them there. `None` (the default): the zapper signs
    /// its own invoices and the money reaches no wallet.
    pub wallet: Option<FakeLightning>,
    /// Whether the pay endpoint says `allowsNostr` (true by default); false makes it a plain
    /// LNURL-pay server, and the callback then ignores a zap request.
    pub allows_nostr: bool,
    /// When set, the callback makes and records each invoice, then answers only once it takes a
    /// permit (a test "crashes" the payer while its invoice request is unanswered).
    pub answer_gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl ZapperOptions {
    /// Fresh random keys, taking zaps for `recipient` between 1 sat and 1 000 000 sat.
    pub fn new(name: &str, recipient: PublicKey) -> ZapperOptions {
        let node_key = SecretKey::from_slice(&Keys::generate().secret_key().secret_bytes())
            .expect("a valid secp256k1 secret key is one");
        ZapperOptions {
            name: name.to_owned(),
            signer: Keys::generate(),
            node_key,
            recipient,
            min_sendable: Msat::from_msat(1_000),
            max_sendable: Msat::from_msat(1_000_000_000),
            overcharge: Msat::ZERO,
            callback: None,
            invoice_expiry: INVOICE_EXPIRY,
            wallet: None,
            allows_nostr: true,
            answer_gate: None,
        }
    }
}

/// One invoice the callback issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub bolt11: String,
    pub payment_hash: String,
    pub amount: Msat,
    pub preimage: [u8; 32],
    /// The zap request exactly as received (`None` for a plain LNURL payment).
    pub zap_request: Option<String>,
    pub settled: bool,
}

pub(crate) struct State {
    options: ZapperOptions,
    metadata: String,
    callback: String,
    /// By bolt11.
    issued: Mutex<HashMap<String, Issued>>,
}

/// A running zapper; stops when dropped.
pub struct Zapper {
    addr: SocketAddr,
    state: Arc<State>,
    /// TCP connections accepted so far.
    connections: Arc<AtomicUsize>,
    server: JoinHandle<()>,
    publisher: Client,
}

impl Zapper {
    /// Serves on a free 127.0.0.1 port.
    pub async fn start(options: ZapperOptions) -> Result<Zapper, ZapperError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Zapper::start_on(listener, options).await
    }

    /// Serves on `listener` (a test that must know the port before the zapper starts, to put
    /// it in [`ZapperOptions::callback`]).
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        options: ZapperOptions,
    ) -> Result<Zapper, ZapperError> {
        let addr = listener.local_addr()?;
        let metadata = serde_json::json!([
            ["text/plain", format!("Pay {}", options.name)],
            ["text/identifier", format!("{}@{addr}", options.name)],
        ])
        .to_string();
        let callback = options
            .callback
            .clone()
            .unwrap_or_else(|| format!("http://{addr}/lnurlp/{}/callback", options.name));
        let publisher = paydvm::node::transport::client(options.signer.clone());
        let state = Arc::new(State {
            options,
            metadata,
            callback,
            issued: Mutex::new(HashMap::new()),
        });
        let app = routes::router(state.clone());
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("zapper stopped: {e}");
            }
        });
        Ok(Zapper {
            addr,
            state,
            connections,
            server,
            publisher,
        })
    }

    /// `<name>@127.0.0.1:<port>`: fetch it with `lnurl_http_loopback`.
    pub fn lud16(&self) -> Lud16 {
        format!("{}@{}", self.state.options.name, self.addr)
            .parse()
            .expect("a loopback address with a valid name")
    }

    /// What it was started with (its keys: a test forges receipts and invoices with them).
    pub fn options(&self) -> &ZapperOptions {
        &self.state.options
    }

    /// The port it serves on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far: whether anything reached this server at all, even a
    /// request it could not read (TLS to this plain-http server).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn nostr_pubkey(&self) -> PublicKey {
        self.state.options.signer.public_key()
    }

    /// Everything the callback issued so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock_issued().values().cloned().collect()
    }

    /// "The invoice was paid": marks it settled (paying it in [`ZapperOptions::wallet`], if
    /// any) and publishes the zap receipt to the loopback relays the zap request names. Returns
    /// the receipt.
    pub async fn settle(&self, bolt11: &str) -> Result<Event, ZapperError> {
        let issued = {
            let mut all = self.state.lock_issued();
            let issued = all
                .get_mut(bolt11)
                .ok_or_else(|| ZapperError::UnknownInvoice(bolt11.to_owned()))?;
            if issued.settled {
                return Err(ZapperError::AlreadySettled);
            }
            // Paid in the wallet first: an invoice it will not settle (expired) stays unpaid.
            if let Some(wallet) = &self.state.options.wallet {
                wallet.settle(&issued.payment_hash)?;
            }
            issued.settled = true;
            issued.clone()
        };
        let request = issued.zap_request.as_deref().ok_or(ZapperError::NotAZap)?;
        let zap_request = Event::from_json(request).map_err(|_| ZapperError::NotAZap)?;
        let receipt = receipt(request, &zap_request, bolt11, Some(&issued.preimage))
            .custom_created_at(Timestamp::now())
            .sign_with_keys(&self.state.options.signer)
            .map_err(|e| ZapperError::Sign(e.to_string()))?;
        self.publish(&receipt, &relays_of(&zap_request)).await?;
        Ok(receipt)
    }

    /// Publishes any event (a receipt forged by a test, say) to `relays` as this zapper.
    pub async fn publish(&self, event: &Event, relays: &[RelayUrl]) -> Result<(), ZapperError> {
        let relays: Vec<RelayUrl> = relays.iter().filter(|r| is_loopback(r)).cloned().collect();
        for relay in &relays {
            if self.publisher.add_relay(relay.clone()).await.is_ok() {
                let _ = self
                    .publisher
                    .try_connect_relay(relay.clone(), CONNECT_TIMEOUT)
                    .await;
            }
        }
        if relays.is_empty() {
            return Err(ZapperError::NotPublished);
        }
        match self.publisher.send_event_to(relays, event).await {
            Ok(out) if !out.success.is_empty() => Ok(()),
            _ => Err(ZapperError::NotPublished),
        }
    }

    pub async fn shutdown(self) {
        self.server.abort();
        self.publisher.shutdown().await;
    }
}

impl Drop for Zapper {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl State {
    fn lock_issued(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts).
        self.issued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An unsigned 9735 as a zapper builds it (NIP-57 Appendix E): `p`, `e` copied from the
/// request, `P` = the request's author, `bolt11`, `description` = the request JSON as received,
/// and `preimage` when given.
pub fn receipt(
    request_json: &str,
    request: &Event,
    bolt11: &str,
    preimage: Option<&[u8; 32]>,
) -> EventBuilder {
    let mut tags: Vec<Tag> = request
        .tags
        .iter()
        .filter(|t| matches!(t.as_slice().first().map(String::as_str), Some("p" | "e")))
        .cloned()
        .collect();
    let value = |name: &str, v: String| Tag::parse([name.to_owned(), v]).expect("two strings");
    tags.push(value("P", request.pubkey.to_hex()));
    tags.push(value("bolt11", bolt11.to_owned()));
    tags.push(value("description", request_json.to_owned()));
    if let Some(preimage) = preimage {
        tags.push(value("preimage", hex::encode(preimage)));
    }
    EventBuilder::new(Kind::from(ZAP_RECEIPT_KIND), "").tags(tags)
}

/// The relays a zap request asks receipts to go to.
pub fn relays_of(request: &Event) -> Vec<RelayUrl> {
    request
        .tags
        .iter()
        .map(Tag::as_slice)
        .filter(|t| t.first().is_some_and(|n| n == "relays"))
        .flat_map(|t| t[1..].iter())
        .filter_map(|r| RelayUrl::parse(r).ok())
        .collect()
}

/// The zapper publishes only to relays on this machine.
fn is_loopback(relay: &RelayUrl) -> bool {
    let host = relay.as_str_without_trailing_slash();
    host.starts_with("ws://127.0.0.1:")
        || host.starts_with("ws://localhost:")
        || host.starts_with("ws://[::1]:")
}

#[cfg(test)]
mod tests;

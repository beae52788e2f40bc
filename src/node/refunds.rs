//! Lightning refunds, off the core's thread. The core decides; this desk does the slow parts and
//! answers with commands:
//!
//! 1. [`RefundDesk::route`]: find where to pay (the request's `refund` tag, else the `lud16` in the
//!    customer's kind 0), fetch an invoice for exactly what is owed over LNURL-pay and check it →
//!    [`Command::RefundRouted`], or [`Command::RefundDeferred`] with the reason. Where the
//!    address's LNURL server allows Nostr, the invoice is for our signed zap request and the
//!    route records it ([`zapback`]): the refund is a zap that points at the job.
//! 2. The core records `refund_started` with that invoice; only once it is on disk does it call
//!    [`RefundDesk::pay`] → [`Command::RefundOutcome`].
//! 3. An unknown outcome, or a refund found in flight at start-up, is looked up
//!    ([`RefundDesk::look_up`], with back-off) — never paid with another invoice. Only when the
//!    wallet confirms it has no record of the payment (it never left) is the same recorded
//!    invoice paid again, or the attempt failed if that invoice is about to expire
//!    ([`look_up`](self::look_up)).

mod look_up;
pub mod zapback;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nostr_sdk::prelude::{Client, Event, Filter, JsonUtil, Keys, Kind, PublicKey, RelayUrl};
use paydvm_ledger::{Asset, FeePayer, Msat, RefundId, RefundRoute, RefundZap};
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, warn};

use super::core::{Command, RefundStatus};
use super::now_ms;
use crate::lightning::refund::{check_refund_invoice, RefundAddress};
use crate::lightning::{LightningBackend, PaymentStatus};
use crate::payments::lnurl::{self, LnurlError, LnurlHttp, Lud16};

pub use self::look_up::NEVER_SENT_AFTER;

/// Refunds being routed or paid at once, at most.
pub const MAX_REFUNDS_IN_FLIGHT: usize = 4;
/// How long the customer's profile (kind 0) may take to arrive.
const PROFILE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the core asks the desk to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundOrder {
    pub refund: RefundId,
    /// The attempt `refund_started` will carry.
    pub attempt: u32,
    pub amount: Msat,
    /// The customer's pubkey (hex): their kind 0 may name a lightning address.
    pub customer: String,
    /// The request's `refund` tag, if it had one.
    pub refund_to: Option<RefundAddress>,
    /// What a zapback points at (the job's request, the customer's relays).
    pub zap: zapback::ZapTarget,
}

/// How the desk reaches the outside world.
pub struct RefundDeskParts {
    pub backend: Arc<dyn LightningBackend>,
    pub commands: mpsc::Sender<Command>,
    /// Routing-fee cap per refund.
    pub max_fee: Msat,
    /// LNURL calls to customers' addresses, under the node's host policy (public hosts only,
    /// unless `lnurl_http_loopback` or `lnurl_allow_hosts` say otherwise).
    pub lnurl: LnurlHttp,
    /// A client on our relays, for customers' profiles.
    pub profiles: Client,
    pub relays: Vec<RelayUrl>,
    /// The node's identity: signs the zap requests of zapbacks.
    pub keys: Keys,
    /// How far apart two "no record" answers must be before a payment counts as never sent
    /// ([`NEVER_SENT_AFTER`] outside tests).
    pub never_sent_after: Duration,
}

pub struct RefundDesk {
    backend: Arc<dyn LightningBackend>,
    commands: mpsc::Sender<Command>,
    max_fee: Msat,
    http: LnurlHttp,
    profiles: Client,
    relays: Vec<RelayUrl>,
    keys: Keys,
    in_flight: Arc<Semaphore>,
    /// Refunds with a look-up loop running (one loop per refund).
    looking_up: Arc<Mutex<HashSet<RefundId>>>,
    never_sent_after: Duration,
}

impl std::fmt::Debug for RefundDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundDesk")
            .field("backend", &self.backend.name())
            .field("max_fee", &self.max_fee)
            .finish_non_exhaustive()
    }
}

impl RefundDesk {
    pub fn new(parts: RefundDeskParts) -> RefundDesk {
        RefundDesk {
            backend: parts.backend,
            commands: parts.commands,
            max_fee: parts.max_fee,
            http: parts.lnurl,
            profiles: parts.profiles,
            relays: parts.relays,
            keys: parts.keys,
            in_flight: Arc::new(Semaphore::new(MAX_REFUNDS_IN_FLIGHT)),
            looking_up: Arc::new(Mutex::new(HashSet::new())),
            never_sent_after: parts.never_sent_after,
        }
    }

    /// Finds an invoice for exactly `order.amount`; answers `RefundRouted` or `RefundDeferred`.
    pub fn route(&self, order: RefundOrder) {
        let router = Router {
            http: self.http.clone(),
            profiles: self.profiles.clone(),
            relays: self.relays.clone(),
            keys: self.keys.clone(),
        };
        let commands = self.commands.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let max_fee = self.max_fee;
        tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            let command = match router.invoice_for(&order).await {
                Ok(Routed {
                    bolt11,
                    payment_hash,
                    zap,
                }) => Command::RefundRouted {
                    refund: order.refund,
                    attempt: order.attempt,
                    route: RefundRoute {
                        asset: Asset::Lightning,
                        destination: bolt11,
                        lookup: payment_hash,
                        // What the payment may cost in routing fees, held from the account.
                        fee_reserve: max_fee,
                        zap,
                    },
                },
                Err(reason) => {
                    super::repeat_log::refund_deferred("lightning", order.refund.as_str(), &reason);
                    Command::RefundDeferred {
                        refund: order.refund,
                        reason,
                    }
                }
            };
            let _ = commands.send(command).await;
        });
    }

    /// The routing-fee cap of every refund payment (the ledger reserves it too).
    pub fn max_fee(&self) -> Msat {
        self.max_fee
    }

    /// Pays a route the ledger has recorded (`refund_started` is on disk).
    pub fn pay(&self, refund: RefundId, attempt: u32, route: RefundRoute) {
        let backend = Arc::clone(&self.backend);
        let commands = self.commands.clone();
        let in_flight = Arc::clone(&self.in_flight);
        let max_fee = self.max_fee;
        tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            info!(%refund, attempt, hash = %route.lookup, "paying refund");
            let status = backend.pay_invoice(&route.destination, max_fee).await;
            let _ = commands
                .send(Command::RefundOutcome {
                    refund,
                    attempt,
                    status: refund_status(status),
                })
                .await;
        });
    }

    /// Looks the recorded payment up until the backend says settled or failed, backing off in
    /// between (see [`look_up`](self::look_up), which also re-sends a payment that never left).
    /// At most one loop per refund runs; a second request while one runs is ignored.
    pub fn look_up(&self, refund: RefundId, attempt: u32, route: RefundRoute) {
        {
            let mut running = self.looking_up.lock().unwrap_or_else(|p| p.into_inner());
            if !running.insert(refund.clone()) {
                return;
            }
        }
        let lookup = look_up::LookUp {
            backend: Arc::clone(&self.backend),
            commands: self.commands.clone(),
            in_flight: Arc::clone(&self.in_flight),
            max_fee: self.max_fee,
            never_sent_after: self.never_sent_after,
            running: Arc::clone(&self.looking_up),
            refund,
            attempt,
            route,
        };
        tokio::spawn(lookup.run());
    }
}

/// A Lightning payment's status as a refund outcome: the preimage is the evidence; routing fees
/// are the operator's. "No record" is only a hint here (the look-up loop decides when it means
/// "never sent"): reported as unknown.
pub(super) fn refund_status(status: PaymentStatus) -> RefundStatus {
    match status {
        PaymentStatus::Settled { preimage, fee } => RefundStatus::Paid {
            fee,
            fee_paid_by: FeePayer::Operator,
            evidence: format!("preimage {preimage}"),
        },
        PaymentStatus::Failed(reason) => RefundStatus::Failed(reason),
        PaymentStatus::Unknown(reason) => RefundStatus::Unknown(reason),
        PaymentStatus::NotFound => RefundStatus::Unknown(
            "no record of this payment (never sent? the same invoice is paid again once a \
             second look-up agrees)"
                .into(),
        ),
    }
}

/// The routing half, movable into a task.
struct Router {
    http: LnurlHttp,
    profiles: Client,
    relays: Vec<RelayUrl>,
    keys: Keys,
}

/// A checked refund invoice, and the zap it is for (a zapback).
struct Routed {
    bolt11: String,
    payment_hash: String,
    zap: Option<RefundZap>,
}

/// An invoice fetched over LNURL-pay, with the zap request it must commit to.
struct Fetched {
    bolt11: String,
    zap: Option<(String, RefundZap)>,
}

impl Router {
    /// A checked invoice for exactly what is owed, or why not.
    async fn invoice_for(&self, order: &RefundOrder) -> Result<Routed, String> {
        let address = match &order.refund_to {
            Some(address) => address.clone(),
            None => RefundAddress::LightningAddress(self.profile_address(&order.customer).await?),
        };
        let fetched = match address {
            RefundAddress::Invoice(bolt11) => Fetched { bolt11, zap: None },
            RefundAddress::LightningAddress(lud16) => self.fetch_invoice(&lud16, order).await?,
        };
        let invoice = check_refund_invoice(&fetched.bolt11, order.amount, now_ms() / 1000)
            .map_err(|e| format!("refund invoice refused: {e}"))?;
        let zap = match fetched.zap {
            Some((json, _)) if !zapback::commits_to(&invoice, &json) => {
                return Err(
                    "refund invoice refused: it does not commit to our zap request \
                     (description hash)"
                        .into(),
                )
            }
            Some((_, zap)) => Some(zap),
            None => None,
        };
        Ok(Routed {
            bolt11: invoice.as_str().to_owned(),
            payment_hash: invoice.payment_hash(),
            zap,
        })
    }

    /// Over LNURL-pay; the pay endpoint and the callback are both checked by the host policy
    /// (a refused host gets no connection, and the reason names the host and the rule). An
    /// endpoint that allows Nostr gets our zap request with the amount.
    async fn fetch_invoice(&self, lud16: &Lud16, order: &RefundOrder) -> Result<Fetched, String> {
        let failed = |e: LnurlError| format!("refund address {lud16}: {e}");
        let url = self.http.pay_url(lud16).map_err(failed)?;
        let endpoint = lnurl::fetch_pay_endpoint(&self.http, url)
            .await
            .map_err(failed)?;
        let zap = match endpoint.zap_signer() {
            Ok(signer) => Some(self.zap_request(order, signer)?),
            Err(_) => None,
        };
        let json = zap.as_ref().map(|(json, _)| json.as_str());
        let bolt11 = lnurl::request_invoice(&self.http, &endpoint, order.amount, json)
            .await
            .map_err(failed)?;
        Ok(Fetched { bolt11, zap })
    }

    /// Our signed zap request for `order` (JSON), and what the route records of it.
    fn zap_request(
        &self,
        order: &RefundOrder,
        signer: PublicKey,
    ) -> Result<(String, RefundZap), String> {
        let customer = PublicKey::from_hex(&order.customer).map_err(|e| e.to_string())?;
        let node_relays: Vec<String> = self.relays.iter().map(|r| r.to_string()).collect();
        let request = zapback::zap_request(&zapback::ZapRequestParts {
            keys: &self.keys,
            customer,
            amount: order.amount,
            refund: &order.refund,
            target: &order.zap,
            node_relays: &node_relays,
        })?;
        let zap = RefundZap {
            request: paydvm_ledger::EventId::new(request.id.to_hex()).map_err(|e| e.to_string())?,
            signer: paydvm_ledger::Pubkey::new(signer.to_hex()).map_err(|e| e.to_string())?,
        };
        Ok((request.as_json(), zap))
    }

    /// The `lud16` of the customer's newest kind 0 on our relays.
    async fn profile_address(&self, customer: &str) -> Result<Lud16, String> {
        let author = PublicKey::from_hex(customer).map_err(|e| e.to_string())?;
        for relay in &self.relays {
            let _ = self.profiles.add_relay(relay.clone()).await;
        }
        self.profiles.connect().await;
        let newest = newest_signed_by(&self.profiles, author, Kind::Metadata, PROFILE_TIMEOUT)
            .await
            .map_err(|e| format!("cannot fetch the customer's profile: {e}"))?
            .ok_or("the customer gave no refund address and has no profile on our relays")?;
        let lud16 = serde_json::from_str::<serde_json::Value>(&newest.content)
            .ok()
            .and_then(|v| v.get("lud16").and_then(|a| a.as_str()).map(str::to_owned))
            .ok_or("the customer gave no refund address and their profile has no lud16")?;
        lud16.trim().parse::<Lud16>().map_err(|e| {
            warn!(%customer, "profile lud16 unusable");
            format!("the customer's profile lud16 is unusable: {e}")
        })
    }
}

/// The newest event of `kind` by `author` the client's relays hold, signature checked: what a
/// customer says about themselves (kind 0 for Lightning refunds, kind 10019 for ecash refunds).
pub(super) async fn newest_signed_by(
    client: &Client,
    author: PublicKey,
    kind: Kind,
    timeout: Duration,
) -> Result<Option<Event>, nostr_sdk::client::Error> {
    let filter = Filter::new().author(author).kind(kind).limit(1);
    Ok(client
        .fetch_events(filter, timeout)
        .await?
        .into_iter()
        .filter(|e| e.pubkey == author && e.kind == kind && e.verify().is_ok())
        .max_by_key(|e| e.created_at))
}

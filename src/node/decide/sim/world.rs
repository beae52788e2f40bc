//! The world around the simulated node: customers on every rail, the executor, the Lightning and
//! ecash refund desks, the outbox — each answering the node's actions with inputs, with faults —
//! and the truth the invariants are checked against (what money really moved).

use std::collections::{BTreeMap, HashMap};

use paydvm_ledger::{
    Asset, EffectId, FeePayer, JobId, Msat, Rail, RefundId, RefundRoute, SubscriptionId, UnixMs,
};

use super::super::harness::{customer, hex};
use super::super::{Action, ExecFailure, Input, RefundRouteOrder, RefundStatus, VerifiedPayment};
use super::rng::Rng;

pub const MINT: &str = "http://127.0.0.1:3338";
/// The Lightning routing-fee cap the node reserves per refund.
pub const FEE_CAP: u64 = 10_000;

/// Something waiting to reach the node. `internal` inputs come from inside the process (an
/// executor's result, a desk's answer) and die with it; the others come from outside (relays,
/// customers' payments) and are still there after a crash.
#[derive(Debug, Clone)]
pub struct Pending {
    pub input: Input,
    pub internal: bool,
    /// With several nodes: the node it reaches (an internal input goes back to the node whose
    /// action made it); `None`: every node hears it (a relay's event, a wallet's payment).
    pub node: Option<usize>,
}

/// A refund payout the rail has taken and not yet settled: look-ups say it is pending and, like
/// the real desks, keep looking; its answer reaches the node that paid it and every node that
/// looked, each only if that process still runs.
#[derive(Debug, Clone)]
pub struct InFlight {
    refund: RefundId,
    attempt: u32,
    route: RefundRoute,
    /// Who is told when it settles: each node with its crash count when it paid or looked.
    tell: Vec<(usize, u64)>,
}

/// Which ways the world misbehaves (all off while the run drains at the end).
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub on: bool,
}

/// The truth outside the node.
#[derive(Default)]
pub struct World {
    pub pending: Vec<Pending>,
    /// The node whose actions are being performed: their answers go back to it.
    pub performer: usize,
    /// Money in each wallet (msat): what reconcile would read.
    pub wallets: BTreeMap<String, i128>,
    /// Per refund: the attempts whose money really left, and the sum of those payouts.
    pub sent: HashMap<RefundId, Vec<u32>>,
    /// Quotes the customers were told: job → (amount, bolt11 payment hash if any).
    pub quotes: HashMap<JobId, (Msat, Option<String>)>,
    /// The same for subscriptions: what the subscriber was last asked to pay.
    pub subscription_quotes: HashMap<SubscriptionId, (Msat, Option<String>)>,
    /// Payments made (each unique reference once), to replay as duplicates.
    pub payments: Vec<VerifiedPayment>,
    /// Result replies published per job.
    pub results: HashMap<JobId, u32>,
    /// What each refund owes, copied from the ledger when it is paid.
    pub refund_amounts: HashMap<RefundId, i128>,
    /// Payouts the rail has not settled yet.
    pub in_flight: Vec<InFlight>,
    /// Crashes per node: an answer to a process that died is lost.
    pub epochs: HashMap<usize, u64>,
    /// Executor attempts started, and by which node.
    pub runs: HashMap<(JobId, u32), Vec<usize>>,
    /// Refund attempts handed to a rail to pay, and by which node.
    pub payouts: HashMap<(RefundId, u32), Vec<usize>>,
    pub stats: Stats,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub subscriptions: u64,
    pub cancellations: u64,
    pub receipts: u64,
    pub payments: u64,
    pub duplicates: u64,
    pub lost_answers: u64,
    pub unknown_outcomes: u64,
    pub failed_payouts: u64,
    pub deferred_routes: u64,
    pub exec_failures: u64,
    pub crashes: u64,
    pub clock_jumps: u64,
    pub refunds_paid: u64,
    /// With several nodes: writes that found another node had written first.
    pub lost_races: u64,
    /// Look-ups of a refund attempt by a node other than the one that paid it.
    pub lookups_elsewhere: u64,
    /// Jobs whose attempts ran on more than one node (a restart resumes every node's work).
    pub jobs_run_on_two_nodes: u64,
    /// Payouts that stayed in flight for a while (look-ups meanwhile answer "pending").
    pub slow_payouts: u64,
}

/// What a customer pays against `amount` asked: half, a little more, or (mostly) exactly it.
fn paid_for(rng: &mut Rng, amount: Msat) -> u64 {
    match rng.below(6) {
        0 => amount.as_msat() / 2,
        1 => amount.as_msat() + 3_000,
        _ => amount.as_msat(),
    }
}

pub fn wallet(asset: &Asset) -> String {
    asset.to_string()
}

pub fn mint() -> Asset {
    Asset::Mint { url: MINT.into() }
}

impl World {
    pub fn push(&mut self, input: Input, internal: bool) {
        let node = internal.then_some(self.performer);
        self.pending.push(Pending {
            input,
            internal,
            node,
        });
    }

    /// An input from outside that `node` has yet to hear (another node heard it already).
    pub fn push_to(&mut self, input: Input, node: usize) {
        self.pending.push(Pending {
            input,
            internal: false,
            node: Some(node),
        });
    }

    /// `node` crashed: what was in that process is gone.
    pub fn crash(&mut self, node: usize) {
        *self.epochs.entry(node).or_default() += 1;
        self.pending
            .retain(|p| !p.internal || p.node.is_some_and(|n| n != node));
    }

    /// One pending input, picked at random (reorder), sometimes delivered twice (duplicate).
    pub fn next(&mut self, rng: &mut Rng, faults: Faults) -> Option<Pending> {
        if !self.in_flight.is_empty() && (!faults.on || rng.chance(10)) {
            self.settle(rng, faults);
        }
        if self.pending.is_empty() {
            return None;
        }
        let at = if faults.on {
            rng.below(self.pending.len())
        } else {
            0
        };
        let p = self.pending.remove(at);
        if faults.on && !p.internal && rng.chance(5) {
            self.stats.duplicates += 1;
            self.pending.push(p.clone());
        }
        Some(p)
    }

    fn credit_wallet(&mut self, asset: &Asset, msat: i128) {
        *self.wallets.entry(wallet(asset)).or_default() += msat;
    }

    /// A customer pays for a quoted job: whole, in part, or more, on a random rail.
    pub fn pay_quote(&mut self, rng: &mut Rng, job: &JobId, now: u64) {
        let Some((amount, hash)) = self.quotes.get(job).cloned() else {
            return;
        };
        let msat = paid_for(rng, amount);
        let n = self.payments.len();
        let (rail, asset, reference) = match (rng.below(4), hash) {
            (0, Some(hash)) => (Rail::Invoice, Asset::Lightning, hash),
            (1, _) => (Rail::Zap, Asset::Lightning, hex(&format!("zap-hash:{n}"))),
            (2, _) => (Rail::NutZap, mint(), format!("proofs:{n}")),
            _ => (Rail::CashuToken, mint(), format!("token:{n}")),
        };
        self.pay_named(job.to_string(), (rail, asset, reference), msat, now);
    }

    /// A subscriber pays what a subscription's notice asked, or half of it, or more, or a
    /// period ahead, by invoice, zap or NutZap.
    pub fn pay_subscription(&mut self, rng: &mut Rng, subscription: &SubscriptionId, now: u64) {
        let Some((amount, hash)) = self.subscription_quotes.get(subscription).cloned() else {
            return;
        };
        let msat = paid_for(rng, amount);
        let n = self.payments.len();
        let (rail, asset, reference) = match (rng.below(3), hash) {
            (0, Some(hash)) => (Rail::Invoice, Asset::Lightning, hash),
            (1, _) => (Rail::NutZap, mint(), format!("sub-proofs:{n}")),
            _ => (Rail::Zap, Asset::Lightning, hex(&format!("sub-zap:{n}"))),
        };
        self.pay_named(
            subscription.to_string(),
            (rail, asset, reference),
            msat,
            now,
        );
    }

    /// A verified payment of `msat` naming `names`, on `rail` (an invoice is paid once).
    fn pay_named(&mut self, names: String, rail: (Rail, Asset, String), msat: u64, now: u64) {
        let (rail, asset, reference) = rail;
        if rail == Rail::Invoice && self.payments.iter().any(|p| p.reference == reference) {
            return; // an invoice is paid once
        }
        let n = self.payments.len();
        let payment = VerifiedPayment {
            idem: format!("{}:{n}:{now}", rail.as_str()),
            rail,
            asset: asset.clone(),
            reference,
            linked: vec![],
            amount: Msat::from_msat(msat),
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            names: Some(names),
        };
        self.deliver_payment(payment, asset, msat);
    }

    /// Prepaid credit for `who`, bought over Lightning.
    pub fn top_up(&mut self, who: &str, msat: u64) {
        let n = self.payments.len();
        let payment = VerifiedPayment {
            idem: format!("manual:{n}"),
            rail: Rail::Manual,
            asset: Asset::Lightning,
            reference: format!("topup:{n}"),
            linked: vec![],
            amount: Msat::from_msat(msat),
            fee: Msat::ZERO,
            evidence: None,
            payer: Some(customer(who).to_string()),
            names: None,
        };
        self.deliver_payment(payment, Asset::Lightning, msat);
    }

    fn deliver_payment(&mut self, payment: VerifiedPayment, asset: Asset, msat: u64) {
        self.stats.payments += 1;
        self.credit_wallet(&asset, i128::from(msat));
        self.payments.push(payment.clone());
        self.push(Input::PaymentVerified(Box::new(payment)), false);
    }

    /// The same money seen again: the same evidence, or (for a Lightning payment) the same
    /// payment hash seen through another rail (a zap receipt for a paid invoice).
    pub fn replay_payment(&mut self, rng: &mut Rng) {
        if self.payments.is_empty() {
            return;
        }
        let mut again = self.payments[rng.below(self.payments.len())].clone();
        if again.asset == Asset::Lightning && rng.chance(50) {
            again.idem = format!("other-rail:{}", again.idem);
        }
        self.stats.duplicates += 1;
        self.push(Input::PaymentVerified(Box::new(again)), false);
    }

    /// What the node's actions set going, with faults.
    pub fn perform(&mut self, rng: &mut Rng, faults: Faults, action: Action) {
        match action {
            Action::RunExecutor { work, attempt } => {
                if let Ok(job) = JobId::new(work.id.clone()) {
                    self.runs
                        .entry((job, attempt))
                        .or_default()
                        .push(self.performer);
                }
                self.execute(rng, faults, &work.id, attempt)
            }
            Action::RequestInvoice {
                job,
                amount,
                expires_at,
            } => {
                let invoice = (!faults.on || !rng.chance(10))
                    .then(|| crate::lightning::IssuedInvoice {
                        bolt11: format!("lnbcrt{}n1{}", amount.as_msat() / 100, &job.as_str()[..8]),
                        payment_hash: hex(&format!("invoice:{job}")),
                    })
                    .ok_or_else(|| "the backend failed (simulated)".to_owned());
                let input = Input::InvoiceIssued {
                    job,
                    amount,
                    expires_at,
                    invoice,
                };
                self.push(input, true);
            }
            Action::RouteRefund(order) => self.route(rng, faults, order),
            Action::PayRefund {
                refund,
                attempt,
                route,
            } => {
                let by = self.payouts.entry((refund.clone(), attempt)).or_default();
                by.push(self.performer);
                self.pay(rng, faults, refund, attempt, &route)
            }
            Action::LookUpRefund {
                refund,
                attempt,
                route,
            } => {
                let paid_by = self.payouts.get(&(refund.clone(), attempt));
                if paid_by.is_some_and(|by| !by.contains(&self.performer)) {
                    self.stats.lookups_elsewhere += 1;
                }
                let status = self.truth(&refund, attempt, &route);
                // Still in flight ("pending"): this look-up waits and is told when it settles.
                let teller = (self.performer, self.epoch(self.performer));
                let this = |f: &&mut InFlight| f.refund == refund && f.attempt == attempt;
                if let Some(slow) = self.in_flight.iter_mut().find(this) {
                    slow.tell.push(teller);
                }
                self.push(
                    Input::RefundOutcome {
                        refund,
                        attempt,
                        status,
                    },
                    true,
                );
            }
            Action::RequestSubscriptionInvoice {
                subscription,
                amount,
                expires_at,
            } => {
                let invoice = (!faults.on || !rng.chance(10))
                    .then(|| crate::lightning::IssuedInvoice {
                        bolt11: subscription_bolt11(&subscription, amount, expires_at),
                        payment_hash: hex(&format!(
                            "invoice:{}",
                            subscription_bolt11(&subscription, amount, expires_at)
                        )),
                    })
                    .ok_or_else(|| "the backend failed (simulated)".to_owned());
                let input = Input::SubscriptionInvoiceIssued {
                    subscription,
                    expires_at,
                    invoice,
                };
                self.push(input, true);
            }
            Action::Resend(effect) => self.outbox(rng, faults, effect),
            Action::WatchInvoice { .. }
            | Action::WatchSubscriptionInvoice { .. }
            | Action::AbandonRoute { .. }
            | Action::Forget(_) => {}
        }
    }

    fn execute(&mut self, rng: &mut Rng, faults: Faults, job: &str, attempt: u32) {
        let Ok(job) = JobId::new(job) else { return };
        let outcome = match rng.below(10) {
            0 | 1 if faults.on => {
                self.stats.exec_failures += 1;
                Err(ExecFailure {
                    reason: "timed out".into(),
                    retryable: true,
                })
            }
            2 if faults.on => {
                self.stats.exec_failures += 1;
                Err(ExecFailure {
                    reason: "cannot do this".into(),
                    retryable: false,
                })
            }
            _ => Ok(format!("result of {job} attempt {attempt}")),
        };
        let input = Input::ExecutorFinished {
            job,
            attempt,
            outcome,
        };
        self.push(input, true);
    }

    fn route(&mut self, rng: &mut Rng, faults: Faults, order: RefundRouteOrder) {
        if faults.on && rng.chance(10) {
            self.stats.deferred_routes += 1;
            let refund = match order {
                RefundRouteOrder::Lightning { refund, .. }
                | RefundRouteOrder::Ecash { refund, .. } => refund,
            };
            let reason = "the customer's wallet did not answer".into();
            return self.push(Input::RefundDeferred { refund, reason }, true);
        }
        let (refund, attempt, route) = match order {
            RefundRouteOrder::Lightning {
                refund, attempt, ..
            } => {
                let route = RefundRoute {
                    asset: Asset::Lightning,
                    destination: format!("lnbcrt-refund-{refund}-{attempt}"),
                    lookup: hex(&format!("refund:{refund}:{attempt}")),
                    fee_reserve: Msat::from_msat(FEE_CAP),
                    zap: None,
                };
                (refund, attempt, route)
            }
            RefundRouteOrder::Ecash {
                refund,
                attempt,
                mint: url,
                ..
            } => {
                let route = RefundRoute {
                    asset: Asset::Mint { url },
                    destination: format!("nutzap-to-{refund}"),
                    lookup: format!("{refund}#{attempt}"),
                    fee_reserve: Msat::ZERO,
                    zap: None,
                };
                (refund, attempt, route)
            }
        };
        self.push(
            Input::RefundRouted {
                refund,
                attempt,
                route,
            },
            true,
        );
    }

    /// Pays a refund: sent (answer kept or lost), or explicitly failed; an unknown answer may
    /// hide either.
    fn pay(
        &mut self,
        rng: &mut Rng,
        faults: Faults,
        refund: RefundId,
        attempt: u32,
        route: &RefundRoute,
    ) {
        if faults.on && rng.chance(20) {
            self.stats.slow_payouts += 1;
            let tell = vec![(self.performer, self.epoch(self.performer))];
            let route = route.clone();
            let slow = InFlight {
                refund,
                attempt,
                route,
                tell,
            };
            return self.in_flight.push(slow);
        }
        let roll = if faults.on { rng.below(10) } else { 9 };
        let sent = roll >= 2;
        if sent {
            self.send(&refund, attempt, route);
        }
        let status = match roll {
            0 => {
                self.stats.failed_payouts += 1;
                RefundStatus::Failed("no route to the customer".into())
            }
            1 | 2 => {
                self.stats.unknown_outcomes += 1;
                RefundStatus::Unknown("the wallet did not answer".into())
            }
            _ => self.truth(&refund, attempt, route),
        };
        self.push(
            Input::RefundOutcome {
                refund,
                attempt,
                status,
            },
            true,
        );
    }

    fn send(&mut self, refund: &RefundId, attempt: u32, route: &RefundRoute) {
        let sent = self.sent.entry(refund.clone()).or_default();
        if sent.contains(&attempt) {
            // The same attempt handed over again (an ecash attempt run again, the same invoice):
            // the rail does not pay it twice.
            return;
        }
        sent.push(attempt);
        self.stats.refunds_paid += 1;
        let amount = self.refund_amount(refund);
        let fee = fee(route);
        self.credit_wallet(&route.asset, -(amount + fee));
    }

    /// One payout in flight settles, sent or failed; its answer goes to each process that paid
    /// or looked, if it still runs.
    fn settle(&mut self, rng: &mut Rng, faults: Faults) {
        let at = rng.below(self.in_flight.len());
        let slow = self.in_flight.remove(at);
        let status = if faults.on && rng.chance(20) {
            RefundStatus::Failed("no route to the customer".into())
        } else {
            self.send(&slow.refund, slow.attempt, &slow.route);
            self.truth(&slow.refund, slow.attempt, &slow.route)
        };
        for (node, epoch) in slow.tell {
            if self.epoch(node) != epoch {
                continue; // that process died: its answer is lost
            }
            let input = Input::RefundOutcome {
                refund: slow.refund.clone(),
                attempt: slow.attempt,
                status: status.clone(),
            };
            self.pending.push(Pending {
                input,
                internal: true,
                node: Some(node),
            });
        }
    }

    fn epoch(&self, node: usize) -> u64 {
        self.epochs.get(&node).copied().unwrap_or(0)
    }

    /// What became of an attempt, as the rail knows it.
    fn truth(&self, refund: &RefundId, attempt: u32, route: &RefundRoute) -> RefundStatus {
        let pending = |f: &InFlight| f.refund == *refund && f.attempt == attempt;
        if self.in_flight.iter().any(pending) {
            return RefundStatus::Unknown("the payment is still pending".into());
        }
        let sent = self.sent.get(refund).is_some_and(|a| a.contains(&attempt));
        if !sent {
            return RefundStatus::Failed("no such payment".into());
        }
        RefundStatus::Paid {
            fee: Msat::from_msat(u64::try_from(fee(route)).unwrap_or(0)),
            fee_paid_by: FeePayer::Operator,
            evidence: format!("sent {refund}#{attempt}"),
        }
    }

    /// Amounts of refunds are looked up in the ledger by the runner: it sets them here.
    fn refund_amount(&self, refund: &RefundId) -> i128 {
        self.refund_amounts.get(refund).copied().unwrap_or(0)
    }

    fn outbox(&mut self, rng: &mut Rng, faults: Faults, effect: EffectId) {
        if faults.on && rng.chance(20) {
            self.stats.lost_answers += 1;
            return self.push(Input::EffectGaveUp { effect }, true);
        }
        let detail = "relay ok".into();
        self.push(Input::EffectDelivered { effect, detail }, true);
    }

    /// A reply the node published.
    pub fn published(&mut self, rng: &mut Rng, faults: Faults, effect: EffectId) {
        self.outbox(rng, faults, effect);
    }
}

/// The fee a payout over `route` costs: a fixed share of the Lightning cap; nothing at the mint.
fn fee(route: &RefundRoute) -> i128 {
    match route.asset {
        Asset::Lightning => i128::from(FEE_CAP / 4),
        Asset::Mint { .. } => 0,
    }
}

/// The sim backend's invoice for a subscription quote: one per quote (a first period, each
/// renewal), so each has its own payment hash.
fn subscription_bolt11(subscription: &SubscriptionId, amount: Msat, expires_at: UnixMs) -> String {
    format!(
        "lnbcrt{}n1{}x{}",
        amount.as_msat() / 100,
        &subscription.as_str()[..8],
        expires_at.0
    )
}

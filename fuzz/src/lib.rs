//! Shared decoder for the ledger fuzz targets: turns fuzzer bytes into groups of ledger events.
//!
//! Random strings never make events interact, so every identifier comes from a small pool (plus
//! an occasional fresh one), and most numbers are "smart": read from the current state (the
//! job's remaining price, the customer's credit, the next attempt number, the quote's expiry) so
//! that valid transitions are common, mixed with 0, small values and values near `u64::MAX`.
//! Each event of a group is decoded against the state left by the previous ones (applied to the
//! ledger and rolled back again), then the whole group is handed to the caller.

pub mod bech32;
pub mod cashu;
pub mod input;
pub mod vectors;

use arbitrary::Unstructured;
use paydvm_ledger::*;

pub const JOBS: &[&str] = &["j0", "j1", "j2", "j3", "j0:x", "j\"\\5"];
pub const REFUNDS: &[&str] = &["r0", "r1", "r2", "j0"];
pub const PAY_REFS: &[&str] = &["p0", "p1", "p2", "hash-j0", "j1"];
pub const PUBKEYS: &[&str] = &["alice", "bob", "c:a\"rol"];
pub const SUBS: &[&str] = &["s0", "s1"];
pub const EFFECTS: &[&str] = &["e0", "e1", "e2"];
pub const EVENT_IDS: &[&str] = &["ev0", "ev1", "j0", "p0"];
pub const MINTS: &[&str] = &["https://mint.a", "", "m:\u{e9}\"\n\\"];
pub const TIERS: &[&str] = &["basic", "pro", ""];

/// Amounts that stress overflow and the store's i64 columns.
pub const HUGE: &[u64] = &[
    u64::MAX,
    u64::MAX - 1,
    i64::MAX as u64,
    i64::MAX as u64 + 1,
    Msat::MAX_SUPPLY.as_msat(),
    Msat::MAX_SUPPLY.as_msat() + 1,
];

pub struct Gen<'a> {
    u: Unstructured<'a>,
    next_key: u64,
    next_fresh: u64,
    /// Every key handed out so far, to produce duplicates and keys repeated within a group.
    keys: Vec<IdemKey>,
    clock: u64,
}

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Gen {
            u: Unstructured::new(data),
            next_key: 0,
            next_fresh: 0,
            keys: Vec::new(),
            clock: 1_000,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn u64(&mut self) -> u64 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.byte() as usize % n
        } else {
            self.u16() as usize % n
        }
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn coin(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_fresh += 1;
        format!("{prefix}{}", self.next_fresh)
    }

    fn key(&mut self) -> IdemKey {
        if !self.keys.is_empty() && self.byte() < 12 {
            let i = self.below(self.keys.len());
            return self.keys[i].clone();
        }
        self.next_key += 1;
        let k = IdemKey::new(format!("k{}", self.next_key)).unwrap();
        self.keys.push(k.clone());
        k
    }

    fn small(&mut self) -> u64 {
        u64::from(self.u16() % 1_000) + 1
    }

    /// An amount; `hint` is what the state suggests (a remaining price, a held balance).
    pub fn amount(&mut self, hint: Msat) -> Msat {
        let h = hint.as_msat();
        Msat::from_msat(match self.byte() % 12 {
            0 => 0,
            1 | 2 => self.small(),
            3 => 10_000,
            4..=6 => h,
            7 => h.saturating_add(self.small()),
            8 => h.saturating_sub(self.small()),
            9 => self.pick(HUGE),
            10 => self.u64(),
            _ => 1,
        })
    }

    fn at(&mut self, hint: Option<u64>) -> UnixMs {
        UnixMs(match self.byte() % 10 {
            0..=3 => self.clock,
            4 | 5 => {
                self.clock += self.small();
                self.clock
            }
            6 | 7 => hint.unwrap_or(self.clock),
            8 => hint.unwrap_or(self.clock).saturating_sub(1),
            _ => self.pick(&[0, 1, u64::MAX, i64::MAX as u64, i64::MAX as u64 + 1]),
        })
    }

    fn text(&mut self) -> String {
        match self.byte() % 16 {
            0 => "a".repeat(MAX_TEXT_LEN),
            1 => "a".repeat(MAX_TEXT_LEN + 1),
            2 => "\u{e9}\"\\\n\u{0}".to_string(),
            3 => String::new(),
            _ => "reason".to_string(),
        }
    }

    fn job(&mut self) -> JobId {
        JobId::new(self.pick(JOBS)).unwrap()
    }

    fn event_id(&mut self) -> EventId {
        if self.byte() < 32 {
            let s = self.fresh("ev");
            return EventId::new(s).unwrap();
        }
        EventId::new(self.pick(EVENT_IDS)).unwrap()
    }

    fn pubkey(&mut self) -> Pubkey {
        Pubkey::new(self.pick(PUBKEYS)).unwrap()
    }

    fn sub(&mut self) -> SubscriptionId {
        SubscriptionId::new(self.pick(SUBS)).unwrap()
    }

    fn effect(&mut self) -> EffectId {
        if self.byte() < 24 {
            let s = self.fresh("e");
            return EffectId::new(s).unwrap();
        }
        EffectId::new(self.pick(EFFECTS)).unwrap()
    }

    /// An existing refund most of the time (for refund events).
    fn refund(&mut self, st: &LedgerState) -> RefundId {
        let existing: Vec<RefundId> = {
            let mut v: Vec<RefundId> = st.refunds().map(|r| r.refund.clone()).collect();
            v.sort();
            v
        };
        if !existing.is_empty() && self.byte() >= 48 {
            return existing[self.below(existing.len())].clone();
        }
        RefundId::new(self.pick(REFUNDS)).unwrap()
    }

    /// A new refund id most of the time (for dispositions).
    fn new_refund(&mut self) -> RefundId {
        if self.byte() < 200 {
            let s = self.fresh("r");
            return RefundId::new(s).unwrap();
        }
        RefundId::new(self.pick(REFUNDS)).unwrap()
    }

    fn pay_ref(&mut self) -> PaymentRef {
        if self.byte() < 200 {
            let s = self.fresh("p");
            return PaymentRef::new(s).unwrap();
        }
        PaymentRef::new(self.pick(PAY_REFS)).unwrap()
    }

    fn asset(&mut self) -> Asset {
        if self.byte() % 3 == 0 {
            Asset::Mint {
                url: self.pick(MINTS).to_string(),
            }
        } else {
            Asset::Lightning
        }
    }

    /// The asset a refund event names: usually none (as older nodes wrote), else any.
    fn named_asset(&mut self) -> Option<Asset> {
        if self.coin() {
            None
        } else {
            Some(self.asset())
        }
    }

    fn fee_payer(&mut self) -> FeePayer {
        if self.byte() % 4 == 0 {
            FeePayer::Customer
        } else {
            FeePayer::Operator
        }
    }

    fn disposition(&mut self) -> Disposition {
        if self.coin() {
            Disposition::Refund {
                refund: self.new_refund(),
                asset: self.named_asset(),
            }
        } else {
            Disposition::Credit
        }
    }

    /// `held` for expiries and cancellations: usually what the job's balance calls for.
    fn held_disposition(&mut self, st: &LedgerState, job: &JobId) -> Option<Disposition> {
        match self.byte() % 8 {
            0 => None,
            1 => Some(self.disposition()),
            _ if st.held(&Account::Job(job.clone())).is_zero() => None,
            _ => Some(self.disposition()),
        }
    }

    fn option(&mut self) -> PaymentOption {
        match self.byte() % 4 {
            0 => PaymentOption::Invoice {
                payment_hash: self.pick(&["hash-j0", "", "h\u{e9}"]).to_string(),
                bolt11: self.pick(&["lnbc1", "j0"]).to_string(),
            },
            1 => PaymentOption::Zap {
                target_event: self.event_id(),
            },
            2 => PaymentOption::NutZap,
            _ => PaymentOption::CashuToken,
        }
    }

    fn remaining(st: &LedgerState, job: &JobId) -> Msat {
        match st.job(job) {
            Some(rec) => match rec.price {
                Some(p) => p.saturating_sub(rec.applied),
                None => Msat::from_msat(10_000),
            },
            None => Msat::from_msat(10_000),
        }
    }

    fn payment(&mut self, st: &LedgerState) -> Payment {
        let rail = self.pick(&[
            Rail::Invoice,
            Rail::Zap,
            Rail::NutZap,
            Rail::CashuToken,
            Rail::Manual,
        ]);
        let asset = self.asset();
        let reference = self.pay_ref();
        let linked = match self.byte() % 8 {
            0 => vec![self.pay_ref()],
            1 => vec![self.pay_ref(), self.pay_ref()],
            2 => vec![reference.clone()],
            _ => vec![],
        };
        let evidence = if self.coin() {
            Some(self.event_id())
        } else {
            None
        };
        let payer = if self.coin() {
            Some(self.pubkey())
        } else {
            None
        };
        let (target, amount) = match self.byte() % 8 {
            0..=3 => {
                let job = self.job();
                let remaining = Self::remaining(st, &job);
                let amount = self.amount(remaining);
                let booking = match self.byte() % 6 {
                    0..=2 => JobPayment::Apply {
                        // What the job's remaining price calls for.
                        excess: if amount > remaining {
                            Some(self.disposition())
                        } else {
                            None
                        },
                    },
                    3 => JobPayment::Apply {
                        excess: if self.coin() {
                            Some(self.disposition())
                        } else {
                            None
                        },
                    },
                    _ => JobPayment::Whole(self.disposition()),
                };
                (PaymentTarget::Job { job, booking }, amount)
            }
            4 => (
                PaymentTarget::Credit {
                    pubkey: self.pubkey(),
                },
                self.amount(Msat::from_msat(10_000)),
            ),
            5 | 6 => (
                PaymentTarget::Subscription {
                    subscription: self.sub(),
                },
                self.amount(Msat::from_msat(10_000)),
            ),
            _ => (
                PaymentTarget::Unmatched {
                    reason: self.text(),
                },
                self.amount(Msat::from_msat(10_000)),
            ),
        };
        Payment {
            rail,
            asset,
            reference,
            linked,
            amount,
            fee: Msat::ZERO,
            evidence,
            payer,
            target,
        }
    }

    fn attempt(&mut self, smart: u32) -> u32 {
        match self.byte() % 8 {
            0 => 0,
            1 => smart.wrapping_add(1),
            2 => u32::MAX,
            _ => smart,
        }
    }

    /// One event, decoded against `st`: half the time the natural next step of an existing job
    /// (so deep states are reached), otherwise any event with pooled arguments.
    pub fn event(&mut self, st: &LedgerState) -> LedgerEvent {
        let key = self.key();
        let mut hint = None;
        if self.byte() < 128 {
            if let Some((body, h)) = self.guided(st) {
                let at = self.at(h);
                return LedgerEvent::new(key, at, body);
            }
        }
        let body = match self.byte() % 26 {
            0 | 1 => EventBody::JobReceived {
                job: self.job(),
                request_event: self.event_id(),
                customer: self.pubkey(),
                kind: self.pick(&[5050, 5000, 0, u16::MAX]),
                request: None,
            },
            2 => EventBody::JobRejected {
                job: self.job(),
                reason: self.text(),
            },
            3 | 4 => {
                let job = self.job();
                let amount = self.amount(Msat::from_msat(10_000));
                let expires_at = match self.byte() % 6 {
                    0 => UnixMs(u64::MAX),
                    1 => UnixMs(self.clock),
                    _ => UnixMs(self.clock + self.pick(&[1, 100, 10_000])),
                };
                let options = (0..self.byte() % 3).map(|_| self.option()).collect();
                EventBody::QuoteIssued {
                    job,
                    amount,
                    expires_at,
                    options,
                }
            }
            5..=8 => EventBody::PaymentReceived(self.payment(st)),
            9 => {
                let job = self.job();
                hint = st.job(&job).and_then(|r| r.expires_at).map(|t| t.0);
                EventBody::QuoteExpired {
                    held: self.held_disposition(st, &job),
                    job,
                }
            }
            10 => {
                let job = self.job();
                EventBody::JobCancelled {
                    held: self.held_disposition(st, &job),
                    deletion_event: self.event_id(),
                    job,
                }
            }
            11 | 12 => {
                let job = self.job();
                let reason = match self.byte() % 6 {
                    0 => QueueReason::Free,
                    1 => QueueReason::Paid,
                    2 => QueueReason::Retry,
                    3 | 4 => {
                        let credit = st
                            .job(&job)
                            .map(|r| st.held(&Account::Credit(r.customer.clone())))
                            .unwrap_or(Msat::ZERO);
                        QueueReason::CreditDebit {
                            amount: self.amount(credit),
                        }
                    }
                    _ => {
                        let subscription = self.sub();
                        if let Some(s) = st.subscription(&subscription) {
                            hint = Some(s.period_start.0);
                        }
                        QueueReason::Entitlement { subscription }
                    }
                };
                EventBody::JobQueued { job, reason }
            }
            13 => {
                let job = self.job();
                let smart = st.job(&job).map_or(0, |r| r.attempts).saturating_add(1);
                EventBody::ProcessingStarted {
                    job,
                    attempt: self.attempt(smart),
                }
            }
            14 => {
                let job = self.job();
                let smart = st.job(&job).map_or(0, |r| r.attempts);
                EventBody::ProcessingFailed {
                    job,
                    attempt: self.attempt(smart),
                    retryable: self.coin(),
                    reason: self.text(),
                }
            }
            15 => EventBody::JobClosed {
                job: self.job(),
                reason: self.text(),
            },
            16 | 17 => EventBody::ResultPublished {
                job: self.job(),
                result_event: self.event_id(),
            },
            18 => EventBody::RefundDue {
                job: self.job(),
                refund: self.new_refund(),
                asset: self.named_asset(),
            },
            19 => EventBody::CreditGranted { job: self.job() },
            20 => {
                let refund = self.refund(st);
                let smart = st
                    .refund(&refund)
                    .map_or(0, |r| r.attempts)
                    .saturating_add(1);
                EventBody::RefundStarted {
                    attempt: self.attempt(smart),
                    route: RefundRoute {
                        asset: self.asset(),
                        destination: self.text(),
                        lookup: self.text(),
                        fee_reserve: self.amount(Msat::ZERO),
                        zap: None,
                    },
                    refund,
                }
            }
            21 => {
                let refund = self.refund(st);
                match self.byte() % 3 {
                    0 => EventBody::RefundSettled {
                        refund,
                        fee: self.amount(Msat::ZERO),
                        fee_paid_by: self.fee_payer(),
                        evidence: None,
                        cause: None,
                    },
                    1 => EventBody::RefundOutcomeUnknown {
                        refund,
                        reason: self.text(),
                    },
                    _ => EventBody::RefundFailed {
                        refund,
                        reason: self.text(),
                        cause: None,
                    },
                }
            }
            22 => {
                let subscription = self.sub();
                let existing = st.subscription(&subscription);
                let subscriber = match existing {
                    Some(s) if self.byte() >= 32 => s.subscriber.clone(),
                    _ => self.pubkey(),
                };
                let period_start = match existing {
                    Some(s) if self.coin() => s.period_end.0,
                    _ => self.at(None).0,
                };
                let len = self.pick(&[0, 1, 1_000, 100_000, u64::MAX]);
                let available = st.held(&Account::Subscription(subscription.clone()));
                EventBody::EntitlementGranted {
                    subscriber,
                    tier: self.pick(TIERS).to_string(),
                    period_start: UnixMs(period_start),
                    period_end: UnixMs(period_start.saturating_add(len)),
                    quota: self.pick(&[0, 1, 2, 3, u32::MAX]),
                    price: self.amount(available),
                    subscription,
                }
            }
            23 if self.coin() => self.subscription_quote(),
            23 => {
                let subscription = self.sub();
                hint = st.subscription(&subscription).map(|s| s.period_end.0);
                EventBody::EntitlementExpired { subscription }
            }
            24 => EventBody::EffectRequested {
                effect: self.effect(),
                job: if self.coin() { Some(self.job()) } else { None },
                subscription: if self.coin() { Some(self.sub()) } else { None },
                action: EffectAction::Publish,
                payload: if self.byte() == 255 {
                    "x".repeat(MAX_PAYLOAD_LEN + 1)
                } else {
                    "{}".to_string()
                },
            },
            _ => {
                let effect = {
                    let mut v: Vec<EffectId> = st.effects().map(|e| e.effect.clone()).collect();
                    v.sort();
                    if !v.is_empty() && self.byte() >= 32 {
                        v[self.below(v.len())].clone()
                    } else {
                        self.effect()
                    }
                };
                EventBody::EffectDone {
                    effect,
                    outcome: if self.coin() {
                        EffectOutcome::Delivered {
                            detail: self.text(),
                        }
                    } else {
                        EffectOutcome::Abandoned {
                            reason: self.text(),
                        }
                    },
                }
            }
        };
        let at = self.at(hint);
        LedgerEvent::new(key, at, body)
    }

    fn job_payment(&mut self, job: JobId, amount: Msat, remaining: Msat) -> EventBody {
        let booking = if self.byte() < 24 {
            JobPayment::Whole(self.disposition())
        } else {
            JobPayment::Apply {
                excess: if amount > remaining {
                    Some(self.disposition())
                } else {
                    None
                },
            }
        };
        EventBody::PaymentReceived(Payment {
            rail: self.pick(&[Rail::Invoice, Rail::Zap, Rail::NutZap]),
            asset: self.asset(),
            reference: self.pay_ref(),
            linked: vec![],
            amount,
            fee: Msat::ZERO,
            evidence: None,
            payer: None,
            target: PaymentTarget::Job { job, booking },
        })
    }

    /// The next step a real node would take for an existing job (or subscription), with the
    /// arguments its state calls for. Returns the body and a time hint.
    fn guided(&mut self, st: &LedgerState) -> Option<(EventBody, Option<u64>)> {
        let mut jobs: Vec<&JobRecord> = st.jobs().collect();
        jobs.sort_by(|a, b| a.job.cmp(&b.job));
        if jobs.is_empty() || self.byte() < 16 {
            return self.guided_subscription(st);
        }
        let rec = jobs[self.below(jobs.len())];
        let job = rec.job.clone();
        let held = st.held(&Account::Job(job.clone()));
        let remaining = rec
            .price
            .map_or(Msat::ZERO, |p| p.saturating_sub(rec.applied));
        let held_disp = |g: &mut Self| {
            if held.is_zero() {
                None
            } else {
                Some(g.disposition())
            }
        };
        let c = self.byte() % 4;
        let body = match rec.state {
            JobState::Received => match c {
                0 | 1 => EventBody::QuoteIssued {
                    job,
                    amount: self.amount(Msat::from_msat(10_000)),
                    expires_at: UnixMs(self.clock + self.pick(&[1, 100, 10_000])),
                    options: vec![],
                },
                2 => EventBody::JobQueued {
                    reason: match self.byte() % 3 {
                        0 => QueueReason::Free,
                        1 => QueueReason::CreditDebit {
                            amount: self.amount(st.held(&Account::Credit(rec.customer.clone()))),
                        },
                        _ => {
                            let mut subs: Vec<&SubscriptionRecord> = st
                                .subscriptions()
                                .filter(|s| s.subscriber == rec.customer)
                                .collect();
                            subs.sort_by(|a, b| a.subscription.cmp(&b.subscription));
                            match subs.first() {
                                Some(s) => {
                                    let at = s.period_start.0;
                                    return Some((
                                        EventBody::JobQueued {
                                            job,
                                            reason: QueueReason::Entitlement {
                                                subscription: s.subscription.clone(),
                                            },
                                        },
                                        Some(at),
                                    ));
                                }
                                None => QueueReason::Free,
                            }
                        }
                    },
                    job,
                },
                _ => {
                    if self.coin() {
                        EventBody::JobRejected {
                            job,
                            reason: self.text(),
                        }
                    } else {
                        EventBody::JobCancelled {
                            job,
                            deletion_event: self.event_id(),
                            held: None,
                        }
                    }
                }
            },
            JobState::Quoted | JobState::PartiallyPaid | JobState::Expired => match c {
                0 | 1 => {
                    let amount = self.amount(remaining);
                    self.job_payment(job, amount, remaining)
                }
                2 => {
                    let h = rec.expires_at.map(|t| t.0);
                    return Some((
                        EventBody::QuoteExpired {
                            held: held_disp(self),
                            job,
                        },
                        h,
                    ));
                }
                _ => EventBody::JobCancelled {
                    held: held_disp(self),
                    deletion_event: self.event_id(),
                    job,
                },
            },
            JobState::Paid | JobState::Queued => match c {
                0..=2 if rec.state == JobState::Paid => EventBody::JobQueued {
                    job,
                    reason: QueueReason::Paid,
                },
                0..=2 => EventBody::ProcessingStarted {
                    job,
                    attempt: self.attempt(rec.attempts.saturating_add(1)),
                },
                _ => EventBody::JobCancelled {
                    held: held_disp(self),
                    deletion_event: self.event_id(),
                    job,
                },
            },
            JobState::Processing => {
                if self.coin() {
                    EventBody::ResultPublished {
                        job,
                        result_event: self.event_id(),
                    }
                } else {
                    EventBody::ProcessingFailed {
                        job,
                        attempt: self.attempt(rec.attempts),
                        retryable: self.coin(),
                        reason: self.text(),
                    }
                }
            }
            JobState::Failed => match c {
                0 => EventBody::JobQueued {
                    job,
                    reason: QueueReason::Retry,
                },
                1 => EventBody::RefundDue {
                    asset: st.refund_asset_for(&job).ok(),
                    job,
                    refund: self.new_refund(),
                },
                2 => EventBody::CreditGranted { job },
                _ => EventBody::JobClosed {
                    job,
                    reason: self.text(),
                },
            },
            JobState::RefundDue
            | JobState::Refunding
            | JobState::RefundPending
            | JobState::RefundFailed => {
                let refund = rec.refund.clone()?;
                let r = st.refund(&refund)?;
                match r.state {
                    RefundState::Due | RefundState::Failed => EventBody::RefundStarted {
                        attempt: self.attempt(r.attempts.saturating_add(1)),
                        route: RefundRoute {
                            asset: self.asset(),
                            destination: self.text(),
                            lookup: self.pick(&["lookup", "p1", "j0"]).to_string(),
                            fee_reserve: Msat::ZERO,
                            zap: None,
                        },
                        refund,
                    },
                    _ => match c {
                        0 | 1 => EventBody::RefundSettled {
                            refund,
                            fee: self.amount(Msat::ZERO),
                            fee_paid_by: self.fee_payer(),
                            evidence: None,
                            cause: None,
                        },
                        2 => EventBody::RefundOutcomeUnknown {
                            refund,
                            reason: self.text(),
                        },
                        _ => EventBody::RefundFailed {
                            refund,
                            reason: self.text(),
                            cause: None,
                        },
                    },
                }
            }
            // Terminal: only late money or effects can still name the job.
            _ => match c {
                0 | 1 => {
                    let amount = self.amount(Msat::from_msat(10_000));
                    self.job_payment(job, amount, Msat::ZERO)
                }
                _ => EventBody::EffectRequested {
                    effect: self.effect(),
                    job: Some(job),
                    subscription: None,
                    action: EffectAction::Publish,
                    payload: "{}".to_string(),
                },
            },
        };
        Some((body, None))
    }

    /// A subscription quoted, with edge terms (zero period, quota or price are refused).
    fn subscription_quote(&mut self) -> EventBody {
        EventBody::SubscriptionQuoted {
            subscription: self.sub(),
            subscriber: self.pubkey(),
            tier: self.pick(TIERS).to_string(),
            price: self.amount(Msat::from_msat(10_000)),
            period_ms: self.pick(&[0, 1, 1_000, 100_000, u64::MAX]),
            quota: self.pick(&[0, 1, 2, u32::MAX]),
            options: vec![],
            expires_at: self.at(None),
        }
    }

    fn guided_subscription(&mut self, st: &LedgerState) -> Option<(EventBody, Option<u64>)> {
        let subscription = self.sub();
        let available = st.held(&Account::Subscription(subscription.clone()));
        let existing = st.subscription(&subscription);
        if available.is_zero() || self.byte() < 64 {
            let amount = self.amount(Msat::from_msat(10_000));
            return Some((
                EventBody::PaymentReceived(Payment {
                    rail: Rail::NutZap,
                    asset: self.asset(),
                    reference: self.pay_ref(),
                    linked: vec![],
                    amount,
                    fee: Msat::ZERO,
                    evidence: None,
                    payer: None,
                    target: PaymentTarget::Subscription { subscription },
                }),
                None,
            ));
        }
        if let Some(s) = existing {
            if s.state == EntitlementState::Active && self.coin() {
                let end = s.period_end.0;
                return Some((EventBody::EntitlementExpired { subscription }, Some(end)));
            }
        }
        let start = existing.map_or(self.clock, |s| s.period_end.0.max(self.clock));
        Some((
            EventBody::EntitlementGranted {
                subscriber: existing.map_or_else(|| self.pubkey(), |s| s.subscriber.clone()),
                tier: "basic".to_string(),
                period_start: UnixMs(start),
                period_end: UnixMs(start.saturating_add(self.pick(&[1_000, 100_000]))),
                quota: self.pick(&[1, 2, 3]),
                price: self.amount(available),
                subscription,
            },
            Some(start),
        ))
    }

    /// Decode a group of 1..=8 events (mostly 1..=3). Each event is decoded against the state
    /// the earlier events of the group leave; the ledger is returned unchanged.
    pub fn group(&mut self, ledger: &mut Ledger) -> Vec<LedgerEvent> {
        let n = match self.byte() % 8 {
            0..=3 => 1,
            4 | 5 => 2,
            6 => 3,
            _ => 4 + self.below(5),
        };
        let seq_before = ledger.next_seq();
        let mut scratch = Vec::new();
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let e = self.event(ledger.state());
            if let Ok(p) = ledger.prepare(std::slice::from_ref(&e)) {
                scratch.push(p);
            }
            events.push(e);
        }
        for p in scratch.into_iter().rev() {
            ledger.rollback(p);
        }
        assert_eq!(
            ledger.next_seq(),
            seq_before,
            "rollback left next_seq moved"
        );
        events
    }
}

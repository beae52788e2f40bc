//! Model-based property tests: random command sequences run against the real ledger and against
//! a small reference model written independently of the state machine's table. After every step
//! the two must agree on whether the event was accepted, on every job's state and money, and on
//! every refund; the invariants must hold; and replaying the accepted log must give the same state.

use std::collections::{HashMap, HashSet};

use paydvm_ledger::store::Store;
use paydvm_ledger::*;
use proptest::prelude::*;

const JOBS: usize = 3;
const REFUNDS: usize = 3;
const REFS: usize = 24;
const SUBS: usize = 2;
const CUSTOMERS: usize = 2;

/// How many random sequences each property runs; `PAYDVM_PROP_CASES` raises it for long runs.
fn cases() -> u32 {
    std::env::var("PAYDVM_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[derive(Debug, Clone, Copy)]
enum Disp {
    None,
    Refund(usize),
    Credit,
}

#[derive(Debug, Clone)]
enum Cmd {
    Receive(usize),
    Reject(usize),
    Quote(usize, u64),
    PayApply(usize, usize, u64, Disp),
    PayWhole(usize, usize, u64, Disp),
    TopUp(usize, usize, u64),
    Unmatched(usize, u64),
    SubPay(usize, usize, u64),
    Grant(usize, u64, u32),
    Expire(usize, bool, Disp),
    Cancel(usize, Disp),
    QueueFree(usize),
    QueuePaid(usize),
    QueueCredit(usize, u64),
    QueueEntitlement(usize, usize),
    Start(usize),
    Fail(usize),
    Retry(usize),
    Close(usize),
    Publish(usize),
    RefundDue(usize, usize),
    CreditJob(usize),
    RefundStart(usize),
    RefundUnknown(usize),
    RefundSettle(usize, u64),
    RefundFail(usize),
    Resend(usize),
}

fn disp() -> impl Strategy<Value = Disp> {
    prop_oneof![
        Just(Disp::None),
        (0..REFUNDS).prop_map(Disp::Refund),
        Just(Disp::Credit)
    ]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..=4, 5u64..=12, Just(10u64)]
}

fn cmd() -> impl Strategy<Value = Cmd> {
    let j = 0..JOBS;
    let r = 0..REFUNDS;
    prop_oneof![
        3 => j.clone().prop_map(Cmd::Receive),
        1 => j.clone().prop_map(Cmd::Reject),
        3 => (j.clone(), Just(10u64)).prop_map(|(j, p)| Cmd::Quote(j, p)),
        5 => (j.clone(), 0..REFS, amount(), disp()).prop_map(|(j, r, a, d)| Cmd::PayApply(j, r, a, d)),
        1 => (j.clone(), 0..REFS, amount(), disp()).prop_map(|(j, r, a, d)| Cmd::PayWhole(j, r, a, d)),
        1 => (0..CUSTOMERS, 0..REFS, amount()).prop_map(|(c, r, a)| Cmd::TopUp(c, r, a)),
        1 => (0..REFS, amount()).prop_map(|(r, a)| Cmd::Unmatched(r, a)),
        1 => (0..SUBS, 0..REFS, amount()).prop_map(|(s, r, a)| Cmd::SubPay(s, r, a)),
        1 => (0..SUBS, 0u64..6, 0u32..3).prop_map(|(s, p, q)| Cmd::Grant(s, p, q)),
        2 => (j.clone(), any::<bool>(), disp()).prop_map(|(j, e, d)| Cmd::Expire(j, e, d)),
        2 => (j.clone(), disp()).prop_map(|(j, d)| Cmd::Cancel(j, d)),
        2 => j.clone().prop_map(Cmd::QueueFree),
        3 => j.clone().prop_map(Cmd::QueuePaid),
        2 => (j.clone(), amount()).prop_map(|(j, a)| Cmd::QueueCredit(j, a)),
        1 => (j.clone(), 0..SUBS).prop_map(|(j, s)| Cmd::QueueEntitlement(j, s)),
        4 => j.clone().prop_map(Cmd::Start),
        3 => j.clone().prop_map(Cmd::Fail),
        2 => j.clone().prop_map(Cmd::Retry),
        1 => j.clone().prop_map(Cmd::Close),
        3 => j.clone().prop_map(Cmd::Publish),
        2 => (j.clone(), r.clone()).prop_map(|(j, r)| Cmd::RefundDue(j, r)),
        1 => j.clone().prop_map(Cmd::CreditJob),
        3 => r.clone().prop_map(Cmd::RefundStart),
        2 => r.clone().prop_map(Cmd::RefundUnknown),
        2 => (r.clone(), 0u64..3).prop_map(|(r, f)| Cmd::RefundSettle(r, f)),
        2 => r.clone().prop_map(Cmd::RefundFail),
        1 => (0usize..64).prop_map(Cmd::Resend),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model: plain structs and arithmetic, no shared code with the ledger's core.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Received,
    Rejected,
    Quoted,
    Partial,
    Paid,
    Expired,
    Cancelled,
    Queued,
    Processing,
    Failed,
    FailedFinal,
    Succeeded,
    RefundDue,
    Refunding,
    RefundPending,
    RefundFailed,
    Refunded,
    Credited,
}

impl St {
    fn matches(self, s: JobState) -> bool {
        let name = format!("{self:?}");
        let name = match name.as_str() {
            "Partial" => "PartiallyPaid".to_string(),
            _ => name,
        };
        format!("{s:?}") == name
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RSt {
    Due,
    InFlight,
    Unknown,
    Failed,
    Settled,
}

#[derive(Debug, Clone)]
struct MJob {
    st: St,
    cust: usize,
    price: u64,
    applied: u64,
    held: u64,
    funded: u64,
    refunded: u64,
    revenue: u64,
    attempts: u32,
    main_refund: Option<usize>,
}

#[derive(Debug, Clone)]
struct MRefund {
    job: usize,
    amount: u64,
    st: RSt,
    attempts: u32,
}

#[derive(Debug, Clone)]
struct MSub {
    quota: u32,
    used: u32,
}

#[derive(Debug, Clone, Default)]
struct Model {
    jobs: HashMap<usize, MJob>,
    refunds: HashMap<usize, MRefund>,
    credit: [u64; CUSTOMERS],
    sub_funds: [u64; SUBS],
    subs: HashMap<usize, MSub>,
    refs: HashSet<usize>,
    revenue: u64,
    fees: u64,
    unmatched: u64,
}

fn cust_of_job(j: usize) -> usize {
    j % CUSTOMERS
}

fn cust_of_sub(s: usize) -> usize {
    s % CUSTOMERS
}

impl Model {
    /// Apply `cmd` if the ledger's rules allow it; `false` (and no change) when they do not.
    fn step(&mut self, cmd: &Cmd) -> bool {
        let mut next = self.clone();
        let ok = next.apply(cmd).is_some();
        if ok {
            *self = next;
        }
        ok
    }

    fn new_refund(&mut self, r: usize, job: usize, amount: u64) -> Option<()> {
        if self.refunds.contains_key(&r) {
            return None;
        }
        self.refunds.insert(
            r,
            MRefund {
                job,
                amount,
                st: RSt::Due,
                attempts: 0,
            },
        );
        Some(())
    }

    fn take_ref(&mut self, r: usize) -> Option<()> {
        self.refs.insert(r).then_some(())
    }

    /// Move everything job `j` holds per `d`; returns the job's new state.
    fn release(&mut self, j: usize, d: Disp, none: St, refund: St, credit: St) -> Option<St> {
        let held = self.jobs[&j].held;
        let to = match (held, d) {
            (0, Disp::None) => return Some(none),
            (0, _) | (_, Disp::None) => return None,
            (_, Disp::Refund(r)) => {
                self.new_refund(r, j, held)?;
                let job = self.jobs.get_mut(&j)?;
                job.main_refund = Some(r);
                job.refunded += held;
                refund
            }
            (_, Disp::Credit) => {
                self.credit[self.jobs[&j].cust] += held;
                credit
            }
        };
        let job = self.jobs.get_mut(&j)?;
        job.held = 0;
        job.applied = 0;
        Some(to)
    }

    fn job_in(&mut self, j: usize, states: &[St]) -> Option<&mut MJob> {
        self.jobs.get_mut(&j).filter(|job| states.contains(&job.st))
    }

    fn mirror(&mut self, r: usize, from: &[St], to: St) {
        let job = self.refunds[&r].job;
        if let Some(jr) = self.jobs.get_mut(&job) {
            if jr.main_refund == Some(r) {
                assert!(from.contains(&jr.st), "model: job {job} in {:?}", jr.st);
                jr.st = to;
            }
        }
    }

    fn apply(&mut self, cmd: &Cmd) -> Option<()> {
        use St::*;
        match *cmd {
            Cmd::Receive(j) => {
                if self.jobs.contains_key(&j) {
                    return None;
                }
                self.jobs.insert(
                    j,
                    MJob {
                        st: Received,
                        cust: cust_of_job(j),
                        price: 0,
                        applied: 0,
                        held: 0,
                        funded: 0,
                        refunded: 0,
                        revenue: 0,
                        attempts: 0,
                        main_refund: None,
                    },
                );
            }
            Cmd::Reject(j) => self.job_in(j, &[Received])?.st = Rejected,
            Cmd::Quote(j, price) => {
                let job = self.job_in(j, &[Received])?;
                job.st = Quoted;
                job.price = price;
            }
            Cmd::PayApply(j, r, amount, d) => {
                self.take_ref(r)?;
                let job = self.job_in(j, &[Quoted, Partial, Expired])?;
                let now = amount.min(job.price - job.applied);
                let excess = amount - now;
                job.funded += amount;
                job.applied += now;
                job.held += now;
                job.st = if job.applied == job.price {
                    Paid
                } else {
                    Partial
                };
                let cust = job.cust;
                match (excess, d) {
                    (0, Disp::None) => {}
                    (0, _) | (_, Disp::None) => return None,
                    (_, Disp::Refund(rid)) => {
                        self.new_refund(rid, j, excess)?;
                        self.jobs.get_mut(&j)?.refunded += excess;
                    }
                    (_, Disp::Credit) => self.credit[cust] += excess,
                }
            }
            Cmd::PayWhole(j, r, amount, d) => {
                self.take_ref(r)?;
                let job = self.jobs.get_mut(&j)?;
                job.funded += amount;
                let cust = job.cust;
                match d {
                    Disp::None => return None,
                    Disp::Refund(rid) => {
                        self.new_refund(rid, j, amount)?;
                        self.jobs.get_mut(&j)?.refunded += amount;
                    }
                    Disp::Credit => self.credit[cust] += amount,
                }
            }
            Cmd::TopUp(c, r, amount) => {
                self.take_ref(r)?;
                self.credit[c] += amount;
            }
            Cmd::Unmatched(r, amount) => {
                self.take_ref(r)?;
                self.unmatched += amount;
            }
            Cmd::SubPay(s, r, amount) => {
                self.take_ref(r)?;
                self.sub_funds[s] += amount;
            }
            Cmd::Grant(s, price, quota) => {
                if quota == 0 || self.subs.contains_key(&s) || self.sub_funds[s] < price {
                    return None;
                }
                self.sub_funds[s] -= price;
                self.revenue += price;
                self.subs.insert(s, MSub { quota, used: 0 });
            }
            Cmd::Expire(j, early, d) => {
                self.job_in(j, &[Quoted, Partial])?;
                if early {
                    return None;
                }
                let to = self.release(j, d, Expired, RefundDue, Credited)?;
                if self.jobs[&j].st == Partial && to == Expired {
                    return None;
                }
                self.jobs.get_mut(&j)?.st = to;
            }
            Cmd::Cancel(j, d) => {
                let st = self
                    .job_in(j, &[Received, Quoted, Partial, Paid, Queued])?
                    .st;
                let to = self.release(j, d, Cancelled, RefundDue, Credited)?;
                if matches!(st, Partial | Paid) && to == Cancelled {
                    return None;
                }
                self.jobs.get_mut(&j)?.st = to;
            }
            Cmd::QueueFree(j) => self.job_in(j, &[Received])?.st = Queued,
            Cmd::QueuePaid(j) => self.job_in(j, &[Paid])?.st = Queued,
            Cmd::QueueCredit(j, amount) => {
                let cust = self.job_in(j, &[Received])?.cust;
                if self.credit[cust] < amount {
                    return None;
                }
                self.credit[cust] -= amount;
                let job = self.jobs.get_mut(&j)?;
                job.held += amount;
                job.funded += amount;
                job.st = Queued;
            }
            Cmd::QueueEntitlement(j, s) => {
                let cust = self.job_in(j, &[Received])?.cust;
                let sub = self.subs.get_mut(&s)?;
                if cust_of_sub(s) != cust || sub.used >= sub.quota {
                    return None;
                }
                sub.used += 1;
                self.jobs.get_mut(&j)?.st = Queued;
            }
            Cmd::Start(j) => {
                let job = self.job_in(j, &[Queued])?;
                job.st = Processing;
                job.attempts += 1;
            }
            Cmd::Fail(j) => self.job_in(j, &[Processing])?.st = Failed,
            Cmd::Retry(j) => self.job_in(j, &[Failed])?.st = Queued,
            Cmd::Close(j) => {
                let job = self.job_in(j, &[Failed])?;
                if job.held != 0 {
                    return None;
                }
                job.st = FailedFinal;
            }
            Cmd::Publish(j) => {
                let job = self.job_in(j, &[Processing])?;
                let held = job.held;
                job.revenue += held;
                job.held = 0;
                job.st = Succeeded;
                self.revenue += held;
            }
            Cmd::RefundDue(j, r) => {
                self.job_in(j, &[Failed])?;
                let to = self.release(j, Disp::Refund(r), Failed, RefundDue, Credited)?;
                self.jobs.get_mut(&j)?.st = to;
            }
            Cmd::CreditJob(j) => {
                self.job_in(j, &[Failed])?;
                let to = self.release(j, Disp::Credit, Failed, RefundDue, Credited)?;
                self.jobs.get_mut(&j)?.st = to;
            }
            Cmd::RefundStart(r) => {
                let rf = self.refunds.get_mut(&r)?;
                if !matches!(rf.st, RSt::Due | RSt::Failed) {
                    return None;
                }
                rf.st = RSt::InFlight;
                rf.attempts += 1;
                self.mirror(r, &[RefundDue, RefundFailed], Refunding);
            }
            Cmd::RefundUnknown(r) => {
                let rf = self.refunds.get_mut(&r)?;
                if rf.st != RSt::InFlight {
                    return None;
                }
                rf.st = RSt::Unknown;
                self.mirror(r, &[Refunding], RefundPending);
            }
            Cmd::RefundSettle(r, fee) => {
                let rf = self.refunds.get_mut(&r)?;
                if !matches!(rf.st, RSt::InFlight | RSt::Unknown) {
                    return None;
                }
                rf.st = RSt::Settled;
                self.fees += fee;
                self.mirror(r, &[Refunding, RefundPending], Refunded);
            }
            Cmd::RefundFail(r) => {
                let rf = self.refunds.get_mut(&r)?;
                if !matches!(rf.st, RSt::InFlight | RSt::Unknown) {
                    return None;
                }
                rf.st = RSt::Failed;
                self.mirror(r, &[Refunding, RefundPending], RefundFailed);
            }
            Cmd::Resend(_) => unreachable!("resends are handled by the driver"),
        }
        Some(())
    }
}

// ---------------------------------------------------------------------------------------------
// The driver: turns a command into a ledger event.

fn jid(j: usize) -> JobId {
    JobId::new(format!("job{j}")).unwrap()
}
fn rid(r: usize) -> RefundId {
    RefundId::new(format!("refund{r}")).unwrap()
}
fn pref(r: usize) -> PaymentRef {
    PaymentRef::new(format!("pay{r}")).unwrap()
}
fn cust(c: usize) -> Pubkey {
    Pubkey::new(format!("cust{c}")).unwrap()
}
fn sid(s: usize) -> SubscriptionId {
    SubscriptionId::new(format!("sub{s}")).unwrap()
}
fn msat(a: u64) -> Msat {
    Msat::from_msat(a)
}

const QUOTE_EXPIRY: u64 = 1_000_000;

fn disposition(d: Disp) -> Option<Disposition> {
    match d {
        Disp::None => None,
        Disp::Refund(r) => Some(Disposition::Refund { refund: rid(r) }),
        Disp::Credit => Some(Disposition::Credit),
    }
}

fn payment(r: usize, amount: u64, target: PaymentTarget) -> EventBody {
    EventBody::PaymentReceived(Payment {
        rail: Rail::Invoice,
        asset: Asset::Lightning,
        reference: pref(r),
        linked: vec![],
        amount: msat(amount),
        fee: Msat::ZERO,
        evidence: None,
        payer: None,
        target,
    })
}

fn body(cmd: &Cmd, model: &Model) -> EventBody {
    let attempts = |j: usize| model.jobs.get(&j).map_or(0, |m| m.attempts);
    let refund_attempts = |r: usize| model.refunds.get(&r).map_or(0, |m| m.attempts);
    match *cmd {
        Cmd::Receive(j) => EventBody::JobReceived {
            job: jid(j),
            request_event: EventId::new(format!("req{j}")).unwrap(),
            customer: cust(cust_of_job(j)),
            kind: 5050,
            request: None,
        },
        Cmd::Reject(j) => EventBody::JobRejected {
            job: jid(j),
            reason: "no".into(),
        },
        Cmd::Quote(j, price) => EventBody::QuoteIssued {
            job: jid(j),
            amount: msat(price),
            expires_at: UnixMs(QUOTE_EXPIRY),
            options: vec![],
        },
        Cmd::PayApply(j, r, a, d) => payment(
            r,
            a,
            PaymentTarget::Job {
                job: jid(j),
                booking: JobPayment::Apply {
                    excess: disposition(d),
                },
            },
        ),
        Cmd::PayWhole(j, r, a, d) => payment(
            r,
            a,
            PaymentTarget::Job {
                job: jid(j),
                booking: JobPayment::Whole(
                    disposition(d).unwrap_or(Disposition::Refund { refund: rid(0) }),
                ),
            },
        ),
        Cmd::TopUp(c, r, a) => payment(r, a, PaymentTarget::Credit { pubkey: cust(c) }),
        Cmd::Unmatched(r, a) => payment(
            r,
            a,
            PaymentTarget::Unmatched {
                reason: "unknown job".into(),
            },
        ),
        Cmd::SubPay(s, r, a) => payment(
            r,
            a,
            PaymentTarget::Subscription {
                subscription: sid(s),
            },
        ),
        Cmd::Grant(s, price, quota) => EventBody::EntitlementGranted {
            subscription: sid(s),
            subscriber: cust(cust_of_sub(s)),
            tier: "basic".into(),
            period_start: UnixMs(0),
            period_end: UnixMs(u64::MAX / 2),
            quota,
            price: msat(price),
        },
        Cmd::Expire(j, _, d) => EventBody::QuoteExpired {
            job: jid(j),
            held: disposition(d),
        },
        Cmd::Cancel(j, d) => EventBody::JobCancelled {
            job: jid(j),
            deletion_event: EventId::new(format!("del{j}")).unwrap(),
            held: disposition(d),
        },
        Cmd::QueueFree(j) => queued(j, QueueReason::Free),
        Cmd::QueuePaid(j) => queued(j, QueueReason::Paid),
        Cmd::QueueCredit(j, a) => queued(j, QueueReason::CreditDebit { amount: msat(a) }),
        Cmd::QueueEntitlement(j, s) => queued(
            j,
            QueueReason::Entitlement {
                subscription: sid(s),
            },
        ),
        Cmd::Retry(j) => queued(j, QueueReason::Retry),
        Cmd::Start(j) => EventBody::ProcessingStarted {
            job: jid(j),
            attempt: attempts(j) + 1,
        },
        Cmd::Fail(j) => EventBody::ProcessingFailed {
            job: jid(j),
            attempt: attempts(j),
            retryable: true,
            reason: "executor failed".into(),
        },
        Cmd::Close(j) => EventBody::JobClosed {
            job: jid(j),
            reason: "gave up".into(),
        },
        Cmd::Publish(j) => EventBody::ResultPublished {
            job: jid(j),
            result_event: EventId::new(format!("result{j}")).unwrap(),
        },
        Cmd::RefundDue(j, r) => EventBody::RefundDue {
            job: jid(j),
            refund: rid(r),
        },
        Cmd::CreditJob(j) => EventBody::CreditGranted { job: jid(j) },
        Cmd::RefundStart(r) => EventBody::RefundStarted {
            refund: rid(r),
            attempt: refund_attempts(r) + 1,
            route: RefundRoute {
                asset: Asset::Lightning,
                destination: format!("lnbcrt-refund{r}"),
                lookup: format!("refund-hash{r}"),
            },
        },
        Cmd::RefundUnknown(r) => EventBody::RefundOutcomeUnknown {
            refund: rid(r),
            reason: "timeout".into(),
        },
        Cmd::RefundSettle(r, fee) => EventBody::RefundSettled {
            refund: rid(r),
            fee: msat(fee),
        },
        Cmd::RefundFail(r) => EventBody::RefundFailed {
            refund: rid(r),
            reason: "no route".into(),
        },
        Cmd::Resend(_) => unreachable!(),
    }
}

fn queued(j: usize, reason: QueueReason) -> EventBody {
    EventBody::JobQueued {
        job: jid(j),
        reason,
    }
}

/// The model treats a whole-payment with no disposition as refused; the driver cannot express
/// that as an event, so such commands are skipped.
fn expressible(cmd: &Cmd) -> bool {
    !matches!(cmd, Cmd::PayWhole(_, _, _, Disp::None))
}

fn event_time(cmd: &Cmd, step: usize) -> UnixMs {
    match cmd {
        Cmd::Expire(_, true, _) => UnixMs(QUOTE_EXPIRY - 1),
        Cmd::Expire(_, false, _) => UnixMs(QUOTE_EXPIRY + step as u64),
        _ => UnixMs(1_000 + step as u64),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison of the model with the ledger.

fn assert_agrees(model: &Model, state: &LedgerState) -> Result<(), TestCaseError> {
    for (j, m) in &model.jobs {
        let job = state.job(&jid(*j)).expect("model job exists in ledger");
        prop_assert!(
            m.st.matches(job.state),
            "job{j}: model {:?} ledger {:?}",
            m.st,
            job.state
        );
        prop_assert_eq!(
            state.held(&Account::Job(jid(*j))),
            msat(m.held),
            "held job{}",
            j
        );
        prop_assert_eq!(job.funded_total, msat(m.funded), "funded job{}", j);
        prop_assert_eq!(job.refunded_total, msat(m.refunded), "refunded job{}", j);
        prop_assert_eq!(job.revenue, msat(m.revenue), "revenue job{}", j);
        prop_assert_eq!(job.attempts, m.attempts);
    }
    prop_assert_eq!(state.jobs().count(), model.jobs.len());
    for (r, m) in &model.refunds {
        let refund = state
            .refund(&rid(*r))
            .expect("model refund exists in ledger");
        prop_assert_eq!(refund.amount, msat(m.amount));
        let st = match refund.state {
            RefundState::Due => RSt::Due,
            RefundState::InFlight => RSt::InFlight,
            RefundState::Unknown => RSt::Unknown,
            RefundState::Failed => RSt::Failed,
            RefundState::Settled => RSt::Settled,
        };
        prop_assert_eq!(st, m.st, "refund{}", r);
    }
    prop_assert_eq!(state.refunds().count(), model.refunds.len());
    for c in 0..CUSTOMERS {
        prop_assert_eq!(state.held(&Account::Credit(cust(c))), msat(model.credit[c]));
    }
    for s in 0..SUBS {
        prop_assert_eq!(
            state.held(&Account::Subscription(sid(s))),
            msat(model.sub_funds[s])
        );
        if let Some(m) = model.subs.get(&s) {
            let rec = state.subscription(&sid(s)).expect("subscription");
            prop_assert_eq!((rec.quota, rec.used), (m.quota, m.used));
        }
    }
    prop_assert_eq!(
        state.balance(&Account::Revenue).credits,
        msat(model.revenue)
    );
    prop_assert_eq!(state.balance(&Account::Fees).debits, msat(model.fees));
    prop_assert_eq!(state.held(&Account::Unmatched), msat(model.unmatched));
    prop_assert_eq!(state.payment_ref_count(), model.refs.len());
    if let Err(why) = invariants::check_all(state) {
        return Err(TestCaseError::fail(why));
    }
    Ok(())
}

/// Run a command sequence against `append` (the ledger under test) and the model.
fn run(
    cmds: &[Cmd],
    mut append: impl FnMut(&LedgerEvent) -> Result<AppendOutcome, LedgerError>,
    state: impl Fn() -> LedgerState,
) -> Result<Vec<LedgerEvent>, TestCaseError> {
    let mut model = Model::default();
    let mut accepted: Vec<LedgerEvent> = Vec::new();
    for (step, cmd) in cmds.iter().enumerate() {
        if let Cmd::Resend(i) = cmd {
            if accepted.is_empty() {
                continue;
            }
            let original = accepted[i % accepted.len()].clone();
            let before = state();
            let outcome = append(&original).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let is_duplicate = matches!(outcome, AppendOutcome::Duplicate { .. });
            prop_assert!(is_duplicate, "a resend was not a duplicate");
            prop_assert_eq!(&state(), &before, "a resend changed the state");
            continue;
        }
        if !expressible(cmd) {
            continue;
        }
        let event = LedgerEvent::new(
            IdemKey::new(format!("step{step}")).unwrap(),
            event_time(cmd, step),
            body(cmd, &model),
        );
        let before = state();
        let expected = model.step(cmd);
        match append(&event) {
            Ok(AppendOutcome::Appended { .. }) => {
                prop_assert!(
                    expected,
                    "ledger accepted what the model refuses: {:?}",
                    cmd
                );
                accepted.push(event);
            }
            Ok(AppendOutcome::Duplicate { .. }) => {
                return Err(TestCaseError::fail("fresh key reported as duplicate"))
            }
            Err(LedgerError::Refused { source, .. }) => {
                prop_assert!(
                    !expected,
                    "ledger refused what the model accepts: {:?}: {}",
                    cmd,
                    source
                );
                prop_assert_eq!(&state(), &before, "a refused event changed the state");
            }
            Err(e) => return Err(TestCaseError::fail(format!("storage error: {e}"))),
        }
        assert_agrees(&model, &state())?;
    }
    Ok(accepted)
}

fn replay(events: &[LedgerEvent]) -> LedgerState {
    let mut ledger = Ledger::new();
    for e in events {
        ledger.append(e).expect("accepted events replay");
    }
    ledger.state().clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The in-memory core agrees with the model step by step; replay equals live state.
    #[test]
    fn core_agrees_with_model(cmds in prop::collection::vec(cmd(), 1..160)) {
        let ledger = std::cell::RefCell::new(Ledger::new());
        let accepted = run(
            &cmds,
            |e| ledger.borrow_mut().append(e),
            || ledger.borrow().state().clone(),
        )?;
        let live = ledger.borrow().state().clone();
        prop_assert_eq!(replay(&accepted), live);
    }

    /// The same through the SQLite store, with groups: the store agrees with the model, the
    /// file verifies, and reopening (replay from disk) gives the live state.
    #[test]
    fn store_agrees_with_model_and_verifies(cmds in prop::collection::vec(cmd(), 1..100)) {
        let store = std::cell::RefCell::new(Store::open_in_memory().unwrap());
        let accepted = run(
            &cmds,
            |e| store.borrow_mut().append(e),
            || store.borrow().state().clone(),
        )?;
        let store = store.into_inner();
        if let Err(e) = store.verify() {
            return Err(TestCaseError::fail(format!("verify failed: {e}")));
        }
        prop_assert_eq!(&replay(&accepted), store.state());
    }
}

/// The generator must reach every job state and refund state, or the properties above prove less
/// than they claim.
#[test]
fn generator_reaches_every_state() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(cmd(), 1..160);
    let mut job_states = HashSet::new();
    let mut refund_states = HashSet::new();
    for _ in 0..2_000 {
        let cmds = strategy.new_tree(&mut runner).unwrap().current();
        let mut model = Model::default();
        for c in cmds
            .iter()
            .filter(|c| !matches!(c, Cmd::Resend(_)) && expressible(c))
        {
            model.step(c);
            job_states.extend(model.jobs.values().map(|j| format!("{:?}", j.st)));
            refund_states.extend(model.refunds.values().map(|r| format!("{:?}", r.st)));
        }
    }
    assert_eq!(
        job_states.len(),
        JobState::ALL.len(),
        "reached {job_states:?}"
    );
    assert_eq!(refund_states.len(), 5, "reached {refund_states:?}");
}

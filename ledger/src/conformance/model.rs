//! The model of the model-based property tests (used by every store's tests): random command
//! sequences run against the real ledger (any store, through `run`) and against
//! a small reference model written independently of the state machine's table. After every step
//! the two must agree on whether the event was accepted, on every job's state and money (by
//! source), on every refund (state, asset, fee, who paid it), on every account including the two
//! asset accounts (Lightning and one mint) and on what each asset has available for new refund
//! payouts; the invariants must hold; no asset account may be negative; and replaying the
//! accepted log must give the same state.

use std::collections::{HashMap, HashSet};

use crate::*;
use proptest::prelude::*;

const JOBS: usize = 5;
const REFUNDS: usize = 6;
/// Commands on jobs and refunds carry a pick in `0..PICKS`, resolved to one that exists when the
/// command runs (see `resolve`), so sequences spend their steps on live jobs and refunds.
const PICKS: usize = 64;
const REFS: usize = 24;
const SUBS: usize = 2;
const CUSTOMERS: usize = 2;
/// Asset 0 is Lightning, asset 1 is one mint.
const ASSETS: usize = 2;
const MINT_URL: &str = "https://mint.example";

/// How many random sequences each property runs; `PAYDVM_PROP_CASES` raises it for long runs.
pub fn cases() -> u32 {
    std::env::var("PAYDVM_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Which asset a refund disposition (or `refund_due`) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sel {
    /// None: an event written by an older node.
    Legacy,
    /// The asset the rules call for.
    Rule,
    /// The other asset.
    Other,
}

#[derive(Debug, Clone, Copy)]
pub enum Disp {
    None,
    Refund(usize, Sel),
    Credit,
}

/// One incoming payment for a job.
#[derive(Debug, Clone, Copy)]
pub struct Pay {
    job: usize,
    reference: usize,
    amount: u64,
    /// What taking it cost us (a mint's input fee).
    fee: u64,
    asset: usize,
    disp: Disp,
}

#[derive(Debug, Clone)]
pub enum Cmd {
    Receive(usize),
    Reject(usize),
    Quote(usize, u64),
    PayApply(Pay),
    PayWhole(Pay),
    TopUp {
        cust: usize,
        reference: usize,
        amount: u64,
        fee: u64,
        asset: usize,
    },
    Unmatched(usize, u64, usize),
    SubPay(usize, usize, u64, usize),
    Grant(usize, u64, u32),
    /// A subscription quoted: price, quota.
    SubQuote(usize, u64, u32),
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
    RefundDue(usize, usize, Sel),
    CreditJob(usize),
    RefundDefer(usize),
    /// Start a payout over the refund's recorded asset (Lightning when none is recorded), or the
    /// other asset when `flip`, holding back `reserve` for fees.
    RefundStart {
        refund: usize,
        flip: bool,
        reserve: u64,
        /// Sent as a zap (zapback): the route records a zap request.
        zap: bool,
    },
    RefundUnknown(usize),
    RefundSettle {
        refund: usize,
        fee: u64,
        by_customer: bool,
        by_operator: bool,
    },
    RefundFail {
        refund: usize,
        by_operator: bool,
    },
    Reroute(usize, usize),
    RetryRefund(usize),
    /// Write a refund off to the customer's credit (`true`) or to income.
    WriteOff(usize, bool),
    Float(usize, u64),
    Resend(usize),
    /// Link a zap receipt to the refund (zapback).
    ZapReceipt(usize),
    /// The subscriber cancels a subscription.
    SubCancel(usize),
    /// A subscription's money owed back under a new refund id: what it holds, or (`unused`)
    /// the rest of its running period.
    SubRefund {
        sub: usize,
        refund: usize,
        amount: u64,
        asset: usize,
        unused: bool,
    },
    /// The next period of a subscription quoted.
    SubRenew(usize),
    /// A failed job gives its quota unit back to a subscription.
    UnitBack(usize, usize),
}

fn sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        3 => Just(Sel::Rule),
        1 => Just(Sel::Legacy),
        1 => Just(Sel::Other)
    ]
}

fn disp() -> impl Strategy<Value = Disp> {
    prop_oneof![
        Just(Disp::None),
        (0..REFUNDS, sel()).prop_map(|(r, s)| Disp::Refund(r, s)),
        Just(Disp::Credit)
    ]
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..=4, 5u64..=12, Just(10u64)]
}

fn in_fee() -> impl Strategy<Value = u64> {
    prop_oneof![4 => Just(0u64), 1 => 1u64..=2]
}

/// A payout fee: usually within a fee reserve (0..=3), sometimes far beyond what the asset holds.
fn out_fee() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..=3, 1 => 10u64..=40]
}

fn pay() -> impl Strategy<Value = Pay> {
    // Most payments leave no excess, and those must carry no disposition.
    let disp = prop_oneof![2 => Just(Disp::None), 1 => disp()];
    (0..PICKS, 0..REFS, amount(), in_fee(), 0..ASSETS, disp).prop_map(
        |(job, reference, amount, fee, asset, disp)| Pay {
            job,
            reference,
            amount,
            fee,
            asset,
            disp,
        },
    )
}

pub fn cmd() -> impl Strategy<Value = Cmd> {
    let j = 0..PICKS;
    let r = 0..PICKS;
    prop_oneof![
        3 => (0..JOBS).prop_map(Cmd::Receive),
        1 => j.clone().prop_map(Cmd::Reject),
        5 => (j.clone(), Just(10u64)).prop_map(|(j, p)| Cmd::Quote(j, p)),
        8 => pay().prop_map(Cmd::PayApply),
        2 => pay().prop_map(Cmd::PayWhole),
        1 => (0..CUSTOMERS, 0..REFS, amount(), in_fee(), 0..ASSETS).prop_map(
            |(cust, reference, amount, fee, asset)| Cmd::TopUp { cust, reference, amount, fee, asset }
        ),
        1 => (0..REFS, amount(), 0..ASSETS).prop_map(|(r, a, s)| Cmd::Unmatched(r, a, s)),
        3 => (0..SUBS, 0..REFS, amount(), 0..ASSETS).prop_map(|(s, r, a, x)| Cmd::SubPay(s, r, a, x)),
        3 => (0..SUBS, 0u64..6, 0u32..3).prop_map(|(s, p, q)| Cmd::Grant(s, p, q)),
        2 => (0..SUBS, 0u64..3, 0u32..3).prop_map(|(s, p, q)| Cmd::SubQuote(s, p, q)),
        2 => (0..SUBS).prop_map(Cmd::SubCancel),
        3 => (0..SUBS, 0..REFUNDS, 0u64..7, 0..ASSETS, any::<bool>()).prop_map(
            |(sub, refund, amount, asset, unused)| Cmd::SubRefund { sub, refund, amount, asset, unused }
        ),
        1 => (0..SUBS).prop_map(Cmd::SubRenew),
        3 => (j.clone(), 0..SUBS).prop_map(|(j, s)| Cmd::UnitBack(j, s)),
        2 => (j.clone(), any::<bool>(), disp()).prop_map(|(j, e, d)| Cmd::Expire(j, e, d)),
        2 => (j.clone(), disp()).prop_map(|(j, d)| Cmd::Cancel(j, d)),
        1 => j.clone().prop_map(Cmd::QueueFree),
        5 => j.clone().prop_map(Cmd::QueuePaid),
        2 => (j.clone(), amount()).prop_map(|(j, a)| Cmd::QueueCredit(j, a)),
        3 => (j.clone(), 0..SUBS).prop_map(|(j, s)| Cmd::QueueEntitlement(j, s)),
        6 => j.clone().prop_map(Cmd::Start),
        5 => j.clone().prop_map(Cmd::Fail),
        1 => j.clone().prop_map(Cmd::Retry),
        1 => j.clone().prop_map(Cmd::Close),
        2 => j.clone().prop_map(Cmd::Publish),
        5 => (j.clone(), 0..REFUNDS, sel()).prop_map(|(j, r, s)| Cmd::RefundDue(j, r, s)),
        1 => j.clone().prop_map(Cmd::CreditJob),
        1 => r.clone().prop_map(Cmd::RefundDefer),
        5 => (r.clone(), prop::bool::weighted(0.2), 0u64..=3, any::<bool>())
            .prop_map(|(refund, flip, reserve, zap)| Cmd::RefundStart { refund, flip, reserve, zap }),
        3 => r.clone().prop_map(Cmd::RefundUnknown),
        3 => (r.clone(), out_fee(), prop::bool::weighted(0.3), any::<bool>()).prop_map(
            |(refund, fee, by_customer, by_operator)| Cmd::RefundSettle { refund, fee, by_customer, by_operator }
        ),
        3 => (r.clone(), any::<bool>())
            .prop_map(|(refund, by_operator)| Cmd::RefundFail { refund, by_operator }),
        1 => (r.clone(), 0..ASSETS).prop_map(|(r, a)| Cmd::Reroute(r, a)),
        1 => r.clone().prop_map(Cmd::RetryRefund),
        2 => (r.clone(), any::<bool>()).prop_map(|(r, c)| Cmd::WriteOff(r, c)),
        2 => (0..ASSETS, 0u64..=20).prop_map(|(a, m)| Cmd::Float(a, m)),
        1 => (0usize..64).prop_map(Cmd::Resend),
        2 => r.clone().prop_map(Cmd::ZapReceipt),
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
    WrittenOff,
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
    WrittenOff,
}

#[derive(Debug, Clone)]
struct MJob {
    st: St,
    cust: usize,
    price: u64,
    applied: u64,
    held: u64,
    /// What is held, by the asset it was paid in.
    src: [u64; ASSETS],
    /// What is held that came from prepaid credit.
    credit_src: u64,
    funded: u64,
    refunded: u64,
    revenue: u64,
    attempts: u32,
    main_refund: Option<usize>,
    /// The subscription whose quota unit the job holds.
    ent: Option<usize>,
}

#[derive(Debug, Clone)]
struct MRefund {
    /// The job whose money it is (`NO_JOB` for a subscription's).
    job: usize,
    cust: usize,
    amount: u64,
    st: RSt,
    attempts: u32,
    asset: Option<usize>,
    /// The asset the current payout goes over, and its fee reserve.
    route: Option<(usize, u64)>,
    fee: u64,
    by_customer: bool,
    deferred: bool,
    retry_base: u32,
    /// The current route was sent as a zap.
    zap: bool,
    /// A zap receipt is linked.
    receipt: bool,
}

impl MRefund {
    fn waiting(&self) -> bool {
        matches!(self.st, RSt::Due | RSt::Failed)
    }

    fn paying(&self) -> bool {
        matches!(self.st, RSt::InFlight | RSt::Unknown)
    }
}

#[derive(Debug, Clone)]
struct MSub {
    quota: u32,
    used: u32,
    price: u64,
    cancelled: bool,
    unused_refunded: bool,
    renewed: bool,
    /// The asset of the latest payment booked while the subscription existed.
    paid_in: Option<usize>,
    /// Granted a period (not only quoted).
    active: bool,
}

impl MSub {
    /// A subscription just quoted: nothing used, paid or granted yet.
    fn quoted(quota: u32, price: u64) -> MSub {
        MSub {
            quota,
            used: 0,
            price,
            cancelled: false,
            unused_refunded: false,
            renewed: false,
            paid_in: None,
            active: false,
        }
    }
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
    /// What each asset account holds.
    bal: [u64; ASSETS],
    /// Amount + fee reserve of the payouts in flight or unknown, per asset.
    reserved: [u64; ASSETS],
    float: u64,
    written_off: u64,
    /// Situations the model went through (accepted or refused), for the coverage test.
    seen: HashSet<&'static str>,
}

fn cust_of_job(j: usize) -> usize {
    j % CUSTOMERS
}

fn cust_of_sub(s: usize) -> usize {
    s % CUSTOMERS
}

/// The job of a refund that belongs to no job (a subscription's).
const NO_JOB: usize = usize::MAX;

/// Where the money of a new refund came from.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// A payment in this asset (its excess, or all of it).
    Payment(usize),
    /// What job `j` holds.
    Held(usize),
}

impl Model {
    /// Apply `cmd` if the ledger's rules allow it; `false` (and no change) when they do not.
    fn step(&mut self, cmd: &Cmd) -> bool {
        let mut next = self.clone();
        let ok = next.apply(cmd).is_some();
        if ok {
            *self = next;
        } else {
            self.seen = next.seen;
        }
        ok
    }

    fn note(&mut self, what: &'static str) {
        self.seen.insert(what);
    }

    /// The asset a refund of everything job `j` holds is paid from: the asset holding the most,
    /// Lightning on a tie. `None` when the job holds nothing or holds prepaid credit.
    fn rule_asset(&self, j: usize) -> Option<usize> {
        let job = self.jobs.get(&j)?;
        if job.credit_src > 0 || job.held == 0 {
            return None;
        }
        Some(if job.src[1] > job.src[0] { 1 } else { 0 })
    }

    /// The asset an event names for a new refund, per `sel` (`None`: names none).
    fn named_asset(&self, sel: Sel, src: Src) -> Option<usize> {
        let right = match src {
            Src::Payment(a) => a,
            Src::Held(j) => self.rule_asset(j).unwrap_or(0),
        };
        match sel {
            Sel::Legacy => None,
            Sel::Rule => Some(right),
            Sel::Other => Some(1 - right),
        }
    }

    /// The refund's asset, or `None` (refused) when the event names the wrong one or names one
    /// for money that came from prepaid credit.
    fn refund_asset(&mut self, sel: Sel, src: Src) -> Option<Option<usize>> {
        match (src, sel) {
            (Src::Payment(a), Sel::Legacy | Sel::Rule) => Some(Some(a)),
            (Src::Held(_), Sel::Legacy) => Some(None),
            (Src::Held(j), Sel::Rule) => {
                if self.jobs[&j].credit_src > 0 {
                    self.note("refund of credit-funded money refused");
                }
                if self.jobs[&j].src.iter().all(|&x| x > 0) {
                    self.note("refund of a job paid in two assets");
                }
                self.rule_asset(j).map(Some)
            }
            (_, Sel::Other) => None,
        }
    }

    fn new_refund(
        &mut self,
        r: usize,
        job: usize,
        amount: u64,
        asset: Option<usize>,
    ) -> Option<()> {
        if self.refunds.contains_key(&r) {
            return None;
        }
        self.refunds.insert(
            r,
            MRefund {
                job,
                cust: cust_of_job(job),
                amount,
                st: RSt::Due,
                attempts: 0,
                asset,
                route: None,
                fee: 0,
                by_customer: false,
                deferred: false,
                retry_base: 0,
                zap: false,
                receipt: false,
            },
        );
        Some(())
    }

    fn take_ref(&mut self, r: usize) -> Option<()> {
        self.refs.insert(r).then_some(())
    }

    /// Money arrived in `asset`; taking it cost `fee`, which may not exceed it.
    fn receive(&mut self, asset: usize, amount: u64, fee: u64) -> Option<()> {
        if fee > amount {
            return None;
        }
        self.bal[asset] += amount - fee;
        self.fees += fee;
        Some(())
    }

    /// Book money that the job will not keep (an excess or a whole payment) per `d`.
    fn return_payment(&mut self, j: usize, asset: usize, amount: u64, d: Disp) -> Option<()> {
        match d {
            Disp::None => None,
            Disp::Refund(rid, sel) => {
                let asset = self.refund_asset(sel, Src::Payment(asset))?;
                self.new_refund(rid, j, amount, asset)?;
                self.jobs.get_mut(&j)?.refunded += amount;
                if self.jobs[&j].held > 0 {
                    self.note("partial return while the job holds money");
                }
                Some(())
            }
            Disp::Credit => {
                self.credit[self.jobs[&j].cust] += amount;
                Some(())
            }
        }
    }

    /// Move everything job `j` holds per `d`; returns the job's new state.
    fn release(&mut self, j: usize, d: Disp, none: St, refund: St, credit: St) -> Option<St> {
        let held = self.jobs[&j].held;
        let to = match (held, d) {
            (0, Disp::None) => return Some(none),
            (0, _) | (_, Disp::None) => return None,
            (_, Disp::Refund(r, sel)) => {
                let asset = self.refund_asset(sel, Src::Held(j))?;
                if self.jobs[&j].refunded > 0 {
                    self.note("job refund after a partial return");
                }
                self.new_refund(r, j, held, asset)?;
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
        job.src = [0; ASSETS];
        job.credit_src = 0;
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

    fn waiting_refund(&mut self, r: usize) -> Option<&mut MRefund> {
        self.refunds.get_mut(&r).filter(|rf| rf.waiting())
    }

    fn apply(&mut self, cmd: &Cmd) -> Option<()> {
        match *cmd {
            Cmd::Receive(_)
            | Cmd::Reject(_)
            | Cmd::Quote(..)
            | Cmd::Expire(..)
            | Cmd::Cancel(..)
            | Cmd::QueueFree(_)
            | Cmd::QueuePaid(_)
            | Cmd::QueueCredit(..)
            | Cmd::QueueEntitlement(..)
            | Cmd::Start(_)
            | Cmd::Fail(_)
            | Cmd::Retry(_)
            | Cmd::Close(_)
            | Cmd::Publish(_)
            | Cmd::RefundDue(..)
            | Cmd::CreditJob(_) => self.apply_job(cmd),
            Cmd::PayApply(_)
            | Cmd::PayWhole(_)
            | Cmd::TopUp { .. }
            | Cmd::Unmatched(..)
            | Cmd::SubPay(..)
            | Cmd::Grant(..)
            | Cmd::SubQuote(..)
            | Cmd::Float(..) => self.apply_money(cmd),
            Cmd::SubCancel(_) | Cmd::SubRefund { .. } | Cmd::SubRenew(_) | Cmd::UnitBack(..) => {
                self.apply_subscription(cmd)
            }
            _ => self.apply_refund(cmd),
        }
    }

    fn apply_job(&mut self, cmd: &Cmd) -> Option<()> {
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
                        src: [0; ASSETS],
                        credit_src: 0,
                        funded: 0,
                        refunded: 0,
                        revenue: 0,
                        attempts: 0,
                        main_refund: None,
                        ent: None,
                    },
                );
            }
            Cmd::Reject(j) => self.job_in(j, &[Received])?.st = Rejected,
            Cmd::Quote(j, price) => {
                let job = self.job_in(j, &[Received])?;
                job.st = Quoted;
                job.price = price;
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
                job.credit_src += amount;
                job.funded += amount;
                job.st = Queued;
            }
            Cmd::QueueEntitlement(j, s) => {
                let cust = self.job_in(j, &[Received])?.cust;
                let sub = self.subs.get_mut(&s)?;
                if !sub.active || cust_of_sub(s) != cust || sub.used >= sub.quota {
                    return None;
                }
                sub.used += 1;
                let job = self.jobs.get_mut(&j)?;
                job.st = Queued;
                job.ent = Some(s);
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
                job.src = [0; ASSETS];
                job.credit_src = 0;
                job.st = Succeeded;
                self.revenue += held;
            }
            Cmd::RefundDue(j, r, sel) => {
                self.job_in(j, &[Failed])?;
                let to = self.release(j, Disp::Refund(r, sel), Failed, RefundDue, Credited)?;
                self.jobs.get_mut(&j)?.st = to;
            }
            Cmd::CreditJob(j) => {
                self.job_in(j, &[Failed])?;
                let to = self.release(j, Disp::Credit, Failed, RefundDue, Credited)?;
                self.jobs.get_mut(&j)?.st = to;
            }
            _ => unreachable!("not a job command: {cmd:?}"),
        }
        Some(())
    }

    fn apply_money(&mut self, cmd: &Cmd) -> Option<()> {
        use St::*;
        match *cmd {
            Cmd::PayApply(p) => {
                self.take_ref(p.reference)?;
                self.receive(p.asset, p.amount, p.fee)?;
                let job = self.job_in(p.job, &[Quoted, Partial, Expired])?;
                let now = p.amount.min(job.price - job.applied);
                let excess = p.amount - now;
                job.funded += p.amount;
                job.applied += now;
                job.held += now;
                job.src[p.asset] += now;
                job.st = if job.applied == job.price {
                    Paid
                } else {
                    Partial
                };
                if job.src.iter().all(|&x| x > 0) {
                    self.note("one job paid in two assets");
                }
                match (excess, p.disp) {
                    (0, Disp::None) => {}
                    (0, _) | (_, Disp::None) => return None,
                    (_, d) => self.return_payment(p.job, p.asset, excess, d)?,
                }
            }
            Cmd::PayWhole(p) => {
                self.take_ref(p.reference)?;
                self.receive(p.asset, p.amount, p.fee)?;
                self.jobs.get_mut(&p.job)?.funded += p.amount;
                self.return_payment(p.job, p.asset, p.amount, p.disp)?;
            }
            Cmd::TopUp {
                cust,
                reference,
                amount,
                fee,
                asset,
            } => {
                self.take_ref(reference)?;
                self.receive(asset, amount, fee)?;
                self.credit[cust] += amount;
            }
            Cmd::Unmatched(r, amount, asset) => {
                self.take_ref(r)?;
                self.receive(asset, amount, 0)?;
                self.unmatched += amount;
            }
            Cmd::SubPay(s, r, amount, asset) => {
                self.take_ref(r)?;
                self.receive(asset, amount, 0)?;
                self.sub_funds[s] += amount;
                if let Some(m) = self.subs.get_mut(&s) {
                    m.paid_in = Some(asset);
                }
            }
            Cmd::Grant(s, price, quota) => {
                let previous = self.subs.get(&s);
                let active = previous.is_some_and(|m| m.active);
                let cancelled = previous.is_some_and(|m| m.cancelled);
                if quota == 0 || active || cancelled || self.sub_funds[s] < price {
                    return None;
                }
                let granted = MSub {
                    paid_in: previous.and_then(|m| m.paid_in),
                    renewed: previous.is_some_and(|m| m.renewed),
                    active: true,
                    ..MSub::quoted(quota, price)
                };
                self.sub_funds[s] -= price;
                self.revenue += price;
                self.subs.insert(s, granted);
            }
            Cmd::SubQuote(s, price, quota) => {
                if quota == 0 || price == 0 || self.subs.contains_key(&s) {
                    return None;
                }
                self.subs.insert(s, MSub::quoted(quota, price));
            }
            Cmd::Float(asset, amount) => {
                if amount == 0 {
                    return None;
                }
                self.bal[asset] += amount;
                self.float += amount;
            }
            _ => unreachable!("not a money command: {cmd:?}"),
        }
        Some(())
    }

    fn apply_subscription(&mut self, cmd: &Cmd) -> Option<()> {
        match *cmd {
            Cmd::SubCancel(s) => {
                let m = self.subs.get_mut(&s).filter(|m| !m.cancelled)?;
                m.cancelled = true;
            }
            Cmd::SubRefund {
                sub,
                refund,
                amount,
                asset,
                unused,
            } => self.sub_refund(sub, refund, amount, asset, unused)?,
            Cmd::SubRenew(s) => {
                let m = self.subs.get_mut(&s)?;
                if !m.active || m.cancelled || m.renewed {
                    return None;
                }
                m.renewed = true;
            }
            Cmd::UnitBack(j, s) => {
                let job = self.job_in(j, &[St::Failed, St::FailedFinal])?;
                if job.ent != Some(s) {
                    return None;
                }
                let m = self.subs.get_mut(&s).filter(|m| m.active && m.used > 0)?;
                m.used -= 1;
                self.jobs.get_mut(&j)?.ent = None;
                self.note("quota unit given back");
            }
            _ => unreachable!("not a subscription command: {cmd:?}"),
        }
        Some(())
    }

    fn sub_refund(
        &mut self,
        s: usize,
        r: usize,
        amount: u64,
        asset: usize,
        unused: bool,
    ) -> Option<()> {
        let m = self.subs.get(&s)?;
        if amount == 0 || m.paid_in != Some(asset) || self.refunds.contains_key(&r) {
            return None;
        }
        if unused {
            if !m.cancelled || !m.active || amount > m.price {
                return None;
            }
            let m = self.subs.get_mut(&s)?;
            m.unused_refunded = true;
            m.active = false;
            self.note("unused rest of a period refunded");
        } else {
            if amount > self.sub_funds[s] {
                return None;
            }
            self.sub_funds[s] -= amount;
            self.note("held subscription money refunded");
        }
        self.new_refund(r, NO_JOB, amount, Some(asset))?;
        self.refunds.get_mut(&r)?.cust = cust_of_sub(s);
        Some(())
    }

    fn apply_refund(&mut self, cmd: &Cmd) -> Option<()> {
        use St::*;
        match *cmd {
            Cmd::RefundDefer(r) => self.waiting_refund(r)?.deferred = true,
            Cmd::RefundStart {
                refund,
                flip,
                reserve,
                zap,
            } => {
                let rf = self.waiting_refund(refund)?.clone();
                let route = rf.asset.unwrap_or(0) ^ usize::from(flip);
                if rf.asset.is_some_and(|a| a != route) {
                    self.note("start over the wrong asset refused");
                    return None;
                }
                let needs = rf.amount + reserve;
                if self.bal[route].saturating_sub(self.reserved[route]) < needs {
                    self.note("start refused: asset short");
                    return None;
                }
                self.reserved[route] += needs;
                let rf = self.refunds.get_mut(&refund)?;
                rf.st = RSt::InFlight;
                rf.attempts += 1;
                rf.route = Some((route, reserve));
                rf.zap = zap;
                rf.deferred = false;
                self.mirror(refund, &[RefundDue, RefundFailed], Refunding);
            }
            Cmd::RefundUnknown(r) => {
                let rf = self.refunds.get_mut(&r)?;
                if rf.st != RSt::InFlight {
                    return None;
                }
                rf.st = RSt::Unknown;
                self.mirror(r, &[Refunding], RefundPending);
            }
            Cmd::RefundSettle {
                refund,
                fee,
                by_customer,
                ..
            } => {
                let rf = self.refunds.get(&refund).filter(|rf| rf.paying())?.clone();
                let (asset, reserve) = rf.route?;
                let out = if by_customer {
                    if fee > rf.amount {
                        return None;
                    }
                    rf.amount
                } else {
                    rf.amount + fee
                };
                if self.bal[asset] < out {
                    self.note("settle refused: asset short");
                    return None;
                }
                if by_customer {
                    self.note("customer paid the payout fee");
                } else {
                    self.fees += fee;
                }
                self.bal[asset] -= out;
                self.reserved[asset] -= rf.amount + reserve;
                let rf = self.refunds.get_mut(&refund)?;
                rf.st = RSt::Settled;
                rf.fee = fee;
                rf.by_customer = by_customer;
                self.mirror(refund, &[Refunding, RefundPending], Refunded);
            }
            Cmd::RefundFail { refund, .. } => {
                let rf = self.refunds.get(&refund).filter(|rf| rf.paying())?.clone();
                let (asset, reserve) = rf.route?;
                self.reserved[asset] -= rf.amount + reserve;
                self.refunds.get_mut(&refund)?.st = RSt::Failed;
                self.mirror(refund, &[Refunding, RefundPending], RefundFailed);
            }
            Cmd::Reroute(r, asset) => {
                let rf = self.waiting_refund(r)?;
                rf.asset = Some(asset);
                rf.deferred = false;
            }
            Cmd::ZapReceipt(r) => {
                // Only a refund whose route is a zap, once; no money moves, the state stays.
                let rf = self.refunds.get_mut(&r)?;
                if rf.route.is_none() || !rf.zap || rf.receipt {
                    self.note("zap receipt refused");
                    return None;
                }
                rf.receipt = true;
            }
            Cmd::RetryRefund(r) => {
                let rf = self.waiting_refund(r)?;
                rf.retry_base = rf.attempts;
                rf.deferred = false;
            }
            Cmd::WriteOff(r, to_credit) => {
                let rf = self.waiting_refund(r)?;
                rf.st = RSt::WrittenOff;
                rf.deferred = false;
                let (amount, cust) = (rf.amount, rf.cust);
                if to_credit {
                    self.credit[cust] += amount;
                    self.note("written off to credit");
                    self.mirror(r, &[RefundDue, RefundFailed], Credited);
                } else {
                    self.written_off += amount;
                    self.note("written off to income");
                    self.mirror(r, &[RefundDue, RefundFailed], WrittenOff);
                }
            }
            _ => unreachable!("not a refund command: {cmd:?}"),
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
fn asset(a: usize) -> Asset {
    match a {
        0 => Asset::Lightning,
        _ => Asset::Mint {
            url: MINT_URL.into(),
        },
    }
}
fn operator(note: &str) -> Cause {
    Cause::Operator { note: note.into() }
}

const QUOTE_EXPIRY: u64 = 1_000_000;

fn disposition(d: Disp, model: &Model, src: Src) -> Option<Disposition> {
    match d {
        Disp::None => None,
        Disp::Refund(r, sel) => Some(Disposition::Refund {
            refund: rid(r),
            asset: model.named_asset(sel, src).map(asset),
        }),
        Disp::Credit => Some(Disposition::Credit),
    }
}

fn payment(r: usize, amount: u64, fee: u64, a: usize, target: PaymentTarget) -> EventBody {
    EventBody::PaymentReceived(Payment {
        rail: if a == 0 { Rail::Invoice } else { Rail::NutZap },
        asset: asset(a),
        reference: pref(r),
        linked: vec![],
        amount: msat(amount),
        fee: msat(fee),
        evidence: None,
        payer: None,
        target,
    })
}

fn job_payment(p: &Pay, booking: JobPayment) -> EventBody {
    payment(
        p.reference,
        p.amount,
        p.fee,
        p.asset,
        PaymentTarget::Job {
            job: jid(p.job),
            booking,
        },
    )
}

fn body(cmd: &Cmd, model: &Model) -> EventBody {
    match *cmd {
        Cmd::PayApply(_)
        | Cmd::PayWhole(_)
        | Cmd::TopUp { .. }
        | Cmd::Unmatched(..)
        | Cmd::SubPay(..)
        | Cmd::Grant(..)
        | Cmd::SubQuote(..)
        | Cmd::Float(..) => money_body(cmd, model),
        Cmd::RefundDefer(_)
        | Cmd::RefundStart { .. }
        | Cmd::RefundUnknown(_)
        | Cmd::RefundSettle { .. }
        | Cmd::RefundFail { .. }
        | Cmd::Reroute(..)
        | Cmd::RetryRefund(_)
        | Cmd::WriteOff(..)
        | Cmd::ZapReceipt(_) => refund_body(cmd, model),
        Cmd::SubCancel(_) | Cmd::SubRefund { .. } | Cmd::SubRenew(_) | Cmd::UnitBack(..) => {
            subscription_body(cmd)
        }
        _ => job_body(cmd, model),
    }
}

fn subscription_body(cmd: &Cmd) -> EventBody {
    match *cmd {
        Cmd::SubCancel(s) => EventBody::SubscriptionCancelled {
            subscription: sid(s),
            request: EventId::new(format!("unsub{s}")).unwrap(),
        },
        Cmd::SubRefund {
            sub,
            refund,
            amount,
            asset: a,
            unused,
        } => EventBody::SubscriptionRefundDue {
            subscription: sid(sub),
            refund: rid(refund),
            amount: msat(amount),
            asset: asset(a),
            from: match unused {
                true => SubscriptionFunds::Unused,
                false => SubscriptionFunds::Held,
            },
        },
        Cmd::SubRenew(s) => EventBody::SubscriptionRenewalQuoted {
            subscription: sid(s),
            after: UnixMs(u64::MAX / 2),
            price: msat(1),
            options: vec![],
            expires_at: UnixMs(u64::MAX / 2),
        },
        Cmd::UnitBack(j, s) => EventBody::EntitlementUnitReturned {
            subscription: sid(s),
            job: jid(j),
        },
        _ => unreachable!("not a subscription command: {cmd:?}"),
    }
}

fn job_body(cmd: &Cmd, model: &Model) -> EventBody {
    let attempts = |j: usize| model.jobs.get(&j).map_or(0, |m| m.attempts);
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
        Cmd::Expire(j, _, d) => EventBody::QuoteExpired {
            job: jid(j),
            held: disposition(d, model, Src::Held(j)),
        },
        Cmd::Cancel(j, d) => EventBody::JobCancelled {
            job: jid(j),
            deletion_event: EventId::new(format!("del{j}")).unwrap(),
            held: disposition(d, model, Src::Held(j)),
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
        Cmd::RefundDue(j, r, sel) => EventBody::RefundDue {
            job: jid(j),
            refund: rid(r),
            asset: model.named_asset(sel, Src::Held(j)).map(asset),
        },
        Cmd::CreditJob(j) => EventBody::CreditGranted { job: jid(j) },
        _ => unreachable!("not a job command: {cmd:?}"),
    }
}

fn money_body(cmd: &Cmd, model: &Model) -> EventBody {
    match *cmd {
        Cmd::PayApply(ref p) => job_payment(
            p,
            JobPayment::Apply {
                excess: disposition(p.disp, model, Src::Payment(p.asset)),
            },
        ),
        Cmd::PayWhole(ref p) => job_payment(
            p,
            JobPayment::Whole(
                disposition(p.disp, model, Src::Payment(p.asset)).expect("expressible"),
            ),
        ),
        Cmd::TopUp {
            cust: c,
            reference,
            amount,
            fee,
            asset: a,
        } => payment(
            reference,
            amount,
            fee,
            a,
            PaymentTarget::Credit { pubkey: cust(c) },
        ),
        Cmd::Unmatched(r, amount, a) => payment(
            r,
            amount,
            0,
            a,
            PaymentTarget::Unmatched {
                reason: "unknown job".into(),
            },
        ),
        Cmd::SubPay(s, r, amount, a) => payment(
            r,
            amount,
            0,
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
        Cmd::SubQuote(s, price, quota) => EventBody::SubscriptionQuoted {
            subscription: sid(s),
            subscriber: cust(cust_of_sub(s)),
            tier: "basic".into(),
            price: msat(price),
            period_ms: 1_000,
            quota,
            options: vec![],
            expires_at: UnixMs(QUOTE_EXPIRY),
        },
        Cmd::Float(a, amount) => EventBody::FloatAdded {
            asset: asset(a),
            amount: msat(amount),
            cause: operator("topped up the wallet"),
        },
        _ => unreachable!("not a money command: {cmd:?}"),
    }
}

fn refund_body(cmd: &Cmd, model: &Model) -> EventBody {
    let refund_attempts = |r: usize| model.refunds.get(&r).map_or(0, |m| m.attempts);
    let cause = |by_operator: bool| by_operator.then(|| operator("checked the wallet"));
    match *cmd {
        Cmd::RefundDefer(r) => EventBody::RefundDeferred {
            refund: rid(r),
            reason: "no address".into(),
        },
        Cmd::RefundStart {
            refund,
            flip,
            reserve,
            zap,
        } => {
            let recorded = model.refunds.get(&refund).and_then(|m| m.asset);
            EventBody::RefundStarted {
                refund: rid(refund),
                attempt: refund_attempts(refund) + 1,
                route: RefundRoute {
                    asset: asset(recorded.unwrap_or(0) ^ usize::from(flip)),
                    destination: format!("lnbcrt-refund{refund}"),
                    lookup: format!("refund-hash{refund}"),
                    fee_reserve: msat(reserve),
                    zap: zap.then(|| RefundZap {
                        request: EventId::new(format!(
                            "zap-request-{refund}-{}",
                            refund_attempts(refund) + 1
                        ))
                        .unwrap(),
                        signer: Pubkey::new("lnurl-signer").unwrap(),
                    }),
                },
            }
        }
        Cmd::RefundUnknown(r) => EventBody::RefundOutcomeUnknown {
            refund: rid(r),
            reason: "timeout".into(),
        },
        Cmd::RefundSettle {
            refund,
            fee,
            by_customer,
            by_operator,
        } => EventBody::RefundSettled {
            refund: rid(refund),
            fee: msat(fee),
            fee_paid_by: if by_customer {
                FeePayer::Customer
            } else {
                FeePayer::Operator
            },
            evidence: by_customer.then(|| format!("handover{refund}")),
            cause: cause(by_operator),
        },
        Cmd::RefundFail {
            refund,
            by_operator,
        } => EventBody::RefundFailed {
            refund: rid(refund),
            reason: "no route".into(),
            cause: cause(by_operator),
        },
        Cmd::Reroute(r, a) => EventBody::RefundRerouted {
            refund: rid(r),
            asset: asset(a),
            cause: operator("pay it from the other wallet"),
        },
        Cmd::ZapReceipt(r) => EventBody::RefundZapReceipt {
            refund: rid(r),
            receipt: EventId::new(format!("zap-receipt-{r}")).unwrap(),
        },
        Cmd::RetryRefund(r) => EventBody::RefundRetried {
            refund: rid(r),
            cause: Cause::Node {
                note: "rail back".into(),
            },
        },
        Cmd::WriteOff(r, to_credit) => EventBody::RefundWrittenOff {
            refund: rid(r),
            to: if to_credit {
                WriteOffTo::Credit
            } else {
                WriteOffTo::Income
            },
            cause: operator("customer unreachable"),
        },
        _ => unreachable!("not a refund command: {cmd:?}"),
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
    !matches!(
        cmd,
        Cmd::PayWhole(Pay {
            disp: Disp::None,
            ..
        })
    )
}

fn event_time(cmd: &Cmd, step: usize) -> UnixMs {
    match cmd {
        Cmd::Expire(_, true, _) => UnixMs(QUOTE_EXPIRY - 1),
        Cmd::Expire(_, false, _) => UnixMs(QUOTE_EXPIRY + step as u64),
        _ => UnixMs(1_000 + step as u64),
    }
}

/// Turn the picks in `cmd` into ids: the pick-th existing job (refund), counting round, or an
/// id that does not exist yet when there is none.
fn resolve(cmd: &Cmd, model: &Model) -> Cmd {
    let mut jobs: Vec<usize> = model.jobs.keys().copied().collect();
    let mut refunds: Vec<usize> = model.refunds.keys().copied().collect();
    jobs.sort_unstable();
    refunds.sort_unstable();
    let j = |pick: usize| {
        jobs.get(pick % jobs.len().max(1))
            .copied()
            .unwrap_or(pick % JOBS)
    };
    let r = |pick: usize| {
        refunds
            .get(pick % refunds.len().max(1))
            .copied()
            .unwrap_or(pick % REFUNDS)
    };
    let mut cmd = cmd.clone();
    match &mut cmd {
        Cmd::Reject(x)
        | Cmd::Quote(x, _)
        | Cmd::Expire(x, ..)
        | Cmd::Cancel(x, _)
        | Cmd::QueueFree(x)
        | Cmd::QueuePaid(x)
        | Cmd::QueueCredit(x, _)
        | Cmd::QueueEntitlement(x, _)
        | Cmd::Start(x)
        | Cmd::Fail(x)
        | Cmd::Retry(x)
        | Cmd::Close(x)
        | Cmd::Publish(x)
        | Cmd::RefundDue(x, ..)
        | Cmd::CreditJob(x)
        | Cmd::PayApply(Pay { job: x, .. })
        | Cmd::PayWhole(Pay { job: x, .. })
        | Cmd::UnitBack(x, _) => *x = j(*x),
        Cmd::RefundDefer(x)
        | Cmd::RefundStart { refund: x, .. }
        | Cmd::RefundUnknown(x)
        | Cmd::RefundSettle { refund: x, .. }
        | Cmd::RefundFail { refund: x, .. }
        | Cmd::Reroute(x, _)
        | Cmd::RetryRefund(x)
        | Cmd::WriteOff(x, _)
        | Cmd::ZapReceipt(x) => *x = r(*x),
        Cmd::Receive(_)
        | Cmd::TopUp { .. }
        | Cmd::Unmatched(..)
        | Cmd::SubPay(..)
        | Cmd::Grant(..)
        | Cmd::SubQuote(..)
        | Cmd::Float(..)
        | Cmd::SubCancel(_)
        | Cmd::SubRefund { .. }
        | Cmd::SubRenew(_)
        | Cmd::Resend(_) => {}
    }
    cmd
}

// ---------------------------------------------------------------------------------------------
// Comparison of the model with the ledger.

fn assert_job_agrees(j: usize, m: &MJob, state: &LedgerState) -> Result<(), TestCaseError> {
    let job = state.job(&jid(j)).expect("model job exists in ledger");
    prop_assert!(
        m.st.matches(job.state),
        "job{j}: model {:?} ledger {:?}",
        m.st,
        job.state
    );
    prop_assert_eq!(
        state.held(&Account::Job(jid(j))),
        msat(m.held),
        "held job{}",
        j
    );
    prop_assert_eq!(job.funded_total, msat(m.funded), "funded job{}", j);
    prop_assert_eq!(job.refunded_total, msat(m.refunded), "refunded job{}", j);
    prop_assert_eq!(job.revenue, msat(m.revenue), "revenue job{}", j);
    prop_assert_eq!(job.attempts, m.attempts);
    let sources: Vec<(Asset, Msat)> = (0..ASSETS)
        .filter(|&a| m.src[a] > 0)
        .map(|a| (asset(a), msat(m.src[a])))
        .collect();
    let ledger_sources: Vec<(Asset, Msat)> = job
        .held_assets
        .iter()
        .map(|h| (h.asset.clone(), h.amount))
        .collect();
    prop_assert_eq!(ledger_sources, sources, "held assets job{}", j);
    prop_assert_eq!(job.held_credit, msat(m.credit_src), "held credit job{}", j);
    Ok(())
}

fn assert_refund_agrees(r: usize, m: &MRefund, state: &LedgerState) -> Result<(), TestCaseError> {
    let refund = state
        .refund(&rid(r))
        .expect("model refund exists in ledger");
    prop_assert_eq!(refund.amount, msat(m.amount));
    let st = match refund.state {
        RefundState::Due => RSt::Due,
        RefundState::InFlight => RSt::InFlight,
        RefundState::Unknown => RSt::Unknown,
        RefundState::Failed => RSt::Failed,
        RefundState::Settled => RSt::Settled,
        RefundState::WrittenOff => RSt::WrittenOff,
    };
    prop_assert_eq!(st, m.st, "refund{}", r);
    prop_assert_eq!(&refund.asset, &m.asset.map(asset), "asset of refund{}", r);
    prop_assert_eq!(
        refund
            .route
            .as_ref()
            .map(|route| (route.asset.clone(), route.fee_reserve)),
        m.route.map(|(a, reserve)| (asset(a), msat(reserve))),
        "route of refund{}",
        r
    );
    prop_assert_eq!(refund.attempts, m.attempts);
    prop_assert_eq!(refund.fee, msat(m.fee), "fee of refund{}", r);
    let payer = if m.by_customer {
        FeePayer::Customer
    } else {
        FeePayer::Operator
    };
    prop_assert_eq!(refund.fee_paid_by, payer);
    prop_assert_eq!(
        refund.deferred.is_some(),
        m.deferred,
        "deferred refund{}",
        r
    );
    prop_assert_eq!(refund.retry_base, m.retry_base, "retry base refund{}", r);
    prop_assert_eq!(
        refund
            .route
            .as_ref()
            .is_some_and(|route| route.zap.is_some()),
        m.route.is_some() && m.zap,
        "zap route of refund{}",
        r
    );
    prop_assert_eq!(
        refund.zap_receipt.is_some(),
        m.receipt,
        "zap receipt refund{}",
        r
    );
    Ok(())
}

/// No asset account is ever negative, and each asset's balance, reservations and what is
/// available for new payouts are what the model says.
fn assert_assets_agree(model: &Model, state: &LedgerState) -> Result<(), TestCaseError> {
    for a in 0..ASSETS {
        let account = Account::Asset(asset(a));
        let signed = state.balance(&account).signed(true);
        prop_assert!(signed >= 0, "{} is negative: {}", account, signed);
        prop_assert_eq!(signed, i128::from(model.bal[a]), "balance of {}", account);
        prop_assert_eq!(state.asset_balance(&asset(a)), msat(model.bal[a]));
        prop_assert_eq!(
            state.reserved(&asset(a)),
            msat(model.reserved[a]),
            "reserved on {}",
            account
        );
        prop_assert_eq!(
            state.available(&asset(a)),
            msat(model.bal[a].saturating_sub(model.reserved[a])),
            "available on {}",
            account
        );
    }
    prop_assert_eq!(
        state.balance(&Account::Float).signed(false),
        i128::from(model.float)
    );
    prop_assert_eq!(
        state.balance(&Account::WrittenOff).signed(false),
        i128::from(model.written_off)
    );
    Ok(())
}

fn assert_agrees(model: &Model, state: &LedgerState) -> Result<(), TestCaseError> {
    for (j, m) in &model.jobs {
        assert_job_agrees(*j, m, state)?;
        let rule = state.refund_asset_for(&jid(*j)).ok();
        prop_assert_eq!(rule, model.rule_asset(*j).map(asset), "rule for job{}", j);
    }
    prop_assert_eq!(state.jobs().count(), model.jobs.len());
    for (r, m) in &model.refunds {
        assert_refund_agrees(*r, m, state)?;
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
            prop_assert_eq!(
                (rec.cancelled_at.is_some(), rec.unused_refunded),
                (m.cancelled, m.unused_refunded),
                "sub{}",
                s
            );
            prop_assert_eq!(rec.renewal_quoted.is_some(), m.renewed, "sub{}", s);
            prop_assert_eq!(&rec.paid_in, &m.paid_in.map(asset), "sub{}", s);
        }
    }
    prop_assert_eq!(
        state.balance(&Account::Revenue).credits,
        msat(model.revenue)
    );
    prop_assert_eq!(state.balance(&Account::Fees).debits, msat(model.fees));
    prop_assert_eq!(state.held(&Account::Unmatched), msat(model.unmatched));
    prop_assert_eq!(state.payment_ref_count(), model.refs.len());
    assert_assets_agree(model, state)?;
    if let Err(why) = invariants::check_all(state) {
        return Err(TestCaseError::fail(why));
    }
    Ok(())
}

/// Run a command sequence against `append` (the ledger under test) and the model.
pub fn run(
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
        let cmd = &resolve(cmd, &model);
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

pub fn replay(events: &[LedgerEvent]) -> LedgerState {
    let mut ledger = Ledger::new();
    for e in events {
        ledger.append(e).expect("accepted events replay");
    }
    ledger.state().clone()
}

/// Runs the model alone over many generated sequences; returns the job and refund states it
/// reached and the situations it noted.
pub fn explore() -> (HashSet<String>, HashSet<String>, HashSet<&'static str>) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(cmd(), 1..160);
    let mut job_states = HashSet::new();
    let mut refund_states = HashSet::new();
    let mut seen = HashSet::new();
    for _ in 0..2_000 {
        let cmds = strategy.new_tree(&mut runner).unwrap().current();
        let mut model = Model::default();
        for c in cmds.iter().filter(|c| !matches!(c, Cmd::Resend(_))) {
            let c = resolve(c, &model);
            if !expressible(&c) {
                continue;
            }
            model.step(&c);
            job_states.extend(model.jobs.values().map(|j| format!("{:?}", j.st)));
            refund_states.extend(model.refunds.values().map(|r| format!("{:?}", r.st)));
        }
        seen.extend(model.seen);
    }
    (job_states, refund_states, seen)
}

/// Runs `cmds` through a store keeping everything: it agrees with the model after every step,
/// verifies, and holds the state a replay of the accepted events gives. Returns the store and
/// that state (for a reopen check).
pub fn store_agrees<S: LedgerStore>(
    cmds: &[Cmd],
    store: S,
) -> Result<(S, LedgerState), TestCaseError> {
    agrees(cmds, store, false)
}

/// The same through a store keeping open work only: the rules answer as if the whole history
/// were in memory (the model checks the whole history, read from the stored projections),
/// memory holds exactly the open work, and the store verifies. Returns the store and the open
/// work a full replay holds (for a reopen check).
pub fn bounded_store_agrees<S: LedgerStore>(
    cmds: &[Cmd],
    store: S,
) -> Result<(S, LedgerState), TestCaseError> {
    agrees(cmds, store, true)
}

fn agrees<S: LedgerStore>(
    cmds: &[Cmd],
    store: S,
    bounded: bool,
) -> Result<(S, LedgerState), TestCaseError> {
    let store = std::cell::RefCell::new(store);
    let accepted = run(
        cmds,
        |e| store.borrow_mut().append(e),
        || match bounded {
            true => store.borrow().projected_state().unwrap(),
            false => store.borrow().state().clone(),
        },
    )?;
    let store = store.into_inner();
    if let Err(e) = store.verify() {
        return Err(TestCaseError::fail(format!("verify failed: {e}")));
    }
    let full = replay(&accepted);
    let expected = if bounded { full.open_work() } else { full };
    prop_assert_eq!(&expected, store.state());
    Ok((store, expected))
}

/// Two stores on one location take the commands in turns (which one writes a step is picked
/// from the step's key, so runs of either length happen), each following the other before it
/// writes ([`LedgerStore::follow`]): the writer agrees with the model after every step, as one
/// store would. At the end both follow, verify, and hold what a full replay of the accepted
/// events gives (its open work for `bounded` stores).
pub fn two_writers_agree<S: LedgerStore>(
    cmds: &[Cmd],
    a: S,
    b: S,
    bounded: bool,
) -> Result<(), TestCaseError> {
    let stores = std::cell::RefCell::new([a, b]);
    let writer = std::cell::Cell::new(0usize);
    let follow = |s: &mut S| s.follow().map(|_| ());
    let accepted = run(
        cmds,
        |e| {
            let w = usize::from(e.key.as_str().bytes().fold(0u8, u8::wrapping_add) % 2 == 1);
            writer.set(w);
            let mut stores = stores.borrow_mut();
            follow(&mut stores[w])?;
            stores[w].append(e)
        },
        || {
            let stores = stores.borrow();
            let s = &stores[writer.get()];
            match bounded {
                true => s.projected_state().unwrap(),
                false => s.state().clone(),
            }
        },
    )?;
    let full = replay(&accepted);
    let expected = if bounded { full.open_work() } else { full };
    for s in stores.borrow_mut().iter_mut() {
        follow(s).map_err(|e| TestCaseError::fail(format!("follow: {e}")))?;
        if let Err(e) = s.verify() {
            return Err(TestCaseError::fail(format!("verify failed: {e}")));
        }
        prop_assert_eq!(&expected, s.state());
    }
    Ok(())
}

//! Building each job's events, one atomic group per job.

use paydvm_ledger::*;

use super::job_type::JobType;
use super::rng::XorShift;

const CUSTOMERS: usize = 5_000;
const MINTS: [&str; 2] = ["https://mint.example.com", "https://cashu.example.org"];

/// One job's events, appended as one atomic group.
pub struct JobGroup {
    pub events: Vec<LedgerEvent>,
    pub job: String,
    pub job_type: JobType,
    /// A payment reference that names the job, when the job was paid with outside money.
    pub payment: Option<String>,
}

/// An endless, seeded stream of jobs.
pub struct Workload {
    rng: XorShift,
    clock: u64,
    serial: u64,
    customers: Vec<Pubkey>,
}

/// What the events of one job are built from.
struct Ctx {
    job: JobId,
    key_prefix: String,
    customer: Pubkey,
    price: u64,
}

fn id<T: TryFrom<String, Error = IdError>>(s: String) -> T {
    T::try_from(s).expect("generated ids are valid")
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        let mut rng = XorShift::new(seed);
        let customers = (0..CUSTOMERS as u64).map(|n| id(rng.id(n))).collect();
        Workload {
            rng,
            clock: 1_700_000_000_000,
            serial: 0,
            customers,
        }
    }

    fn ev(&mut self, ctx: &Ctx, what: &str, body: EventBody) -> LedgerEvent {
        self.clock += 1 + self.rng.below(40);
        LedgerEvent::new(
            id(format!("{what}:{}", ctx.key_prefix)),
            UnixMs(self.clock),
            body,
        )
    }

    /// The next job, drawn from a fixed mix of lifecycles.
    pub fn next_job(&mut self) -> JobGroup {
        self.job(None)
    }

    /// The next job, of the given type.
    pub fn next_job_of(&mut self, job_type: JobType) -> JobGroup {
        self.job(Some(job_type))
    }

    /// Every job type once, in [`JobType::ALL`] order, then the weighted mix: even a sample of
    /// a few jobs shows each lifecycle.
    pub fn every_type_then_mix(mut self) -> impl Iterator<Item = JobGroup> {
        let mut first_of_each = JobType::ALL.into_iter();
        std::iter::from_fn(move || {
            Some(match first_of_each.next() {
                Some(job_type) => self.next_job_of(job_type),
                None => self.next_job(),
            })
        })
    }

    fn job(&mut self, job_type: Option<JobType>) -> JobGroup {
        self.serial += 1;
        let job_hex = self.rng.id(self.serial);
        let ctx = Ctx {
            job: id(job_hex.clone()),
            key_prefix: job_hex[..40].to_string(),
            customer: self.customers[self.rng.below(CUSTOMERS as u64) as usize].clone(),
            price: (1 + self.rng.below(1_000)) * 1_000,
        };
        // Drawn after the job's own numbers, so that the mix replays the same stream of events
        // as the benchmark always has.
        let job_type = job_type.unwrap_or_else(|| JobType::from_roll(self.rng.below(100)));
        let mut g = JobGroup {
            events: Vec::with_capacity(9),
            job: job_hex,
            job_type,
            payment: None,
        };
        match job_type {
            JobType::PaidAndSucceeded => self.paid(&ctx, &mut g, Ending::Success),
            JobType::PaidInTwoNutZaps => self.partial(&ctx, &mut g),
            JobType::SucceededOnRetry => self.paid(&ctx, &mut g, Ending::RetryThenSuccess),
            JobType::FailedAndRefunded => self.paid(&ctx, &mut g, Ending::FailRefund),
            JobType::FailedAndCredited => self.paid(&ctx, &mut g, Ending::FailCredit),
            JobType::PaidFromCredit => self.credit_job(&ctx, &mut g),
            JobType::ExpiredPartlyPaid => self.expired_partial(&ctx, &mut g),
            JobType::Overpaid => self.overpaid(&ctx, &mut g),
            JobType::Rejected => self.rejected(&ctx, &mut g),
        }
        g
    }

    fn received(&mut self, ctx: &Ctx, g: &mut JobGroup) {
        let kind = 5000 + self.rng.below(100) as u16;
        let e = self.ev(
            ctx,
            "recv",
            EventBody::JobReceived {
                job: ctx.job.clone(),
                request_event: id(ctx.job.to_string()),
                customer: ctx.customer.clone(),
                kind,
                request: None,
            },
        );
        g.events.push(e);
    }

    /// Quote with a bolt11 invoice; returns its payment hash.
    fn quote(&mut self, ctx: &Ctx, g: &mut JobGroup) -> String {
        let hash = self.rng.id(self.serial);
        let bolt11 = format!("lnbc{}n1p{}", ctx.price / 100, self.rng.bech32(220));
        let expires_at = UnixMs(self.clock + 600_000);
        let e = self.ev(
            ctx,
            "quote",
            EventBody::QuoteIssued {
                job: ctx.job.clone(),
                amount: Msat::from_msat(ctx.price),
                expires_at,
                options: vec![
                    PaymentOption::Invoice {
                        payment_hash: hash.clone(),
                        bolt11,
                    },
                    PaymentOption::NutZap,
                ],
            },
        );
        g.events.push(e);
        hash
    }

    fn invoice_payment(
        &mut self,
        ctx: &Ctx,
        hash: &str,
        amount: u64,
        booking: JobPayment,
    ) -> EventBody {
        EventBody::PaymentReceived(Payment {
            rail: Rail::Invoice,
            asset: Asset::Lightning,
            reference: id(hash.to_string()),
            linked: vec![],
            amount: Msat::from_msat(amount),
            fee: Msat::ZERO,
            evidence: None,
            payer: Some(ctx.customer.clone()),
            target: PaymentTarget::Job {
                job: ctx.job.clone(),
                booking,
            },
        })
    }

    /// A NutZap: the nutzap event id is the reference, each proof's Y is a linked reference.
    fn nutzap(
        &mut self,
        target: PaymentTarget,
        payer: &Pubkey,
        amount: u64,
    ) -> (String, EventBody) {
        let reference = self.rng.id(self.serial);
        let proofs = 1 + self.rng.below(4);
        let linked = (0..proofs).map(|_| id(self.rng.id(self.serial))).collect();
        let mint = MINTS[self.rng.below(MINTS.len() as u64) as usize];
        let body = EventBody::PaymentReceived(Payment {
            rail: Rail::NutZap,
            asset: Asset::Mint {
                url: mint.to_string(),
            },
            reference: id(reference.clone()),
            linked,
            amount: Msat::from_msat(amount),
            fee: Msat::ZERO,
            evidence: Some(id(reference.clone())),
            payer: Some(payer.clone()),
            target,
        });
        (reference, body)
    }

    fn run_and_finish(&mut self, ctx: &Ctx, g: &mut JobGroup, attempt: u32) {
        let e = self.ev(
            ctx,
            &format!("start{attempt}"),
            EventBody::ProcessingStarted {
                job: ctx.job.clone(),
                attempt,
            },
        );
        g.events.push(e);
        let result = self.rng.id(self.serial);
        let e = self.ev(
            ctx,
            "result",
            EventBody::ResultPublished {
                job: ctx.job.clone(),
                result_event: id(result),
            },
        );
        g.events.push(e);
    }

    fn queue(&mut self, ctx: &Ctx, g: &mut JobGroup, what: &str, reason: QueueReason) {
        let e = self.ev(
            ctx,
            what,
            EventBody::JobQueued {
                job: ctx.job.clone(),
                reason,
            },
        );
        g.events.push(e);
    }

    fn paid(&mut self, ctx: &Ctx, g: &mut JobGroup, ending: Ending) {
        self.received(ctx, g);
        let hash = self.quote(ctx, g);
        let body = self.invoice_payment(ctx, &hash, ctx.price, JobPayment::Apply { excess: None });
        let e = self.ev(ctx, "pay", body);
        g.events.push(e);
        g.payment = Some(hash);
        self.queue(ctx, g, "queue", QueueReason::Paid);
        match ending {
            Ending::Success => self.run_and_finish(ctx, g, 1),
            Ending::RetryThenSuccess => {
                self.start_and_fail(ctx, g, true);
                self.queue(ctx, g, "requeue", QueueReason::Retry);
                self.run_and_finish(ctx, g, 2);
            }
            Ending::FailRefund => {
                self.start_and_fail(ctx, g, false);
                let refund: RefundId = id(format!("{}:fail", ctx.job));
                let e = self.ev(
                    ctx,
                    "refund-due",
                    EventBody::RefundDue {
                        job: ctx.job.clone(),
                        refund: refund.clone(),
                        asset: None,
                    },
                );
                g.events.push(e);
                self.refund_paid(ctx, g, &refund, false);
            }
            Ending::FailCredit => {
                self.start_and_fail(ctx, g, false);
                let e = self.ev(
                    ctx,
                    "credit",
                    EventBody::CreditGranted {
                        job: ctx.job.clone(),
                    },
                );
                g.events.push(e);
            }
        }
    }

    fn start_and_fail(&mut self, ctx: &Ctx, g: &mut JobGroup, retryable: bool) {
        let e = self.ev(
            ctx,
            "start1",
            EventBody::ProcessingStarted {
                job: ctx.job.clone(),
                attempt: 1,
            },
        );
        g.events.push(e);
        let e = self.ev(
            ctx,
            "fail1",
            EventBody::ProcessingFailed {
                job: ctx.job.clone(),
                attempt: 1,
                retryable,
                reason: "backend returned 503".into(),
            },
        );
        g.events.push(e);
    }

    /// Pay a refund out over Lightning, optionally through an unknown outcome first.
    fn refund_paid(&mut self, ctx: &Ctx, g: &mut JobGroup, refund: &RefundId, unknown_first: bool) {
        let lookup = self.rng.id(self.serial);
        let destination = format!("lnbc1p{}", self.rng.bech32(200));
        let e = self.ev(
            ctx,
            "refund-start1",
            EventBody::RefundStarted {
                refund: refund.clone(),
                attempt: 1,
                route: RefundRoute {
                    asset: Asset::Lightning,
                    destination,
                    lookup,
                    fee_reserve: Msat::ZERO,
                    zap: None,
                },
            },
        );
        g.events.push(e);
        if unknown_first {
            let e = self.ev(
                ctx,
                "refund-unknown1",
                EventBody::RefundOutcomeUnknown {
                    refund: refund.clone(),
                    reason: "payment timed out".into(),
                },
            );
            g.events.push(e);
        }
        let fee = Msat::from_msat(self.rng.below(5_000));
        let e = self.ev(
            ctx,
            "refund-settled",
            EventBody::RefundSettled {
                refund: refund.clone(),
                fee,
                fee_paid_by: Default::default(),
                evidence: None,
                cause: None,
            },
        );
        g.events.push(e);
    }

    /// Two NutZaps that together pay the quote.
    fn partial(&mut self, ctx: &Ctx, g: &mut JobGroup) {
        self.received(ctx, g);
        self.quote(ctx, g);
        let first = ctx.price / 3;
        for (n, amount) in [(1, first), (2, ctx.price - first)] {
            let target = PaymentTarget::Job {
                job: ctx.job.clone(),
                booking: JobPayment::Apply { excess: None },
            };
            let (reference, body) = self.nutzap(target, &ctx.customer, amount);
            let e = self.ev(ctx, &format!("nutzap{n}"), body);
            g.events.push(e);
            g.payment = Some(reference);
        }
        self.queue(ctx, g, "queue", QueueReason::Paid);
        self.run_and_finish(ctx, g, 1);
    }

    /// Prepaid credit: a top-up that names no job, then the job is queued on that credit.
    fn credit_job(&mut self, ctx: &Ctx, g: &mut JobGroup) {
        let target = PaymentTarget::Credit {
            pubkey: ctx.customer.clone(),
        };
        let (_, body) = self.nutzap(target, &ctx.customer, ctx.price);
        let e = self.ev(ctx, "topup", body);
        g.events.push(e);
        self.received(ctx, g);
        self.queue(
            ctx,
            g,
            "queue",
            QueueReason::CreditDebit {
                amount: Msat::from_msat(ctx.price),
            },
        );
        self.run_and_finish(ctx, g, 1);
    }

    /// Part paid, the quote runs out, the held part is refunded after an unknown outcome.
    fn expired_partial(&mut self, ctx: &Ctx, g: &mut JobGroup) {
        self.received(ctx, g);
        self.quote(ctx, g);
        let target = PaymentTarget::Job {
            job: ctx.job.clone(),
            booking: JobPayment::Apply { excess: None },
        };
        let (reference, body) = self.nutzap(target, &ctx.customer, ctx.price / 2);
        let e = self.ev(ctx, "nutzap1", body);
        g.events.push(e);
        g.payment = Some(reference);
        self.clock += 600_000;
        let refund: RefundId = id(format!("{}:expired", ctx.job));
        let e = self.ev(
            ctx,
            "expire",
            EventBody::QuoteExpired {
                job: ctx.job.clone(),
                held: Some(Disposition::Refund {
                    refund: refund.clone(),
                    asset: None,
                }),
            },
        );
        g.events.push(e);
        self.refund_paid(ctx, g, &refund, true);
    }

    /// Paid too much: the excess becomes a refund obligation, the job runs.
    fn overpaid(&mut self, ctx: &Ctx, g: &mut JobGroup) {
        self.received(ctx, g);
        let hash = self.quote(ctx, g);
        let booking = JobPayment::Apply {
            excess: Some(Disposition::Refund {
                refund: id(format!("{}:excess", ctx.job)),
                asset: None,
            }),
        };
        let body = self.invoice_payment(ctx, &hash, ctx.price + 1_000, booking);
        let e = self.ev(ctx, "pay", body);
        g.events.push(e);
        g.payment = Some(hash);
        self.queue(ctx, g, "queue", QueueReason::Paid);
        self.run_and_finish(ctx, g, 1);
    }

    fn rejected(&mut self, ctx: &Ctx, g: &mut JobGroup) {
        self.received(ctx, g);
        let e = self.ev(
            ctx,
            "reject",
            EventBody::JobRejected {
                job: ctx.job.clone(),
                reason: "kind not offered".into(),
            },
        );
        g.events.push(e);
    }
}

#[derive(Clone, Copy)]
enum Ending {
    Success,
    RetryThenSuccess,
    FailRefund,
    FailCredit,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let (mut a, mut b) = (Workload::new(7), Workload::new(7));
        for _ in 0..50 {
            let (ga, gb) = (a.next_job(), b.next_job());
            assert_eq!(ga.job, gb.job);
            assert_eq!(ga.events, gb.events);
        }
    }

    #[test]
    fn every_type_comes_first_and_every_job_is_accepted_by_the_ledger() {
        let mut ledger = Ledger::new();
        let groups: Vec<JobGroup> = Workload::new(7).every_type_then_mix().take(300).collect();
        let first: Vec<JobType> = groups[..JobType::ALL.len()]
            .iter()
            .map(|g| g.job_type)
            .collect();
        assert_eq!(first, JobType::ALL);
        for g in &groups {
            ledger
                .prepare(&g.events)
                .unwrap_or_else(|e| panic!("{:?} job {} refused: {e}", g.job_type, g.job));
        }
        let in_mix: BTreeSet<JobType> = groups[JobType::ALL.len()..]
            .iter()
            .map(|g| g.job_type)
            .collect();
        assert_eq!(
            in_mix.len(),
            JobType::ALL.len(),
            "the mix alone reaches every type"
        );
    }
}

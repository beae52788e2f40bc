//! What the node tells about itself while it runs: the counters, gauges and histograms behind
//! `/metrics` (through the `metrics` facade) and the running totals the status page charts
//! (plain atomics, since the facade cannot be read back).
//!
//! Every series carries a `node` label (the node's hex pubkey): one process may run several
//! nodes (tests, benches), and the facade's recorder is process-wide. Recording is cheap and
//! never fails; without an installed recorder ([`crate::node::http::metrics`]) the facade
//! drops everything, and the totals still count.
//!
//! Callers are shells (the core after a ledger write, the outbox, the relay supervisors, the
//! backend prober), never the pure decision code in `decide/`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// Metric names, in one place so that docs/operations.md and the tests can list them.
pub mod names {
    pub const JOBS_RECEIVED: &str = "paydvm_jobs_received_total";
    pub const JOBS: &str = "paydvm_jobs_total";
    pub const PAYMENTS: &str = "paydvm_payments_total";
    pub const PAYMENTS_MSAT: &str = "paydvm_payments_msat_total";
    pub const REFUNDS: &str = "paydvm_refunds_total";
    pub const REFUNDS_MSAT: &str = "paydvm_refunds_msat_total";
    pub const REVENUE_MSAT: &str = "paydvm_revenue_msat_total";
    pub const QUOTE_TO_PAYMENT: &str = "paydvm_quote_to_payment_seconds";
    pub const PAYMENT_TO_RESULT: &str = "paydvm_payment_to_result_seconds";
    pub const REQUEST_TO_RESULT: &str = "paydvm_request_to_result_seconds";
    pub const LEDGER_COMMIT: &str = "paydvm_ledger_commit_seconds";
    pub const LEDGER_WRITE_ERRORS: &str = "paydvm_ledger_write_errors_total";
    pub const LEDGER_CHECKPOINT_FAILURES: &str = "paydvm_ledger_checkpoint_failures_total";
    pub const RELAY_UP: &str = "paydvm_relay_up";
    pub const OUTBOX_BACKLOG: &str = "paydvm_outbox_backlog";
    pub const WALLET_UP: &str = "paydvm_wallet_up";
    pub const MINT_UP: &str = "paydvm_mint_up";
    pub const DISK_FREE: &str = "paydvm_ledger_disk_free_bytes";
    pub const ECASH_DEFERRED: &str = "paydvm_ecash_deferred";
}

/// Running totals of this process's run, for the status page's charts.
#[derive(Debug, Default)]
pub struct Totals {
    /// Jobs that published a result.
    pub results: AtomicU64,
    /// Jobs that ended without a result (rejected, failed, expired, cancelled, ...).
    pub ended_without_result: AtomicU64,
    pub revenue_msat: AtomicU64,
    pub payments_msat: AtomicU64,
    pub refunds_msat: AtomicU64,
    /// Request-to-result latency of the jobs with a result: sum and count.
    pub latency_ms_sum: AtomicU64,
    pub latency_count: AtomicU64,
}

/// One totals reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TotalsReading {
    pub results: u64,
    pub ended_without_result: u64,
    pub revenue_msat: u64,
    pub payments_msat: u64,
    pub refunds_msat: u64,
    pub latency_ms_sum: u64,
    pub latency_count: u64,
}

impl Totals {
    pub fn read(&self) -> TotalsReading {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TotalsReading {
            results: get(&self.results),
            ended_without_result: get(&self.ended_without_result),
            revenue_msat: get(&self.revenue_msat),
            payments_msat: get(&self.payments_msat),
            refunds_msat: get(&self.refunds_msat),
            latency_ms_sum: get(&self.latency_ms_sum),
            latency_count: get(&self.latency_count),
        }
    }
}

fn add(a: &AtomicU64, n: u64) {
    // Saturating: a total that stops growing is better than one that wraps.
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_add(n))
    });
}

/// The node's telemetry handle: cheap to clone, one per node.
#[derive(Debug, Clone)]
pub struct Telemetry {
    node: Arc<str>,
    totals: Arc<Totals>,
    /// Whether the last ledger write succeeded (`/readyz`).
    ledger_ok: Arc<AtomicBool>,
}

impl Telemetry {
    /// `node`: the node's pubkey, hex (the `node` label).
    pub fn new(node: &str) -> Telemetry {
        Telemetry {
            node: Arc::from(node),
            totals: Arc::default(),
            ledger_ok: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn totals(&self) -> TotalsReading {
        self.totals.read()
    }

    pub fn ledger_ok(&self) -> bool {
        self.ledger_ok.load(Ordering::Relaxed)
    }

    fn label(&self) -> (&'static str, String) {
        ("node", self.node.to_string())
    }

    pub fn job_received(&self, kind: u16) {
        counter!(
            names::JOBS_RECEIVED,
            &[self.label(), ("kind", kind.to_string())]
        )
        .increment(1);
    }

    /// A job reached `state` (as of the end of a ledger group).
    pub fn job_reached(&self, kind: u16, state: &'static str, terminal: bool) {
        let labels = [
            self.label(),
            ("kind", kind.to_string()),
            ("state", state.to_owned()),
        ];
        counter!(names::JOBS, &labels).increment(1);
        if state == "succeeded" {
            add(&self.totals.results, 1);
        } else if terminal {
            add(&self.totals.ended_without_result, 1);
        }
    }

    pub fn payment(&self, rail: &'static str, msat: u64) {
        let labels = [self.label(), ("rail", rail.to_owned())];
        counter!(names::PAYMENTS, &labels).increment(1);
        counter!(names::PAYMENTS_MSAT, &labels).increment(msat);
        add(&self.totals.payments_msat, msat);
    }

    /// A refund settled over `rail` (`lightning` or `ecash`).
    pub fn refund(&self, rail: &'static str, msat: u64) {
        let labels = [self.label(), ("rail", rail.to_owned())];
        counter!(names::REFUNDS, &labels).increment(1);
        counter!(names::REFUNDS_MSAT, &labels).increment(msat);
        add(&self.totals.refunds_msat, msat);
    }

    pub fn revenue(&self, msat: u64) {
        counter!(names::REVENUE_MSAT, &[self.label()]).increment(msat);
        add(&self.totals.revenue_msat, msat);
    }

    pub fn quote_to_payment(&self, took: Duration) {
        histogram!(names::QUOTE_TO_PAYMENT, &[self.label()]).record(took.as_secs_f64());
    }

    pub fn payment_to_result(&self, took: Duration) {
        histogram!(names::PAYMENT_TO_RESULT, &[self.label()]).record(took.as_secs_f64());
    }

    /// From the request's arrival to its result, free jobs included.
    pub fn request_to_result(&self, took: Duration) {
        histogram!(names::REQUEST_TO_RESULT, &[self.label()]).record(took.as_secs_f64());
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        add(&self.totals.latency_ms_sum, ms);
        add(&self.totals.latency_count, 1);
    }

    /// One group commit: how long the write took, and whether it landed.
    pub fn ledger_commit(&self, took: Duration, ok: bool) {
        self.ledger_ok.store(ok, Ordering::Relaxed);
        if ok {
            histogram!(names::LEDGER_COMMIT, &[self.label()]).record(took.as_secs_f64());
        } else {
            counter!(names::LEDGER_WRITE_ERRORS, &[self.label()]).increment(1);
        }
    }

    /// WAL checkpoints of the ledger file that failed (the checkpoint thread tries again).
    pub fn checkpoint_failures(&self, n: u64) {
        counter!(names::LEDGER_CHECKPOINT_FAILURES, &[self.label()]).increment(n);
    }

    pub fn relay_up(&self, relay: &str, up: bool) {
        let labels = [self.label(), ("relay", relay.to_owned())];
        gauge!(names::RELAY_UP, &labels).set(f64::from(u8::from(up)));
    }

    /// `delta` publications entered (+1) or left (-1) the outbox.
    pub fn outbox_backlog(&self, delta: f64) {
        gauge!(names::OUTBOX_BACKLOG, &[self.label()]).increment(delta);
    }

    pub fn wallet_up(&self, backend: &'static str, up: bool) {
        let labels = [self.label(), ("backend", backend.to_owned())];
        gauge!(names::WALLET_UP, &labels).set(f64::from(u8::from(up)));
    }

    pub fn mint_up(&self, mint: &str, up: bool) {
        let labels = [self.label(), ("mint", mint.to_owned())];
        gauge!(names::MINT_UP, &labels).set(f64::from(u8::from(up)));
    }

    /// NutZaps and token requests waiting because their mint could not be asked.
    pub fn ecash_deferred(&self, waiting: usize) {
        gauge!(names::ECASH_DEFERRED, &[self.label()]).set(waiting as f64);
    }

    /// Bytes free on the ledger file's filesystem (f64: exact below 2^53 bytes).
    pub fn disk_free(&self, bytes: u64) {
        gauge!(names::DISK_FREE, &[self.label()]).set(bytes as f64);
    }
}

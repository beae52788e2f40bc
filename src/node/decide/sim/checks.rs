//! What must hold after every step, and at the end of a run.

use paydvm_ledger::{
    Account, Asset, EntitlementState, JobState, LedgerState, LedgerStore, RefundState,
};

use super::Sim;

impl Sim {
    /// After every step: the ledger never counts more money than the wallets hold (a payment
    /// counted twice shows here), no refund left twice, nothing called settled that did not
    /// leave, no job answered with two results.
    pub(super) fn check_always(&self) {
        assert!(
            self.node.store.state().job_indexes_agree(),
            "{}: the job indexes disagree with the jobs",
            self.at()
        );
        // The whole history: the store keeps only open work in memory.
        let state = &self.history();
        for (asset, held) in &self.world.wallets {
            let asset = asset_of(asset);
            let available = i128::from(state.available(&asset).as_msat());
            assert!(
                available <= *held,
                "{}: the ledger has {available} msat available at {asset}, the wallet holds {held}",
                self.at()
            );
        }
        for (refund, attempts) in &self.world.sent {
            assert!(
                attempts.len() <= 1,
                "{}: refund {refund} was paid {} times (attempts {attempts:?})",
                self.at(),
                attempts.len()
            );
        }
        for record in state.refunds().filter(|r| r.state == RefundState::Settled) {
            assert!(
                self.world.sent.contains_key(&record.refund),
                "{}: refund {} is settled in the ledger but nothing was sent",
                self.at(),
                record.refund
            );
        }
        for (job, n) in &self.world.results {
            assert!(*n <= 1, "{}: job {job} published {n} results", self.at());
        }
        // Stronger than "paid once": no attempt reaches an executor or a rail twice, whichever
        // node decided it.
        for ((job, attempt), by) in &self.world.runs {
            assert!(
                by.len() <= 1,
                "{}: job {job} attempt {attempt} started by nodes {by:?}",
                self.at()
            );
        }
        for ((refund, attempt), by) in &self.world.payouts {
            assert!(
                by.len() <= 1,
                "{}: refund {refund} attempt {attempt} handed to a rail by nodes {by:?}",
                self.at()
            );
        }
        for s in state.subscriptions() {
            assert!(s.used <= s.quota, "{}: {s:?} over its quota", self.at());
            // What a cancelled subscription is paid is owed back in the group that books it.
            let held = state.held(&Account::Subscription(s.subscription.clone()));
            assert!(
                s.cancelled_at.is_none() || held.is_zero(),
                "{}: cancelled {s:?} keeps {held}",
                self.at()
            );
        }
    }

    /// At the end (faults off, time past every timeout, the operator having answered every
    /// refund that waited for them): nothing open, the wallets hold what the ledger says, and
    /// `verify` is clean.
    pub(super) fn check_end(&self) {
        let state = &self.history();
        let open: Vec<String> = state
            .jobs()
            .filter(|j| !j.state.is_terminal())
            .map(|j| format!("{j:?} now {}", self.now))
            .collect();
        assert!(
            open.is_empty(),
            "{}: jobs left open: {open:?}; the ledger refused: {:?}",
            self.at(),
            self.refusals.iter().rev().take(3).collect::<Vec<_>>()
        );
        let refunds: Vec<String> = state
            .refunds()
            .filter(|r| !r.state.is_closed())
            .map(|r| format!("{} {:?} {:?}", r.refund, r.state, r.deferred))
            .collect();
        assert!(
            refunds.is_empty(),
            "{}: refunds left open: {refunds:?}",
            self.at()
        );
        for job in state.jobs().filter(|j| j.state == JobState::Succeeded) {
            let results = self.world.results.get(&job.job).copied().unwrap_or(0);
            assert_eq!(
                results,
                1,
                "{}: job {} succeeded with {results} results",
                self.at(),
                job.job
            );
        }
        for (asset, held) in &self.world.wallets {
            let booked = i128::from(state.asset_balance(&asset_of(asset)).as_msat());
            assert_eq!(
                booked,
                *held,
                "{}: {asset}: ledger {booked}, wallet {held}",
                self.at()
            );
        }
        self.check_subscriptions_end(state);
        let report = self.node.store.verify();
        assert!(report.is_ok(), "{}: verify: {report:?}", self.at());
    }

    /// No subscription sits on a period's price without a period: what a subscriber paid in
    /// full was granted (at payment, or at the tick that ended the period before).
    fn check_subscriptions_end(&self, state: &LedgerState) {
        for s in state.subscriptions() {
            let held = state.held(&Account::Subscription(s.subscription.clone()));
            let running = s.state == EntitlementState::Active && self.now < s.period_end.0;
            assert!(
                running || held < s.price,
                "{}: {s:?} holds {held} and has no period",
                self.at()
            );
        }
    }
}

impl Sim {
    fn history(&self) -> LedgerState {
        self.node
            .store
            .projected_state()
            .expect("the stored projections read")
    }
}

fn asset_of(name: &str) -> Asset {
    match name.strip_prefix("mint:") {
        Some(url) => Asset::Mint { url: url.into() },
        None => Asset::Lightning,
    }
}

//! Running seeds: a random phase with every fault on, then a drain with faults off in which
//! time runs past every timeout and the operator answers what waits for them.

use std::collections::{BTreeSet, HashMap};

use paydvm_ledger::{Asset, JobId, RefundState};

use super::world::mint;
use super::Sim;
use crate::operator::{OperatorAction, OperatorRequest};

/// Random steps per seed.
const STEPS: u64 = 600;
/// With two nodes: the step at which the second stops for good in even seeds (the first goes on
/// alone, faults on, for the rest of the random phase); odd seeds retire it when the random
/// phase ends, so that the first finishes, faults off, whatever the second left.
const RETIRE_AT: u64 = 450;
/// Seeds CI runs.
const CI_SEEDS: u64 = 24;
/// Rounds the drain may take before the run counts as stuck.
const MAX_DRAIN_ROUNDS: u32 = 400;

/// What a run came to (two runs of one seed must agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub seed: u64,
    pub events: u64,
    pub head: String,
    pub stats: String,
}

/// The seeds to run: `PAYDVM_SIM_SEED` alone, else 1..=`PAYDVM_SIM_SEEDS` (default [`CI_SEEDS`]).
pub fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("PAYDVM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n = std::env::var("PAYDVM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_SEEDS);
    (1..=n).collect()
}

/// One seeded run of `nodes` nodes on one ledger; a failure prints how to replay it.
pub fn run_seed(seed: u64, nodes: usize) -> Report {
    let run = std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, nodes);
        let retire_at = if seed.is_multiple_of(2) {
            RETIRE_AT
        } else {
            STEPS
        };
        for step in 0..=STEPS {
            if nodes > 1 && step == retire_at {
                sim.retire(1);
            }
            if step < STEPS {
                sim.step();
            }
        }
        sim.drain();
        sim.check_end();
        sim.report()
    });
    match run {
        Ok(report) => report,
        Err(panic) => {
            eprintln!(
                "simulator: seed {seed} ({nodes} nodes) failed; replay it with \
                 PAYDVM_SIM_SEED={seed}"
            );
            std::panic::resume_unwind(panic)
        }
    }
}

impl Sim {
    /// Faults off; everything pending delivered; time moves a minute a round; refunds that wait
    /// for float or for the operator get it.
    fn drain(&mut self) {
        self.faults_on = false;
        let mut quiet = 0;
        for _ in 0..MAX_DRAIN_ROUNDS {
            while let Some(p) = self.world.next(&mut self.rng, super::Faults { on: false }) {
                self.reach(&p);
                self.input(p.input, None);
                self.check_always();
            }
            self.operator_answers();
            self.now += 60_000;
            for n in 0..self.nodes {
                self.act_as(n);
                self.input(super::Input::ClockTicked, None);
                self.check_always();
            }
            self.follow();
            let open = self
                .node
                .store
                .state()
                .jobs()
                .any(|j| !j.state.is_terminal())
                || self
                    .node
                    .store
                    .state()
                    .refunds()
                    .any(|r| !r.state.is_closed());
            let waiting = !self.world.pending.is_empty() || !self.world.in_flight.is_empty();
            quiet = if open || waiting { 0 } else { quiet + 1 };
            if quiet >= 2 {
                return;
            }
        }
    }

    /// What an operator does about refunds that wait: float where the asset is short, a retry
    /// where the attempts ran out.
    fn operator_answers(&mut self) {
        self.follow();
        let waiting: Vec<(String, String)> = self
            .node
            .store
            .state()
            .refunds()
            .filter(|r| matches!(r.state, RefundState::Due | RefundState::Failed))
            .filter_map(|r| Some((r.refund.to_string(), r.deferred.clone()?)))
            .collect::<Vec<_>>();
        let mut waiting = waiting;
        waiting.sort();
        for (refund, why) in waiting {
            if why.contains("float add lightning") {
                self.float(Asset::Lightning, 100_000);
            } else if why.contains("float add mint") {
                self.float(mint(), 100_000);
            } else if why.contains("waiting for the operator") {
                let request = OperatorRequest {
                    id: super::hex(&format!("retry:{refund}:{}", self.now))[..16].to_owned(),
                    note: "sim operator".into(),
                    action: OperatorAction::RefundRetry { refund },
                };
                self.input(super::Input::OperatorAsked(request), None);
            }
        }
    }

    fn report(&mut self) -> Report {
        self.follow();
        let mut nodes_of_job: HashMap<&JobId, BTreeSet<usize>> = HashMap::new();
        for ((job, _), by) in &self.world.runs {
            nodes_of_job.entry(job).or_default().extend(by);
        }
        let on_two = nodes_of_job.values().filter(|n| n.len() > 1).count();
        self.world.stats.jobs_run_on_two_nodes = on_two as u64;
        let (events, head) = self.node.store.head();
        Report {
            seed: self.seed,
            events,
            head: format!("{head:?}"),
            stats: format!("{:?}", self.world.stats),
        }
    }
}

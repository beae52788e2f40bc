//! A shell for tests: the decider over an in-memory ledger, with replies "rendered" as
//! deterministic effect ids, groups applied all or nothing, and the `Written` input after every
//! write, the way `node::core` does it, minus signing, SQL and spawning.

use paydvm_ledger::{JobId, Ledger, LedgerState, Msat, Pubkey, UnixMs};
use paydvm_policies::Policy;
use sha2::{Digest, Sha256};

use super::{
    record_notice, record_reply, Action, Decider, Decision, Input, JobRequest, Notice, Rails, Reply,
};
use crate::job::{InputKind, Job, JobInput, JobParam};

/// What one input (and the `Written` that followed its write) came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub replies: Vec<Reply>,
    pub notices: Vec<Notice>,
    pub actions: Vec<Action>,
    /// Groups the ledger refused (their actions were taken back).
    pub refused: usize,
    pub error: Option<String>,
    /// For operator requests.
    pub operator_refused: Option<String>,
}

pub struct Harness {
    pub decider: Decider,
    pub ledger: Ledger,
    pub now: u64,
    rendered: u64,
}

pub const POLICY: &str = r#"
[quote]
expiry_secs = 600
[[pricing.kind]]
kind = 5050
mode = "fixed"
amount_msat = 10000
[[pricing.kind]]
kind = 5001
mode = "free"
[payments]
overpayment = "refund"
refund_min_msat = 1000
[payments.late]
grace_secs = 300
after_grace = "refund"
[failures]
max_attempts = 2
then = "refund"
on_cancel = "refund"
"#;

pub fn rails() -> Rails {
    Rails {
        offered: vec![5050, 5001],
        invoices: false,
        lightning_refunds: Some(Msat::from_msat(10_000)),
        ecash_refunds: true,
        resend_after_ms: 30_000,
        shared: Vec::new(),
    }
}

impl Harness {
    pub fn new(rails: Rails) -> Harness {
        Harness::with_policy(POLICY, rails)
    }

    pub fn with_policy(policy: &str, rails: Rails) -> Harness {
        let policy = Policy::from_toml_str(policy, "test").expect("test policy");
        Harness {
            decider: Decider::new(policy, rails),
            ledger: Ledger::new(),
            now: 1_700_000_000_000,
            rendered: 0,
        }
    }

    pub fn state(&self) -> &LedgerState {
        self.ledger.state()
    }

    /// Decides `input` at the harness's time and applies what was decided.
    /// A new run: the decider starts afresh (same policy and rails), the ledger stays, and the
    /// open jobs' `requests` come back as the node's start-up hands them over.
    pub fn restart(&mut self, requests: Vec<JobRequest>) -> Outcome {
        let (policy, rails) = (self.decider.policy().clone(), self.decider.rails().clone());
        self.decider = Decider::new(policy, rails);
        self.input(Input::Restarted {
            requests,
            legacy_sources: vec![],
        })
    }

    pub fn input(&mut self, input: Input) -> Outcome {
        let decision = self
            .decider
            .decide(self.ledger.state(), UnixMs(self.now), input);
        let mut out = Outcome::default();
        self.apply(decision, &mut out);
        let written = self
            .decider
            .decide(self.ledger.state(), UnixMs(self.now), Input::Written);
        self.apply(written, &mut out);
        out
    }

    fn apply(&mut self, decision: Decision, out: &mut Outcome) {
        out.error = out.error.take().or(decision.error);
        out.operator_refused = out.operator_refused.take().or(decision.refused);
        for mut group in decision.groups {
            let mut events = std::mem::take(&mut group.events);
            for reply in &group.replies {
                let id = self.render(&reply.job);
                let payload = format!("{{\"reply\":{:?}}}", format!("{:?}", reply.kind));
                let at = UnixMs(self.now);
                let effect = record_reply(&mut events, reply, &id, payload, at).unwrap();
                events.push(effect);
            }
            for notice in &group.notices {
                let id = self.render(&notice.subscription);
                let payload = format!("{{\"notice\":{:?}}}", format!("{:?}", notice.kind));
                events.push(record_notice(&id, notice, payload, UnixMs(self.now)).unwrap());
            }
            match self.ledger.prepare(&events) {
                Ok(prepared) if !prepared.appended.is_empty() => {
                    out.replies.extend(group.replies);
                    out.notices.extend(group.notices);
                    out.actions.extend(group.actions);
                }
                Ok(_) => self.decider.forget(&group.actions),
                Err(_) => {
                    out.refused += 1;
                    self.decider.forget(&group.actions);
                }
            }
        }
        out.actions.extend(decision.actions);
    }

    fn render(&mut self, job: &impl std::fmt::Display) -> String {
        self.rendered += 1;
        hex(&format!("reply:{job}:{}", self.rendered))
    }
}

/// 64 hex characters derived from `seed`: event ids and pubkeys for tests.
pub fn hex(seed: &str) -> String {
    Sha256::digest(seed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn job_id(seed: &str) -> JobId {
    JobId::new(hex(&format!("job:{seed}"))).unwrap()
}

pub fn customer(seed: &str) -> Pubkey {
    Pubkey::new(hex(&format!("customer:{seed}"))).unwrap()
}

/// A request for `kind` by `who` with `mode` as its `mode` param (the test executors' switch).
pub fn request(seed: &str, who: &str, kind: u16) -> JobRequest {
    let job = job_id(seed);
    let customer = customer(who);
    JobRequest {
        job: job.clone(),
        customer: customer.clone(),
        work: Job {
            id: job.to_string(),
            kind,
            customer: customer.to_string(),
            inputs: vec![JobInput {
                data: format!("input of {seed}"),
                kind: InputKind::Text,
                relay: None,
                marker: None,
            }],
            params: vec![JobParam {
                key: "mode".into(),
                values: vec!["echo".into()],
            }],
            output: None,
        },
        bid: None,
        refund_to: None,
        stored: Some(format!("{{\"request\":\"{seed}\"}}")),
    }
}

/// The attempt a `RunExecutor` in `actions` starts for `job`, if any.
pub fn started(actions: &[Action], job: &JobId) -> Option<u32> {
    actions.iter().find_map(|a| match a {
        Action::RunExecutor { work, attempt } if work.id == job.as_str() => Some(*attempt),
        _ => None,
    })
}

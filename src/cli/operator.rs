//! `paydvm refund …` and `paydvm float add`: the operator's actions on money (see
//! [`crate::operator`]). A running node is asked through its control socket; a stopped node's
//! ledger is written directly, under the same single-instance lock `paydvm run` holds.

use std::fmt::Write;

use anyhow::{bail, Context};
use paydvm_ledger::store::Durability;
use paydvm_ledger::{LedgerStore, RefundRecord, StoreOptions, UnixMs};
use serde::Serialize;

use super::{ledger_file, output, EXIT_ERROR, EXIT_OK};
use crate::config::{LedgerPlace, Node};
use crate::ledger_handle::LedgerHandle;
use crate::node::{control, ledger_open, now_ms};
use crate::operator::{OperatorAction, OperatorReply, OperatorRequest};

/// Sends `action` with `note` to the node `node` configures (or applies it to the stopped
/// node's ledger) and prints the answer. Exit 1 when it is refused.
pub fn run(node: &Node, action: OperatorAction, note: &str) -> anyhow::Result<u8> {
    let base = node.local_base();
    let request = OperatorRequest {
        id: hex::encode(rand::random::<[u8; 16]>()),
        note: note.to_owned(),
        action,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let asked = runtime
        .block_on(control::send(&base, &request))
        .with_context(|| format!("asking the node on {}", node.ledger))?;
    let (reply, via) = match asked {
        Some(reply) => (reply, "the running node"),
        None => (apply_offline(node, &request)?, "the ledger (node stopped)"),
    };
    let verdict = if reply.ok { "done" } else { "refused" };
    output::print(&format!("{verdict} by {via}: {}\n", reply.message))?;
    Ok(if reply.ok { EXIT_OK } else { EXIT_ERROR })
}

/// Under the locks `paydvm run` takes (the lock file; for a database its advisory lock too).
fn apply_offline(node: &Node, request: &OperatorRequest) -> anyhow::Result<OperatorReply> {
    if let Some(path) = node.ledger.file().filter(|p| !p.exists()) {
        bail!("no ledger at {}", path.display());
    }
    let _locks = ledger_open::claim(node, false)?;
    let options = StoreOptions::everything(Durability::Full);
    let mut store = LedgerHandle::open(&node.ledger, &options)
        .with_context(|| format!("opening {}", node.ledger))?;
    let event = match request.event(store.state(), UnixMs(now_ms())) {
        Ok(event) => event,
        Err(why) => return Ok(OperatorReply::refused(why)),
    };
    let what = event.body.type_name();
    let reply = match store.append(&event) {
        Ok(_) => OperatorReply::ok(format!(
            "recorded {what} (request {}); the node acts on it when it starts",
            request.id
        )),
        Err(e) => OperatorReply::refused(format!("the ledger refused it: {e}")),
    };
    store.close()?;
    Ok(reply)
}

#[derive(Debug, Serialize)]
struct OpenRefund<'a> {
    refund: &'a str,
    job: Option<&'a str>,
    state: &'static str,
    amount_msat: u64,
    asset: Option<String>,
    attempts: u32,
    waiting_because: Option<&'a str>,
    what_to_do: &'static str,
}

/// `paydvm refund list`: every refund not yet paid or written off, with why it waits and what
/// the operator can do. Read-only; safe while the node runs.
pub fn list(ledger: &LedgerPlace, json: bool) -> anyhow::Result<u8> {
    let store = ledger_file::open_existing(ledger)?;
    let mut open: Vec<&RefundRecord> = store
        .state()
        .refunds()
        .filter(|r| !r.state.is_closed())
        .collect();
    open.sort_by(|a, b| a.refund.as_str().cmp(b.refund.as_str()));
    let rows: Vec<OpenRefund> = open.iter().map(|r| row(r)).collect();
    if json {
        output::print_json(&rows)?;
        return Ok(EXIT_OK);
    }
    let mut text = String::new();
    if rows.is_empty() {
        text.push_str("no open refunds\n");
    }
    for r in &rows {
        let _ = writeln!(
            text,
            "{}  {}  {} msat from {}  attempts {}\n  waits: {}\n  do: {}",
            r.refund,
            r.state,
            r.amount_msat,
            r.asset.as_deref().unwrap_or("(decided when routed)"),
            r.attempts,
            r.waiting_because.unwrap_or("(being paid or looked up)"),
            r.what_to_do
        );
    }
    output::print(&text)?;
    Ok(EXIT_OK)
}

fn row(r: &RefundRecord) -> OpenRefund<'_> {
    use paydvm_ledger::RefundState::*;
    OpenRefund {
        refund: r.refund.as_str(),
        job: r.job.as_ref().map(|j| j.as_str()),
        state: r.state.as_str(),
        amount_msat: r.amount.as_msat(),
        asset: r.asset.as_ref().map(|a| a.to_string()),
        attempts: r.attempts,
        waiting_because: r.deferred.as_deref(),
        what_to_do: match r.state {
            Due | Failed => "paydvm refund retry | reroute | write-off",
            InFlight | Unknown => {
                "wait: it is looked up; after checking the wallet, paydvm refund resolve"
            }
            Settled | WrittenOff => "nothing",
        },
    }
}

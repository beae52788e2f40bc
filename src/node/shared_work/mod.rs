//! Shared execution (`execute_on = "any_node"`): the attempts of such an offer go through the
//! PostgreSQL ledger's `work` table (`paydvm_ledger_pg::WorkQueue`) instead of the serving
//! node's own tasks, and any node on the database with the offer runs them, serving or
//! standing by, each attempt claimed with a lease.
//!
//! ```text
//! serving node: core ─RunExecutor─► desk.submit ─► work row ─┐
//!   every node: runner ─claim (lease)─► executor ─► finish ◄─┘ (renews while it runs)
//! serving node: desk.collect ─► Command::ExecFinished ─► core (ledgered once, as always)
//! ```
//!
//! Money and the ledger stay with the serving node alone: it decides, writes and publishes;
//! the others only compute. A runner that dies stops renewing, and the attempt goes to another
//! node once its lease has passed. The job and its outcome travel sealed with the service key
//! (`seal`): the database holds neither in clear, and a row nobody with the key wrote does not
//! open.

mod desk;
mod runner;
mod seal;

pub use desk::WorkDesk;
pub use runner::{Runner, HAND_BACK_WITHIN};

use crate::config::{ExecuteOn, Offer};

/// The kinds of `offers` run by any node, with their leases and concurrency.
pub fn shared_offers(offers: &[Offer]) -> runner::Offers {
    offers
        .iter()
        .filter_map(|o| match o.execute_on {
            ExecuteOn::AnyNode { lease } => Some((o.kind, lease, o.max_concurrency)),
            ExecuteOn::ThisNode => None,
        })
        .collect()
}

/// This process among the nodes, as `claimed_by` and `finished_by` name it.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

/// The serving node's shared execution: its desk (what the core queues) and the kinds whose
/// attempts go through it.
pub struct SharedExecution {
    pub desk: WorkDesk,
    pub kinds: Vec<u16>,
}

/// The work table's place and the shared offers, when there is anything to share: `None` when
/// no offer is shared or the ledger is a file (which the config refuses with a shared offer).
fn shared_place(
    place: &crate::config::LedgerPlace,
    offers: &[Offer],
) -> anyhow::Result<Option<(paydvm_ledger_pg::PgLocation, runner::Offers)>> {
    let crate::config::LedgerPlace::Postgres(url) = place else {
        return Ok(None);
    };
    let shared = shared_offers(offers);
    if shared.is_empty() {
        return Ok(None);
    }
    Ok(Some((url.location()?, shared)))
}

/// The serving node's: opens the work table of `place`, starts the desk the core queues its
/// shared attempts on and a runner on `executors`.
pub async fn start_serving(
    place: &crate::config::LedgerPlace,
    offers: &[Offer],
    executors: std::sync::Arc<crate::executor::Executors>,
    keys: &nostr_sdk::prelude::Keys,
) -> anyhow::Result<Option<(SharedExecution, Runner)>> {
    let Some((location, shared)) = shared_place(place, offers)? else {
        return Ok(None);
    };
    let queue = paydvm_ledger_pg::WorkQueue::open(&location)
        .await
        .map_err(|e| anyhow::anyhow!("opening the shared work table on {location}: {e}"))?;
    let kinds = shared.iter().map(|(kind, _, _)| *kind).collect();
    let runner = Runner::start(queue.clone(), executors, shared, keys.clone(), node_name());
    let desk = WorkDesk::start(queue, keys.clone());
    Ok(Some((SharedExecution { desk, kinds }, runner)))
}

/// A standby's runner. It opens the work table once the database answers (a standby waits
/// through a database that is down).
pub fn standby_runner(
    place: &crate::config::LedgerPlace,
    offers: &[Offer],
    executors: std::sync::Arc<crate::executor::Executors>,
    keys: &nostr_sdk::prelude::Keys,
) -> anyhow::Result<Option<Runner>> {
    let Some((location, shared)) = shared_place(place, offers)? else {
        return Ok(None);
    };
    Ok(Some(Runner::start_when_open(
        location,
        executors,
        shared,
        keys.clone(),
        node_name(),
    )))
}

//! What the core does while its ledger cannot be trusted to keep what it writes: the file was
//! deleted or replaced, one of its files cannot be written (immutable `-shm`, read-only
//! filesystem), or a write failed (disk full). See `node::ledger_watch` for how faults are
//! found.
//!
//! While faulted the core takes no paid work: it decides nothing, so no quote goes out and no
//! executor starts. Commands that would change the ledger (requests, payments, executor
//! outcomes, refund news, the run's announcements: they are handed over once per run, so a
//! dropped set would not be announced until the next start) are parked in arrival order,
//! together with the inputs of the batch whose write failed; queries are answered from memory
//! and operator requests are refused.
//! Every tick (after a back-off of 1 s doubling up to 60 s) the core looks again:
//! - files writable again (or the failed write was a passing fault): the parked commands are
//!   decided and written; if the write fails again the back-off grows;
//! - the ledger deleted: the open connection still reads it, so a consistent copy is written
//!   back to its path (`Store::backup_to`), the store is reopened on it, and work resumes;
//! - the path names another file (a restored backup, a new empty ledger): the node's own ledger
//!   is saved next to it once (`<ledger>.orphaned-<ms>`) and the node stays faulted until an
//!   operator restarts it with the ledger they choose.
//!
//! Nothing touches SQLite while a file is not writable: a write to the mapped `-shm` of an
//! immutable file raises SIGBUS.
//!
//! A PostgreSQL ledger has no file to watch: only a failed write faults it (the server down or
//! restarting, a connection cut, another writer's append). The same parking and back-off apply,
//! and each retry simply writes again; the server keeps its own files.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paydvm_ledger::store::checkpointer::MayTouch;
use paydvm_ledger::store::Store;
use paydvm_ledger::StoreOptions;
use paydvm_ledger::{LedgerError, LedgerStore};
use tracing::{error, info, warn};

use super::{Command, Core};
use crate::ledger_handle::LedgerHandle;
use crate::node::decide::Input;
use crate::node::ledger_watch::{LedgerFault, LedgerWatch};
use crate::operator::OperatorReply;

/// The first pause before looking again after a fault; doubled after each failed attempt.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// How often the ERROR line is repeated while the fault lasts.
const REMIND_EVERY: Duration = Duration::from_secs(300);
/// Commands kept while faulted; past this they are dropped (a request comes again from the
/// relays at the next start, an interrupted executor runs again).
const MAX_PARKED: usize = 10_000;

/// The current fault, as others may read it (readiness checks, status): `None` when healthy.
pub type FaultReport = Arc<Mutex<Option<String>>>;

/// Set once the node must stop at once, without a clean shutdown, and why: the store no longer
/// matches its database (`LedgerError::OutOfStep`: a write whose answer was lost landed after
/// all). Memory lacks that write, so nothing more may be decided on it; a start reads the
/// ledger afresh, as after a crash.
pub type StopOrder = tokio::sync::watch::Receiver<Option<String>>;

/// A command kept for later, or an input of a batch whose write failed.
pub(super) enum Parked {
    Command(Command),
    Input(Input),
}

/// The fault state of the core's ledger.
pub(super) struct FaultGuard {
    /// `None` for a database ledger: only failed writes fault it.
    watch: Option<LedgerWatch>,
    fault: Option<LedgerFault>,
    parked: VecDeque<Parked>,
    dropped: u64,
    since: Option<Instant>,
    next_try: Instant,
    pause: Duration,
    said_at: Option<Instant>,
    /// Set while the store is swapped out for a restore: how to open it again.
    reopen: Option<StoreOptions>,
    orphan_saved: bool,
    report: FaultReport,
    stop: tokio::sync::watch::Sender<Option<String>>,
}

impl FaultGuard {
    pub(super) fn new(watch: Option<LedgerWatch>) -> FaultGuard {
        FaultGuard {
            watch,
            fault: None,
            parked: VecDeque::new(),
            dropped: 0,
            since: None,
            next_try: Instant::now(),
            pause: FIRST_PAUSE,
            said_at: None,
            reopen: None,
            orphan_saved: false,
            report: Arc::new(Mutex::new(None)),
            stop: tokio::sync::watch::channel(None).0,
        }
    }

    /// What the file watch finds wrong now (nothing to watch for a database).
    fn check(&self) -> Result<(), LedgerFault> {
        self.watch.as_ref().map_or(Ok(()), LedgerWatch::check)
    }

    /// For a ledger file: whether its checkpoint thread may touch it now (its file is the one
    /// opened and writable, and the core is not faulted; see `paydvm_ledger::store::checkpointer`).
    fn may_touch(&self) -> Option<MayTouch> {
        let watch = self.watch.clone()?;
        let report = Arc::clone(&self.report);
        Some(Box::new(move || {
            let healthy = report.lock().is_ok_and(|fault| fault.is_none());
            healthy && watch.check().is_ok()
        }))
    }

    /// The ledger file, when it is one.
    fn path(&self) -> Option<PathBuf> {
        self.watch.as_ref().map(|w| w.path().to_path_buf())
    }

    pub(super) fn faulted(&self) -> bool {
        self.fault.is_some()
    }

    pub(super) fn report(&self) -> FaultReport {
        Arc::clone(&self.report)
    }

    pub(super) fn stop_order(&self) -> StopOrder {
        self.stop.subscribe()
    }

    /// True when SQLite must not be touched again (closing would write to a file that cannot
    /// be written; see the module doc).
    pub(super) fn unsafe_to_close(&self) -> bool {
        self.reopen.is_some() || matches!(self.fault, Some(LedgerFault::NotWritable { .. }))
    }

    /// Enters (or stays in) the fault, saying so at ERROR when it is new or changed, and again
    /// every [`REMIND_EVERY`].
    pub(super) fn enter(&mut self, fault: LedgerFault) {
        let now = Instant::now();
        let changed = self.fault.as_ref() != Some(&fault);
        let remind = self.said_at.is_none_or(|t| now - t >= REMIND_EVERY);
        if changed || remind {
            let waited = self.since.map_or(0, |s| (now - s).as_secs());
            error!(
                parked = self.parked.len(),
                faulted_for_s = waited,
                "LEDGER FAULT: {fault}; the node takes no paid work until the ledger can be \
                 written again (see docs/operations.md, Runbook)"
            );
            self.said_at = Some(now);
        }
        if let Ok(mut report) = self.report.lock() {
            *report = Some(fault.to_string());
        }
        self.since.get_or_insert(now);
        self.fault = Some(fault);
        self.next_try = now + self.pause;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }

    fn clear(&mut self) {
        if let Some(fault) = self.fault.take() {
            let waited = self.since.map_or(0, |s| s.elapsed().as_secs());
            info!(
                waiting = self.parked.len(),
                faulted_for_s = waited,
                "ledger writable again ({fault} is over); resuming the work that waited"
            );
        }
        if let Ok(mut report) = self.report.lock() {
            *report = None;
        }
        self.since = None;
        self.said_at = None;
        self.orphan_saved = false;
    }

    /// A write landed: the next fault starts from the first pause again.
    pub(super) fn written(&mut self) {
        if self.fault.is_none() {
            self.pause = FIRST_PAUSE;
        }
    }

    fn park(&mut self, parked: Parked) {
        if self.parked.len() >= MAX_PARKED {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                warn!(
                    dropped = self.dropped,
                    "ledger fault: too many commands waiting; dropping (requests come again \
                     from the relays at the next start)"
                );
            }
            return;
        }
        self.parked.push_back(parked);
    }
}

impl Core {
    /// Is the ledger still there and writable? Enters the fault when not. Checked before each
    /// batch of commands and before each write.
    pub(super) fn ledger_ok(&mut self) -> bool {
        match self.guard.check() {
            Ok(()) => true,
            Err(fault) => {
                self.guard.enter(fault);
                false
            }
        }
    }

    /// A ledger file is checkpointed, and its WAL synced, on threads of their own, off the
    /// core's commits (`durable` holds back what a batch releases until its sync).
    pub(super) fn io_aside(&mut self) {
        let (Some(may_touch), LedgerHandle::Sqlite(store)) =
            (self.guard.may_touch(), &mut self.store)
        else {
            return;
        };
        if let Err(e) = store.checkpoint_in_background(may_touch) {
            warn!("the ledger's WAL is checkpointed inside commits: no checkpoint thread: {e}");
        }
        let commands = self.commands.clone();
        let wake = Box::new(move || {
            // Full: the core has commands to take and releases what is synced before them.
            let _ = commands.try_send(Command::Synced);
        });
        if let Err(e) = store.sync_in_background(wake, self.before_sync.clone()) {
            warn!("the ledger's WAL is synced inside commits: no sync thread: {e}");
        }
    }

    /// Orders the node to stop at once (the first reason given is kept).
    pub(super) fn order_stop(&mut self, order: String) {
        self.guard.stop.send_if_modified(|stop| {
            let first = stop.is_none();
            stop.get_or_insert(order);
            first
        });
    }

    /// A write failed: the batch's inputs wait, first in line, and the core is faulted. A store
    /// out of step with its database also orders the node to stop (see [`StopOrder`]); the core
    /// stays faulted meanwhile (the store refuses every write).
    pub(super) fn write_failed(&mut self, error: &LedgerError, inputs: Vec<Input>) {
        self.park_inputs(inputs);
        if let LedgerError::OutOfStep(_) = error {
            self.order_stop(format!("{error} (a start reads the ledger afresh)"));
        }
        self.guard
            .enter(LedgerFault::WriteFailed(error.to_string()));
    }

    /// The inputs of a batch that was not written wait first in line.
    pub(super) fn park_inputs(&mut self, inputs: Vec<Input>) {
        for input in inputs.into_iter().rev() {
            self.guard.parked.push_front(Parked::Input(input));
        }
    }

    /// One command while faulted; false when the core must stop.
    pub(super) fn handle_faulted(&mut self, command: Command) -> bool {
        match command {
            Command::Tick => self.try_recover(),
            Command::Job { job, reply } => {
                // From memory only: reading the file may touch what cannot be written.
                let _ = reply.send(self.store.state().job(&job).cloned());
            }
            Command::Operator { request, reply } => {
                let why = self
                    .guard
                    .fault
                    .as_ref()
                    .map_or(String::new(), |f| f.to_string());
                let _ = reply.send(OperatorReply::refused(format!(
                    "the ledger is faulted ({why}); nothing changed (request {})",
                    request.id
                )));
            }
            command @ (Command::Shutdown { .. }
            | Command::OutboxDrained
            | Command::Announcements { .. }
            | Command::WhenQuoted { .. }) => return self.handle_now(command),
            command if self.closing.is_some() => {
                tracing::debug!("shutting down; ignoring {command:?}")
            }
            command => self.guard.park(Parked::Command(command)),
        }
        true
    }

    /// When the back-off allows: look at the files again and resume if the ledger can be
    /// written.
    fn try_recover(&mut self) {
        if Instant::now() < self.guard.next_try || self.closing.is_some() {
            return;
        }
        if self.guard.reopen.is_some() && !self.reopen_store() {
            return;
        }
        match self.guard.check() {
            Ok(()) => self.resume(),
            Err(LedgerFault::Missing(path)) => {
                if self.restore(&path) {
                    self.resume();
                }
            }
            Err(fault @ LedgerFault::Replaced(_)) => {
                self.save_orphan();
                self.guard.enter(fault);
            }
            Err(fault) => self.guard.enter(fault),
        }
    }

    /// Decides and writes what waited; a failed write faults the core again (with the inputs).
    fn resume(&mut self) {
        self.guard.clear();
        let parked = std::mem::take(&mut self.guard.parked);
        for p in parked {
            match p {
                Parked::Command(command) => {
                    if !self.handle(command) {
                        break;
                    }
                }
                Parked::Input(input) => {
                    self.batch.inputs.push(input.clone());
                    self.input(input);
                }
            }
        }
        self.flush();
    }

    /// Writes the ledger the node holds open back to its deleted path and reopens it there.
    fn restore(&mut self, path: &Path) -> bool {
        let tmp = sibling(path, "restoring");
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = self.store.backup_to(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            self.guard.enter(LedgerFault::NotWritable {
                file: tmp,
                reason: format!("cannot write the ledger back: {e}"),
            });
            return false;
        }
        // Close the old connection before the copy takes the path: a new connection must not
        // find the old one's `-wal`/`-shm` under the same name.
        let options = *self.store.options();
        let old = match Store::open_in_memory().map(LedgerHandle::from) {
            Ok(placeholder) => std::mem::replace(&mut self.store, placeholder),
            Err(e) => return self.restore_failed(path, e.to_string()),
        };
        let _ = old.close();
        self.guard.reopen = Some(options);
        if let Err(e) = std::fs::rename(&tmp, path) {
            return self.restore_failed(path, format!("renaming {}: {e}", tmp.display()));
        }
        error!(ledger = %path.display(), "the deleted ledger file was written back from the open copy");
        self.reopen_store()
    }

    fn restore_failed(&mut self, path: &Path, reason: String) -> bool {
        self.guard.enter(LedgerFault::NotWritable {
            file: path.to_path_buf(),
            reason,
        });
        false
    }

    /// Opens the store again at the ledger path after a restore.
    fn reopen_store(&mut self) -> bool {
        let Some(options) = self.guard.reopen else {
            return true;
        };
        let Some(path) = self.guard.path() else {
            return true;
        };
        let opened = Store::open_with(&path, &options)
            .map_err(|e| e.to_string())
            .and_then(|store| {
                let watch = LedgerWatch::new(&path).map_err(|e| e.to_string())?;
                Ok((store, watch))
            });
        match opened {
            Ok((store, watch)) => {
                self.store = LedgerHandle::Sqlite(store);
                self.guard.watch = Some(watch);
                self.guard.reopen = None;
                let _ = crate::node::ledger_marker::mark(&path, super::now_ms());
                self.io_aside();
                // The copy holds every commit, synced: what waited for the old file's sync goes.
                self.settle()
            }
            Err(reason) => self.restore_failed(&path, format!("reopening: {reason}")),
        }
    }

    /// The path names another file: keep the node's own ledger next to it, once.
    fn save_orphan(&mut self) {
        let Some(path) = self.guard.path().filter(|_| !self.guard.orphan_saved) else {
            return;
        };
        let dest = sibling(&path, &format!("orphaned-{}", super::now_ms()));
        match self.store.backup_to(&dest) {
            Ok(()) => {
                self.guard.orphan_saved = true;
                error!(
                    saved = %dest.display(),
                    "the ledger path names another file now; this node's ledger was saved \
                     beside it. Stop the node and keep the right one (docs/operations.md)"
                );
            }
            Err(e) => warn!(dest = %dest.display(), "cannot save this node's ledger: {e}"),
        }
    }

    /// At shutdown while the ledger file is gone: one last try to write it back, so that the
    /// records do not vanish with the process.
    pub(super) fn rescue_at_close(&mut self) {
        let parked = self.guard.parked.len();
        if parked > 0 {
            warn!(
                parked,
                "shutting down with work that waited for the ledger: it is not recorded"
            );
        }
        if let Some(LedgerFault::Missing(path)) = self.guard.fault.clone() {
            if self.guard.reopen.is_none() {
                self.restore(&path);
            }
        }
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard_over(ledger: &Path) -> FaultGuard {
        std::fs::write(ledger, b"").unwrap();
        FaultGuard::new(Some(LedgerWatch::new(ledger).unwrap()))
    }

    /// The checkpoint thread keeps away while the core is faulted and while the file is not the
    /// one opened; a write to the mapped `-shm` of a file that cannot be written is SIGBUS.
    #[test]
    fn the_checkpoint_thread_may_touch_the_ledger_only_while_the_core_may() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("paydvm.db");
        let mut guard = guard_over(&ledger);
        let may_touch = guard.may_touch().expect("a ledger file");
        assert!(may_touch());
        guard.enter(LedgerFault::WriteFailed("disk full".into()));
        assert!(!may_touch(), "faulted");
        guard.clear();
        assert!(may_touch(), "the fault is over");

        // Made while the ledger still exists, so it cannot reuse its inode.
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        std::fs::remove_file(&ledger).unwrap();
        assert!(!may_touch(), "the file was deleted");
        std::fs::rename(&other, &ledger).unwrap();
        assert!(!may_touch(), "the path names another file");

        assert!(
            FaultGuard::new(None).may_touch().is_none(),
            "no file, no thread"
        );
    }
}

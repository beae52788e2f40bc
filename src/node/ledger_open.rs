//! Claiming and opening the node's ledger at start, a file or a database.
//!
//! A file ledger: refuse a fresh file over one that existed (`ledger_marker`), take the lock
//! file (`ledger_lock`), check its files are writable and watch them (`ledger_watch`), mark it.
//! A PostgreSQL ledger has no file to guard: the node takes the lock file of its `state_dir`
//! (its Cashu wallet and control socket live there) and a session advisory lock on the
//! database (`paydvm_ledger_pg::NodeLock`), so a second node on the same database is refused.
//! The server keeps its own files: no watch, no marker.
//!
//! A standby (`paydvm run --standby`) does not give up on a held lock: it tries again every
//! [`STANDBY_POLL`] until the holder stops or dies, then starts as any node does, from the
//! ledger. A standby of a node that takes ecash must share the holder's node directory
//! (`state_dir` for a database): the Cashu wallet's proofs and the pending swaps live there, not
//! in the ledger.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use paydvm_ledger::store::Durability;
use paydvm_ledger::StoreOptions;
use paydvm_ledger_pg::{NodeLock, NodeLockError};
use tracing::{info, warn};

use super::ledger_lock::{LedgerLock, LockError};
use super::ledger_watch::{self, LedgerWatch};
use super::{ledger_marker, now_ms};
use crate::config::{LedgerPlace, Node};
use crate::ledger_handle::LedgerHandle;

/// What keeps other writers out while the node runs; released after the core closed the
/// ledger.
pub struct LedgerLocks {
    _file: LedgerLock,
    database: Option<NodeLock>,
}

impl LedgerLocks {
    /// Resolves if the database lock is lost while the node runs (its session ended or stopped
    /// answering): a standby may hold it by then, so the node must stop writing. A file lock
    /// cannot be lost; then this never resolves.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let database = self.database.as_ref().map(NodeLock::lost);
        async move {
            match database {
                Some(lost) => lost.await,
                None => std::future::pending().await,
            }
        }
    }
}

/// How often a standby tries the locks again.
pub const STANDBY_POLL: Duration = Duration::from_millis(500);

/// How often a standby repeats that the ledger database cannot be reached.
const UNREACHABLE_REMIND: Duration = Duration::from_secs(60);

/// Takes the node's locks as soon as they are free, trying every `poll`: the file lock and for
/// a database its advisory lock. A database that cannot be reached (down, restarting) is waited
/// for like a held lock, with a warning now and then; any other error ends the wait.
/// Cancel-safe: nothing is held between tries.
pub async fn claim_when_free(
    node: &Node,
    new_ledger: bool,
    poll: Duration,
) -> anyhow::Result<LedgerLocks> {
    // Whether it waited at all (then taking over is said), and whether it said a node holds it.
    let (mut waited, mut said_held) = (false, false);
    let mut unreachable_said: Option<std::time::Instant> = None;
    loop {
        let node_now = node.clone();
        let tried = tokio::task::spawn_blocking(move || claim(&node_now, new_ledger))
            .await
            .context("the lock task")?;
        match tried {
            Ok(locks) => {
                if waited {
                    info!(ledger = %node.ledger, "the ledger is free: taking over");
                }
                return Ok(locks);
            }
            Err(e) if is_held(&e) => {
                if !said_held {
                    info!(ledger = %node.ledger, "standing by: another node holds the ledger");
                    said_held = true;
                }
                waited = true;
                tokio::time::sleep(poll).await;
            }
            Err(e) if is_unreachable(&e) => {
                if unreachable_said.is_none_or(|at| at.elapsed() >= UNREACHABLE_REMIND) {
                    warn!(
                        ledger = %node.ledger,
                        "standing by: {e:#}; trying again until it answers"
                    );
                    unreachable_said = Some(std::time::Instant::now());
                }
                waited = true;
                tokio::time::sleep(poll).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `claim` failed because the ledger database cannot be reached for now.
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NodeLockError>()
        .is_some_and(NodeLockError::unreachable)
}

/// Whether `claim` failed only because another node holds a lock.
fn is_held(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<LockError>(), Some(LockError::Held { .. }))
        || matches!(
            e.downcast_ref::<NodeLockError>(),
            Some(NodeLockError::Held(_))
        )
}

/// Takes the node's locks: the file lock, and for a database its advisory lock too.
pub fn claim(node: &Node, new_ledger: bool) -> anyhow::Result<LedgerLocks> {
    let base = node.local_base();
    let database = match &node.ledger {
        LedgerPlace::File(path) => {
            ledger_marker::refuse_fresh_over_old(path, new_ledger)?;
            None
        }
        LedgerPlace::Postgres(url) => {
            if let Some(dir) = base.parent() {
                private_dir(dir)?;
            }
            Some(url)
        }
    };
    let file = LedgerLock::acquire(&base)?;
    let database = match database {
        Some(url) => Some(NodeLock::acquire(&url.location()?)?),
        None => None,
    };
    Ok(LedgerLocks {
        _file: file,
        database,
    })
}

/// SQLite's page cache for the node's connections. The store's default (256 MiB, for bulk
/// appends) became most of a busy node's resident memory as the file grew (334 MiB after
/// 100 000 jobs); a node appends a few groups at a time, and a page missing from this cache is
/// read from the kernel's file cache.
pub const NODE_PAGE_CACHE_KIB: u32 = 16 * 1024;

/// Opens the ledger keeping only open work in memory (ended jobs are read back when named;
/// start-up loads the newest snapshot and replays only the events after it), waiting for the
/// disk at every write. Returns the file's watch for a file ledger.
pub fn open(place: &LedgerPlace) -> anyhow::Result<(LedgerHandle, Option<LedgerWatch>)> {
    let options = StoreOptions::bounded(Durability::Full).page_cache_kib(NODE_PAGE_CACHE_KIB);
    match place {
        LedgerPlace::File(path) => {
            // Refuse now rather than die of SIGBUS on the first write (see `ledger_watch`).
            ledger_watch::check_writable(path)?;
            let store = LedgerHandle::open(place, &options)
                .with_context(|| format!("opening the ledger {}", path.display()))?;
            let watch = LedgerWatch::new(path)
                .with_context(|| format!("reading the ledger file {}", path.display()))?;
            ledger_marker::mark(path, now_ms())
                .with_context(|| format!("writing {}", ledger_marker::path_for(path).display()))?;
            Ok((store, Some(watch)))
        }
        LedgerPlace::Postgres(url) => {
            let store = LedgerHandle::open(place, &options)
                .with_context(|| format!("opening the ledger {url}"))?;
            info!(ledger = %url, "ledger on PostgreSQL");
            Ok((store, None))
        }
    }
}

/// `state_dir`, created owner-only if missing (it holds the Cashu wallet's proofs).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating node.state_dir {}", dir.display()))
}

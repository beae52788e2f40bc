//! Claiming and opening the node's ledger at start, a file or a database.
//!
//! A file ledger: refuse a fresh file over one that existed (`ledger_marker`), take the lock
//! file (`ledger_lock`), check its files are writable and watch them (`ledger_watch`), mark it.
//! A PostgreSQL ledger has no file to guard: the node takes the lock file of its `state_dir`
//! (its Cashu wallet and control socket live there) and a session advisory lock on the
//! database (`paydvm_ledger_pg::NodeLock`), so a second node on the same database is refused.
//! The server keeps its own files: no watch, no marker.

use std::path::Path;

use anyhow::Context;
use paydvm_ledger::store::Durability;
use paydvm_ledger::StoreOptions;
use paydvm_ledger_pg::NodeLock;
use tracing::info;

use super::ledger_lock::LedgerLock;
use super::ledger_watch::{self, LedgerWatch};
use super::{ledger_marker, now_ms};
use crate::config::{LedgerPlace, Node};
use crate::ledger_handle::LedgerHandle;

/// What keeps other writers out while the node runs; released after the core closed the
/// ledger.
pub struct LedgerLocks {
    _file: LedgerLock,
    _database: Option<NodeLock>,
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
        _database: database,
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

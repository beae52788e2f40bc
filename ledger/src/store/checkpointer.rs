//! WAL checkpoints on a thread of their own, off the commit path.
//!
//! By default SQLite checkpoints inside whichever commit makes the WAL pass 1 000 pages: that
//! commit copies the pages into the database file and fsyncs it before it returns. In the node
//! that commit is the core's, so every few dozen batches the one thread that decides all money
//! also does the checkpoint (15 % of its time in the 50-customer benchmark, `benchmarks.md`).
//! [`Checkpointer`] does it instead on its own thread and connection, with `PASSIVE`
//! checkpoints (they never wait for or block the writer); the writer's own automatic checkpoint
//! stays as a backstop at [`BACKSTOP_PAGES`], so the WAL stays bounded even if this thread falls
//! behind or is told to keep away.
//!
//! `may_touch` is asked before each checkpoint: a checkpoint writes the mapped `-shm` file, and a
//! write to a mapping of a file that can no longer be written raises SIGBUS (the node answers
//! "no" while its ledger is faulted; see the node's `ledger_watch`).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::LedgerError;

/// How long the thread sleeps between checkpoints while the ledger is being written.
pub const PERIOD: Duration = Duration::from_millis(100);
/// The longest sleep: reached by doubling while there is nothing to copy (an idle node).
const IDLE_PERIOD: Duration = Duration::from_secs(2);
/// The writer's own automatic checkpoint, kept as a backstop: only a WAL this large (about
/// 64 MiB) makes a commit checkpoint by itself.
pub const BACKSTOP_PAGES: u32 = 16_384;

/// What the thread has done, for tests, benchmarks and status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints that copied at least one page.
    pub checkpoints: u64,
    /// Pages copied from the WAL into the database file.
    pub pages: u64,
    /// Times `may_touch` said no.
    pub held_off: u64,
    /// Checkpoints that failed (the next one tries again).
    pub failures: u64,
    pub last_failure: Option<String>,
}

/// The checkpoint thread of one ledger file; stopped (and joined) when dropped.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<CheckpointStats>>,
}

/// Whether the file may be touched now.
pub type MayTouch = Box<dyn Fn() -> bool + Send>;

impl Checkpointer {
    /// Opens a second connection to `path` and starts checkpointing it every [`PERIOD`].
    pub fn start(path: &str, may_touch: MayTouch) -> Result<Checkpointer, LedgerError> {
        // Never creates: a ledger that vanished meanwhile is not recreated empty here.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // This connection never writes rows: keep it from checkpointing on its own schedule.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let stats = Arc::new(Mutex::new(CheckpointStats::default()));
        let (stop, stopped) = mpsc::channel();
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || run(conn, stopped, may_touch, shared))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> CheckpointStats {
        lock(&self.stats).clone()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once; it finishes the checkpoint under way.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    conn: Connection,
    stopped: mpsc::Receiver<()>,
    may_touch: MayTouch,
    stats: Arc<Mutex<CheckpointStats>>,
) {
    let mut pause = PERIOD;
    let mut backfilled = 0;
    loop {
        match stopped.recv_timeout(pause) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if !may_touch() {
            lock(&stats).held_off += 1;
            pause = IDLE_PERIOD;
            continue;
        }
        let result = checkpoint(&conn);
        let mut s = lock(&stats);
        pause = match result {
            Ok(now) => {
                let pages = copied(backfilled, now);
                backfilled = now;
                if pages == 0 {
                    (pause * 2).clamp(PERIOD, IDLE_PERIOD)
                } else {
                    s.checkpoints += 1;
                    s.pages += pages;
                    PERIOD
                }
            }
            Err(e) => {
                s.failures += 1;
                s.last_failure = Some(e.to_string());
                IDLE_PERIOD
            }
        };
    }
}

/// One `PASSIVE` checkpoint: copies every frame no reader still needs; returns how many frames
/// of the WAL are now in the database file (SQLite counts from the WAL's last restart).
fn checkpoint(conn: &Connection) -> Result<u64, rusqlite::Error> {
    let backfilled: i64 =
        conn.query_row("PRAGMA main.wal_checkpoint(PASSIVE)", [], |r| r.get(2))?;
    Ok(u64::try_from(backfilled).unwrap_or(0))
}

/// Pages one checkpoint copied, from the backfill count before and after it; a smaller count
/// than before means the writer restarted the WAL in between, so all of `now` is new.
fn copied(before: u64, now: u64) -> u64 {
    now.checked_sub(before).unwrap_or(now)
}

fn lock(stats: &Mutex<CheckpointStats>) -> std::sync::MutexGuard<'_, CheckpointStats> {
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

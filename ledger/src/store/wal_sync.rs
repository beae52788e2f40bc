//! Syncing the WAL on a thread of its own, behind the commits (pipelined group commit).
//!
//! With `synchronous = FULL` every commit waits for an fsync of the WAL before it returns: about
//! 200 µs on the node's disk, during which the one thread that decides all money does nothing.
//! [`WalSyncer`] lets that thread commit with `synchronous = NORMAL` (the WAL frames reach the
//! kernel, not yet the disk) and go on deciding the next batch while this thread fsyncs the WAL
//! file. The caller asks for a sync after each commit ([`WalSyncer::request`], a ticket) and
//! holds back every side effect of that commit until [`WalSyncer::synced`] reaches its ticket.
//!
//! Why a sync of our own file handle is enough: in WAL mode a commit writes only the WAL, and
//! `fsync` flushes the file (the inode), whichever descriptor asks. A sync that starts after a
//! commit returned covers that commit. A checkpoint (on any connection, `NORMAL` included) syncs
//! the WAL before it copies frames into the database file and syncs that file before the WAL is
//! reused, so a frame that left the WAL is durable in the database. What the disk holds after a
//! power cut is therefore always a prefix of the commits, and every commit whose effects were
//! released is in it. A process crash loses nothing committed (the kernel has the frames).
//!
//! A failed fsync is not retried: after one, the kernel may have dropped the pages it could not
//! write, so nothing committed since the last good sync can be trusted to be on disk. The
//! syncer stops and [`WalSyncer::synced`] reports the failure for good.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Called when a sync finished or failed (the node wakes its core with it).
pub type Wake = Box<dyn Fn() + Send>;

/// Run before every sync, by tests: a hook that blocks holds the sync back, one that fails
/// stands for a failed fsync. `None` in production.
pub type BeforeSync = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

#[derive(Debug, Default)]
struct Progress {
    /// Tickets handed out: one per commit asked to be synced.
    requested: u64,
    /// Every ticket up to this one is on disk.
    synced: u64,
    /// The fsync that failed; set once, for good.
    failed: Option<String>,
    stop: bool,
}

struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sync thread of one WAL file; stopped (and joined) when dropped.
pub struct WalSyncer {
    shared: Arc<Shared>,
    wal: Arc<File>,
    before_sync: Option<BeforeSync>,
    thread: Option<JoinHandle<()>>,
}

impl WalSyncer {
    /// Starts syncing `wal` (the ledger's `-wal` file, opened by the caller) whenever asked.
    pub fn start(
        wal: File,
        wake: Wake,
        before_sync: Option<BeforeSync>,
    ) -> std::io::Result<WalSyncer> {
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            changed: Condvar::new(),
        });
        let wal = Arc::new(wal);
        let (thread_shared, thread_wal) = (Arc::clone(&shared), Arc::clone(&wal));
        let hook = before_sync.clone();
        let thread = std::thread::Builder::new()
            .name("ledger-wal-sync".into())
            .spawn(move || run(&thread_shared, &thread_wal, &wake, hook.as_ref()))?;
        Ok(WalSyncer {
            shared,
            wal,
            before_sync,
            thread: Some(thread),
        })
    }

    /// Asks for everything committed so far to be synced; returns its ticket. Call it after the
    /// commit returned.
    pub fn request(&self) -> u64 {
        let mut progress = self.shared.lock();
        progress.requested += 1;
        let ticket = progress.requested;
        drop(progress);
        self.shared.changed.notify_all();
        ticket
    }

    /// Every ticket up to the answer is on disk; an error once a sync failed (for good).
    pub fn synced(&self) -> Result<u64, String> {
        let progress = self.shared.lock();
        match &progress.failed {
            Some(why) => Err(why.clone()),
            None => Ok(progress.synced),
        }
    }

    /// Syncs the WAL on the caller's thread, now: everything committed before the call is on
    /// disk when it returns `Ok`. A failure is kept for good, as the thread's would be.
    pub fn sync_now(&self) -> Result<(), String> {
        self.synced()?;
        let result = sync(&self.wal, self.before_sync.as_ref());
        if let Err(why) = &result {
            self.shared.lock().failed.get_or_insert(why.clone());
        }
        result
    }
}

impl Drop for WalSyncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One fsync of the WAL, after the test hook if there is one; a failure as it is reported.
fn sync(wal: &File, before_sync: Option<&BeforeSync>) -> Result<(), String> {
    let synced = match before_sync {
        Some(hook) => hook().and_then(|()| wal.sync_all()),
        None => wal.sync_all(),
    };
    synced.map_err(|e| format!("syncing the WAL failed: {e}"))
}

fn run(shared: &Shared, wal: &File, wake: &Wake, before_sync: Option<&BeforeSync>) {
    loop {
        let target = {
            let mut progress = shared.lock();
            while !progress.stop && progress.requested == progress.synced {
                progress = shared
                    .changed
                    .wait(progress)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if progress.stop {
                return;
            }
            // Every ticket handed out so far belongs to a commit that returned already.
            progress.requested
        };
        let result = sync(wal, before_sync);
        let failed = {
            let mut progress = shared.lock();
            match result {
                Ok(()) => progress.synced = progress.synced.max(target),
                Err(why) => {
                    progress.failed.get_or_insert(why);
                }
            }
            progress.failed.is_some()
        };
        wake();
        if failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn temp_file() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("ledger-wal")).unwrap();
        (dir, file)
    }

    #[test]
    fn a_ticket_is_synced_only_after_a_sync_that_started_after_it() {
        let (_dir, file) = temp_file();
        let hold = Arc::new(AtomicBool::new(true));
        let held = Arc::clone(&hold);
        let hook: BeforeSync = Arc::new(move || {
            while held.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        });
        let syncer = WalSyncer::start(file, Box::new(|| {}), Some(hook)).unwrap();
        assert_eq!(syncer.request(), 1);
        assert_eq!(syncer.request(), 2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            syncer.synced(),
            Ok(0),
            "nothing synced while the sync is held"
        );
        hold.store(false, Ordering::SeqCst);
        wait_for("both tickets", || syncer.synced() == Ok(2));
        assert_eq!(syncer.request(), 3);
        wait_for("the third ticket", || syncer.synced() == Ok(3));
    }

    #[test]
    fn a_failed_sync_is_reported_for_good_and_nothing_after_it_counts_as_synced() {
        let (_dir, file) = temp_file();
        let fail = Arc::new(AtomicBool::new(false));
        let failing = Arc::clone(&fail);
        let hook: BeforeSync = Arc::new(move || match failing.load(Ordering::SeqCst) {
            true => Err(std::io::Error::other("injected")),
            false => Ok(()),
        });
        let woken = Arc::new(AtomicBool::new(false));
        let wakes = Arc::clone(&woken);
        let wake: Wake = Box::new(move || wakes.store(true, Ordering::SeqCst));
        let syncer = WalSyncer::start(file, wake, Some(hook)).unwrap();
        syncer.request();
        wait_for("the first ticket", || syncer.synced() == Ok(1));
        assert!(woken.load(Ordering::SeqCst), "told when a sync finished");
        fail.store(true, Ordering::SeqCst);
        syncer.request();
        wait_for("the failure", || syncer.synced().is_err());
        let why = syncer.synced().unwrap_err();
        assert!(why.contains("injected"), "{why}");
        fail.store(false, Ordering::SeqCst);
        syncer.request();
        std::thread::sleep(Duration::from_millis(50));
        assert!(syncer.synced().is_err(), "a failure is never forgotten");
        assert!(syncer.sync_now().is_err());
    }
}

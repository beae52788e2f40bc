//! A last word before SIGBUS kills the process. SQLite maps the ledger's `-shm` file (the WAL
//! index) into memory; when the kernel can no longer back a page of it (the file was made
//! immutable, its disk filled up or went away) the next access raises SIGBUS, and the process
//! used to die with no log line at all. The node checks that the `-wal`/`-shm` files stay
//! writable (`node::ledger_watch`) and stops writing before that happens; this handler covers
//! what the check cannot see in time. It writes one fixed line to stderr (only
//! async-signal-safe calls: `write`, `signal`, `raise`) and dies of SIGBUS as before, so a
//! supervisor still sees the signal.

use std::path::Path;
use std::sync::OnceLock;

/// The line written on SIGBUS, prepared before the handler is installed (no allocation in the
/// handler).
static MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();

/// Installs the SIGBUS handler for a node whose ledger is `ledger`. Called once, at start.
pub fn explain_sigbus(ledger: &Path) {
    let text = format!(
        "paydvm: fatal SIGBUS: a memory-mapped file could not be accessed, most likely the \
         ledger's WAL index {}-shm (made immutable, disk full, or its filesystem gone); the \
         node stops. Check it (lsattr, df) and start again: every committed ledger event is \
         on disk.\n",
        ledger.display()
    );
    if MESSAGE.set(text.into_bytes()).is_err() {
        return; // Installed already.
    }
    // SAFETY: `on_sigbus` only makes async-signal-safe calls and reads `MESSAGE`, which is set
    // above and never changed again.
    unsafe {
        libc::signal(
            libc::SIGBUS,
            on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

extern "C" fn on_sigbus(_: libc::c_int) {
    if let Some(message) = MESSAGE.get() {
        // SAFETY: write(2), signal(2) and raise(3) are async-signal-safe; the buffer lives for
        // the whole program.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
        }
    }
    // SAFETY: as above. Back to the default action, then die of the same signal.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        libc::raise(libc::SIGBUS);
    }
}

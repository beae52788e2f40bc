//! `paydvm ledger copy <from> <to>`: move a ledger between an SQLite file and PostgreSQL (either
//! way, or file to file), verifying both ends. The destination must be new (a file that does
//! not exist) or empty (a database without ledger events); the source is only read, so stop the
//! node that writes it first (a copy of a running ledger is the history up to its head when the
//! copy started, not after). The node's ecash goes with it (`copy_ecash`): the Cashu wallet and the
//! pending swaps beside a ledger file, or in the ledger's database.

use anyhow::{bail, Context};
use paydvm_ledger::copy::copy_log;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};

use super::{copy_ecash, ledger_file, output, EXIT_OK, EXIT_VERIFY_FAILED};
use crate::config::LedgerPlace;
use crate::ledger_handle::LedgerHandle;

/// Opens the source read-only, keeping only open work in memory (a copy reads events by seq).
pub(super) fn source_options() -> StoreOptions {
    StoreOptions::bounded(Durability::Normal).read_only()
}

/// The destination keeps only open work too, and waits for the disk at every batch.
pub(super) fn dest_options() -> StoreOptions {
    StoreOptions::bounded(Durability::Full)
}

pub fn run(from: &str, to: &str) -> anyhow::Result<u8> {
    let (from, to) = (LedgerPlace::from_arg(from)?, LedgerPlace::from_arg(to)?);
    if let LedgerPlace::File(f) = &from {
        ledger_file::ensure_exists(f)?;
    }
    // A place is named by its Display: a URL without its password.
    let source = LedgerHandle::open(&from, &source_options())
        .with_context(|| format!("cannot open {from}"))?;
    if let Some(path) = to.file().filter(|p| p.exists()) {
        bail!("{} already exists; give a new file name", path.display());
    }
    // Checked before the ledger is copied: the destination must hold no ecash.
    let ecash = copy_ecash::beside(&from, &to)?;
    let dest = LedgerHandle::open(&to, &dest_options())
        .with_context(|| format!("cannot create the destination {to}"))?;
    let code = copy_and_verify(&source, dest)?;
    match ecash {
        Some(ecash) if code == EXIT_OK => {
            let said = ecash.run().context(
                "the ledger was copied and verifies, but its ecash was not copied \
                 (remove the destination and copy again)",
            )?;
            output::print(&said)?;
            Ok(code)
        }
        _ => Ok(code),
    }
}

fn copy_and_verify<S: LedgerStore, D: LedgerStore>(source: &S, mut dest: D) -> anyhow::Result<u8> {
    let copied = copy_log(source, &mut dest).context("copying")?;
    let (from, to) = (source.verify(), dest.verify());
    dest.close().context("closing the copy")?;
    match (from, to) {
        (Ok(a), Ok(b)) if a.head_hash == b.head_hash && a.events == b.events => {
            output::print(&format!(
                "copied {copied} events; both ends verify, head {}\n",
                b.head_hash
            ))?;
            Ok(EXIT_OK)
        }
        (Ok(a), Ok(b)) => {
            eprintln!(
                "the copy verifies but differs: source head {} ({} events), copy {} ({})",
                a.head_hash, a.events, b.head_hash, b.events
            );
            Ok(EXIT_VERIFY_FAILED)
        }
        (Err(e), _) => {
            eprintln!("the source does not verify: {e}");
            Ok(EXIT_VERIFY_FAILED)
        }
        (_, Err(e)) => {
            eprintln!("the copy does not verify: {e}");
            Ok(EXIT_VERIFY_FAILED)
        }
    }
}

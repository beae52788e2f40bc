//! `paydvm ledger copy <from> <to>`: move a ledger between an SQLite file and PostgreSQL (either
//! way, or file to file), verifying both ends. The destination must be new (a file that does
//! not exist) or empty (a database without ledger events); the source is only read, so stop the
//! node that writes it first (a copy of a running ledger is the history up to its head when the
//! copy started, not after).

use std::path::PathBuf;

use anyhow::{bail, Context};
use paydvm_ledger::copy::copy_log;
use paydvm_ledger::store::Store;
use paydvm_ledger::{Durability, LedgerStore, StoreOptions};
use paydvm_ledger_pg::PgStore;

use super::{ledger_file, output, EXIT_OK, EXIT_VERIFY_FAILED};

/// Where a ledger is: a file, or a `postgres://` URL.
enum Place {
    File(PathBuf),
    Postgres(String),
}

impl Place {
    fn parse(text: &str) -> Place {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Place::Postgres(text.to_string())
        } else {
            Place::File(PathBuf::from(text))
        }
    }
}

/// Opens the source read-only, keeping only open work in memory (a copy reads events by seq).
fn source_options() -> StoreOptions {
    StoreOptions::bounded(Durability::Normal).read_only()
}

/// The destination keeps only open work too, and waits for the disk at every batch.
fn dest_options() -> StoreOptions {
    StoreOptions::bounded(Durability::Full)
}

pub fn run(from: &str, to: &str) -> anyhow::Result<u8> {
    match (Place::parse(from), Place::parse(to)) {
        (Place::File(f), to) => {
            ledger_file::ensure_exists(&f)?;
            let source = Store::open_with(&f, &source_options())
                .with_context(|| format!("cannot open ledger file {}", f.display()))?;
            into(&source, to)
        }
        (Place::Postgres(url), to) => {
            // The URL may hold a password: name the place without it.
            let shown = paydvm_ledger_pg::PgLocation::parse(&url)
                .map(|l| l.to_string())
                .unwrap_or_else(|_| "the source database".into());
            let source = PgStore::open(&url, &source_options())
                .with_context(|| format!("cannot open {shown}"))?;
            into(&source, to)
        }
    }
}

fn into<S: LedgerStore>(source: &S, to: Place) -> anyhow::Result<u8> {
    match to {
        Place::File(path) => {
            if path.exists() {
                bail!("{} already exists; give a new file name", path.display());
            }
            let dest = Store::open_with(&path, &dest_options())
                .with_context(|| format!("cannot create ledger file {}", path.display()))?;
            copy_and_verify(source, dest)
        }
        Place::Postgres(url) => {
            let dest = PgStore::open(&url, &dest_options())
                .context("cannot open the destination database")?;
            copy_and_verify(source, dest)
        }
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

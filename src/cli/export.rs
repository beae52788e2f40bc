//! `paydvm ledger export <file | postgres-url>`: the log as JSON lines on stdout.

use std::io::{self, BufWriter};

use anyhow::Context;
use paydvm_ledger::LedgerStore;

use super::{ledger_file, output::PipeAware, EXIT_OK};
use crate::config::LedgerPlace;

pub fn run(place: &LedgerPlace) -> anyhow::Result<u8> {
    let store = ledger_file::open_to_query(place)?;
    let mut out = PipeAware::new(BufWriter::with_capacity(1 << 16, io::stdout().lock()));
    match store.export(&mut out) {
        Ok(_) => Ok(EXIT_OK),
        // The reader (e.g. `head`) had enough: stopping early is what it asked for.
        Err(_) if out.broken() => Ok(EXIT_OK),
        Err(e) => Err(e).with_context(|| format!("exporting {place}")),
    }
}

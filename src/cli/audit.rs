//! `paydvm ledger audit <file | postgres-url> <reference>` and `paydvm audit`.

use anyhow::{bail, Context};
use paydvm_ledger::LedgerStore;

use super::{ledger_file, output, timeline, EXIT_OK};
use crate::config::LedgerPlace;

pub fn run(place: &LedgerPlace, reference: &str, json: bool) -> anyhow::Result<u8> {
    let store = ledger_file::open_to_query(place)?;
    let trail = store
        .audit(reference)
        .with_context(|| format!("auditing {reference:?} in {place}"))?;
    let Some(trail) = trail else {
        bail!(
            "no event in {place} mentions {reference:?} (tried job id, request/result event id, \
             payment reference, refund id and refund lookup)"
        );
    };
    if json {
        output::print_json(&trail)?;
    } else {
        output::print(&timeline::render_trail(&trail))?;
    }
    Ok(EXIT_OK)
}

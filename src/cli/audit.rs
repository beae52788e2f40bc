//! `paydvm ledger audit <file> <reference>`.

use std::path::Path;

use anyhow::{bail, Context};

use super::{ledger_file, output, timeline, EXIT_OK};

pub fn run(path: &Path, reference: &str, json: bool) -> anyhow::Result<u8> {
    let store = ledger_file::open_existing(path)?;
    let trail = store
        .audit(reference)
        .with_context(|| format!("auditing {reference:?} in {}", path.display()))?;
    let Some(trail) = trail else {
        bail!(
            "no event in {} mentions {reference:?} (tried job id, request/result event id, \
             payment reference, refund id and refund lookup)",
            path.display()
        );
    };
    if json {
        output::print_json(&trail)?;
    } else {
        output::print(&timeline::render_trail(&trail))?;
    }
    Ok(EXIT_OK)
}

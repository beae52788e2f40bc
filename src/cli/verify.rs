//! `paydvm ledger verify <file | postgres-url>`.

use paydvm_ledger::store::{verify_file, VerifyFailure, VerifyReport};
use paydvm_ledger::{LedgerError, LedgerStore};
use serde::Serialize;
use serde_json::json;

use super::{ledger_file, output, EXIT_ERROR, EXIT_OK, EXIT_VERIFY_FAILED};
use crate::config::LedgerPlace;

#[derive(Serialize)]
struct ReportJson<'a> {
    ok: bool,
    file: String,
    events: u64,
    jobs: usize,
    refunds: usize,
    accounts: usize,
    payment_refs: usize,
    head_hash: &'a str,
}

pub fn run(place: &LedgerPlace, json: bool) -> anyhow::Result<u8> {
    let verified = match place {
        LedgerPlace::File(path) => {
            ledger_file::ensure_exists(path)?;
            verify_file(path)
        }
        // Verify copies the rows into a scratch SQLite file and runs the same verifier.
        LedgerPlace::Postgres(_) => ledger_file::open_to_query(place)?.verify(),
    };
    match verified {
        Ok(report) => {
            if json {
                output::print_json(&ReportJson {
                    ok: true,
                    file: place.to_string(),
                    events: report.events,
                    jobs: report.jobs,
                    refunds: report.refunds,
                    accounts: report.accounts,
                    payment_refs: report.payment_refs,
                    head_hash: &report.head_hash,
                })?;
            } else {
                output::print(&format!("{}\n", summary(&report)))?;
            }
            Ok(EXIT_OK)
        }
        Err(failure) => {
            eprintln!("ledger verify FAILED: {failure}");
            if json {
                output::print_json(&json!({
                    "ok": false,
                    "file": place.to_string(),
                    "failure": failure_json(&failure),
                    "message": failure.to_string(),
                }))?;
            }
            Ok(exit_code(&failure))
        }
    }
}

/// The one-line success summary.
pub fn summary(r: &VerifyReport) -> String {
    format!(
        "ledger OK: {} events, {} jobs, {} refunds, {} accounts, {} payment refs, head {}",
        r.events, r.jobs, r.refunds, r.accounts, r.payment_refs, r.head_hash
    )
}

/// 2 when the file's contents are wrong; 1 when it could not be read at all.
fn exit_code(failure: &VerifyFailure) -> u8 {
    match failure {
        VerifyFailure::Storage(LedgerError::Storage(e)) => match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                EXIT_VERIFY_FAILED
            }
            _ => EXIT_ERROR,
        },
        VerifyFailure::Storage(LedgerError::NotFound(_) | LedgerError::Io(_)) => EXIT_ERROR,
        _ => EXIT_VERIFY_FAILED,
    }
}

fn failure_json(failure: &VerifyFailure) -> serde_json::Value {
    match failure {
        VerifyFailure::Event { seq, reason } => {
            json!({ "kind": "event", "seq": seq, "reason": reason })
        }
        VerifyFailure::Projection { table, key, reason } => {
            json!({ "kind": "projection", "table": table, "key": key, "reason": reason })
        }
        VerifyFailure::Invariant(reason) => json!({ "kind": "invariant", "reason": reason }),
        VerifyFailure::Head(reason) => json!({ "kind": "head", "reason": reason }),
        VerifyFailure::Storage(e) => json!({ "kind": "storage", "reason": e.to_string() }),
    }
}

//! `paydvm ledger sample <file> [--jobs N]`: a new ledger file filled with realistic jobs, and
//! commands to explore it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::{JobId, LedgerEvent};

use paydvm::cli::{output, EXIT_OK};
use paydvm_testkit::workload::{JobGroup, JobType, Workload};

/// Fixed, so the same command always writes the same ledger.
const SAMPLE_SEED: u64 = 0x5EED_5A4D_91E0_0001;
/// Jobs per transaction.
const JOBS_PER_BATCH: usize = 1_000;

/// One job picked to show a job type.
struct Example {
    job: String,
    state: &'static str,
}

pub fn run(path: &Path, jobs: u32) -> anyhow::Result<u8> {
    create_new(path)?;
    let filled = fill(path, jobs as usize);
    let (events, examples) = match filled {
        Ok(done) => done,
        Err(e) => {
            // The file is ours and half written; leaving it would only block the next attempt.
            remove_ledger(path);
            return Err(e);
        }
    };
    output::print(&render_tour(path, jobs, events, &examples))?;
    Ok(EXIT_OK)
}

/// Claim `path` atomically, so an existing file is never opened, let alone written to.
fn create_new(path: &Path) -> anyhow::Result<()> {
    let wal = companion(path, "-wal");
    // SQLite would replay a leftover write-ahead log into the new file; an empty one is harmless.
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        bail!(
            "{} is left over from an earlier ledger; remove it or give another path",
            wal.display()
        );
    }
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "{} already exists; `ledger sample` only creates new ledger files, give another path",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_ledger(path: &Path) {
    // Best effort: the error that brought us here is the one worth reporting.
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(companion(path, suffix));
    }
}

/// Append `jobs` jobs; returns the number of events and one example job per job type.
fn fill(path: &Path, jobs: usize) -> anyhow::Result<(u64, BTreeMap<JobType, Example>)> {
    let mut store = Store::open(path, Durability::Normal)
        .with_context(|| format!("cannot open new ledger file {}", path.display()))?;
    let mut generated = Workload::new(SAMPLE_SEED).every_type_then_mix().take(jobs);
    let mut events = 0u64;
    let mut example_ids: BTreeMap<JobType, String> = BTreeMap::new();
    loop {
        let batch: Vec<JobGroup> = generated.by_ref().take(JOBS_PER_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        let groups: Vec<&[LedgerEvent]> = batch.iter().map(|g| g.events.as_slice()).collect();
        let results = store
            .append_batch(&groups)
            .context("appending the sample jobs")?;
        for (result, g) in results.into_iter().zip(&batch) {
            result.with_context(|| format!("the ledger refused sample job {}", g.job))?;
            events += g.events.len() as u64;
            example_ids
                .entry(g.job_type)
                .or_insert_with(|| g.job.clone());
        }
    }
    let mut examples = BTreeMap::new();
    for (job_type, job) in example_ids {
        let id = JobId::new(job.clone())?;
        let record = store
            .state()
            .job(&id)
            .with_context(|| format!("sample job {job} missing from the ledger state"))?;
        let state = record.state.as_str();
        examples.insert(job_type, Example { job, state });
    }
    store.close().context("closing the sample ledger")?;
    Ok((events, examples))
}

fn render_tour(
    path: &Path,
    jobs: u32,
    events: u64,
    examples: &BTreeMap<JobType, Example>,
) -> String {
    let file = shell_word(&path.display().to_string());
    let label_width = examples.keys().map(|t| t.label().len()).max().unwrap_or(0);
    let state_width = examples.values().map(|e| e.state.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(out, "wrote {jobs} jobs ({events} events) to {file}");
    let _ = writeln!(out);
    let _ = writeln!(out, "one job of each type, with its final state:");
    for (job_type, example) in examples {
        let _ = writeln!(
            out,
            "  {:<label_width$}  job {}…  {:<state_width$}  → paydvm ledger audit {file} {}",
            job_type.label(),
            &example.job[..8],
            example.state,
            example.job,
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "the whole ledger:");
    let _ = writeln!(out, "  paydvm ledger status {file}");
    let _ = writeln!(out, "  paydvm ledger verify {file}");
    out
}

/// `s` as one word for a POSIX shell: as is when that is safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,+=@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn paths_are_quoted_only_when_the_shell_would_split_or_expand_them() {
        assert_eq!(shell_word("/tmp/demo.db"), "/tmp/demo.db");
        assert_eq!(shell_word("my ledger.db"), "'my ledger.db'");
        assert_eq!(shell_word("it's.db"), r"'it'\''s.db'");
        assert_eq!(shell_word("$HOME/x.db"), "'$HOME/x.db'");
    }
}

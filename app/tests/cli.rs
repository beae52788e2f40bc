//! The `paydvm ledger …` commands run as the real binary against ledger files built with the
//! ledger API in a temporary directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use paydvm_ledger::store::{Durability, Store};
use paydvm_ledger::*;
use serde_json::Value;

pub fn paydvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(args)
        .output()
        .expect("run paydvm")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// `paydvm <args> --config <config>`: the exit code and everything it printed.
pub fn paydvm_with_config(config: &Path, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let out = paydvm(&all);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.code().unwrap_or(-1), text)
}

fn ev(k: String, at: u64, body: EventBody) -> LedgerEvent {
    LedgerEvent::new(IdemKey::new(k).unwrap(), UnixMs(at), body)
}

fn job(j: &str) -> JobId {
    JobId::new(j).unwrap()
}

/// received → quote → payment → queued → started, the common start of every job here.
fn paid_and_started(j: &str) -> Vec<LedgerEvent> {
    vec![
        ev(
            format!("recv:{j}"),
            1_700_000_000_000,
            EventBody::JobReceived {
                job: job(j),
                request_event: EventId::new(format!("req-{j}")).unwrap(),
                customer: Pubkey::new("alice").unwrap(),
                kind: 5050,
                request: None,
            },
        ),
        ev(
            format!("quote:{j}"),
            1_700_000_000_001,
            EventBody::QuoteIssued {
                job: job(j),
                amount: Msat::from_msat(10_000),
                expires_at: UnixMs(1_700_000_600_000),
                options: vec![PaymentOption::Invoice {
                    payment_hash: format!("hash-{j}"),
                    bolt11: format!("lnbcrt-{j}"),
                }],
            },
        ),
        ev(
            format!("pay:{j}"),
            1_700_000_000_002,
            EventBody::PaymentReceived(Payment {
                rail: Rail::Invoice,
                asset: Asset::Lightning,
                reference: PaymentRef::new(format!("hash-{j}")).unwrap(),
                linked: vec![],
                amount: Msat::from_msat(10_000),
                fee: Msat::ZERO,
                evidence: None,
                payer: None,
                target: PaymentTarget::Job {
                    job: job(j),
                    booking: JobPayment::Apply { excess: None },
                },
            }),
        ),
        ev(
            format!("queue:{j}"),
            1_700_000_000_003,
            EventBody::JobQueued {
                job: job(j),
                reason: QueueReason::Paid,
            },
        ),
        ev(
            format!("start:{j}:1"),
            1_700_000_000_004,
            EventBody::ProcessingStarted {
                job: job(j),
                attempt: 1,
            },
        ),
    ]
}

fn succeeded(j: &str) -> Vec<LedgerEvent> {
    let mut events = paid_and_started(j);
    events.push(ev(
        format!("result:{j}"),
        1_700_000_000_005,
        EventBody::ResultPublished {
            job: job(j),
            result_event: EventId::new(format!("res-{j}")).unwrap(),
        },
    ));
    events
}

fn failed_and_refunded(j: &str) -> Vec<LedgerEvent> {
    let refund = RefundId::new(format!("{j}:fail")).unwrap();
    let mut events = paid_and_started(j);
    events.extend([
        ev(
            format!("fail:{j}:1"),
            1_700_000_000_005,
            EventBody::ProcessingFailed {
                job: job(j),
                attempt: 1,
                retryable: false,
                reason: "model crashed".into(),
            },
        ),
        ev(
            format!("refund-due:{j}"),
            1_700_000_000_006,
            EventBody::RefundDue {
                job: job(j),
                refund: refund.clone(),
                asset: None,
            },
        ),
        ev(
            format!("refund-start:{j}:1"),
            1_700_000_000_007,
            EventBody::RefundStarted {
                refund: refund.clone(),
                attempt: 1,
                route: RefundRoute {
                    asset: Asset::Lightning,
                    destination: format!("lnbcrt-refund-{j}"),
                    lookup: format!("refund-hash-{j}"),
                    fee_reserve: Msat::ZERO,
                    zap: None,
                },
            },
        ),
        ev(
            format!("refund-settled:{j}"),
            1_700_000_000_008,
            EventBody::RefundSettled {
                refund,
                fee: Msat::from_msat(2),
                fee_paid_by: FeePayer::Operator,
                evidence: None,
                cause: None,
            },
        ),
    ]);
    events
}

/// Jobs a and b succeed (seq 1–12), job c fails and is refunded (seq 13–21).
fn sample_ledger(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("ledger.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    store.append_group(&succeeded("a")).unwrap();
    store.append_group(&succeeded("b")).unwrap();
    store.append_group(&failed_and_refunded("c")).unwrap();
    store.close().unwrap();
    path
}

fn tamper(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn verify_prints_a_one_line_summary_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "verify", arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    for part in [
        "21 events",
        "3 jobs",
        "1 refunds",
        "3 payment refs",
        "head ",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
}

#[test]
fn verify_json_reports_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "verify", "--json", arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["events"], 21);
    assert_eq!(v["jobs"], 3);
    assert_eq!(v["head_hash"].as_str().unwrap().len(), 64);
}

#[test]
fn verify_names_the_tampered_event_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    tamper(
        &path,
        "UPDATE events SET body = replace(body, '10000', '1') WHERE seq = 3",
    );
    let out = paydvm(&["ledger", "verify", arg(&path)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("ledger verify FAILED: event 3"), "{err}");
    assert!(stdout(&out).is_empty());

    let out = paydvm(&["ledger", "verify", "--json", arg(&path)]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["failure"]["kind"], "event");
    assert_eq!(v["failure"]["seq"], 3);
}

#[test]
fn verify_flags_an_edited_projection_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    tamper(
        &path,
        "UPDATE balances SET credits = credits + 1 WHERE account = 'income:revenue'",
    );
    let out = paydvm(&["ledger", "verify", arg(&path)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("projection balances"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_of_a_missing_file_exits_1_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    let out = paydvm(&["ledger", "verify", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!path.exists());
}

#[test]
fn audit_by_job_id_prints_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "audit", arg(&path), "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for part in [
        "job a",
        "state succeeded",
        "timeline (6 events)",
        "job_received",
        "payment_received",
        "10000 msat via invoice, ref hash-a",
        "result_published",
        "Dr liability:job:a  Cr income:revenue",
        "2023-11-14 22:13:20.000Z",
    ] {
        assert!(text.contains(part), "{part:?} missing from\n{text}");
    }
}

#[test]
fn audit_by_payment_hash_as_json_lists_every_event_of_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "audit", "--json", arg(&path), "hash-b"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 6);
    assert_eq!(v["job"]["job"], "b");
    assert_eq!(v["job"]["state"], "succeeded");
    assert_eq!(v["events"][2]["event"]["type"], "payment_received");
}

#[test]
fn audit_by_refund_lookup_finds_the_refunded_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "audit", "--json", arg(&path), "refund-hash-c"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 9);
    assert_eq!(v["job"]["state"], "refunded");
    assert_eq!(v["refunds"][0]["refund"], "c:fail");
    let text = stdout(&paydvm(&["ledger", "audit", arg(&path), "c:fail"]));
    assert!(text.contains("refund c:fail: 10000 msat settled"), "{text}");
}

#[test]
fn audit_of_an_unknown_reference_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "audit", arg(&path), "never-seen"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("no event in") && stderr(&out).contains("never-seen"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn audit_of_a_missing_file_exits_1_without_creating_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let out = paydvm(&["ledger", "audit", arg(&path), "a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!path.exists());
}

#[test]
fn export_writes_one_json_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "export", arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 21);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64 + 1);
        assert!(line["body"]["type"].is_string(), "{line}");
        assert_eq!(line["hash"].as_str().unwrap().len(), 64);
    }
    assert_eq!(lines[2]["body"]["amount"], 10_000);
    assert_eq!(lines[20]["job"], "c");
}

#[test]
fn export_into_a_closed_pipe_stops_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let mut store = Store::open(&path, Durability::Normal).unwrap();
    // Far more output than a pipe buffers, so the writer is still busy when the reader leaves.
    for n in 0..400 {
        store.append_group(&succeeded(&format!("job{n}"))).unwrap();
    }
    store.close().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(["ledger", "export", arg(&path)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"seq\":1,"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn status_counts_jobs_by_state_and_sums_balances() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let out = paydvm(&["ledger", "status", "--json", arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"], 21);
    assert_eq!(v["jobs_total"], 3);
    assert_eq!(v["jobs_by_state"]["succeeded"], 2);
    assert_eq!(v["jobs_by_state"]["refunded"], 1);
    assert_eq!(v["refunds_by_state"]["settled"], 1);
    let revenue = v["system_accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "income:revenue")
        .unwrap();
    assert_eq!(revenue["balance_msat"], 20_000);
    assert_eq!(v["held_by_kind"]["job"]["held_msat"], 0);
    assert!(v.get("accounts").is_none());

    let text = stdout(&paydvm(&["ledger", "status", arg(&path)]));
    assert!(text.contains("succeeded"), "{text}");
    assert!(text.contains("income:revenue"), "{text}");
}

#[test]
fn usage_errors_exit_64_not_the_verify_failure_code() {
    let out = paydvm(&["ledger", "verify"]);
    assert_eq!(out.status.code(), Some(64));
    let out = paydvm(&["ledger", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("audit"));
}

/// The `paydvm …` commands a `ledger sample` tour printed, as argument lists.
fn commands_in(tour: &str) -> Vec<Vec<String>> {
    tour.lines()
        .filter_map(|l| l.split_once("paydvm ").map(|(_, command)| command))
        .map(|command| command.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn sample_creates_a_ledger_that_verifies_and_audits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.db");
    let out = paydvm(&["ledger", "sample", arg(&path), "--jobs", "12"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tour = stdout(&out);
    assert!(tour.contains("wrote 12 jobs"), "{tour}");

    let commands = commands_in(&tour);
    let audits: Vec<&Vec<String>> = commands.iter().filter(|c| c[1] == "audit").collect();
    assert_eq!(
        audits.len(),
        paydvm_testkit::workload::JobType::ALL.len(),
        "{tour}"
    );
    for expected in [
        format!("ledger status {}", arg(&path)),
        format!("ledger verify {}", arg(&path)),
    ] {
        assert!(commands.iter().any(|c| c.join(" ") == expected), "{tour}");
    }

    let out = paydvm(&["ledger", "verify", arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("12 jobs"), "{}", stdout(&out));

    // Each printed command runs as pasted.
    for audit in &audits {
        let args: Vec<&str> = audit.iter().map(String::as_str).collect();
        let out = paydvm(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let job = args.last().unwrap();
        assert!(stdout(&out).starts_with(&format!("job {job} ")), "{args:?}");
    }

    let refunded = tour
        .lines()
        .find(|l| l.contains("refunded after failure"))
        .unwrap_or_else(|| panic!("no refunded job in\n{tour}"));
    let job = refunded.split_whitespace().last().unwrap();
    let out = paydvm(&["ledger", "audit", arg(&path), job]);
    let text = stdout(&out);
    for part in [
        "state refunded",
        "timeline (9 events)",
        "job_received",
        "payment_received",
        "processing_failed",
        "refund_settled",
    ] {
        assert!(text.contains(part), "{part:?} missing from\n{text}");
    }
}

#[test]
fn sample_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_ledger(&dir);
    let before = std::fs::read(&path).unwrap();
    let out = paydvm(&["ledger", "sample", arg(&path)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// `paydvm init` into a temporary directory; returns it and the config's path.
fn initialised_node() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = paydvm(&["init", "--dir", arg(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = dir.path().join("paydvm.toml");
    (dir, config)
}

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn check_config_refuses_a_priced_offer_nothing_can_pay_and_so_does_run() {
    let (dir, config) = initialised_node();
    // The starter node warns: it has no way to be paid yet, and says so.
    let (code, text) = paydvm_with_config(&config, &["check-config"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning:") && text.contains("offer[0]"),
        "{text}"
    );
    assert!(text.contains("nothing can pay"), "{text}");

    edit(&config, "config_problems = \"warn\"", "");
    let (code, text) = paydvm_with_config(&config, &["check-config"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("error:") && text.contains("offer[0]"),
        "{text}"
    );
    assert!(text.contains("kind 5050 costs 10000 msat"), "{text}");
    let (code, text) = paydvm_with_config(&config, &["run"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("offer[0]") && text.contains("nothing can pay"),
        "{text}"
    );
    assert!(!dir.path().join("paydvm.db").exists(), "run started anyway");

    // A wallet is a rail; with it and a whole-sat price there is nothing to report.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "\n[lightning]\nbackend = \"fake\"\n",
    )
    .unwrap();
    let (code, text) = paydvm_with_config(&config, &["check-config"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no problems found"), "{text}");
}

#[test]
fn check_config_names_an_unreachable_wallet_and_mint_and_a_sub_sat_price() {
    let (dir, config) = initialised_node();
    edit(&config, "config_problems = \"warn\"", "");
    let lnbits = format!("http://127.0.0.1:{}", closed_port());
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap()
            + &format!(
                "\n[lightning]\nbackend = \"lnbits\"\nlnbits_url = \"{lnbits}\"\n\
                 lnbits_invoice_key_env = \"PAYDVM_TEST_INVOICE_KEY\"\n"
            ),
    )
    .unwrap();
    let policy = dir.path().join("policy.toml");
    edit(&policy, "amount_msat = 10000", "amount_msat = 10500");
    let mint = format!("http://127.0.0.1:{}", closed_port());
    edit(
        &policy,
        "trusted = []",
        &format!("trusted = [{{ url = \"{mint}\", units = [\"sat\"] }}]"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(["check-config", "--config", arg(&config)])
        .env("PAYDVM_TEST_INVOICE_KEY", "invoicekeysecret")
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("offer[0]") && text.contains("whole sats"),
        "{text}"
    );
    assert!(text.contains("lightning.lnbits_url"), "{text}");
    assert!(
        text.contains("mints.trusted[0]") && text.contains(&mint),
        "{text}"
    );
    assert!(!text.contains("nothing can pay"), "{text}");
    assert!(!text.contains("invoicekeysecret"), "{text}");
    // No admin key: it works, but refunds cannot be paid; said as a note.
    assert!(
        text.contains("note:") && text.contains("lightning.lnbits_admin_key"),
        "{text}"
    );
    assert!(text.contains("cannot pay Lightning refunds"), "{text}");
}

//! Build an honest in-memory store from decoded events, apply ONE decoded tampering to its SQLite
//! tables, and assert that `verify_connection` fails whenever the tampering changed anything.
//!
//! A tampering counts only if SQLite reports a changed row and the new value differs from the old
//! (`UPDATE ... WHERE col IS NOT new`), so no-op edits are skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paydvm_fuzz::Gen;
use paydvm_ledger::store::{verify_connection, Store};
use paydvm_ledger::Ledger;
use rusqlite::types::Value;
use rusqlite::{params, Connection};

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    let groups = 1 + g.below(16);
    let mut ledger = Ledger::new();
    let mut store = Store::open_in_memory().expect("open");
    for _ in 0..groups {
        let group = g.group(&mut ledger);
        if store.append_group(&group).is_ok() {
            ledger
                .prepare(&group)
                .expect("memory refuses what the store accepted");
        }
    }
    let (last, _) = store.head();
    if last == 0 {
        return;
    }
    if let Err(e) = store.verify() {
        panic!("verify refused an honest store: {e}");
    }
    let conn = store.connection();
    let before = dump(conn);
    let Some(what) = tamper(conn, &mut g, last) else {
        return;
    };
    if dump(conn) == before {
        return; // e.g. an UPDATE that wrote an equal value under another type
    }
    if what.contains("changed_since") && changed_since_within_the_quiet_gap(conn, last) {
        return;
    }
    if std::env::var_os("PAYDVM_FUZZ_STATS").is_some() {
        let kind: String = what.chars().take_while(|c| !c.is_ascii_digit()).collect();
        eprintln!("stat tamper {kind}");
        eprintln!("stat events {}", last.min(10));
    }
    if let Ok(report) = verify_connection(conn) {
        panic!("tampering not detected: {what}\nverify said: {report:?}");
    }
});

/// Whether `changed_since` (the head when the `changed` columns were added), as the tampering
/// left it, is a seq no row can tell from the true one: at most the head, below every `changed`
/// value (rows written since the columns exist), and no row has a NULL `changed` (a row from
/// before). Such a store reads back exactly as the honest one, so verify has nothing to refuse.
fn changed_since_within_the_quiet_gap(conn: &Connection, head: u64) -> bool {
    let since: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'changed_since' AND typeof(value) = 'text'",
            [],
            |r| r.get(0),
        )
        .ok();
    let Some(since) = since.and_then(|v| v.parse::<u64>().ok()) else {
        return false;
    };
    let (nulls, first): (i64, Option<i64>) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM jobs WHERE changed IS NULL) \
                  + (SELECT count(*) FROM refunds WHERE changed IS NULL), \
                    (SELECT min(c) FROM (SELECT changed AS c FROM jobs \
                                         UNION ALL SELECT changed FROM refunds))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    nulls == 0 && since <= head && first.is_none_or(|c| since < c as u64)
}

/// Everything stored, to tell a real change from a no-op.
fn dump(conn: &Connection) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for table in [
        "meta",
        "events",
        "postings",
        "payments",
        "refs",
        "jobs",
        "refunds",
        "subscriptions",
        "effects",
        "balances",
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let cols = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(r) = rows.next().unwrap() {
            let mut row = vec![Value::Text(table.to_string())];
            for i in 0..cols {
                row.push(r.get(i).unwrap());
            }
            out.push(row);
        }
    }
    out
}

fn count(conn: &Connection, table: &str) -> usize {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as usize
}

/// Row `k mod count` of `select` (which must end in `LIMIT 1 OFFSET ?1`).
fn nth<T>(
    conn: &Connection,
    table: &str,
    select: &str,
    g: &mut Gen,
    f: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Option<T> {
    let n = count(conn, table);
    if n == 0 {
        return None;
    }
    let k = g.below(n.min(65_536)) as i64;
    conn.query_row(select, [k], f).ok()
}

fn exec(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> bool {
    matches!(conn.execute(sql, p), Ok(n) if n > 0)
}

fn new_int(g: &mut Gen, old: i64) -> i64 {
    match g.byte() % 6 {
        0 => old.wrapping_add(1),
        1 => old.wrapping_sub(1),
        2 => 0,
        3 => -1,
        4 => i64::MAX,
        _ => g.u64() as i64,
    }
}

const ACCOUNTS: &[&str] = &[
    "asset:lightning",
    "income:revenue",
    "expense:fees",
    "liability:unmatched",
    "liability:job:j0",
    "liability:credit:alice",
    "liability:refund:r1",
];

/// Apply one tampering; returns a description if SQLite changed a row.
fn tamper(conn: &Connection, g: &mut Gen, last: u64) -> Option<String> {
    let seq = |g: &mut Gen| 1 + g.below(last.min(65_536) as usize) as i64;
    let kind = g.byte() % 25;
    let done = match kind {
        // One byte of one body: printable ASCII, so the body stays valid UTF-8 (JSON or not).
        0 | 1 => {
            let s = seq(g);
            let body: String = conn
                .query_row("SELECT body FROM events WHERE seq = ?1", [s], |r| r.get(0))
                .ok()?;
            let mut bytes = body.into_bytes();
            let pos = g.below(bytes.len().min(65_536));
            if !bytes.get(pos)?.is_ascii() {
                return None;
            }
            bytes[pos] = 0x20 + g.byte() % 95;
            let new = String::from_utf8(bytes).ok()?;
            exec(
                conn,
                "UPDATE events SET body = ?1 WHERE seq = ?2 AND body IS NOT ?1",
                params![new, s],
            )
            .then(|| format!("event {s} body byte {pos} -> {new}"))
        }
        // A number inside a body, keeping it valid JSON (keys re-sorted by serde_json::Value).
        2 => {
            let s = seq(g);
            let body: String = conn
                .query_row("SELECT body FROM events WHERE seq = ?1", [s], |r| r.get(0))
                .ok()?;
            let mut v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let mut nums = Vec::new();
            collect_numbers(&mut v, &mut nums);
            if let Some(n) = (!nums.is_empty()).then(|| g.below(nums.len())) {
                let old = nums[n].as_u64().unwrap_or(0);
                *nums[n] = serde_json::Value::from(match g.byte() % 4 {
                    0 => old.wrapping_add(1),
                    1 => old.wrapping_sub(1),
                    2 => 0,
                    _ => u64::MAX,
                });
            }
            let new = serde_json::to_string(&v).ok()?;
            exec(
                conn,
                "UPDATE events SET body = ?1 WHERE seq = ?2 AND body IS NOT ?1",
                params![new, s],
            )
            .then(|| format!("event {s} body -> {new}"))
        }
        3 => {
            let s = seq(g);
            exec(conn, "DELETE FROM events WHERE seq = ?1", [s])
                .then(|| format!("delete event {s}"))
        }
        4 => {
            let (a, b) = (seq(g), seq(g));
            let ba: String = conn
                .query_row("SELECT body FROM events WHERE seq = ?1", [a], |r| r.get(0))
                .ok()?;
            let bb: String = conn
                .query_row("SELECT body FROM events WHERE seq = ?1", [b], |r| r.get(0))
                .ok()?;
            if ba == bb {
                return None;
            }
            exec(
                conn,
                "UPDATE events SET body = ?1 WHERE seq = ?2",
                params![bb, a],
            );
            exec(
                conn,
                "UPDATE events SET body = ?1 WHERE seq = ?2",
                params![ba, b],
            );
            Some(format!("swap bodies of events {a} and {b}"))
        }
        // Other columns of an event row.
        5 | 6 => {
            let s = seq(g);
            match g.byte() % 8 {
                0 => {
                    let job = g.pick(&["j0", "j1", "x"]);
                    let v: Option<&str> = if g.byte() % 2 == 0 { None } else { Some(job) };
                    exec(
                        conn,
                        "UPDATE events SET job = ?1 WHERE seq = ?2 AND job IS NOT ?1",
                        params![v, s],
                    )
                    .then(|| format!("event {s} job -> {v:?}"))
                }
                1 => {
                    let t = g.pick(&["job_received", "payment_received", "refund_due", "x"]);
                    exec(
                        conn,
                        "UPDATE events SET type = ?1 WHERE seq = ?2 AND type IS NOT ?1",
                        params![t, s],
                    )
                    .then(|| format!("event {s} type -> {t}"))
                }
                2 => {
                    let old: i64 = conn
                        .query_row("SELECT at FROM events WHERE seq = ?1", [s], |r| r.get(0))
                        .ok()?;
                    let new = new_int(g, old);
                    exec(
                        conn,
                        "UPDATE events SET at = ?1 WHERE seq = ?2 AND at IS NOT ?1",
                        params![new, s],
                    )
                    .then(|| format!("event {s} at -> {new}"))
                }
                3 => {
                    let k = g.pick(&["k1", "k2", "zz", "a b"]);
                    exec(
                        conn,
                        "UPDATE events SET idem_key = ?1 WHERE seq = ?2 AND idem_key IS NOT ?1",
                        params![k, s],
                    )
                    .then(|| format!("event {s} idem_key -> {k}"))
                }
                4 | 5 => {
                    let col = if g.byte() % 2 == 0 {
                        "prev_hash"
                    } else {
                        "hash"
                    };
                    let mut h: Vec<u8> = conn
                        .query_row(
                            &format!("SELECT {col} FROM events WHERE seq = ?1"),
                            [s],
                            |r| r.get(0),
                        )
                        .ok()?;
                    match g.byte() % 3 {
                        0 => h.truncate(31),
                        _ => {
                            let i = g.below(h.len().max(1));
                            let x = g.byte() | 1;
                            if let Some(b) = h.get_mut(i) {
                                *b ^= x;
                            }
                        }
                    }
                    exec(
                        conn,
                        &format!("UPDATE events SET {col} = ?1 WHERE seq = ?2 AND {col} IS NOT ?1"),
                        params![h, s],
                    )
                    .then(|| format!("event {s} {col} changed"))
                }
                _ => {
                    let new = new_int(g, s);
                    exec(
                        conn,
                        "UPDATE events SET seq = ?1 WHERE seq = ?2 AND seq IS NOT ?1",
                        params![new, s],
                    )
                    .then(|| format!("event {s} seq -> {new}"))
                }
            }
        }
        // Postings.
        7 | 8 => {
            let (s, n, amount): (i64, i64, i64) = nth(
                conn,
                "postings",
                "SELECT seq, n, amount FROM postings ORDER BY seq, n LIMIT 1 OFFSET ?1",
                g,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            match g.byte() % 4 {
                0 | 1 => {
                    let new = new_int(g, amount);
                    exec(
                        conn,
                        "UPDATE postings SET amount = ?1 WHERE seq = ?2 AND n = ?3 AND amount IS NOT ?1",
                        params![new, s, n],
                    )
                    .then(|| format!("posting {s}/{n} amount {amount} -> {new}"))
                }
                2 => {
                    let col = if g.byte() % 2 == 0 { "debit" } else { "credit" };
                    let a = g.pick(ACCOUNTS);
                    exec(
                        conn,
                        &format!(
                            "UPDATE postings SET {col} = ?1 WHERE seq = ?2 AND n = ?3 AND {col} IS NOT ?1"
                        ),
                        params![a, s, n],
                    )
                    .then(|| format!("posting {s}/{n} {col} -> {a}"))
                }
                _ => exec(
                    conn,
                    "DELETE FROM postings WHERE seq = ?1 AND n = ?2",
                    params![s, n],
                )
                .then(|| format!("delete posting {s}/{n}")),
            }
        }
        9 => {
            let s = 1 + g.below(last.min(65_535) as usize + 1) as i64;
            let n = g.below(4) as i64;
            let (d, c) = (g.pick(ACCOUNTS), g.pick(ACCOUNTS));
            let amount = new_int(g, 1000);
            exec(
                conn,
                "INSERT OR IGNORE INTO postings(seq, n, debit, credit, amount) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![s, n, d, c, amount],
            )
            .then(|| format!("insert posting {s}/{n} {d} <- {c} {amount}"))
        }
        // Balances.
        10 | 11 => {
            let (account, debits, credits): (String, i64, i64) = nth(
                conn,
                "balances",
                "SELECT account, debits, credits FROM balances ORDER BY account LIMIT 1 OFFSET ?1",
                g,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            match g.byte() % 4 {
                0 => {
                    let new = new_int(g, debits);
                    exec(
                        conn,
                        "UPDATE balances SET debits = ?1 WHERE account = ?2 AND debits IS NOT ?1",
                        params![new, account],
                    )
                    .then(|| format!("balance {account} debits -> {new}"))
                }
                1 | 2 => {
                    let new = new_int(g, credits);
                    exec(
                        conn,
                        "UPDATE balances SET credits = ?1 WHERE account = ?2 AND credits IS NOT ?1",
                        params![new, account],
                    )
                    .then(|| format!("balance {account} credits -> {new}"))
                }
                _ => exec(conn, "DELETE FROM balances WHERE account = ?1", [&account])
                    .then(|| format!("delete balance {account}")),
            }
        }
        12 => {
            let a = g.pick(ACCOUNTS);
            exec(
                conn,
                "INSERT OR IGNORE INTO balances(account, debits, credits) VALUES (?1, 0, 0)",
                [a],
            )
            .then(|| format!("insert balance {a}"))
        }
        // Payment references.
        13 | 14 => match g.byte() % 3 {
            0 => {
                let r: String = nth(
                    conn,
                    "payments",
                    "SELECT reference FROM payments ORDER BY reference LIMIT 1 OFFSET ?1",
                    g,
                    |r| r.get(0),
                )?;
                exec(conn, "DELETE FROM payments WHERE reference = ?1", [&r])
                    .then(|| format!("delete payment {r}"))
            }
            1 => {
                let (r, old): (String, i64) = nth(
                    conn,
                    "payments",
                    "SELECT reference, seq FROM payments ORDER BY reference LIMIT 1 OFFSET ?1",
                    g,
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let new = new_int(g, old);
                exec(
                    conn,
                    "UPDATE payments SET seq = ?1 WHERE reference = ?2 AND seq IS NOT ?1",
                    params![new, r],
                )
                .then(|| format!("payment {r} seq {old} -> {new}"))
            }
            _ => {
                let r = g.pick(&["p1", "p2", "p0", "hash-j0", "new-ref"]);
                let s = seq(g);
                exec(
                    conn,
                    "INSERT OR IGNORE INTO payments(reference, seq) VALUES (?1, ?2)",
                    params![r, s],
                )
                .then(|| format!("insert payment {r} at {s}"))
            }
        },
        // The recorded head.
        15 => {
            let head: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'head'", [], |r| {
                    r.get(0)
                })
                .ok();
            let hash = head
                .as_deref()
                .and_then(|h| h.split_once(':'))
                .map(|(_, h)| h.to_string())
                .unwrap_or_default();
            let new = match g.byte() % 5 {
                0 => {
                    return exec(conn, "DELETE FROM meta WHERE key = 'head'", [])
                        .then(|| "delete head".to_string())
                }
                1 => format!("{}:{hash}", last - 1),
                2 => format!("{}:{hash}", last + 1),
                3 => format!("{last}:{}", "0".repeat(64)),
                _ => "garbage".to_string(),
            };
            exec(
                conn,
                "UPDATE meta SET value = ?1 WHERE key = 'head' AND value IS NOT ?1",
                [&new],
            )
            .then(|| format!("head -> {new}"))
        }
        16 => {
            let v = g.pick(&["0", "2", "x"]);
            exec(
                conn,
                "UPDATE meta SET value = ?1 WHERE key = 'schema_version' AND value IS NOT ?1",
                [v],
            )
            .then(|| format!("schema_version -> {v}"))
        }
        // The reference index.
        17 => match g.byte() % 3 {
            0 => {
                let (r, s): (String, i64) = nth(
                    conn,
                    "refs",
                    "SELECT reference, seq FROM refs ORDER BY reference, seq LIMIT 1 OFFSET ?1",
                    g,
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                exec(
                    conn,
                    "DELETE FROM refs WHERE reference = ?1 AND seq = ?2",
                    params![r, s],
                )
                .then(|| format!("delete ref {r}@{s}"))
            }
            1 => {
                let (r, s): (String, i64) = nth(
                    conn,
                    "refs",
                    "SELECT reference, seq FROM refs ORDER BY reference, seq LIMIT 1 OFFSET ?1",
                    g,
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let j: Option<&str> = if g.byte() % 2 == 0 { None } else { Some("j1") };
                exec(
                    conn,
                    "UPDATE refs SET job = ?1 WHERE reference = ?2 AND seq = ?3 AND job IS NOT ?1",
                    params![j, r, s],
                )
                .then(|| format!("ref {r}@{s} job -> {j:?}"))
            }
            _ => {
                let r = g.pick(&["p1", "j0", "zz"]);
                let s = seq(g);
                exec(
                    conn,
                    "INSERT OR IGNORE INTO refs(reference, seq, job, ref_digest) \
                     VALUES (?1, ?2, NULL, ?3)",
                    params![r, s, paydvm_ledger::store::key_digest(r)],
                )
                .then(|| format!("insert ref {r}@{s}"))
            }
        },
        // Projection records.
        18..=20 => {
            let (table, key) = g.pick(&[
                ("jobs", "job"),
                ("refunds", "refund"),
                ("subscriptions", "subscription"),
                ("effects", "effect"),
            ]);
            let (k, record): (String, String) = nth(
                conn,
                table,
                &format!("SELECT {key}, record FROM {table} ORDER BY {key} LIMIT 1 OFFSET ?1"),
                g,
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if g.byte() % 4 == 0 {
                exec(conn, &format!("DELETE FROM {table} WHERE {key} = ?1"), [&k])
                    .then(|| format!("delete {table} row {k}"))
            } else {
                let mut bytes = record.into_bytes();
                let pos = g.below(bytes.len().min(65_536));
                if !bytes.get(pos)?.is_ascii() {
                    return None;
                }
                bytes[pos] = 0x20 + g.byte() % 95;
                let new = String::from_utf8(bytes).ok()?;
                exec(
                    conn,
                    &format!(
                        "UPDATE {table} SET record = ?1 WHERE {key} = ?2 AND record IS NOT ?1"
                    ),
                    params![new, k],
                )
                .then(|| format!("{table} row {k} record -> {new}"))
            }
        }
        // A value of another SQL type (or NULL) in some column: verify must fail, not panic.
        21 => {
            let (table, key, cols) = g.pick(&[
                (
                    "events",
                    "seq",
                    &[
                        "seq",
                        "idem_key",
                        "at",
                        "type",
                        "job",
                        "body",
                        "prev_hash",
                        "hash",
                        "key_digest",
                        "job_digest",
                    ][..],
                ),
                // (postings.n only orders the rows of one event; verify compares that order.)
                ("postings", "seq", &["seq", "debit", "credit", "amount"][..]),
                ("balances", "account", &["account", "debits", "credits"][..]),
                ("payments", "reference", &["reference", "seq"][..]),
                ("refs", "reference", &["reference", "seq", "job", "ref_digest"][..]),
                ("jobs", "job", &["record"][..]),
                ("meta", "key", &["value"][..]),
            ]);
            let col = g.pick(cols);
            let v = match g.byte() % 5 {
                0 => Value::Null,
                1 => Value::Real(1.5),
                2 => Value::Blob(vec![0xff, 0x00]),
                3 => Value::Text("1".to_string()),
                _ => Value::Integer(-7),
            };
            let k: Value = nth(
                conn,
                table,
                &format!("SELECT {key} FROM {table} ORDER BY {key} LIMIT 1 OFFSET ?1"),
                g,
                |r| r.get(0),
            )?;
            exec(
                conn,
                &format!("UPDATE {table} SET {col} = ?1 WHERE {key} = ?2 AND {col} IS NOT ?1"),
                params![v, k],
            )
            .then(|| format!("{table} row {k:?} column {col} -> {v:?}"))
        }
        // Columns derived from the records (finding 1, now checked by verify).
        _ => match g.byte() % 3 {
            0 => {
                let k: String = nth(
                    conn,
                    "jobs",
                    "SELECT job FROM jobs ORDER BY job LIMIT 1 OFFSET ?1",
                    g,
                    |r| r.get(0),
                )?;
                let s = g.pick(&["queued", "succeeded", "refund_due", "paid"]);
                exec(
                    conn,
                    "UPDATE jobs SET state = ?1 WHERE job = ?2 AND state IS NOT ?1",
                    params![s, k],
                )
                .then(|| format!("jobs row {k} state column -> {s}"))
            }
            1 => {
                let k: String = nth(
                    conn,
                    "refunds",
                    "SELECT refund FROM refunds ORDER BY refund LIMIT 1 OFFSET ?1",
                    g,
                    |r| r.get(0),
                )?;
                let s = g.pick(&["due", "in_flight", "failed", "settled"]);
                exec(
                    conn,
                    "UPDATE refunds SET state = ?1 WHERE refund = ?2 AND state IS NOT ?1",
                    params![s, k],
                )
                .then(|| format!("refunds row {k} state column -> {s}"))
            }
            _ => {
                let k: String = nth(
                    conn,
                    "effects",
                    "SELECT effect FROM effects ORDER BY effect LIMIT 1 OFFSET ?1",
                    g,
                    |r| r.get(0),
                )?;
                exec(
                    conn,
                    "UPDATE effects SET done = 1 - done WHERE effect = ?1",
                    [&k],
                )
                .then(|| format!("effects row {k} done column flipped"))
            }
        },
    };
    done
}

fn collect_numbers<'v>(v: &'v mut serde_json::Value, out: &mut Vec<&'v mut serde_json::Value>) {
    match v {
        serde_json::Value::Number(_) => out.push(v),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| collect_numbers(x, out)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| collect_numbers(x, out)),
        _ => {}
    }
}

//! c. Reading the big ledger back: verify, open (replay, or snapshot + tail), and for SQLite
//! where replay and verify spend their time.

use std::time::{Duration, Instant};

use anyhow::ensure;
use paydvm::config::LedgerPlace;
use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::store::{verify_file, Store};
use paydvm_ledger::{Durability, LedgerStore, SnapshotUse, StoreOptions};

use crate::report::{rate, verdict};
use crate::stores::Stores;

/// `verify` from scratch: `verify_file` on a file, `LedgerStore::verify` on a database.
pub fn verify(stores: &Stores, place: &LedgerPlace, events: u64) -> anyhow::Result<()> {
    let (report, d) = match place {
        LedgerPlace::File(path) => {
            let t = Instant::now();
            let report = verify_file(path).map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
            (report, t.elapsed())
        }
        LedgerPlace::Postgres(_) => {
            let options = StoreOptions::bounded(Durability::Normal).read_only();
            let store = stores.open(place, &options)?;
            let t = Instant::now();
            let report = store
                .verify()
                .map_err(|e| anyhow::anyhow!("verify failed: {e}"))?;
            (report, t.elapsed())
        }
    };
    ensure!(
        report.events == events,
        "verify saw {} events",
        report.events
    );
    let r = rate(events, d);
    println!(
        "c. verify: {events} events in {:.2} s = {r:.0} events/s (target >= 1000000: {})",
        d.as_secs_f64(),
        verdict(r >= 1_000_000.0)
    );
    Ok(())
}

/// Open keeping everything: the whole log replayed into memory (read-only).
pub fn open_everything(stores: &Stores, place: &LedgerPlace, events: u64) -> anyhow::Result<()> {
    let options = StoreOptions::everything(Durability::Normal).read_only();
    let t = Instant::now();
    let store = stores.open(place, &options)?;
    let d = t.elapsed();
    ensure!(
        store.head().0 == events,
        "replayed {} events",
        store.head().0
    );
    println!(
        "c. open keeping everything (whole log replayed): {events} events in {:.2} s = {:.0} events/s",
        d.as_secs_f64(),
        rate(events, d)
    );
    Ok(())
}

/// Open with the run's options (with `open-work`: from the snapshot written at close).
pub fn open(
    stores: &Stores,
    place: &LedgerPlace,
    options: &StoreOptions,
    events: u64,
) -> anyhow::Result<LedgerHandle> {
    let t = Instant::now();
    let store = stores.open(place, options)?;
    let d = t.elapsed();
    ensure!(store.head().0 == events, "opened at {}", store.head().0);
    let how = match &store.opened().snapshot {
        SnapshotUse::Loaded { seq } => format!("snapshot of {seq} + tail of {}", events - seq),
        other => format!("{other:?}"),
    };
    println!(
        "c. open with the run's retention ({how}): {:.3} s",
        d.as_secs_f64()
    );
    Ok(store)
}

/// SQLite only: one pass doing the store's replay work, each phase timed on its own.
pub fn breakdown(store: &Store) -> anyhow::Result<()> {
    let conn = store.connection();
    let mut phases = [Duration::ZERO; 4];
    let (n, whole, body_bytes) = pass(conn, &mut phases)?;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / whole.as_secs_f64().max(1e-9);
    let [read, decode, hash, apply] = phases;
    println!(
        "   split of one pass over {n} events ({:.2} s, avg body {} B): SQLite read {:.2} s ({:.0}%), JSON decode {:.2} s ({:.0}%), SHA-256 chain {:.2} s ({:.0}%), state apply {:.2} s ({:.0}%)",
        whole.as_secs_f64(),
        body_bytes / n.max(1),
        read.as_secs_f64(),
        share(read),
        decode.as_secs_f64(),
        share(decode),
        hash.as_secs_f64(),
        share(hash),
        apply.as_secs_f64(),
        share(apply),
    );
    let count = |sql: &str| -> anyhow::Result<(u64, Duration)> {
        let t = Instant::now();
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        let mut n = 0u64;
        while let Some(r) = rows.next()? {
            let _: i64 = r.get(0)?;
            n += 1;
        }
        Ok((n, t.elapsed()))
    };
    let (np, tp) = count("SELECT seq, debit, credit, amount FROM postings ORDER BY seq, n")?;
    let (nr, tr) = count("SELECT seq, reference, job FROM refs ORDER BY seq, reference")?;
    println!(
        "   verify's extra scans: postings ({np} rows) {:.2} s, refs ordered by seq ({nr} rows) {:.2} s",
        tp.as_secs_f64(),
        tr.as_secs_f64()
    );
    Ok(())
}

/// The replay pass of [`breakdown`]: read, decode, hash, apply; returns events, time, bytes.
fn pass(
    conn: &rusqlite::Connection,
    phases: &mut [Duration; 4],
) -> anyhow::Result<(u64, Duration, u64)> {
    use paydvm_ledger::{EventBody, IdemKey, Ledger, LedgerEvent, UnixMs};
    use sha2::{Digest, Sha256};

    let mut ledger = Ledger::new();
    let (mut head, mut n, mut body_bytes) = ([0u8; 32], 0u64, 0u64);
    let total = Instant::now();
    let mut stmt = conn.prepare("SELECT seq, idem_key, at, body, hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    loop {
        let t = Instant::now();
        let Some(row) = rows.next()? else { break };
        let (seq, key, at): (i64, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let (body, stored): (String, Vec<u8>) = (row.get(3)?, row.get(4)?);
        let t1 = Instant::now();
        let event = LedgerEvent::new(
            IdemKey::new(key.clone())?,
            UnixMs(at as u64),
            serde_json::from_str::<EventBody>(&body)?,
        );
        let t2 = Instant::now();
        let mut h = Sha256::new();
        h.update(head);
        h.update((seq as u64).to_be_bytes());
        h.update((at as u64).to_be_bytes());
        h.update((key.len() as u64).to_be_bytes());
        h.update(key.as_bytes());
        h.update((body.len() as u64).to_be_bytes());
        h.update(body.as_bytes());
        head = h.finalize().into();
        ensure!(head[..] == stored[..], "hash mismatch at {seq}");
        let t3 = Instant::now();
        ledger.prepare(std::slice::from_ref(&event))?;
        for (i, d) in [t1 - t, t2 - t1, t3 - t2, t3.elapsed()]
            .into_iter()
            .enumerate()
        {
            phases[i] += d;
        }
        n += 1;
        body_bytes += body.len() as u64;
    }
    Ok((n, total.elapsed(), body_bytes))
}

/// SQLite only: verify's last step, every `jobs` row re-serialised from a replayed state.
pub fn projections(store: &Store) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut stmt = store.connection().prepare("SELECT job, record FROM jobs")?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let job: String = r.get(0)?;
        let record: String = r.get(1)?;
        let id = paydvm_ledger::JobId::new(job)?;
        if let Some(rec) = store.state().job(&id) {
            ensure!(serde_json::to_string(rec)? == record, "job row differs");
        }
        n += 1;
    }
    println!(
        "   verify's projection check, jobs table only ({n} rows read, those in memory re-serialised and compared): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

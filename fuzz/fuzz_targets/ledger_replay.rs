//! Arbitrary groups of ledger events through `Ledger::prepare`.
//!
//! Asserts: no panic; after every accepted group `invariants::check_all` holds and the outcomes
//! are consistent (consecutive seqs, duplicates name the first seq); a refused group leaves the
//! state, `next_seq` and the idempotency keys exactly as before; replaying the appended events
//! into a fresh `Ledger` gives an equal state, and appending them again only yields duplicates.
//! For inputs whose first byte is 0, the accepted groups are also written through an in-memory
//! `Store`, which must accept the same groups (except ones whose numbers exceed SQLite's i64),
//! end in the same state, pass `verify`, export and answer audit queries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paydvm_fuzz::Gen;
use paydvm_ledger::store::Store;
use paydvm_ledger::{invariants, AppendOutcome, Ledger, LedgerError, LedgerEvent};

const MAX_GROUPS: usize = 48;

fuzz_target!(|data: &[u8]| {
    let with_store = data.first() == Some(&0);
    let mut g = Gen::new(data.get(1..).unwrap_or(&[]));
    let mut ledger = Ledger::new();
    let mut groups: Vec<Vec<LedgerEvent>> = Vec::new();
    let mut appended: Vec<LedgerEvent> = Vec::new();
    for _ in 0..MAX_GROUPS {
        if g.is_empty() {
            break;
        }
        let before = ledger.state().clone();
        let seq_before = ledger.next_seq();
        let group = g.group(&mut ledger);
        assert!(
            ledger.state() == &before,
            "prepare + rollback of single events changed the state"
        );
        let known: Vec<Option<u64>> = group.iter().map(|e| ledger.seq_of_key(&e.key)).collect();
        match ledger.prepare(&group) {
            Ok(p) => {
                assert_eq!(p.outcomes.len(), group.len());
                let mut next = seq_before;
                for (i, (e, o)) in group.iter().zip(&p.outcomes).enumerate() {
                    match *o {
                        AppendOutcome::Appended { seq } => {
                            assert_eq!(seq, next, "appended seqs are not consecutive");
                            assert!(known[i].is_none(), "known key appended again");
                            next += 1;
                            appended.push(e.clone());
                        }
                        AppendOutcome::Duplicate { seq } => {
                            assert_eq!(Some(seq), known[i], "duplicate names the wrong seq")
                        }
                    }
                    assert_eq!(ledger.seq_of_key(&e.key), Some(o.seq()));
                }
                assert_eq!(ledger.next_seq(), next);
                assert_eq!(p.appended.len() as u64, next - seq_before);
                if let Err(why) = invariants::check_all(ledger.state()) {
                    panic!("invariant broken after accepting {group:#?}: {why}");
                }
                groups.push(group);
            }
            Err(err) => {
                match &err {
                    LedgerError::Refused { index, .. } => assert!(*index < group.len()),
                    LedgerError::KeyRepeatedInGroup(_) => {}
                    other => panic!("unexpected error from prepare: {other}"),
                }
                assert!(
                    ledger.state() == &before,
                    "refused group left the state changed ({err}): {group:#?}"
                );
                assert_eq!(
                    ledger.next_seq(),
                    seq_before,
                    "refused group moved next_seq"
                );
                for (e, k) in group.iter().zip(&known) {
                    assert_eq!(ledger.seq_of_key(&e.key), *k, "refused group left a key");
                }
            }
        }
    }

    let mut fresh = Ledger::new();
    for (i, e) in appended.iter().enumerate() {
        match fresh.append(e) {
            Ok(AppendOutcome::Appended { seq }) => assert_eq!(seq, i as u64 + 1),
            other => panic!("replaying event {} gave {other:?}: {e:#?}", i + 1),
        }
    }
    assert!(
        fresh.state() == ledger.state(),
        "replay from scratch gives a different state"
    );
    for e in &appended {
        assert!(
            matches!(ledger.append(e), Ok(AppendOutcome::Duplicate { .. })),
            "re-appending a stored event was not a duplicate"
        );
    }
    if with_store {
        store_check(&groups, &appended, &ledger);
    }
    if stats() {
        print_stats(&appended, &ledger);
    }
});

/// `PAYDVM_FUZZ_STATS=1` with `-runs=0` over a corpus prints what the inputs reach (one line per
/// job state, refund state and appended event type), to check the decoder's depth.
fn stats() -> bool {
    static STATS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STATS.get_or_init(|| std::env::var_os("PAYDVM_FUZZ_STATS").is_some())
}

fn print_stats(appended: &[LedgerEvent], ledger: &Ledger) {
    for e in appended {
        eprintln!("stat event {}", e.body.type_name());
    }
    for j in ledger.state().jobs() {
        eprintln!("stat job {}", j.state);
    }
    for r in ledger.state().refunds() {
        eprintln!("stat refund {}", r.state.as_str());
    }
    for s in ledger.state().subscriptions() {
        eprintln!("stat subscription {:?} used {}", s.state, s.used);
    }
}

fn store_check(groups: &[Vec<LedgerEvent>], appended: &[LedgerEvent], ledger: &Ledger) {
    for e in appended {
        let json = serde_json::to_string(e).expect("serialize");
        let back: LedgerEvent = serde_json::from_str(&json)
            .unwrap_or_else(|err| panic!("event does not deserialize ({err}): {json}"));
        assert_eq!(&back, e, "serde round trip changed the event: {json}");
    }
    let mut store = Store::open_in_memory().expect("open");
    let mut mirror = Ledger::new();
    let mut diverged = false;
    for group in groups {
        let before = store.state().clone();
        match store.append_group(group) {
            Ok(outcomes) => {
                let p = mirror
                    .prepare(group)
                    .expect("store accepted what memory refuses");
                assert_eq!(p.outcomes, outcomes);
            }
            // SQLite integers are i64: amounts, balances or times above i64::MAX are refused by
            // the store although the in-memory ledger accepts them.
            Err(LedgerError::Corrupt(m)) if m.contains("exceeds storage range") => {
                assert!(
                    store.state() == &before,
                    "failed write left the state changed"
                );
                if stats() && !diverged {
                    eprintln!("stat store refused a group over i64: {m}");
                }
                diverged = true;
            }
            Err(LedgerError::Refused { .. } | LedgerError::KeyRepeatedInGroup(_)) if diverged => {
                assert!(store.state() == &before);
                assert!(mirror.prepare(group).is_err());
            }
            Err(e) => panic!("store refused a group the ledger accepted: {e}: {group:#?}"),
        }
        assert!(store.state() == mirror.state(), "store and mirror differ");
    }
    if !diverged {
        assert!(store.state() == ledger.state(), "store state differs");
    }
    if let Err(e) = store.verify() {
        panic!("verify refused an honest store: {e}");
    }
    let mut out = Vec::new();
    store.export(&mut out).expect("export");
    for r in ["j0", "j0:x", "p1", "r1", "ev0", "hash-j0", "alice"] {
        store.audit(r).expect("audit");
    }
}

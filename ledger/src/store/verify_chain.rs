//! The chain part of `verify`, in two stages on two threads so that a second core works beside
//! the state machine: this thread reads each event's rows (the event, its postings, its
//! references) from SQLite and checks the hash chain over the stored text; the second decodes
//! each body, replays it through the state machine and compares the stored postings and
//! references with the replayed ones, then hands each chunk back to be freed where it was read.
//! Memory freed on another thread than the one that allocated it costs glibc's allocator more
//! than the whole gain (measured: 8.5-10 s against 7 s in one pass at 1 M events), so the rows
//! go back to their reader, and what the replay decodes it also frees. A failure
//! found while reading is an item in its place, and what the chain check found is carried to
//! the replay and reported where a single pass would report it, so the first failure in seq
//! order (and, within an event, the first check in a single pass's order) is the one reported.
//! A replay that stops at a failure makes the reading stop at its next send.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use rusqlite::Connection;

use super::audit::{decode_row_ref, raw_row, to_hash, RawRow};
use super::refs::event_refs;
use super::verify::{bad, LastChanged, VerifyFailure};
use super::{digest, from_sql_int};
use crate::chain::{event_hash, Hash, GENESIS};
use crate::engine::Ledger;
use crate::error::LedgerError;

/// Events per chunk handed to the replay, and chunks the reading may run ahead of it.
const CHUNK: usize = 1024;
const CHUNKS_AHEAD: usize = 4;

type Posting = (String, String, u64);
type Reference = (String, Option<String>);

/// One event's rows as stored, and what the chain check found. The postings and references are
/// read as they come: a failure reading them is reported after the event's own checks.
struct Stored {
    raw: RawRow,
    type_col: String,
    links_to_previous: bool,
    hash_matches: bool,
    postings: Result<Vec<Posting>, VerifyFailure>,
    refs: Result<Vec<Reference>, VerifyFailure>,
}

type Chunk = Vec<Result<Stored, VerifyFailure>>;

/// What the chain replayed to: the state, the head's hash, and the last change of each record.
pub(super) struct Replayed {
    pub ledger: Ledger,
    pub head: Hash,
    pub changed: LastChanged,
}

/// Reads, checks and replays every event of `conn` in seq order; the first failure found.
pub(super) fn replay(conn: &Connection) -> Result<Replayed, VerifyFailure> {
    let (to_replay, replaying) = sync_channel::<Chunk>(CHUNKS_AHEAD);
    let (to_free, replayed_chunks) = std::sync::mpsc::channel::<Chunk>();
    std::thread::scope(|scope| {
        let replayer = scope.spawn(move || replay_stored(replaying, to_free));
        let read = read_rows(conn, to_replay, replayed_chunks);
        let replayed = replayer.join().expect("the replaying stage panicked");
        // A read failure comes after every event read before it, so the replay reports any
        // earlier one first; reading stops early only because the replay failed.
        match (replayed, read) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
            (Ok(r), Ok(())) => Ok(r),
        }
    })
}

/// On the caller's thread (the connection is not shared): each event with its rows, linked.
/// Chunks the replay is done with come back on `replayed` and are freed here.
fn read_rows(
    conn: &Connection,
    out: SyncSender<Chunk>,
    replayed: Receiver<Chunk>,
) -> Result<(), VerifyFailure> {
    let digests = digest::has_digests(conn)?;
    let mut events = conn.prepare(if digests {
        "SELECT seq, idem_key, at, job, body, prev_hash, hash, type, key_digest, job_digest \
         FROM events ORDER BY seq"
    } else {
        "SELECT seq, idem_key, at, job, body, prev_hash, hash, type FROM events ORDER BY seq"
    })?;
    let mut postings =
        conn.prepare("SELECT seq, debit, credit, amount FROM postings ORDER BY seq, n")?;
    let mut refs = conn.prepare(if digests {
        "SELECT seq, reference, job, ref_digest FROM refs ORDER BY seq, reference"
    } else {
        "SELECT seq, reference, job FROM refs ORDER BY seq, reference"
    })?;
    let mut rows = events.query([])?;
    let mut posting_rows = Peek::new(postings.query([])?, |r| {
        Ok((r.get(1)?, r.get(2)?, from_sql_int(r.get(3)?, "amount")?))
    });
    let mut ref_rows = Peek::new(
        refs.query([])?,
        match digests {
            true => reference_with_digest,
            false => |r| Ok((r.get(1)?, r.get(2)?)),
        },
    );
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut expected = Ledger::new().next_seq();
    let mut head = GENESIS;
    let ended = loop {
        let row = match rows.next() {
            Ok(Some(row)) => row,
            Ok(None) => break orphans(&mut posting_rows, &mut ref_rows),
            Err(e) => break Err(e.into()),
        };
        let stored = read_event(row, expected, &mut posting_rows, &mut ref_rows)
            .and_then(|stored| match digests {
                true => digests_match(row, stored),
                false => Ok(stored),
            })
            .and_then(|stored| link(&mut head, stored));
        match stored {
            Ok(stored) => chunk.push(Ok(stored)),
            Err(e) => break Err(e),
        }
        expected += 1;
        if chunk.len() < CHUNK {
            continue;
        }
        replayed.try_iter().for_each(drop);
        if out.send(std::mem::take(&mut chunk)).is_err() {
            // The replay stopped at a failure: it reports that one.
            return Ok(());
        }
    };
    if let Err(e) = ended {
        chunk.push(Err(e));
    }
    let _ = out.send(chunk);
    Ok(())
}

fn read_event(
    row: &rusqlite::Row<'_>,
    expected: u64,
    posting_rows: &mut Peek<'_, Posting>,
    ref_rows: &mut Peek<'_, Reference>,
) -> Result<Stored, VerifyFailure> {
    let seq_raw: i64 = row.get(0)?;
    let seq = u64::try_from(seq_raw).unwrap_or(0);
    if seq != expected {
        return Err(bad(
            expected,
            format!("missing: next stored event is {seq_raw}"),
        ));
    }
    Ok(Stored {
        raw: raw_row(row)?,
        type_col: row.get(7)?,
        links_to_previous: false,
        hash_matches: false,
        postings: posting_rows.take_seq(seq),
        refs: ref_rows.take_seq(seq),
    })
}

/// Checks that the digests an event is searched by are those of its key and job: a wrong one
/// would hide the event from the idempotency look-up, so the same key could be written again.
fn digests_match(row: &rusqlite::Row<'_>, s: Stored) -> Result<Stored, VerifyFailure> {
    let (seq, key, _, job, ..) = &s.raw;
    let stored: (Option<i64>, Option<i64>) = (row.get(8)?, row.get(9)?);
    if stored
        != (
            Some(digest::key_digest(key)),
            job.as_deref().map(digest::key_digest),
        )
    {
        return Err(bad(
            u64::try_from(*seq).unwrap_or(0),
            "key_digest or job_digest is not the digest of its idempotency key or job",
        ));
    }
    Ok(s)
}

/// A `refs` row whose `ref_digest` is its reference's (a wrong one hides the event from the
/// audit's look-up by that reference).
fn reference_with_digest(r: &rusqlite::Row<'_>) -> Result<Reference, LedgerError> {
    let reference: String = r.get(1)?;
    if r.get::<_, i64>(3)? != digest::key_digest(&reference) {
        return Err(LedgerError::Corrupt(format!(
            "refs row of event {}: ref_digest is not the digest of {reference}",
            r.get::<_, i64>(0)?
        )));
    }
    Ok((reference, r.get(2)?))
}

/// Checks that the event links to `head` and that its hash covers its stored text, and moves
/// `head` on. A hash column that is not a hash is left to the decoding to report.
fn link(head: &mut Hash, mut s: Stored) -> Result<Stored, VerifyFailure> {
    let (seq, key, at, _, body, prev, hash) = &s.raw;
    let (Ok(prev), Ok(hash), Ok(at)) = (
        to_hash(prev, "prev_hash"),
        to_hash(hash, "hash"),
        u64::try_from(*at),
    ) else {
        return Ok(s);
    };
    let seq = from_sql_int(*seq, "seq")?;
    s.links_to_previous = prev == *head;
    s.hash_matches = event_hash(head, seq, at, key, body) == hash;
    *head = hash;
    Ok(s)
}

/// Rows of postings or references past the last event.
fn orphans(
    posting_rows: &mut Peek<'_, Posting>,
    ref_rows: &mut Peek<'_, Reference>,
) -> Result<(), VerifyFailure> {
    if let Some(orphan) = posting_rows.peek_seq()? {
        return Err(bad(orphan, "postings for an event that does not exist"));
    }
    if let Some(orphan) = ref_rows.peek_seq()? {
        return Err(bad(orphan, "references for an event that does not exist"));
    }
    Ok(())
}

/// On the second thread: decodes and replays each event and compares what it stored beside it.
fn replay_stored(
    input: Receiver<Chunk>,
    replayed_chunks: std::sync::mpsc::Sender<Chunk>,
) -> Result<Replayed, VerifyFailure> {
    let mut replayed = Replayed {
        ledger: Ledger::new(),
        head: GENESIS,
        changed: LastChanged::default(),
    };
    for mut chunk in input {
        if let Some(failed) = chunk.iter().position(Result::is_err) {
            // Only the reader's last chunk holds a failure: what comes before it is replayed first.
            let failure = chunk.swap_remove(failed).err().expect("a failure");
            chunk.truncate(failed);
            for s in chunk.iter_mut().flatten() {
                replay_one(&mut replayed, s)?;
            }
            return Err(failure);
        }
        for s in chunk.iter_mut().flatten() {
            replay_one(&mut replayed, s)?;
        }
        // The reader has stopped only if it failed, and then this was its last chunk.
        let _ = replayed_chunks.send(chunk);
    }
    Ok(replayed)
}

fn replay_one(r: &mut Replayed, s: &mut Stored) -> Result<(), VerifyFailure> {
    let seq = from_sql_int(s.raw.0, "seq")?;
    let stored = &decode_row_ref(&s.raw).map_err(|e| bad(seq, e.to_string()))?;
    if !s.links_to_previous {
        return Err(bad(
            seq,
            "prev_hash does not match the previous event's hash",
        ));
    }
    if !s.hash_matches {
        return Err(bad(seq, "hash does not match its contents (edited)"));
    }
    if s.type_col != stored.event.body.type_name() {
        return Err(bad(seq, "type column does not match the body"));
    }
    let applied = r
        .ledger
        .apply(&stored.event)
        .map_err(|e| bad(seq, format!("refused on replay: {e}")))?;
    let Some((_, change)) = applied else {
        return Err(bad(seq, "duplicate idempotency key"));
    };
    r.changed.note(seq, &change);
    if change.subject_job.as_ref().map(|j| j.as_str()) != stored.job.as_deref() {
        return Err(bad(seq, "job column does not match the event"));
    }
    let want = super::projections::posting_rows(&change);
    let got = match &s.postings {
        Ok(got) => got,
        Err(_) => return Err(take_failure(&mut s.postings)),
    };
    if *got != want {
        return Err(bad(
            seq,
            format!("postings differ: stored {got:?}, replay {want:?}"),
        ));
    }
    let mut want_refs: Vec<Reference> = event_refs(&stored.event.body)
        .into_iter()
        .map(|r| (r.to_string(), stored.job.clone()))
        .collect();
    want_refs.sort();
    want_refs.dedup();
    let got_refs = match &s.refs {
        Ok(got) => got,
        Err(_) => return Err(take_failure(&mut s.refs)),
    };
    if *got_refs != want_refs {
        return Err(bad(seq, "reference index differs from the event"));
    }
    r.head = stored.hash;
    Ok(())
}

/// The failure `result` holds (it is left holding a placeholder).
fn take_failure<T: Default>(result: &mut Result<T, VerifyFailure>) -> VerifyFailure {
    match std::mem::replace(result, Ok(T::default())) {
        Err(e) => e,
        Ok(_) => unreachable!("take_failure is called on a failure"),
    }
}

/// A cursor over rows sorted by seq (column 0) that hands out the rows of one seq at a time.
struct Peek<'s, T> {
    rows: rusqlite::Rows<'s>,
    read: fn(&rusqlite::Row<'_>) -> Result<T, LedgerError>,
    pending: Option<(u64, T)>,
}

impl<'s, T> Peek<'s, T> {
    fn new(
        rows: rusqlite::Rows<'s>,
        read: fn(&rusqlite::Row<'_>) -> Result<T, LedgerError>,
    ) -> Self {
        Peek {
            rows,
            read,
            pending: None,
        }
    }

    fn peek_seq(&mut self) -> Result<Option<u64>, VerifyFailure> {
        if self.pending.is_none() {
            let Some(row) = self.rows.next()? else {
                return Ok(None);
            };
            let seq = from_sql_int(row.get(0)?, "seq")?;
            self.pending = Some((seq, (self.read)(row)?));
        }
        Ok(self.pending.as_ref().map(|(s, _)| *s))
    }

    fn take_seq(&mut self, seq: u64) -> Result<Vec<T>, VerifyFailure> {
        let mut out = Vec::new();
        while let Some(s) = self.peek_seq()? {
            if s < seq {
                return Err(bad(s, "rows for an event out of order or missing"));
            }
            if s > seq {
                break;
            }
            out.push(self.pending.take().expect("peeked").1);
        }
        Ok(out)
    }
}

//! 64-bit digests of the random text keys the `events` table is searched by (schema 4): the
//! idempotency key and the job id. An index of 64-hex strings holds ~45 entries a page, one of
//! integers ~250, so the pages a batch's inserts land on (at random, the keys being random) stay
//! in the page cache as the file grows. Two keys may share a digest, so every search also compares
//! the text; uniqueness of idempotency keys is the store's (each key is looked up before it is
//! written, and `verify` refuses a log with a key twice), not the index's.
//!
//! SHA-256, not a faster hash: the keys embed ids a customer chooses, and with a digest nobody can
//! aim at (a second preimage costs 2^64) no one can pile keys onto one index entry.

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::error::LedgerError;

/// The stored digest of `text`: its SHA-256's first 8 bytes, big-endian, as SQLite's integer.
pub fn key_digest(text: &str) -> i64 {
    let hash = Sha256::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first)
}

/// Whether the file's `events` rows carry the digests (schema 4 and later; read-only opens
/// read older files as they are).
pub(crate) fn has_digests(conn: &Connection) -> Result<bool, LedgerError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'key_digest'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// The `WHERE` condition for the rows whose `column` is the text `?1` (whose digest is `?2`):
/// through `digest_column`'s index where the file has the digests, through the text column's on
/// older files (which bind `?2` too, so one call fits both).
pub(crate) fn text_is(column: &str, digest_column: &str, digests: bool) -> String {
    if digests {
        format!("{digest_column} = ?2 AND {column} = ?1")
    } else {
        format!("{column} = ?1 AND ?2 IS NOT NULL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_sha256_prefix_and_never_changes() {
        // Stored in every file: a change here would make every search miss.
        assert_eq!(key_digest(""), 0xe3b0_c442_98fc_1c14_u64 as i64);
        assert_eq!(key_digest("abc"), 0xba78_16bf_8f01_cfea_u64 as i64);
        assert_ne!(key_digest("recv:a"), key_digest("recv:b"));
    }
}

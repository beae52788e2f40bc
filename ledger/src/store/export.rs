//! JSON-lines export of the log, one event per line, bodies exactly as stored.

use std::io::Write;

use rusqlite::Connection;

use super::from_sql_int;
use crate::error::LedgerError;

pub fn export(conn: &Connection, out: &mut dyn Write) -> Result<u64, LedgerError> {
    let mut stmt = conn
        .prepare("SELECT seq, idem_key, at, job, body, prev_hash, hash FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let seq = from_sql_int(r.get(0)?, "seq")?;
        let key: String = r.get(1)?;
        let at = from_sql_int(r.get(2)?, "at")?;
        let job: Option<String> = r.get(3)?;
        let body: String = r.get(4)?;
        let prev: Vec<u8> = r.get(5)?;
        let hash: Vec<u8> = r.get(6)?;
        writeln!(
            out,
            "{{\"seq\":{seq},\"at\":{at},\"key\":{},\"job\":{},\"prev_hash\":\"{}\",\"hash\":\"{}\",\"body\":{body}}}",
            serde_json::to_string(&key)?,
            serde_json::to_string(&job)?,
            hex::encode(prev),
            hex::encode(hash),
        )?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

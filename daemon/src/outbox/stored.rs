//! How an entry is kept in a row's `body`, told by the row's `format`:
//!
//! - [`PROTOBUF`]: the encoded protobuf `Entry` (id 0), as the uploader sends it; every row
//!   written before schema 3, and every entry that is not a sample batch;
//! - [`SAMPLE_COLUMNS`]: a sample batch, column-encoded by the chunk codec the hub stores its
//!   samples with ([`cyclerd_proto::chunk::encode_sample_batch`]): about 6 bytes a sample on
//!   the demo's data instead of about 90. A batch whose columns do not fit a chunk (unequal
//!   lengths, none or too many samples) stays protobuf, so the hub sees it exactly as sent.
//!
//! Either way the row's CRC-32 is over the stored bytes, and decoding gives back the same
//! `Entry`, bit for bit.

use crate::proto::chunk::{decode_sample_batch, encode_sample_batch};
use crate::proto::ingest::{Entry, entry::Body};
use prost::Message;
use rusqlite::Connection;

/// The encoded protobuf `Entry`.
pub const PROTOBUF: i64 = 0;
/// A sample batch's test id, first seq and columns as a chunk.
pub const SAMPLE_COLUMNS: i64 = 1;

/// `body` as a row keeps it: its format and bytes.
pub(super) fn encode(body: Body) -> (i64, Vec<u8>) {
    if let Body::Samples(b) = &body
        && let Some(bytes) = encode_sample_batch(b)
    {
        return (SAMPLE_COLUMNS, bytes);
    }
    let bytes = Entry {
        id: 0,
        body: Some(body),
        skipped_before: 0,
    }
    .encode_to_vec();
    (PROTOBUF, bytes)
}

/// The entry a row's `body` of `format` holds (its id still 0); an error for bytes no entry
/// was stored as, or a format this daemon does not know.
pub fn decode(format: i64, body: &[u8]) -> Result<Entry, String> {
    match format {
        PROTOBUF => Entry::decode(body).map_err(|e| e.to_string()),
        SAMPLE_COLUMNS => decode_sample_batch(body)
            .map(|b| Entry {
                id: 0,
                body: Some(Body::Samples(b)),
                skipped_before: 0,
            })
            .map_err(|e| format!("sample columns: {e}")),
        other => Err(format!("unknown entry format {other}")),
    }
}

/// Checks the newest `limit` unacknowledged entries (checksum, and that they decode) and
/// moves damaged ones to the dead-letter table, so the rest of the log keeps flowing. Returns
/// one alarm per entry moved.
pub(super) fn verify_tail(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<String>> {
    let mut bad = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT id, body, crc, format FROM outbox WHERE acked_unix_s IS NULL
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (id, body, crc, format) = row?;
            if crc32fast::hash(&body) != crc || decode(format, &body).is_err() {
                bad.push(id);
            }
        }
    }
    let mut alarms = Vec::new();
    for id in bad {
        let reason = "corrupt at startup: checksum mismatch (quarantined)";
        conn.execute(
            "INSERT OR REPLACE INTO dead_letters (id, samples, body, crc, format, reason,
                                                  parked_unix_s)
             SELECT id, samples, body, crc, format, ?2, ?3 FROM outbox WHERE id = ?1",
            rusqlite::params![id, reason, super::unix_now()],
        )?;
        conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        tracing::error!("outbox entry {id} is corrupt; moved to the dead-letter table");
        alarms.push(format!(
            "outbox entry {id} was corrupt at startup and is quarantined in dead_letters"
        ));
    }
    Ok(alarms)
}

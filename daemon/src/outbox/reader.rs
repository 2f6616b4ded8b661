//! Reading the outbox: pages for the uploader, summaries and checkpoints for the daemon.

use super::{Checkpoint, OutboxError, Progress};
use crate::proto::ingest::Entry;
use rusqlite::{Connection, OptionalExtension as _, params};
use std::path::PathBuf;

/// One stored entry as the uploader reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub entry: Entry,
    pub samples: u64,
}

/// One row of a page: an entry to send, or one whose stored bytes are damaged.
// Almost every item is an Entry; boxing it would add an allocation per entry for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PageItem {
    Entry(StoredEntry),
    /// The row exists but its checksum or encoding is wrong; the caller parks it.
    Corrupt {
        id: u64,
        reason: String,
    },
}

/// What `cyclerctl outbox` shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboxSummary {
    pub pending_entries: u64,
    pub pending_samples: u64,
    pub pending_bytes: u64,
    /// Age of the oldest entry the hub has not acknowledged, seconds; 0 when none.
    pub oldest_pending_age_s: f64,
    pub dead_letters: u64,
    /// Acknowledged entries still kept (store.keep_acked).
    pub kept_acked: u64,
    /// Size of the database file.
    pub file_bytes: u64,
}

/// A reading connection; WAL lets it read while the writer writes.
pub struct OutboxReader {
    conn: Connection,
    path: PathBuf,
}

impl OutboxReader {
    pub(super) fn new(conn: Connection, path: PathBuf) -> OutboxReader {
        OutboxReader { conn, path }
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> OutboxError + '_ {
        move |source| OutboxError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Up to `limit` unacknowledged entries with id > `after`, oldest first. A damaged entry
    /// comes back as [`PageItem::Corrupt`] in its place, so the caller can park it.
    pub fn page_after(&mut self, after: u64, limit: usize) -> Result<Vec<PageItem>, OutboxError> {
        let err = |source| OutboxError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, samples, body, crc, format FROM outbox
                 WHERE id > ?1 AND acked_unix_s IS NULL ORDER BY id LIMIT ?2",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(err)?;
        let mut page = Vec::new();
        for row in rows {
            let (id, samples, body, crc, format) = row.map_err(err)?;
            if crc32fast::hash(&body) != crc {
                page.push(PageItem::Corrupt {
                    id,
                    reason: "checksum mismatch: the stored entry is corrupt".into(),
                });
                continue;
            }
            match super::stored::decode(format, &body) {
                Ok(mut entry) => {
                    entry.id = id;
                    page.push(PageItem::Entry(StoredEntry { entry, samples }));
                }
                Err(e) => page.push(PageItem::Corrupt {
                    id,
                    reason: format!("stored entry does not decode: {e}"),
                }),
            }
        }
        Ok(page)
    }

    pub fn summary(&self) -> Result<OutboxSummary, OutboxError> {
        let now = super::unix_now();
        let (pending_entries, pending_samples, pending_bytes, oldest): (
            i64,
            i64,
            i64,
            Option<f64>,
        ) = self
            .conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(samples), 0), COALESCE(SUM(LENGTH(body)), 0),
                        MIN(created_unix_s)
                 FROM outbox WHERE acked_unix_s IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(self.err())?;
        let dead_letters: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
            .map_err(self.err())?;
        let kept_acked: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE acked_unix_s IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        // What the store takes on disk: the database and its write-ahead log (which holds
        // every commit until a checkpoint folds it in) and shared-memory index.
        let file_bytes = ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut path = self.path.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).map_or(0, |m| m.len())
            })
            .sum();
        Ok(OutboxSummary {
            pending_entries: pending_entries as u64,
            pending_samples: pending_samples as u64,
            pending_bytes: pending_bytes as u64,
            oldest_pending_age_s: oldest.map_or(0.0, |t| (now - t).max(0.0)),
            dead_letters: dead_letters as u64,
            kept_acked: kept_acked as u64,
            file_bytes,
        })
    }

    /// Age of the oldest entry the hub has not acknowledged, seconds; 0 when none. Cheaper than
    /// [`Self::summary`] (no sums over the backlog), for every scrape of `/metrics`.
    pub fn oldest_pending_age_s(&self) -> Result<f64, OutboxError> {
        let oldest: Option<f64> = self
            .conn
            .query_row(
                "SELECT created_unix_s FROM outbox WHERE acked_unix_s IS NULL ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(oldest.map_or(0.0, |t| (super::unix_now() - t).max(0.0)))
    }

    /// A setting stored with [`super::Outbox::set_meta`].
    pub fn meta(&self, key: &str) -> Result<Option<String>, OutboxError> {
        super::schema::meta(&self.conn, key).map_err(self.err())
    }

    /// Every stepped test that was running when the store was last written.
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT test_id, channel_id, protocol_source, origin, metadata_json, start_unix_s,
                        engine_json, next_seq, test_time_s, unix_s, paused_s, params_json, cycles_json,
                        quality_json
                 FROM checkpoints ORDER BY channel_id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let metadata: String = r.get(4)?;
                let params: String = r.get(11)?;
                Ok(Checkpoint {
                    test_id: r.get(0)?,
                    channel_id: r.get(1)?,
                    protocol_source: r.get(2)?,
                    origin: r.get(3)?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                    params: serde_json::from_str(&params).unwrap_or_default(),
                    start_unix_s: r.get(5)?,
                    progress: Progress {
                        engine_json: r.get(6)?,
                        next_seq: r.get::<_, i64>(7)? as u64,
                        test_time_s: r.get(8)?,
                        unix_s: r.get(9)?,
                        paused_s: r.get(10)?,
                        cycles_json: r.get(12)?,
                        quality_json: r.get(13)?,
                    },
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }
}

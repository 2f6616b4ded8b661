//! The SQLite backend: one file, WAL mode, a writer and a reader connection. `schema` brings
//! the file up to date, `writes` runs a batch's statements (the hot path), `queries` answers
//! the rest of what the store asks ([`Backend`]).

mod queries;
mod schema;
mod shares;
mod writes;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::chunk::Encoded;
use super::samples::{LegacySamples, convert_test};
use super::{
    Backend, BatchOutcome, BatchWrites, CellRow, CycleRecord, Equipment, EventRow, FindingRecord,
    FindingRow, FindingTally, Registration, RejectionRecord, RejectionRow, SampleRow, SchemaRow,
    Source, StoreError, TeamRow, TestRow, TestRowRaw, WriteBatch, epoch_from_sql, sql,
    u32_from_sql, u64_from_sql,
};
use crate::token::TokenRow;
use schema::migrate;

/// The SQLite side of a [`super::HubStore`].
pub(super) struct SqliteStore {
    /// The only connection that writes: the mutex is what makes the hub a single writer.
    writer: Mutex<Connection>,
    /// Read-only connection for queries; WAL lets it read alongside the writer.
    reader: Mutex<Connection>,
    /// For error messages.
    path: PathBuf,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock dropped its transaction, which rolled back: the
    // connection itself is fine to keep using.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// See [`super::HubStore::open`].
    pub(super) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // Every lab's samples and metadata, and the tokens' hashes: the owner's only (SQLite's
        // WAL files take the database file's permissions).
        cyclerd_proto::files::create_private(&path).map_err(|source| StoreError::Create {
            path: path.clone(),
            source,
        })?;
        let mut writer = Connection::open(&path).map_err(open_err)?;
        writer
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode; queries will block ingest");
        }
        writer
            .execute_batch(
                "PRAGMA synchronous = FULL;
                 PRAGMA cache_size = -65536;
                 PRAGMA temp_store = MEMORY;",
            )
            .map_err(open_err)?;
        writer.set_prepared_statement_cache_capacity(32);
        migrate(&mut writer, &path)?;

        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        reader.set_prepared_statement_cache_capacity(32);

        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            path,
        })
    }

    /// Every row of `statement` (written for both backends) that `row` reads, on the reader.
    fn select<T>(
        &self,
        statement: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&sql::sqlite(statement))?;
        let rows = stmt.query_map(params, row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The resume point of a daemon store on `conn`, 0 when unknown.
fn applied_up_to_in(conn: &Connection, source: &Source<'_>) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT applied_up_to FROM daemons WHERE daemon_id = ?1 AND store_epoch = ?2",
        )?
        .query_row(params![source.daemon_id, source.epoch], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(u64_from_sql)
        .unwrap_or(0))
}

//! The SQLite backend: one file, WAL mode, a writer and a reader connection.

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use cyclerd_proto::ingest::{Entry, Event, SampleBatch, TestEnded, TestRegistered};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use super::sql;
use super::{
    BatchOutcome, BatchWrites, CellRow, Equipment, EventRow, Registration, RejectionRecord,
    RejectionRow, SampleRow, SchemaRow, Source, StoreError, TeamRow, TestRow, TestRowRaw,
    apply_entries, epoch_from_sql, u32_from_sql, u64_from_sql,
};
use crate::auth::TokenRow;

/// Schema migrations; `MIGRATIONS[i]` takes `PRAGMA user_version` from `i` to `i + 1`.
/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. Foreign keys are documented in comments but not declared: the
    // apply path checks the parent test itself, and per-row FK lookups would tax the sample
    // hot path.
    r#"
    -- One row per daemon store (a recreated store gets a new epoch and starts its ids at 1).
    CREATE TABLE daemons (
        daemon_id     TEXT    NOT NULL,
        store_epoch   INTEGER NOT NULL,   -- u64 bit-cast to i64
        name          TEXT    NOT NULL,
        applied_up_to INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (daemon_id, store_epoch)
    ) WITHOUT ROWID;

    CREATE TABLE tests (
        test_key         INTEGER PRIMARY KEY,  -- compact key for samples/events
        test_id          TEXT    NOT NULL UNIQUE,
        daemon_id        TEXT    NOT NULL,
        store_epoch      INTEGER NOT NULL,
        channel_id       TEXT    NOT NULL,
        protocol_name    TEXT    NOT NULL,
        protocol_source  TEXT    NOT NULL,
        plan_json        TEXT    NOT NULL,
        metadata_json    TEXT    NOT NULL,
        start_unix_s     REAL    NOT NULL,
        end_unix_s       REAL,               -- NULL while running
        outcome          TEXT,
        reason           TEXT,
        expected_samples INTEGER,            -- as the daemon counted at test end
        sample_count     INTEGER NOT NULL DEFAULT 0  -- rows actually held, kept by the apply
    );
    CREATE INDEX tests_by_start ON tests (start_unix_s);

    CREATE TABLE samples (
        test_key              INTEGER NOT NULL,  -- tests.test_key
        seq                   INTEGER NOT NULL,
        test_time_s           REAL    NOT NULL,
        unix_time_s           REAL    NOT NULL,
        voltage_v             REAL    NOT NULL,
        current_a             REAL    NOT NULL,  -- positive = charging
        cycle                 INTEGER NOT NULL,
        step                  INTEGER NOT NULL,
        charge_capacity_ah    REAL    NOT NULL,
        discharge_capacity_ah REAL    NOT NULL,
        charge_energy_wh      REAL    NOT NULL,
        discharge_energy_wh   REAL    NOT NULL,
        temperature_c         REAL,              -- NULL without a sensor
        PRIMARY KEY (test_key, seq)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        event_key   INTEGER PRIMARY KEY,
        test_key    INTEGER NOT NULL,  -- tests.test_key
        daemon_id   TEXT    NOT NULL,  -- (daemon_id, store_epoch, entry_id): the entry that
        store_epoch INTEGER NOT NULL,  -- carried the event, so re-sending it is a no-op
        entry_id    INTEGER NOT NULL,
        unix_time_s REAL    NOT NULL,
        test_time_s REAL    NOT NULL,
        kind        TEXT    NOT NULL,
        message     TEXT    NOT NULL,
        step        INTEGER NOT NULL,
        cycle       INTEGER NOT NULL,
        UNIQUE (daemon_id, store_epoch, entry_id)
    );
    CREATE INDEX events_by_test ON events (test_key, unix_time_s);

    -- Entries the hub could not apply, kept (with the encoded entry) for a person to look at.
    CREATE TABLE rejections (
        daemon_id       TEXT    NOT NULL,
        store_epoch     INTEGER NOT NULL,
        entry_id        INTEGER NOT NULL,
        kind            TEXT    NOT NULL,
        test_id         TEXT,
        reason          TEXT    NOT NULL,
        entry           BLOB    NOT NULL,
        recorded_unix_s REAL    NOT NULL DEFAULT (unixepoch('subsec')),
        UNIQUE (daemon_id, store_epoch, entry_id)
    );
    "#,
    // 2: the air temperature of the chamber a cell sits in (BDF "Ambient Temperature / degC").
    r#"
    ALTER TABLE samples ADD COLUMN ambient_temperature_c REAL;  -- NULL outside a chamber
    "#,
    // 3: daemon tokens (the secret only as its SHA-256) and the lab each daemon belongs to.
    r#"
    CREATE TABLE tokens (
        token_id       TEXT PRIMARY KEY,   -- public part of the token
        lab            TEXT NOT NULL,
        name           TEXT NOT NULL UNIQUE,
        secret_hash    TEXT NOT NULL,
        created_unix_s REAL NOT NULL,
        revoked_unix_s REAL                -- NULL while valid
    ) WITHOUT ROWID;
    CREATE TABLE daemon_labs (
        daemon_id TEXT PRIMARY KEY,        -- bound at its first authenticated upload
        lab       TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 4: the cells under test and the channels tests ran on, from the tests' metadata.
    r#"
    CREATE TABLE cells (
        cell_id             TEXT PRIMARY KEY,
        manufacturer        TEXT,
        model               TEXT,
        chemistry           TEXT,
        form_factor         TEXT,
        nominal_capacity_ah REAL,
        nominal_voltage_v   REAL,
        first_test_unix_s   REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE channels (
        daemon_id         TEXT NOT NULL,
        channel_id        TEXT NOT NULL,   -- DEVICE/N as the daemon's configuration names it
        first_test_unix_s REAL NOT NULL,
        PRIMARY KEY (daemon_id, channel_id)
    ) WITHOUT ROWID;
    ALTER TABLE tests ADD COLUMN cell_id TEXT;   -- cells.cell_id
    CREATE INDEX tests_by_cell ON tests (cell_id);
    "#,
    // 5: labs and their teams, the instruments tests ran on, the labs' metadata schemas.
    r#"
    CREATE TABLE labs (
        lab            TEXT PRIMARY KEY,
        created_unix_s REAL NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO labs (lab, created_unix_s)
        SELECT lab, min(created_unix_s) FROM tokens GROUP BY lab;
    CREATE TABLE teams (
        lab               TEXT NOT NULL,   -- labs.lab
        team              TEXT NOT NULL,   -- as the tests' metadata `team` names it
        first_test_unix_s REAL NOT NULL,
        PRIMARY KEY (lab, team)
    ) WITHOUT ROWID;
    CREATE TABLE equipment (
        daemon_id        TEXT NOT NULL,
        name             TEXT NOT NULL,    -- as the daemon's configuration names it
        family           TEXT NOT NULL,
        address          TEXT NOT NULL,
        last_test_unix_s REAL NOT NULL,    -- family and address are those of this test
        PRIMARY KEY (daemon_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE test_equipment (
        test_key INTEGER NOT NULL,         -- tests.test_key
        name     TEXT NOT NULL,            -- equipment.name of the test's daemon
        family   TEXT NOT NULL,            -- as it was for this test
        address  TEXT NOT NULL,
        role     TEXT NOT NULL,            -- cycler, source, load or chamber
        PRIMARY KEY (test_key, name)
    ) WITHOUT ROWID;
    CREATE TABLE metadata_schemas (
        lab            TEXT NOT NULL,      -- labs.lab
        tier           TEXT NOT NULL,      -- secondary or tertiary
        schema_json    TEXT NOT NULL,
        updated_unix_s REAL NOT NULL,
        PRIMARY KEY (lab, tier)
    ) WITHOUT ROWID;
    ALTER TABLE tests ADD COLUMN team TEXT;
    ALTER TABLE tests ADD COLUMN metadata_problems TEXT;  -- JSON array; NULL when none
    "#,
    // 6: what a token allows: a daemon's uploads and reads its lab, a reader's only reads.
    r#"
    ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'daemon'
        CHECK (role IN ('daemon', 'reader'));
    "#,
    // 7: each lab names its own cells: keyed by (lab, cell id); a cell two labs shared becomes
    // one per lab (each with what was merged so far, first tested when that lab first did).
    r#"
    CREATE TABLE cells_by_lab (
        lab                 TEXT NOT NULL,   -- labs.lab of the tests' daemon; '' for none
        cell_id             TEXT NOT NULL,
        manufacturer        TEXT,
        model               TEXT,
        chemistry           TEXT,
        form_factor         TEXT,
        nominal_capacity_ah REAL,
        nominal_voltage_v   REAL,
        first_test_unix_s   REAL NOT NULL,
        PRIMARY KEY (lab, cell_id)
    ) WITHOUT ROWID;
    INSERT INTO cells_by_lab
        SELECT coalesce(l.lab, ''), c.cell_id, c.manufacturer, c.model, c.chemistry,
            c.form_factor, c.nominal_capacity_ah, c.nominal_voltage_v,
            coalesce(min(t.start_unix_s), c.first_test_unix_s)
        FROM cells c
        LEFT JOIN tests t ON t.cell_id = c.cell_id
        LEFT JOIN daemon_labs l ON l.daemon_id = t.daemon_id
        GROUP BY coalesce(l.lab, ''), c.cell_id, c.manufacturer, c.model, c.chemistry,
            c.form_factor, c.nominal_capacity_ah, c.nominal_voltage_v, c.first_test_unix_s;
    DROP TABLE cells;
    ALTER TABLE cells_by_lab RENAME TO cells;
    "#,
];

/// Samples inserted per multi-row `INSERT`: one statement step per 32 rows instead of per row
/// roughly halves the per-sample cost; 32 x 14 parameters stays far below SQLite's limit.
const ROWS_PER_INSERT: usize = 32;
/// Columns of one sample row, in the order [`bind_sample`] binds them.
const SAMPLE_COLUMNS: usize = 14;

/// The statements' text, built once (it is also the prepared-statement cache key).
static INSERT_SAMPLES_MULTI: LazyLock<String> =
    LazyLock::new(|| insert_samples_sql(ROWS_PER_INSERT));
static INSERT_SAMPLE_ONE: LazyLock<String> = LazyLock::new(|| insert_samples_sql(1));

/// `INSERT OR IGNORE` of `rows` sample rows in one statement.
fn insert_samples_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO samples (test_key, seq, test_time_s, unix_time_s, voltage_v, \
         current_a, cycle, step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh, \
         discharge_energy_wh, temperature_c, ambient_temperature_c) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

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

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn hello(&self, source: &Source<'_>, name: &str) -> Result<u64, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO daemons (daemon_id, store_epoch, name) VALUES (?1, ?2, ?3)
             ON CONFLICT (daemon_id, store_epoch) DO UPDATE SET name = excluded.name",
        )?
        .execute(params![source.daemon_id, source.epoch, name])?;
        let applied = applied_up_to_in(&tx, source)?;
        tx.commit()?;
        Ok(applied)
    }

    pub(super) fn insert_token(&self, t: &TokenRow, secret_hash: &str) -> Result<bool, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            &sql::sqlite(sql::INSERT_LAB),
            params![t.lab, t.created_unix_s],
        )?;
        let inserted = tx.execute(
            &sql::sqlite(sql::INSERT_TOKEN),
            params![
                t.token_id,
                t.lab,
                t.name,
                secret_hash,
                t.created_unix_s,
                t.role.as_str()
            ],
        )? == 1;
        // A refused token (its name is taken) leaves no new lab behind: rolled back on drop.
        if inserted {
            tx.commit()?;
        }
        Ok(inserted)
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

    pub(super) fn labs(&self) -> Result<Vec<(String, f64)>, StoreError> {
        self.select(sql::LABS, [], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    pub(super) fn teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        self.select(sql::TEAMS, [], |r| Ok(team_row!(r.get)))
    }

    pub(super) fn set_schema(
        &self,
        lab: &str,
        tier: &str,
        document: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(&sql::sqlite(sql::INSERT_LAB), params![lab, now])?;
        tx.execute(
            &sql::sqlite(sql::SET_SCHEMA),
            params![lab, tier, document, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(super) fn remove_schema(&self, lab: &str, tier: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.writer).execute(&sql::sqlite(sql::REMOVE_SCHEMA), params![lab, tier])? == 1)
    }

    pub(super) fn schemas(&self, lab: &str) -> Result<Vec<SchemaRow>, StoreError> {
        self.select(sql::SCHEMAS, [lab], |r| Ok(schema_row!(r.get)))
    }

    pub(super) fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError> {
        self.select(sql::TEST_EQUIPMENT, [test_id], |r| {
            Ok(equipment_row!(r.get))
        })
    }

    pub(super) fn revoke_token(&self, name: &str, now: f64) -> Result<bool, StoreError> {
        Ok(lock(&self.writer).execute(&sql::sqlite(sql::REVOKE_TOKEN), params![name, now])? == 1)
    }

    pub(super) fn tokens(&self) -> Result<Vec<(TokenRow, String)>, StoreError> {
        self.select(sql::TOKENS, [], |r| Ok(token_row!(r.get)))
    }

    pub(super) fn bind_daemon(
        &self,
        daemon_id: &str,
        lab: &str,
        now: f64,
    ) -> Result<Option<String>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute(&sql::sqlite(sql::BIND_NEW_DAEMON), params![daemon_id, lab])? == 1 {
            tx.execute(&sql::sqlite(sql::INSERT_LAB), params![lab, now])?;
        }
        let bound = tx
            .query_row(&sql::sqlite(sql::DAEMON_LAB), [daemon_id], |r| r.get(0))
            .optional()?;
        tx.commit()?;
        Ok(bound)
    }

    pub(super) fn assign_daemon(
        &self,
        daemon_id: &str,
        lab: &str,
        now: f64,
    ) -> Result<Option<Option<String>>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: bool =
            tx.query_row(&sql::sqlite(sql::KNOWN_DAEMON), [daemon_id], |r| r.get(0))?;
        if !known {
            return Ok(None);
        }
        let before: Option<String> = tx
            .query_row(&sql::sqlite(sql::DAEMON_LAB), [daemon_id], |r| r.get(0))
            .optional()?;
        tx.execute(&sql::sqlite(sql::INSERT_LAB), params![lab, now])?;
        tx.execute(&sql::sqlite(sql::ASSIGN_DAEMON), params![daemon_id, lab])?;
        tx.execute(&sql::sqlite(sql::ASSIGN_TEAMS), params![daemon_id, lab])?;
        let former = before.as_deref().unwrap_or_default();
        tx.execute(
            &sql::sqlite(sql::ASSIGN_CELLS),
            params![daemon_id, lab, former],
        )?;
        tx.execute(&sql::sqlite(sql::PRUNE_CELLS), params![daemon_id, former])?;
        tx.commit()?;
        Ok(Some(before))
    }

    pub(super) fn applied_up_to(&self, source: &Source<'_>) -> Result<u64, StoreError> {
        applied_up_to_in(&lock(&self.reader), source)
    }

    pub(super) fn apply_batch(
        &self,
        source: &Source<'_>,
        up_to: i64,
        entries: &[Entry],
    ) -> Result<BatchOutcome, StoreError> {
        let mut conn = lock(&self.writer);
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Normally created by Hello; created here too so a batch can never be acked without
        // its resume point being stored.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO daemons (daemon_id, store_epoch, name) VALUES (?1, ?2, '')",
        )?
        .execute(params![source.daemon_id, source.epoch])?;
        // Read inside the transaction: another stream of the same store may have moved it.
        let applied = applied_up_to_in(&tx, source)?;
        let out = apply_entries(&mut tx, source, applied, entries)?;
        tx.prepare_cached(
            "UPDATE daemons SET applied_up_to = max(applied_up_to, ?3)
             WHERE daemon_id = ?1 AND store_epoch = ?2",
        )?
        .execute(params![source.daemon_id, source.epoch, up_to])?;
        tx.commit()?;
        Ok(out)
    }

    pub(super) fn list_tests(&self) -> Result<Vec<TestRowRaw>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEST_COLUMNS} FROM tests ORDER BY start_unix_s, test_key"
        ))?;
        let rows = stmt
            .query_map([], test_row_raw)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub(super) fn test(&self, test_id: &str) -> Result<Option<TestRowRaw>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEST_COLUMNS} FROM tests WHERE test_id = ?1"
        ))?;
        Ok(stmt.query_row([test_id], test_row_raw).optional()?)
    }

    pub(super) fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        conn.prepare_cached("SELECT sample_count FROM tests WHERE test_id = ?1")?
            .query_row([test_id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(u64_from_sql)
            .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))
    }

    pub(super) fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        let conn = lock(&self.reader);
        let key = test_key_in(&conn, test_id)?;
        Ok(conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM samples
                                WHERE test_key = ?1 AND temperature_c IS NOT NULL),
                        EXISTS (SELECT 1 FROM samples
                                WHERE test_key = ?1 AND ambient_temperature_c IS NOT NULL)",
            )?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    pub(super) fn test_key(&self, test_id: &str) -> Result<i64, StoreError> {
        test_key_in(&lock(&self.reader), test_id)
    }

    pub(super) fn sample_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT seq, test_time_s, unix_time_s, voltage_v, current_a, cycle, step,
                    charge_capacity_ah, discharge_capacity_ah, charge_energy_wh,
                    discharge_energy_wh, temperature_c, ambient_temperature_c
             FROM samples WHERE test_key = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![key, from_seq, limit], sample_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(super) fn cells(&self) -> Result<Vec<CellRow>, StoreError> {
        self.select(sql::CELLS, [], |r| Ok(cell_row!(r.get)))
    }

    pub(super) fn daemon_labs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.select(sql::DAEMON_LABS, [], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    pub(super) fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(lock(&self.reader)
            .prepare_cached(&sql::sqlite(sql::PROTOCOL))?
            .query_row([test_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub(super) fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let conn = lock(&self.reader);
        let key = test_key_in(&conn, test_id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT unix_time_s, test_time_s, kind, message, step, cycle
             FROM events WHERE test_key = ?1 ORDER BY unix_time_s, event_key",
        )?;
        let rows = stmt
            .query_map([key], |r| Ok(event_row!(r.get)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub(super) fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT daemon_id, store_epoch, entry_id, kind, test_id, reason
             FROM rejections ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map([], |r| Ok(rejection_row!(r.get)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Brings the schema up to date, one transaction per migration.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            database: path.display().to_string(),
            found,
            supported,
        });
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version as i64 + 1)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = version + 1, "migrated hub schema");
    }
    Ok(())
}

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

fn test_key_in(conn: &Connection, test_id: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT test_key FROM tests WHERE test_id = ?1")?
        .query_row([test_id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))
}

/// The `tests` columns [`test_row_raw`] reads, in its order.
const TEST_COLUMNS: &str = "test_id, daemon_id, channel_id, protocol_name, metadata_json, \
    start_unix_s, end_unix_s, outcome, reason, sample_count, expected_samples, team, \
    metadata_problems";

fn test_row_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<TestRowRaw> {
    Ok(test_row_raw!(r.get))
}

fn sample_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SampleRow> {
    Ok(sample_row!(r.get))
}

impl BatchWrites for Transaction<'_> {
    fn test_owner(&mut self, test_id: &str) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .prepare_cached("SELECT test_key, daemon_id FROM tests WHERE test_id = ?1")?
            .query_row([test_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn insert_test(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        r: &Registration<'_>,
    ) -> Result<(), StoreError> {
        self.prepare_cached(
            "INSERT OR IGNORE INTO tests (test_id, daemon_id, store_epoch, channel_id,
                 protocol_name, protocol_source, plan_json, metadata_json, start_unix_s, team,
                 metadata_problems)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            t.test_id,
            source.daemon_id,
            source.epoch,
            t.channel_id,
            t.protocol_name,
            t.protocol_source,
            t.plan_json,
            r.metadata_json,
            t.start_unix_s,
            r.team,
            r.problems_json
        ])?;
        Ok(())
    }

    fn daemon_lab(&mut self, daemon_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .prepare_cached(&sql::sqlite(sql::DAEMON_LAB))?
            .query_row([daemon_id], |r| r.get(0))
            .optional()?)
    }

    fn lab_schemas(&mut self, lab: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self.prepare_cached(&sql::sqlite(sql::SCHEMAS))?;
        let rows = stmt.query_map([lab], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn record_team(&mut self, lab: &str, team: &str, start: f64) -> Result<(), StoreError> {
        self.prepare_cached(&sql::sqlite(sql::INSERT_TEAM))?
            .execute(params![lab, team, start])?;
        Ok(())
    }

    fn record_equipment(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
    ) -> Result<(), StoreError> {
        for e in &t.equipment {
            self.prepare_cached(&sql::sqlite(sql::UPSERT_EQUIPMENT))?
                .execute(params![
                    source.daemon_id,
                    e.name,
                    e.family,
                    e.address,
                    t.start_unix_s
                ])?;
            self.prepare_cached(&sql::sqlite(sql::INSERT_TEST_EQUIPMENT))?
                .execute(params![t.test_id, e.name, e.family, e.address, e.role])?;
        }
        Ok(())
    }

    fn record_cell_and_channel(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        c: &CellRow,
    ) -> Result<(), StoreError> {
        self.prepare_cached(&sql::sqlite(sql::UPSERT_CELL))?
            .execute(params![
                c.cell_id,
                c.manufacturer,
                c.model,
                c.chemistry,
                c.form_factor,
                c.nominal_capacity_ah,
                c.nominal_voltage_v,
                c.first_test_unix_s,
                c.lab
            ])?;
        self.prepare_cached(&sql::sqlite(sql::INSERT_CHANNEL))?
            .execute(params![source.daemon_id, t.channel_id, t.start_unix_s])?;
        self.prepare_cached(&sql::sqlite(sql::LINK_CELL))?
            .execute(params![t.test_id, c.cell_id])?;
        Ok(())
    }

    fn insert_samples(&mut self, key: i64, b: &SampleBatch) -> Result<u64, StoreError> {
        let n = b.test_time_s.len();
        let mut inserted = 0u64;
        // The hot path: cached statements, all inside the batch's transaction, most rows
        // through the multi-row statement. Validation guarantees every index and every seq is
        // in range.
        let full = n / ROWS_PER_INSERT * ROWS_PER_INSERT;
        if full > 0 {
            let mut stmt = self.prepare_cached(&INSERT_SAMPLES_MULTI)?;
            for start in (0..full).step_by(ROWS_PER_INSERT) {
                for r in 0..ROWS_PER_INSERT {
                    bind_sample(&mut stmt, r * SAMPLE_COLUMNS, key, b, start + r)?;
                }
                inserted += stmt.raw_execute()? as u64;
            }
        }
        if full < n {
            let mut stmt = self.prepare_cached(&INSERT_SAMPLE_ONE)?;
            for i in full..n {
                bind_sample(&mut stmt, 0, key, b, i)?;
                inserted += stmt.raw_execute()? as u64;
            }
        }
        if inserted > 0 {
            self.prepare_cached(
                "UPDATE tests SET sample_count = sample_count + ?2 WHERE test_key = ?1",
            )?
            .execute(params![key, inserted as i64])?;
        }
        Ok(inserted)
    }

    fn insert_event(
        &mut self,
        key: i64,
        source: &Source<'_>,
        entry_id: i64,
        e: &Event,
    ) -> Result<(), StoreError> {
        self.prepare_cached(
            "INSERT OR IGNORE INTO events (test_key, daemon_id, store_epoch, entry_id,
                 unix_time_s, test_time_s, kind, message, step, cycle)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            key,
            source.daemon_id,
            source.epoch,
            entry_id,
            e.unix_time_s,
            e.test_time_s,
            e.kind,
            e.message,
            e.step,
            e.cycle
        ])?;
        Ok(())
    }

    fn end_test(&mut self, key: i64, e: &TestEnded, expected: i64) -> Result<i64, StoreError> {
        Ok(self
            .prepare_cached(
                "UPDATE tests SET end_unix_s = ?2, outcome = ?3, reason = ?4, expected_samples = ?5
                 WHERE test_key = ?1 RETURNING sample_count",
            )?
            .query_row(
                params![key, e.unix_time_s, e.outcome, e.reason, expected],
                |r| r.get(0),
            )?)
    }

    fn insert_rejection(
        &mut self,
        source: &Source<'_>,
        r: &RejectionRecord<'_>,
    ) -> Result<(), StoreError> {
        self.prepare_cached(
            "INSERT OR IGNORE INTO rejections (daemon_id, store_epoch, entry_id, kind, test_id,
                                               reason, entry)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            source.daemon_id,
            source.epoch,
            r.entry_id,
            r.kind,
            r.test_id,
            r.reason,
            r.entry
        ])?;
        Ok(())
    }
}

/// Binds sample `i` of `b` to the 14 parameters after `offset`. `i` must be in range
/// ([`validate_samples`] checked every column's length and the seq range).
fn bind_sample(
    stmt: &mut rusqlite::CachedStatement<'_>,
    offset: usize,
    key: i64,
    b: &SampleBatch,
    i: usize,
) -> rusqlite::Result<()> {
    // A missing (NaN) temperature reading is stored as NULL; no column at all, too.
    let temp = b.temperature_c.get(i).copied().filter(|t| t.is_finite());
    let ambient = b
        .ambient_temperature_c
        .get(i)
        .copied()
        .filter(|t| t.is_finite());
    let seq = b.first_seq as i64 + i as i64;
    stmt.raw_bind_parameter(offset + 1, key)?;
    stmt.raw_bind_parameter(offset + 2, seq)?;
    stmt.raw_bind_parameter(offset + 3, b.test_time_s[i])?;
    stmt.raw_bind_parameter(offset + 4, b.unix_time_s[i])?;
    stmt.raw_bind_parameter(offset + 5, b.voltage_v[i])?;
    stmt.raw_bind_parameter(offset + 6, b.current_a[i])?;
    stmt.raw_bind_parameter(offset + 7, b.cycle[i])?;
    stmt.raw_bind_parameter(offset + 8, b.step[i])?;
    stmt.raw_bind_parameter(offset + 9, b.charge_capacity_ah[i])?;
    stmt.raw_bind_parameter(offset + 10, b.discharge_capacity_ah[i])?;
    stmt.raw_bind_parameter(offset + 11, b.charge_energy_wh[i])?;
    stmt.raw_bind_parameter(offset + 12, b.discharge_energy_wh[i])?;
    stmt.raw_bind_parameter(offset + 13, temp)?;
    stmt.raw_bind_parameter(offset + 14, ambient)?;
    Ok(())
}

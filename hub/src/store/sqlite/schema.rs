//! The SQLite schema: its migrations, and bringing a file up to date.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::writes::insert_chunk;
use super::{
    Encoded, LegacySamples, SampleRow, StoreError, convert_test, sql, u32_from_sql, u64_from_sql,
};
use crate::store::summary::{Backfill, backfill};

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
    // 8: each daemon id bound to its credential (the SHA-256 of the secret its store made) at
    // its first Hello, so nobody else can write as it or move its resume point.
    r#"
    CREATE TABLE daemon_credentials (
        daemon_id    TEXT PRIMARY KEY,
        secret_hash  TEXT NOT NULL,
        bound_unix_s REAL NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 9: per-cycle results of each test, as its daemon computed them (cyclerd_proto::cycles);
    // NULL temperature or resistance where the cycle has none.
    r#"
    CREATE TABLE cycles (
        test_key              INTEGER NOT NULL,   -- tests.test_key
        cycle                 INTEGER NOT NULL,
        complete              INTEGER NOT NULL,   -- 0 while the cycle goes on
        start_test_time_s     REAL    NOT NULL,
        end_test_time_s       REAL    NOT NULL,
        charge_capacity_ah    REAL    NOT NULL,
        discharge_capacity_ah REAL    NOT NULL,
        charge_energy_wh      REAL    NOT NULL,
        discharge_energy_wh   REAL    NOT NULL,
        max_temperature_c     REAL,
        dcir_ohm              REAL,
        first_seq             INTEGER NOT NULL,
        last_seq              INTEGER NOT NULL,
        PRIMARY KEY (test_key, cycle)
    ) WITHOUT ROWID;
    "#,
    // 10: the plan step each sample was taken in (its index in the test's plan, the same on
    // every cycler); NULL for samples from daemons that did not send it.
    r#"
    ALTER TABLE samples ADD COLUMN plan_step INTEGER;
    "#,
    // 11: samples in chunks: a row per run of contiguous seqs of one test (an incoming batch),
    // its columns encoded into one blob (`store::chunk`). The rows of `samples` are converted
    // by `convert_samples` (a transaction per test), which then drops that table.
    r#"
    CREATE TABLE sample_chunks (
        chunk_key INTEGER PRIMARY KEY,
        test_key  INTEGER NOT NULL,   -- tests.test_key
        first_seq INTEGER NOT NULL,
        last_seq  INTEGER NOT NULL,   -- chunks of a test never overlap
        n_samples INTEGER NOT NULL,   -- last_seq - first_seq + 1
        t_min     REAL    NOT NULL,   -- test time range of the chunk
        t_max     REAL    NOT NULL,
        temps     INTEGER NOT NULL,   -- 1: a cell temperature in it, 2: an ambient one
        data      BLOB    NOT NULL,   -- last: read only when decoding
        UNIQUE (test_key, first_seq)
    );
    CREATE INDEX sample_chunks_by_time ON sample_chunks (test_key, t_max);
    "#,
    // 12: per chunk, each plot series' min and max (`store::summary`), so that a plot of a long
    // test reads summaries instead of decoding every chunk; a table of its own so that reading
    // them never walks a chunk's overflow pages. Chunks stored before get theirs from the
    // backfill, which goes on from `summary_backfill` after the last chunk it did.
    r#"
    CREATE TABLE chunk_summaries (
        test_key  INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,   -- the chunk's
        summary   BLOB    NOT NULL,
        PRIMARY KEY (test_key, first_seq)
    ) WITHOUT ROWID;
    CREATE TABLE summary_backfill (test_key INTEGER NOT NULL, first_seq INTEGER NOT NULL);
    INSERT INTO summary_backfill VALUES (-9223372036854775808, -9223372036854775808);
    "#,
    // 13: shares to other hubs (`cyclerhub share`): what each selects and where it goes
    // (`shares`), the entries it has logged for sending, ids assigned once so that the
    // receiving hub's resume point means the same after any restart (`share_log`: the data is
    // re-read when sent), and how far each shared test is logged (`share_progress`). On the
    // receiving side, where each share stream comes from (`share_origins`, by its daemon id).
    r#"
    CREATE TABLE shares (
        name           TEXT PRIMARY KEY,
        target         TEXT    NOT NULL,   -- the receiving hub's URL
        ca_file        TEXT,               -- its CA (PEM) for https://
        token_file     TEXT,               -- the receiver's token, read at each connection
        salt_file      TEXT,               -- the lab secret; NULL: not anonymised
        selection      TEXT    NOT NULL,   -- JSON (share::Selection)
        once           INTEGER NOT NULL,   -- 1: what matched at `share add`, then done
        origin         TEXT    NOT NULL,   -- how this hub names itself to the receiver
        stream_id      TEXT    NOT NULL,   -- the daemon id the receiver knows the share by
        stream_secret  TEXT    NOT NULL,   -- its credential there
        epoch          INTEGER NOT NULL,
        created_unix_s REAL    NOT NULL,
        acked          INTEGER NOT NULL DEFAULT 0,
        state          TEXT    NOT NULL DEFAULT 'waiting',
        last_error     TEXT,
        updated_unix_s REAL
    );
    CREATE TABLE share_log (
        share   TEXT    NOT NULL,
        id      INTEGER NOT NULL,
        test_id TEXT    NOT NULL,
        kind    TEXT    NOT NULL,   -- registered, samples, event, cycle, ended
        a       INTEGER NOT NULL,   -- samples: first seq; event: its index; cycle: its number
        b       INTEGER NOT NULL,   -- samples: the seq after the last
        PRIMARY KEY (share, id)
    ) WITHOUT ROWID;
    CREATE TABLE share_progress (
        share    TEXT    NOT NULL,
        test_id  TEXT    NOT NULL,
        next_seq INTEGER NOT NULL,
        events   INTEGER NOT NULL,
        cycles   INTEGER NOT NULL,   -- the last complete cycle logged
        ended    INTEGER NOT NULL,
        PRIMARY KEY (share, test_id)
    ) WITHOUT ROWID;
    CREATE TABLE share_origins (
        daemon_id    TEXT PRIMARY KEY,
        hub          TEXT    NOT NULL,
        share        TEXT    NOT NULL,
        anonymised   INTEGER NOT NULL,
        selection    TEXT    NOT NULL,
        first_unix_s REAL    NOT NULL,
        last_unix_s  REAL    NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 14: quality findings of each test's samples (cyclerd_proto::quality), by who found
    // them ('daemon' as it recorded them, 'hub' as it stored them), the latest per run; and the
    // hub's own checker state per test, so its checks go on from batch to batch.
    r#"
    CREATE TABLE quality_findings (
        test_key          INTEGER NOT NULL,   -- tests.test_key
        source            TEXT    NOT NULL,   -- daemon or hub
        check_name        TEXT    NOT NULL,
        first_seq         INTEGER NOT NULL,
        last_seq          INTEGER NOT NULL,
        open              INTEGER NOT NULL,   -- 1 while the run goes on
        first_test_time_s REAL    NOT NULL,
        last_test_time_s  REAL    NOT NULL,
        missing_s         REAL    NOT NULL,
        reason            TEXT    NOT NULL,
        PRIMARY KEY (test_key, source, check_name, first_seq)
    ) WITHOUT ROWID;
    CREATE TABLE quality_state (
        test_key INTEGER PRIMARY KEY,         -- tests.test_key
        state    TEXT    NOT NULL             -- the checker's state, JSON
    );
    "#,
];

/// Brings the schema up to date, one transaction per migration.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
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
    convert_samples(conn, path)?;
    backfill(&mut SqliteBackfill(conn), &path.display().to_string())?;
    Ok(())
}

/// The summary backfill on the writer, a transaction per page.
struct SqliteBackfill<'a>(&'a mut Connection);

impl Backfill for SqliteBackfill<'_> {
    fn cursor(&mut self) -> Result<Option<(i64, i64)>, StoreError> {
        Ok(self
            .0
            .query_row(sql::BACKFILL_CURSOR, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn chunks_after(
        &mut self,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        let mut stmt = self.0.prepare_cached(&sql::sqlite(sql::CHUNKS_AFTER))?;
        let rows = stmt.query_map(params![after.0, after.1, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn store(
        &mut self,
        summaries: &[(i64, i64, Vec<u8>)],
        to: Option<(i64, i64)>,
    ) -> Result<(), StoreError> {
        let tx = self
            .0
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut put = tx.prepare_cached(&sql::sqlite(sql::BACKFILL_SUMMARY))?;
            for (key, first_seq, summary) in summaries {
                put.execute(params![key, first_seq, summary])?;
            }
        }
        match to {
            Some((key, seq)) => tx.execute(&sql::sqlite(sql::MOVE_BACKFILL), params![key, seq])?,
            None => tx.execute(sql::END_BACKFILL, [])?,
        };
        tx.commit()?;
        Ok(())
    }
}

/// Converts the rows of the former `samples` table to chunks, a transaction per test (an
/// interrupted conversion goes on with the tests it had not finished), then drops the table.
fn convert_samples(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let legacy: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples')",
        [],
        |r| r.get(0),
    )?;
    if !legacy {
        return Ok(());
    }
    let mut after = i64::MIN;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut legacy = Legacy(&tx);
        let Some(key) = legacy.next_legacy_test(after)? else {
            break;
        };
        let n = convert_test(&mut legacy, key)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), test_key = key, samples = n, "converted samples to chunks");
        after = key;
    }
    conn.execute_batch("DROP TABLE samples")?;
    Ok(())
}

/// The former table on a conversion's transaction.
struct Legacy<'a>(&'a Connection);

impl LegacySamples for Legacy<'_> {
    fn next_legacy_test(&mut self, after: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .0
            .prepare_cached(&sql::sqlite(sql::NEXT_LEGACY_TEST))?
            .query_row([after], |r| r.get(0))
            .optional()?)
    }

    fn has_chunks(&mut self, key: i64) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached(&sql::sqlite(sql::HAS_CHUNKS))?
            .query_row([key], |r| r.get(0))?)
    }

    fn legacy_page(
        &mut self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let mut stmt = self.0.prepare_cached(&sql::sqlite(sql::LEGACY_PAGE))?;
        let rows = stmt.query_map(params![key, from_seq, limit], |r| Ok(sample_row!(r.get)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_chunk(&mut self, key: i64, first_seq: i64, c: &Encoded) -> Result<bool, StoreError> {
        insert_chunk(self.0, key, first_seq, c)
    }
}

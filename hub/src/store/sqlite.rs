//! The hub's SQLite database: schema, the batched idempotent apply of ingest entries, queries.
//!
//! One [`HubStore`] holds two connections to one file: the *writer*, behind a mutex so that
//! exactly one thread writes at a time however many daemons stream at once, and a *reader* for
//! queries, which in WAL mode sees committed data without blocking (or being blocked by) the
//! writer. Every method is blocking; async callers run them on `spawn_blocking`.
//!
//! Idempotence comes from the schema: samples are keyed by `(test_key, seq)`, events by the
//! entry that carried them `(daemon_id, store_epoch, entry_id)`, tests by `test_id`, and every
//! insert is `INSERT OR IGNORE`. Re-applying any entry is therefore a no-op.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use cyclerd_proto::ingest::{
    Entry, Event, Hello, Rejection, SampleBatch, TestEnded, TestRegistered, entry::Body,
};
use prost::Message as _;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

/// Errors of the hub's storage layer. Following the std convention, a message does not repeat
/// its `source()`: print the chain (`{:#}` with anyhow, or [`error_chain`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or configured.
    #[error("cannot open hub database {}", path.display())]
    Open {
        /// The file we tried to open.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file was written by a newer cyclerhub whose schema we do not know.
    #[error(
        "hub database {} has schema version {found}, but this cyclerhub only knows up to \
         {supported}; use a newer cyclerhub",
        path.display()
    )]
    SchemaTooNew {
        /// The file in question.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest schema version this build can migrate to.
        supported: i64,
    },
    /// The test id is not in the hub.
    #[error("no test with id {0:?} in the hub")]
    NoSuchTest(String),
    /// A number from the wire does not fit SQLite's signed 64-bit integers.
    #[error("{0} is out of range (the hub stores at most 2^63-1)")]
    OutOfRange(&'static str),
    /// Stored data that the hub itself wrote does not parse back.
    #[error("corrupt hub data: {0}")]
    Corrupt(String),
    /// Any other SQLite failure (I/O error, disk full, ...).
    #[error("hub database error")]
    Sqlite(#[from] rusqlite::Error),
}

/// An error and all its sources, `: `-separated, for places that only take one string (gRPC
/// status messages, logs).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

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

/// A handle on the hub database; cheap to clone, shareable between threads.
#[derive(Clone)]
pub struct HubStore {
    /// Shared so that every stream's task and the query side use the same two connections.
    inner: Arc<Inner>,
}

struct Inner {
    /// The only connection that writes: the mutex is what makes the hub a single writer.
    writer: Mutex<Connection>,
    /// Read-only connection for queries; WAL lets it read alongside the writer.
    reader: Mutex<Connection>,
    /// For error messages.
    path: PathBuf,
}

impl std::fmt::Debug for HubStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

/// One test as listed by [`HubStore::list_tests`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestRow {
    /// The daemon's UUIDv7 for the test: the id users pass to `export`.
    pub test_id: String,
    /// Which daemon ran it, to tell labs and benches apart.
    pub daemon_id: String,
    /// `DEVICE/N` channel the test ran on.
    pub channel_id: String,
    /// Name of the protocol, as the engineer called it.
    pub protocol_name: String,
    /// Primary metadata (cell id, operator, chemistry, ...), sorted by key.
    pub metadata: BTreeMap<String, String>,
    /// When the test started (Unix seconds).
    pub start_unix_s: f64,
    /// When it ended; `None` while the hub has not seen it end.
    pub end_unix_s: Option<f64>,
    /// `finished`, `stopped` or `faulted`; `None` while running.
    pub outcome: Option<String>,
    /// Why it ended, in words (e.g. the alarm that faulted it).
    pub reason: Option<String>,
    /// Samples the hub holds for the test.
    pub sample_count: u64,
    /// Samples the daemon said the test produced, once ended; compare with `sample_count`.
    pub expected_samples: Option<u64>,
}

impl TestRow {
    /// `running` until the test ends, then its outcome.
    pub fn state(&self) -> &str {
        self.outcome.as_deref().unwrap_or("running")
    }
}

/// One sample, in BDF units; current positive when charging.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// Sequence number, contiguous per test from 0: gaps mean missing data.
    pub seq: u64,
    /// Seconds since the test started.
    pub test_time_s: f64,
    /// Wall-clock time of the sample (Unix seconds).
    pub unix_time_s: f64,
    /// Cell voltage, V.
    pub voltage_v: f64,
    /// Current, A; positive = charging (BDF sign).
    pub current_a: f64,
    /// Cycle counter of the protocol.
    pub cycle: u32,
    /// Step counter of the protocol.
    pub step: u32,
    /// Cumulative charge capacity, Ah.
    pub charge_capacity_ah: f64,
    /// Cumulative discharge capacity, Ah.
    pub discharge_capacity_ah: f64,
    /// Cumulative charge energy, Wh.
    pub charge_energy_wh: f64,
    /// Cumulative discharge energy, Wh.
    pub discharge_energy_wh: f64,
    /// Cell (surface) temperature, °C; `None` when the channel has no sensor.
    pub temperature_c: Option<f64>,
    /// Air temperature of the chamber the cell sits in, °C; `None` outside a chamber.
    pub ambient_temperature_c: Option<f64>,
}

/// One event of a test (step change, state change, alarm, info).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Wall-clock time (Unix seconds).
    pub unix_time_s: f64,
    /// Seconds since the test started.
    pub test_time_s: f64,
    /// `step`, `state`, `alarm` or `info`.
    pub kind: String,
    /// Human-readable text.
    pub message: String,
    /// Protocol step at the time.
    pub step: u32,
    /// Protocol cycle at the time.
    pub cycle: u32,
}

/// An entry the hub refused, as recorded in the `rejections` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionRow {
    /// Daemon that sent it.
    pub daemon_id: String,
    /// Store epoch the entry id belongs to.
    pub store_epoch: u64,
    /// The entry's id in the daemon's outbox, to find the parked copy there.
    pub entry_id: u64,
    /// Entry type (`test_registered`, `samples`, `event`, `test_ended`, `none`).
    pub kind: String,
    /// Test the entry was about, when it named one.
    pub test_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
}

/// What [`HubStore::apply_batch`] did; the server turns it into Rejections and one Ack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Highest entry id of the batch: the cumulative Ack to send (0 for an empty batch).
    pub up_to: u64,
    /// Entries applied now.
    pub applied: usize,
    /// Entries skipped because the hub had already handled them (id <= applied_up_to).
    pub duplicates: usize,
    /// Entries refused now; each is recorded and must be answered with a Rejection.
    pub rejections: Vec<Rejection>,
    /// Sample rows actually inserted (re-sent samples are not counted).
    pub samples_inserted: u64,
}

/// Why one entry did not apply: refused (answer with a Rejection) or storage failed (abort).
enum ApplyError {
    Reject(String),
    Store(rusqlite::Error),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        ApplyError::Store(e)
    }
}

/// Who is writing: the daemon store an entry came from.
struct Source<'a> {
    daemon_id: &'a str,
    epoch: i64,
}

/// Store epochs are opaque u64 tags, never compared: bit-cast to fit SQLite's i64.
fn epoch_to_sql(epoch: u64) -> i64 {
    i64::from_ne_bytes(epoch.to_ne_bytes())
}

fn epoch_from_sql(epoch: i64) -> u64 {
    u64::from_ne_bytes(epoch.to_ne_bytes())
}

/// Counters are non-negative in the database; a negative one would be our own corruption.
fn u64_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn u32_from_sql(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock dropped its transaction, which rolled back: the
    // connection itself is fine to keep using.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn body_kind(body: Option<&Body>) -> (&'static str, Option<&str>) {
    match body {
        Some(Body::TestRegistered(t)) => ("test_registered", Some(&t.test_id)),
        Some(Body::Samples(s)) => ("samples", Some(&s.test_id)),
        Some(Body::Event(e)) => ("event", Some(&e.test_id)),
        Some(Body::TestEnded(e)) => ("test_ended", Some(&e.test_id)),
        None => ("none", None),
    }
}

impl HubStore {
    /// Opens (creating if needed) the hub database at `path` and migrates it to the current
    /// schema. WAL mode, `synchronous=FULL`: an Ack is only sent after a commit that survives
    /// power loss, because the daemon deletes what the hub acked.
    pub fn open(path: impl AsRef<Path>) -> Result<HubStore, StoreError> {
        let path = path.as_ref().to_path_buf();
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

        Ok(HubStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                path,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Records a daemon's Hello and returns its resume point: the highest entry id applied for
    /// `(daemon_id, store_epoch)`, 0 when the hub has never seen that store.
    pub fn hello(&self, hello: &Hello) -> Result<u64, StoreError> {
        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "INSERT INTO daemons (daemon_id, store_epoch, name) VALUES (?1, ?2, ?3)
             ON CONFLICT (daemon_id, store_epoch) DO UPDATE SET name = excluded.name",
        )?
        .execute(params![
            hello.daemon_id,
            epoch_to_sql(hello.store_epoch),
            hello.daemon_name
        ])?;
        let applied = applied_up_to_in(&tx, &hello.daemon_id, epoch_to_sql(hello.store_epoch))?;
        tx.commit()?;
        Ok(applied)
    }

    /// Highest entry id applied for `(daemon_id, store_epoch)`; 0 when none.
    pub fn applied_up_to(&self, daemon_id: &str, store_epoch: u64) -> Result<u64, StoreError> {
        let conn = lock(&self.inner.reader);
        applied_up_to_in(&conn, daemon_id, epoch_to_sql(store_epoch))
    }

    /// Applies a batch of entries from one daemon store in ONE transaction, together with the
    /// new `applied_up_to`, and commits. Entries the hub already handled are skipped; entries it
    /// cannot apply are recorded in `rejections` and reported in the outcome. Only a storage
    /// failure returns `Err`, and then nothing of the batch is kept (so nothing may be acked).
    ///
    /// `entries` must have strictly increasing ids (the server checks this on the stream).
    pub fn apply_batch(
        &self,
        daemon_id: &str,
        store_epoch: u64,
        entries: &[Entry],
    ) -> Result<BatchOutcome, StoreError> {
        let Some(last) = entries.last() else {
            return Ok(BatchOutcome::default());
        };
        // Checked before touching the database, so SQL comparisons of ids stay meaningful.
        let up_to = i64::try_from(last.id).map_err(|_| StoreError::OutOfRange("entry id"))?;
        let source = Source {
            daemon_id,
            epoch: epoch_to_sql(store_epoch),
        };
        let mut out = BatchOutcome {
            up_to: last.id,
            ..BatchOutcome::default()
        };

        let mut conn = lock(&self.inner.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Normally created by Hello; created here too so a batch can never be acked without
        // its resume point being stored.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO daemons (daemon_id, store_epoch, name) VALUES (?1, ?2, '')",
        )?
        .execute(params![daemon_id, source.epoch])?;
        // Read inside the transaction: another stream of the same store may have moved it.
        let applied = applied_up_to_in(&tx, daemon_id, source.epoch)?;

        for entry in entries {
            if entry.id <= applied {
                out.duplicates += 1;
                continue;
            }
            match apply_entry(&tx, &source, entry) {
                Ok(inserted) => {
                    out.applied += 1;
                    out.samples_inserted += inserted;
                }
                Err(ApplyError::Reject(reason)) => {
                    record_rejection(&tx, &source, entry, &reason)?;
                    out.rejections.push(Rejection {
                        entry_id: entry.id,
                        reason,
                    });
                }
                Err(ApplyError::Store(e)) => return Err(e.into()),
            }
        }

        tx.prepare_cached(
            "UPDATE daemons SET applied_up_to = max(applied_up_to, ?3)
             WHERE daemon_id = ?1 AND store_epoch = ?2",
        )?
        .execute(params![daemon_id, source.epoch, up_to])?;
        tx.commit()?;
        Ok(out)
    }

    /// Every test, oldest first.
    pub fn list_tests(&self) -> Result<Vec<TestRow>, StoreError> {
        let conn = lock(&self.inner.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEST_COLUMNS} FROM tests ORDER BY start_unix_s, test_key"
        ))?;
        let rows = stmt
            .query_map([], test_row_raw)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(TestRowRaw::finish).collect()
    }

    /// One test, or `None` when the hub does not have it.
    pub fn test(&self, test_id: &str) -> Result<Option<TestRow>, StoreError> {
        let conn = lock(&self.inner.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEST_COLUMNS} FROM tests WHERE test_id = ?1"
        ))?;
        stmt.query_row([test_id], test_row_raw)
            .optional()?
            .map(TestRowRaw::finish)
            .transpose()
    }

    /// Number of samples the hub holds for the test.
    pub fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
        let conn = lock(&self.inner.reader);
        conn.prepare_cached("SELECT sample_count FROM tests WHERE test_id = ?1")?
            .query_row([test_id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(u64_from_sql)
            .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))
    }

    /// Whether any sample of the test has a cell temperature and an ambient (chamber)
    /// temperature: decides the BDF temperature columns.
    pub fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        let conn = lock(&self.inner.reader);
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

    /// All samples of a test in `seq` order. Loads them all; for big tests prefer
    /// [`HubStore::for_each_sample`].
    pub fn samples(&self, test_id: &str) -> Result<Vec<SampleRow>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_sample(test_id, |s| {
            rows.push(s.clone());
            Ok::<_, StoreError>(())
        })?;
        Ok(rows)
    }

    /// Streams the samples of a test in `seq` order through `f`, without loading them all;
    /// returns how many were visited. Stops at the first error `f` returns.
    pub fn for_each_sample<E: From<StoreError>>(
        &self,
        test_id: &str,
        mut f: impl FnMut(&SampleRow) -> Result<(), E>,
    ) -> Result<u64, E> {
        let conn = lock(&self.inner.reader);
        let key = test_key_in(&conn, test_id)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, test_time_s, unix_time_s, voltage_v, current_a, cycle, step,
                        charge_capacity_ah, discharge_capacity_ah, charge_energy_wh,
                        discharge_energy_wh, temperature_c, ambient_temperature_c
                 FROM samples WHERE test_key = ?1 ORDER BY seq",
            )
            .map_err(StoreError::from)?;
        let mut rows = stmt.query([key]).map_err(StoreError::from)?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(StoreError::from)? {
            let sample = sample_row(r).map_err(StoreError::from)?;
            f(&sample)?;
            n += 1;
        }
        Ok(n)
    }

    /// The events of a test, in time order.
    pub fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let conn = lock(&self.inner.reader);
        let key = test_key_in(&conn, test_id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT unix_time_s, test_time_s, kind, message, step, cycle
             FROM events WHERE test_key = ?1 ORDER BY unix_time_s, event_key",
        )?;
        let rows = stmt
            .query_map([key], |r| {
                Ok(EventRow {
                    unix_time_s: r.get(0)?,
                    test_time_s: r.get(1)?,
                    kind: r.get(2)?,
                    message: r.get(3)?,
                    step: u32_from_sql(r.get(4)?),
                    cycle: u32_from_sql(r.get(5)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every rejected entry, in the order they were recorded.
    pub fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
        let conn = lock(&self.inner.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT daemon_id, store_epoch, entry_id, kind, test_id, reason
             FROM rejections ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RejectionRow {
                    daemon_id: r.get(0)?,
                    store_epoch: epoch_from_sql(r.get(1)?),
                    entry_id: u64_from_sql(r.get(2)?),
                    kind: r.get(3)?,
                    test_id: r.get(4)?,
                    reason: r.get(5)?,
                })
            })?
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
            path: path.to_path_buf(),
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

fn applied_up_to_in(conn: &Connection, daemon_id: &str, epoch: i64) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT applied_up_to FROM daemons WHERE daemon_id = ?1 AND store_epoch = ?2",
        )?
        .query_row(params![daemon_id, epoch], |r| r.get::<_, i64>(0))
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

const TEST_COLUMNS: &str = "test_id, daemon_id, channel_id, protocol_name, metadata_json, \
    start_unix_s, end_unix_s, outcome, reason, sample_count, expected_samples";

/// A `tests` row before its metadata JSON is parsed (which can fail outside rusqlite).
struct TestRowRaw {
    row: TestRow,
    metadata_json: String,
}

impl TestRowRaw {
    fn finish(mut self) -> Result<TestRow, StoreError> {
        self.row.metadata = serde_json::from_str(&self.metadata_json).map_err(|e| {
            StoreError::Corrupt(format!(
                "metadata of test {} is not a JSON object of strings: {e}",
                self.row.test_id
            ))
        })?;
        Ok(self.row)
    }
}

fn test_row_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<TestRowRaw> {
    Ok(TestRowRaw {
        row: TestRow {
            test_id: r.get(0)?,
            daemon_id: r.get(1)?,
            channel_id: r.get(2)?,
            protocol_name: r.get(3)?,
            metadata: BTreeMap::new(),
            start_unix_s: r.get(5)?,
            end_unix_s: r.get(6)?,
            outcome: r.get(7)?,
            reason: r.get(8)?,
            sample_count: u64_from_sql(r.get(9)?),
            expected_samples: r.get::<_, Option<i64>>(10)?.map(u64_from_sql),
        },
        metadata_json: r.get(4)?,
    })
}

fn sample_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SampleRow> {
    Ok(SampleRow {
        seq: u64_from_sql(r.get(0)?),
        test_time_s: r.get(1)?,
        unix_time_s: r.get(2)?,
        voltage_v: r.get(3)?,
        current_a: r.get(4)?,
        cycle: u32_from_sql(r.get(5)?),
        step: u32_from_sql(r.get(6)?),
        charge_capacity_ah: r.get(7)?,
        discharge_capacity_ah: r.get(8)?,
        charge_energy_wh: r.get(9)?,
        discharge_energy_wh: r.get(10)?,
        temperature_c: r.get(11)?,
        ambient_temperature_c: r.get(12)?,
    })
}

fn record_rejection(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    entry: &Entry,
    reason: &str,
) -> Result<(), StoreError> {
    let (kind, test_id) = body_kind(entry.body.as_ref());
    let id = i64::try_from(entry.id).map_err(|_| StoreError::OutOfRange("entry id"))?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO rejections (daemon_id, store_epoch, entry_id, kind, test_id,
                                           reason, entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        source.daemon_id,
        source.epoch,
        id,
        kind,
        test_id,
        reason,
        entry.encode_to_vec()
    ])?;
    tracing::warn!(
        daemon_id = source.daemon_id,
        entry_id = entry.id,
        kind,
        reason,
        "rejected entry"
    );
    Ok(())
}

/// Applies one entry; returns the number of sample rows inserted. Validates everything before
/// writing anything, so a rejected entry leaves no trace but its rejection record.
fn apply_entry(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    entry: &Entry,
) -> Result<u64, ApplyError> {
    match &entry.body {
        None => Err(ApplyError::Reject(
            "entry has no body (an entry type this hub does not know? upgrade the hub)".into(),
        )),
        Some(Body::TestRegistered(t)) => apply_test_registered(tx, source, t).map(|()| 0),
        Some(Body::Samples(b)) => apply_samples(tx, source, b),
        Some(Body::Event(e)) => apply_event(tx, source, entry.id, e).map(|()| 0),
        Some(Body::TestEnded(e)) => apply_test_ended(tx, source, e).map(|()| 0),
    }
}

fn reject<T>(reason: impl Into<String>) -> Result<T, ApplyError> {
    Err(ApplyError::Reject(reason.into()))
}

/// The test's key, if the hub knows the test and it belongs to the writing daemon.
fn owned_test_key(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    test_id: &str,
) -> Result<i64, ApplyError> {
    let found: Option<(i64, String)> = tx
        .prepare_cached("SELECT test_key, daemon_id FROM tests WHERE test_id = ?1")?
        .query_row([test_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match found {
        None => reject(format!(
            "unknown test {test_id:?}: the hub has no TestRegistered for it"
        )),
        Some((_, owner)) if owner != source.daemon_id => reject(format!(
            "test {test_id:?} belongs to daemon {owner}, not to {}",
            source.daemon_id
        )),
        Some((key, _)) => Ok(key),
    }
}

fn apply_test_registered(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    t: &TestRegistered,
) -> Result<(), ApplyError> {
    if t.test_id.is_empty() {
        return reject("TestRegistered has an empty test_id");
    }
    if t.channel_id.is_empty() {
        return reject(format!("test {:?} has an empty channel_id", t.test_id));
    }
    if !t.start_unix_s.is_finite() {
        return reject(format!("test {:?} has a non-finite start time", t.test_id));
    }
    let owner: Option<String> = tx
        .prepare_cached("SELECT daemon_id FROM tests WHERE test_id = ?1")?
        .query_row([&t.test_id], |r| r.get(0))
        .optional()?;
    match owner {
        // Re-sent registration: already applied.
        Some(owner) if owner == source.daemon_id => return Ok(()),
        Some(owner) => {
            return reject(format!(
                "test id {:?} is already registered by daemon {owner}",
                t.test_id
            ));
        }
        None => {}
    }
    // Sorted keys: stable, diffable JSON.
    let metadata: BTreeMap<&str, &str> = t
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let metadata_json = match serde_json::to_string(&metadata) {
        Ok(json) => json,
        Err(e) => return reject(format!("metadata cannot be stored as JSON: {e}")),
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO tests (test_id, daemon_id, store_epoch, channel_id, protocol_name,
             protocol_source, plan_json, metadata_json, start_unix_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        t.test_id,
        source.daemon_id,
        source.epoch,
        t.channel_id,
        t.protocol_name,
        t.protocol_source,
        t.plan_json,
        metadata_json,
        t.start_unix_s
    ])?;
    Ok(())
}

/// Checks a sample batch's shape and values, so the insert loop cannot fail on them.
fn validate_samples(b: &SampleBatch) -> Result<(), String> {
    let n = b.test_time_s.len();
    let lens = [
        ("unix_time_s", b.unix_time_s.len()),
        ("voltage_v", b.voltage_v.len()),
        ("current_a", b.current_a.len()),
        ("cycle", b.cycle.len()),
        ("step", b.step.len()),
        ("charge_capacity_ah", b.charge_capacity_ah.len()),
        ("discharge_capacity_ah", b.discharge_capacity_ah.len()),
        ("charge_energy_wh", b.charge_energy_wh.len()),
        ("discharge_energy_wh", b.discharge_energy_wh.len()),
    ];
    let optional = [
        ("temperature_c", b.temperature_c.len()),
        ("ambient_temperature_c", b.ambient_temperature_c.len()),
    ];
    let optional_ok = optional.iter().all(|&(_, len)| len == 0 || len == n);
    if lens.iter().any(|&(_, len)| len != n) || !optional_ok {
        let mut detail = format!("test_time_s {n}");
        for (name, len) in lens.iter().chain(&optional) {
            detail.push_str(&format!(", {name} {len}"));
        }
        return Err(format!(
            "sample batch columns have unequal lengths ({detail}); every column must have one \
             value per sample (temperature_c and ambient_temperature_c may be empty)"
        ));
    }
    let last = (n as u64)
        .checked_sub(1)
        .and_then(|d| b.first_seq.checked_add(d))
        .unwrap_or(b.first_seq);
    if i64::try_from(last).is_err() {
        return Err(format!("sample seq {last} is out of range (max 2^63-1)"));
    }
    // SQLite stores NaN as NULL, which the NOT NULL columns would refuse mid-batch.
    let float_cols: [(&str, &[f64]); 8] = [
        ("test_time_s", &b.test_time_s),
        ("unix_time_s", &b.unix_time_s),
        ("voltage_v", &b.voltage_v),
        ("current_a", &b.current_a),
        ("charge_capacity_ah", &b.charge_capacity_ah),
        ("discharge_capacity_ah", &b.discharge_capacity_ah),
        ("charge_energy_wh", &b.charge_energy_wh),
        ("discharge_energy_wh", &b.discharge_energy_wh),
    ];
    for (name, col) in float_cols {
        if let Some(i) = col.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "non-finite {name} ({}) at seq {}",
                col[i],
                b.first_seq.saturating_add(i as u64)
            ));
        }
    }
    Ok(())
}

fn apply_samples(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    b: &SampleBatch,
) -> Result<u64, ApplyError> {
    validate_samples(b).map_err(ApplyError::Reject)?;
    let key = owned_test_key(tx, source, &b.test_id)?;
    let n = b.test_time_s.len();
    if n == 0 {
        return Ok(0);
    }
    let mut inserted = 0u64;
    {
        // The hot path: cached statements, all inside the batch's transaction, most rows
        // through the multi-row statement. Validation above guarantees every index and every
        // seq is in range.
        let full = n / ROWS_PER_INSERT * ROWS_PER_INSERT;
        if full > 0 {
            let mut stmt = tx.prepare_cached(&INSERT_SAMPLES_MULTI)?;
            for start in (0..full).step_by(ROWS_PER_INSERT) {
                for r in 0..ROWS_PER_INSERT {
                    bind_sample(&mut stmt, r * SAMPLE_COLUMNS, key, b, start + r)?;
                }
                inserted += stmt.raw_execute()? as u64;
            }
        }
        if full < n {
            let mut stmt = tx.prepare_cached(&INSERT_SAMPLE_ONE)?;
            for i in full..n {
                bind_sample(&mut stmt, 0, key, b, i)?;
                inserted += stmt.raw_execute()? as u64;
            }
        }
    }
    if inserted > 0 {
        tx.prepare_cached("UPDATE tests SET sample_count = sample_count + ?2 WHERE test_key = ?1")?
            .execute(params![key, inserted as i64])?;
    }
    Ok(inserted)
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

fn apply_event(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    entry_id: u64,
    e: &Event,
) -> Result<(), ApplyError> {
    if !e.unix_time_s.is_finite() || !e.test_time_s.is_finite() {
        return reject(format!(
            "event of test {:?} has a non-finite time",
            e.test_id
        ));
    }
    let key = owned_test_key(tx, source, &e.test_id)?;
    let entry_id =
        i64::try_from(entry_id).map_err(|_| ApplyError::Reject("entry id out of range".into()))?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO events (test_key, daemon_id, store_epoch, entry_id, unix_time_s,
             test_time_s, kind, message, step, cycle)
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

fn apply_test_ended(
    tx: &Transaction<'_>,
    source: &Source<'_>,
    e: &TestEnded,
) -> Result<(), ApplyError> {
    if !e.unix_time_s.is_finite() {
        return reject(format!("end of test {:?} has a non-finite time", e.test_id));
    }
    let Ok(expected) = i64::try_from(e.sample_count) else {
        return reject(format!("sample_count {} is out of range", e.sample_count));
    };
    let key = owned_test_key(tx, source, &e.test_id)?;
    let held: i64 = tx
        .prepare_cached(
            "UPDATE tests SET end_unix_s = ?2, outcome = ?3, reason = ?4, expected_samples = ?5
             WHERE test_key = ?1 RETURNING sample_count",
        )?
        .query_row(
            params![key, e.unix_time_s, e.outcome, e.reason, expected],
            |r| r.get(0),
        )?;
    // Samples precede the end in the daemon's log, so by now they should all be here.
    if held != expected {
        tracing::warn!(
            test_id = e.test_id,
            held,
            expected,
            "test ended but the hub holds a different number of samples than the daemon produced"
        );
    }
    Ok(())
}

//! The PostgreSQL backend: the SQLite design on a server. One *writer* connection behind a
//! mutex (the hub stays a single writer) and one read-only *reader* connection for queries;
//! each reconnects on its next use after it broke (the server restarted, the network went).
//!
//! Samples are bulk-loaded with binary COPY inside the batch's transaction. When none of a
//! batch's rows is held yet (an index range probe says so) they are copied straight into
//! `samples`; otherwise (a re-send, a backfill overlapping what is held) into a temporary
//! staging table, from which one statement moves them into `samples` ignoring the rows already
//! there (`ON CONFLICT DO NOTHING`) and adds the number actually inserted to the test's
//! `sample_count`. That keeps the apply idempotent (a plain COPY would fail on a re-sent row)
//! and the counts exact, at COPY's speed in the usual case: `INSERT ... ON CONFLICT` costs about
//! twice a plain insert per row.
//!
//! The sync `postgres` client runs its connection on a small runtime of its own, which tokio
//! refuses to start (or drop) on a thread that runs an async runtime; see [`off_runtime`].
//!
//! TLS to the server follows the URL's `sslmode` and `sslrootcert`, as with libpq; see [`tls`].

mod tls;

use std::sync::{Mutex, MutexGuard, PoisonError};

use cyclerd_proto::ingest::{Entry, Event, SampleBatch, TestEnded, TestRegistered};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, GenericClient, Row, Statement, Transaction};

use super::sql;
use super::{
    BatchOutcome, BatchWrites, CellRow, Equipment, EventRow, Registration, RejectionRecord,
    RejectionRow, SampleRow, SchemaRow, Source, StoreError, TeamRow, TestRow, TestRowRaw,
    apply_entries, epoch_from_sql, u32_from_sql, u64_from_sql,
};
use crate::auth::TokenRow;
pub use tls::TlsSettingsError;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub(super) fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Schema migrations; `MIGRATIONS[i]` is schema version `i + 1`, recorded in
/// `schema_migrations` by the transaction that applies it. Append only: a released migration is
/// never edited.
const MIGRATIONS: &[&str] = &[
    // 1: the SQLite schema (both of its migrations) in PostgreSQL's types. Foreign keys are
    // documented in comments but not declared: the apply path checks the parent test itself,
    // and per-row FK lookups would tax the COPY path.
    r#"
    -- One row per daemon store (a recreated store gets a new epoch and starts its ids at 1).
    CREATE TABLE daemons (
        daemon_id     text   NOT NULL,
        store_epoch   bigint NOT NULL,            -- u64 bit-cast to i64
        name          text   NOT NULL,
        applied_up_to bigint NOT NULL DEFAULT 0,  -- the resume point
        PRIMARY KEY (daemon_id, store_epoch)
    );

    CREATE TABLE tests (
        test_key         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- for samples/events
        test_id          text   NOT NULL UNIQUE,
        daemon_id        text   NOT NULL,
        store_epoch      bigint NOT NULL,
        channel_id       text   NOT NULL,
        protocol_name    text   NOT NULL,
        protocol_source  text   NOT NULL,
        plan_json        text   NOT NULL,  -- as the daemon sent it
        metadata         jsonb  NOT NULL,  -- primary metadata, an object of strings
        start_unix_s     double precision NOT NULL,
        end_unix_s       double precision,  -- NULL while running
        outcome          text,
        reason           text,
        expected_samples bigint,            -- as the daemon counted at test end
        sample_count     bigint NOT NULL DEFAULT 0  -- rows actually held, kept by the apply
    );
    CREATE INDEX tests_by_start ON tests (start_unix_s);

    CREATE TABLE samples (
        test_key              bigint NOT NULL,  -- tests.test_key
        seq                   bigint NOT NULL,
        test_time_s           double precision NOT NULL,
        unix_time_s           double precision NOT NULL,
        voltage_v             double precision NOT NULL,
        current_a             double precision NOT NULL,  -- positive = charging
        cycle                 bigint NOT NULL,  -- u32 on the wire
        step                  bigint NOT NULL,  -- u32 on the wire
        charge_capacity_ah    double precision NOT NULL,
        discharge_capacity_ah double precision NOT NULL,
        charge_energy_wh      double precision NOT NULL,
        discharge_energy_wh   double precision NOT NULL,
        temperature_c         double precision,  -- NULL without a sensor
        ambient_temperature_c double precision,  -- NULL outside a chamber
        PRIMARY KEY (test_key, seq)
    );

    CREATE TABLE events (
        event_key   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        test_key    bigint NOT NULL,  -- tests.test_key
        daemon_id   text   NOT NULL,  -- (daemon_id, store_epoch, entry_id): the entry that
        store_epoch bigint NOT NULL,  -- carried the event, so re-sending it is a no-op
        entry_id    bigint NOT NULL,
        unix_time_s double precision NOT NULL,
        test_time_s double precision NOT NULL,
        kind        text   NOT NULL,
        message     text   NOT NULL,
        step        bigint NOT NULL,
        cycle       bigint NOT NULL,
        UNIQUE (daemon_id, store_epoch, entry_id)
    );
    CREATE INDEX events_by_test ON events (test_key, unix_time_s);

    -- Entries the hub could not apply, kept (with the encoded entry) for a person to look at.
    CREATE TABLE rejections (
        rejection_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- recording order
        daemon_id     text   NOT NULL,
        store_epoch   bigint NOT NULL,
        entry_id      bigint NOT NULL,
        kind          text   NOT NULL,
        test_id       text,
        reason        text   NOT NULL,
        entry         bytea  NOT NULL,
        recorded_at   timestamptz NOT NULL DEFAULT now(),
        UNIQUE (daemon_id, store_epoch, entry_id)
    );
    "#,
    // 2: daemon tokens (the secret only as its SHA-256) and the lab each daemon belongs to.
    r#"
    CREATE TABLE tokens (
        token_id       text PRIMARY KEY,      -- public part of the token
        lab            text NOT NULL,
        name           text NOT NULL UNIQUE,
        secret_hash    text NOT NULL,
        created_unix_s double precision NOT NULL,
        revoked_unix_s double precision       -- NULL while valid
    );
    CREATE TABLE daemon_labs (
        daemon_id text PRIMARY KEY,           -- bound at its first authenticated upload
        lab       text NOT NULL
    );
    "#,
    // 3: the cells under test and the channels tests ran on, from the tests' metadata.
    r#"
    CREATE TABLE cells (
        cell_id             text PRIMARY KEY,
        manufacturer        text,
        model               text,
        chemistry           text,
        form_factor         text,
        nominal_capacity_ah double precision,
        nominal_voltage_v   double precision,
        first_test_unix_s   double precision NOT NULL
    );
    CREATE TABLE channels (
        daemon_id         text NOT NULL,
        channel_id        text NOT NULL,      -- DEVICE/N as the daemon's configuration names it
        first_test_unix_s double precision NOT NULL,
        PRIMARY KEY (daemon_id, channel_id)
    );
    ALTER TABLE tests ADD COLUMN cell_id text; -- cells.cell_id
    CREATE INDEX tests_by_cell ON tests (cell_id);
    "#,
    // 4: labs and their teams, the instruments tests ran on, the labs' metadata schemas.
    r#"
    CREATE TABLE labs (
        lab            text PRIMARY KEY,
        created_unix_s double precision NOT NULL
    );
    INSERT INTO labs (lab, created_unix_s)
        SELECT lab, min(created_unix_s) FROM tokens GROUP BY lab;
    CREATE TABLE teams (
        lab               text NOT NULL,      -- labs.lab
        team              text NOT NULL,      -- as the tests' metadata `team` names it
        first_test_unix_s double precision NOT NULL,
        PRIMARY KEY (lab, team)
    );
    CREATE TABLE equipment (
        daemon_id        text NOT NULL,
        name             text NOT NULL,       -- as the daemon's configuration names it
        family           text NOT NULL,
        address          text NOT NULL,
        last_test_unix_s double precision NOT NULL,  -- family and address are this test's
        PRIMARY KEY (daemon_id, name)
    );
    CREATE TABLE test_equipment (
        test_key bigint NOT NULL,             -- tests.test_key
        name     text NOT NULL,               -- equipment.name of the test's daemon
        family   text NOT NULL,               -- as it was for this test
        address  text NOT NULL,
        role     text NOT NULL,               -- cycler, source, load or chamber
        PRIMARY KEY (test_key, name)
    );
    CREATE TABLE metadata_schemas (
        lab            text NOT NULL,         -- labs.lab
        tier           text NOT NULL,         -- secondary or tertiary
        schema_json    text NOT NULL,
        updated_unix_s double precision NOT NULL,
        PRIMARY KEY (lab, tier)
    );
    ALTER TABLE tests ADD COLUMN team text;
    ALTER TABLE tests ADD COLUMN metadata_problems text;  -- JSON array; NULL when none
    "#,
    // 5: what a token allows: a daemon's uploads and reads its lab, a reader's only reads.
    r#"
    ALTER TABLE tokens ADD COLUMN role text NOT NULL DEFAULT 'daemon'
        CHECK (role IN ('daemon', 'reader'));
    "#,
    // 6: each lab names its own cells: keyed by (lab, cell id); a cell two labs shared becomes
    // one per lab (each with what was merged so far, first tested when that lab first did).
    r#"
    CREATE TABLE cells_by_lab (
        lab                 text NOT NULL,    -- labs.lab of the tests' daemon; '' for none
        cell_id             text NOT NULL,
        manufacturer        text,
        model               text,
        chemistry           text,
        form_factor         text,
        nominal_capacity_ah double precision,
        nominal_voltage_v   double precision,
        first_test_unix_s   double precision NOT NULL,
        PRIMARY KEY (lab, cell_id)
    );
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

/// Advisory lock key ("cyclerhb") held while migrating, so that hubs starting at once on one
/// database migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6379_636c_6572_6862;

/// The sample columns, in the order of [`SAMPLE_TYPES`] and of the COPY rows.
const SAMPLE_COLUMNS: &str = "test_key, seq, test_time_s, unix_time_s, voltage_v, current_a, \
    cycle, step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh, \
    discharge_energy_wh, temperature_c, ambient_temperature_c";

/// Types of [`SAMPLE_COLUMNS`], for the binary COPY.
const SAMPLE_TYPES: [Type; 14] = [
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
];

/// The `tests` columns [`test_row_raw`] reads, in its order.
const TEST_COLUMNS: &str = "test_id, daemon_id, channel_id, protocol_name, metadata::text, \
    start_unix_s, end_unix_s, outcome, reason, sample_count, expected_samples, team, \
    metadata_problems";

/// The PostgreSQL side of a [`super::HubStore`].
pub(super) struct PgStore {
    /// Parsed from the URL once, TLS included; used again whenever a connection has to be
    /// re-opened, so a reconnect is as encrypted and verified as the first connection.
    target: tls::Target,
    /// The URL without its password, for messages and logs.
    url: String,
    /// The only connection that writes (`None` until the next use reconnects it): the mutex
    /// makes the hub a single writer, as with SQLite.
    writer: Mutex<Option<Writer>>,
    /// Read-only connection for queries, so that they never wait for a batch to commit.
    reader: Mutex<Option<Client>>,
}

/// The writer connection with the statements the apply runs thousands of times.
struct Writer {
    /// The connection, with the `samples_staging` temporary table created on it.
    client: Client,
    /// Prepared once per connection.
    stmts: Statements,
}

/// The writer's prepared statements.
struct Statements {
    /// Hello: upsert the daemon store's row, return its resume point.
    hello: Statement,
    /// Creates the store's row if Hello did not.
    ensure_daemon: Statement,
    /// Reads the resume point and locks the row until commit: a second hub on the same
    /// database applying the same store waits here instead of racing.
    lock_daemon: Statement,
    /// Moves the resume point forward.
    set_applied: Statement,
    /// `(test_key, daemon_id)` of a test.
    test_owner: Statement,
    /// Inserts a test.
    insert_test: Statement,
    /// Whether any sample of a test is held in a seq range `[$2, $3)`.
    any_held: Statement,
    /// Binary COPY straight into `samples`, when none of the rows is held yet.
    copy_samples: Statement,
    /// Adds to a test's `sample_count`.
    add_samples: Statement,
    /// Binary COPY into the staging table, when some rows are held already.
    copy_staging: Statement,
    /// Staging -> samples, ignoring rows already held; bumps `sample_count` by what it
    /// inserted and returns that number (no row when nothing was new).
    move_samples: Statement,
    /// Inserts an event.
    insert_event: Statement,
    /// Records a test's end; returns the samples held.
    end_test: Statement,
    /// Records a rejected entry.
    insert_rejection: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
        Ok(Statements {
            hello: client.prepare(
                "INSERT INTO daemons (daemon_id, store_epoch, name) VALUES ($1, $2, $3)
                 ON CONFLICT (daemon_id, store_epoch) DO UPDATE SET name = excluded.name
                 RETURNING applied_up_to",
            )?,
            ensure_daemon: client.prepare(
                "INSERT INTO daemons (daemon_id, store_epoch, name) VALUES ($1, $2, '')
                 ON CONFLICT DO NOTHING",
            )?,
            lock_daemon: client.prepare(
                "SELECT applied_up_to FROM daemons WHERE daemon_id = $1 AND store_epoch = $2
                 FOR UPDATE",
            )?,
            set_applied: client.prepare(
                "UPDATE daemons SET applied_up_to = greatest(applied_up_to, $3)
                 WHERE daemon_id = $1 AND store_epoch = $2",
            )?,
            test_owner: client
                .prepare("SELECT test_key, daemon_id FROM tests WHERE test_id = $1")?,
            insert_test: client.prepare(
                "INSERT INTO tests (test_id, daemon_id, store_epoch, channel_id, protocol_name,
                     protocol_source, plan_json, metadata, start_unix_s, team, metadata_problems)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9, $10, $11)
                 ON CONFLICT (test_id) DO NOTHING",
            )?,
            any_held: client.prepare(
                "SELECT EXISTS (SELECT 1 FROM samples
                                WHERE test_key = $1 AND seq >= $2 AND seq < $3)",
            )?,
            copy_samples: client.prepare(&format!(
                "COPY samples ({SAMPLE_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))?,
            add_samples: client
                .prepare("UPDATE tests SET sample_count = sample_count + $2 WHERE test_key = $1")?,
            copy_staging: client.prepare(&format!(
                "COPY samples_staging ({SAMPLE_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))?,
            move_samples: client.prepare(&format!(
                "WITH moved AS (DELETE FROM samples_staging RETURNING {SAMPLE_COLUMNS}),
                      inserted AS (INSERT INTO samples ({SAMPLE_COLUMNS})
                                   SELECT {SAMPLE_COLUMNS} FROM moved
                                   ON CONFLICT DO NOTHING RETURNING 1),
                      counted AS (SELECT count(*) AS n FROM inserted)
                 UPDATE tests SET sample_count = sample_count + counted.n FROM counted
                 WHERE tests.test_key = $1 AND counted.n > 0
                 RETURNING counted.n"
            ))?,
            insert_event: client.prepare(
                "INSERT INTO events (test_key, daemon_id, store_epoch, entry_id, unix_time_s,
                     test_time_s, kind, message, step, cycle)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (daemon_id, store_epoch, entry_id) DO NOTHING",
            )?,
            end_test: client.prepare(
                "UPDATE tests SET end_unix_s = $2, outcome = $3, reason = $4, expected_samples = $5
                 WHERE test_key = $1 RETURNING sample_count",
            )?,
            insert_rejection: client.prepare(
                "INSERT INTO rejections (daemon_id, store_epoch, entry_id, kind, test_id, reason,
                     entry)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (daemon_id, store_epoch, entry_id) DO NOTHING",
            )?,
        })
    }
}

/// Runs `f` where the sync client may block: right here, or, when this thread runs an async
/// runtime (a `#[tokio::test]`, an async caller that did not use `spawn_blocking`), on a
/// short-lived helper thread, because tokio panics when a runtime is started or dropped there.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(t) => t,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock dropped its transaction, which rolled back: the
    // connection itself is fine to keep using.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connection in `slot`, (re)connected first when there is none or it broke.
fn ensure<C>(
    slot: &mut Option<C>,
    client: fn(&C) -> &Client,
    connect: impl FnOnce() -> Result<C, StoreError>,
) -> Result<&mut C, StoreError> {
    match slot.take() {
        Some(c) if !client(&c).is_closed() => Ok(slot.insert(c)),
        broken => {
            if broken.is_some() {
                tracing::warn!("the connection to PostgreSQL broke; reconnecting");
            }
            drop(broken);
            Ok(slot.insert(connect()?))
        }
    }
}

/// Whether `e` means the connection itself is gone (closed, or an I/O error on its socket),
/// rather than a refused statement on a healthy one.
fn connection_broke(e: &StoreError) -> bool {
    let StoreError::Postgres(e) = e else {
        return false;
    };
    // Class 08 is "connection exception"; 57P01-57P03 are the server ending the session.
    let server_ended = e.code().is_some_and(|c| {
        let code = c.code();
        code.starts_with("08") || code.starts_with("57P0")
    });
    e.is_closed()
        || server_ended
        || std::error::Error::source(e)
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
}

/// `db` without its password (in the user info or a `password=` parameter), for messages.
fn redact(db: &str) -> String {
    let mut out = db.to_owned();
    if let Some(scheme) = out.find("://") {
        let start = scheme + 3;
        let end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@')
            && let Some(colon) = out[start..start + at].find(':')
        {
            out.replace_range(start + colon + 1..start + at, "***");
        }
    }
    if let Some(q) = out.find('?') {
        let params: Vec<String> = out[q + 1..]
            .split('&')
            .map(|p| match p.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                _ => p.to_owned(),
            })
            .collect();
        out.replace_range(q + 1.., &params.join("&"));
    }
    out
}

impl PgStore {
    /// See [`super::HubStore::connect`]. Connects (and migrates) right away, so that a wrong
    /// URL or a too new schema stops the hub at start rather than at the first daemon.
    pub(super) fn connect(db: &str) -> Result<PgStore, StoreError> {
        let url = redact(db);
        let mut target = tls::Target::parse(db, &url)?;
        if target.config.get_application_name().is_none() {
            // Names the hub's sessions in pg_stat_activity.
            target.config.application_name("cyclerhub");
        }
        let store = PgStore {
            target,
            url,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
        };
        store.with_writer(|_| Ok(()))?;
        store.with_reader(|_| Ok(()))?;
        Ok(store)
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    fn connect_client(&self) -> Result<Client, StoreError> {
        self.target.connect().map_err(|source| {
            let url = self.url.clone();
            match self.target.explain(&source) {
                Some(problem) => StoreError::ConnectTls {
                    url,
                    problem,
                    source,
                },
                None => StoreError::Connect { url, source },
            }
        })
    }

    fn connect_writer(&self) -> Result<Writer, StoreError> {
        let mut client = self.connect_client()?;
        // An Ack may only follow a commit that survives a crash: the daemon deletes what the
        // hub acked. Any setting but `off` waits for the local flush at least.
        let sync: String = client
            .query_one("SHOW synchronous_commit", &[])?
            .try_get(0)?;
        if sync == "off" {
            tracing::warn!(
                url = self.url,
                "synchronous_commit is off; the hub sets it on"
            );
            client.batch_execute("SET synchronous_commit = on")?;
        }
        migrate(&mut client, &self.url)?;
        // Rows are moved out by every apply; ON COMMIT DELETE ROWS truncates what the moves
        // left dead (temporary tables are never vacuumed).
        client.batch_execute(
            "CREATE TEMPORARY TABLE samples_staging (LIKE samples) ON COMMIT DELETE ROWS",
        )?;
        let stmts = Statements::prepare(&mut client)?;
        Ok(Writer { client, stmts })
    }

    fn connect_reader(&self) -> Result<Client, StoreError> {
        let mut client = self.connect_client()?;
        // Queries only: a mistake on this side cannot write.
        client.batch_execute("SET default_transaction_read_only = on")?;
        Ok(client)
    }

    fn with_writer<T: Send>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.writer);
        let slot: &mut Option<Writer> = &mut guard;
        let result = off_runtime(|| f(ensure(slot, |w| &w.client, || self.connect_writer())?));
        if result.as_ref().is_err_and(connection_broke) {
            // The client may not have noticed yet; the next use connects afresh.
            *guard = None;
        }
        result
    }

    fn with_reader<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.reader);
        let slot: &mut Option<Client> = &mut guard;
        let result = off_runtime(|| f(ensure(slot, |c| c, || self.connect_reader())?));
        if result.as_ref().is_err_and(connection_broke) {
            *guard = None;
        }
        result
    }

    pub(super) fn hello(&self, source: &Source<'_>, name: &str) -> Result<u64, StoreError> {
        self.with_writer(|w| {
            let row = w
                .client
                .query_one(&w.stmts.hello, &[&source.daemon_id, &source.epoch, &name])?;
            Ok(u64_from_sql(row.try_get(0)?))
        })
    }

    pub(super) fn insert_token(&self, t: &TokenRow, secret_hash: &str) -> Result<bool, StoreError> {
        self.with_writer(|w| {
            let mut tx = w.client.transaction()?;
            tx.execute(sql::INSERT_LAB, &[&t.lab, &t.created_unix_s])?;
            let inserted = tx.execute(
                sql::INSERT_TOKEN,
                &[
                    &t.token_id,
                    &t.lab,
                    &t.name,
                    &secret_hash,
                    &t.created_unix_s,
                    &t.role.as_str(),
                ],
            )? == 1;
            // A refused token (its name is taken) leaves no new lab behind: rolled back on drop.
            if inserted {
                tx.commit()?;
            }
            Ok(inserted)
        })
    }

    /// Every row of `statement` that `row` reads, on the reader.
    fn select<T: Send>(
        &self,
        statement: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        row: impl Fn(&Row) -> Result<T, StoreError> + Send,
    ) -> Result<Vec<T>, StoreError> {
        self.with_reader(|c| c.query(statement, params)?.iter().map(row).collect())
    }

    pub(super) fn labs(&self) -> Result<Vec<(String, f64)>, StoreError> {
        self.select(sql::LABS, &[], |r| Ok((r.try_get(0)?, r.try_get(1)?)))
    }

    pub(super) fn teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        self.select(sql::TEAMS, &[], |r| Ok(team_row!(r.try_get)))
    }

    pub(super) fn set_schema(
        &self,
        lab: &str,
        tier: &str,
        document: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        self.with_writer(|w| {
            let mut tx = w.client.transaction()?;
            tx.execute(sql::INSERT_LAB, &[&lab, &now])?;
            tx.execute(sql::SET_SCHEMA, &[&lab, &tier, &document, &now])?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(super) fn remove_schema(&self, lab: &str, tier: &str) -> Result<bool, StoreError> {
        self.with_writer(|w| Ok(w.client.execute(sql::REMOVE_SCHEMA, &[&lab, &tier])? == 1))
    }

    pub(super) fn schemas(&self, lab: &str) -> Result<Vec<SchemaRow>, StoreError> {
        self.select(sql::SCHEMAS, &[&lab], |r| Ok(schema_row!(r.try_get)))
    }

    pub(super) fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError> {
        self.select(sql::TEST_EQUIPMENT, &[&test_id], |r| {
            Ok(equipment_row!(r.try_get))
        })
    }

    pub(super) fn revoke_token(&self, name: &str, now: f64) -> Result<bool, StoreError> {
        self.with_writer(|w| Ok(w.client.execute(sql::REVOKE_TOKEN, &[&name, &now])? == 1))
    }

    pub(super) fn tokens(&self) -> Result<Vec<(TokenRow, String)>, StoreError> {
        self.select(sql::TOKENS, &[], |r| Ok(token_row!(r.try_get)))
    }

    pub(super) fn bind_daemon(
        &self,
        daemon_id: &str,
        lab: &str,
        now: f64,
    ) -> Result<Option<String>, StoreError> {
        self.with_writer(|w| {
            let mut tx = w.client.transaction()?;
            if tx.execute(sql::BIND_NEW_DAEMON, &[&daemon_id, &lab])? == 1 {
                tx.execute(sql::INSERT_LAB, &[&lab, &now])?;
            }
            let bound = tx
                .query_opt(sql::DAEMON_LAB, &[&daemon_id])?
                .map(|r| r.try_get(0))
                .transpose()?;
            tx.commit()?;
            Ok(bound)
        })
    }

    pub(super) fn assign_daemon(
        &self,
        daemon_id: &str,
        lab: &str,
        now: f64,
    ) -> Result<Option<Option<String>>, StoreError> {
        self.with_writer(|w| {
            let mut tx = w.client.transaction()?;
            // Locks the daemon's rows as a batch does: a batch in flight commits first (its
            // tests and cells are then seen below), and the next one sees the new lab.
            let known = !tx
                .query(
                    "SELECT daemon_id FROM daemons WHERE daemon_id = $1 FOR UPDATE",
                    &[&daemon_id],
                )?
                .is_empty();
            if !known {
                return Ok(None);
            }
            let before: Option<String> = tx
                .query_opt(sql::DAEMON_LAB, &[&daemon_id])?
                .map(|r| r.try_get(0))
                .transpose()?;
            tx.execute(sql::INSERT_LAB, &[&lab, &now])?;
            tx.execute(sql::ASSIGN_DAEMON, &[&daemon_id, &lab])?;
            tx.execute(sql::ASSIGN_TEAMS, &[&daemon_id, &lab])?;
            let former = before.as_deref().unwrap_or_default();
            tx.execute(sql::ASSIGN_CELLS, &[&daemon_id, &lab, &former])?;
            tx.execute(sql::PRUNE_CELLS, &[&daemon_id, &former])?;
            tx.commit()?;
            Ok(Some(before))
        })
    }

    pub(super) fn applied_up_to(&self, source: &Source<'_>) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            let row = c.query_opt(
                "SELECT applied_up_to FROM daemons WHERE daemon_id = $1 AND store_epoch = $2",
                &[&source.daemon_id, &source.epoch],
            )?;
            Ok(row
                .map(|r| r.try_get(0))
                .transpose()?
                .map_or(0, u64_from_sql))
        })
    }

    pub(super) fn apply_batch(
        &self,
        source: &Source<'_>,
        up_to: i64,
        entries: &[Entry],
    ) -> Result<BatchOutcome, StoreError> {
        self.with_writer(|w| {
            let Writer { client, stmts } = w;
            let mut tx = client.transaction()?;
            // Normally created by Hello; created here too so a batch can never be acked
            // without its resume point being stored.
            tx.execute(&stmts.ensure_daemon, &[&source.daemon_id, &source.epoch])?;
            let applied: i64 = tx
                .query_one(&stmts.lock_daemon, &[&source.daemon_id, &source.epoch])?
                .try_get(0)?;
            let mut batch = PgBatch { tx: &mut tx, stmts };
            let out = apply_entries(&mut batch, source, u64_from_sql(applied), entries)?;
            tx.execute(
                &stmts.set_applied,
                &[&source.daemon_id, &source.epoch, &up_to],
            )?;
            tx.commit()?;
            Ok(out)
        })
    }

    pub(super) fn list_tests(&self) -> Result<Vec<TestRowRaw>, StoreError> {
        self.with_reader(|c| {
            c.query(
                &format!("SELECT {TEST_COLUMNS} FROM tests ORDER BY start_unix_s, test_key"),
                &[],
            )?
            .iter()
            .map(test_row_raw)
            .collect()
        })
    }

    pub(super) fn test(&self, test_id: &str) -> Result<Option<TestRowRaw>, StoreError> {
        self.with_reader(|c| {
            c.query_opt(
                &format!("SELECT {TEST_COLUMNS} FROM tests WHERE test_id = $1"),
                &[&test_id],
            )?
            .as_ref()
            .map(test_row_raw)
            .transpose()
        })
    }

    pub(super) fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            let row = c
                .query_opt(
                    "SELECT sample_count FROM tests WHERE test_id = $1",
                    &[&test_id],
                )?
                .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))?;
            Ok(u64_from_sql(row.try_get(0)?))
        })
    }

    pub(super) fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        self.with_reader(|c| {
            let key = test_key(c, test_id)?;
            let row = c.query_one(
                "SELECT EXISTS (SELECT 1 FROM samples
                                WHERE test_key = $1 AND temperature_c IS NOT NULL),
                        EXISTS (SELECT 1 FROM samples
                                WHERE test_key = $1 AND ambient_temperature_c IS NOT NULL)",
                &[&key],
            )?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    pub(super) fn cells(&self) -> Result<Vec<CellRow>, StoreError> {
        self.select(sql::CELLS, &[], |r| Ok(cell_row!(r.try_get)))
    }

    pub(super) fn daemon_labs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.select(sql::DAEMON_LABS, &[], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }

    pub(super) fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError> {
        self.with_reader(|c| {
            c.query_opt(sql::PROTOCOL, &[&test_id])?
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .transpose()
        })
    }

    pub(super) fn test_key(&self, test_id: &str) -> Result<i64, StoreError> {
        self.with_reader(|c| test_key(c, test_id))
    }

    pub(super) fn sample_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<SampleRow>, StoreError> {
        self.with_reader(|c| {
            c.query(
                "SELECT seq, test_time_s, unix_time_s, voltage_v, current_a, cycle, step,
                        charge_capacity_ah, discharge_capacity_ah, charge_energy_wh,
                        discharge_energy_wh, temperature_c, ambient_temperature_c
                 FROM samples WHERE test_key = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                &[&key, &from_seq, &limit],
            )?
            .iter()
            .map(sample_row)
            .collect()
        })
    }

    pub(super) fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
        self.with_reader(|c| {
            let key = test_key(c, test_id)?;
            c.query(
                "SELECT unix_time_s, test_time_s, kind, message, step, cycle
                 FROM events WHERE test_key = $1 ORDER BY unix_time_s, event_key",
                &[&key],
            )?
            .iter()
            .map(|r| Ok(event_row!(r.try_get)))
            .collect()
        })
    }

    pub(super) fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
        self.with_reader(|c| {
            c.query(
                "SELECT daemon_id, store_epoch, entry_id, kind, test_id, reason
                 FROM rejections ORDER BY rejection_key",
                &[],
            )?
            .iter()
            .map(|r| Ok(rejection_row!(r.try_get)))
            .collect()
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let reader = self
            .reader
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Closing a connection blocks on (and drops) its runtime: off the async runtime too.
        off_runtime(move || drop((writer, reader)));
    }
}

/// Brings the schema up to date in one transaction, under [`MIGRATION_LOCK`]; refuses a
/// database whose schema is newer than this build.
fn migrate(client: &mut Client, url: &str) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint      PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    if found > supported {
        return Err(StoreError::SchemaTooNew {
            database: url.to_owned(),
            found,
            supported,
        });
    }
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(found.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )?;
        tracing::info!(url, version, "migrated hub schema");
    }
    tx.commit()?;
    Ok(())
}

fn test_key(c: &mut impl GenericClient, test_id: &str) -> Result<i64, StoreError> {
    c.query_opt("SELECT test_key FROM tests WHERE test_id = $1", &[&test_id])?
        .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))?
        .try_get(0)
        .map_err(StoreError::from)
}

fn test_row_raw(r: &Row) -> Result<TestRowRaw, StoreError> {
    Ok(test_row_raw!(r.try_get))
}

fn sample_row(r: &Row) -> Result<SampleRow, StoreError> {
    Ok(sample_row!(r.try_get))
}

/// `-0.0` as `0.0`, every other value as it is. SQLite stores a zero REAL as an integer and so
/// reads `-0.0` back as `0.0`; PostgreSQL would keep the sign and an export would print `-0`.
/// Dropping it here keeps both backends' data, and exports, identical.
fn unsigned_zero(v: f64) -> f64 {
    v + 0.0
}

/// Writes the samples of the validated batch `b` (test key `key`) with the binary COPY `copy`.
fn copy_samples(
    tx: &mut Transaction<'_>,
    copy: &Statement,
    key: i64,
    b: &SampleBatch,
) -> Result<(), StoreError> {
    let mut writer = BinaryCopyInWriter::new(tx.copy_in(copy)?, &SAMPLE_TYPES);
    for i in 0..b.test_time_s.len() {
        // In range: validation checked every column's length and the seq range.
        let seq = b.first_seq as i64 + i as i64;
        let (cycle, step) = (i64::from(b.cycle[i]), i64::from(b.step[i]));
        // A missing (NaN) temperature reading is stored as NULL; no column at all, too.
        let temp = b.temperature_c.get(i).copied().filter(|t| t.is_finite());
        let ambient = b
            .ambient_temperature_c
            .get(i)
            .copied()
            .filter(|t| t.is_finite());
        let x = |col: &[f64]| unsigned_zero(col[i]);
        writer.write(&[
            &key,
            &seq,
            &x(&b.test_time_s),
            &x(&b.unix_time_s),
            &x(&b.voltage_v),
            &x(&b.current_a),
            &cycle,
            &step,
            &x(&b.charge_capacity_ah),
            &x(&b.discharge_capacity_ah),
            &x(&b.charge_energy_wh),
            &x(&b.discharge_energy_wh),
            &temp.map(unsigned_zero),
            &ambient.map(unsigned_zero),
        ])?;
    }
    writer.finish()?;
    Ok(())
}

/// One batch's transaction on the writer.
struct PgBatch<'a, 'c> {
    /// The batch's transaction.
    tx: &'a mut Transaction<'c>,
    /// The writer's prepared statements.
    stmts: &'a Statements,
}

impl BatchWrites for PgBatch<'_, '_> {
    fn test_owner(&mut self, test_id: &str) -> Result<Option<(i64, String)>, StoreError> {
        self.tx
            .query_opt(&self.stmts.test_owner, &[&test_id])?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    fn insert_test(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        r: &Registration<'_>,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            &self.stmts.insert_test,
            &[
                &t.test_id,
                &source.daemon_id,
                &source.epoch,
                &t.channel_id,
                &t.protocol_name,
                &t.protocol_source,
                &t.plan_json,
                &r.metadata_json,
                &t.start_unix_s,
                &r.team,
                &r.problems_json,
            ],
        )?;
        Ok(())
    }

    fn daemon_lab(&mut self, daemon_id: &str) -> Result<Option<String>, StoreError> {
        self.tx
            .query_opt(sql::DAEMON_LAB, &[&daemon_id])?
            .map(|r| Ok(r.try_get(0)?))
            .transpose()
    }

    fn lab_schemas(&mut self, lab: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.tx
            .query(sql::SCHEMAS, &[&lab])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn record_team(&mut self, lab: &str, team: &str, start: f64) -> Result<(), StoreError> {
        self.tx.execute(sql::INSERT_TEAM, &[&lab, &team, &start])?;
        Ok(())
    }

    fn record_equipment(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
    ) -> Result<(), StoreError> {
        for e in &t.equipment {
            self.tx.execute(
                sql::UPSERT_EQUIPMENT,
                &[
                    &source.daemon_id,
                    &e.name,
                    &e.family,
                    &e.address,
                    &t.start_unix_s,
                ],
            )?;
            self.tx.execute(
                sql::INSERT_TEST_EQUIPMENT,
                &[&t.test_id, &e.name, &e.family, &e.address, &e.role],
            )?;
        }
        Ok(())
    }

    fn record_cell_and_channel(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        c: &CellRow,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            sql::UPSERT_CELL,
            &[
                &c.cell_id,
                &c.manufacturer,
                &c.model,
                &c.chemistry,
                &c.form_factor,
                &c.nominal_capacity_ah,
                &c.nominal_voltage_v,
                &c.first_test_unix_s,
                &c.lab,
            ],
        )?;
        self.tx.execute(
            sql::INSERT_CHANNEL,
            &[&source.daemon_id, &t.channel_id, &t.start_unix_s],
        )?;
        self.tx.execute(sql::LINK_CELL, &[&t.test_id, &c.cell_id])?;
        Ok(())
    }

    fn insert_samples(&mut self, key: i64, b: &SampleBatch) -> Result<u64, StoreError> {
        // In range: validation checked the seq range.
        let n = b.test_time_s.len() as i64;
        let (first, end) = (b.first_seq as i64, b.first_seq as i64 + n);
        let any_held: bool = self
            .tx
            .query_one(&self.stmts.any_held, &[&key, &first, &end])?
            .try_get(0)?;
        if !any_held {
            // The usual case: none of these rows is here yet, so they go straight in at COPY's
            // speed. Batches of one store cannot race (`lock_daemon`); should another session
            // insert the same rows in between, the primary key fails this batch as a whole, and
            // the daemon's re-send takes the path below.
            copy_samples(self.tx, &self.stmts.copy_samples, key, b)?;
            self.tx.execute(&self.stmts.add_samples, &[&key, &n])?;
            return Ok(n as u64);
        }
        // Re-sent, or a backfill overlapping what is held: through staging, ignoring the rows
        // already there, counting the others.
        copy_samples(self.tx, &self.stmts.copy_staging, key, b)?;
        let inserted = self
            .tx
            .query_opt(&self.stmts.move_samples, &[&key])?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?;
        Ok(inserted.map_or(0, u64_from_sql))
    }

    fn insert_event(
        &mut self,
        key: i64,
        source: &Source<'_>,
        entry_id: i64,
        e: &Event,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            &self.stmts.insert_event,
            &[
                &key,
                &source.daemon_id,
                &source.epoch,
                &entry_id,
                &e.unix_time_s,
                &e.test_time_s,
                &e.kind,
                &e.message,
                &i64::from(e.step),
                &i64::from(e.cycle),
            ],
        )?;
        Ok(())
    }

    fn end_test(&mut self, key: i64, e: &TestEnded, expected: i64) -> Result<i64, StoreError> {
        Ok(self
            .tx
            .query_one(
                &self.stmts.end_test,
                &[&key, &e.unix_time_s, &e.outcome, &e.reason, &expected],
            )?
            .try_get(0)?)
    }

    fn insert_rejection(
        &mut self,
        source: &Source<'_>,
        r: &RejectionRecord<'_>,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            &self.stmts.insert_rejection,
            &[
                &source.daemon_id,
                &source.epoch,
                &r.entry_id,
                &r.kind,
                &r.test_id,
                &r.reason,
                &r.entry,
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_in_user_info_and_parameters() {
        assert_eq!(
            redact("postgres://hub:s3cret@db.lab:5432/hub"),
            "postgres://hub:***@db.lab:5432/hub"
        );
        assert_eq!(
            redact("postgresql://hub@db/hub?password=s3cret&sslmode=disable"),
            "postgresql://hub@db/hub?password=***&sslmode=disable"
        );
        assert_eq!(redact("postgres://hub@db/hub"), "postgres://hub@db/hub");
    }
}

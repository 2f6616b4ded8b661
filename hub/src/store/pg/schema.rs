//! The PostgreSQL schema: its migrations, and bringing a database up to date.

use crate::store::summary::{Backfill, backfill};
use postgres::{Client, Transaction};

use super::writes::insert_chunk;
use super::{
    Encoded, LegacySamples, SampleRow, StoreError, convert_test, sql, u32_from_sql, u64_from_sql,
};

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
    // 7: each daemon id bound to its credential (the SHA-256 of the secret its store made) at
    // its first Hello, so nobody else can write as it or move its resume point.
    r#"
    CREATE TABLE daemon_credentials (
        daemon_id    text PRIMARY KEY,
        secret_hash  text NOT NULL,
        bound_unix_s double precision NOT NULL
    );
    "#,
    // 8: per-cycle results of each test, as its daemon computed them (cyclerd_proto::cycles);
    // NULL temperature or resistance where the cycle has none.
    r#"
    CREATE TABLE cycles (
        test_key              bigint NOT NULL,   -- tests.test_key
        cycle                 bigint NOT NULL,
        complete              bigint NOT NULL,   -- 0 while the cycle goes on
        start_test_time_s     double precision NOT NULL,
        end_test_time_s       double precision NOT NULL,
        charge_capacity_ah    double precision NOT NULL,
        discharge_capacity_ah double precision NOT NULL,
        charge_energy_wh      double precision NOT NULL,
        discharge_energy_wh   double precision NOT NULL,
        max_temperature_c     double precision,
        dcir_ohm              double precision,
        first_seq             bigint NOT NULL,
        last_seq              bigint NOT NULL,
        PRIMARY KEY (test_key, cycle)
    );
    "#,
    // 9: the plan step each sample was taken in (its index in the test's plan, the same on
    // every cycler); NULL for samples from daemons that did not send it.
    r#"
    ALTER TABLE samples ADD COLUMN plan_step bigint;  -- u32 on the wire
    "#,
    // 10: samples in chunks: a row per run of contiguous seqs of one test (an incoming batch),
    // its columns encoded into one blob (`store::chunk`), which TOAST stores as it is (it is
    // compressed already). The rows of `samples` are converted by `convert_samples` (a
    // transaction per test), which then drops that table.
    r#"
    CREATE TABLE sample_chunks (
        test_key  bigint NOT NULL,            -- tests.test_key
        first_seq bigint NOT NULL,
        last_seq  bigint NOT NULL,            -- chunks of a test never overlap
        n_samples bigint NOT NULL,            -- last_seq - first_seq + 1
        t_min     double precision NOT NULL,  -- test time range of the chunk
        t_max     double precision NOT NULL,
        temps     bigint NOT NULL,            -- 1: a cell temperature in it, 2: an ambient one
        data      bytea  NOT NULL,
        PRIMARY KEY (test_key, first_seq)
    );
    ALTER TABLE sample_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE INDEX sample_chunks_by_time ON sample_chunks (test_key, t_max);
    "#,
    // 11: per chunk, each plot series' min and max (`store::summary`), so that a plot of a long
    // test reads summaries instead of decoding every chunk. Chunks stored before get theirs
    // from the backfill, which goes on from `summary_backfill` after the last chunk it did.
    r#"
    CREATE TABLE chunk_summaries (
        test_key  bigint NOT NULL,
        first_seq bigint NOT NULL,  -- the chunk's
        summary   bytea  NOT NULL,
        PRIMARY KEY (test_key, first_seq)
    );
    CREATE TABLE summary_backfill (test_key bigint NOT NULL, first_seq bigint NOT NULL);
    INSERT INTO summary_backfill VALUES (-9223372036854775808, -9223372036854775808);
    "#,
    // 12: shares to other hubs (`cyclerhub share`): what each selects and where it goes
    // (`shares`), the entries it has logged for sending, ids assigned once so that the
    // receiving hub's resume point means the same after any restart (`share_log`: the data is
    // re-read when sent), and how far each shared test is logged (`share_progress`). On the
    // receiving side, where each share stream comes from (`share_origins`, by its daemon id).
    r#"
    CREATE TABLE shares (
        name           text PRIMARY KEY,
        target         text   NOT NULL,   -- the receiving hub's URL
        ca_file        text,              -- its CA (PEM) for https://
        token_file     text,              -- the receiver's token, read at each connection
        salt_file      text,              -- the lab secret; NULL: not anonymised
        selection      text   NOT NULL,   -- JSON (share::Selection)
        once           bigint NOT NULL,   -- 1: what matched at `share add`, then done
        origin         text   NOT NULL,   -- how this hub names itself to the receiver
        stream_id      text   NOT NULL,   -- the daemon id the receiver knows the share by
        stream_secret  text   NOT NULL,   -- its credential there
        epoch          bigint NOT NULL,
        created_unix_s double precision NOT NULL,
        acked          bigint NOT NULL DEFAULT 0,
        state          text   NOT NULL DEFAULT 'waiting',
        last_error     text,
        updated_unix_s double precision
    );
    CREATE TABLE share_log (
        share   text   NOT NULL,
        id      bigint NOT NULL,
        test_id text   NOT NULL,
        kind    text   NOT NULL,   -- registered, samples, event, cycle, ended
        a       bigint NOT NULL,   -- samples: first seq; event: its index; cycle: its number
        b       bigint NOT NULL,   -- samples: the seq after the last
        PRIMARY KEY (share, id)
    );
    CREATE TABLE share_progress (
        share    text   NOT NULL,
        test_id  text   NOT NULL,
        next_seq bigint NOT NULL,
        events   bigint NOT NULL,
        cycles   bigint NOT NULL,   -- the last complete cycle logged
        ended    bigint NOT NULL,
        PRIMARY KEY (share, test_id)
    );
    CREATE TABLE share_origins (
        daemon_id    text PRIMARY KEY,
        hub          text   NOT NULL,
        share        text   NOT NULL,
        anonymised   bigint NOT NULL,
        selection    text   NOT NULL,
        first_unix_s double precision NOT NULL,
        last_unix_s  double precision NOT NULL
    );
    "#,
    // 13: quality findings of each test's samples (cyclerd_proto::quality), by who found
    // them ('daemon' as it recorded them, 'hub' as it stored them), the latest per run; and the
    // hub's own checker state per test, so its checks go on from batch to batch.
    r#"
    CREATE TABLE quality_findings (
        test_key          bigint NOT NULL,   -- tests.test_key
        source            text   NOT NULL,   -- daemon or hub
        check_name        text   NOT NULL,
        first_seq         bigint NOT NULL,
        last_seq          bigint NOT NULL,
        open              bigint NOT NULL,   -- 1 while the run goes on
        first_test_time_s double precision NOT NULL,
        last_test_time_s  double precision NOT NULL,
        missing_s         double precision NOT NULL,
        reason            text   NOT NULL,
        PRIMARY KEY (test_key, source, check_name, first_seq)
    );
    CREATE TABLE quality_state (
        test_key bigint PRIMARY KEY,         -- tests.test_key
        state    text   NOT NULL             -- the checker's state, JSON
    );
    "#,
];

/// Advisory lock key ("cyclerhb") held while migrating, so that hubs starting at once on one
/// database migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6379_636c_6572_6862;

/// Brings the schema up to date in one transaction, under [`MIGRATION_LOCK`]; refuses a
/// database whose schema is newer than this build.
pub(super) fn migrate(client: &mut Client, url: &str) -> Result<(), StoreError> {
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
    convert_samples(client, url)?;
    backfill(&mut PgBackfill(client), url)?;
    Ok(())
}

/// The summary backfill, a transaction per page under [`MIGRATION_LOCK`], so that hubs starting
/// at once take turns (each page goes on from where the last one, of any hub, stopped).
struct PgBackfill<'a>(&'a mut Client);

impl Backfill for PgBackfill<'_> {
    fn cursor(&mut self) -> Result<Option<(i64, i64)>, StoreError> {
        self.0
            .query_opt(sql::BACKFILL_CURSOR, &[])?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    fn chunks_after(
        &mut self,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        self.0
            .query(sql::CHUNKS_AFTER, &[&after.0, &after.1, &limit])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    fn store(
        &mut self,
        summaries: &[(i64, i64, Vec<u8>)],
        to: Option<(i64, i64)>,
    ) -> Result<(), StoreError> {
        let mut tx = self.0.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        let put = tx.prepare(sql::BACKFILL_SUMMARY)?;
        for (key, first_seq, summary) in summaries {
            tx.execute(&put, &[key, first_seq, summary])?;
        }
        match to {
            // Never back: another hub may have gone further meanwhile.
            Some((key, seq)) => tx.execute(
                "UPDATE summary_backfill SET test_key = $1, first_seq = $2 \
                 WHERE (test_key, first_seq) < ($1, $2)",
                &[&key, &seq],
            )?,
            None => tx.execute(sql::END_BACKFILL, &[])?,
        };
        tx.commit()?;
        Ok(())
    }
}

/// Converts the rows of the former `samples` table to chunks, a transaction per test under
/// [`MIGRATION_LOCK`] (an interrupted conversion, or one another hub started, goes on with the
/// tests not finished), then drops the table.
fn convert_samples(client: &mut Client, url: &str) -> Result<(), StoreError> {
    let legacy = |c: &mut Client| -> Result<bool, StoreError> {
        Ok(
            c.query_one("SELECT to_regclass('samples') IS NOT NULL", &[])?
                .try_get(0)?,
        )
    };
    if !legacy(client)? {
        return Ok(());
    }
    let mut after = i64::MIN;
    loop {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        if tx
            .query_one("SELECT to_regclass('samples') IS NULL", &[])?
            .try_get(0)?
        {
            // Another hub finished the conversion.
            return Ok(());
        }
        let mut legacy = Legacy(&mut tx);
        let Some(key) = legacy.next_legacy_test(after)? else {
            tx.batch_execute("DROP TABLE samples")?;
            tx.commit()?;
            return Ok(());
        };
        let n = convert_test(&mut legacy, key)?;
        tx.commit()?;
        tracing::info!(
            url,
            test_key = key,
            samples = n,
            "converted samples to chunks"
        );
        after = key;
    }
}

/// The former table on a conversion's transaction.
struct Legacy<'a, 'c>(&'a mut Transaction<'c>);

impl LegacySamples for Legacy<'_, '_> {
    fn next_legacy_test(&mut self, after: i64) -> Result<Option<i64>, StoreError> {
        self.0
            .query_opt(sql::NEXT_LEGACY_TEST, &[&after])?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(StoreError::from)
    }

    fn has_chunks(&mut self, key: i64) -> Result<bool, StoreError> {
        Ok(self.0.query_one(sql::HAS_CHUNKS, &[&key])?.try_get(0)?)
    }

    fn legacy_page(
        &mut self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<SampleRow>, StoreError> {
        self.0
            .query(sql::LEGACY_PAGE, &[&key, &from_seq, &limit])?
            .iter()
            .map(|r| Ok(sample_row!(r.try_get)))
            .collect()
    }

    fn put_chunk(&mut self, key: i64, first_seq: i64, c: &Encoded) -> Result<bool, StoreError> {
        insert_chunk(&mut *self.0, sql::INSERT_CHUNK, key, first_seq, c)
    }
}

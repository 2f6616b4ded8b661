//! A batch's statements on PostgreSQL ([`BatchWrites`] on the writer's transaction), with
//! the writer's prepared statements; samples through binary COPY: the hot path of the ingest.

use cyclerd_proto::ingest::{Event, SampleBatch, TestEnded, TestRegistered};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, Statement, Transaction};

use super::{
    BatchOutcome, BatchWrites, CellRow, CycleRecord, Registration, RejectionRecord, Source,
    StoreError, WriteBatch, Writer, sql, u64_from_sql,
};

/// The sample columns, in the order of [`SAMPLE_TYPES`] and of the COPY rows.
const SAMPLE_COLUMNS: &str = "test_key, seq, test_time_s, unix_time_s, voltage_v, current_a, \
    cycle, step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh, \
    discharge_energy_wh, temperature_c, ambient_temperature_c, plan_step";

/// Types of [`SAMPLE_COLUMNS`], for the binary COPY.
const SAMPLE_TYPES: [Type; 15] = [
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
    Type::INT8,
];

/// The writer's prepared statements.
pub(super) struct Statements {
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
    /// Stores a cycle's summary.
    upsert_cycle: Statement,
    /// Records a test's end; returns the samples held.
    end_test: Statement,
    /// Records a rejected entry.
    insert_rejection: Statement,
}

impl Statements {
    pub(super) fn prepare(client: &mut Client) -> Result<Statements, postgres::Error> {
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
            upsert_cycle: client.prepare(sql::UPSERT_CYCLE)?,
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

impl Writer {
    /// Hello: upserts the daemon store's row and returns its resume point.
    pub(super) fn hello(&mut self, source: &Source<'_>, name: &str) -> Result<u64, StoreError> {
        let row = self.client.query_one(
            &self.stmts.hello,
            &[&source.daemon_id, &source.epoch, &name],
        )?;
        Ok(u64_from_sql(row.try_get(0)?))
    }

    /// Runs `apply` on a batch's statements in one transaction, committed when it is `Ok`.
    pub(super) fn write_batch(
        &mut self,
        apply: &mut WriteBatch<'_>,
    ) -> Result<BatchOutcome, StoreError> {
        let Writer { client, stmts } = self;
        let mut tx = client.transaction()?;
        let out = apply(&mut PgBatch { tx: &mut tx, stmts })?;
        tx.commit()?;
        Ok(out)
    }
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
        // No column at all (an older daemon): NULL.
        let plan_step = b.plan_step.get(i).map(|&p| i64::from(p));
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
            &plan_step,
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
    fn resume_point(&mut self, source: &Source<'_>) -> Result<u64, StoreError> {
        self.tx.execute(
            &self.stmts.ensure_daemon,
            &[&source.daemon_id, &source.epoch],
        )?;
        let applied: i64 = self
            .tx
            .query_one(&self.stmts.lock_daemon, &[&source.daemon_id, &source.epoch])?
            .try_get(0)?;
        Ok(u64_from_sql(applied))
    }

    fn set_applied(&mut self, source: &Source<'_>, up_to: i64) -> Result<(), StoreError> {
        self.tx.execute(
            &self.stmts.set_applied,
            &[&source.daemon_id, &source.epoch, &up_to],
        )?;
        Ok(())
    }

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

    fn upsert_cycle(&mut self, key: i64, c: &CycleRecord) -> Result<(), StoreError> {
        self.tx.execute(
            &self.stmts.upsert_cycle,
            &[
                &key,
                &c.cycle,
                &c.complete,
                &c.start_test_time_s,
                &c.end_test_time_s,
                &c.charge_capacity_ah,
                &c.discharge_capacity_ah,
                &c.charge_energy_wh,
                &c.discharge_energy_wh,
                &c.max_temperature_c,
                &c.dcir_ohm,
                &c.first_seq,
                &c.last_seq,
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

//! A batch's statements on SQLite ([`BatchWrites`] on the writer's transaction), samples
//! through a cached multi-row `INSERT OR IGNORE`: the hot path of the ingest.

use std::sync::LazyLock;

use cyclerd_proto::ingest::{Event, SampleBatch, TestEnded, TestRegistered};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{
    BatchWrites, CellRow, CycleRecord, Registration, RejectionRecord, Source, StoreError,
    applied_up_to_in, sql,
};

/// Samples inserted per multi-row `INSERT`: one statement step per 32 rows instead of per row
/// roughly halves the per-sample cost; 32 x 15 parameters stays far below SQLite's limit.
const ROWS_PER_INSERT: usize = 32;
/// Columns of one sample row, in the order [`bind_sample`] binds them.
const SAMPLE_COLUMNS: usize = 15;

/// The statements' text, built once (it is also the prepared-statement cache key).
static INSERT_SAMPLES_MULTI: LazyLock<String> =
    LazyLock::new(|| insert_samples_sql(ROWS_PER_INSERT));
static INSERT_SAMPLE_ONE: LazyLock<String> = LazyLock::new(|| insert_samples_sql(1));

/// `INSERT OR IGNORE` of `rows` sample rows in one statement.
fn insert_samples_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR IGNORE INTO samples (test_key, seq, test_time_s, unix_time_s, voltage_v, \
         current_a, cycle, step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh, \
         discharge_energy_wh, temperature_c, ambient_temperature_c, plan_step) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql
}

impl BatchWrites for Transaction<'_> {
    fn resume_point(&mut self, source: &Source<'_>) -> Result<u64, StoreError> {
        self.prepare_cached(
            "INSERT OR IGNORE INTO daemons (daemon_id, store_epoch, name) VALUES (?1, ?2, '')",
        )?
        .execute(params![source.daemon_id, source.epoch])?;
        applied_up_to_in(self, source)
    }

    fn set_applied(&mut self, source: &Source<'_>, up_to: i64) -> Result<(), StoreError> {
        self.prepare_cached(
            "UPDATE daemons SET applied_up_to = max(applied_up_to, ?3)
             WHERE daemon_id = ?1 AND store_epoch = ?2",
        )?
        .execute(params![source.daemon_id, source.epoch, up_to])?;
        Ok(())
    }

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

    fn upsert_cycle(&mut self, key: i64, c: &CycleRecord) -> Result<(), StoreError> {
        self.prepare_cached(&sql::sqlite(sql::UPSERT_CYCLE))?
            .execute(params![
                key,
                c.cycle,
                c.complete,
                c.start_test_time_s,
                c.end_test_time_s,
                c.charge_capacity_ah,
                c.discharge_capacity_ah,
                c.charge_energy_wh,
                c.discharge_energy_wh,
                c.max_temperature_c,
                c.dcir_ohm,
                c.first_seq,
                c.last_seq
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

/// Binds sample `i` of `b` to the 15 parameters after `offset`. `i` must be in range
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
    // No column at all (an older daemon): NULL.
    stmt.raw_bind_parameter(offset + 15, b.plan_step.get(i).copied())?;
    Ok(())
}

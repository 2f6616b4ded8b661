//! A batch's statements on SQLite ([`BatchWrites`] on the writer's transaction), samples
//! as encoded chunks, a row each: the hot path of the ingest.

use cyclerd_proto::ingest::{Event, TestEnded, TestRegistered};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{
    BatchWrites, CellRow, CycleRecord, Encoded, FindingRecord, Registration, RejectionRecord,
    Source, StoreError, applied_up_to_in, sql,
};

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

    fn held_chunks(
        &mut self,
        key: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut stmt = self.prepare_cached(&sql::sqlite(sql::HELD_CHUNKS))?;
        let rows = stmt.query_map(params![key, first, last], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn insert_chunk(&mut self, key: i64, first_seq: i64, c: &Encoded) -> Result<bool, StoreError> {
        let inserted = insert_chunk(self, key, first_seq, c)?;
        if inserted {
            add_samples(self, key, c.count as i64)?;
        }
        Ok(inserted)
    }

    fn chunk_ending_at(
        &mut self,
        key: i64,
        last: i64,
        max_samples: i64,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self
            .prepare_cached(&sql::sqlite(sql::CHUNK_ENDING_AT))?
            .query_row(params![key, last, max_samples], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    fn replace_chunk(
        &mut self,
        key: i64,
        first_seq: i64,
        c: &Encoded,
        added: i64,
    ) -> Result<(), StoreError> {
        let n = c.count as i64;
        self.prepare_cached(&sql::sqlite(sql::REPLACE_CHUNK))?
            .execute(params![
                key,
                first_seq,
                first_seq + n - 1,
                n,
                c.t_min,
                c.t_max,
                c.temps,
                c.data
            ])?;
        add_samples(self, key, added)
    }

    fn set_summary(&mut self, key: i64, first_seq: i64, summary: &[u8]) -> Result<(), StoreError> {
        self.prepare_cached(&sql::sqlite(sql::SET_SUMMARY))?
            .execute(params![key, first_seq, summary])?;
        Ok(())
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

    fn upsert_finding(&mut self, key: i64, f: &FindingRecord<'_>) -> Result<(), StoreError> {
        self.prepare_cached(&sql::sqlite(sql::UPSERT_FINDING))?
            .execute(params![
                key,
                f.source,
                f.check,
                f.first_seq,
                f.last_seq,
                f.open,
                f.first_test_time_s,
                f.last_test_time_s,
                f.missing_s,
                f.reason
            ])?;
        Ok(())
    }

    fn close_findings(&mut self, key: i64) -> Result<(), StoreError> {
        self.prepare_cached(&sql::sqlite(sql::CLOSE_FINDINGS))?
            .execute([key])?;
        Ok(())
    }

    fn quality_state(&mut self, key: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .prepare_cached(&sql::sqlite(sql::QUALITY_STATE))?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn set_quality_state(&mut self, key: i64, state: Option<&str>) -> Result<(), StoreError> {
        match state {
            Some(state) => self
                .prepare_cached(&sql::sqlite(sql::SET_QUALITY_STATE))?
                .execute(params![key, state])?,
            None => self
                .prepare_cached(&sql::sqlite(sql::DROP_QUALITY_STATE))?
                .execute([key])?,
        };
        Ok(())
    }

    fn test_plan(&mut self, key: i64) -> Result<String, StoreError> {
        Ok(self
            .prepare_cached(&sql::sqlite(sql::TEST_PLAN))?
            .query_row([key], |r| r.get(0))?)
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

/// Inserts a chunk row on `conn` (the batch's transaction, or the conversion's).
pub(super) fn insert_chunk(
    conn: &rusqlite::Connection,
    key: i64,
    first_seq: i64,
    c: &Encoded,
) -> Result<bool, StoreError> {
    let n = c.count as i64;
    Ok(conn
        .prepare_cached(&sql::sqlite(sql::INSERT_CHUNK))?
        .execute(params![
            key,
            first_seq,
            first_seq + n - 1,
            n,
            c.t_min,
            c.t_max,
            c.temps,
            c.data
        ])?
        == 1)
}

fn add_samples(conn: &rusqlite::Connection, key: i64, n: i64) -> Result<(), StoreError> {
    conn.prepare_cached(&sql::sqlite(sql::ADD_SAMPLES))?
        .execute(params![key, n])?;
    Ok(())
}

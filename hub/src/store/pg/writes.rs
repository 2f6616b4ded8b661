//! A batch's statements on PostgreSQL ([`BatchWrites`] on the writer's transaction), with
//! the writer's prepared statements; samples as encoded chunks, a row each: the hot path of
//! the ingest.

use cyclerd_proto::ingest::{Event, TestEnded, TestRegistered};
use postgres::{Client, GenericClient, Statement, ToStatement, Transaction};

use super::{
    BatchOutcome, BatchWrites, CellRow, CycleRecord, Encoded, FindingRecord, Registration,
    RejectionRecord, Source, StoreError, WriteBatch, Writer, sql, u64_from_sql,
};

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
    /// Locks the test's row until commit and reads its chunks holding any seq of a range.
    held_chunks: Statement,
    /// Inserts a chunk and counts its samples.
    insert_chunk: Statement,
    /// The chunk a small batch continues.
    chunk_ending_at: Statement,
    /// Grows a chunk and counts the samples added.
    replace_chunk: Statement,
    /// Stores a chunk's summary.
    set_summary: Statement,
    /// Inserts an event.
    insert_event: Statement,
    /// Stores a cycle's summary.
    upsert_cycle: Statement,
    /// Stores a quality finding.
    upsert_finding: Statement,
    /// Closes a test's findings.
    close_findings: Statement,
    /// Reads, stores and forgets the hub's checker state of a test.
    quality_state: Statement,
    set_quality_state: Statement,
    drop_quality_state: Statement,
    /// The plan of a test.
    test_plan: Statement,
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
            // One round trip each: the hot path's cost is mostly round trips.
            held_chunks: client.prepare(&format!(
                "WITH locked AS (SELECT 1 AS one FROM tests WHERE test_key = $1 FOR UPDATE) {}",
                sql::HELD_CHUNKS.replacen(
                    "FROM sample_chunks WHERE",
                    "FROM sample_chunks, locked WHERE",
                    1
                )
            ))?,
            insert_chunk: client.prepare(&format!(
                "WITH inserted AS ({} RETURNING n_samples) UPDATE tests \
                 SET sample_count = sample_count + inserted.n_samples FROM inserted \
                 WHERE tests.test_key = $1",
                sql::INSERT_CHUNK
            ))?,
            chunk_ending_at: client.prepare(sql::CHUNK_ENDING_AT)?,
            replace_chunk: client.prepare(&format!(
                "WITH replaced AS ({} RETURNING 1) UPDATE tests \
                 SET sample_count = sample_count + $9 \
                 WHERE test_key = $1 AND EXISTS (SELECT 1 FROM replaced)",
                sql::REPLACE_CHUNK
            ))?,
            set_summary: client.prepare(sql::SET_SUMMARY)?,
            insert_event: client.prepare(
                "INSERT INTO events (test_key, daemon_id, store_epoch, entry_id, unix_time_s,
                     test_time_s, kind, message, step, cycle)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (daemon_id, store_epoch, entry_id) DO NOTHING",
            )?,
            upsert_cycle: client.prepare(sql::UPSERT_CYCLE)?,
            upsert_finding: client.prepare(sql::UPSERT_FINDING)?,
            close_findings: client.prepare(sql::CLOSE_FINDINGS)?,
            quality_state: client.prepare(sql::QUALITY_STATE)?,
            set_quality_state: client.prepare(sql::SET_QUALITY_STATE)?,
            drop_quality_state: client.prepare(sql::DROP_QUALITY_STATE)?,
            test_plan: client.prepare(sql::TEST_PLAN)?,
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
        // Delivered at the commit, to every hub process on this database (their live tails).
        tx.batch_execute(&format!("NOTIFY {}", super::follow::CHANNEL))?;
        tx.commit()?;
        Ok(out)
    }
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

    fn held_chunks(
        &mut self,
        key: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        // Locks the test's row first: what is held is then what the inserts below meet, even
        // with another hub (or another store of the daemon) writing the same test.
        self.tx
            .query(&self.stmts.held_chunks, &[&key, &first, &last])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn insert_chunk(&mut self, key: i64, first_seq: i64, c: &Encoded) -> Result<bool, StoreError> {
        insert_chunk(&mut *self.tx, &self.stmts.insert_chunk, key, first_seq, c)
    }

    fn chunk_ending_at(
        &mut self,
        key: i64,
        last: i64,
        max_samples: i64,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        self.tx
            .query_opt(&self.stmts.chunk_ending_at, &[&key, &last, &max_samples])?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    fn replace_chunk(
        &mut self,
        key: i64,
        first_seq: i64,
        c: &Encoded,
        added: i64,
    ) -> Result<(), StoreError> {
        let n = c.count as i64;
        let last = first_seq + n - 1;
        self.tx.execute(
            &self.stmts.replace_chunk,
            &[
                &key, &first_seq, &last, &n, &c.t_min, &c.t_max, &c.temps, &c.data, &added,
            ],
        )?;
        Ok(())
    }

    fn set_summary(&mut self, key: i64, first_seq: i64, summary: &[u8]) -> Result<(), StoreError> {
        self.tx
            .execute(&self.stmts.set_summary, &[&key, &first_seq, &summary])?;
        Ok(())
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

    fn upsert_finding(&mut self, key: i64, f: &FindingRecord<'_>) -> Result<(), StoreError> {
        self.tx.execute(
            &self.stmts.upsert_finding,
            &[
                &key,
                &f.source,
                &f.check,
                &f.first_seq,
                &f.last_seq,
                &f.open,
                &f.first_test_time_s,
                &f.last_test_time_s,
                &f.missing_s,
                &f.reason,
            ],
        )?;
        Ok(())
    }

    fn close_findings(&mut self, key: i64) -> Result<(), StoreError> {
        self.tx.execute(&self.stmts.close_findings, &[&key])?;
        Ok(())
    }

    fn quality_state(&mut self, key: i64) -> Result<Option<String>, StoreError> {
        let row = self.tx.query_opt(&self.stmts.quality_state, &[&key])?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    fn set_quality_state(&mut self, key: i64, state: Option<&str>) -> Result<(), StoreError> {
        match state {
            Some(state) => self
                .tx
                .execute(&self.stmts.set_quality_state, &[&key, &state])?,
            None => self.tx.execute(&self.stmts.drop_quality_state, &[&key])?,
        };
        Ok(())
    }

    fn test_plan(&mut self, key: i64) -> Result<String, StoreError> {
        Ok(self
            .tx
            .query_one(&self.stmts.test_plan, &[&key])?
            .try_get(0)?)
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

/// Inserts a chunk row with `stmt` ([`sql::INSERT_CHUNK`], prepared or not) on `client`.
pub(super) fn insert_chunk<T: ToStatement + ?Sized>(
    client: &mut impl GenericClient,
    stmt: &T,
    key: i64,
    first_seq: i64,
    c: &Encoded,
) -> Result<bool, StoreError> {
    let n = c.count as i64;
    let last = first_seq + n - 1;
    Ok(client.execute(
        stmt,
        &[
            &key, &first_seq, &last, &n, &c.t_min, &c.t_max, &c.temps, &c.data,
        ],
    )? == 1)
}

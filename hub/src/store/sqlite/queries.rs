//! What the store asks of a SQLite file besides a batch's statements: the queries (on the
//! reader), and the small writes (Hello, tokens, labs, schemas, daemons' labs) each in one
//! transaction on the writer.

use std::path::Path;

use cyclerd_proto::ingest::CycleSummary;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::store::summary::{PlotChunk, PlotWindow};

use super::{
    Backend, BatchOutcome, CellRow, Equipment, EventRow, RejectionRow, SchemaRow, Source,
    SqliteStore, StoreError, TeamRow, TestRow, TestRowRaw, TokenRow, WriteBatch, applied_up_to_in,
    epoch_from_sql, lock, sql, u32_from_sql, u64_from_sql,
};

impl Backend for SqliteStore {
    fn path(&self) -> &Path {
        &self.path
    }

    fn hello(&self, source: &Source<'_>, name: &str) -> Result<u64, StoreError> {
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

    fn insert_token(&self, t: &TokenRow, secret_hash: &str) -> Result<bool, StoreError> {
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

    fn labs(&self) -> Result<Vec<(String, f64)>, StoreError> {
        self.select(sql::LABS, [], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    fn cycles(&self, test_id: &str) -> Result<Vec<CycleSummary>, StoreError> {
        self.select(sql::CYCLES, [test_id], |r| Ok(cycle_row!(test_id, r.get)))
    }

    fn quality_findings(&self, test_id: &str) -> Result<Vec<super::FindingRow>, StoreError> {
        self.select(sql::FINDINGS, [test_id], |r| Ok(finding_row!(r.get)))
    }

    fn finding_tallies(&self) -> Result<Vec<super::FindingTally>, StoreError> {
        self.select(sql::FINDING_TALLIES, [], |r| Ok(finding_tally!(r.get)))
    }

    fn teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        self.select(sql::TEAMS, [], |r| Ok(team_row!(r.get)))
    }

    fn set_schema(
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

    fn remove_schema(&self, lab: &str, tier: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.writer).execute(&sql::sqlite(sql::REMOVE_SCHEMA), params![lab, tier])? == 1)
    }

    fn schemas(&self, lab: &str) -> Result<Vec<SchemaRow>, StoreError> {
        self.select(sql::SCHEMAS, [lab], |r| Ok(schema_row!(r.get)))
    }

    fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError> {
        self.select(sql::TEST_EQUIPMENT, [test_id], |r| {
            Ok(equipment_row!(r.get))
        })
    }

    fn revoke_token(&self, name: &str, now: f64) -> Result<bool, StoreError> {
        Ok(lock(&self.writer).execute(&sql::sqlite(sql::REVOKE_TOKEN), params![name, now])? == 1)
    }

    fn tokens(&self) -> Result<Vec<(TokenRow, String)>, StoreError> {
        self.select(sql::TOKENS, [], |r| Ok(token_row!(r.get)))
    }

    fn bind_daemon(
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

    fn claim_daemon(
        &self,
        daemon_id: &str,
        secret_hash: &str,
        now: f64,
    ) -> Result<String, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            &sql::sqlite(sql::CLAIM_DAEMON),
            params![daemon_id, secret_hash, now],
        )?;
        let bound = tx.query_row(&sql::sqlite(sql::DAEMON_CREDENTIAL), [daemon_id], |r| {
            r.get(0)
        })?;
        tx.commit()?;
        Ok(bound)
    }

    fn forget_daemon_credential(&self, daemon_id: &str) -> Result<bool, StoreError> {
        let conn = lock(&self.writer);
        Ok(conn.execute(&sql::sqlite(sql::FORGET_DAEMON_CREDENTIAL), [daemon_id])? > 0)
    }

    fn assign_daemon(
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

    fn applied_up_to(&self, source: &Source<'_>) -> Result<u64, StoreError> {
        applied_up_to_in(&lock(&self.reader), source)
    }

    fn write_batch(&self, apply: &mut WriteBatch<'_>) -> Result<BatchOutcome, StoreError> {
        let mut conn = lock(&self.writer);
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = apply(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn list_tests(&self) -> Result<Vec<TestRowRaw>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEST_COLUMNS} FROM tests ORDER BY start_unix_s, test_key"
        ))?;
        let rows = stmt
            .query_map([], test_row_raw)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn test(&self, test_id: &str) -> Result<Option<TestRowRaw>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEST_COLUMNS} FROM tests WHERE test_id = ?1"
        ))?;
        Ok(stmt.query_row([test_id], test_row_raw).optional()?)
    }

    fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        conn.prepare_cached("SELECT sample_count FROM tests WHERE test_id = ?1")?
            .query_row([test_id], |r| r.get::<_, i64>(0))
            .optional()?
            .map(u64_from_sql)
            .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))
    }

    fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        let conn = lock(&self.reader);
        let key = test_key_in(&conn, test_id)?;
        Ok(conn
            .prepare_cached(&sql::sqlite(sql::HAS_TEMPERATURES))?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    fn test_key(&self, test_id: &str) -> Result<i64, StoreError> {
        test_key_in(&lock(&self.reader), test_id)
    }

    fn chunk_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        self.select(sql::CHUNK_PAGE, params![key, from_seq, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
    }

    fn plot_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
        w: &PlotWindow,
    ) -> Result<Vec<PlotChunk>, StoreError> {
        self.select(
            sql::PLOT_PAGE_SQLITE,
            params![key, from_seq, limit, w.from, w.to, w.scale],
            |r| {
                Ok(PlotChunk {
                    first_seq: r.get(0)?,
                    last_seq: r.get(1)?,
                    t_min: r.get(2)?,
                    t_max: r.get(3)?,
                    summary: r.get(4)?,
                    data: r.get(5)?,
                })
            },
        )
    }

    fn first_seq_at(&self, key: i64, t: f64) -> Result<Option<i64>, StoreError> {
        Ok(lock(&self.reader)
            .prepare_cached(&sql::sqlite(sql::FIRST_SEQ_AT))?
            .query_row(params![key, t], |r| r.get(0))?)
    }

    fn last_test_time(&self, key: i64) -> Result<Option<f64>, StoreError> {
        Ok(lock(&self.reader)
            .prepare_cached(&sql::sqlite(sql::LAST_TEST_TIME))?
            .query_row(params![key], |r| r.get(0))?)
    }

    fn cells(&self) -> Result<Vec<CellRow>, StoreError> {
        self.select(sql::CELLS, [], |r| Ok(cell_row!(r.get)))
    }

    fn daemon_labs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.select(sql::DAEMON_LABS, [], |r| Ok((r.get(0)?, r.get(1)?)))
    }

    fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(lock(&self.reader)
            .prepare_cached(&sql::sqlite(sql::PROTOCOL))?
            .query_row([test_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
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

    fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
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

    fn run(
        &self,
        statements: &[(&str, Vec<crate::store::shares::Val>)],
    ) -> Result<Vec<u64>, StoreError> {
        self.run_statements(statements)
    }

    fn rows(
        &self,
        statement: &str,
        params: &[crate::store::shares::Val],
    ) -> Result<Vec<Vec<crate::store::shares::Val>>, StoreError> {
        self.select_rows(statement, params)
    }
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

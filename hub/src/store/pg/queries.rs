//! What the store asks of PostgreSQL besides a batch's statements: the queries (on the
//! reader), and the small writes (tokens, labs, schemas, daemons' labs) each in one
//! transaction on the writer.

use std::path::Path;

use cyclerd_proto::ingest::CycleSummary;

use postgres::{GenericClient, Row};

use crate::store::summary::{PlotChunk, PlotWindow};

use super::{
    Backend, BatchOutcome, CellRow, Equipment, EventRow, PgStore, RejectionRow, SchemaRow, Source,
    StoreError, TeamRow, TestRow, TestRowRaw, TokenRow, WriteBatch, epoch_from_sql, sql,
    u32_from_sql, u64_from_sql,
};

/// The `tests` columns [`test_row_raw`] reads, in its order.
const TEST_COLUMNS: &str = "test_id, daemon_id, channel_id, protocol_name, metadata::text, \
    start_unix_s, end_unix_s, outcome, reason, sample_count, expected_samples, team, \
    metadata_problems";

impl Backend for PgStore {
    fn path(&self) -> &Path {
        Path::new(&self.url)
    }

    fn follow_commits(&self, applied: tokio::sync::watch::Sender<u64>) {
        PgStore::follow_commits(self, applied);
    }

    fn hello(&self, source: &Source<'_>, name: &str) -> Result<u64, StoreError> {
        self.with_writer(|w| w.hello(source, name))
    }

    fn insert_token(&self, t: &TokenRow, secret_hash: &str) -> Result<bool, StoreError> {
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

    fn labs(&self) -> Result<Vec<(String, f64)>, StoreError> {
        self.select(sql::LABS, &[], |r| Ok((r.try_get(0)?, r.try_get(1)?)))
    }

    fn cycles(&self, test_id: &str) -> Result<Vec<CycleSummary>, StoreError> {
        self.select(sql::CYCLES, &[&test_id], |r| {
            Ok(cycle_row!(test_id, r.try_get))
        })
    }

    fn quality_findings(&self, test_id: &str) -> Result<Vec<super::FindingRow>, StoreError> {
        self.select(sql::FINDINGS, &[&test_id], |r| Ok(finding_row!(r.try_get)))
    }

    fn finding_tallies(&self) -> Result<Vec<super::FindingTally>, StoreError> {
        self.select(sql::FINDING_TALLIES, &[], |r| Ok(finding_tally!(r.try_get)))
    }

    fn teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        self.select(sql::TEAMS, &[], |r| Ok(team_row!(r.try_get)))
    }

    fn set_schema(
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

    fn remove_schema(&self, lab: &str, tier: &str) -> Result<bool, StoreError> {
        self.with_writer(|w| Ok(w.client.execute(sql::REMOVE_SCHEMA, &[&lab, &tier])? == 1))
    }

    fn schemas(&self, lab: &str) -> Result<Vec<SchemaRow>, StoreError> {
        self.select(sql::SCHEMAS, &[&lab], |r| Ok(schema_row!(r.try_get)))
    }

    fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError> {
        self.select(sql::TEST_EQUIPMENT, &[&test_id], |r| {
            Ok(equipment_row!(r.try_get))
        })
    }

    fn revoke_token(&self, name: &str, now: f64) -> Result<bool, StoreError> {
        self.with_writer(|w| Ok(w.client.execute(sql::REVOKE_TOKEN, &[&name, &now])? == 1))
    }

    fn tokens(&self) -> Result<Vec<(TokenRow, String)>, StoreError> {
        self.select(sql::TOKENS, &[], |r| Ok(token_row!(r.try_get)))
    }

    fn bind_daemon(
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

    fn claim_daemon(
        &self,
        daemon_id: &str,
        secret_hash: &str,
        now: f64,
    ) -> Result<String, StoreError> {
        self.with_writer(|w| {
            let mut tx = w.client.transaction()?;
            tx.execute(sql::CLAIM_DAEMON, &[&daemon_id, &secret_hash, &now])?;
            let bound = tx
                .query_one(sql::DAEMON_CREDENTIAL, &[&daemon_id])?
                .try_get(0)?;
            tx.commit()?;
            Ok(bound)
        })
    }

    fn forget_daemon_credential(&self, daemon_id: &str) -> Result<bool, StoreError> {
        self.with_writer(|w| {
            Ok(w.client
                .execute(sql::FORGET_DAEMON_CREDENTIAL, &[&daemon_id])?
                > 0)
        })
    }

    fn assign_daemon(
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

    fn applied_up_to(&self, source: &Source<'_>) -> Result<u64, StoreError> {
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

    fn write_batch(&self, apply: &mut WriteBatch<'_>) -> Result<BatchOutcome, StoreError> {
        self.with_writer(|w| w.write_batch(apply))
    }

    fn list_tests(&self) -> Result<Vec<TestRowRaw>, StoreError> {
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

    fn test(&self, test_id: &str) -> Result<Option<TestRowRaw>, StoreError> {
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

    fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
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

    fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        self.with_reader(|c| {
            let key = test_key(c, test_id)?;
            let row = c.query_one(sql::HAS_TEMPERATURES, &[&key])?;
            Ok((row.try_get(0)?, row.try_get(1)?))
        })
    }

    fn cells(&self) -> Result<Vec<CellRow>, StoreError> {
        self.select(sql::CELLS, &[], |r| Ok(cell_row!(r.try_get)))
    }

    fn daemon_labs(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.select(sql::DAEMON_LABS, &[], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
    }

    fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError> {
        self.with_reader(|c| {
            c.query_opt(sql::PROTOCOL, &[&test_id])?
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .transpose()
        })
    }

    fn test_key(&self, test_id: &str) -> Result<i64, StoreError> {
        self.with_reader(|c| test_key(c, test_id))
    }

    fn chunk_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError> {
        self.select(sql::CHUNK_PAGE, &[&key, &from_seq, &limit], |r| {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
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
            sql::PLOT_PAGE_PG,
            &[&key, &from_seq, &limit, &w.from, &w.to, &w.scale],
            |r| {
                Ok(PlotChunk {
                    first_seq: r.try_get(0)?,
                    last_seq: r.try_get(1)?,
                    t_min: r.try_get(2)?,
                    t_max: r.try_get(3)?,
                    summary: r.try_get(4)?,
                    data: r.try_get(5)?,
                })
            },
        )
    }

    fn first_seq_at(&self, key: i64, t: f64) -> Result<Option<i64>, StoreError> {
        self.with_reader(|c| Ok(c.query_one(sql::FIRST_SEQ_AT, &[&key, &t])?.try_get(0)?))
    }

    fn last_test_time(&self, key: i64) -> Result<Option<f64>, StoreError> {
        self.with_reader(|c| Ok(c.query_one(sql::LAST_TEST_TIME, &[&key])?.try_get(0)?))
    }

    fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
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

    fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
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

fn test_key(c: &mut impl GenericClient, test_id: &str) -> Result<i64, StoreError> {
    c.query_opt("SELECT test_key FROM tests WHERE test_id = $1", &[&test_id])?
        .ok_or_else(|| StoreError::NoSuchTest(test_id.to_owned()))?
        .try_get(0)
        .map_err(StoreError::from)
}

fn test_row_raw(r: &Row) -> Result<TestRowRaw, StoreError> {
    Ok(test_row_raw!(r.try_get))
}

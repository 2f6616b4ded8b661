//! The share tables' statements on SQLite ([`super::super::shares`]).

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use super::{SqliteStore, StoreError, lock, sql};
use crate::store::shares::Val;

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Val::Int(v) => ToSqlOutput::from(*v),
            Val::Real(v) => ToSqlOutput::from(*v),
            Val::Text(Some(s)) => ToSqlOutput::from(s.as_str()),
            Val::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl SqliteStore {
    /// See `Backend::run`.
    pub(super) fn run_statements(
        &self,
        statements: &[(&str, Vec<Val>)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut changed = Vec::with_capacity(statements.len());
        for (statement, params) in statements {
            let n = tx
                .prepare_cached(&sql::sqlite(statement))?
                .execute(rusqlite::params_from_iter(params.iter()))?;
            changed.push(n as u64);
        }
        tx.commit()?;
        Ok(changed)
    }

    /// See `Backend::rows`.
    pub(super) fn select_rows(
        &self,
        statement: &str,
        params: &[Val],
    ) -> Result<Vec<Vec<Val>>, StoreError> {
        let conn = lock(&self.reader);
        rows_on(&conn, statement, params)
    }
}

fn rows_on(
    conn: &Connection,
    statement: &str,
    params: &[Val],
) -> Result<Vec<Vec<Val>>, StoreError> {
    let mut stmt = conn.prepare_cached(&sql::sqlite(statement))?;
    let n = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Real(v) => Val::Real(v),
                    ValueRef::Text(t) => Val::Text(Some(String::from_utf8_lossy(t).into_owned())),
                    ValueRef::Null | ValueRef::Blob(_) => Val::Text(None),
                })
            })
            .collect::<rusqlite::Result<Vec<Val>>>()
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

//! The share tables' statements on PostgreSQL ([`super::super::shares`]).

use postgres::types::{ToSql, Type};

use super::{PgStore, StoreError};
use crate::store::shares::Val;

/// `v` as a parameter of the type its column has.
fn param(v: &Val) -> Box<dyn ToSql + Sync + Send> {
    match v {
        Val::Int(v) => Box::new(*v),
        Val::Real(v) => Box::new(*v),
        Val::Text(s) => Box::new(s.clone()),
    }
}

impl PgStore {
    /// See `Backend::run`.
    pub(super) fn run_statements(
        &self,
        statements: &[(&str, Vec<Val>)],
    ) -> Result<Vec<u64>, StoreError> {
        self.with_writer(|w| {
            let mut tx = w.client.transaction()?;
            let mut changed = Vec::with_capacity(statements.len());
            for (statement, params) in statements {
                let boxed: Vec<_> = params.iter().map(param).collect();
                let refs: Vec<&(dyn ToSql + Sync)> = boxed
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                changed.push(tx.execute(*statement, &refs)?);
            }
            tx.commit()?;
            Ok(changed)
        })
    }

    /// See `Backend::rows`.
    pub(super) fn select_rows(
        &self,
        statement: &str,
        params: &[Val],
    ) -> Result<Vec<Vec<Val>>, StoreError> {
        self.with_reader(|c| {
            let boxed: Vec<_> = params.iter().map(param).collect();
            let refs: Vec<&(dyn ToSql + Sync)> = boxed
                .iter()
                .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = c.query(statement, &refs)?;
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            Ok(match *r.columns()[i].type_() {
                                Type::INT8 => Val::Int(r.try_get(i)?),
                                Type::INT4 => Val::Int(i64::from(r.try_get::<_, i32>(i)?)),
                                Type::FLOAT8 => match r.try_get::<_, Option<f64>>(i)? {
                                    Some(v) => Val::Real(v),
                                    None => Val::Text(None),
                                },
                                _ => Val::Text(r.try_get(i)?),
                            })
                        })
                        .collect()
                })
                .collect()
        })
    }
}

//! The PostgreSQL backend: the SQLite design on a server. One *writer* connection behind a
//! mutex (the hub stays a single writer) and one read-only *reader* connection for queries;
//! each reconnects on its next use after it broke (the server restarted, the network went).
//!
//! Samples are kept as encoded chunks (`store::chunk`), a row per run of contiguous seqs of a
//! test, inserted with a prepared statement inside the batch's transaction; their `data` is
//! stored without TOAST compression (it is compressed already).
//!
//! The sync `postgres` client runs its connection on a small runtime of its own, which tokio
//! refuses to start (or drop) on a thread that runs an async runtime; see [`off_runtime`].
//!
//! `schema` migrates the database, `writes` runs a batch's statements (the hot path),
//! `queries` answers the rest of what the store asks ([`Backend`]).
//!
//! TLS to the server follows the URL's `sslmode` and `sslrootcert`, as with libpq; see [`tls`].

mod follow;
mod queries;
mod schema;
mod shares;
mod tls;
mod writes;

use std::sync::{Mutex, MutexGuard, PoisonError};

use postgres::{Client, Row};

use super::chunk::Encoded;
use super::samples::{LegacySamples, convert_test};
use super::{
    Backend, BatchOutcome, BatchWrites, CellRow, CycleRecord, Equipment, EventRow, FindingRecord,
    FindingRow, FindingTally, Registration, RejectionRecord, RejectionRow, SampleRow, SchemaRow,
    Source, StoreError, TeamRow, TestRow, TestRowRaw, WriteBatch, epoch_from_sql, sql,
    u32_from_sql, u64_from_sql,
};
use crate::token::TokenRow;
use schema::migrate;
pub use tls::TlsSettingsError;
use writes::Statements;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub(super) fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

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
    reader: Mutex<Option<Reader>>,
    /// Opened with `connect_read_only` (a standby, typically): commits are followed by the
    /// replay position, since a standby delivers no notifications.
    read_only: bool,
}

/// The writer connection with the statements the apply runs thousands of times.
struct Writer {
    /// The connection.
    client: Client,
    /// Prepared once per connection.
    stmts: Statements,
}

/// The reader connection with the statements [`PgStore::select`] prepared on it: a long read
/// runs the same page query hundreds of times, and an unprepared one costs a parse, a plan
/// and a second round trip each time.
struct Reader {
    client: Client,
    /// By statement text; gone with the connection.
    prepared: std::collections::HashMap<&'static str, postgres::Statement>,
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
            read_only: false,
        };
        store.with_writer(|_| Ok(()))?;
        store.with_reader(|_| Ok(()))?;
        Ok(store)
    }

    /// A store for queries only, on a database that may be a streaming standby: connects the
    /// reading side right away and never migrates (the primary's hub does); a write through it
    /// fails as the server refuses it.
    pub(super) fn connect_read_only(db: &str) -> Result<PgStore, StoreError> {
        let url = redact(db);
        let mut target = tls::Target::parse(db, &url)?;
        if target.config.get_application_name().is_none() {
            target.config.application_name("cyclerhub-reader");
        }
        let store = PgStore {
            target,
            url,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            read_only: true,
        };
        store.with_reader(|_| Ok(()))?;
        Ok(store)
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

    /// See [`super::HubStore::follow_commits`].
    pub(super) fn follow_commits(&self, applied: tokio::sync::watch::Sender<u64>) {
        let (target, standby) = (self.target.clone(), self.read_only);
        let spawned = std::thread::Builder::new()
            .name("cyclerhub-commits".into())
            .spawn(move || follow::follow(target, standby, applied));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the thread that hears other hub processes' commits: {e}");
        }
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
        self.with_prepared_reader(|r| f(&mut r.client))
    }

    fn with_prepared_reader<T: Send>(
        &self,
        f: impl FnOnce(&mut Reader) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.reader);
        let slot: &mut Option<Reader> = &mut guard;
        let connect = || {
            Ok(Reader {
                client: self.connect_reader()?,
                prepared: Default::default(),
            })
        };
        let result = off_runtime(|| f(ensure(slot, |r| &r.client, connect)?));
        if result.as_ref().is_err_and(connection_broke) {
            *guard = None;
        }
        result
    }

    /// Every row of `statement` that `row` reads, on the reader, prepared once per connection.
    fn select<T: Send>(
        &self,
        statement: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        row: impl Fn(&Row) -> Result<T, StoreError> + Send,
    ) -> Result<Vec<T>, StoreError> {
        self.with_prepared_reader(|r| {
            let stmt = match r.prepared.get(statement) {
                Some(stmt) => stmt.clone(),
                None => {
                    let stmt = r.client.prepare(statement)?;
                    r.prepared.insert(statement, stmt.clone());
                    stmt
                }
            };
            r.client.query(&stmt, params)?.iter().map(row).collect()
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

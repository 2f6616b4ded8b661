//! What can go wrong in the hub's storage, and how to say it in one line.

use std::path::PathBuf;

use super::TlsSettingsError;

/// Errors of the hub's storage layer. Following the std convention, a message does not repeat
/// its `source()`: print the chain (`{:#}` with anyhow, or [`error_chain`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or configured.
    #[error("cannot open hub database {}", path.display())]
    Open {
        /// The file we tried to open.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database file could not be created private to its owner (or made so).
    #[error("cannot create hub database {} readable by its owner only", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The PostgreSQL server could not be reached or refused the connection.
    #[error(
        "cannot connect to the hub database {url}; check the URL, that PostgreSQL runs there and \
         that the database exists (createdb)"
    )]
    Connect {
        /// The URL, without its password.
        url: String,
        /// What the PostgreSQL client said.
        source: postgres::Error,
    },
    /// The PostgreSQL URL's TLS parameters (`sslmode`, `sslrootcert`) cannot work.
    #[error("hub database {url}: unusable TLS settings")]
    TlsSettings {
        /// The URL, without its password.
        url: String,
        /// What is wrong with them.
        source: TlsSettingsError,
    },
    /// The connection to PostgreSQL failed for TLS, or for the lack of it.
    #[error("cannot connect to the hub database {url}: {problem}")]
    ConnectTls {
        /// The URL, without its password.
        url: String,
        /// What failed (certificate not trusted, no TLS on the server, ...) and what to do.
        problem: String,
        /// What the PostgreSQL client said.
        source: postgres::Error,
    },
    /// The database was written by a newer cyclerhub whose schema we do not know.
    #[error(
        "hub database {database} has schema version {found}, but this cyclerhub only knows up to \
         {supported}; use a newer cyclerhub"
    )]
    SchemaTooNew {
        /// The file, or the URL without its password.
        database: String,
        /// The version found (`PRAGMA user_version`, or the newest row of `schema_migrations`).
        found: i64,
        /// The newest schema version this build can migrate to.
        supported: i64,
    },
    /// The test id is not in the hub.
    #[error("no test with id {0:?} in the hub")]
    NoSuchTest(String),
    /// A number from the wire does not fit the database's signed 64-bit integers.
    #[error("{0} is out of range (the hub stores at most 2^63-1)")]
    OutOfRange(&'static str),
    /// Stored data that the hub itself wrote does not parse back.
    #[error("corrupt hub data: {0}")]
    Corrupt(String),
    /// A request the hub refuses (a token name in use, no such token), in words for people.
    #[error("{0}")]
    Refused(String),
    /// Any other SQLite failure (I/O error, disk full, ...).
    #[error("hub database error")]
    Sqlite(#[from] rusqlite::Error),
    /// Any other PostgreSQL failure (lost connection, server error, ...).
    #[error("hub database error (PostgreSQL)")]
    Postgres(#[from] postgres::Error),
}

/// An error and all its sources, `: `-separated, for places that only take one string (gRPC
/// status messages, logs).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

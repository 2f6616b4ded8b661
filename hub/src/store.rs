//! The hub's database: the batched idempotent apply of ingest entries, and the queries, over
//! one of two backends with the same schema and the same behaviour:
//!
//! - `sqlite` (a file; the embedded default for one lab): two connections, the *writer*
//!   behind a mutex so that exactly one thread writes at a time however many daemons stream at
//!   once, and a *reader* for queries, which in WAL mode sees committed data without blocking
//!   (or being blocked by) the writer;
//! - `pg` (a `postgres://` URL; a real deployment): the same two connections to a PostgreSQL
//!   database, samples bulk-loaded with binary COPY.
//!
//! Every method is blocking; async callers run them on `spawn_blocking`.
//!
//! Idempotence comes from the schema: samples are keyed by `(test_key, seq)`, events by the
//! entry that carried them `(daemon_id, store_epoch, entry_id)`, tests by `test_id`, and every
//! insert skips the rows already held. Re-applying any entry is therefore a no-op. What an
//! entry means (validation, ownership, rejections, the resume point) is decided here, once, in
//! `apply_entries`; the backends only run the statements (`BatchWrites`).

#[macro_use]
mod rows;
mod pg;
mod sql;
mod sqlite;

pub use pg::TlsSettingsError;

use crate::auth::{Role, TokenRow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cyclerd_proto::ingest::Equipment;
use cyclerd_proto::ingest::{
    Entry, Event, Hello, Rejection, SampleBatch, TestEnded, TestRegistered, entry::Body,
};
use cyclerd_proto::metadata::MAX_KEY_BYTES;
use prost::Message as _;

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

/// Samples read per page when streaming a test out (about 1 MB of rows).
const SAMPLE_PAGE: i64 = 8192;

fn now_unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

/// Whether `db` is a PostgreSQL URL (`postgres://` or `postgresql://`) rather than a SQLite file,
/// as [`HubStore::connect`] decides.
pub fn is_postgres_url(db: &str) -> bool {
    pg::is_url(db)
}

/// A handle on the hub database; cheap to clone, shareable between threads.
#[derive(Clone)]
pub struct HubStore {
    /// Shared so that every stream's task and the query side use the same connections.
    backend: Arc<Backend>,
}

/// Where the data lives; [`HubStore`]'s methods dispatch on it.
#[expect(
    clippy::large_enum_variant,
    reason = "one per hub, behind an Arc: the size is never copied"
)]
enum Backend {
    /// A SQLite file.
    Sqlite(sqlite::SqliteStore),
    /// A PostgreSQL database.
    Postgres(pg::PgStore),
}

impl std::fmt::Debug for HubStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStore")
            .field("database", &self.path())
            .finish()
    }
}

/// One test as listed by [`HubStore::list_tests`].
#[derive(Debug, Clone, PartialEq)]
pub struct TestRow {
    /// The daemon's UUIDv7 for the test: the id users pass to `export`.
    pub test_id: String,
    /// Which daemon ran it, to tell labs and benches apart.
    pub daemon_id: String,
    /// `DEVICE/N` channel the test ran on.
    pub channel_id: String,
    /// Name of the protocol, as the engineer called it.
    pub protocol_name: String,
    /// Primary metadata (cell id, operator, chemistry, ...), sorted by key.
    pub metadata: BTreeMap<String, String>,
    /// When the test started (Unix seconds).
    pub start_unix_s: f64,
    /// When it ended; `None` while the hub has not seen it end.
    pub end_unix_s: Option<f64>,
    /// `finished`, `stopped` or `faulted`; `None` while running.
    pub outcome: Option<String>,
    /// Why it ended, in words (e.g. the alarm that faulted it).
    pub reason: Option<String>,
    /// Samples the hub holds for the test.
    pub sample_count: u64,
    /// Samples the daemon said the test produced, once ended; compare with `sample_count`.
    pub expected_samples: Option<u64>,
    /// The team its metadata names (`team`), if any.
    pub team: Option<String>,
    /// Where its metadata did not follow its lab's schemas when it registered; empty when it
    /// did (or the lab has none).
    pub metadata_problems: Vec<String>,
}

impl TestRow {
    /// `running` until the test ends, then its outcome.
    pub fn state(&self) -> &str {
        self.outcome.as_deref().unwrap_or("running")
    }
}

/// A team of a lab, as the hub first saw it in a test's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamRow {
    /// The lab of the daemon that ran the team's test.
    pub lab: String,
    /// The metadata's `team`.
    pub team: String,
    /// When the first test of the team the hub stored started (Unix seconds).
    pub first_test_unix_s: f64,
}

/// A lab's JSON Schema for one metadata tier.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRow {
    /// `secondary` or `tertiary`.
    pub tier: String,
    /// The schema document as registered.
    pub schema_json: String,
    /// When it was registered (Unix seconds): daemons show which version they checked against.
    pub updated_unix_s: f64,
}

/// One sample, in BDF units; current positive when charging.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// Sequence number, contiguous per test from 0: gaps mean missing data.
    pub seq: u64,
    /// Seconds since the test started.
    pub test_time_s: f64,
    /// Wall-clock time of the sample (Unix seconds).
    pub unix_time_s: f64,
    /// Cell voltage, V.
    pub voltage_v: f64,
    /// Current, A; positive = charging (BDF sign).
    pub current_a: f64,
    /// Cycle counter of the protocol.
    pub cycle: u32,
    /// Step counter of the protocol.
    pub step: u32,
    /// Cumulative charge capacity, Ah.
    pub charge_capacity_ah: f64,
    /// Cumulative discharge capacity, Ah.
    pub discharge_capacity_ah: f64,
    /// Cumulative charge energy, Wh.
    pub charge_energy_wh: f64,
    /// Cumulative discharge energy, Wh.
    pub discharge_energy_wh: f64,
    /// Cell (surface) temperature, °C; `None` when the channel has no sensor.
    pub temperature_c: Option<f64>,
    /// Air temperature of the chamber the cell sits in, °C; `None` outside a chamber.
    pub ambient_temperature_c: Option<f64>,
}

/// One event of a test (step change, state change, alarm, info).
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Wall-clock time (Unix seconds).
    pub unix_time_s: f64,
    /// Seconds since the test started.
    pub test_time_s: f64,
    /// `step`, `state`, `alarm` or `info`.
    pub kind: String,
    /// Human-readable text.
    pub message: String,
    /// Protocol step at the time.
    pub step: u32,
    /// Protocol cycle at the time.
    pub cycle: u32,
}

/// An entry the hub refused, as recorded in the `rejections` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionRow {
    /// Daemon that sent it.
    pub daemon_id: String,
    /// Store epoch the entry id belongs to.
    pub store_epoch: u64,
    /// The entry's id in the daemon's outbox, to find the parked copy there.
    pub entry_id: u64,
    /// Entry type (`test_registered`, `samples`, `event`, `test_ended`, `none`).
    pub kind: String,
    /// Test the entry was about, when it named one.
    pub test_id: Option<String>,
    /// Why it was refused.
    pub reason: String,
}

/// What [`HubStore::apply_batch`] did; the server turns it into Rejections and one Ack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Highest entry id of the batch: the cumulative Ack to send (0 for an empty batch).
    pub up_to: u64,
    /// Entries applied now.
    pub applied: usize,
    /// Entries skipped because the hub had already handled them (id <= applied_up_to).
    pub duplicates: usize,
    /// Entries refused now; each is recorded and must be answered with a Rejection.
    pub rejections: Vec<Rejection>,
    /// Sample rows actually inserted (re-sent samples are not counted).
    pub samples_inserted: u64,
}

impl HubStore {
    /// Opens (creating if needed) the SQLite hub database at `path` and migrates it to the
    /// current schema. WAL mode, `synchronous=FULL`: an Ack is only sent after a commit that
    /// survives power loss, because the daemon deletes what the hub acked.
    pub fn open(path: impl AsRef<Path>) -> Result<HubStore, StoreError> {
        Ok(HubStore {
            backend: Arc::new(Backend::Sqlite(sqlite::SqliteStore::open(path.as_ref())?)),
        })
    }

    /// Opens the hub database `db` names: a `postgres://` (or `postgresql://`) URL connects to
    /// that PostgreSQL database, which must exist; anything else is a SQLite file, created if
    /// missing. Either way the schema is migrated to the current version first.
    pub fn connect(db: &str) -> Result<HubStore, StoreError> {
        if is_postgres_url(db) {
            Ok(HubStore {
                backend: Arc::new(Backend::Postgres(pg::PgStore::connect(db)?)),
            })
        } else {
            HubStore::open(db)
        }
    }

    /// The SQLite file; for PostgreSQL, the URL without its password.
    pub fn path(&self) -> &Path {
        match &*self.backend {
            Backend::Sqlite(s) => s.path(),
            Backend::Postgres(p) => Path::new(p.url()),
        }
    }

    /// Records a daemon's Hello and returns its resume point: the highest entry id applied for
    /// `(daemon_id, store_epoch)`, 0 when the hub has never seen that store.
    pub fn hello(&self, hello: &Hello) -> Result<u64, StoreError> {
        let source = Source {
            daemon_id: &hello.daemon_id,
            epoch: epoch_to_sql(hello.store_epoch),
        };
        match &*self.backend {
            Backend::Sqlite(s) => s.hello(&source, &hello.daemon_name),
            Backend::Postgres(p) => p.hello(&source, &hello.daemon_name),
        }
    }

    /// Highest entry id applied for `(daemon_id, store_epoch)`; 0 when none.
    pub fn applied_up_to(&self, daemon_id: &str, store_epoch: u64) -> Result<u64, StoreError> {
        let source = Source {
            daemon_id,
            epoch: epoch_to_sql(store_epoch),
        };
        match &*self.backend {
            Backend::Sqlite(s) => s.applied_up_to(&source),
            Backend::Postgres(p) => p.applied_up_to(&source),
        }
    }

    /// Applies a batch of entries from one daemon store in ONE transaction, together with the
    /// new `applied_up_to`, and commits. Entries the hub already handled are skipped; entries it
    /// cannot apply are recorded in `rejections` and reported in the outcome. Only a storage
    /// failure returns `Err`, and then nothing of the batch is kept (so nothing may be acked).
    ///
    /// `entries` must have strictly increasing ids (the server checks this on the stream).
    pub fn apply_batch(
        &self,
        daemon_id: &str,
        store_epoch: u64,
        entries: &[Entry],
    ) -> Result<BatchOutcome, StoreError> {
        let Some(last) = entries.last() else {
            return Ok(BatchOutcome::default());
        };
        // Checked before touching the database, so SQL comparisons of ids stay meaningful.
        let up_to = i64::try_from(last.id).map_err(|_| StoreError::OutOfRange("entry id"))?;
        let source = Source {
            daemon_id,
            epoch: epoch_to_sql(store_epoch),
        };
        match &*self.backend {
            Backend::Sqlite(s) => s.apply_batch(&source, up_to, entries),
            Backend::Postgres(p) => p.apply_batch(&source, up_to, entries),
        }
    }

    /// Issues a token with `role` for `lab` named `name` (unique); returns the token text,
    /// which the hub does not keep (only its hash): show it once.
    pub fn issue_token(&self, lab: &str, name: &str, role: Role) -> Result<String, StoreError> {
        crate::auth::check_name("lab", lab).map_err(StoreError::Refused)?;
        crate::auth::check_name("token name", name).map_err(StoreError::Refused)?;
        let (token_id, secret, text) = crate::auth::generate();
        let row = TokenRow {
            token_id,
            lab: lab.into(),
            name: name.into(),
            created_unix_s: now_unix_s(),
            revoked_unix_s: None,
            role,
        };
        let hash = crate::auth::secret_hash(&secret);
        // The token and its lab (new or not) in one transaction: both, or neither.
        let inserted = match &*self.backend {
            Backend::Sqlite(s) => s.insert_token(&row, &hash)?,
            Backend::Postgres(p) => p.insert_token(&row, &hash)?,
        };
        if !inserted {
            return Err(StoreError::Refused(format!(
                "a token named {name:?} exists already; revoke it first or choose another name"
            )));
        }
        Ok(text)
    }

    /// Revokes the token named `name`: uploads and queries with it are refused from now on.
    pub fn revoke_token(&self, name: &str) -> Result<(), StoreError> {
        let revoked = match &*self.backend {
            Backend::Sqlite(s) => s.revoke_token(name, now_unix_s())?,
            Backend::Postgres(p) => p.revoke_token(name, now_unix_s())?,
        };
        if revoked {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "no valid token named {name:?} (see `cyclerhub token list`)"
            )))
        }
    }

    /// Every token ever issued, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        Ok(self.token_rows()?.into_iter().map(|(t, _)| t).collect())
    }

    fn token_rows(&self) -> Result<Vec<(TokenRow, String)>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.tokens(),
            Backend::Postgres(p) => p.tokens(),
        }
    }

    /// The token `text` names if its secret matches, valid or revoked; `None` for anything
    /// else (malformed, unknown, wrong secret).
    pub fn authenticate(&self, text: &str) -> Result<Option<TokenRow>, StoreError> {
        let Some((id, secret)) = crate::auth::parse(text) else {
            return Ok(None);
        };
        Ok(self
            .token_rows()?
            .into_iter()
            .find(|(t, hash)| t.token_id == id && crate::auth::secret_matches(secret, hash))
            .map(|(t, _)| t))
    }

    /// Binds `daemon_id` to `lab` if it belongs to no lab yet and the hub has no test of it
    /// (tests uploaded without a lab are assigned by a person, [`HubStore::assign_daemon`]);
    /// returns the lab it belongs to, `None` when it stays unbound.
    pub fn bind_daemon(&self, daemon_id: &str, lab: &str) -> Result<Option<String>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.bind_daemon(daemon_id, lab, now_unix_s()),
            Backend::Postgres(p) => p.bind_daemon(daemon_id, lab, now_unix_s()),
        }
    }

    /// Assigns `daemon_id`, and so every test it uploaded, to `lab` (moving it if it belonged
    /// to another: a person's decision), and records its tests' teams in the lab. Returns the
    /// lab it belonged to before. Refused for a daemon the hub has never heard from (a typo).
    pub fn assign_daemon(&self, daemon_id: &str, lab: &str) -> Result<Option<String>, StoreError> {
        crate::auth::check_name("lab", lab).map_err(StoreError::Refused)?;
        let assigned = match &*self.backend {
            Backend::Sqlite(s) => s.assign_daemon(daemon_id, lab, now_unix_s())?,
            Backend::Postgres(p) => p.assign_daemon(daemon_id, lab, now_unix_s())?,
        };
        assigned.ok_or_else(|| {
            StoreError::Refused(format!(
                "no daemon {daemon_id:?} has ever connected to this hub (see `cyclerhub tests`)"
            ))
        })
    }

    /// Every cell the hub has seen a test of, by lab and id.
    pub fn cells(&self) -> Result<Vec<CellRow>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.cells(),
            Backend::Postgres(p) => p.cells(),
        }
    }

    /// Every lab the hub knows: those tokens were issued for or schemas registered for, with
    /// when it first appeared (Unix seconds).
    pub fn labs(&self) -> Result<Vec<(String, f64)>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.labs(),
            Backend::Postgres(p) => p.labs(),
        }
    }

    /// Every team of every lab, as the metadata of the labs' tests named them.
    pub fn teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.teams(),
            Backend::Postgres(p) => p.teams(),
        }
    }

    /// Registers (or replaces) `lab`'s JSON Schema for a metadata `tier`; a document that is
    /// not a usable schema is refused with the reason, and nothing changes.
    pub fn set_metadata_schema(
        &self,
        lab: &str,
        tier: &str,
        document: &str,
    ) -> Result<(), StoreError> {
        crate::auth::check_name("lab", lab).map_err(StoreError::Refused)?;
        cyclerd_proto::metadata::TierSchema::compile(tier, document)
            .map_err(StoreError::Refused)?;
        let now = now_unix_s();
        match &*self.backend {
            Backend::Sqlite(s) => s.set_schema(lab, tier, document, now),
            Backend::Postgres(p) => p.set_schema(lab, tier, document, now),
        }
    }

    /// Removes `lab`'s schema for `tier`: that tier accepts anything again.
    pub fn remove_metadata_schema(&self, lab: &str, tier: &str) -> Result<(), StoreError> {
        let removed = match &*self.backend {
            Backend::Sqlite(s) => s.remove_schema(lab, tier)?,
            Backend::Postgres(p) => p.remove_schema(lab, tier)?,
        };
        if removed {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "lab {lab:?} has no {tier} metadata schema (see `cyclerhub schema show --lab {lab}`)"
            )))
        }
    }

    /// `lab`'s metadata schemas, by tier.
    pub fn metadata_schemas(&self, lab: &str) -> Result<Vec<SchemaRow>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.schemas(lab),
            Backend::Postgres(p) => p.schemas(lab),
        }
    }

    /// The instruments a test ran on, by name.
    pub fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.test_equipment(test_id),
            Backend::Postgres(p) => p.test_equipment(test_id),
        }
    }

    /// The lab of every daemon that uploaded with a token, by daemon id.
    pub fn daemon_labs(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let pairs = match &*self.backend {
            Backend::Sqlite(s) => s.daemon_labs()?,
            Backend::Postgres(p) => p.daemon_labs()?,
        };
        Ok(pairs.into_iter().collect())
    }

    /// Every test, oldest first.
    pub fn list_tests(&self) -> Result<Vec<TestRow>, StoreError> {
        let raw = match &*self.backend {
            Backend::Sqlite(s) => s.list_tests()?,
            Backend::Postgres(p) => p.list_tests()?,
        };
        raw.into_iter().map(TestRowRaw::finish).collect()
    }

    /// One test, or `None` when the hub does not have it.
    pub fn test(&self, test_id: &str) -> Result<Option<TestRow>, StoreError> {
        let raw = match &*self.backend {
            Backend::Sqlite(s) => s.test(test_id)?,
            Backend::Postgres(p) => p.test(test_id)?,
        };
        raw.map(TestRowRaw::finish).transpose()
    }

    /// Number of samples the hub holds for the test.
    pub fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.sample_count(test_id),
            Backend::Postgres(p) => p.sample_count(test_id),
        }
    }

    /// Whether any sample of the test has a cell temperature and an ambient (chamber)
    /// temperature: decides the BDF temperature columns.
    pub fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.has_temperatures(test_id),
            Backend::Postgres(p) => p.has_temperatures(test_id),
        }
    }

    /// All samples of a test in `seq` order. Loads them all; for big tests prefer
    /// [`HubStore::for_each_sample`].
    pub fn samples(&self, test_id: &str) -> Result<Vec<SampleRow>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_sample(test_id, |s| {
            rows.push(s.clone());
            Ok::<_, StoreError>(())
        })?;
        Ok(rows)
    }

    /// Streams the samples of a test in `seq` order through `f`, without loading them all;
    /// returns how many were visited. Stops at the first error `f` returns.
    pub fn for_each_sample<E: From<StoreError>>(
        &self,
        test_id: &str,
        f: impl FnMut(&SampleRow) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.for_each_sample_from(test_id, 0, f)
    }

    /// [`HubStore::for_each_sample`] from sequence number `from_seq` on (index range scans,
    /// so following a long test costs only its new samples).
    ///
    /// Reads a page of rows at a time and holds the reader connection only while reading a
    /// page, never while `f` runs: a slow consumer (a client that stopped reading its stream)
    /// must not stall the queries and token checks that share the connection.
    pub fn for_each_sample_from<E: From<StoreError>>(
        &self,
        test_id: &str,
        from_seq: u64,
        mut f: impl FnMut(&SampleRow) -> Result<(), E>,
    ) -> Result<u64, E> {
        let key = match &*self.backend {
            Backend::Sqlite(s) => s.test_key(test_id)?,
            Backend::Postgres(p) => p.test_key(test_id)?,
        };
        // Beyond any seq the hub stores (at most i64::MAX): nothing to read.
        let Ok(mut next) = i64::try_from(from_seq) else {
            return Ok(0);
        };
        let mut n = 0;
        loop {
            let page = match &*self.backend {
                Backend::Sqlite(s) => s.sample_page(key, next, SAMPLE_PAGE)?,
                Backend::Postgres(p) => p.sample_page(key, next, SAMPLE_PAGE)?,
            };
            for sample in &page {
                f(sample)?;
                n += 1;
            }
            match page
                .last()
                .map(|last| i64::try_from(last.seq).ok()?.checked_add(1))
            {
                Some(Some(after)) if page.len() as i64 == SAMPLE_PAGE => next = after,
                _ => return Ok(n),
            }
        }
    }

    /// The protocol a test ran, as its YAML source and its compiled plan (JSON); `None` for an
    /// unknown test.
    pub fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.protocol(test_id),
            Backend::Postgres(p) => p.protocol(test_id),
        }
    }

    /// The events of a test, in time order.
    pub fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.events(test_id),
            Backend::Postgres(p) => p.events(test_id),
        }
    }

    /// Every rejected entry, in the order they were recorded.
    pub fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
        match &*self.backend {
            Backend::Sqlite(s) => s.rejections(),
            Backend::Postgres(p) => p.rejections(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What both backends share: conversions, and the meaning of every entry.

/// Who is writing: the daemon store an entry came from.
struct Source<'a> {
    /// The daemon's id from its Hello.
    daemon_id: &'a str,
    /// Its store epoch, bit-cast for the database ([`epoch_to_sql`]).
    epoch: i64,
}

/// Store epochs are opaque u64 tags, never compared: bit-cast to fit the databases' i64.
fn epoch_to_sql(epoch: u64) -> i64 {
    i64::from_ne_bytes(epoch.to_ne_bytes())
}

fn epoch_from_sql(epoch: i64) -> u64 {
    u64::from_ne_bytes(epoch.to_ne_bytes())
}

/// Counters are non-negative in the database; a negative one would be our own corruption.
fn u64_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn u32_from_sql(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// A `tests` row before its metadata JSON is parsed (which can fail outside the database
/// driver).
struct TestRowRaw {
    /// Everything but the metadata and its problems.
    row: TestRow,
    /// The metadata as stored.
    metadata_json: String,
    /// The metadata problems as stored (a JSON array), `None` when there are none.
    problems_json: Option<String>,
}

impl TestRowRaw {
    fn finish(mut self) -> Result<TestRow, StoreError> {
        let corrupt = |what: &str, e: serde_json::Error| {
            StoreError::Corrupt(format!("{what} of test {}: {e}", self.row.test_id))
        };
        self.row.metadata = serde_json::from_str(&self.metadata_json)
            .map_err(|e| corrupt("metadata is not a JSON object of strings", e))?;
        if let Some(problems) = &self.problems_json {
            self.row.metadata_problems = serde_json::from_str(problems)
                .map_err(|e| corrupt("metadata problems are not a JSON array of strings", e))?;
        }
        Ok(self.row)
    }
}

/// What the hub derives from a registration, stored with the test.
struct Registration<'a> {
    /// The metadata, sorted by key, as JSON.
    metadata_json: String,
    /// The team the metadata names.
    team: Option<&'a str>,
    /// The metadata's problems under its lab's schemas, as a JSON array; `None` when none.
    problems_json: Option<String>,
}

/// One rejected entry, as the backends record it.
struct RejectionRecord<'a> {
    /// The entry's id (checked to fit i64).
    entry_id: i64,
    /// Entry type, from [`body_kind`].
    kind: &'static str,
    /// The test the entry named, NUL characters replaced so any database can store it.
    test_id: Option<String>,
    /// Why it was refused.
    reason: &'a str,
    /// The whole entry, encoded, so a person can look at exactly what was sent.
    entry: Vec<u8>,
}

/// The statements one batch runs inside its transaction; each backend implements them with
/// conflict-ignoring inserts, so that every one of them is idempotent.
trait BatchWrites {
    /// `(test_key, owning daemon_id)` of a test, if the hub has it.
    fn test_owner(&mut self, test_id: &str) -> Result<Option<(i64, String)>, StoreError>;
    /// Inserts a test (ignored when its id exists).
    fn insert_test(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        r: &Registration<'_>,
    ) -> Result<(), StoreError>;
    /// The lab the daemon is bound to, if any.
    fn daemon_lab(&mut self, daemon_id: &str) -> Result<Option<String>, StoreError>;
    /// The lab's metadata schemas as `(tier, document)`.
    fn lab_schemas(&mut self, lab: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Records that `team` of `lab` ran a test (the first time only).
    fn record_team(&mut self, lab: &str, team: &str, start_unix_s: f64) -> Result<(), StoreError>;
    /// Records the instruments of a test: the daemon's inventory and what the test used.
    fn record_equipment(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
    ) -> Result<(), StoreError>;
    /// Records the test's cell (merging what is known of it) and channel, and links the test
    /// to its cell.
    fn record_cell_and_channel(
        &mut self,
        source: &Source<'_>,
        t: &TestRegistered,
        cell: &CellRow,
    ) -> Result<(), StoreError>;
    /// Inserts the samples of a validated batch (rows already held are ignored), adds the
    /// number inserted to the test's `sample_count`, and returns it.
    fn insert_samples(&mut self, test_key: i64, b: &SampleBatch) -> Result<u64, StoreError>;
    /// Inserts an event keyed by the entry that carried it (ignored when present).
    fn insert_event(
        &mut self,
        test_key: i64,
        source: &Source<'_>,
        entry_id: i64,
        e: &Event,
    ) -> Result<(), StoreError>;
    /// Records the end of a test; returns the number of samples the hub holds for it.
    fn end_test(&mut self, test_key: i64, e: &TestEnded, expected: i64) -> Result<i64, StoreError>;
    /// Records a rejected entry (ignored when already recorded).
    fn insert_rejection(
        &mut self,
        source: &Source<'_>,
        r: &RejectionRecord<'_>,
    ) -> Result<(), StoreError>;
}

/// Why one entry did not apply: refused (answer with a Rejection) or storage failed (abort).
enum ApplyError {
    Reject(String),
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

fn reject<T>(reason: impl Into<String>) -> Result<T, ApplyError> {
    Err(ApplyError::Reject(reason.into()))
}

/// Applies the entries of a batch after the resume point `applied`, through `w`, inside the
/// batch's transaction (which the backend opens, and commits after storing the new resume
/// point `outcome.up_to`). Only a storage failure returns `Err`.
fn apply_entries(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    applied: u64,
    entries: &[Entry],
) -> Result<BatchOutcome, StoreError> {
    let mut out = BatchOutcome {
        up_to: entries.last().map_or(0, |e| e.id),
        ..BatchOutcome::default()
    };
    for entry in entries {
        if entry.id <= applied {
            out.duplicates += 1;
            continue;
        }
        match apply_entry(w, source, entry) {
            Ok(inserted) => {
                out.applied += 1;
                out.samples_inserted += inserted;
            }
            Err(ApplyError::Reject(reason)) => {
                record_rejection(w, source, entry, &reason)?;
                out.rejections.push(Rejection {
                    entry_id: entry.id,
                    reason,
                });
            }
            Err(ApplyError::Store(e)) => return Err(e),
        }
    }
    Ok(out)
}

fn body_kind(body: Option<&Body>) -> (&'static str, Option<&str>) {
    match body {
        Some(Body::TestRegistered(t)) => ("test_registered", Some(&t.test_id)),
        Some(Body::Samples(s)) => ("samples", Some(&s.test_id)),
        Some(Body::Event(e)) => ("event", Some(&e.test_id)),
        Some(Body::TestEnded(e)) => ("test_ended", Some(&e.test_id)),
        None => ("none", None),
    }
}

fn record_rejection(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    entry: &Entry,
    reason: &str,
) -> Result<(), StoreError> {
    let (kind, test_id) = body_kind(entry.body.as_ref());
    let entry_id = i64::try_from(entry.id).map_err(|_| StoreError::OutOfRange("entry id"))?;
    w.insert_rejection(
        source,
        &RejectionRecord {
            entry_id,
            kind,
            // PostgreSQL text cannot hold NUL; the encoded entry keeps the exact bytes.
            test_id: test_id.map(|t| t.replace('\0', "\u{FFFD}")),
            reason,
            entry: entry.encode_to_vec(),
        },
    )?;
    tracing::warn!(
        daemon_id = source.daemon_id,
        entry_id = entry.id,
        kind,
        reason,
        "rejected entry"
    );
    Ok(())
}

/// Applies one entry; returns the number of sample rows inserted. Validates everything before
/// writing anything, so a rejected entry leaves no trace but its rejection record.
fn apply_entry(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    entry: &Entry,
) -> Result<u64, ApplyError> {
    match &entry.body {
        None => reject("entry has no body (an entry type this hub does not know? upgrade the hub)"),
        Some(Body::TestRegistered(t)) => apply_test_registered(w, source, t).map(|()| 0),
        Some(Body::Samples(b)) => apply_samples(w, source, b),
        Some(Body::Event(e)) => apply_event(w, source, entry.id, e).map(|()| 0),
        Some(Body::TestEnded(e)) => apply_test_ended(w, source, e).map(|()| 0),
    }
}

/// Refuses text that a database cannot store the same way everywhere: PostgreSQL's text
/// cannot hold a NUL character, so neither backend accepts one.
fn check_text(what: &str, fields: &[(&str, &str)]) -> Result<(), ApplyError> {
    match fields.iter().find(|(_, v)| v.contains('\0')) {
        Some((name, _)) => reject(format!(
            "{what}: {name} contains a NUL character, which the hub does not store"
        )),
        None => Ok(()),
    }
}

/// The test's key, if the hub knows the test and it belongs to the writing daemon.
fn owned_test_key(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    test_id: &str,
) -> Result<i64, ApplyError> {
    match w.test_owner(test_id)? {
        None => reject(format!(
            "unknown test {test_id:?}: the hub has no TestRegistered for it"
        )),
        Some((_, owner)) if owner != source.daemon_id => reject(format!(
            "test {test_id:?} belongs to daemon {owner}, not to {}",
            source.daemon_id
        )),
        Some((key, _)) => Ok(key),
    }
}

fn apply_test_registered(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    t: &TestRegistered,
) -> Result<(), ApplyError> {
    if t.test_id.is_empty() {
        return reject("TestRegistered has an empty test_id");
    }
    let what = format!("TestRegistered of test {:?}", t.test_id);
    check_text(
        &what,
        &[
            ("test_id", &t.test_id),
            ("channel_id", &t.channel_id),
            ("protocol_name", &t.protocol_name),
            ("protocol_source", &t.protocol_source),
            ("plan_json", &t.plan_json),
        ],
    )?;
    for (k, v) in &t.metadata {
        check_text(&what, &[("a metadata key", k), ("metadata value", v)])?;
    }
    for e in &t.equipment {
        check_text(
            &what,
            &[
                ("equipment name", &e.name),
                ("equipment family", &e.family),
                ("equipment address", &e.address),
                ("equipment role", &e.role),
            ],
        )?;
        if e.name.is_empty() {
            return reject(format!("{what}: an equipment entry has an empty name"));
        }
    }
    if t.channel_id.is_empty() {
        return reject(format!("test {:?} has an empty channel_id", t.test_id));
    }
    let meta = |k: &str| t.metadata.get(k).map_or("", String::as_str);
    let mut keys = vec![
        ("test_id", t.test_id.as_str()),
        ("channel_id", &t.channel_id),
        ("cell_id", meta("cell_id")),
        ("team", meta("team")),
    ];
    keys.extend(
        t.equipment
            .iter()
            .map(|e| ("equipment name", e.name.as_str())),
    );
    // Refused before any write, so an oversized key is a rejection rather than a failed batch
    // that blocks the entries behind it.
    if let Some((name, value)) = keys.iter().find(|(_, v)| v.len() > MAX_KEY_BYTES) {
        return reject(format!(
            "{what}: {name} is {} bytes long; the hub keys its tables by it and takes at most \
             {MAX_KEY_BYTES}",
            value.len()
        ));
    }
    if !t.start_unix_s.is_finite() {
        return reject(format!("test {:?} has a non-finite start time", t.test_id));
    }
    match w.test_owner(&t.test_id)? {
        // Re-sent registration: already applied.
        Some((_, owner)) if owner == source.daemon_id => return Ok(()),
        Some((_, owner)) => {
            return reject(format!(
                "test id {:?} is already registered by daemon {owner}",
                t.test_id
            ));
        }
        None => {}
    }
    // Sorted keys: stable, diffable JSON.
    let metadata: BTreeMap<&str, &str> = t
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let metadata_json = match serde_json::to_string(&metadata) {
        Ok(json) => json,
        Err(e) => return reject(format!("metadata cannot be stored as JSON: {e}")),
    };
    let team = t
        .metadata
        .get("team")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty());
    let lab = w.daemon_lab(source.daemon_id)?;
    let problems = match &lab {
        Some(lab) => metadata_problems(&w.lab_schemas(lab)?, &t.metadata),
        None => Vec::new(),
    };
    let registration = Registration {
        metadata_json,
        team,
        problems_json: (!problems.is_empty())
            .then(|| serde_json::to_string(&problems).ok())
            .flatten(),
    };
    w.insert_test(source, t, &registration)?;
    let cell_lab = lab.as_deref().unwrap_or_default();
    if let Some(cell) = CellRow::from_metadata(&t.metadata, t.start_unix_s, cell_lab) {
        w.record_cell_and_channel(source, t, &cell)?;
    }
    if let (Some(lab), Some(team)) = (&lab, team) {
        w.record_team(lab, team, t.start_unix_s)?;
    }
    w.record_equipment(source, t)?;
    Ok(())
}

/// The problems of `metadata` under a lab's stored schemas. The data is kept either way (the
/// daemon checked it against the schemas it had when the test started; what the hub finds when
/// it stores the registration is recorded with the test for a person to look at). A stored
/// schema that cannot be used is itself reported rather than failing the registration.
fn metadata_problems(
    schemas: &[(String, String)],
    metadata: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let checked = cyclerd_proto::metadata::check(schemas, metadata);
    let mut problems = checked.problems;
    problems.extend(
        checked
            .unusable
            .into_iter()
            .map(|e| format!("the lab's schema is unusable: {e}")),
    );
    if !problems.is_empty() {
        tracing::warn!(?problems, "test metadata does not follow the lab's schemas");
    }
    problems
}

/// A cell under test, as the hub knows it from the metadata of the tests that ran it.
#[derive(Debug, Clone, PartialEq)]
pub struct CellRow {
    /// The lab whose tests ran the cell (empty for tests of a daemon not bound to a lab): each
    /// lab names its own cells, so two labs' `NMC-0042` are two cells.
    pub lab: String,
    /// The lab's identifier of the cell (primary metadata `cell_id`).
    pub cell_id: String,
    /// From secondary metadata (`secondary.manufacturer`, `.model`, `.form_factor`,
    /// `.nominal_voltage_v`) and primary (`chemistry`, `nominal_capacity_ah`); a later test
    /// fills what an earlier one left out, never overwrites.
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub chemistry: Option<String>,
    pub form_factor: Option<String>,
    pub nominal_capacity_ah: Option<f64>,
    pub nominal_voltage_v: Option<f64>,
    /// When the hub first saw a test of the cell start (Unix seconds).
    pub first_test_unix_s: f64,
}

impl CellRow {
    fn from_metadata(
        metadata: &std::collections::HashMap<String, String>,
        start_unix_s: f64,
        lab: &str,
    ) -> Option<CellRow> {
        let text = |k: &str| {
            metadata
                .get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let number = |k: &str| {
            text(k)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
        };
        Some(CellRow {
            lab: lab.into(),
            cell_id: text("cell_id")?,
            manufacturer: text("secondary.manufacturer"),
            model: text("secondary.model"),
            chemistry: text("chemistry"),
            form_factor: text("secondary.form_factor"),
            nominal_capacity_ah: number("nominal_capacity_ah"),
            nominal_voltage_v: number("secondary.nominal_voltage_v"),
            first_test_unix_s: start_unix_s,
        })
    }
}

/// Checks a sample batch's shape and values, so the insert loop cannot fail on them.
fn validate_samples(b: &SampleBatch) -> Result<(), String> {
    if b.test_id.contains('\0') {
        return Err(format!(
            "sample batch of test {:?}: test_id contains a NUL character, which the hub does not \
             store",
            b.test_id
        ));
    }
    let n = b.test_time_s.len();
    let lens = [
        ("unix_time_s", b.unix_time_s.len()),
        ("voltage_v", b.voltage_v.len()),
        ("current_a", b.current_a.len()),
        ("cycle", b.cycle.len()),
        ("step", b.step.len()),
        ("charge_capacity_ah", b.charge_capacity_ah.len()),
        ("discharge_capacity_ah", b.discharge_capacity_ah.len()),
        ("charge_energy_wh", b.charge_energy_wh.len()),
        ("discharge_energy_wh", b.discharge_energy_wh.len()),
    ];
    let optional = [
        ("temperature_c", b.temperature_c.len()),
        ("ambient_temperature_c", b.ambient_temperature_c.len()),
    ];
    let optional_ok = optional.iter().all(|&(_, len)| len == 0 || len == n);
    if lens.iter().any(|&(_, len)| len != n) || !optional_ok {
        let mut detail = format!("test_time_s {n}");
        for (name, len) in lens.iter().chain(&optional) {
            detail.push_str(&format!(", {name} {len}"));
        }
        return Err(format!(
            "sample batch columns have unequal lengths ({detail}); every column must have one \
             value per sample (temperature_c and ambient_temperature_c may be empty)"
        ));
    }
    let last = (n as u64)
        .checked_sub(1)
        .and_then(|d| b.first_seq.checked_add(d))
        .unwrap_or(b.first_seq);
    if i64::try_from(last).is_err() {
        return Err(format!("sample seq {last} is out of range (max 2^63-1)"));
    }
    // SQLite stores NaN as NULL, which the NOT NULL columns would refuse mid-batch.
    let float_cols: [(&str, &[f64]); 8] = [
        ("test_time_s", &b.test_time_s),
        ("unix_time_s", &b.unix_time_s),
        ("voltage_v", &b.voltage_v),
        ("current_a", &b.current_a),
        ("charge_capacity_ah", &b.charge_capacity_ah),
        ("discharge_capacity_ah", &b.discharge_capacity_ah),
        ("charge_energy_wh", &b.charge_energy_wh),
        ("discharge_energy_wh", &b.discharge_energy_wh),
    ];
    for (name, col) in float_cols {
        if let Some(i) = col.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "non-finite {name} ({}) at seq {}",
                col[i],
                b.first_seq.saturating_add(i as u64)
            ));
        }
    }
    Ok(())
}

fn apply_samples(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    b: &SampleBatch,
) -> Result<u64, ApplyError> {
    validate_samples(b).map_err(ApplyError::Reject)?;
    let key = owned_test_key(w, source, &b.test_id)?;
    if b.test_time_s.is_empty() {
        return Ok(0);
    }
    Ok(w.insert_samples(key, b)?)
}

fn apply_event(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    entry_id: u64,
    e: &Event,
) -> Result<(), ApplyError> {
    check_text(
        &format!("event of test {:?}", e.test_id),
        &[
            ("test_id", &e.test_id),
            ("kind", &e.kind),
            ("message", &e.message),
        ],
    )?;
    if !e.unix_time_s.is_finite() || !e.test_time_s.is_finite() {
        return reject(format!(
            "event of test {:?} has a non-finite time",
            e.test_id
        ));
    }
    let key = owned_test_key(w, source, &e.test_id)?;
    let Ok(entry_id) = i64::try_from(entry_id) else {
        return reject("entry id out of range");
    };
    w.insert_event(key, source, entry_id, e)?;
    Ok(())
}

fn apply_test_ended(
    w: &mut impl BatchWrites,
    source: &Source<'_>,
    e: &TestEnded,
) -> Result<(), ApplyError> {
    check_text(
        &format!("end of test {:?}", e.test_id),
        &[
            ("test_id", &e.test_id),
            ("outcome", &e.outcome),
            ("reason", &e.reason),
        ],
    )?;
    if !e.unix_time_s.is_finite() {
        return reject(format!("end of test {:?} has a non-finite time", e.test_id));
    }
    let Ok(expected) = i64::try_from(e.sample_count) else {
        return reject(format!("sample_count {} is out of range", e.sample_count));
    };
    let key = owned_test_key(w, source, &e.test_id)?;
    let held = w.end_test(key, e, expected)?;
    // Samples precede the end in the daemon's log, so by now they should all be here.
    if held != expected {
        tracing::warn!(
            test_id = e.test_id,
            held,
            expected,
            "test ended but the hub holds a different number of samples than the daemon produced"
        );
    }
    Ok(())
}

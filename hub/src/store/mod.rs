//! The hub's database: [`HubStore`], the batched idempotent apply of ingest entries and the
//! queries, over one of two backends with the same schema and the same behaviour:
//!
//! - `sqlite` (a file; the embedded default for one lab): two connections, the *writer*
//!   behind a mutex so that exactly one thread writes at a time however many daemons stream at
//!   once, and a *reader* for queries, which in WAL mode sees committed data without blocking
//!   (or being blocked by) the writer;
//! - `pg` (a `postgres://` URL; a real deployment): the same two connections to a PostgreSQL
//!   database.
//!
//! Samples are kept in chunks, a row per run of contiguous seqs of one test with its columns
//! encoded into one blob (`chunk`), indexed by `(test, first_seq)` and `(test, t_max)` so that
//! a seq range or a time window decodes only the chunks it needs (`samples`). Beside each chunk
//! its summary (each plot series' min and max, `summary`), so that a plot of a long test decodes
//! only the chunks that straddle two of its pixel columns.
//!
//! Every method is blocking; async callers run them on `spawn_blocking`.
//!
//! What an entry means (validation, ownership, rejections, the resume point) is decided once,
//! in `ingest`, against the narrow trait of the statements a batch runs
//! (`batch_writes::BatchWrites`); the store holds its backend behind `Backend`, the rest of what
//! the facade asks of it. `rows` has the row types, `error` the errors, `sql` the statements
//! both backends run as they are.

#[macro_use]
mod rows;
mod batch_writes;
mod chunk;
mod error;
mod grade;
mod ingest;
mod pg;
mod quality;
mod read;
mod samples;
mod shares;
mod sql;
mod sqlite;
pub mod summary;

pub use cyclerd_proto::ingest::Equipment;
pub use error::{StoreError, error_chain};
pub use pg::TlsSettingsError;
pub use rows::{
    BatchOutcome, CellRow, EventRow, FindingRow, FindingTally, RejectionRow, SampleRow, SchemaRow,
    TeamRow, TestRow,
};
pub use shares::{ShareLogEntry, ShareOrigin, ShareProgress, ShareRow, SharedFrom};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cyclerd_proto::ingest::{CycleSummary, Entry, Hello};
// The backends implement the statements of a batch; they take them from here.
use batch_writes::{BatchWrites, CycleRecord, FindingRecord, Registration, RejectionRecord};
use summary::{PlotChunk, PlotWindow};

use crate::token::{self, Role, TokenRow, check_name};
// The backends read rows with the row macros, which name these.
use rows::{TestRowRaw, epoch_from_sql, epoch_to_sql, u32_from_sql, u64_from_sql};

/// Shortest daemon credential the hub binds: the daemon makes 64 hex digits (256 bits); anything
/// much shorter could be guessed.
pub const MIN_DAEMON_SECRET: usize = 32;
/// Longest daemon credential: enough for any encoding of a strong secret.
pub const MAX_DAEMON_SECRET: usize = 256;

fn now_unix_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
    backend: Arc<dyn Backend>,
    /// The thresholds of the hub's own quality checks of the samples it stores, by lab
    /// (`cyclerhub serve --quality`; the documented defaults otherwise).
    quality: Arc<cyclerd_proto::quality::config::Layered>,
}

impl std::fmt::Debug for HubStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubStore")
            .field("database", &self.path())
            .finish()
    }
}

impl HubStore {
    /// Opens (creating if needed) the SQLite hub database at `path` and migrates it to the
    /// current schema. WAL mode, `synchronous=FULL`: an Ack is only sent after a commit that
    /// survives power loss, because the daemon deletes what the hub acked.
    pub fn open(path: impl AsRef<Path>) -> Result<HubStore, StoreError> {
        Ok(HubStore::of(Arc::new(sqlite::SqliteStore::open(
            path.as_ref(),
        )?)))
    }

    /// Opens the hub database `db` names: a `postgres://` (or `postgresql://`) URL connects to
    /// that PostgreSQL database, which must exist; anything else is a SQLite file, created if
    /// missing. Either way the schema is migrated to the current version first.
    pub fn connect(db: &str) -> Result<HubStore, StoreError> {
        if is_postgres_url(db) {
            Ok(HubStore::of(Arc::new(pg::PgStore::connect(db)?)))
        } else {
            HubStore::open(db)
        }
    }

    /// A store for queries only on the PostgreSQL database at `url`, typically a streaming
    /// replica of the hub's database (`cyclerhub serve --read-db`): no migrations, no writes.
    pub fn connect_read_only(url: &str) -> Result<HubStore, StoreError> {
        if !is_postgres_url(url) {
            return Err(StoreError::Refused(format!(
                "a read-only hub database is a PostgreSQL URL (a streaming replica), not {url:?}"
            )));
        }
        Ok(HubStore::of(Arc::new(pg::PgStore::connect_read_only(url)?)))
    }

    fn of(backend: Arc<dyn Backend>) -> HubStore {
        HubStore {
            backend,
            quality: Arc::default(),
        }
    }

    /// The same store, checking the samples it stores with `thresholds` (by lab).
    pub fn with_quality(mut self, thresholds: cyclerd_proto::quality::config::Layered) -> HubStore {
        self.quality = Arc::new(thresholds);
        self
    }

    /// The SQLite file; for PostgreSQL, the URL without its password.
    pub fn path(&self) -> &Path {
        self.backend.path()
    }

    /// Bumps `applied` whenever another process commits samples to this database, until
    /// nobody receives from it: on PostgreSQL a thread of its own hears the commits (LISTEN on
    /// the primary, the replay position on a standby). SQLite has one hub process; nothing to
    /// do.
    pub fn follow_commits(&self, applied: tokio::sync::watch::Sender<u64>) {
        self.backend.follow_commits(applied);
    }

    /// Records a daemon's Hello and returns its resume point: the highest entry id applied for
    /// `(daemon_id, store_epoch)`, 0 when the hub has never seen that store.
    pub fn hello(&self, hello: &Hello) -> Result<u64, StoreError> {
        let source = Source::new(&hello.daemon_id, hello.store_epoch);
        self.backend.hello(&source, &hello.daemon_name)
    }

    /// Checks a Hello's credential: the first Hello of a daemon id binds the id to its
    /// `daemon_secret` (only its SHA-256 is kept); every later one must carry the same secret.
    /// [`StoreError::Refused`] says why not, without revealing anything of the bound secret.
    pub fn claim_daemon(&self, hello: &Hello) -> Result<(), StoreError> {
        let secret = hello.daemon_secret.as_str();
        if secret.len() < MIN_DAEMON_SECRET
            || secret.len() > MAX_DAEMON_SECRET
            || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(StoreError::Refused(format!(
                "Hello.daemon_secret must be {MIN_DAEMON_SECRET} to {MAX_DAEMON_SECRET} printable \
                 characters (the daemon makes one with its store; upgrade a daemon that sends none)"
            )));
        }
        let hash = token::secret_hash(secret);
        let bound = self
            .backend
            .claim_daemon(&hello.daemon_id, &hash, now_unix_s())?;
        if token::secret_matches(secret, &bound) {
            Ok(())
        } else {
            Err(StoreError::Refused(format!(
                "daemon {:?} is bound to another credential: this hub took the secret of its \
                 first upload, and this Hello carries a different one. If the daemon's store was \
                 recreated (a new disk, a deleted outbox), a hub admin who trusts it runs \
                 `cyclerhub rebind --db DB --daemon {}`",
                hello.daemon_id, hello.daemon_id
            )))
        }
    }

    /// Forgets the credential `daemon_id` is bound to, so that its next Hello binds it anew
    /// (a daemon whose store was recreated); `false` when it had none.
    pub fn forget_daemon_credential(&self, daemon_id: &str) -> Result<bool, StoreError> {
        self.backend.forget_daemon_credential(daemon_id)
    }

    /// Highest entry id applied for `(daemon_id, store_epoch)`; 0 when none.
    pub fn applied_up_to(&self, daemon_id: &str, store_epoch: u64) -> Result<u64, StoreError> {
        let source = Source::new(daemon_id, store_epoch);
        self.backend.applied_up_to(&source)
    }

    /// Applies a batch of entries from one daemon store in ONE transaction, together with the
    /// new `applied_up_to`, and commits. Entries the hub already handled are skipped; entries it
    /// cannot apply are recorded in `rejections` and reported in the outcome. An entry whose id
    /// jumps ahead of the store's sequence stops the batch there ([`BatchOutcome::refused`]):
    /// the resume point never passes an entry the hub did not store. Only a storage failure
    /// returns `Err`, and then nothing of the batch is kept (so nothing may be acked).
    ///
    /// `entries` should have strictly increasing ids (the server checks this on the stream).
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
        i64::try_from(last.id).map_err(|_| StoreError::OutOfRange("entry id"))?;
        let source = Source::new(daemon_id, store_epoch);
        let encoded = samples::encode_ahead(entries);
        let quality = Arc::clone(&self.quality);
        self.backend
            .write_batch(&mut |w| ingest::apply_batch(w, &source, entries, &encoded, &quality))
    }

    /// Issues a token with `role` for `lab` named `name` (unique); returns the token text,
    /// which the hub does not keep (only its hash): show it once.
    pub fn issue_token(&self, lab: &str, name: &str, role: Role) -> Result<String, StoreError> {
        check_name("lab", lab).map_err(StoreError::Refused)?;
        check_name("token name", name).map_err(StoreError::Refused)?;
        let (token_id, secret, text) = token::generate();
        let row = TokenRow {
            token_id,
            lab: lab.into(),
            name: name.into(),
            created_unix_s: now_unix_s(),
            revoked_unix_s: None,
            role,
        };
        let hash = token::secret_hash(&secret);
        // The token and its lab (new or not) in one transaction: both, or neither.
        let inserted = self.backend.insert_token(&row, &hash)?;
        if !inserted {
            return Err(StoreError::Refused(format!(
                "a token named {name:?} exists already; revoke it first or choose another name"
            )));
        }
        Ok(text)
    }

    /// Revokes the token named `name`: uploads and queries with it are refused from now on.
    pub fn revoke_token(&self, name: &str) -> Result<(), StoreError> {
        let revoked = self.backend.revoke_token(name, now_unix_s())?;
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
        Ok(self.backend.tokens()?.into_iter().map(|(t, _)| t).collect())
    }

    /// The token `text` names if its secret matches, valid or revoked; `None` for anything
    /// else (malformed, unknown, wrong secret).
    pub fn authenticate(&self, text: &str) -> Result<Option<TokenRow>, StoreError> {
        let Some((id, secret)) = token::parse(text) else {
            return Ok(None);
        };
        Ok(self
            .backend
            .tokens()?
            .into_iter()
            .find(|(t, hash)| t.token_id == id && token::secret_matches(secret, hash))
            .map(|(t, _)| t))
    }

    /// Binds `daemon_id` to `lab` if it belongs to no lab yet and the hub has no test of it
    /// (tests uploaded without a lab are assigned by a person, [`HubStore::assign_daemon`]);
    /// returns the lab it belongs to, `None` when it stays unbound.
    pub fn bind_daemon(&self, daemon_id: &str, lab: &str) -> Result<Option<String>, StoreError> {
        self.backend.bind_daemon(daemon_id, lab, now_unix_s())
    }

    /// Assigns `daemon_id`, and so every test it uploaded, to `lab` (moving it if it belonged
    /// to another: a person's decision), and records its tests' teams in the lab. Returns the
    /// lab it belonged to before. Refused for a daemon the hub has never heard from (a typo).
    pub fn assign_daemon(&self, daemon_id: &str, lab: &str) -> Result<Option<String>, StoreError> {
        check_name("lab", lab).map_err(StoreError::Refused)?;
        let assigned = self.backend.assign_daemon(daemon_id, lab, now_unix_s())?;
        assigned.ok_or_else(|| {
            StoreError::Refused(format!(
                "no daemon {daemon_id:?} has ever connected to this hub (see `cyclerhub tests`)"
            ))
        })
    }

    /// Every cell the hub has seen a test of, by lab and id.
    pub fn cells(&self) -> Result<Vec<CellRow>, StoreError> {
        self.backend.cells()
    }

    /// Every lab the hub knows: those tokens were issued for or schemas registered for, with
    /// when it first appeared (Unix seconds).
    pub fn labs(&self) -> Result<Vec<(String, f64)>, StoreError> {
        self.backend.labs()
    }

    /// Every team of every lab, as the metadata of the labs' tests named them.
    pub fn teams(&self) -> Result<Vec<TeamRow>, StoreError> {
        self.backend.teams()
    }

    /// Registers (or replaces) `lab`'s JSON Schema for a metadata `tier`; a document that is
    /// not a usable schema is refused with the reason, and nothing changes.
    pub fn set_metadata_schema(
        &self,
        lab: &str,
        tier: &str,
        document: &str,
    ) -> Result<(), StoreError> {
        check_name("lab", lab).map_err(StoreError::Refused)?;
        cyclerd_proto::metadata::TierSchema::compile(tier, document)
            .map_err(StoreError::Refused)?;
        let now = now_unix_s();
        self.backend.set_schema(lab, tier, document, now)
    }

    /// Removes `lab`'s schema for `tier`: that tier accepts anything again.
    pub fn remove_metadata_schema(&self, lab: &str, tier: &str) -> Result<(), StoreError> {
        let removed = self.backend.remove_schema(lab, tier)?;
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
        self.backend.schemas(lab)
    }

    /// The instruments a test ran on, by name.
    pub fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError> {
        self.backend.test_equipment(test_id)
    }

    /// The lab of every daemon that uploaded with a token, by daemon id.
    pub fn daemon_labs(&self) -> Result<HashMap<String, String>, StoreError> {
        let pairs = self.backend.daemon_labs()?;
        Ok(pairs.into_iter().collect())
    }

    /// Every test, oldest first, graded as of now.
    pub fn list_tests(&self) -> Result<Vec<TestRow>, StoreError> {
        let raw = self.backend.list_tests()?;
        let origins = self.share_origins()?;
        let mut rows = raw
            .into_iter()
            .map(|r| {
                let mut t = r.finish()?;
                t.shared_from = origins.get(&t.daemon_id).cloned();
                Ok(t)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.grade_rows(&mut rows)?;
        Ok(rows)
    }

    /// One test, graded as of now, or `None` when the hub does not have it.
    pub fn test(&self, test_id: &str) -> Result<Option<TestRow>, StoreError> {
        let Some(mut t) = self
            .backend
            .test(test_id)?
            .map(TestRowRaw::finish)
            .transpose()?
        else {
            return Ok(None);
        };
        t.shared_from = self.share_origins()?.remove(&t.daemon_id);
        self.grade_rows(std::slice::from_mut(&mut t))?;
        Ok(Some(t))
    }

    /// Number of samples the hub holds for the test.
    pub fn sample_count(&self, test_id: &str) -> Result<u64, StoreError> {
        self.backend.sample_count(test_id)
    }

    /// Whether any sample of the test has a cell temperature and an ambient (chamber)
    /// temperature: decides the BDF temperature columns.
    pub fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError> {
        self.backend.has_temperatures(test_id)
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

    /// The seq of the first sample of a test at or after test time `t` can be no earlier
    /// than this (the first seq of the first chunk that reaches `t`); `None` when no sample
    /// reaches `t`. An index seek: a time window starts reading there, not at the beginning.
    pub fn first_seq_at(&self, test_id: &str, t: f64) -> Result<Option<u64>, StoreError> {
        let key = self.backend.test_key(test_id)?;
        Ok(self.backend.first_seq_at(key, t)?.map(u64_from_sql))
    }

    /// The test time of a test's last sample, from the chunk index (no decoding); `None`
    /// while it has no samples.
    pub fn last_test_time(&self, test_id: &str) -> Result<Option<f64>, StoreError> {
        let key = self.backend.test_key(test_id)?;
        self.backend.last_test_time(key)
    }

    /// The protocol a test ran, as its YAML source and its compiled plan (JSON); `None` for an
    /// unknown test.
    pub fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError> {
        self.backend.protocol(test_id)
    }

    /// The events of a test, in time order.
    pub fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError> {
        self.backend.events(test_id)
    }

    /// The per-cycle results of a test, in cycle order, as its daemon computed them
    /// ([`cyclerd_proto::cycles`] derives efficiency, mean voltages and retention from them).
    pub fn cycles(&self, test_id: &str) -> Result<Vec<CycleSummary>, StoreError> {
        self.backend.cycles(test_id)
    }

    /// The quality findings of a test (both the daemon's and the hub's), by first seq; none for
    /// an unknown test.
    pub fn quality_findings(&self, test_id: &str) -> Result<Vec<FindingRow>, StoreError> {
        self.backend.quality_findings(test_id)
    }

    /// Every test's findings counted by source and check, for grading many tests at once.
    pub fn finding_tallies(&self) -> Result<Vec<FindingTally>, StoreError> {
        self.backend.finding_tallies()
    }

    /// Every rejected entry, in the order they were recorded.
    pub fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError> {
        self.backend.rejections()
    }
}

/// A sample batch as the chunk row the hub stores it as: for benchmarks (a bare insert of the
/// same rows as the baseline of the hub's apply).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub first_seq: i64,
    pub last_seq: i64,
    pub n_samples: i64,
    pub t_min: f64,
    pub t_max: f64,
    pub temps: i64,
    pub data: Vec<u8>,
}

/// `b` (validated, at most 65536 samples) as the chunk row [`HubStore::apply_batch`] stores.
#[doc(hidden)]
pub fn chunk_row(b: &cyclerd_proto::ingest::SampleBatch) -> ChunkRow {
    let e = samples::encode_batch(b);
    let n = e.count as i64;
    ChunkRow {
        first_seq: b.first_seq as i64,
        last_seq: b.first_seq as i64 + n - 1,
        n_samples: n,
        t_min: e.t_min,
        t_max: e.t_max,
        temps: e.temps,
        data: e.data,
    }
}

/// Who is writing: the daemon store an entry came from.
struct Source<'a> {
    /// The daemon's id from its Hello.
    daemon_id: &'a str,
    /// Its store epoch, bit-cast for the database ([`epoch_to_sql`]).
    epoch: i64,
}

impl<'a> Source<'a> {
    fn new(daemon_id: &'a str, store_epoch: u64) -> Source<'a> {
        Source {
            daemon_id,
            epoch: epoch_to_sql(store_epoch),
        }
    }
}

/// What a batch's transaction runs: [`ingest::apply_batch`], over the backend's statements.
type WriteBatch<'a> =
    dyn FnMut(&mut dyn BatchWrites) -> Result<BatchOutcome, StoreError> + Send + 'a;

/// What [`HubStore`] asks of a database: each method one transaction on the writer, or one read
/// on the reader. A batch's meaning is not here but in [`ingest`], which runs through
/// [`Backend::write_batch`] against the backend's [`BatchWrites`].
trait Backend: Send + Sync {
    /// The SQLite file; for PostgreSQL, the URL without its password.
    fn path(&self) -> &Path;
    /// See [`HubStore::follow_commits`].
    fn follow_commits(&self, _applied: tokio::sync::watch::Sender<u64>) {}
    /// Records a Hello (the daemon's name) and returns the store's resume point.
    fn hello(&self, source: &Source<'_>, name: &str) -> Result<u64, StoreError>;
    /// The store's resume point, 0 when unknown.
    fn applied_up_to(&self, source: &Source<'_>) -> Result<u64, StoreError>;
    /// Runs `apply` on the statements of a batch ([`BatchWrites`]) inside one transaction on
    /// the writer, and commits when it returns `Ok`; on `Err` nothing of it is kept.
    fn write_batch(&self, apply: &mut WriteBatch<'_>) -> Result<BatchOutcome, StoreError>;
    /// Inserts a token and its lab; `false` (and nothing changed) when the name is taken.
    fn insert_token(&self, t: &TokenRow, secret_hash: &str) -> Result<bool, StoreError>;
    /// Revokes the valid token named `name`; `false` when there is none.
    fn revoke_token(&self, name: &str, now: f64) -> Result<bool, StoreError>;
    /// Every token with its secret's hash, oldest first.
    fn tokens(&self) -> Result<Vec<(TokenRow, String)>, StoreError>;
    /// See [`HubStore::bind_daemon`].
    fn bind_daemon(
        &self,
        daemon_id: &str,
        lab: &str,
        now: f64,
    ) -> Result<Option<String>, StoreError>;
    /// Binds `daemon_id` to `secret_hash` unless it is bound already; returns the hash it is
    /// bound to.
    fn claim_daemon(
        &self,
        daemon_id: &str,
        secret_hash: &str,
        now: f64,
    ) -> Result<String, StoreError>;
    /// Unbinds a daemon's credential; `false` when it had none.
    fn forget_daemon_credential(&self, daemon_id: &str) -> Result<bool, StoreError>;
    /// See [`HubStore::assign_daemon`]; `None` for a daemon never heard from, else the lab it
    /// belonged to before.
    fn assign_daemon(
        &self,
        daemon_id: &str,
        lab: &str,
        now: f64,
    ) -> Result<Option<Option<String>>, StoreError>;
    fn labs(&self) -> Result<Vec<(String, f64)>, StoreError>;
    fn teams(&self) -> Result<Vec<TeamRow>, StoreError>;
    /// Registers (or replaces) a checked schema, and its lab.
    fn set_schema(&self, lab: &str, tier: &str, document: &str, now: f64)
    -> Result<(), StoreError>;
    /// `false` when there was none.
    fn remove_schema(&self, lab: &str, tier: &str) -> Result<bool, StoreError>;
    fn schemas(&self, lab: &str) -> Result<Vec<SchemaRow>, StoreError>;
    fn test_equipment(&self, test_id: &str) -> Result<Vec<Equipment>, StoreError>;
    fn cells(&self) -> Result<Vec<CellRow>, StoreError>;
    fn daemon_labs(&self) -> Result<Vec<(String, String)>, StoreError>;
    fn list_tests(&self) -> Result<Vec<TestRowRaw>, StoreError>;
    fn test(&self, test_id: &str) -> Result<Option<TestRowRaw>, StoreError>;
    fn sample_count(&self, test_id: &str) -> Result<u64, StoreError>;
    fn has_temperatures(&self, test_id: &str) -> Result<(bool, bool), StoreError>;
    /// The test's key in `samples` and `events`; [`StoreError::NoSuchTest`] when unknown.
    fn test_key(&self, test_id: &str) -> Result<i64, StoreError>;
    /// Up to `limit` chunks `(first_seq, last_seq, data)` of a test, in seq order, from the
    /// one that holds `from_seq` (or the first after it) on.
    fn chunk_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError>;
    /// Up to `limit` chunks of a test from `from_seq` on for a plot ([`sql::PLOT_PAGE_PG`]).
    fn plot_page(
        &self,
        key: i64,
        from_seq: i64,
        limit: i64,
        w: &PlotWindow,
    ) -> Result<Vec<PlotChunk>, StoreError>;
    /// The first seq of the first chunk whose largest test time is at least `t`.
    fn first_seq_at(&self, key: i64, t: f64) -> Result<Option<i64>, StoreError>;
    /// The largest test time of the test's chunks.
    fn last_test_time(&self, key: i64) -> Result<Option<f64>, StoreError>;
    fn protocol(&self, test_id: &str) -> Result<Option<(String, String)>, StoreError>;
    fn events(&self, test_id: &str) -> Result<Vec<EventRow>, StoreError>;
    /// The test's cycles in order (none for an unknown test).
    fn cycles(&self, test_id: &str) -> Result<Vec<CycleSummary>, StoreError>;
    /// The test's quality findings by first seq (none for an unknown test).
    fn quality_findings(&self, test_id: &str) -> Result<Vec<FindingRow>, StoreError>;
    /// Every test's findings counted by source and check.
    fn finding_tallies(&self) -> Result<Vec<FindingTally>, StoreError>;
    fn rejections(&self) -> Result<Vec<RejectionRow>, StoreError>;
    /// Runs `statements` (written for both backends) in one transaction on the writer;
    /// returns how many rows each changed.
    fn run(&self, statements: &[(&str, Vec<shares::Val>)]) -> Result<Vec<u64>, StoreError>;
    /// Every row of `statement` (written for both backends), on the reader.
    fn rows(
        &self,
        statement: &str,
        params: &[shares::Val],
    ) -> Result<Vec<Vec<shares::Val>>, StoreError>;
}

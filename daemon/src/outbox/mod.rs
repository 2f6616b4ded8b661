//! The SQLite outbox: an append-only log of entries waiting for the hub.
//!
//! One writer thread owns the write connection and commits everything queued in one transaction
//! (group commit), so producers never wait on the disk and the disk sees one commit per batch.
//! Sample batches are one row each (many samples per row), column-encoded with the codec the
//! hub stores its samples with; other entries as the encoded protobuf `Entry` the uploader
//! sends (see [`stored`]); a CRC-32 over the stored bytes either way. Entries leave only after
//! the hub acknowledged them (or `keep_acked` later); a backlog of small sample entries the hub
//! has not taken is merged into larger ones. Stepped tests' checkpoints are written in the
//! same transaction as the samples they account for.
//!
//! # Layout
//! - [`schema`]: tables, pragmas, the sync modes.
//! - `writer`: the writer thread (group commit, acks, parking, quota, vacuum).
//! - `reader`: pages for the uploader, summaries and checkpoints for the daemon.
//! - [`stored`]: an entry as a row's bytes and back, and the check of the newest at startup.
//! - `compact`: a backlog of small sample entries merged into larger ones.

mod compact;
mod reader;
pub mod schema;
pub mod stored;
mod writer;

pub use reader::{OutboxReader, OutboxSummary, PageItem, StoredEntry};
pub use schema::SyncMode;

use crate::proto::ingest::entry::Body;
use rusqlite::Connection;
use schema::{meta, meta_u64, set_meta};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// How many of the newest unacknowledged entries are checked at startup.
const VERIFY_TAIL: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "outbox {path} was written by a newer cyclerd (schema {found}, this one knows {known}); \
         upgrade cyclerd or point store.path elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the outbox writer has stopped")]
    WriterGone,
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    pub path: PathBuf,
    pub sync: SyncMode,
    /// Quota on unacknowledged data; at or above it acquisition pauses (data is never dropped).
    pub max_bytes: Option<u64>,
    /// Keep acknowledged entries this long before deleting them (zero: delete at once).
    pub keep_acked: Duration,
    /// The daemon's configured identity; `None` makes one with a new store.
    pub daemon_id: Option<String>,
    /// Unacknowledged small sample entries older than this are merged into larger ones
    /// (`compact`); a pass runs at most every tenth of it.
    pub compact_after: Duration,
}

impl OutboxOptions {
    /// Defaults for `path`: full sync, no quota, delete on ack, identity made with the store.
    pub fn new(path: &Path) -> OutboxOptions {
        OutboxOptions {
            path: path.to_path_buf(),
            sync: SyncMode::Full,
            max_bytes: None,
            keep_acked: Duration::ZERO,
            daemon_id: None,
            compact_after: Duration::from_secs(30),
        }
    }
}

/// The store's identity as the hub sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreIdentity {
    pub daemon_id: String,
    /// Changes whenever the store is created anew (or finds it is behind the hub), so ids that
    /// start again from 1 are never taken for duplicates of an earlier history.
    pub epoch: u64,
    /// Proves to the hub that uploads for `daemon_id` come from this store: the hub binds the id
    /// to it at the first upload. Kept across epochs; made anew with a new daemon id.
    pub secret: DaemonSecret,
}

/// The daemon's credential at the hub: 256 random bits as hex, kept in the (owner-only) store.
/// Its `Debug` hides it, so no log or status shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DaemonSecret(String);

impl DaemonSecret {
    fn generate() -> DaemonSecret {
        let bytes: [u8; 32] = rand::random();
        DaemonSecret(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A stored secret, if it still looks like one this store made.
    fn from_stored(text: String) -> Option<DaemonSecret> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(DaemonSecret(text))
    }

    /// The secret itself, for the Hello only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DaemonSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonSecret(..)")
    }
}

/// What a restarted daemon needs to resume a stepped test.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub test_id: String,
    pub channel_id: String,
    /// The protocol document as started, and where it came from (for error messages).
    pub protocol_source: String,
    pub origin: String,
    pub metadata: HashMap<String, String>,
    /// The parameters the plan was resolved with ([`cyclerd_protocols::Plan::params`]), so a
    /// resumed test rebuilds the same plan.
    pub params: std::collections::BTreeMap<String, String>,
    pub start_unix_s: f64,
    pub progress: Progress,
}

/// The part of a checkpoint that changes as the test runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The engine's serialised state.
    pub engine_json: String,
    /// Sequence number the next sample gets: every sample below it is committed.
    pub next_seq: u64,
    /// Test time and unix time of the last committed sample.
    pub test_time_s: f64,
    pub unix_s: f64,
    /// Time the test spent paused or interrupted, which the engine's clock leaves out.
    pub paused_s: f64,
    /// The test's per-cycle tracker ([`crate::proto::cycles::CycleTracker`]), as JSON, as of
    /// the same sample; empty for none yet.
    pub cycles_json: String,
    /// The test's quality checks (`channel::quality`), as JSON, as of the same sample; empty
    /// for none.
    pub quality_json: String,
}

/// Checkpoint work riding along with an append, in the same transaction.
#[derive(Debug, Clone)]
pub enum CheckpointOp {
    Begin(Box<Checkpoint>),
    Progress { test_id: String, progress: Progress },
    End { test_id: String },
}

/// What is sent to the writer thread.
enum WriteOp {
    /// An entry as stored ([`stored`]; the row id becomes its id) with its CRC-32.
    Append {
        format: i64,
        bytes: Vec<u8>,
        crc: u32,
        samples: u64,
        checkpoint: Option<CheckpointOp>,
    },
    Ack {
        up_to: u64,
    },
    Park {
        id: u64,
        reason: String,
    },
    /// Moves every dead letter back into the queue with a new id; answers how many.
    Requeue(oneshot::Sender<u64>),
    /// Starts a new epoch; answers the new identity.
    NewEpoch(oneshot::Sender<StoreIdentity>),
    Flush(oneshot::Sender<()>),
    /// Keeps a daemon setting learnt at run time (e.g. the lab's metadata schemas).
    SetMeta {
        /// The setting's name in the `meta` table.
        key: &'static str,
        /// Its value, as text.
        value: String,
    },
}

/// Counters shared between the writer, the uploader and the status API.
#[derive(Debug, Default)]
pub struct OutboxStats {
    /// Highest committed entry id.
    pub committed: AtomicU64,
    /// Highest id the hub acknowledged.
    pub acked: AtomicU64,
    /// Samples in acknowledged entries (since this store was created).
    pub samples_acked: AtomicU64,
    /// Samples appended (since this store was created).
    pub samples_appended: AtomicU64,
    /// Entries not yet acknowledged (nor parked).
    pub pending_entries: AtomicU64,
    /// Bytes of entries not yet acknowledged: what the quota limits.
    pub pending_bytes: AtomicU64,
    /// Entries parked in the dead-letter table.
    pub dead_letters: AtomicU64,
    /// The last commit failed (disk full, I/O error); the writer keeps retrying.
    pub failing: AtomicBool,
    /// Transactions committed by the writer: how well appends group into commits (the
    /// benchmark's bare baseline uses the same commit size).
    pub commits: AtomicU64,
}

impl OutboxStats {
    /// Entries waiting for the hub.
    pub fn backlog(&self) -> u64 {
        self.pending_entries.load(Ordering::Acquire)
    }
}

/// The producer side: cheap to clone, never blocks on the disk.
#[derive(Clone)]
pub struct Outbox {
    /// To the writer thread (a std channel: the writer blocks on it with a timeout).
    tx: std::sync::mpsc::Sender<WriteOp>,
    stats: Arc<OutboxStats>,
    committed: watch::Receiver<u64>,
    acked: watch::Receiver<u64>,
    /// `true` while there is room under the quota and the disk takes commits.
    space: watch::Receiver<bool>,
    identity: Arc<RwLock<StoreIdentity>>,
    options: Arc<OutboxOptions>,
    /// Problems found when the store was opened (quarantined entries), for the status API.
    startup_alarms: Arc<Vec<String>>,
    /// Waits for the writer thread when the last handle goes (after `tx`, declared first, is
    /// dropped): the store's file is closed by then.
    _writer: Arc<WriterThread>,
}

/// The writer thread's end, awaited when the last [`Outbox`] handle is dropped, so that whoever
/// opens the file next in this process (a restarted runner, a test that replaced the store)
/// never meets a connection that is still closing (SQLite shares a file's locks and shared
/// memory between the connections of one process). Bounded: a writer stuck retrying a commit
/// on a full disk does not hold a shutdown for more than [`WRITER_CLOSE_WAIT`].
struct WriterThread(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

/// Longest wait for the writer thread to end when the outbox is dropped.
const WRITER_CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let done = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Disconnected when the thread ended (its sender dropped with it).
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            done.recv_timeout(WRITER_CLOSE_WAIT)
        {
            tracing::warn!("the outbox writer did not end within 5 s of the outbox closing");
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn open_conn(path: &Path, sync: SyncMode) -> Result<Connection, OutboxError> {
    let conn = Connection::open(path).map_err(|source| OutboxError::Sqlite {
        path: path.to_path_buf(),
        source,
    })?;
    schema::configure(&conn, sync).map_err(|source| OutboxError::Sqlite {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

impl Outbox {
    /// Opens (or creates) the store with default options.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        Outbox::open_with(OutboxOptions::new(path))
    }

    /// Opens (or creates) the store, verifies its newest entries, and starts the writer thread.
    pub fn open_with(options: OutboxOptions) -> Result<Outbox, OutboxError> {
        let path = options.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Io {
                path: path.clone(),
                source,
            })?;
        }
        // Every sample and the lab's metadata: the owner's only (SQLite's WAL files follow it).
        crate::proto::files::create_private(&path).map_err(|source| OutboxError::Io {
            path: path.clone(),
            source,
        })?;
        let err = |source| OutboxError::Sqlite {
            path: path.clone(),
            source,
        };
        // Incremental auto-vacuum has to be chosen before anything is written to a new file, and
        // switching to WAL (in `configure`) already writes its header: set it first. On an
        // existing store this changes nothing.
        let conn = Connection::open(&path).map_err(err)?;
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .map_err(err)?;
        schema::configure(&conn, options.sync).map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > schema::VERSION {
            return Err(OutboxError::TooNew {
                path,
                found: version,
                known: schema::VERSION,
            });
        }
        conn.execute_batch(schema::CREATE).map_err(err)?;
        // A store written by an older daemon: CREATE left its tables as they were. Each upgrade
        // commits with its version, so a crash between two leaves a store the next open takes
        // on from there.
        if version >= 1 {
            for (to, upgrade) in (version + 1..).zip(&schema::UPGRADES[(version - 1) as usize..]) {
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; {upgrade} PRAGMA user_version = {to}; COMMIT;"
                ))
                .map_err(err)?;
            }
        }
        conn.execute_batch(&format!("PRAGMA user_version = {}", schema::VERSION))
            .map_err(err)?;

        let identity = load_identity(&conn, options.daemon_id.as_deref()).map_err(err)?;
        let startup_alarms = stored::verify_tail(&conn, VERIFY_TAIL).map_err(err)?;
        let stats = Arc::new(OutboxStats::default());
        stats.acked.store(
            meta_u64(&conn, "acked_up_to").map_err(err)?,
            Ordering::Release,
        );
        stats.samples_acked.store(
            meta_u64(&conn, "samples_acked").map_err(err)?,
            Ordering::Release,
        );
        let (max_id, pending_entries, pending_samples, pending_bytes): (i64, i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM outbox), COUNT(*),
                        COALESCE(SUM(samples), 0), COALESCE(SUM(LENGTH(body)), 0)
                 FROM outbox WHERE acked_unix_s IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(err)?;
        stats
            .pending_entries
            .store(pending_entries as u64, Ordering::Release);
        let committed_id = (max_id as u64).max(stats.acked.load(Ordering::Acquire));
        stats.committed.store(committed_id, Ordering::Release);
        stats.samples_appended.store(
            stats.samples_acked.load(Ordering::Acquire) + pending_samples as u64,
            Ordering::Release,
        );
        stats
            .pending_bytes
            .store(pending_bytes as u64, Ordering::Release);
        let dead: i64 = conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
            .map_err(err)?;
        stats.dead_letters.store(dead as u64, Ordering::Release);

        let (tx, rx) = std::sync::mpsc::channel();
        let (committed_tx, committed) = watch::channel(committed_id);
        let (acked_tx, acked) = watch::channel(stats.acked.load(Ordering::Acquire));
        let has_space = options
            .max_bytes
            .is_none_or(|max| (pending_bytes as u64) < max);
        let (space_tx, space) = watch::channel(has_space);
        let identity = Arc::new(RwLock::new(identity));
        let options = Arc::new(options);
        let writer = writer::Writer {
            conn,
            options: Arc::clone(&options),
            stats: Arc::clone(&stats),
            committed: committed_tx,
            acked: acked_tx,
            space: space_tx,
            identity: Arc::clone(&identity),
            compact_cursor: 0,
            last_compact: f64::NEG_INFINITY,
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || {
                writer.run(rx);
                drop(done_tx);
            })
            .map_err(|source| OutboxError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Outbox {
            tx,
            stats,
            committed,
            acked,
            space,
            identity,
            options,
            startup_alarms: Arc::new(startup_alarms),
            _writer: Arc::new(WriterThread(std::sync::Mutex::new(done_rx))),
        })
    }

    pub fn identity(&self) -> StoreIdentity {
        self.identity
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> &Arc<OutboxStats> {
        &self.stats
    }

    pub fn options(&self) -> &OutboxOptions {
        &self.options
    }

    pub fn startup_alarms(&self) -> &[String] {
        &self.startup_alarms
    }

    /// Watches the highest committed id.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Watches the highest acknowledged id (it also changes when entries are parked).
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.clone()
    }

    /// Watches whether there is room to acquire (quota not reached, disk taking commits).
    pub fn space(&self) -> watch::Receiver<bool> {
        self.space.clone()
    }

    /// Waits until every committed entry is acknowledged by the hub (or parked), or `deadline`
    /// passes; returns whether it caught up.
    pub async fn caught_up(&self, deadline: tokio::time::Instant) -> bool {
        let mut acked = self.acked.clone();
        loop {
            acked.borrow_and_update();
            if self.stats.backlog() == 0 {
                return true;
            }
            match tokio::time::timeout_at(deadline, acked.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// A new reading connection (for the uploader and the status API).
    pub fn reader(&self) -> Result<OutboxReader, OutboxError> {
        Ok(OutboxReader::new(
            open_conn(&self.options.path, self.options.sync)?,
            self.options.path.clone(),
        ))
    }

    /// Queues an entry; it is durable once [`Outbox::committed`] reaches past it. Encoding
    /// happens here, on the producer's thread, to keep the single writer thread lean.
    pub fn append(&self, body: Body) -> Result<(), OutboxError> {
        self.append_with(body, None)
    }

    /// Queues an entry and, in the same transaction, a checkpoint change.
    pub fn append_with(
        &self,
        body: Body,
        checkpoint: Option<CheckpointOp>,
    ) -> Result<(), OutboxError> {
        let samples = match &body {
            Body::Samples(b) => b.voltage_v.len() as u64,
            _ => 0,
        };
        let (format, bytes) = stored::encode(body);
        let crc = crc32fast::hash(&bytes);
        self.stats
            .samples_appended
            .fetch_add(samples, Ordering::AcqRel);
        self.send(WriteOp::Append {
            format,
            bytes,
            crc,
            samples,
            checkpoint,
        })
    }

    fn send(&self, op: WriteOp) -> Result<(), OutboxError> {
        self.tx.send(op).map_err(|_| OutboxError::WriterGone)
    }

    /// Records that the hub holds every entry up to `up_to`.
    pub fn ack(&self, up_to: u64) -> Result<(), OutboxError> {
        self.send(WriteOp::Ack { up_to })
    }

    /// Moves an entry to the dead-letter table (the hub rejected it, or it is corrupt).
    pub fn park(&self, id: u64, reason: String) -> Result<(), OutboxError> {
        self.send(WriteOp::Park { id, reason })
    }

    /// Puts every dead letter back in the queue (with new ids); returns how many.
    pub async fn requeue_dead_letters(&self) -> Result<u64, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Requeue(reply))?;
        answer.await.map_err(|_| OutboxError::WriterGone)
    }

    /// Starts a new store epoch (used when the hub holds entries this store no longer has).
    pub async fn new_epoch(&self) -> Result<StoreIdentity, OutboxError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::NewEpoch(reply))?;
        answer.await.map_err(|_| OutboxError::WriterGone)
    }

    /// Stores `value` under `key` in the store's settings, committed with the next batch;
    /// [`OutboxReader::meta`] reads it back (after a restart too).
    pub fn set_meta(&self, key: &'static str, value: String) -> Result<(), OutboxError> {
        self.send(WriteOp::SetMeta { key, value })
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let (done, wait) = oneshot::channel();
        self.send(WriteOp::Flush(done))?;
        wait.await.map_err(|_| OutboxError::WriterGone)
    }
}

fn load_identity(conn: &Connection, configured: Option<&str>) -> rusqlite::Result<StoreIdentity> {
    let stored = meta(conn, "daemon_id")?;
    let epoch = meta_u64(conn, "epoch")?;
    match (stored, configured) {
        (Some(id), want) if epoch > 0 && want.is_none_or(|want| want == id) => {
            // A store from before daemons had credentials gets one now; the hub binds it at
            // the next upload.
            let secret = match meta(conn, "daemon_secret")?.and_then(DaemonSecret::from_stored) {
                Some(secret) => secret,
                None => {
                    let secret = DaemonSecret::generate();
                    set_meta(conn, "daemon_secret", secret.expose())?;
                    secret
                }
            };
            Ok(StoreIdentity {
                daemon_id: id,
                epoch,
                secret,
            })
        }
        (_, configured) => {
            // A new store, or one that now belongs to another configured daemon id: a new
            // history, with an epoch no earlier store of this daemon had.
            let identity = StoreIdentity {
                daemon_id: configured
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                epoch: next_epoch(epoch),
                secret: DaemonSecret::generate(),
            };
            set_meta(conn, "daemon_id", &identity.daemon_id)?;
            set_meta(conn, "epoch", &identity.epoch.to_string())?;
            set_meta(conn, "daemon_secret", identity.secret.expose())?;
            Ok(identity)
        }
    }
}

/// Milliseconds since the Unix epoch, and always above `previous`.
fn next_epoch(previous: u64) -> u64 {
    ((unix_now() * 1000.0) as u64).max(previous + 1)
}

#[cfg(test)]
mod tests;

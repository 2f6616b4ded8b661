//! The SQLite outbox: an append-only log of entries waiting for the hub.
//!
//! One writer thread owns the write connection and commits everything that is queued in one
//! transaction (group commit), so producers never wait on the disk and the disk sees one commit
//! per batch. Sample batches are stored as one row each (many samples per row), encoded as the
//! protobuf `Entry` the uploader sends, with a CRC-32 over the body. Entries are deleted only
//! after the hub acknowledged them.
//!
//! Readers (the uploader) use their own connection: WAL lets them read while the writer writes.

use crate::proto::ingest::{Entry, entry::Body};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};

/// Most queued operations folded into one transaction; bounds the time one commit takes.
const MAX_OPS_PER_COMMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("outbox {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the outbox writer has stopped")]
    WriterGone,
}

/// The store's identity, created with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreIdentity {
    pub daemon_id: String,
    /// Changes whenever the store file is created anew.
    pub epoch: u64,
}

/// What is sent to the writer thread.
enum WriteOp {
    /// An encoded `Entry` (id 0; the row id becomes its id) with its CRC-32.
    Append {
        bytes: Vec<u8>,
        crc: u32,
        samples: u64,
    },
    Ack {
        up_to: u64,
    },
    Park {
        id: u64,
        reason: String,
    },
    Flush(oneshot::Sender<()>),
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
    /// Entries the hub rejected, parked in the dead-letter table.
    pub dead_letters: AtomicU64,
}

impl OutboxStats {
    pub fn backlog(&self) -> u64 {
        self.committed
            .load(Ordering::Acquire)
            .saturating_sub(self.acked.load(Ordering::Acquire))
    }
}

/// The producer side: cheap to clone, never blocks on the disk.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<WriteOp>,
    stats: Arc<OutboxStats>,
    committed: watch::Receiver<u64>,
    acked: watch::Receiver<u64>,
    identity: StoreIdentity,
    path: PathBuf,
}

/// One stored entry as the uploader reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub entry: Entry,
    pub samples: u64,
}

/// One row of a page: an entry to send, or one whose stored bytes are damaged.
// Almost every item is an Entry; boxing it would add an allocation per entry for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PageItem {
    Entry(StoredEntry),
    /// The row exists but its checksum or encoding is wrong; the caller parks it.
    Corrupt {
        id: u64,
        reason: String,
    },
}

/// The reading side for the uploader.
pub struct OutboxReader {
    conn: Connection,
    path: PathBuf,
}

fn open_conn(path: &Path) -> Result<Connection, OutboxError> {
    let err = |source| OutboxError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(err)?;
    Ok(conn)
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        samples INTEGER NOT NULL,
        body BLOB NOT NULL,
        crc INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY,
        samples INTEGER NOT NULL,
        body BLOB NOT NULL,
        crc INTEGER NOT NULL,
        reason TEXT NOT NULL,
        parked_unix_s REAL NOT NULL
    );
";

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )
    .map(|_| ())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Outbox {
    /// Opens (or creates) the store at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutboxError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let conn = open_conn(path)?;
        let err = |source| OutboxError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        conn.execute_batch(SCHEMA).map_err(err)?;
        let identity = match (
            meta(&conn, "daemon_id").map_err(err)?,
            meta(&conn, "epoch").map_err(err)?,
        ) {
            (Some(daemon_id), Some(epoch)) => StoreIdentity {
                daemon_id,
                epoch: epoch.parse().unwrap_or(0),
            },
            _ => {
                // A new store: a new identity, and an epoch no earlier store of this daemon had.
                let identity = StoreIdentity {
                    daemon_id: uuid::Uuid::new_v4().to_string(),
                    epoch: (unix_now() * 1000.0) as u64,
                };
                set_meta(&conn, "daemon_id", &identity.daemon_id).map_err(err)?;
                set_meta(&conn, "epoch", &identity.epoch.to_string()).map_err(err)?;
                identity
            }
        };
        let read_u64 = |key: &str| -> Result<u64, OutboxError> {
            Ok(meta(&conn, key)
                .map_err(err)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0))
        };
        let stats = Arc::new(OutboxStats::default());
        stats
            .acked
            .store(read_u64("acked_up_to")?, Ordering::Release);
        stats
            .samples_acked
            .store(read_u64("samples_acked")?, Ordering::Release);
        let max_id: u64 = conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM outbox", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(err)? as u64;
        let committed_id = max_id.max(stats.acked.load(Ordering::Acquire));
        stats.committed.store(committed_id, Ordering::Release);
        let pending_samples: i64 = conn
            .query_row("SELECT COALESCE(SUM(samples), 0) FROM outbox", [], |r| {
                r.get(0)
            })
            .map_err(err)?;
        stats.samples_appended.store(
            stats.samples_acked.load(Ordering::Acquire) + pending_samples as u64,
            Ordering::Release,
        );
        let dead: i64 = conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0))
            .map_err(err)?;
        stats.dead_letters.store(dead as u64, Ordering::Release);

        let (tx, rx) = mpsc::unbounded_channel();
        let (committed_tx, committed) = watch::channel(committed_id);
        let (acked_tx, acked) = watch::channel(stats.acked.load(Ordering::Acquire));
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            stats: Arc::clone(&stats),
            committed: committed_tx,
            acked: acked_tx,
        };
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| OutboxError::Dir {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Outbox {
            tx,
            stats,
            committed,
            acked,
            identity,
            path: path.to_path_buf(),
        })
    }

    pub fn identity(&self) -> &StoreIdentity {
        &self.identity
    }

    pub fn stats(&self) -> &Arc<OutboxStats> {
        &self.stats
    }

    /// Watches the highest committed id.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Waits until the hub has acknowledged everything committed so far, or `deadline` passes;
    /// returns whether it caught up.
    pub async fn caught_up(&self, deadline: tokio::time::Instant) -> bool {
        let mut acked = self.acked.clone();
        loop {
            let target = *self.committed.borrow();
            if *acked.borrow_and_update() >= target {
                return true;
            }
            match tokio::time::timeout_at(deadline, acked.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// A new reading connection for the uploader.
    pub fn reader(&self) -> Result<OutboxReader, OutboxError> {
        Ok(OutboxReader {
            conn: open_conn(&self.path)?,
            path: self.path.clone(),
        })
    }

    /// Queues an entry; it is durable once [`Outbox::committed`] reaches past it. Encoding
    /// happens here, on the producer's thread, to keep the single writer thread lean.
    pub fn append(&self, body: Body) -> Result<(), OutboxError> {
        let samples = match &body {
            Body::Samples(b) => b.voltage_v.len() as u64,
            _ => 0,
        };
        let entry = Entry {
            id: 0,
            body: Some(body),
        };
        let bytes = entry.encode_to_vec();
        let crc = crc32fast::hash(&bytes);
        self.stats
            .samples_appended
            .fetch_add(samples, Ordering::AcqRel);
        self.tx
            .send(WriteOp::Append {
                bytes,
                crc,
                samples,
            })
            .map_err(|_| OutboxError::WriterGone)
    }

    /// Records that the hub holds every entry up to `up_to`; those entries are deleted.
    pub fn ack(&self, up_to: u64) -> Result<(), OutboxError> {
        self.tx
            .send(WriteOp::Ack { up_to })
            .map_err(|_| OutboxError::WriterGone)
    }

    /// Moves an entry the hub rejected to the dead-letter table.
    pub fn park(&self, id: u64, reason: String) -> Result<(), OutboxError> {
        self.tx
            .send(WriteOp::Park { id, reason })
            .map_err(|_| OutboxError::WriterGone)
    }

    /// Waits until everything queued before this call is committed.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteOp::Flush(done))
            .map_err(|_| OutboxError::WriterGone)?;
        wait.await.map_err(|_| OutboxError::WriterGone)
    }
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    stats: Arc<OutboxStats>,
    committed: watch::Sender<u64>,
    acked: watch::Sender<u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<WriteOp>) {
        let mut ops = Vec::with_capacity(MAX_OPS_PER_COMMIT);
        while let Some(first) = rx.blocking_recv() {
            ops.push(first);
            while ops.len() < MAX_OPS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            // A failed commit is retried with the same operations: nothing queued is dropped.
            loop {
                match self.commit(&ops) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(
                            "outbox {}: commit failed, retrying: {e}",
                            self.path.display()
                        );
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                }
            }
            for op in ops.drain(..) {
                if let WriteOp::Flush(done) = op {
                    let _ = done.send(());
                }
            }
        }
    }

    fn commit(&mut self, ops: &[WriteOp]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let mut last_id = None;
        let mut acked = None;
        let mut acked_samples = 0u64;
        let mut parked = 0u64;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO outbox (samples, body, crc) VALUES (?1, ?2, ?3)")?;
            for op in ops {
                match op {
                    WriteOp::Append {
                        bytes,
                        crc,
                        samples,
                    } => {
                        insert.execute(params![*samples as i64, &bytes[..], crc])?;
                        last_id = Some(tx.last_insert_rowid() as u64);
                    }
                    WriteOp::Ack { up_to } => {
                        let done: i64 = tx.query_row(
                            "SELECT COALESCE(SUM(samples), 0) FROM outbox WHERE id <= ?1",
                            [*up_to as i64],
                            |r| r.get(0),
                        )?;
                        tx.execute("DELETE FROM outbox WHERE id <= ?1", [*up_to as i64])?;
                        acked_samples += done as u64;
                        acked = Some(acked.map_or(*up_to, |a: u64| a.max(*up_to)));
                    }
                    WriteOp::Park { id, reason } => {
                        let moved = tx.execute(
                            "INSERT OR IGNORE INTO dead_letters (id, samples, body, crc, reason, parked_unix_s)
                             SELECT id, samples, body, crc, ?2, ?3 FROM outbox WHERE id = ?1",
                            params![*id as i64, reason, unix_now()],
                        )?;
                        tx.execute("DELETE FROM outbox WHERE id = ?1", [*id as i64])?;
                        parked += moved as u64;
                    }
                    WriteOp::Flush(_) => {}
                }
            }
        }
        let acked = acked.map(|a| a.max(self.stats.acked.load(Ordering::Acquire)));
        if let Some(up_to) = acked {
            let total = self.stats.samples_acked.load(Ordering::Acquire) + acked_samples;
            set_meta(&tx, "acked_up_to", &up_to.to_string())?;
            set_meta(&tx, "samples_acked", &total.to_string())?;
        }
        tx.commit()?;
        // Counters move only after the commit, so they never claim more than is on disk.
        if let Some(up_to) = acked {
            self.stats.acked.fetch_max(up_to, Ordering::AcqRel);
            self.stats
                .samples_acked
                .fetch_add(acked_samples, Ordering::AcqRel);
            self.acked
                .send_replace(self.stats.acked.load(Ordering::Acquire));
        }
        self.stats.dead_letters.fetch_add(parked, Ordering::AcqRel);
        if let Some(id) = last_id {
            self.stats.committed.store(id, Ordering::Release);
            self.committed.send_replace(id);
        }
        Ok(())
    }
}

impl OutboxReader {
    /// Up to `limit` entries with id > `after`, oldest first. A damaged entry comes back as
    /// [`PageItem::Corrupt`] in its place, so the caller can park it.
    pub fn page_after(&mut self, after: u64, limit: usize) -> Result<Vec<PageItem>, OutboxError> {
        let err = |source| OutboxError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, samples, body, crc FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![after as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, u32>(3)?,
                ))
            })
            .map_err(err)?;
        let mut page = Vec::new();
        for row in rows {
            let (id, samples, body, crc) = row.map_err(err)?;
            if crc32fast::hash(&body) != crc {
                page.push(PageItem::Corrupt {
                    id,
                    reason: "checksum mismatch: the stored entry is corrupt".into(),
                });
                continue;
            }
            match Entry::decode(&body[..]) {
                Ok(mut entry) => {
                    entry.id = id;
                    page.push(PageItem::Entry(StoredEntry { entry, samples }));
                }
                Err(e) => page.push(PageItem::Corrupt {
                    id,
                    reason: format!("stored entry does not decode: {e}"),
                }),
            }
        }
        Ok(page)
    }
}

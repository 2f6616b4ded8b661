//! The writer thread: the only connection that writes.

use super::schema::set_meta;
use super::{
    CheckpointOp, OutboxOptions, OutboxStats, StoreIdentity, WriteOp, compact, next_epoch, unix_now,
};
use rusqlite::{Connection, ErrorCode, Transaction, params};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most queued operations folded into one transaction; bounds the time one commit takes.
const MAX_OPS_PER_COMMIT: usize = 4096;
/// Free pages above which a commit that deleted rows also gives pages back to the file system.
const VACUUM_ABOVE_PAGES: i64 = 1024;
/// How long the writer lets a commit's operations gather after the first arrives: the
/// channels of a daemon flush on the same aligned tick, within a millisecond or two.
const GATHER: Duration = Duration::from_millis(3);
/// How long acknowledgements alone wait for something else to commit with. An ack only lets
/// go of entries the hub already holds, so it can ride with the next tick's batches (the
/// channels flush every 250 ms) instead of costing a commit and an fsync of its own; the one
/// cost is that space under the quota comes back that much later.
const ACK_GATHER: Duration = Duration::from_millis(300);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub(super) struct Writer {
    pub conn: Connection,
    pub options: Arc<OutboxOptions>,
    pub stats: Arc<OutboxStats>,
    pub committed: watch::Sender<u64>,
    pub acked: watch::Sender<u64>,
    pub space: watch::Sender<bool>,
    pub identity: Arc<RwLock<StoreIdentity>>,
    /// Rows up to this id were looked at by compaction passes.
    pub compact_cursor: u64,
    /// When the last compaction pass ran (Unix seconds).
    pub last_compact: f64,
}

/// What one transaction changed, applied to the shared counters only after it committed.
#[derive(Default)]
struct Effects {
    last_id: Option<u64>,
    acked_up_to: Option<u64>,
    acked_samples: u64,
    appended_bytes: u64,
    appended_entries: u64,
    released_bytes: u64,
    released_entries: u64,
    parked: i64,
    deleted_rows: bool,
    requeued: u64,
    new_identity: Option<StoreIdentity>,
    compact_cursor: Option<u64>,
}

impl Writer {
    pub fn run(mut self, rx: mpsc::Receiver<WriteOp>) {
        let mut ops = Vec::with_capacity(MAX_OPS_PER_COMMIT);
        while let Ok(first) = rx.recv() {
            ops.push(first);
            let until = Instant::now() + ACK_GATHER;
            while ops.len() < MAX_OPS_PER_COMMIT
                && ops.iter().all(|op| matches!(op, WriteOp::Ack { .. }))
            {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            // Someone waits on these: commit at once. Otherwise let the other channels' batches
            // of the same tick arrive, so they meet in one commit (one fsync) instead of one
            // each.
            let waited_on = ops.iter().any(|op| {
                matches!(
                    op,
                    WriteOp::Flush(_) | WriteOp::Requeue(_) | WriteOp::NewEpoch(_)
                )
            });
            if !waited_on {
                std::thread::sleep(GATHER);
            }
            while ops.len() < MAX_OPS_PER_COMMIT {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            // A failed commit is retried with the same operations: nothing queued is dropped.
            // Producers see `space` turn false and pause meanwhile.
            let mut wait = RETRY_MIN;
            let effects = loop {
                match self.commit(&ops) {
                    Ok(effects) => break effects,
                    Err(e) => {
                        let full = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull);
                        tracing::error!(
                            "outbox {}: commit failed{}, retrying in {wait:?}: {e}",
                            self.options.path.display(),
                            if full { " (disk full)" } else { "" }
                        );
                        self.stats.failing.store(true, Ordering::Release);
                        self.space.send_replace(false);
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            };
            self.stats.failing.store(false, Ordering::Release);
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.publish(&effects);
            for op in ops.drain(..) {
                match op {
                    WriteOp::Flush(done) => {
                        let _ = done.send(());
                    }
                    WriteOp::Requeue(reply) => {
                        let _ = reply.send(effects.requeued);
                    }
                    WriteOp::NewEpoch(reply) => {
                        if let Some(identity) = &effects.new_identity {
                            let _ = reply.send(identity.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Counters and watches move only after the commit, so they never claim more than is on disk.
    fn publish(&mut self, e: &Effects) {
        let s = &self.stats;
        let settle = |counter: &std::sync::atomic::AtomicU64, add: u64, sub: u64| {
            let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some((v + add).saturating_sub(sub))
            });
        };
        settle(&s.pending_bytes, e.appended_bytes, e.released_bytes);
        settle(&s.pending_entries, e.appended_entries, e.released_entries);
        if let Some(up_to) = e.acked_up_to {
            s.acked.fetch_max(up_to, Ordering::AcqRel);
            s.samples_acked.fetch_add(e.acked_samples, Ordering::AcqRel);
        }
        // Before the waiters wake: one that sees the backlog drained sees its parked entries.
        let dead = s.dead_letters.load(Ordering::Acquire) as i64 + e.parked;
        s.dead_letters.store(dead.max(0) as u64, Ordering::Release);
        if e.acked_up_to.is_some() || e.released_entries > 0 || e.new_identity.is_some() {
            // Wakes whoever waits for the backlog to drain, parked entries included.
            self.acked.send_replace(s.acked.load(Ordering::Acquire));
        }
        if let Some(cursor) = e.compact_cursor {
            self.compact_cursor = cursor;
        }
        if let Some(identity) = &e.new_identity {
            *self.identity.write().unwrap_or_else(|p| p.into_inner()) = identity.clone();
        }
        if let Some(id) = e.last_id {
            s.committed.store(id, Ordering::Release);
            self.committed.send_replace(id);
        }
        let room = self
            .options
            .max_bytes
            .is_none_or(|max| s.pending_bytes.load(Ordering::Acquire) < max);
        self.space.send_if_modified(|v| {
            let changed = *v != room;
            *v = room;
            changed
        });
    }

    fn commit(&mut self, ops: &[WriteOp]) -> rusqlite::Result<Effects> {
        let keep_acked = self.options.keep_acked;
        let tx = self.conn.transaction()?;
        let mut e = Effects::default();
        let now = unix_now();
        for op in ops {
            match op {
                WriteOp::Append {
                    format,
                    bytes,
                    crc,
                    samples,
                    checkpoint,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO outbox (samples, body, crc, format, created_unix_s)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        *samples as i64,
                        &bytes[..],
                        crc,
                        format,
                        now
                    ])?;
                    e.last_id = Some(tx.last_insert_rowid() as u64);
                    e.appended_bytes += bytes.len() as u64;
                    e.appended_entries += 1;
                    if let Some(c) = checkpoint {
                        write_checkpoint(&tx, c)?;
                    }
                }
                WriteOp::Ack { up_to } => {
                    let up_to = *up_to as i64;
                    let (entries, samples, bytes): (i64, i64, i64) = tx.prepare_cached("SELECT COUNT(*), COALESCE(SUM(samples), 0), COALESCE(SUM(LENGTH(body)), 0)
                         FROM outbox WHERE id <= ?1 AND acked_unix_s IS NULL")?.query_row(
                        [up_to],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?;
                    e.released_entries += entries as u64;
                    if keep_acked.is_zero() {
                        tx.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?
                            .execute([up_to])?;
                        e.deleted_rows = true;
                    } else {
                        tx.prepare_cached("UPDATE outbox SET acked_unix_s = ?2 WHERE id <= ?1 AND acked_unix_s IS NULL")?.execute(
                            params![up_to, now],
                        )?;
                    }
                    e.acked_samples += samples as u64;
                    e.released_bytes += bytes as u64;
                    let best = e
                        .acked_up_to
                        .unwrap_or(0)
                        .max(up_to as u64)
                        .max(self.stats.acked.load(Ordering::Acquire));
                    e.acked_up_to = Some(best);
                }
                WriteOp::Park { id, reason } => {
                    let (entries, bytes): (i64, i64) = tx
                        .prepare_cached(
                            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0)
                         FROM outbox WHERE id = ?1 AND acked_unix_s IS NULL",
                        )?
                        .query_row([*id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    e.released_entries += entries as u64;
                    let moved = tx.prepare_cached("INSERT OR IGNORE INTO dead_letters (id, samples, body, crc, format, reason, parked_unix_s)
                         SELECT id, samples, body, crc, format, ?2, ?3 FROM outbox WHERE id = ?1")?.execute(
                        params![*id as i64, reason, now],
                    )?;
                    tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                        .execute([*id as i64])?;
                    e.parked += moved as i64;
                    e.released_bytes += bytes as u64;
                }
                WriteOp::Requeue(_) => {
                    let moved = tx
                        .prepare_cached(
                            "INSERT INTO outbox (samples, body, crc, format, created_unix_s)
                         SELECT samples, body, crc, format, ?1 FROM dead_letters ORDER BY id",
                        )?
                        .execute([now])?;
                    let bytes: i64 = tx
                        .prepare_cached("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM dead_letters")?
                        .query_row([], |r| r.get(0))?;
                    tx.prepare_cached("DELETE FROM dead_letters")?.execute([])?;
                    if moved > 0 {
                        e.last_id = Some(tx.last_insert_rowid() as u64);
                    }
                    e.appended_bytes += bytes as u64;
                    e.appended_entries += moved as u64;
                    e.parked -= moved as i64;
                    e.requeued += moved as u64;
                }
                WriteOp::SetMeta { key, value } => set_meta(&tx, key, value)?,
                WriteOp::NewEpoch(_) => {
                    let current = self
                        .identity
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let identity = StoreIdentity {
                        epoch: next_epoch(current.epoch),
                        ..current
                    };
                    set_meta(&tx, "epoch", &identity.epoch.to_string())?;
                    // The new epoch's hub history starts empty: nothing of it is acknowledged.
                    set_meta(&tx, "acked_up_to", "0")?;
                    e.new_identity = Some(identity);
                }
                WriteOp::Flush(_) => {}
            }
        }
        let compact_after = self.options.compact_after.as_secs_f64();
        if now - self.last_compact >= compact_after / 10.0 {
            self.last_compact = now;
            let acked = e
                .acked_up_to
                .unwrap_or(0)
                .max(self.stats.acked.load(Ordering::Acquire));
            let m = compact::merge_runs(&tx, self.compact_cursor.max(acked), now - compact_after)?;
            e.released_entries += m.rows_removed;
            e.released_bytes += m.bytes_before;
            e.appended_bytes += m.bytes_after;
            e.deleted_rows |= m.rows_removed > 0;
            e.compact_cursor = Some(m.resume_after);
        }
        if !keep_acked.is_zero() {
            let expired = tx
                .prepare_cached(
                    "DELETE FROM outbox WHERE acked_unix_s IS NOT NULL AND acked_unix_s < ?1",
                )?
                .execute([now - keep_acked.as_secs_f64()])?;
            e.deleted_rows |= expired > 0;
        }
        if let Some(up_to) = e.acked_up_to {
            let total = self.stats.samples_acked.load(Ordering::Acquire) + e.acked_samples;
            set_meta(&tx, "acked_up_to", &up_to.to_string())?;
            set_meta(&tx, "samples_acked", &total.to_string())?;
        }
        tx.commit()?;
        if e.new_identity.is_some() {
            self.stats.acked.store(0, Ordering::Release);
        }
        if e.deleted_rows {
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            if free > VACUUM_ABOVE_PAGES {
                // Gives the free pages back so the file shrinks as the backlog drains. The pragma
                // frees one page per row it steps, so it is stepped to the end (`execute_batch`
                // would step it once: one page).
                let mut vacuum = self
                    .conn
                    .prepare(&format!("PRAGMA incremental_vacuum({free})"))?;
                let mut freed = vacuum.query([])?;
                while freed.next()?.is_some() {}
            }
        }
        Ok(e)
    }
}

fn write_checkpoint(tx: &Transaction<'_>, op: &CheckpointOp) -> rusqlite::Result<()> {
    match op {
        CheckpointOp::Begin(c) => {
            let metadata = serde_json::to_string(&c.metadata).unwrap_or_else(|_| "{}".into());
            let params = serde_json::to_string(&c.params).unwrap_or_else(|_| "{}".into());
            let p = &c.progress;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO checkpoints (test_id, channel_id, protocol_source, origin,
                   metadata_json, start_unix_s, engine_json, next_seq, test_time_s, unix_s, paused_s,
                   params_json, cycles_json, quality_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                c.test_id,
                c.channel_id,
                c.protocol_source,
                c.origin,
                metadata,
                c.start_unix_s,
                p.engine_json,
                p.next_seq as i64,
                p.test_time_s,
                p.unix_s,
                p.paused_s,
                params,
                p.cycles_json,
                p.quality_json
            ])?;
        }
        CheckpointOp::Progress {
            test_id,
            progress: p,
        } => {
            tx.prepare_cached(
                "UPDATE checkpoints SET engine_json = ?2, next_seq = ?3, test_time_s = ?4,
                   unix_s = ?5, paused_s = ?6, cycles_json = ?7, quality_json = ?8
                 WHERE test_id = ?1",
            )?
            .execute(params![
                test_id,
                p.engine_json,
                p.next_seq as i64,
                p.test_time_s,
                p.unix_s,
                p.paused_s,
                p.cycles_json,
                p.quality_json
            ])?;
        }
        CheckpointOp::End { test_id } => {
            tx.prepare_cached("DELETE FROM checkpoints WHERE test_id = ?1")?
                .execute([test_id])?;
        }
    }
    Ok(())
}

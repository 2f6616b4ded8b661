//! Merging a backlog of small sample entries. A live channel stores an entry per flush (2 or 3
//! samples at 10 Hz), about 57 bytes a sample column-encoded: each entry pays for its test id
//! and its columns' first values. While the hub is unreachable such entries pile up; runs of
//! them are merged into one entry of up to [`MERGED_MAX`] samples (about 6 to 8 bytes each).
//!
//! A run is rows of one test with no other entry of that test between them, all small
//! column-encoded sample batches with contiguous seqs and the same optional columns (the
//! channels of a daemon flush on the same tick, so their rows interleave). Any other entry
//! (an event, a registration, a full batch, a damaged row) ends every run, so no sample moves
//! past an entry it came before. The merged entry takes the run's last id and the other rows
//! go: to the uploader the gone ids look like parked ones (it says so in `skipped_before`),
//! and the hub applies samples by (test, seq), so a part it already has (sent before the
//! merge) adds nothing. Nothing acknowledged, damaged or younger than the age limit is touched.

use super::stored::{self, SAMPLE_COLUMNS};
use crate::proto::chunk::encode_sample_batch;
use crate::proto::ingest::{SampleBatch, entry::Body};
use rusqlite::{Transaction, params};
use std::collections::HashMap;

/// Most samples in a merged entry: a runner's full batch.
pub(super) const MERGED_MAX: u64 = 2048;
/// Entries with more samples than this are left as they are (and end a run).
const SMALL: i64 = 256;
/// Rows looked at in one pass, so a pass stays short.
const SCAN: i64 = 4096;

/// What a pass changed.
#[derive(Debug, Default)]
pub(super) struct Merged {
    /// Rows deleted into merged ones.
    pub rows_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Where the next pass starts: the first row of the run left open at the end of this one.
    pub resume_after: u64,
}

struct Row {
    id: i64,
    bytes: usize,
    batch: SampleBatch,
}

/// Whether `b` continues the run `run` and fits in it.
fn continues(run: &[Row], b: &SampleBatch) -> bool {
    let Some(last) = run.last() else {
        return true;
    };
    let a = &last.batch;
    let total: u64 = run.iter().map(|r| r.batch.test_time_s.len() as u64).sum();
    a.test_id == b.test_id
        && a.first_seq.checked_add(a.test_time_s.len() as u64) == Some(b.first_seq)
        && total + b.test_time_s.len() as u64 <= MERGED_MAX
        && a.temperature_c.is_empty() == b.temperature_c.is_empty()
        && a.ambient_temperature_c.is_empty() == b.ambient_temperature_c.is_empty()
        && a.plan_step.is_empty() == b.plan_step.is_empty()
}

/// Merges the runs among the unacknowledged rows after `after` created before `cutoff`.
pub(super) fn merge_runs(
    tx: &Transaction<'_>,
    after: u64,
    cutoff: f64,
) -> rusqlite::Result<Merged> {
    let mut out = Merged {
        resume_after: after,
        ..Merged::default()
    };
    // Read first, then change: the rows are small, and no statement reads while others write.
    let mut rows = Vec::new();
    let mut reached_young = false;
    {
        let mut stmt = tx.prepare_cached(
            "SELECT id, samples, body, crc, format, created_unix_s FROM outbox
             WHERE id > ?1 AND acked_unix_s IS NULL ORDER BY id LIMIT ?2",
        )?;
        let mut q = stmt.query(params![after as i64, SCAN])?;
        while let Some(r) = q.next()? {
            let (id, samples, format, created): (i64, i64, i64, f64) =
                (r.get(0)?, r.get(1)?, r.get(4)?, r.get(5)?);
            if created >= cutoff {
                reached_young = true;
                break;
            }
            let batch = if format == SAMPLE_COLUMNS && samples <= SMALL {
                let body: Vec<u8> = r.get(2)?;
                let crc: u32 = r.get(3)?;
                // A damaged row stays as it is, for the reader to report.
                (crc32fast::hash(&body) == crc)
                    .then(|| stored::decode(format, &body).ok())
                    .flatten()
                    .and_then(|e| match e.body {
                        Some(Body::Samples(b)) => Some((b, body.len())),
                        _ => None,
                    })
            } else {
                None
            };
            rows.push((id, batch));
        }
    }
    let examined = rows.len() as i64;
    let mut runs: HashMap<String, Vec<Row>> = HashMap::new();
    for (id, batch) in rows {
        out.resume_after = id as u64;
        let Some((batch, bytes)) = batch else {
            for (_, run) in runs.drain() {
                merge(tx, run, &mut out)?;
            }
            continue;
        };
        let run = runs.entry(batch.test_id.clone()).or_default();
        if !continues(run, &batch) {
            merge(tx, std::mem::take(run), &mut out)?;
        }
        run.push(Row { id, bytes, batch });
    }
    // Runs that reach rows too young to merge may go on growing: the next pass starts at the
    // first of them. Otherwise (the end of the table, or the end of this pass's rows, which
    // must move on) they are merged as they are.
    let first_open = runs
        .values()
        .filter_map(|run| run.first().map(|r| r.id))
        .min();
    match first_open {
        Some(first) if reached_young && examined < SCAN => {
            out.resume_after = first as u64 - 1;
        }
        _ => {
            for (_, run) in runs.drain() {
                merge(tx, run, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// Replaces the rows of `run` (if more than one) by one entry under the last id.
fn merge(tx: &Transaction<'_>, run: Vec<Row>, out: &mut Merged) -> rusqlite::Result<()> {
    if run.len() < 2 {
        return Ok(());
    }
    let mut rows = run.into_iter();
    let first = rows.next().expect("two rows");
    let (mut ids, mut before) = (vec![first.id], first.bytes);
    let mut b = first.batch;
    for r in rows {
        ids.push(r.id);
        before += r.bytes;
        let n = r.batch;
        b.test_time_s.extend(n.test_time_s);
        b.unix_time_s.extend(n.unix_time_s);
        b.voltage_v.extend(n.voltage_v);
        b.current_a.extend(n.current_a);
        b.cycle.extend(n.cycle);
        b.step.extend(n.step);
        b.charge_capacity_ah.extend(n.charge_capacity_ah);
        b.discharge_capacity_ah.extend(n.discharge_capacity_ah);
        b.charge_energy_wh.extend(n.charge_energy_wh);
        b.discharge_energy_wh.extend(n.discharge_energy_wh);
        b.temperature_c.extend(n.temperature_c);
        b.ambient_temperature_c.extend(n.ambient_temperature_c);
        b.plan_step.extend(n.plan_step);
    }
    // Equal columns by construction; a batch that would not encode stays as it was.
    let Some(bytes) = encode_sample_batch(&b) else {
        return Ok(());
    };
    let last = *ids.last().expect("two rows");
    tx.prepare_cached("UPDATE outbox SET samples = ?2, body = ?3, crc = ?4 WHERE id = ?1")?
        .execute(params![
            last,
            b.test_time_s.len() as i64,
            &bytes,
            crc32fast::hash(&bytes)
        ])?;
    let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
    for &id in &ids[..ids.len() - 1] {
        delete.execute([id])?;
    }
    out.rows_removed += ids.len() as u64 - 1;
    out.bytes_before += before as u64;
    out.bytes_after += bytes.len() as u64;
    Ok(())
}

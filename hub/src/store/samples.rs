//! How the hub keeps samples, written once for both backends: a test's samples live in
//! `sample_chunks`, one row per run of contiguous seqs (an incoming batch, or a part of it),
//! encoded by [`chunk`]. Here: a validated batch to chunks (only the seqs not held yet, so a
//! re-sent or overlapping batch stays exact), chunk rows back to samples, and the conversion
//! of a hub that still holds the former one-row-per-sample `samples` table.

use std::borrow::Cow;

use cyclerd_proto::ingest::{Entry, SampleBatch, entry::Body};

use super::batch_writes::BatchWrites;
use super::chunk::{self, Columns, Encoded, MAX_CHUNK, Opt};
use super::summary::Summary;
use super::{SampleRow, StoreError};

/// Samples per chunk when converting the former table (a daemon's batch holds up to 2048).
pub(super) const CONVERT_CHUNK: usize = 2048;

/// What SQL keeps of a float, as the former one-row-per-sample table did on both backends: a
/// zero without its sign (SQLite reads `-0.0` back as `0.0`; PostgreSQL's copy dropped it).
fn unsigned_zeros(col: &[f64]) -> Cow<'_, [f64]> {
    if col.iter().any(|v| v.to_bits() == (-0.0f64).to_bits()) {
        Cow::Owned(col.iter().map(|v| v + 0.0).collect())
    } else {
        Cow::Borrowed(col)
    }
}

/// An optional temperature column of a batch: empty = no sensor, a non-finite value = no
/// reading for that sample (stored as NULL before).
enum Temperature<'a> {
    Absent,
    All(Cow<'a, [f64]>),
    Mixed(Vec<Option<f64>>),
}

impl<'a> Temperature<'a> {
    fn of(col: &'a [f64]) -> Temperature<'a> {
        if col.is_empty() {
            Temperature::Absent
        } else if col.iter().all(|v| v.is_finite()) {
            Temperature::All(unsigned_zeros(col))
        } else {
            Temperature::Mixed(
                col.iter()
                    .map(|&v| v.is_finite().then_some(v + 0.0))
                    .collect(),
            )
        }
    }

    fn opt(&self) -> Opt<'_, f64> {
        match self {
            Temperature::Absent => Opt::Absent,
            Temperature::All(v) => Opt::All(v),
            Temperature::Mixed(v) => Opt::Mixed(v),
        }
    }
}

/// Checks a sample batch's shape and values, so the insert loop cannot fail on them.
pub(super) fn validate_samples(b: &SampleBatch) -> Result<(), String> {
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
        ("plan_step", b.plan_step.len()),
    ];
    let optional_ok = optional.iter().all(|&(_, len)| len == 0 || len == n);
    if lens.iter().any(|&(_, len)| len != n) || !optional_ok {
        let mut detail = format!("test_time_s {n}");
        for (name, len) in lens.iter().chain(&optional) {
            detail.push_str(&format!(", {name} {len}"));
        }
        return Err(format!(
            "sample batch columns have unequal lengths ({detail}); every column must have one \
             value per sample (temperature_c, ambient_temperature_c and plan_step may be empty)"
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

/// A batch smaller than this (a live test's, sent after the daemon's batch interval rather
/// than full) that continues the test's last chunk is merged into it, re-encoded ...
const SMALL_BATCH: usize = 256;
/// ... as long as the merged chunk stays within this many samples: a few re-encodings per
/// sample, instead of a chunk row's overhead for every few samples.
const MERGED_CHUNK: usize = 1024;

/// Stores the samples of a validated, non-empty batch of test `key` that the hub does not
/// hold yet (a re-sent batch adds nothing; one that overlaps held chunks adds only its new
/// seqs, as chunks of their own; a small one that continues a small chunk is merged into
/// it), adds their number to the test's count and returns it.
///
/// `ahead` is the batch as one chunk with its summary, made ahead ([`encode_ahead`]), if it
/// was.
pub(super) fn insert_batch(
    w: &mut dyn BatchWrites,
    key: i64,
    b: &SampleBatch,
    ahead: Option<&Ahead>,
) -> Result<u64, StoreError> {
    let n = b.test_time_s.len();
    // In range: validation checked the seq range.
    let first = b.first_seq as i64;
    let last = first + n as i64 - 1;
    let held = w.held_chunks(key, first, last)?;
    if let (true, Some(ahead)) = (held.is_empty(), ahead) {
        // The usual case: a new batch, stored as it came.
        let inserted = w.insert_chunk(key, first, &ahead.chunk)?;
        if !inserted {
            return Ok(0);
        }
        w.set_summary(key, first, &ahead.summary)?;
        return Ok(ahead.chunk.count as u64);
    }
    if held.is_empty() && n < SMALL_BATCH {
        let room = (MERGED_CHUNK - n) as i64;
        if let Some((prev_first, data)) = w.chunk_ending_at(key, first - 1, room)? {
            let mut rows = Vec::with_capacity(MERGED_CHUNK);
            chunk::decode(&data, prev_first as u64, &mut rows).map_err(|e| {
                StoreError::Corrupt(format!(
                    "the sample chunk at seq {prev_first} of test key {key}: {e}"
                ))
            })?;
            with_columns(b, |cols| {
                rows.extend((0..n).map(|i| chunk::row(cols, i, b.first_seq + i as u64)));
            });
            let merged = chunk::from_rows(&rows);
            let enc = chunk::encode(&merged.columns());
            w.replace_chunk(key, prev_first, &enc, n as i64)?;
            w.set_summary(key, prev_first, &Summary::of(&merged.columns()).to_bytes())?;
            return Ok(n as u64);
        }
    }
    let mut inserted = 0u64;
    with_columns(b, |cols| {
        for (from, to) in gaps(first, last, &held) {
            let (from, to) = ((from - first) as usize, (to - first) as usize + 1);
            for start in (from..to).step_by(MAX_CHUNK) {
                let end = (start + MAX_CHUNK).min(to);
                let part = cols.slice(start..end);
                let enc = chunk::encode(&part);
                if w.insert_chunk(key, first + start as i64, &enc)? {
                    inserted += enc.count as u64;
                    let summary = Summary::of(&part).to_bytes();
                    w.set_summary(key, first + start as i64, &summary)?;
                }
            }
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(inserted)
}

/// A sample batch as [`insert_batch`] stores it whole, made ahead of the transaction.
pub(super) struct Ahead {
    /// The batch as one chunk.
    pub chunk: Encoded,
    /// The chunk's summary ([`Summary::to_bytes`]).
    pub summary: Vec<u8>,
}

/// The sample batches of `entries` that will most likely be stored whole (valid, at most
/// [`MAX_CHUNK`] samples, too big to be merged), each encoded as one chunk with its summary,
/// on the machine's cores (up to 4), ahead of the batch's transaction: encoding is most of an
/// apply's work, and the transaction itself is single-threaded. `None` for every other entry.
pub(super) fn encode_ahead(entries: &[Entry]) -> Vec<Option<Ahead>> {
    let wanted = |e: &Entry| match &e.body {
        Some(Body::Samples(b)) => {
            let n = b.test_time_s.len();
            (SMALL_BATCH..=MAX_CHUNK).contains(&n) && validate_samples(b).is_ok()
        }
        _ => false,
    };
    let encode = |e: &Entry| match &e.body {
        Some(Body::Samples(b)) if wanted(e) => Some(with_columns(b, |cols| Ahead {
            chunk: chunk::encode(cols),
            summary: Summary::of(cols).to_bytes(),
        })),
        _ => None,
    };
    let todo = entries.iter().filter(|e| wanted(e)).count();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if todo < 2 || threads < 2 {
        return entries.iter().map(encode).collect();
    }
    let per = entries.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = entries
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(encode).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Calls `f` with the columns of a validated batch as the hub stores them: zeros without
/// their sign and non-finite temperatures as none, as the former one-row-per-sample table did.
fn with_columns<R>(b: &SampleBatch, f: impl FnOnce(&Columns<'_>) -> R) -> R {
    let floats = [
        &b.test_time_s,
        &b.unix_time_s,
        &b.voltage_v,
        &b.current_a,
        &b.charge_capacity_ah,
        &b.discharge_capacity_ah,
        &b.charge_energy_wh,
        &b.discharge_energy_wh,
    ]
    .map(|c| unsigned_zeros(c));
    let (temperature, ambient) = (
        Temperature::of(&b.temperature_c),
        Temperature::of(&b.ambient_temperature_c),
    );
    let cols = Columns {
        head: [&floats[0], &floats[1], &floats[2], &floats[3]],
        cycle: &b.cycle,
        step: &b.step,
        tail: [&floats[4], &floats[5], &floats[6], &floats[7]],
        temperature_c: temperature.opt(),
        ambient_temperature_c: ambient.opt(),
        plan_step: if b.plan_step.is_empty() {
            Opt::Absent
        } else {
            Opt::All(&b.plan_step)
        },
    };
    f(&cols)
}

/// A whole validated batch (at most [`MAX_CHUNK`] samples) as one chunk, as
/// [`insert_batch`] stores it.
pub(super) fn encode_batch(b: &SampleBatch) -> Encoded {
    with_columns(b, chunk::encode)
}

/// The runs of `[first, last]` outside the held ranges (sorted, disjoint, inclusive).
fn gaps(first: i64, last: i64, held: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut next = first;
    for &(lo, hi) in held {
        if lo > next {
            out.push((next, (lo - 1).min(last)));
        }
        next = next.max(hi.saturating_add(1));
        if next > last {
            return out;
        }
    }
    if next <= last {
        out.push((next, last));
    }
    out
}

/// The former `samples` table of a hub, as a backend reads and replaces it.
pub(super) trait LegacySamples {
    /// The smallest test key above `after` that has rows in the former table.
    fn next_legacy_test(&mut self, after: i64) -> Result<Option<i64>, StoreError>;
    /// Whether the test has chunks already (converted before an interruption).
    fn has_chunks(&mut self, key: i64) -> Result<bool, StoreError>;
    /// Up to `limit` former rows of a test from `from_seq` on, in seq order.
    fn legacy_page(
        &mut self,
        key: i64,
        from_seq: i64,
        limit: i64,
    ) -> Result<Vec<SampleRow>, StoreError>;
    /// Inserts a chunk (ignored when its key is held).
    fn put_chunk(&mut self, key: i64, first_seq: i64, c: &Encoded) -> Result<bool, StoreError>;
}

/// Converts the former rows of test `key` to chunks, runs of contiguous seqs of at most
/// [`CONVERT_CHUNK`] samples; returns the number of samples converted.
pub(super) fn convert_test(w: &mut dyn LegacySamples, key: i64) -> Result<u64, StoreError> {
    if w.has_chunks(key)? {
        return Ok(0);
    }
    const PAGE: i64 = 64 * CONVERT_CHUNK as i64;
    let mut run: Vec<SampleRow> = Vec::with_capacity(CONVERT_CHUNK);
    let mut next = 0i64;
    let mut converted = 0u64;
    let mut flush = |w: &mut dyn LegacySamples, run: &mut Vec<SampleRow>| {
        if let Some(first) = run.first() {
            let enc = chunk::encode(&chunk::from_rows(run).columns());
            w.put_chunk(key, first.seq as i64, &enc)?;
            converted += run.len() as u64;
            run.clear();
        }
        Ok::<_, StoreError>(())
    };
    loop {
        let page = w.legacy_page(key, next, PAGE)?;
        for s in &page {
            let contiguous = run.last().is_none_or(|l| l.seq + 1 == s.seq);
            if !contiguous || run.len() == CONVERT_CHUNK {
                flush(w, &mut run)?;
            }
            run.push(s.clone());
        }
        match page.last() {
            Some(l) if page.len() as i64 == PAGE => next = l.seq as i64 + 1,
            _ => break,
        }
    }
    flush(w, &mut run)?;
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::gaps;

    #[test]
    fn gaps_are_the_seqs_no_held_chunk_covers() {
        assert_eq!(gaps(0, 9, &[]), vec![(0, 9)]);
        assert_eq!(gaps(0, 9, &[(0, 9)]), vec![]);
        assert_eq!(gaps(5, 14, &[(0, 9)]), vec![(10, 14)]);
        assert_eq!(gaps(0, 9, &[(3, 4), (7, 7)]), vec![(0, 2), (5, 6), (8, 9)]);
        assert_eq!(gaps(0, 9, &[(5, 20)]), vec![(0, 4)]);
    }
}

//! A chunk's summary: per plot series, its smallest and largest value. Kept beside every chunk
//! (`chunk_summaries`) when it is stored, so that a plot of a long test takes a chunk that
//! falls inside one pixel column from its summary instead of decoding it.
//!
//! A summary is a version byte (1) then, per series of [`SERIES`] in order, the minimum and the
//! maximum as little-endian f64 (NaN: the chunk has no value of it, as a missing temperature).
//!
//! Hubs from before summaries get them by [`backfill`], a page of chunks per transaction, at
//! open; a chunk without one is decoded, so a plot is right before the backfill ends too.

use cyclerd_proto::chunk::{Columns, Opt, OwnedColumns};

use super::StoreError;

/// The series a plot may draw (and a summary keeps), by their sample column names.
pub const SERIES: [&str; 9] = [
    "voltage_v",
    "current_a",
    "temperature_c",
    "ambient_temperature_c",
    "charge_capacity_ah",
    "discharge_capacity_ah",
    "charge_energy_wh",
    "discharge_energy_wh",
    "cycle",
];

const VERSION: u8 = 1;
/// Bytes of an encoded summary.
const LEN: usize = 1 + SERIES.len() * 16;

/// Series `SERIES[index]` of a run of samples: its values, or the values with a NaN where a
/// temperature is missing (into `scratch`), or the cycle numbers as floats.
pub fn series<'a>(c: &Columns<'a>, index: usize, scratch: &'a mut Vec<f64>) -> &'a [f64] {
    let optional = |o: Opt<'a, f64>, scratch: &'a mut Vec<f64>| -> &'a [f64] {
        match o {
            Opt::All(v) => v,
            o => {
                scratch.clear();
                scratch.extend((0..c.len()).map(|i| o.get(i).unwrap_or(f64::NAN)));
                scratch
            }
        }
    };
    match index {
        0 => c.head[2],
        1 => c.head[3],
        2 => optional(c.temperature_c, scratch),
        3 => optional(c.ambient_temperature_c, scratch),
        4..=7 => c.tail[index - 4],
        _ => {
            scratch.clear();
            scratch.extend(c.cycle.iter().map(|&k| f64::from(k)));
            scratch
        }
    }
}

/// Per series of [`SERIES`], the smallest and largest value of a chunk (NaN: none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub min: [f64; SERIES.len()],
    pub max: [f64; SERIES.len()],
}

impl Summary {
    /// The summary of `c`'s samples.
    pub fn of(c: &Columns<'_>) -> Summary {
        let mut s = Summary {
            min: [f64::NAN; SERIES.len()],
            max: [f64::NAN; SERIES.len()],
        };
        let mut scratch = Vec::new();
        for j in 0..SERIES.len() {
            // `min`/`max` of f64 skip NaN, so a missing reading never hides the others.
            for &v in series(c, j, &mut scratch) {
                s.min[j] = s.min[j].min(v);
                s.max[j] = s.max[j].max(v);
            }
        }
        s
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.push(VERSION);
        for (lo, hi) in self.min.iter().zip(&self.max) {
            out.extend_from_slice(&lo.to_le_bytes());
            out.extend_from_slice(&hi.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Summary, String> {
        if b.len() != LEN || b[0] != VERSION {
            return Err(format!(
                "a chunk summary is {LEN} bytes of version {VERSION}; found {} bytes{}",
                b.len(),
                b.first()
                    .map(|v| format!(" of version {v}"))
                    .unwrap_or_default()
            ));
        }
        let f = |i: usize| f64::from_le_bytes(b[1 + 8 * i..9 + 8 * i].try_into().expect("8"));
        let mut s = Summary {
            min: [0.0; SERIES.len()],
            max: [0.0; SERIES.len()],
        };
        for j in 0..SERIES.len() {
            s.min[j] = f(2 * j);
            s.max[j] = f(2 * j + 1);
        }
        Ok(s)
    }
}

/// The time window of a plot, as its chunk query needs it.
#[derive(Debug, Clone, Copy)]
pub struct PlotWindow {
    /// Test time of the window's start and end, in seconds.
    pub from: f64,
    pub to: f64,
    /// Pixel columns per second.
    pub scale: f64,
}

impl PlotWindow {
    /// The pixel column of test time `t` (at least `from`) on a plot `width` columns wide: the
    /// same arithmetic the chunk query does, so that a chunk it finds inside one column is in
    /// that column here too.
    pub fn column(&self, t: f64, width: usize) -> usize {
        (((t - self.from) * self.scale) as usize).min(width - 1)
    }
}

/// A chunk as a plot reads it: its summary, and its data only when the plot must decode it.
#[derive(Debug)]
pub struct PlotChunk {
    pub first_seq: i64,
    pub last_seq: i64,
    /// Test time of its first and last sample.
    pub t_min: f64,
    pub t_max: f64,
    pub summary: Option<Vec<u8>>,
    pub data: Option<Vec<u8>>,
}

/// A [`PlotChunk`] read back ([`PlotChunk::decode`]).
#[derive(Debug)]
pub enum PlotData {
    /// Its samples, when the plot must look at each.
    Samples(OwnedColumns),
    /// Its summary, when it falls inside one pixel column.
    Summary(Summary),
}

/// The statements a backfill runs, each backend's own.
pub(super) trait Backfill {
    /// Where the backfill stands: `None` when it is done (or was never needed).
    fn cursor(&mut self) -> Result<Option<(i64, i64)>, StoreError>;
    /// Up to `limit` chunks `(test_key, first_seq, data)` after `(test_key, first_seq)` =
    /// `after`, in that order.
    fn chunks_after(
        &mut self,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<(i64, i64, Vec<u8>)>, StoreError>;
    /// Stores `summaries` (keeping any a chunk has already) and moves the cursor to `to`, or
    /// ends the backfill when `to` is `None`; in one transaction.
    fn store(
        &mut self,
        summaries: &[(i64, i64, Vec<u8>)],
        to: Option<(i64, i64)>,
    ) -> Result<(), StoreError>;
}

/// Chunks summarised per transaction.
const BACKFILL_PAGE: i64 = 256;

/// Gives every chunk stored before summaries its summary; returns how many it gave.
pub(super) fn backfill(b: &mut dyn Backfill, database: &str) -> Result<u64, StoreError> {
    let mut done = 0u64;
    while let Some(after) = b.cursor()? {
        let page = b.chunks_after(after, BACKFILL_PAGE)?;
        let mut summaries = Vec::with_capacity(page.len());
        for (key, first_seq, data) in &page {
            let columns = cyclerd_proto::chunk::decode(data).map_err(|e| {
                StoreError::Corrupt(format!(
                    "the sample chunk at seq {first_seq} of test key {key}: {e}"
                ))
            })?;
            let summary = Summary::of(&columns.columns()).to_bytes();
            summaries.push((*key, *first_seq, summary));
        }
        let next = (page.len() as i64 == BACKFILL_PAGE)
            .then(|| page.last().map(|(k, s, _)| (*k, *s)))
            .flatten();
        b.store(&summaries, next)?;
        done += summaries.len() as u64;
        if done > 0 && (next.is_none() || done.is_multiple_of(BACKFILL_PAGE as u64 * 64)) {
            tracing::info!(
                database,
                chunks = done,
                "summarised sample chunks for plots"
            );
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cyclerd_proto::chunk::{OptVec, OwnedColumns};

    fn columns() -> OwnedColumns {
        let mut c = OwnedColumns::default();
        for i in 0..5 {
            let x = i as f64;
            for (col, v) in c
                .head
                .iter_mut()
                .zip([x, 1e9 + x, 3.0 + x / 10.0, -1.0 + x])
            {
                col.push(v);
            }
            c.cycle.push(1 + i / 3);
            c.step.push(1);
            for col in c.tail.iter_mut() {
                col.push(x * 0.5);
            }
        }
        c.temperature_c = OptVec::Mixed(vec![None, Some(25.0), None, Some(24.0), None]);
        c
    }

    #[test]
    fn a_summary_holds_each_series_extremes_and_nan_for_a_sensor_the_chunk_lacks() {
        let s = Summary::of(&columns().columns());
        assert_eq!((s.min[0], s.max[0]), (3.0, 3.4));
        assert_eq!((s.min[1], s.max[1]), (-1.0, 3.0));
        assert_eq!((s.min[2], s.max[2]), (24.0, 25.0));
        assert!(s.min[3].is_nan() && s.max[3].is_nan());
        assert_eq!((s.min[8], s.max[8]), (1.0, 2.0));
    }

    #[test]
    fn a_summary_reads_back_bit_exactly_and_bad_bytes_are_refused() {
        let s = Summary::of(&columns().columns());
        let back = Summary::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back.min.map(f64::to_bits), s.min.map(f64::to_bits));
        assert_eq!(back.max.map(f64::to_bits), s.max.map(f64::to_bits));
        let err = Summary::from_bytes(&[1, 2, 3]).unwrap_err();
        assert!(err.contains("found 3 bytes of version 1"), "{err}");
        let mut wrong = s.to_bytes();
        wrong[0] = 9;
        assert!(Summary::from_bytes(&wrong).is_err());
        assert!(Summary::from_bytes(&[]).is_err());
    }
}

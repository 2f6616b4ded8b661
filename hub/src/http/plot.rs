//! A time window of a test reduced to what a plot `width` pixels wide can show: per pixel
//! column the first and last sample's time and each series' min and max, drawn as a vertical
//! stroke, so a 10-million-sample test plots from a few thousand points. A chunk that falls
//! inside one pixel column is taken from its stored summary (`store::summary`) without decoding
//! it; only the chunks that straddle two columns (or the window's edges) are decoded. A window
//! of at most two points per pixel comes back unreduced.

use serde_json::{Value, json};

use crate::store::summary::{self, PlotData, PlotWindow};
use crate::store::{HubStore, StoreError};

pub use crate::store::summary::SERIES;

/// Widest plot served, in pixel columns.
pub const MAX_WIDTH: usize = 8192;

/// What to plot.
#[derive(Debug, Clone)]
pub struct PlotRequest {
    /// The test, already checked readable.
    pub test_id: String,
    /// Window start, test time in seconds.
    pub from: f64,
    /// Window end, test time in seconds; 0 = the test's last sample.
    pub to: f64,
    /// Pixel columns of the plot.
    pub width: usize,
    /// The series, from [`SERIES`].
    pub series: Vec<&'static str>,
}

impl PlotRequest {
    /// Each requested series' index in [`SERIES`] (and in a chunk's summary).
    fn series_index(&self) -> Vec<usize> {
        self.series
            .iter()
            .map(|name| {
                SERIES
                    .iter()
                    .position(|s| s == name)
                    .unwrap_or(SERIES.len() - 1)
            })
            .collect()
    }
}

/// One pixel column's samples, summarised.
#[derive(Clone)]
struct Bucket {
    /// Samples in it.
    n: u64,
    /// Test time of its first and last sample.
    first_t: f64,
    last_t: f64,
    /// Per series, the smallest and largest value (NaN: none yet).
    min: Vec<f64>,
    max: Vec<f64>,
}

impl Bucket {
    /// Adds samples from `first_t` to `last_t` (later than any before) whose series `j` spans
    /// `lo(j)..=hi(j)`.
    fn add(
        &mut self,
        n: u64,
        first_t: f64,
        last_t: f64,
        lo: impl Fn(usize) -> f64,
        hi: impl Fn(usize) -> f64,
    ) {
        if self.n == 0 {
            self.first_t = first_t;
        }
        self.n += n;
        self.last_t = last_t;
        for j in 0..self.min.len() {
            // `min`/`max` of f64 skip NaN, so a missing reading never hides the others.
            self.min[j] = self.min[j].min(lo(j));
            self.max[j] = self.max[j].max(hi(j));
        }
    }
}

/// The plot of `r` as JSON: `t` (seconds) and one array per series, of equal length, with
/// `reduced` saying whether points are per-pixel min/max strokes or the samples themselves.
/// Blocking.
pub fn reduce(store: &HubStore, r: &PlotRequest) -> Result<Value, StoreError> {
    let end = match r.to {
        to if to > 0.0 => Some(to),
        _ => store.last_test_time(&r.test_id)?,
    };
    let Some(to) = end.filter(|to| *to >= r.from) else {
        return Ok(plot_json(r, r.from, r.from, 0, false, &[], &[]));
    };
    let start_seq = match store.first_seq_at(&r.test_id, r.from)? {
        Some(seq) => seq,
        None => return Ok(plot_json(r, r.from, to, 0, false, &[], &[])),
    };
    let span = (to - r.from).max(f64::MIN_POSITIVE);
    let window = PlotWindow {
        from: r.from,
        to,
        scale: r.width as f64 / span,
    };
    let index = r.series_index();
    let k = index.len();
    let empty = Bucket {
        n: 0,
        first_t: 0.0,
        last_t: 0.0,
        min: vec![f64::NAN; k],
        max: vec![f64::NAN; k],
    };
    let mut buckets = vec![empty; r.width];
    // The first samples also kept as they are, in case the window holds few enough; complete
    // only while every chunk so far was decoded.
    let raw_limit = 2 * r.width;
    let mut raw: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut raw_complete = true;
    let mut n = 0u64;
    let mut scratch: Vec<Vec<f64>> = vec![Vec::new(); k];
    store.for_each_plot_chunk(&r.test_id, start_seq, &window, |chunk| {
        if chunk.t_min > to {
            return Ok(false);
        }
        let owned = match chunk.decode(&r.test_id)? {
            PlotData::Samples(owned) => owned,
            PlotData::Summary(s) => {
                // Inside the window and one pixel column: the store sends data otherwise.
                let count = (chunk.last_seq - chunk.first_seq + 1).max(0) as u64;
                n += count;
                raw_complete = false;
                buckets[window.column(chunk.t_min, r.width)].add(
                    count,
                    chunk.t_min,
                    chunk.t_max,
                    |j| s.min[index[j]],
                    |j| s.max[index[j]],
                );
                return Ok(true);
            }
        };
        let c = owned.columns();
        let t = c.head[0];
        let values: Vec<&[f64]> = index
            .iter()
            .zip(scratch.iter_mut())
            .map(|(&j, s)| summary::series(&c, j, s))
            .collect();
        for i in (0..t.len()).filter(|&i| t[i] >= r.from && t[i] <= to) {
            n += 1;
            buckets[window.column(t[i], r.width)].add(
                1,
                t[i],
                t[i],
                |j| values[j][i],
                |j| values[j][i],
            );
            if raw.len() <= raw_limit {
                raw.push((t[i], values.iter().map(|v| v[i]).collect()));
            }
        }
        Ok::<_, StoreError>(true)
    })?;
    if n as usize <= raw_limit {
        if !raw_complete {
            // Few samples, some of them only summarised: read them all.
            return decoded(store, r, to, start_seq);
        }
        let t: Vec<f64> = raw.iter().map(|(t, _)| *t).collect();
        let columns: Vec<Vec<f64>> = (0..k)
            .map(|j| raw.iter().map(|(_, v)| v[j]).collect())
            .collect();
        return Ok(plot_json(r, r.from, to, n, false, &t, &columns));
    }
    let mut t = Vec::with_capacity(2 * r.width);
    let mut columns = vec![Vec::with_capacity(2 * r.width); k];
    for b in buckets.iter().filter(|b| b.n > 0) {
        t.push(b.first_t);
        for (j, c) in columns.iter_mut().enumerate() {
            c.push(b.min[j]);
        }
        if b.n > 1 {
            t.push(b.last_t);
            for (j, c) in columns.iter_mut().enumerate() {
                c.push(b.max[j]);
            }
        }
    }
    Ok(plot_json(r, r.from, to, n, true, &t, &columns))
}

/// Why a read stopped early.
enum Stop {
    /// Past the window's end.
    Past,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}

/// The samples of a window of few samples (at most two per pixel), all decoded.
fn decoded(
    store: &HubStore,
    r: &PlotRequest,
    to: f64,
    start_seq: u64,
) -> Result<Value, StoreError> {
    let index = r.series_index();
    let mut t = Vec::new();
    let mut columns = vec![Vec::new(); index.len()];
    let mut scratch = Vec::new();
    let read = store.for_each_chunk_from(&r.test_id, start_seq, |_, c| -> Result<(), Stop> {
        let ts = c.head[0];
        for (j, col) in index.iter().zip(columns.iter_mut()) {
            let v = summary::series(&c, *j, &mut scratch);
            col.extend(
                (0..ts.len())
                    .filter(|&i| ts[i] >= r.from && ts[i] <= to)
                    .map(|i| v[i]),
            );
        }
        t.extend(ts.iter().copied().filter(|&x| x >= r.from && x <= to));
        if ts.last().is_some_and(|&x| x > to) {
            return Err(Stop::Past);
        }
        Ok(())
    });
    match read {
        Ok(_) | Err(Stop::Past) => {}
        Err(Stop::Store(e)) => return Err(e),
    }
    Ok(plot_json(
        r,
        r.from,
        to,
        t.len() as u64,
        false,
        &t,
        &columns,
    ))
}

fn plot_json(
    r: &PlotRequest,
    from: f64,
    to: f64,
    samples: u64,
    reduced: bool,
    t: &[f64],
    columns: &[Vec<f64>],
) -> Value {
    let mut series = serde_json::Map::new();
    for (name, values) in r.series.iter().zip(columns) {
        series.insert((*name).into(), json!(values));
    }
    for name in r.series.iter().skip(columns.len()) {
        series.insert((*name).into(), json!([]));
    }
    json!({
        "test_id": r.test_id,
        "from": from,
        "to": to,
        "width": r.width,
        "samples": samples,
        "reduced": reduced,
        "t": t,
        "series": series,
    })
}

/// Voltage bin of a dQ/dV curve, in volts.
const DQDV_BIN_V: f64 = 0.005;
/// Most cycles one dQ/dV request draws.
pub const MAX_DQDV_CYCLES: usize = 12;

/// dQ/dV of `cycles` of a test: per cycle, for its charge and its discharge, the capacity that
/// went in or out per 5 mV voltage bin divided by the bin's width (Ah/V; discharge negative),
/// from the samples of the cycle's time span (the cycle table gives it). Blocking.
pub fn dqdv(store: &HubStore, test_id: &str, cycles: &[u32]) -> Result<Value, StoreError> {
    let table = crate::cycles::list(store, test_id)?;
    let mut curves = Vec::new();
    for &c in cycles.iter().take(MAX_DQDV_CYCLES) {
        let Some(row) = table.cycles.iter().find(|r| r.cycle == c) else {
            continue;
        };
        let Some(start) = store.first_seq_at(test_id, row.start_test_time_s)? else {
            continue;
        };
        // Per direction (0 charge, 1 discharge): voltage bin -> capacity moved in it.
        let mut bins = [
            std::collections::BTreeMap::<i64, f64>::new(),
            std::collections::BTreeMap::new(),
        ];
        let mut last: Option<(f64, f64)> = None;
        let read = store.for_each_sample_from(test_id, start, |s| -> Result<(), Stop> {
            if s.test_time_s > row.end_test_time_s {
                return Err(Stop::Past);
            }
            if s.cycle != c {
                return Ok(());
            }
            let (charged, discharged) = (s.charge_capacity_ah, s.discharge_capacity_ah);
            if let Some((c0, d0)) = last {
                let bin = (s.voltage_v / DQDV_BIN_V).floor() as i64;
                if charged > c0 {
                    *bins[0].entry(bin).or_default() += charged - c0;
                }
                if discharged > d0 {
                    *bins[1].entry(bin).or_default() -= discharged - d0;
                }
            }
            last = Some((charged, discharged));
            Ok(())
        });
        match read {
            Ok(_) | Err(Stop::Past) => {}
            Err(Stop::Store(e)) => return Err(e),
        }
        let curve = |b: &std::collections::BTreeMap<i64, f64>| {
            let v: Vec<f64> = b.keys().map(|k| (*k as f64 + 0.5) * DQDV_BIN_V).collect();
            let d: Vec<f64> = b.values().map(|q| q / DQDV_BIN_V).collect();
            json!({ "voltage_v": v, "dqdv_ah_per_v": d })
        };
        curves.push(json!({
            "cycle": c,
            "charge": curve(&bins[0]),
            "discharge": curve(&bins[1]),
        }));
    }
    Ok(json!({ "test_id": test_id, "bin_v": DQDV_BIN_V, "cycles": curves }))
}

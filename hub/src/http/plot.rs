//! A time window of a test reduced to what a plot `width` pixels wide can show: per pixel
//! column the first and last sample's time and each series' min and max, drawn as a vertical
//! stroke, so a 10-million-sample test plots from a few thousand points. The chunk index seeks
//! to the window's start and the read stops past its end, so a zoomed-in window decodes only
//! the chunks it covers; a window of at most two points per pixel comes back unreduced.

use serde_json::{Value, json};

use cyclerd_proto::chunk::{Columns, Opt};

use crate::store::{HubStore, StoreError};

/// Widest plot served, in pixel columns.
pub const MAX_WIDTH: usize = 8192;

/// The series a plot may draw, by their sample column names.
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

/// Series `name` of a run of samples: its values, or the values with a NaN where a
/// temperature is missing (into `scratch`), or the cycle numbers as floats.
fn series<'a>(c: &Columns<'a>, name: &str, scratch: &'a mut Vec<f64>) -> &'a [f64] {
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
    match name {
        "voltage_v" => c.head[2],
        "current_a" => c.head[3],
        "temperature_c" => optional(c.temperature_c, scratch),
        "ambient_temperature_c" => optional(c.ambient_temperature_c, scratch),
        "charge_capacity_ah" => c.tail[0],
        "discharge_capacity_ah" => c.tail[1],
        "charge_energy_wh" => c.tail[2],
        "discharge_energy_wh" => c.tail[3],
        _ => {
            scratch.clear();
            scratch.extend(c.cycle.iter().map(|&k| f64::from(k)));
            scratch
        }
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

/// Why the read stopped early.
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
    let k = r.series.len();
    let empty = Bucket {
        n: 0,
        first_t: 0.0,
        last_t: 0.0,
        min: vec![f64::NAN; k],
        max: vec![f64::NAN; k],
    };
    let mut buckets = vec![empty; r.width];
    // The first samples also kept as they are, in case the window holds few enough.
    let raw_limit = 2 * r.width;
    let mut raw: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut n = 0u64;
    let mut scratch: Vec<Vec<f64>> = vec![Vec::new(); k];
    let read = store.for_each_chunk_from(&r.test_id, start_seq, |_, c| -> Result<(), Stop> {
        let t = c.head[0];
        // The run's samples up to the window's end (test time only grows with seq).
        let end = t.partition_point(|&x| x <= to || x.is_nan());
        let values: Vec<&[f64]> = r
            .series
            .iter()
            .zip(scratch.iter_mut())
            .map(|(name, s)| series(&c, name, s))
            .collect();
        for i in (0..end).filter(|&i| t[i] >= r.from) {
            n += 1;
            let b = &mut buckets
                [((((t[i] - r.from) / span) * r.width as f64) as usize).min(r.width - 1)];
            if b.n == 0 {
                b.first_t = t[i];
            }
            b.n += 1;
            b.last_t = t[i];
            for (j, v) in values.iter().enumerate() {
                // `min`/`max` of f64 skip NaN, so a missing reading never hides the others.
                b.min[j] = b.min[j].min(v[i]);
                b.max[j] = b.max[j].max(v[i]);
            }
            if raw.len() < raw_limit {
                raw.push((t[i], values.iter().map(|v| v[i]).collect()));
            } else if raw.len() == raw_limit {
                raw.push((f64::NAN, Vec::new()));
            }
        }
        if end < t.len() {
            return Err(Stop::Past);
        }
        Ok(())
    });
    match read {
        Ok(_) | Err(Stop::Past) => {}
        Err(Stop::Store(e)) => return Err(e),
    }
    if raw.len() <= raw_limit {
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

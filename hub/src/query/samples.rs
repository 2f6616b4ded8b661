//! Reading a test's samples: the columns a read may select, batches of them read from the
//! store (a time window, pages between token checks), and the CSV `cyclerhub samples` prints.

use std::collections::HashSet;
use std::ops::Range;

use cyclerd_proto::ingest::SampleBatch;
use tokio::sync::mpsc;
use tonic::Status;

use super::status;
use crate::store::{HubStore, StoreError, TestRow};
use cyclerd_proto::chunk;

/// Samples per streamed batch.
const BATCH: usize = 4096;
/// Samples a stream reads between two checks of its token: a revoked token ends a long read
/// within a page (a few tens of milliseconds of reading), not at its end.
pub const PAGE: u64 = 64 * BATCH as u64;

/// The columns a `ReadSamples` may select, by their `SampleBatch` names.
pub const COLUMNS: [&str; 12] = [
    "test_time_s",
    "unix_time_s",
    "voltage_v",
    "current_a",
    "cycle",
    "step",
    "charge_capacity_ah",
    "discharge_capacity_ah",
    "charge_energy_wh",
    "discharge_energy_wh",
    "temperature_c",
    "ambient_temperature_c",
];

/// Refuses a test-time window (`from`, `to`; `to` 0 = to the end) that cannot mean anything:
/// negative, not a number, or ending before it begins.
pub fn check_window(from: f64, to: f64) -> Result<(), String> {
    for (name, v) in [("from", from), ("to", to)] {
        if !v.is_finite() || v < 0.0 {
            return Err(format!(
                "test time {name} {v} is not a time: give seconds >= 0 (a `to` of 0 = the end)"
            ));
        }
    }
    if to > 0.0 && to < from {
        return Err(format!(
            "the test-time window ends ({to} s) before it begins ({from} s); swap them"
        ));
    }
    Ok(())
}

/// Which columns a read fills.
#[derive(Debug, Clone)]
pub struct Columns(HashSet<&'static str>);

impl Columns {
    /// `names` empty: every column. An unknown name is an error listing the known ones.
    pub fn parse(names: &[String]) -> Result<Columns, String> {
        if names.is_empty() {
            return Ok(Columns(COLUMNS.into_iter().collect()));
        }
        names
            .iter()
            .map(|n| {
                COLUMNS
                    .iter()
                    .find(|c| **c == n.as_str())
                    .copied()
                    .ok_or_else(|| {
                        format!(
                            "unknown column {n:?}; the columns are {}",
                            COLUMNS.join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Columns)
    }

    /// Whether column `c` is selected.
    pub fn has(&self, c: &str) -> bool {
        self.0.contains(c)
    }

    /// The selected column names, in [`COLUMNS`] order.
    pub fn names(&self) -> Vec<&'static str> {
        COLUMNS.iter().copied().filter(|c| self.has(c)).collect()
    }

    /// These columns and each sample's plan step (`ReadSamplesRequest.with_plan_step`), which
    /// an export needs and no listing shows.
    pub fn with_plan_step(mut self) -> Columns {
        self.0.insert(PLAN_STEP);
        self
    }
}

/// The plan-step column, sent only on request ([`Columns::with_plan_step`]).
const PLAN_STEP: &str = "plan_step";

/// A sample without a plan step, in a batch whose other samples have one.
pub const NO_PLAN_STEP: u32 = u32::MAX;

/// Appends samples `r` of `c` to `b`, filling only the selected columns (a missing
/// temperature as NaN); batches hold contiguous samples, `len` of them so far.
fn extend(
    b: &mut SampleBatch,
    cols: &Columns,
    c: &chunk::Columns<'_>,
    r: Range<usize>,
    len: usize,
) {
    let reals: [(&str, &mut Vec<f64>, &[f64]); 8] = [
        ("test_time_s", &mut b.test_time_s, c.head[0]),
        ("unix_time_s", &mut b.unix_time_s, c.head[1]),
        ("voltage_v", &mut b.voltage_v, c.head[2]),
        ("current_a", &mut b.current_a, c.head[3]),
        ("charge_capacity_ah", &mut b.charge_capacity_ah, c.tail[0]),
        (
            "discharge_capacity_ah",
            &mut b.discharge_capacity_ah,
            c.tail[1],
        ),
        ("charge_energy_wh", &mut b.charge_energy_wh, c.tail[2]),
        ("discharge_energy_wh", &mut b.discharge_energy_wh, c.tail[3]),
    ];
    for (name, out, values) in reals {
        if cols.has(name) {
            out.extend_from_slice(&values[r.clone()]);
        }
    }
    let optional = [
        ("temperature_c", &mut b.temperature_c, c.temperature_c),
        (
            "ambient_temperature_c",
            &mut b.ambient_temperature_c,
            c.ambient_temperature_c,
        ),
    ];
    for (name, out, values) in optional {
        if cols.has(name) {
            match values {
                chunk::Opt::All(v) => out.extend_from_slice(&v[r.clone()]),
                _ => out.extend(r.clone().map(|i| values.get(i).unwrap_or(f64::NAN))),
            }
        }
    }
    if cols.has("cycle") {
        b.cycle.extend_from_slice(&c.cycle[r.clone()]);
    }
    if cols.has(PLAN_STEP) {
        // One value per sample once any sample of the batch has one.
        let any = r.clone().any(|i| c.plan_step.get(i).is_some());
        if any && b.plan_step.len() < len {
            b.plan_step.resize(len, NO_PLAN_STEP);
        }
        if any || !b.plan_step.is_empty() {
            let steps = r
                .clone()
                .map(|i| c.plan_step.get(i).unwrap_or(NO_PLAN_STEP));
            b.plan_step.extend(steps);
        }
    }
    if cols.has("step") {
        b.step.extend_from_slice(&c.step[r]);
    }
}

/// Samples as CSV: `seq`, then the selected columns in [`COLUMNS`] order; a missing
/// temperature (NaN) is an empty field. `cyclerhub samples` prints through it whether it reads
/// the database or asks a hub, so both print the same.
pub struct CsvWriter<W> {
    /// The selected columns, in output order.
    names: Vec<&'static str>,
    /// Where the rows go.
    out: W,
    /// Whether the header line is out: it waits for the first batch, so that a read refused
    /// before any sample prints nothing.
    started: bool,
}

impl<W: std::io::Write> CsvWriter<W> {
    /// A writer of the columns `cols` to `out`.
    pub fn new(cols: &Columns, out: W) -> CsvWriter<W> {
        CsvWriter {
            names: cols.names(),
            out,
            started: false,
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        if !self.started {
            writeln!(self.out, "seq,{}", self.names.join(","))?;
            self.started = true;
        }
        Ok(())
    }

    /// Writes one line per sample of `b` (as many as its first selected column has).
    pub fn batch(&mut self, b: &SampleBatch) -> std::io::Result<()> {
        self.start()?;
        let n = self.names.first().map_or(0, |c| column(b, c).len());
        for i in 0..n {
            write!(self.out, "{}", b.first_seq.saturating_add(i as u64))?;
            for c in &self.names {
                write!(self.out, ",{}", column(b, c).text(i))?;
            }
            writeln!(self.out)?;
        }
        Ok(())
    }

    /// Pushes out what was written (a live follow shows each batch as it comes).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Ends the output: the header if no batch came, then a flush.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.start()?;
        self.out.flush()
    }
}

/// One column of a [`SampleBatch`].
pub enum Column<'a> {
    /// A measured or accumulated value (NaN where a temperature is missing).
    Real(&'a [f64]),
    /// A protocol counter (cycle, step).
    Count(&'a [u32]),
}

impl Column<'_> {
    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        match self {
            Column::Real(v) => v.len(),
            Column::Count(v) => v.len(),
        }
    }

    /// Value `i` as CSV text: empty where missing (NaN, or a short column from a broken peer).
    fn text(&self, i: usize) -> String {
        match self {
            Column::Real(v) => v
                .get(i)
                .filter(|x| !x.is_nan())
                .map_or_else(String::new, f64::to_string),
            Column::Count(v) => v.get(i).map_or_else(String::new, u32::to_string),
        }
    }
}

/// The column of `b` named `name` (one of [`COLUMNS`]).
pub fn column<'a>(b: &'a SampleBatch, name: &str) -> Column<'a> {
    match name {
        "test_time_s" => Column::Real(&b.test_time_s),
        "unix_time_s" => Column::Real(&b.unix_time_s),
        "voltage_v" => Column::Real(&b.voltage_v),
        "current_a" => Column::Real(&b.current_a),
        "cycle" => Column::Count(&b.cycle),
        "step" => Column::Count(&b.step),
        "charge_capacity_ah" => Column::Real(&b.charge_capacity_ah),
        "discharge_capacity_ah" => Column::Real(&b.discharge_capacity_ah),
        "charge_energy_wh" => Column::Real(&b.charge_energy_wh),
        "discharge_energy_wh" => Column::Real(&b.discharge_energy_wh),
        "temperature_c" => Column::Real(&b.temperature_c),
        _ => Column::Real(&b.ambient_temperature_c),
    }
}

/// Reads the samples of `test_id` with `seq >= from_seq` inside the test-time window, in
/// batches of at most [`BATCH`] (a batch also ends where the window leaves a gap), handing each
/// to `send` (which returns `false` to stop). Stops after `page` samples (whether in the window
/// or not), so that a stream can check its token between pages. Returns the next seq to read
/// and whether a full page stopped it (more may follow). Blocking: call from a blocking thread.
pub fn read_batches(
    store: &HubStore,
    test_id: &str,
    cols: &Columns,
    (from_seq, page): (u64, u64),
    window: (f64, f64),
    mut send: impl FnMut(SampleBatch) -> bool,
) -> Result<(u64, bool), StoreError> {
    let mut batch = SampleBatch {
        test_id: test_id.into(),
        ..Default::default()
    };
    let mut len = 0usize;
    // Test time only grows with seq: the samples before the first chunk that reaches the
    // window's start are all before the window, and are not even decoded.
    let from_seq = match store.first_seq_at(test_id, window.0)? {
        Some(at) if window.0 > 0.0 => from_seq.max(at),
        _ => from_seq,
    };
    let mut next = from_seq;
    let mut expected = None;
    let flush =
        |batch: &mut SampleBatch, len: &mut usize, send: &mut dyn FnMut(SampleBatch) -> bool| {
            if *len == 0 {
                return true;
            }
            *len = 0;
            let full = std::mem::replace(
                batch,
                SampleBatch {
                    test_id: batch.test_id.clone(),
                    ..Default::default()
                },
            );
            send(full)
        };
    // The page ends before this seq, however far the seqs jump.
    let page_end = from_seq.saturating_add(page);
    let read = store.for_each_chunk_from(test_id, from_seq, |first, c| -> Result<(), ReadStop> {
        let t = c.head[0];
        // The part of this run inside the page.
        let in_page = (page_end.saturating_sub(first) as usize).min(c.len());
        let (from, to) = window;
        let mut i = 0;
        let mut past = false;
        while i < in_page {
            // A run of samples inside the window, from `i` on.
            while i < in_page && t[i] < from && !(to > 0.0 && t[i] > to) {
                i += 1;
            }
            let start = i;
            // A NaN time is in every window, as it always was.
            while i < in_page && (t[i] >= from || t[i].is_nan()) && !(to > 0.0 && t[i] > to) {
                i += 1;
            }
            let mut run = start..i;
            while !run.is_empty() {
                let seq = first + run.start as u64;
                if (expected.is_some_and(|e| e != seq) || len == BATCH)
                    && !flush(&mut batch, &mut len, &mut send)
                {
                    return Err(ReadStop::Closed);
                }
                if len == 0 {
                    batch.first_seq = seq;
                }
                let take = run.len().min(BATCH - len);
                extend(&mut batch, cols, &c, run.start..run.start + take, len);
                len += take;
                run.start += take;
                expected = Some(first + run.start as u64);
            }
            if i < in_page && to > 0.0 && t[i] > to {
                // Test time only grows with seq: nothing after this is in the window.
                past = true;
                break;
            }
        }
        next = first + i as u64;
        if past {
            return Err(ReadStop::PastWindow);
        }
        if in_page < c.len() {
            // The next page starts here.
            return Err(ReadStop::PageFull);
        }
        Ok(())
    });
    let more = matches!(read, Err(ReadStop::PageFull));
    match read {
        Ok(_) | Err(ReadStop::PastWindow | ReadStop::PageFull) => {
            flush(&mut batch, &mut len, &mut send);
        }
        Err(ReadStop::Closed) => {}
        Err(ReadStop::Store(e)) => return Err(e),
    }
    Ok((next, more))
}

/// Reads a page of a stream's samples from `from_seq` on a blocking thread into `tx`: the test
/// as it was before the read, the next seq to read and whether more may follow.
pub(super) async fn read_page(
    store: &HubStore,
    test_id: &str,
    cols: &Columns,
    from_seq: u64,
    window: (f64, f64),
    tx: &mpsc::Sender<Result<SampleBatch, Status>>,
) -> Result<(TestRow, u64, bool), Status> {
    let (s, id, c, out) = (store.clone(), test_id.to_string(), cols.clone(), tx.clone());
    tokio::task::spawn_blocking(move || {
        let t = s
            .test(&id)?
            .ok_or_else(|| StoreError::NoSuchTest(id.clone()))?;
        let (next, more) = read_batches(&s, &id, &c, (from_seq, PAGE), window, |b| {
            out.blocking_send(Ok(b)).is_ok()
        })?;
        Ok((t, next, more))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(status)
}

/// Why [`read_batches`] stopped reading before the end of the test.
enum ReadStop {
    /// The receiver went away: reading on would be for nobody.
    Closed,
    /// Past the end of the time window.
    PastWindow,
    /// A page was read; the caller goes on from where it stopped.
    PageFull,
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for ReadStop {
    fn from(e: StoreError) -> Self {
        ReadStop::Store(e)
    }
}

//! Reading a test's samples: the columns a read may select, batches of them read from the
//! store (a time window, pages between token checks), and the CSV `cyclerhub samples` prints.

use std::collections::HashSet;

use cyclerd_proto::ingest::SampleBatch;
use tokio::sync::mpsc;
use tonic::Status;

use super::status;
use crate::store::{HubStore, SampleRow, StoreError, TestRow};

/// Samples per streamed batch.
const BATCH: usize = 4096;
/// Samples a stream reads between two checks of its token: a revoked token ends a long read
/// within a page (about a tenth of a second of reading), not at its end.
pub const PAGE: u64 = 16 * BATCH as u64;

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
}

/// Appends `s` to `b`, filling only the selected columns; batches hold contiguous samples.
fn push(b: &mut SampleBatch, cols: &Columns, s: &SampleRow) {
    let f = |name: &str, col: &mut Vec<f64>, v: f64| {
        if cols.has(name) {
            col.push(v);
        }
    };
    f("test_time_s", &mut b.test_time_s, s.test_time_s);
    f("unix_time_s", &mut b.unix_time_s, s.unix_time_s);
    f("voltage_v", &mut b.voltage_v, s.voltage_v);
    f("current_a", &mut b.current_a, s.current_a);
    f(
        "charge_capacity_ah",
        &mut b.charge_capacity_ah,
        s.charge_capacity_ah,
    );
    f(
        "discharge_capacity_ah",
        &mut b.discharge_capacity_ah,
        s.discharge_capacity_ah,
    );
    f(
        "charge_energy_wh",
        &mut b.charge_energy_wh,
        s.charge_energy_wh,
    );
    f(
        "discharge_energy_wh",
        &mut b.discharge_energy_wh,
        s.discharge_energy_wh,
    );
    f(
        "temperature_c",
        &mut b.temperature_c,
        s.temperature_c.unwrap_or(f64::NAN),
    );
    f(
        "ambient_temperature_c",
        &mut b.ambient_temperature_c,
        s.ambient_temperature_c.unwrap_or(f64::NAN),
    );
    if cols.has("cycle") {
        b.cycle.push(s.cycle);
    }
    if cols.has("step") {
        b.step.push(s.step);
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
    let read = store.for_each_sample_from(test_id, from_seq, |s| -> Result<(), ReadStop> {
        if s.seq.saturating_sub(from_seq) >= page {
            // The next page starts here: past `from_seq` however far the seqs jump.
            next = s.seq;
            return Err(ReadStop::PageFull);
        }
        next = s.seq + 1;
        let (from, to) = window;
        if to > 0.0 && s.test_time_s > to {
            // Test time only grows with seq: nothing after this is in the window.
            return Err(ReadStop::PastWindow);
        }
        if s.test_time_s < from {
            return Ok(());
        }
        if (expected.is_some_and(|e| e != s.seq) || len == BATCH)
            && !flush(&mut batch, &mut len, &mut send)
        {
            return Err(ReadStop::Closed);
        }
        if len == 0 {
            batch.first_seq = s.seq;
        }
        push(&mut batch, cols, s);
        len += 1;
        expected = Some(s.seq + 1);
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

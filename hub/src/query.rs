//! `cyclerd.hub.v1.Query`: find tests, read their samples (columns and a time range of them),
//! and follow a running test live.
//!
//! Reads go through [`HubStore`]'s reader on blocking threads, never the ingest writer. `Tail`
//! sleeps on the server's "something was applied" signal rather than polling the database.
//!
//! When the hub requires tokens, every call needs one (`UNAUTHENTICATED` otherwise) and sees
//! only the token's lab: `ListTests` lists that lab's tests, and a test of another lab is
//! `PERMISSION_DENIED`, exactly like an id the hub does not have (AIP-211: permission is checked
//! before existence, so one lab cannot probe for another's test ids).

use std::collections::HashSet;
use std::pin::Pin;

use cyclerd_proto::hub::query_server::Query;
use cyclerd_proto::hub::{
    Cell, GetMetadataSchemasRequest, GetTestRequest, ListCellsRequest, ListCellsResponse,
    ListTestsRequest, ListTestsResponse, MetadataSchema, MetadataSchemas, ReadSamplesRequest,
    TailRequest, TestDetail, TestEvent, TestSummary,
};
use cyclerd_proto::ingest::SampleBatch;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Caller, Recheck};
use crate::store::{CellRow, HubStore, SampleRow, StoreError, TestRow};

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

/// A test filter, as `ListTests` and `cyclerhub tests` take it; empty fields match anything.
#[derive(Debug, Clone, Default)]
pub struct TestFilter {
    /// The lab whose daemons ran the tests.
    pub lab: String,
    /// The team its metadata names (`team`).
    pub team: String,
    /// The daemon that ran them.
    pub daemon_id: String,
    /// Primary metadata `cell_id`.
    pub cell_id: String,
    /// Primary metadata `chemistry`.
    pub chemistry: String,
    /// "running", "finished", "stopped" or "faulted".
    pub state: String,
    /// Start of the start-time window, Unix seconds (0 = open).
    pub started_after_unix_s: f64,
    /// End of the start-time window, Unix seconds (0 = open).
    pub started_before_unix_s: f64,
}

impl From<ListTestsRequest> for TestFilter {
    fn from(r: ListTestsRequest) -> TestFilter {
        TestFilter {
            lab: r.lab,
            team: r.team,
            daemon_id: r.daemon_id,
            cell_id: r.cell_id,
            chemistry: r.chemistry,
            state: r.state,
            started_after_unix_s: r.started_after_unix_s,
            started_before_unix_s: r.started_before_unix_s,
        }
    }
}

impl TestFilter {
    /// Refuses a start-time window that cannot mean anything: negative, not a number, or ending
    /// before it begins.
    pub fn check(&self) -> Result<(), String> {
        let (after, before) = (self.started_after_unix_s, self.started_before_unix_s);
        for (name, v) in [("started after", after), ("started before", before)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!(
                    "{name} {v} is not a time: give Unix seconds >= 0 (0 = open)"
                ));
            }
        }
        if after > 0.0 && before > 0.0 && before <= after {
            return Err(format!(
                "the start-time window ends ({before}) before it begins ({after}); swap them"
            ));
        }
        Ok(())
    }

    /// Whether `t` passes every filter but the lab (which needs the daemons' labs).
    pub fn matches(&self, t: &TestRow) -> bool {
        let meta = |k: &str| t.metadata.get(k).map_or("", String::as_str);
        (self.daemon_id.is_empty() || t.daemon_id == self.daemon_id)
            && (self.team.is_empty() || t.team.as_deref() == Some(self.team.as_str()))
            && (self.cell_id.is_empty() || meta("cell_id") == self.cell_id)
            && (self.chemistry.is_empty() || meta("chemistry") == self.chemistry)
            && (self.state.is_empty() || t.state() == self.state)
            && (self.started_after_unix_s == 0.0 || t.start_unix_s >= self.started_after_unix_s)
            && (self.started_before_unix_s == 0.0 || t.start_unix_s < self.started_before_unix_s)
    }

    /// The store's tests that match, newest first, each with its lab (empty when none).
    pub fn select(&self, store: &HubStore) -> Result<Vec<(TestRow, String)>, StoreError> {
        let labs = store.daemon_labs()?;
        let mut tests: Vec<(TestRow, String)> = store
            .list_tests()?
            .into_iter()
            .map(|t| {
                let lab = labs.get(&t.daemon_id).cloned().unwrap_or_default();
                (t, lab)
            })
            .filter(|(t, lab)| (self.lab.is_empty() || *lab == self.lab) && self.matches(t))
            .collect();
        tests.sort_by(|a, b| b.0.start_unix_s.total_cmp(&a.0.start_unix_s));
        Ok(tests)
    }
}

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

/// A test as `ListTests` answers it, `lab` being its daemon's.
/// Everything the hub has on test `t` of `lab` but its samples, as `GetTest` and `cyclerhub
/// show` give it. Blocking.
pub fn detail(store: &HubStore, t: &TestRow, lab: &str) -> Result<TestDetail, StoreError> {
    let events = store.events(&t.test_id)?;
    Ok(TestDetail {
        summary: Some(summary(t, lab)),
        metadata: t.metadata.clone().into_iter().collect(),
        reason: t.reason.clone().unwrap_or_default(),
        expected_samples: t.expected_samples.unwrap_or(0),
        events: events
            .into_iter()
            .map(|e| TestEvent {
                unix_time_s: e.unix_time_s,
                test_time_s: e.test_time_s,
                kind: e.kind,
                message: e.message,
                step: e.step,
                cycle: e.cycle,
            })
            .collect(),
        metadata_problems: t.metadata_problems.clone(),
        equipment: store.test_equipment(&t.test_id)?,
    })
}

/// The cells `lab` tested (empty: every lab's), by lab and id: a cell of the lab with a test
/// the lab still has (a daemon moved to another lab takes its tests along). Blocking.
pub fn cells_of(store: &HubStore, lab: &str) -> Result<Vec<CellRow>, StoreError> {
    let cells = store.cells()?;
    if lab.is_empty() {
        return Ok(cells);
    }
    let filter = TestFilter {
        lab: lab.into(),
        ..TestFilter::default()
    };
    let tested: HashSet<String> = filter
        .select(store)?
        .into_iter()
        .filter_map(|(t, _)| t.metadata.get("cell_id").map(|id| id.trim().to_string()))
        .collect();
    Ok(cells
        .into_iter()
        .filter(|c| c.lab == lab && tested.contains(&c.cell_id))
        .collect())
}

/// A cell as `ListCells` sends it.
pub fn cell(c: &CellRow) -> Cell {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    Cell {
        cell_id: c.cell_id.clone(),
        manufacturer: text(&c.manufacturer),
        model: text(&c.model),
        chemistry: text(&c.chemistry),
        form_factor: text(&c.form_factor),
        nominal_capacity_ah: c.nominal_capacity_ah.unwrap_or(0.0),
        nominal_voltage_v: c.nominal_voltage_v.unwrap_or(0.0),
        first_test_unix_s: c.first_test_unix_s,
        lab: c.lab.clone(),
    }
}

pub fn summary(t: &TestRow, lab: &str) -> TestSummary {
    let meta = |k: &str| t.metadata.get(k).cloned().unwrap_or_default();
    TestSummary {
        test_id: t.test_id.clone(),
        daemon_id: t.daemon_id.clone(),
        channel_id: t.channel_id.clone(),
        protocol_name: t.protocol_name.clone(),
        state: t.state().into(),
        start_unix_s: t.start_unix_s,
        end_unix_s: t.end_unix_s.unwrap_or(0.0),
        sample_count: t.sample_count,
        cell_id: meta("cell_id"),
        chemistry: meta("chemistry"),
        lab: lab.into(),
        team: t.team.clone().unwrap_or_default(),
    }
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

    fn has(&self, c: &str) -> bool {
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
enum Column<'a> {
    /// A measured or accumulated value (NaN where a temperature is missing).
    Real(&'a [f64]),
    /// A protocol counter (cycle, step).
    Count(&'a [u32]),
}

impl Column<'_> {
    fn len(&self) -> usize {
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
fn column<'a>(b: &'a SampleBatch, name: &str) -> Column<'a> {
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
async fn read_page(
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

fn status(e: StoreError) -> Status {
    match e {
        StoreError::NoSuchTest(_) => Status::not_found(e.to_string()),
        e => Status::internal(crate::store::error_chain(&e)),
    }
}

type BatchStream = Pin<Box<dyn futures::Stream<Item = Result<SampleBatch, Status>> + Send>>;

/// The service; `applied` changes whenever the ingest side committed something.
#[derive(Clone)]
pub struct QueryService {
    /// Where the tests are (read through its reader connection).
    pub store: HubStore,
    /// Bumped after every ingest commit: wakes the tails.
    pub applied: watch::Receiver<u64>,
    /// Checks each call's token and says whose lab it may read, when the hub requires tokens.
    pub auth: Authenticator,
    /// How long a tail's token holds before it is checked again.
    pub token_recheck: std::time::Duration,
}

/// The test `test_id` and its lab, if `caller` may read it. With a caller, another lab's test
/// and an unknown id get the same `PERMISSION_DENIED`; without (no tokens required), an unknown
/// id is `NOT_FOUND`. Blocking.
fn readable_test(
    store: &HubStore,
    test_id: &str,
    caller: Option<&Caller>,
) -> Result<(TestRow, String), Status> {
    let test = store.test(test_id).map_err(status)?;
    let lab = match &test {
        Some(t) => store
            .daemon_labs()
            .map_err(status)?
            .remove(&t.daemon_id)
            .unwrap_or_default(),
        None => String::new(),
    };
    match (test, caller) {
        (Some(t), Some(c)) if lab == c.lab => Ok((t, lab)),
        (_, Some(c)) => Err(Status::permission_denied(format!(
            "test {test_id:?} is not a test of lab {:?}, the only lab token {:?} may read",
            c.lab, c.name
        ))),
        (Some(t), None) => Ok((t, lab)),
        (None, None) => Err(status(StoreError::NoSuchTest(test_id.into()))),
    }
}

impl QueryService {
    /// Authenticates the call and checks that its caller may read `test_id`; the test and its
    /// lab.
    async fn readable(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        test_id: &str,
    ) -> Result<(TestRow, String), Status> {
        let caller = self.auth.caller(metadata).await?;
        let (store, id) = (self.store.clone(), test_id.to_owned());
        tokio::task::spawn_blocking(move || readable_test(&store, &id, caller.as_ref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_tests(
        &self,
        request: Request<ListTestsRequest>,
    ) -> Result<Response<ListTestsResponse>, Status> {
        let caller = self.auth.caller(request.metadata()).await?;
        let mut filter = TestFilter::from(request.into_inner());
        if let Some(c) = caller {
            if !filter.lab.is_empty() && filter.lab != c.lab {
                return Err(Status::permission_denied(format!(
                    "token {:?} may list only the tests of lab {:?}, not of lab {:?}",
                    c.name, c.lab, filter.lab
                )));
            }
            filter.lab = c.lab;
        }
        filter.check().map_err(Status::invalid_argument)?;
        let store = self.store.clone();
        let tests = tokio::task::spawn_blocking(move || filter.select(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(ListTestsResponse {
            tests: tests.iter().map(|(t, lab)| summary(t, lab)).collect(),
        }))
    }

    async fn get_test(
        &self,
        request: Request<GetTestRequest>,
    ) -> Result<Response<TestDetail>, Status> {
        let (t, lab) = self
            .readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        let store = self.store.clone();
        let detail = tokio::task::spawn_blocking(move || detail(&store, &t, &lab))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(detail))
    }

    type ReadSamplesStream = BatchStream;

    async fn read_samples(
        &self,
        request: Request<ReadSamplesRequest>,
    ) -> Result<Response<Self::ReadSamplesStream>, Status> {
        self.readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        // A long read outlives a revoked token by one page at most.
        let mut recheck = Recheck::new(
            self.auth.clone(),
            request.metadata().clone(),
            self.token_recheck,
        );
        let r = request.into_inner();
        let cols = Columns::parse(&r.columns).map_err(Status::invalid_argument)?;
        let window = (r.from_test_time_s, r.to_test_time_s);
        check_window(window.0, window.1).map_err(Status::invalid_argument)?;
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut from = 0;
            loop {
                if let Err(status) = recheck.still_valid().await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                match read_page(&store, &r.test_id, &cols, from, window, &tx).await {
                    Ok((_, next, true)) if !tx.is_closed() => from = next,
                    Ok(_) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TailStream = BatchStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        self.readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        // A tail may follow a test for days: a revoked token ends it.
        let mut recheck = Recheck::new(
            self.auth.clone(),
            request.metadata().clone(),
            self.token_recheck,
        );
        let r = request.into_inner();
        let store = self.store.clone();
        let mut applied = self.applied.clone();
        let (tx, rx) = mpsc::channel(4);
        let cols = Columns::parse(&[]).map_err(Status::invalid_argument)?;
        tokio::spawn(async move {
            let mut from = r.from_seq;
            loop {
                if let Err(status) = recheck.still_valid().await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                applied.borrow_and_update();
                match read_page(&store, &r.test_id, &cols, from, (0.0, 0.0), &tx).await {
                    Ok((t, next, more)) => {
                        from = next;
                        let ended =
                            t.outcome.is_some() && t.expected_samples.is_some_and(|n| next >= n);
                        if ended || tx.is_closed() {
                            return;
                        }
                        if more {
                            // Catching up: the next page at once (after the token check).
                            continue;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    () = recheck.due() => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_cells(
        &self,
        request: Request<ListCellsRequest>,
    ) -> Result<Response<ListCellsResponse>, Status> {
        let caller = self.auth.caller(request.metadata()).await?;
        let mut lab = request.into_inner().lab;
        if let Some(c) = caller {
            if !lab.is_empty() && lab != c.lab {
                return Err(Status::permission_denied(format!(
                    "token {:?} may list only the cells of lab {:?}, not of lab {lab:?}",
                    c.name, c.lab
                )));
            }
            lab = c.lab;
        }
        let store = self.store.clone();
        let cells = tokio::task::spawn_blocking(move || cells_of(&store, &lab))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(ListCellsResponse {
            cells: cells.iter().map(cell).collect(),
        }))
    }

    async fn get_metadata_schemas(
        &self,
        request: Request<GetMetadataSchemasRequest>,
    ) -> Result<Response<MetadataSchemas>, Status> {
        let caller = match self.auth.caller(request.metadata()).await? {
            Some(c) => Some(c),
            // A hub without tokens ignores one that is not valid, as its uploads do.
            None => self.auth.presented(request.metadata()).await.ok().flatten(),
        };
        let mut lab = request.into_inner().lab;
        match caller {
            Some(c) if !lab.is_empty() && lab != c.lab => {
                return Err(Status::permission_denied(format!(
                    "token {:?} may read only the metadata schemas of lab {:?}, not of lab {lab:?}",
                    c.name, c.lab
                )));
            }
            Some(c) => lab = c.lab,
            None if lab.is_empty() => {
                return Err(Status::invalid_argument(
                    "name the lab whose metadata schemas you want (without a token the hub does \
                     not know the caller's lab; set the daemon's hub.lab)",
                ));
            }
            None => {}
        }
        let store = self.store.clone();
        let name = lab.clone();
        let schemas = tokio::task::spawn_blocking(move || store.metadata_schemas(&name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(MetadataSchemas {
            lab,
            schemas: schemas
                .into_iter()
                .map(|s| MetadataSchema {
                    tier: s.tier,
                    schema_json: s.schema_json,
                    updated_unix_s: s.updated_unix_s,
                })
                .collect(),
        }))
    }
}

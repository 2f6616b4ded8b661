//! `cyclerd.hub.v1.Query`: find tests, read their samples (columns and a time range of them),
//! and follow a running test live.
//!
//! Reads go through [`HubStore`]'s reader on blocking threads, never the ingest writer. `Tail`
//! sleeps on the server's "something was applied" signal rather than polling the database.

use std::collections::HashSet;
use std::pin::Pin;

use cyclerd_proto::hub::query_server::Query;
use cyclerd_proto::hub::{
    GetMetadataSchemasRequest, GetTestRequest, ListTestsRequest, ListTestsResponse, MetadataSchema,
    MetadataSchemas, ReadSamplesRequest, TailRequest, TestDetail, TestEvent, TestSummary,
};
use cyclerd_proto::ingest::SampleBatch;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::store::{HubStore, SampleRow, StoreError, TestRow};

/// Samples per streamed batch.
const BATCH: usize = 4096;

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
    pub lab: String,
    pub team: String,
    pub daemon_id: String,
    pub cell_id: String,
    pub chemistry: String,
    /// "running", "finished", "stopped" or "faulted".
    pub state: String,
    /// Start time window, Unix seconds (0 = open).
    pub started_after_unix_s: f64,
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

/// Writes the samples of `test_id` inside the test-time window as CSV with the selected
/// columns (and `seq` first), for `cyclerhub samples`; returns how many rows.
pub fn write_csv(
    store: &HubStore,
    test_id: &str,
    cols: &Columns,
    window: (f64, f64),
    out: &mut dyn std::io::Write,
) -> Result<u64, crate::export::ExportError> {
    let names: Vec<&str> = COLUMNS.iter().copied().filter(|c| cols.has(c)).collect();
    writeln!(out, "seq,{}", names.join(","))?;
    let mut rows = 0;
    store.for_each_sample(test_id, |s| -> Result<(), crate::export::ExportError> {
        let (from, to) = window;
        if s.test_time_s < from || (to > 0.0 && s.test_time_s > to) {
            return Ok(());
        }
        write!(out, "{}", s.seq)?;
        for c in &names {
            let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
            let v = match *c {
                "test_time_s" => s.test_time_s.to_string(),
                "unix_time_s" => s.unix_time_s.to_string(),
                "voltage_v" => s.voltage_v.to_string(),
                "current_a" => s.current_a.to_string(),
                "cycle" => s.cycle.to_string(),
                "step" => s.step.to_string(),
                "charge_capacity_ah" => s.charge_capacity_ah.to_string(),
                "discharge_capacity_ah" => s.discharge_capacity_ah.to_string(),
                "charge_energy_wh" => s.charge_energy_wh.to_string(),
                "discharge_energy_wh" => s.discharge_energy_wh.to_string(),
                "temperature_c" => opt(s.temperature_c),
                _ => opt(s.ambient_temperature_c),
            };
            write!(out, ",{v}")?;
        }
        writeln!(out)?;
        rows += 1;
        Ok(())
    })?;
    Ok(rows)
}

/// Reads the samples of `test_id` with `seq >= from_seq` inside the test-time window, in
/// batches of at most [`BATCH`] (a batch also ends where the window leaves a gap), handing each
/// to `send`; returns the next seq to read. Blocking: call from a blocking thread.
fn read_batches(
    store: &HubStore,
    test_id: &str,
    cols: &Columns,
    from_seq: u64,
    window: (f64, f64),
    mut send: impl FnMut(SampleBatch) -> bool,
) -> Result<u64, StoreError> {
    let mut batch = SampleBatch {
        test_id: test_id.into(),
        ..Default::default()
    };
    let mut len = 0usize;
    let mut next = from_seq;
    let mut expected = None;
    let mut open = true;
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
    store.for_each_sample_from(test_id, from_seq, |s| -> Result<(), StoreError> {
        if !open {
            return Ok(());
        }
        next = s.seq + 1;
        let (from, to) = window;
        if s.test_time_s < from || (to > 0.0 && s.test_time_s > to) {
            return Ok(());
        }
        if expected.is_some_and(|e| e != s.seq) || len == BATCH {
            open = flush(&mut batch, &mut len, &mut send);
        }
        if len == 0 {
            batch.first_seq = s.seq;
        }
        push(&mut batch, cols, s);
        len += 1;
        expected = Some(s.seq + 1);
        Ok(())
    })?;
    if open {
        flush(&mut batch, &mut len, &mut send);
    }
    Ok(next)
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
    pub store: HubStore,
    pub applied: watch::Receiver<u64>,
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_tests(
        &self,
        request: Request<ListTestsRequest>,
    ) -> Result<Response<ListTestsResponse>, Status> {
        let filter = TestFilter::from(request.into_inner());
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
        let test_id = request.into_inner().test_id;
        let store = self.store.clone();
        let detail = tokio::task::spawn_blocking(move || -> Result<TestDetail, StoreError> {
            let t = store
                .test(&test_id)?
                .ok_or_else(|| StoreError::NoSuchTest(test_id.clone()))?;
            let events = store.events(&test_id)?;
            let equipment = store.test_equipment(&test_id)?;
            let lab = store
                .daemon_labs()?
                .remove(&t.daemon_id)
                .unwrap_or_default();
            Ok(TestDetail {
                summary: Some(summary(&t, &lab)),
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
                equipment,
            })
        })
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
        let r = request.into_inner();
        let cols = Columns::parse(&r.columns).map_err(Status::invalid_argument)?;
        let store = self.store.clone();
        let known = store.clone();
        let id = r.test_id.clone();
        if tokio::task::spawn_blocking(move || known.test(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?
            .is_none()
        {
            return Err(Status::not_found(format!("no test {}", r.test_id)));
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let window = (r.from_test_time_s, r.to_test_time_s);
            let result = read_batches(&store, &r.test_id, &cols, 0, window, |b| {
                tx.blocking_send(Ok(b)).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(status(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TailStream = BatchStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let r = request.into_inner();
        let store = self.store.clone();
        let mut applied = self.applied.clone();
        let (tx, rx) = mpsc::channel(4);
        let cols = Columns::parse(&[]).map_err(Status::invalid_argument)?;
        tokio::spawn(async move {
            let mut from = r.from_seq;
            loop {
                applied.borrow_and_update();
                let (s, id, c, out) = (store.clone(), r.test_id.clone(), cols.clone(), tx.clone());
                let step =
                    tokio::task::spawn_blocking(move || -> Result<(u64, bool), StoreError> {
                        let t = s
                            .test(&id)?
                            .ok_or_else(|| StoreError::NoSuchTest(id.clone()))?;
                        let next = read_batches(&s, &id, &c, from, (0.0, 0.0), |b| {
                            out.blocking_send(Ok(b)).is_ok()
                        })?;
                        let ended =
                            t.outcome.is_some() && t.expected_samples.is_some_and(|n| next >= n);
                        Ok((next, ended))
                    })
                    .await;
                match step {
                    Ok(Ok((next, ended))) => {
                        from = next;
                        if ended || tx.is_closed() {
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_metadata_schemas(
        &self,
        request: Request<GetMetadataSchemasRequest>,
    ) -> Result<Response<MetadataSchemas>, Status> {
        let lab = request.into_inner().lab;
        if lab.is_empty() {
            return Err(Status::invalid_argument(
                "name the lab whose metadata schemas you want (a hub without tokens does not \
                 know the caller's lab)",
            ));
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

//! The hub through its real gRPC surface: a tonic client over loopback, and the store behind it
//! on each backend: a SQLite file in a temporary directory, and a database on a throwaway
//! PostgreSQL cluster ([`PgCluster`]). Scenarios that depend on the storage run on both
//! (`on_sqlite::NAME`, `on_postgres::NAME`). Nothing sleeps: every wait is on a response,
//! bounded by a timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cyclerd_proto::ingest::ingest_client::IngestClient;
use cyclerd_proto::ingest::{
    Entry, Event, Hello, Rejection, SampleBatch, TestEnded, TestRegistered, UploadRequest,
    UploadResponse, entry::Body, upload_request, upload_response,
};
use cyclerhub::HubStore;
use cyclerhub::testing::PgCluster;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Upper bound for any single wait; generous for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Harness

/// The storage a hub under test runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty hub database; it exists as long as this value does.
struct Database {
    /// What `HubStore::connect` (and `cyclerhub --db`) takes: a file path or a URL.
    location: String,
    /// The SQLite file's temporary directory.
    _dir: Option<tempfile::TempDir>,
    /// Keeps the PostgreSQL cluster running.
    _cluster: Option<Arc<PgCluster>>,
}

impl Database {
    fn new(backend: Backend) -> Database {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                Database {
                    location: dir.path().join("hub.sqlite").display().to_string(),
                    _dir: Some(dir),
                    _cluster: None,
                }
            }
            Backend::Postgres => {
                let cluster = PgCluster::shared();
                Database {
                    location: cluster.create_database(),
                    _dir: None,
                    _cluster: Some(cluster),
                }
            }
        }
    }

    /// A new store on the database, as a second process would open it.
    fn connect(&self) -> HubStore {
        HubStore::connect(&self.location).expect("connect to the hub database")
    }
}

/// Runs each scenario (an `async fn(Backend)` of this file) as one test per backend:
/// `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_backends!(
    bdf_export_has_pinned_columns_and_one_row_per_sample,
    bdf_export_adds_the_temperature_columns_only_when_a_sample_has_one,
    bdf_export_of_unknown_test_is_an_error,
);

/// A hub served on 127.0.0.1:0 over a database of its own.
struct Hub {
    /// Where the hub listens (an ephemeral loopback port).
    addr: SocketAddr,
    /// Where its HTTP API and web app listen (another ephemeral loopback port).
    http: SocketAddr,
    /// A clone of the server's store, to check what was applied.
    store: HubStore,
    /// The database's location, to connect to it again.
    db: String,
    /// Completes the shutdown future given to `run`.
    stop: Option<oneshot::Sender<()>>,
    /// The running `server::run`, to see it return.
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The database, when the hub owns it; last, so the stores close before it goes.
    _db: Option<Database>,
}

impl Hub {
    async fn start(backend: Backend) -> Hub {
        Hub::start_with(backend, cyclerhub::server::ServeOptions::default()).await
    }

    /// A hub serving with `options` (e.g. requiring tokens) over a fresh database.
    async fn start_with(backend: Backend, options: cyclerhub::server::ServeOptions) -> Hub {
        let db = Database::new(backend);
        let mut hub = Hub::serve(&db, options).await;
        hub._db = Some(db);
        hub
    }

    async fn start_at(db: &Database) -> Hub {
        Hub::serve(db, cyclerhub::server::ServeOptions::default()).await
    }

    async fn serve(db: &Database, options: cyclerhub::server::ServeOptions) -> Hub {
        let store = db.connect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind HTTP");
        let http_addr = http.local_addr().expect("HTTP local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(cyclerhub::server::serve_all(
            listener,
            Some(cyclerhub::server::HttpListener {
                listener: http,
                tls: None,
            }),
            store.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Hub {
            addr,
            http: http_addr,
            store,
            db: db.location.clone(),
            stop: Some(stop),
            task: Some(task),
            _db: None,
        }
    }

    /// Stops the server and waits for `run` to return.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server returns Ok");
        }
    }

    async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    async fn client(&self) -> IngestClient<tonic::transport::Channel> {
        IngestClient::new(self.channel().await)
    }

    /// Opens an Upload stream and says Hello; returns the stream and the resume point.
    async fn upload(&self, daemon_id: &str, epoch: u64) -> (Upload, u64) {
        let mut up = self.open_stream().await;
        up.send(UploadRequest {
            msg: Some(upload_request::Msg::Hello(Hello {
                daemon_id: daemon_id.into(),
                daemon_secret: secret_of(daemon_id),
                store_epoch: epoch,
                daemon_name: format!("bench of {daemon_id}"),
                lab: String::new(),
            })),
        })
        .await;
        match up.next().await {
            upload_response::Msg::Resume(r) => (up, r.applied_up_to),
            other => panic!("expected ResumePoint, got {other:?}"),
        }
    }

    /// Opens an Upload stream without sending anything.
    async fn open_stream(&self) -> Upload {
        let (tx, rx) = mpsc::channel(1024);
        let responses = self
            .client()
            .await
            .upload(ReceiverStream::new(rx))
            .await
            .expect("upload call")
            .into_inner();
        Upload { tx, responses }
    }
}

/// The client side of one Upload stream, as a daemon's uploader sees it.
struct Upload {
    /// Requests to the hub (Hello, entries); dropping it closes the request side.
    tx: mpsc::Sender<UploadRequest>,
    /// The hub's responses (ResumePoint, Acks, Rejections, then a status).
    responses: Streaming<UploadResponse>,
}

impl Upload {
    async fn send(&self, req: UploadRequest) {
        self.tx.send(req).await.expect("request stream open");
    }

    async fn send_entries(&self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            self.send(UploadRequest {
                msg: Some(upload_request::Msg::Entry(e)),
            })
            .await;
        }
    }

    /// The next response; fails the test on a status, end of stream or timeout.
    async fn next(&mut self) -> upload_response::Msg {
        self.try_next()
            .await
            .expect("stream ok")
            .expect("stream not ended")
    }

    async fn try_next(&mut self) -> Result<Option<upload_response::Msg>, tonic::Status> {
        let r = tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("hub answers in time")?;
        Ok(r.map(|r| r.msg.expect("response has a message")))
    }

    /// Reads responses until an Ack covering `id`; returns the Rejections seen on the way.
    async fn until_ack(&mut self, id: u64) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        loop {
            match self.next().await {
                upload_response::Msg::Ack(a) if a.up_to >= id => return rejections,
                upload_response::Msg::Ack(_) => {}
                upload_response::Msg::Rejection(r) => rejections.push(r),
                upload_response::Msg::Resume(r) => panic!("unexpected second ResumePoint {r:?}"),
            }
        }
    }

    /// Reads responses until the stream ends; returns the status it ended with.
    async fn final_status(&mut self) -> tonic::Status {
        loop {
            match self.try_next().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without a status"),
                Err(status) => return status,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry builders

fn entry(id: u64, body: Body) -> Entry {
    Entry {
        id,
        body: Some(body),
        skipped_before: 0,
    }
}

/// The credential a test's daemon `daemon_id` presents: its own, always the same.
fn secret_of(daemon_id: &str) -> String {
    format!("test-credential-of-{daemon_id}-0123456789abcdef")
}

fn registered(id: u64, test_id: &str) -> Entry {
    entry(
        id,
        Body::TestRegistered(TestRegistered {
            test_id: test_id.into(),
            channel_id: "psb1/1".into(),
            metadata: HashMap::from([
                ("cell_id".into(), "NMC-0042".into()),
                ("operator".into(), "ada".into()),
            ]),
            protocol_name: "C/3 capacity check".into(),
            protocol_source: "steps: [\"Charge at C/3 until 4.2 V\"]".into(),
            plan_json: "{\"steps\":[]}".into(),
            start_unix_s: 1_700_000_000.0,
            equipment: vec![cyclerd_proto::ingest::Equipment {
                name: "psb1".into(),
                family: "ea-psb".into(),
                address: "192.0.2.10:502".into(),
                role: "source".into(),
            }],
        }),
    )
}

/// `n` samples of `test_id` from `first_seq`; with a temperature column when `temp`.
fn batch(test_id: &str, first_seq: u64, n: usize, temp: bool) -> SampleBatch {
    let seqs = (first_seq..first_seq + n as u64).map(|s| s as f64);
    SampleBatch {
        test_id: test_id.into(),
        first_seq,
        test_time_s: seqs.clone().collect(),
        unix_time_s: seqs.clone().map(|s| 1_700_000_000.0 + s).collect(),
        voltage_v: seqs.clone().map(|s| 3.7 + s * 1e-4).collect(),
        current_a: vec![1.25; n],
        cycle: vec![1; n],
        step: vec![2; n],
        charge_capacity_ah: seqs.clone().map(|s| s / 3600.0).collect(),
        discharge_capacity_ah: vec![0.0; n],
        charge_energy_wh: seqs.clone().map(|s| s * 3.7 / 3600.0).collect(),
        discharge_energy_wh: vec![0.0; n],
        temperature_c: if temp { vec![25.5; n] } else { Vec::new() },
        ambient_temperature_c: Vec::new(),
        plan_step: Vec::new(),
    }
}

fn samples(id: u64, test_id: &str, first_seq: u64, n: usize) -> Entry {
    entry(id, Body::Samples(batch(test_id, first_seq, n, false)))
}

fn event(id: u64, test_id: &str, message: &str) -> Entry {
    entry(
        id,
        Body::Event(Event {
            test_id: test_id.into(),
            unix_time_s: 1_700_000_010.0,
            test_time_s: 10.0,
            kind: "step".into(),
            message: message.into(),
            step: 2,
            cycle: 1,
        }),
    )
}

fn ended(id: u64, test_id: &str, sample_count: u64) -> Entry {
    entry(
        id,
        Body::TestEnded(TestEnded {
            test_id: test_id.into(),
            unix_time_s: 1_700_003_600.0,
            outcome: "finished".into(),
            reason: "protocol done".into(),
            sample_count,
        }),
    )
}

/// A whole small test: register, 3 x 100 samples, an event, the end. Ids `base+1..=base+6`.
fn whole_test(base: u64, test_id: &str) -> Vec<Entry> {
    vec![
        registered(base + 1, test_id),
        samples(base + 2, test_id, 0, 100),
        samples(base + 3, test_id, 100, 100),
        event(base + 4, test_id, "step 2: charge"),
        samples(base + 5, test_id, 200, 100),
        ended(base + 6, test_id, 300),
    ]
}

const T1: &str = "0190a0c0-0000-7000-8000-000000000001";
const T2: &str = "0190a0c0-0000-7000-8000-000000000002";
const T3: &str = "0190a0c0-0000-7000-8000-000000000003";

/// PostgreSQL (reached as its superuser at `admin_url`) drops `store`'s two connections after
/// a first batch: the first use of each may find it gone and fail (nothing applied, nothing
/// acked: the daemon re-sends), the next reconnects, and the test ends up whole.
fn survives_dropped_connections(store: &HubStore, admin_url: &str) {
    store
        .apply_batch("daemon-a", 1, &whole_test(0, T1)[..2])
        .unwrap();
    let mut admin = postgres::Client::connect(admin_url, postgres::NoTls).unwrap();
    let dropped = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'cyclerhub' AND datname = current_database()",
            &[],
        )
        .unwrap();
    assert_eq!(dropped, 2, "the writer and the reader");
    let entries = &whole_test(0, T1)[2..];
    let applied = match store.apply_batch("daemon-a", 1, entries) {
        Ok(out) => out,
        Err(_) => store.apply_batch("daemon-a", 1, entries).unwrap(),
    };
    assert_eq!(applied.samples_inserted, 200);
    let count = store
        .sample_count(T1)
        .or_else(|_| store.sample_count(T1))
        .unwrap();
    assert_eq!(count, 300);
}

#[path = "ingest/alerts.rs"]
mod alerts;
#[path = "ingest/auth.rs"]
mod auth;
#[path = "ingest/backends.rs"]
mod backends;
#[path = "ingest/catalog.rs"]
mod catalog;
#[path = "ingest/chunks.rs"]
mod chunks;
#[path = "ingest/conventions.rs"]
mod conventions;
#[path = "ingest/cycles.rs"]
mod cycles;
#[path = "ingest/http.rs"]
mod http;
#[path = "ingest/metrics.rs"]
mod metrics;
#[path = "ingest/pg_tls.rs"]
mod pg_tls;
#[path = "ingest/plots.rs"]
mod plots;
#[path = "ingest/quality.rs"]
mod quality;
#[path = "ingest/query.rs"]
mod query;
// systemd's notify protocol, as `cyclerhub serve` speaks it (unix only).
#[cfg(unix)]
#[path = "ingest/service.rs"]
mod service;
// Sharing between hubs, with real `cyclerhub serve` processes (readiness by systemd's notify
// protocol: unix only).
#[cfg(unix)]
#[path = "ingest/share.rs"]
mod share;
#[path = "ingest/undecodable.rs"]
mod undecodable;
#[path = "ingest/upload.rs"]
mod upload;

// ---------------------------------------------------------------------------------------------
// Export

/// BDF 1.3, pinned here as a reader matches on it.
const BDF_HEADER: &str = "Test Time / s,Voltage / V,Current / A,Unix Time / s,Cycle Count / 1,\
Step Count / 1,Step Type,Step Time / s,Record Index / 1,Power / W,Charging Capacity / Ah,\
Discharging Capacity / Ah,Net Capacity / Ah,Cumulative Capacity / Ah,Charging Energy / Wh,\
Discharging Energy / Wh,Net Energy / Wh,Cumulative Energy / Wh";

async fn bdf_export_has_pinned_columns_and_one_row_per_sample(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;

    let mut csv = Vec::new();
    let rows = cyclerhub::export::write_bdf_csv(&hub.store, T1, &mut csv).unwrap();
    assert_eq!(rows, 300);
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], BDF_HEADER);
    assert_eq!(lines.len(), 1 + 300);
    // seq 0 and seq 3 in order, values as Display prints them, current positive (charging):
    // a constant-current charge (the test's plan names no step, so judged by its current),
    // record index from 1, power = V x I, net and cumulative from charging and discharging.
    assert_eq!(
        lines[1],
        format!(
            "0,3.7,1.25,1700000000,1,2,CC_CHG,0,1,{},0,0,0,0,0,0,0,0",
            3.7 * 1.25
        )
    );
    let (v, ah, wh) = (3.7 + 3.0 * 1e-4, 3.0 / 3600.0, 3.0 * 3.7 / 3600.0);
    assert_eq!(
        lines[4],
        format!(
            "3,{v},1.25,1700000003,1,2,CC_CHG,3,4,{},{ah},0,{ah},{ah},{wh},0,{wh},{wh}",
            v * 1.25
        )
    );
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 18));
    hub.shutdown().await;
}

async fn bdf_export_adds_the_temperature_columns_only_when_a_sample_has_one(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    let mut some_temp = batch(T2, 0, 3, true);
    some_temp.temperature_c[1] = f64::NAN;
    let mut in_chamber = batch(T3, 0, 2, false);
    in_chamber.ambient_temperature_c = vec![45.0, f64::NAN];
    up.send_entries([
        registered(1, T1),
        samples(2, T1, 0, 3),
        registered(3, T2),
        entry(4, Body::Samples(some_temp)),
        registered(5, T3),
        entry(6, Body::Samples(in_chamber)),
    ])
    .await;
    up.until_ack(6).await;

    let mut csv = Vec::new();
    cyclerhub::export::write_bdf_csv(&hub.store, T1, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().next(), Some(BDF_HEADER));

    let mut csv = Vec::new();
    cyclerhub::export::write_bdf_csv(&hub.store, T2, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], format!("{BDF_HEADER},Temperature T1 / degC"));
    assert!(lines[1].ends_with(",25.5"));
    assert!(lines[2].ends_with(',')); // missing reading: empty cell

    let mut csv = Vec::new();
    cyclerhub::export::write_bdf_csv(&hub.store, T3, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], format!("{BDF_HEADER},Ambient Temperature / degC"));
    assert!(lines[1].ends_with(",45"));
    assert!(lines[2].ends_with(','));
    hub.shutdown().await;
}

async fn bdf_export_of_unknown_test_is_an_error(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let err = cyclerhub::export::write_bdf_csv(&hub.store, "nope", Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("no test with id \"nope\""),
        "{err}"
    );
    hub.shutdown().await;
}

// BDF Parquet, Battery Archive, metadata JSON, anonymised export, the binary end to end.
#[path = "ingest/exports.rs"]
mod exports;

// ---------------------------------------------------------------------------------------------
// Hostile input: whatever a peer sends, the store answers without panicking and loses nothing

#[path = "ingest/hostile.rs"]
mod hostile;

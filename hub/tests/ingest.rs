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
    an_oversized_identifier_is_rejected_and_the_entries_behind_it_apply,
    hello_returns_zero_resume_point_for_new_daemon,
    entries_are_acked_after_commit_and_stored_once,
    resent_entries_after_reconnect_are_not_duplicated,
    overlapping_samples_under_new_entry_ids_are_ignored_as_duplicates,
    resume_point_is_kept_per_store_epoch,
    resume_point_survives_a_hub_restart,
    malformed_batch_is_rejected_and_does_not_block_later_entries,
    a_daemon_cannot_write_another_daemons_test,
    non_increasing_entry_ids_end_the_stream_after_applying_what_came_before,
    several_daemons_stream_at_once,
    shutdown_ends_open_streams_and_returns,
    temperature_is_stored_and_missing_readings_are_null,
    bdf_export_has_pinned_columns_and_one_row_per_sample,
    bdf_export_adds_the_temperature_columns_only_when_a_sample_has_one,
    bdf_export_of_unknown_test_is_an_error,
    a_batch_applied_again_is_a_no_op_with_exact_counts,
    text_with_a_nul_character_is_rejected_and_recorded,
);

/// A hub served on 127.0.0.1:0 over a database of its own.
struct Hub {
    /// Where the hub listens (an ephemeral loopback port).
    addr: SocketAddr,
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
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(cyclerhub::server::run_with(
            listener,
            store.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Hub {
            addr,
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
    }
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

#[path = "ingest/auth.rs"]
mod auth;
#[path = "ingest/catalog.rs"]
mod catalog;
#[path = "ingest/pg_tls.rs"]
mod pg_tls;
#[path = "ingest/query.rs"]
mod query;

// ---------------------------------------------------------------------------------------------
// Upload semantics

async fn hello_returns_zero_resume_point_for_new_daemon(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (_up, resume) = hub.upload("daemon-a", 1).await;
    assert_eq!(resume, 0);
    hub.shutdown().await;
}

async fn entries_are_acked_after_commit_and_stored_once(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    let rejections = up.until_ack(6).await;
    assert!(rejections.is_empty(), "{rejections:?}");

    // The ack came after the commit: everything is visible to a fresh reader right now.
    let store = HubStore::connect(&hub.db).expect("reopen");
    assert_eq!(store.applied_up_to("daemon-a", 1).unwrap(), 6);
    assert_eq!(store.sample_count(T1).unwrap(), 300);
    let rows = store.samples(T1).unwrap();
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().enumerate().all(|(i, s)| s.seq == i as u64));
    assert_eq!(rows[150].voltage_v, 3.7 + 150.0 * 1e-4);
    assert_eq!(rows[150].temperature_c, None);

    let events = store.events(T1).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message, "step 2: charge");

    let tests = store.list_tests().unwrap();
    assert_eq!(tests.len(), 1);
    let t = &tests[0];
    assert_eq!((t.test_id.as_str(), t.channel_id.as_str()), (T1, "psb1/1"));
    assert_eq!(t.protocol_name, "C/3 capacity check");
    assert_eq!(t.state(), "finished");
    assert_eq!(t.sample_count, 300);
    assert_eq!(t.expected_samples, Some(300));
    assert_eq!(
        t.metadata.get("cell_id").map(String::as_str),
        Some("NMC-0042")
    );
    hub.shutdown().await;
}

async fn resent_entries_after_reconnect_are_not_duplicated(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 7).await;
    up.send_entries(whole_test(0, T1)[..3].to_vec()).await;
    up.until_ack(3).await;
    drop(up);

    // The daemon lost the ack and re-sends everything, plus what comes next.
    let (mut up, resume) = hub.upload("daemon-a", 7).await;
    assert_eq!(resume, 3);
    up.send_entries(whole_test(0, T1)).await;
    let rejections = up.until_ack(6).await;
    assert!(rejections.is_empty(), "{rejections:?}");

    assert_eq!(hub.store.sample_count(T1).unwrap(), 300);
    assert_eq!(hub.store.samples(T1).unwrap().len(), 300);
    assert_eq!(hub.store.events(T1).unwrap().len(), 1);
    assert_eq!(hub.store.list_tests().unwrap().len(), 1);
    assert_eq!(hub.store.applied_up_to("daemon-a", 7).unwrap(), 6);
    hub.shutdown().await;
}

async fn overlapping_samples_under_new_entry_ids_are_ignored_as_duplicates(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([
        registered(1, T1),
        samples(2, T1, 0, 100),
        // Backfill after a device gap overlapping what is already there.
        samples(3, T1, 50, 100),
    ])
    .await;
    assert!(up.until_ack(3).await.is_empty());
    assert_eq!(hub.store.sample_count(T1).unwrap(), 150);
    let seqs: Vec<u64> = hub
        .store
        .samples(T1)
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs, (0..150).collect::<Vec<_>>());
    hub.shutdown().await;
}

async fn resume_point_is_kept_per_store_epoch(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)[..5].to_vec()).await;
    up.until_ack(5).await;
    drop(up);

    // The store was recreated: ids restart, and nothing is mistaken for a duplicate.
    let (mut up, resume) = hub.upload("daemon-a", 2).await;
    assert_eq!(resume, 0);
    up.send_entries(whole_test(0, T2)[..2].to_vec()).await;
    assert!(up.until_ack(2).await.is_empty());
    drop(up);
    assert_eq!(hub.store.sample_count(T2).unwrap(), 100);

    let (_up, resume) = hub.upload("daemon-a", 1).await;
    assert_eq!(resume, 5);
    let (_up, resume) = hub.upload("daemon-a", 2).await;
    assert_eq!(resume, 2);
    let (_up, resume) = hub.upload("daemon-b", 1).await;
    assert_eq!(resume, 0);
    hub.shutdown().await;
}

async fn resume_point_survives_a_hub_restart(backend: Backend) {
    let db = Database::new(backend);
    let mut hub = Hub::start_at(&db).await;
    let (mut up, _) = hub.upload("daemon-a", 3).await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;
    drop(up);
    hub.shutdown().await;
    drop(hub);

    let mut hub = Hub::start_at(&db).await;
    let (_up, resume) = hub.upload("daemon-a", 3).await;
    assert_eq!(resume, 6);
    assert_eq!(hub.store.sample_count(T1).unwrap(), 300);
    hub.shutdown().await;
}

async fn malformed_batch_is_rejected_and_does_not_block_later_entries(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;

    let mut unequal = batch(T1, 100, 10, false);
    unequal.voltage_v.pop();
    let mut nan = batch(T1, 200, 10, false);
    nan.current_a[3] = f64::NAN;
    let mut wrong_temp = batch(T1, 300, 10, true);
    wrong_temp.temperature_c.truncate(4);

    up.send_entries([
        registered(1, T1),
        samples(2, T1, 0, 100),
        entry(3, Body::Samples(unequal)),
        samples(4, "no-such-test", 0, 10),
        Entry { id: 5, body: None },
        entry(6, Body::Samples(nan)),
        entry(7, Body::Samples(wrong_temp)),
        event(8, "no-such-test", "lost"),
        ended(9, "no-such-test", 0),
        samples(10, T1, 100, 100),
        ended(11, T1, 200),
    ])
    .await;
    let rejections = up.until_ack(11).await;
    let rejected: Vec<u64> = rejections.iter().map(|r| r.entry_id).collect();
    assert_eq!(rejected, [3, 4, 5, 6, 7, 8, 9]);
    assert!(
        rejections[0].reason.contains("unequal lengths"),
        "{:?}",
        rejections[0]
    );
    assert!(
        rejections[1].reason.contains("unknown test"),
        "{:?}",
        rejections[1]
    );
    assert!(
        rejections[2].reason.contains("no body"),
        "{:?}",
        rejections[2]
    );
    assert!(
        rejections[3].reason.contains("non-finite current_a"),
        "{:?}",
        rejections[3]
    );

    // Later entries were applied; the rejected ones left no trace but their record.
    assert_eq!(hub.store.sample_count(T1).unwrap(), 200);
    assert_eq!(hub.store.test(T1).unwrap().unwrap().state(), "finished");
    assert_eq!(hub.store.applied_up_to("daemon-a", 1).unwrap(), 11);
    let recorded = hub.store.rejections().unwrap();
    let recorded_ids: Vec<u64> = recorded.iter().map(|r| r.entry_id).collect();
    assert_eq!(recorded_ids, [3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(recorded[1].test_id.as_deref(), Some("no-such-test"));
    assert_eq!(recorded[2].kind, "none");
    hub.shutdown().await;
}

async fn an_oversized_identifier_is_rejected_and_the_entries_behind_it_apply(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    // Random-looking text: PostgreSQL would compress a repetitive one under its index limit.
    let long: String = (0..4000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2654435761) >> 27) as u8 % 26))
        .collect();
    let mut team = registered(1, T1);
    let mut instrument = registered(2, T2);
    if let (Some(Body::TestRegistered(a)), Some(Body::TestRegistered(b))) =
        (&mut team.body, &mut instrument.body)
    {
        a.metadata.insert("team".into(), long.clone());
        b.equipment[0].name = long;
    }
    up.send_entries([team, instrument, registered(3, T3), samples(4, T3, 0, 10)])
        .await;
    let rejections = up.until_ack(4).await;
    let rejected: Vec<u64> = rejections.iter().map(|r| r.entry_id).collect();
    assert_eq!(rejected, [1, 2], "{rejections:?}");
    assert!(rejections[0].reason.contains("team"), "{rejections:?}");
    assert!(
        rejections[1].reason.contains("equipment name"),
        "{rejections:?}"
    );
    assert_eq!(hub.store.sample_count(T3).unwrap(), 10);
    hub.shutdown().await;
}

async fn a_daemon_cannot_write_another_daemons_test(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut a, _) = hub.upload("daemon-a", 1).await;
    a.send_entries([registered(1, T1)]).await;
    a.until_ack(1).await;

    let (mut b, _) = hub.upload("daemon-b", 1).await;
    b.send_entries([
        registered(1, T1),
        samples(2, T1, 0, 10),
        samples(3, "no-such-test", 0, 10),
    ])
    .await;
    let rejections = b.until_ack(3).await;
    let rejected: Vec<u64> = rejections.iter().map(|r| r.entry_id).collect();
    assert_eq!(rejected, [1, 2, 3]);
    assert_eq!(hub.store.sample_count(T1).unwrap(), 0);
    // The refusals name no other daemon, and another daemon's test reads as an unknown one.
    assert!(
        rejections.iter().all(|r| !r.reason.contains("daemon-a")),
        "{rejections:?}"
    );
    assert_eq!(
        rejections[1].reason.replace(T1, "ID"),
        rejections[2].reason.replace("no-such-test", "ID"),
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn upload_streams_beyond_the_limit_are_refused_as_resource_exhausted_until_one_ends() {
    let options = cyclerhub::server::ServeOptions {
        max_upload_streams: 1,
        ..cyclerhub::server::ServeOptions::default()
    };
    let mut hub = Hub::start_with(Backend::Sqlite, options).await;
    let (first, _) = hub.upload("daemon-a", 1).await;
    let (_tx, rx) = mpsc::channel::<UploadRequest>(1);
    let refused = hub
        .client()
        .await
        .upload(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-upload-streams"),
        "{refused:?}"
    );
    drop(first);
    // The place is given back when the stream ends (its task sees the end a moment later):
    // a new stream is then served, its Hello answered with the resume point.
    let resumed = tokio::time::timeout(WAIT, async {
        loop {
            let (tx, rx) = mpsc::channel(1);
            tx.send(UploadRequest {
                msg: Some(upload_request::Msg::Hello(Hello {
                    daemon_id: "daemon-a".into(),
                    store_epoch: 1,
                    ..Hello::default()
                })),
            })
            .await
            .unwrap();
            match hub.client().await.upload(ReceiverStream::new(rx)).await {
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tokio::task::yield_now().await
                }
                Err(s) => panic!("{s:?}"),
                Ok(responses) => break responses.into_inner().message().await.unwrap(),
            }
        }
    })
    .await
    .expect("a new stream is served once the first ended");
    assert!(
        matches!(
            resumed.and_then(|r| r.msg),
            Some(upload_response::Msg::Resume(_))
        ),
        "the new stream is answered with its resume point"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn first_message_other_than_hello_is_refused() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut up = hub.open_stream().await;
    up.send_entries([registered(1, T1)]).await;
    let status = up.final_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("Hello"), "{status:?}");
    assert!(hub.store.list_tests().unwrap().is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn hello_with_empty_daemon_id_is_refused() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let up = hub.open_stream().await;
    up.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello::default())),
    })
    .await;
    let mut up = up;
    assert_eq!(up.final_status().await.code(), tonic::Code::InvalidArgument);
    hub.shutdown().await;
}

#[tokio::test]
async fn hello_with_a_nul_character_is_refused() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut up = hub.open_stream().await;
    up.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: "daemon\0a".into(),
            store_epoch: 1,
            daemon_name: String::new(),
            lab: String::new(),
        })),
    })
    .await;
    let status = up.final_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("NUL"), "{status:?}");
    hub.shutdown().await;
}

async fn non_increasing_entry_ids_end_the_stream_after_applying_what_came_before(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([
        registered(1, T1),
        samples(2, T1, 0, 10),
        samples(2, T1, 10, 10),
    ])
    .await;
    let status = up.final_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("strictly increasing"),
        "{status:?}"
    );
    assert_eq!(hub.store.applied_up_to("daemon-a", 1).unwrap(), 2);
    assert_eq!(hub.store.sample_count(T1).unwrap(), 10);
    hub.shutdown().await;
}

async fn several_daemons_stream_at_once(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let mut tasks = Vec::new();
    for d in 0..4u64 {
        let (mut up, _) = hub.upload(&format!("daemon-{d}"), 1).await;
        tasks.push(tokio::spawn(async move {
            let test_id = format!("0190a0c0-0000-7000-8000-00000000010{d}");
            let mut entries = vec![registered(1, &test_id)];
            entries.extend((0..50).map(|i| samples(2 + i, &test_id, i * 200, 200)));
            up.send_entries(entries).await;
            assert!(up.until_ack(51).await.is_empty());
            test_id
        }));
    }
    for task in tasks {
        let test_id = task.await.expect("daemon task");
        assert_eq!(hub.store.sample_count(&test_id).unwrap(), 10_000);
    }
    assert_eq!(hub.store.list_tests().unwrap().len(), 4);
    hub.shutdown().await;
}

async fn shutdown_ends_open_streams_and_returns(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([registered(1, T1)]).await;
    up.until_ack(1).await;
    hub.shutdown().await; // would hang if the open stream kept the server alive
    let status = up.final_status().await;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

async fn temperature_is_stored_and_missing_readings_are_null(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    let mut b = batch(T1, 0, 5, true);
    b.temperature_c[2] = f64::NAN;
    up.send_entries([registered(1, T1), entry(2, Body::Samples(b))])
        .await;
    assert!(up.until_ack(2).await.is_empty());
    let temps: Vec<Option<f64>> = hub
        .store
        .samples(T1)
        .unwrap()
        .iter()
        .map(|s| s.temperature_c)
        .collect();
    assert_eq!(
        temps,
        [Some(25.5), Some(25.5), None, Some(25.5), Some(25.5)]
    );
    hub.shutdown().await;
}

async fn a_batch_applied_again_is_a_no_op_with_exact_counts(backend: Backend) {
    let db = Database::new(backend);
    let store = db.connect();
    let entries = whole_test(0, T1);
    let first = store.apply_batch("daemon-a", 1, &entries).unwrap();
    assert_eq!(
        (
            first.up_to,
            first.applied,
            first.duplicates,
            first.samples_inserted
        ),
        (6, 6, 0, 300)
    );

    // The ack was lost: the daemon sends the same batch again.
    let again = store.apply_batch("daemon-a", 1, &entries).unwrap();
    assert_eq!(
        (
            again.up_to,
            again.applied,
            again.duplicates,
            again.samples_inserted
        ),
        (6, 0, 6, 0)
    );
    // A backfill overlapping what is there, under a new entry id: only new rows count.
    let overlap = store
        .apply_batch("daemon-a", 1, &[samples(7, T1, 250, 100)])
        .unwrap();
    assert_eq!((overlap.applied, overlap.samples_inserted), (1, 50));

    assert_eq!(store.sample_count(T1).unwrap(), 350);
    let rows = store.samples(T1).unwrap();
    assert!(rows.iter().enumerate().all(|(i, s)| s.seq == i as u64));
    assert_eq!(rows.len(), 350);
    assert_eq!(rows[349].voltage_v, 3.7 + 349.0 * 1e-4);
    assert_eq!(store.events(T1).unwrap().len(), 1);
    assert_eq!(store.test(T1).unwrap().unwrap().expected_samples, Some(300));
    assert_eq!(store.applied_up_to("daemon-a", 1).unwrap(), 7);
    assert!(store.rejections().unwrap().is_empty());
}

async fn text_with_a_nul_character_is_rejected_and_recorded(backend: Backend) {
    let db = Database::new(backend);
    let store = db.connect();
    let out = store
        .apply_batch(
            "daemon-a",
            1,
            &[
                registered(1, T1),
                registered(2, "nul\0id"),
                event(3, T1, "step\0 2"),
                samples(4, "nul\0id", 0, 3),
                samples(5, T1, 0, 10),
            ],
        )
        .unwrap();
    let rejected: Vec<u64> = out.rejections.iter().map(|r| r.entry_id).collect();
    assert_eq!(rejected, [2, 3, 4]);
    assert!(
        out.rejections.iter().all(|r| r.reason.contains("NUL")),
        "{:?}",
        out.rejections
    );
    assert_eq!(store.sample_count(T1).unwrap(), 10);
    assert!(store.events(T1).unwrap().is_empty());
    let recorded = store.rejections().unwrap();
    assert_eq!(recorded[0].test_id.as_deref(), Some("nul\u{FFFD}id"));
    assert_eq!(recorded.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL beside SQLite

/// A test whose samples exercise the float formatting and the NULL columns of an export.
fn awkward_test(test_id: &str) -> Vec<Entry> {
    let mut a = batch(test_id, 0, 6, true);
    a.voltage_v = vec![0.1 + 0.2, 1e-300, 5e-324, f64::MAX, 4.2, -0.0];
    a.current_a = vec![-1.25, 2.5e-7, -0.0, 1e21, 123_456.789, -3.0];
    a.cycle = vec![0, 1, 2, u32::MAX, 7, 8];
    a.temperature_c = vec![25.5, f64::NAN, -40.125, 25.0, f64::INFINITY, 0.0];
    a.ambient_temperature_c = vec![f64::NAN, 45.0, 44.999_999_999, f64::NAN, 0.5, -10.0];
    let b = batch(test_id, 6, 1000, false);
    vec![
        registered(1, test_id),
        entry(2, Body::Samples(a)),
        entry(3, Body::Samples(b)),
        ended(4, test_id, 1006),
    ]
}

#[test]
fn bdf_export_from_postgresql_equals_the_sqlite_export_byte_for_byte() {
    let export = |backend| {
        let db = Database::new(backend);
        let store = db.connect();
        let out = store.apply_batch("daemon-a", 1, &awkward_test(T1)).unwrap();
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        let mut csv = Vec::new();
        let rows = cyclerhub::export::write_bdf_csv(&store, T1, &mut csv).unwrap();
        assert_eq!(rows, 1006);
        (csv, store.samples(T1).unwrap())
    };
    let (sqlite_csv, sqlite_rows) = export(Backend::Sqlite);
    let (pg_csv, pg_rows) = export(Backend::Postgres);
    assert_eq!(pg_rows, sqlite_rows);
    if pg_csv != sqlite_csv {
        let (pg_csv, sqlite_csv) = (
            String::from_utf8_lossy(&pg_csv),
            String::from_utf8_lossy(&sqlite_csv),
        );
        let first = pg_csv
            .lines()
            .zip(sqlite_csv.lines())
            .position(|(p, s)| p != s);
        let line = |csv: &str| first.and_then(|i| csv.lines().nth(i)).map(str::to_owned);
        panic!(
            "exports differ at line {first:?}: PostgreSQL {:?}, SQLite {:?}",
            line(&pg_csv),
            line(&sqlite_csv)
        );
    }
}

#[cfg(unix)]
#[test]
fn a_new_sqlite_hub_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.sqlite");
    let store = HubStore::open(&path).unwrap();
    store
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    for name in ["hub.sqlite", "hub.sqlite-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn a_sqlite_database_with_a_newer_schema_is_refused() {
    let db = Database::new(Backend::Sqlite);
    drop(db.connect());
    rusqlite::Connection::open(&db.location)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = HubStore::connect(&db.location).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("use a newer cyclerhub"), "{err}");
}

#[test]
fn a_postgresql_database_with_a_newer_schema_is_refused() {
    let db = Database::new(Backend::Postgres);
    drop(db.connect());
    let mut admin = postgres::Client::connect(&db.location, postgres::NoTls).unwrap();
    admin
        .execute("INSERT INTO schema_migrations (version) VALUES (99)", &[])
        .unwrap();
    let err = HubStore::connect(&db.location).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("use a newer cyclerhub"), "{err}");
}

#[test]
fn a_missing_postgresql_database_is_named_with_what_to_do() {
    let cluster = PgCluster::shared();
    let err = HubStore::connect(&cluster.url("no_such_db")).unwrap_err();
    let message = cyclerhub::store::error_chain(&err);
    assert!(message.contains("/no_such_db"), "{message}");
    assert!(message.contains("createdb"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn after_postgresql_drops_the_hubs_connections_the_hub_reconnects() {
    let db = Database::new(Backend::Postgres);
    survives_dropped_connections(&db.connect(), &db.location);
}

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

#[test]
fn cyclerhub_lists_and_exports_a_test_from_postgresql() {
    let db = Database::new(Backend::Postgres);
    db.connect()
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    let cyclerhub = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cyclerhub(&["tests", "--db", &db.location]);
    assert!(listed.contains(T1), "{listed}");
    assert!(listed.contains("finished"), "{listed}");
    let csv = cyclerhub(&["export", "--db", &db.location, T1]);
    assert_eq!(csv.lines().count(), 1 + 300);
    assert_eq!(csv.lines().next(), Some(BDF_HEADER));
}

#[tokio::test]
async fn cyclerhub_serve_ingests_into_postgresql() {
    use std::io::BufRead as _;

    let db = Database::new(Backend::Postgres);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(["serve", "--db", &db.location, "--listen", &addr.to_string()])
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kills the hub however this test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let (serving_tx, serving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("cyclerhub serving") {
                let _ = serving_tx.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || serving.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("cyclerhub serve starts");

    let hub = Hub {
        addr,
        store: db.connect(),
        db: db.location.clone(),
        stop: None,
        task: None,
        _db: None,
    };
    let (mut up, resume) = hub.upload("daemon-a", 1).await;
    assert_eq!(resume, 0);
    up.send_entries(whole_test(0, T1)).await;
    assert!(up.until_ack(6).await.is_empty());
    assert_eq!(hub.store.sample_count(T1).unwrap(), 300);
    assert_eq!(hub.store.test(T1).unwrap().unwrap().state(), "finished");
}

#[test]
fn serving_where_other_machines_reach_it_needs_tls_and_tokens_or_insecure_said_aloud() {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite").display().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--db", db.as_str(), "--listen", "0.0.0.0:0"];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
            .args(args)
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for extra in [&[][..], &["--require-tokens"][..]] {
        let refused = serve(extra).wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{said}");
        assert!(said.contains("refusing to serve on 0.0.0.0:0"), "{said}");
        assert!(said.contains("TLS"), "{said}");
        assert!(said.contains("--insecure"), "{said}");
    }
    assert!(
        !dir.path().join("hub.sqlite").exists(),
        "a refused hub creates no database"
    );
    let mut child = serve(&["--insecure"]);
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut warned = false;
    for line in lines {
        let line = line.unwrap();
        warned |= line.contains("--insecure") && line.contains("without TLS and required tokens");
        if line.contains("cyclerhub serving") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "an insecure hub says so when it starts");
}

// ---------------------------------------------------------------------------------------------
// Health and reflection

#[tokio::test]
async fn health_reports_ingest_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut health = HealthClient::new(hub.channel().await);
    let resp = health
        .check(HealthCheckRequest {
            service: "cyclerd.ingest.v1.Ingest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status(), ServingStatus::Serving);
    hub.shutdown().await;
}

#[tokio::test]
async fn reflection_lists_the_ingest_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(hub.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let resp = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response {resp:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"cyclerd.ingest.v1.Ingest"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    assert!(!names.contains(&"cyclerd.daemon.v1.Control"), "{names:?}");
    hub.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Export

const BDF_HEADER: &str = "Test Time / s,Voltage / V,Current / A,Unix Time / s,Cycle Count / 1,\
Step Count / 1,Charging Capacity / Ah,Discharging Capacity / Ah,Charging Energy / Wh,\
Discharging Energy / Wh";

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
    // seq 0 and seq 3 in order, values as Display prints them, current positive (charging).
    assert_eq!(lines[1], "0,3.7,1.25,1700000000,1,2,0,0,0,0");
    assert_eq!(
        lines[4],
        format!(
            "3,{},1.25,1700000003,1,2,{},0,{},0",
            3.7 + 3.0 * 1e-4,
            3.0 / 3600.0,
            3.0 * 3.7 / 3600.0
        )
    );
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 10));
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
    assert_eq!(
        lines[0],
        format!("{BDF_HEADER},Surface Temperature T1 / degC")
    );
    assert!(lines[1].ends_with(",25.5"));
    assert!(lines[2].ends_with(",0,")); // missing reading: empty cell

    let mut csv = Vec::new();
    cyclerhub::export::write_bdf_csv(&hub.store, T3, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], format!("{BDF_HEADER},Ambient Temperature / degC"));
    assert!(lines[1].ends_with(",45"));
    assert!(lines[2].ends_with(",0,"));
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

mod hostile {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// Entries with arbitrary column lengths, values (NaN, infinities), ids and test ids.
    fn arbitrary_entry() -> impl Strategy<Value = Entry> {
        let value = prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            -5.0f64..5.0
        ];
        let column = proptest::collection::vec(value, 0..6);
        let test_id = prop_oneof![Just(T1.to_string()), Just(T2.to_string()), "\\PC{0,8}"];
        let samples = (
            test_id.clone(),
            any::<u64>(),
            column.clone(),
            column.clone(),
            column,
        )
            .prop_map(|(test_id, first_seq, v, i, t)| {
                let n = v.len();
                let mut b = batch(&test_id, first_seq % 1000, n, false);
                b.voltage_v = v;
                b.current_a = i;
                b.temperature_c = t;
                Body::Samples(b)
            });
        let body = prop_oneof![
            samples,
            test_id
                .clone()
                .prop_map(|t| registered(0, &t).body.unwrap()),
            test_id
                .clone()
                .prop_map(|t| event(0, &t, "x").body.unwrap()),
            (test_id, any::<u64>()).prop_map(|(t, n)| ended(0, &t, n).body.unwrap()),
        ];
        (1u64..40, proptest::option::weighted(0.9, body)).prop_map(|(id, body)| Entry { id, body })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_entries_are_applied_or_rejected_and_never_lose_stored_samples(
            entries in proptest::collection::vec(arbitrary_entry(), 0..12)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
            store.apply_batch("d", 1, &whole_test(100, T1)).unwrap();
            let before = store.samples(T1).unwrap();
            for chunk in entries.chunks(3) {
                // Ids need not increase here: the store must cope with anything it is handed.
                let _ = store.apply_batch("d", 1, chunk);
            }
            let after = store.samples(T1).unwrap();
            prop_assert!(after.len() >= before.len());
            prop_assert_eq!(&after[..before.len()], &before[..]);
        }

        #[test]
        fn arbitrary_bytes_never_decode_into_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(entry) = Entry::decode(&bytes[..]) {
                let dir = tempfile::tempdir().unwrap();
                let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
                let _ = store.apply_batch("d", 1, &[entry]);
            }
        }
    }

    /// Differential: whatever a peer sends, both backends answer and store the same. A runner
    /// rather than `proptest!`, so that one PostgreSQL database serves every case, emptied
    /// before each.
    #[test]
    fn arbitrary_entries_have_the_same_effect_on_postgresql_as_on_sqlite() {
        let db = Database::new(Backend::Postgres);
        let pg = db.connect();
        // In a RefCell: the runner takes an `Fn`.
        let admin = std::cell::RefCell::new(
            postgres::Client::connect(&db.location, postgres::NoTls).unwrap(),
        );
        let config = ProptestConfig {
            cases: 64,
            ..ProptestConfig::default()
        };
        let entries = proptest::collection::vec(arbitrary_entry(), 0..12);
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(&entries, |entries| {
            let sqlite = Database::new(Backend::Sqlite);
            let sqlite = sqlite.connect();
            admin
                .borrow_mut()
                .batch_execute(
                    "TRUNCATE daemons, tests, samples, events, rejections RESTART IDENTITY",
                )
                .unwrap();
            for store in [&sqlite, &pg] {
                store.apply_batch("d", 1, &whole_test(100, T1)).unwrap();
            }
            for chunk in entries.chunks(3) {
                match (
                    sqlite.apply_batch("d", 1, chunk),
                    pg.apply_batch("d", 1, chunk),
                ) {
                    (Ok(s), Ok(p)) => prop_assert_eq!(s, p),
                    (Err(_), Err(_)) => {}
                    (s, p) => prop_assert!(false, "SQLite {:?}, PostgreSQL {:?}", s, p),
                }
            }
            let tests = sqlite.list_tests().unwrap();
            prop_assert_eq!(&tests, &pg.list_tests().unwrap());
            for test in &tests {
                let id = &test.test_id;
                prop_assert_eq!(sqlite.samples(id).unwrap(), pg.samples(id).unwrap());
                prop_assert_eq!(sqlite.events(id).unwrap(), pg.events(id).unwrap());
            }
            prop_assert_eq!(sqlite.rejections().unwrap(), pg.rejections().unwrap());
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

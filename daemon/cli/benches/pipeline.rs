//! Pipeline benchmark (run in release: `cargo bench -p cyclerd-cli --bench pipeline`).
//!
//! Prints, each against a baseline measured in the same run:
//! 1. outbox ingest samples/s next to a bare rusqlite insert loop (row per sample) and a bare
//!    packed-blob loop: the ratios say how close the outbox gets to the raw SQLite ceiling;
//! 2. the drain after an outage: a filled outbox, then the hub comes back; entries/s and
//!    samples/s from the outbox to the hub's commit, next to the ingest rate of step 1;
//! 3. end to end, channel runners stepping simulated PSBs over Modbus TCP -> hub commit.

use cyclerd::outbox::Outbox;
use cyclerd::proto::ingest::{SampleBatch, TestRegistered, entry::Body};
use cyclerd::uploader::{self, UploaderConfig, UploaderStatus};
use rusqlite::{Connection, params};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SAMPLES: usize = 2_000_000;
const BATCH: usize = 2048;

fn batch(test_id: &str, first_seq: u64, n: usize) -> SampleBatch {
    let f = |k: f64| (0..n).map(|i| k + i as f64 * 1e-3).collect::<Vec<f64>>();
    SampleBatch {
        test_id: test_id.into(),
        first_seq,
        test_time_s: f(0.0),
        unix_time_s: f(1.7e9),
        voltage_v: f(3.7),
        current_a: f(1.25),
        cycle: vec![1; n],
        step: vec![2; n],
        charge_capacity_ah: f(0.5),
        discharge_capacity_ah: f(0.0),
        charge_energy_wh: f(1.8),
        discharge_energy_wh: f(0.0),
        temperature_c: Vec::new(),
        ambient_temperature_c: Vec::new(),
        plan_step: Vec::new(),
    }
}

fn pragmas(conn: &Connection) {
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .unwrap();
}

/// Bare rusqlite, one row per sample, one transaction per batch: the row-per-sample ceiling.
fn bare_rows(dir: &std::path::Path) -> f64 {
    let conn = Connection::open(dir.join("bare-rows.sqlite")).unwrap();
    pragmas(&conn);
    conn.execute_batch(
        "CREATE TABLE s (seq INTEGER PRIMARY KEY, t REAL, u REAL, v REAL, i REAL, c INTEGER,
         st INTEGER, qc REAL, qd REAL, ec REAL, ed REAL)",
    )
    .unwrap();
    let start = Instant::now();
    let mut conn = conn;
    for b in 0..SAMPLES / BATCH {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO s VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)")
                .unwrap();
            for i in 0..BATCH {
                let x = i as f64;
                stmt.execute(params![
                    (b * BATCH + i) as i64,
                    x,
                    x,
                    3.7,
                    1.2,
                    1,
                    2,
                    x,
                    0.0,
                    x,
                    0.0
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// Bare rusqlite, one blob per batch of the same size as an encoded outbox entry, 64 blobs per
/// transaction (the outbox's group commit folds many entries into one commit too): the packed
/// ceiling, without encoding or checksums.
fn bare_packed(dir: &std::path::Path) -> f64 {
    use prost::Message;
    let mut conn = Connection::open(dir.join("bare-packed.sqlite")).unwrap();
    pragmas(&conn);
    conn.execute_batch("CREATE TABLE b (id INTEGER PRIMARY KEY, body BLOB)")
        .unwrap();
    let blob = batch("bench", 0, BATCH).encode_to_vec();
    let start = Instant::now();
    for chunk in 0..(SAMPLES / BATCH).div_ceil(64) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO b (body) VALUES (?1)")
                .unwrap();
            for _ in chunk * 64..((chunk + 1) * 64).min(SAMPLES / BATCH) {
                stmt.execute([&blob]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

async fn outbox_ingest(dir: &std::path::Path) -> (f64, Outbox) {
    let outbox = Outbox::open(&dir.join("outbox.sqlite")).unwrap();
    let template = batch("bench", 0, BATCH);
    let start = Instant::now();
    outbox
        .append(Body::TestRegistered(TestRegistered {
            test_id: "bench".into(),
            channel_id: "bench/1".into(),
            protocol_name: "bench".into(),
            ..Default::default()
        }))
        .unwrap();
    for b in 0..SAMPLES / BATCH {
        // Building the batch is part of the cost a runner pays.
        let mut body = template.clone();
        body.first_seq = (b * BATCH) as u64;
        outbox.append(Body::Samples(body)).unwrap();
    }
    outbox.flush().await.unwrap();
    (SAMPLES as f64 / start.elapsed().as_secs_f64(), outbox)
}

/// The hub's apply path called directly (no gRPC), the same entries in 256-entry transactions.
fn hub_apply(dir: &std::path::Path) -> f64 {
    use cyclerd::proto::ingest::Entry;
    let store = cyclerhub::HubStore::open(dir.join("hub-direct.sqlite")).unwrap();
    let register = Entry {
        id: 1,
        body: Some(Body::TestRegistered(TestRegistered {
            test_id: "bench".into(),
            channel_id: "bench/1".into(),
            protocol_name: "bench".into(),
            ..Default::default()
        })),
        skipped_before: 0,
    };
    store.apply_batch("bench", 1, &[register]).unwrap();
    let entries: Vec<Entry> = (0..SAMPLES / BATCH)
        .map(|b| Entry {
            id: 2 + b as u64,
            body: Some(Body::Samples(batch("bench", (b * BATCH) as u64, BATCH))),
            skipped_before: 0,
        })
        .collect();
    let start = Instant::now();
    for chunk in entries.chunks(256) {
        store.apply_batch("bench", 1, chunk).unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

async fn uploader_drain(dir: &std::path::Path, outbox: Outbox) -> f64 {
    // The hub must know the test before it accepts its samples.
    let hub_store = cyclerhub::HubStore::open(dir.join("hub.sqlite")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_hub, hub_stopped) = tokio::sync::oneshot::channel::<()>();
    let hub = tokio::spawn(cyclerhub::server::run(listener, hub_store, async {
        let _ = hub_stopped.await;
    }));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(uploader::run(
        UploaderConfig {
            hub_addresses: vec![format!("http://{addr}")],
            hub_ca_pem: None,
            hub_token: None,
            daemon_name: "bench".into(),
            hub_lab: None,
            window: 256,
        },
        outbox.clone(),
        Arc::new(UploaderStatus::default()),
        stop_rx,
    ));
    let caught_up = outbox
        .caught_up(tokio::time::Instant::now() + Duration::from_secs(600))
        .await;
    let rate = SAMPLES as f64 / start.elapsed().as_secs_f64();
    assert!(caught_up, "the uploader drained the outbox");
    let _ = stop.send(true);
    let _ = task.await;
    let _ = stop_hub.send(());
    let _ = hub.await;
    rate
}

/// Channels stepping simulated PSBs through three CCCV cycles on a very fast clock; the rate
/// counts from the start until the hub acknowledged the last sample.
async fn end_to_end(channels: usize) -> (f64, u64) {
    let protocol = include_str!("../../../deploy/protocols/cccv-3-cycles.yaml");
    let lab = cyclerd_cli::lab::SimLab::start(channels, 2.5, 20_000.0, None)
        .await
        .unwrap();
    let start = Instant::now();
    lab.start_everywhere(protocol, "cccv-3-cycles.yaml")
        .await
        .unwrap();
    lab.daemon.wait_all_done().await;
    let (summary, _, _tmp) = lab.stop(Duration::from_secs(60)).await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(summary.lost(), 0);
    (
        summary.samples_acknowledged as f64 / elapsed,
        summary.samples_acquired,
    )
}

/// Polls per second one channel achieves on a simulator of `device` with its poll interval set
/// to 10 ms (100 Hz), at real speed for `wall` seconds; a protocol without recording rules
/// stores every poll, so the samples acquired count the polls.
async fn poll_rate(device: cyclerd_cli::lab::DemoDevice, wall: Duration) -> f64 {
    let protocol = "protocol: poll rate\nversion: 1\nsafety:\n  voltage: [2.5 V, 4.25 V]\n  current: 5 A\nsteps:\n  - Rest for 1 hour\n";
    let lab = cyclerd_cli::lab::SimLab::start_with(cyclerd_cli::lab::LabOptions {
        channels: 1,
        speed: 1.0,
        device,
        poll_interval_ms: Some(10),
        ..cyclerd_cli::lab::LabOptions::default()
    })
    .await
    .unwrap();
    lab.start_everywhere(protocol, "poll-rate.yaml")
        .await
        .unwrap();
    let start = Instant::now();
    tokio::time::sleep(wall).await;
    let (summary, _, _tmp) = lab.stop(Duration::from_secs(30)).await.unwrap();
    summary.samples_acquired as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists bench targets; nothing to list here.
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows = bare_rows(dir.path());
    let packed = bare_packed(dir.path());
    let (ingest, outbox) = rt.block_on(outbox_ingest(dir.path()));
    println!(
        "baseline  bare rusqlite, row per sample     {:>12.0} samples/s",
        rows
    );
    println!(
        "baseline  bare rusqlite, packed blobs       {:>12.0} samples/s",
        packed
    );
    println!(
        "outbox    ingest (encode + CRC + commit)    {:>12.0} samples/s   ratio {:.2}x row-per-sample, {:.2} of packed",
        ingest,
        ingest / rows,
        ingest / packed
    );
    let direct = hub_apply(dir.path());
    println!(
        "hub       apply without gRPC                {:>12.0} samples/s   ratio {:.2} of the row-per-sample ceiling",
        direct,
        direct / rows
    );
    let drain = rt.block_on(uploader_drain(dir.path(), outbox));
    println!(
        "drain     after an outage, outbox -> hub    {:>12.0} samples/s   {:.0} entries/s; {:.2} of the ingest rate, {:.2} of the row-per-sample ceiling",
        drain,
        drain / BATCH as f64,
        drain / ingest,
        drain / rows
    );
    let (e2e, acquired) = rt.block_on(end_to_end(4));
    println!(
        "e2e       4 PSB sims -> runner -> hub       {:>12.0} samples/s   ({acquired} samples, every one acknowledged; one Modbus round trip per sample)",
        e2e
    );
    for device in [
        cyclerd_cli::lab::DemoDevice::EaPsb,
        cyclerd_cli::lab::DemoDevice::Scpi,
        cyclerd_cli::lab::DemoDevice::Riden,
    ] {
        let hz = rt.block_on(poll_rate(device, Duration::from_secs(3)));
        println!(
            "poll      one channel at 100 Hz, {:<44} {:>6.1} polls/s   ratio {:.2} of the configured rate",
            device.label(),
            hz,
            hz / 100.0
        );
    }
}

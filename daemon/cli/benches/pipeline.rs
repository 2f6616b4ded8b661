//! Pipeline benchmark (run in release: `cargo bench -p cyclerd-cli --bench pipeline`).
//!
//! Every line is the median of [`ROUNDS`] repetitions with min and max, next to a baseline
//! measured in the same run doing the same work:
//! 1. outbox ingest samples/s of demo-like samples ([`cyclerd_proto::demo_data`], as the hub's
//!    benches use) next to a bare rusqlite loop committing the same encoded blobs with the same
//!    entries per transaction (the outbox's own average, read from its stats), a producer
//!    thread handing them to a writer thread as the outbox does; the encoding's cost per
//!    sample next to the protobuf the outbox stored before; the outbox's bytes per sample on
//!    disk, for full batches and for a live channel's small ones;
//! 2. the drain after an outage, outbox -> gRPC -> hub commit, next to the hub's apply of the
//!    same entries without gRPC;
//! 3. end to end, channel runners stepping simulated PSBs over Modbus TCP -> hub commit, on a
//!    fast clock, long enough to be steady (every sample acknowledged);
//! 4. live: 64 PSB channels at 10 Hz in real time, every poll stored: the age of each reading
//!    when a Watch client (gRPC over loopback) gets it, and of each sample when a hub Tail
//!    client gets it (after the hub's commit), p50 and p99 per window.

use cyclerd::outbox::Outbox;
use cyclerd::proto::ingest::{SampleBatch, TestRegistered, entry::Body};
use cyclerd::uploader::{self, UploaderConfig, UploaderStatus};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[path = "pipeline/outbox.rs"]
mod outbox_part;
#[path = "../../../scripts/bench_table.rs"]
mod table;
use outbox_part::{
    Held, OUTAGE_RATIO, bare_packed, bare_rows, demo_batches, encode_cost, live_entries_size,
    outbox_ingest,
};
use table::{Goal, Row, Stats, report};

const SAMPLES: usize = 2_000_000;
const BATCH: usize = 2048;
/// Repetitions of every measurement.
const ROUNDS: usize = 3;

/// A test id as the daemon makes them (UUIDv7), stored with every batch.
const TEST_ID: &str = "0190f1a2-7b3c-7def-8123-456789abcdef";
/// Samples in a live channel's entry: 10 Hz, flushed every 250 ms.
const LIVE_BATCH: usize = 3;

/// The hub's apply path called directly (no gRPC), the same entries in 256-entry transactions.
fn hub_apply(dir: &std::path::Path, round: usize, batches: &[SampleBatch]) -> f64 {
    use cyclerd::proto::ingest::Entry;
    let store = cyclerhub::HubStore::open(dir.join(format!("hub-direct-{round}.sqlite"))).unwrap();
    let register = Entry {
        id: 1,
        body: Some(Body::TestRegistered(TestRegistered {
            test_id: TEST_ID.into(),
            channel_id: "bench/1".into(),
            protocol_name: "bench".into(),
            ..Default::default()
        })),
        skipped_before: 0,
    };
    store.apply_batch("bench", 1, &[register]).unwrap();
    let entries: Vec<Entry> = batches
        .iter()
        .enumerate()
        .map(|(b, batch)| Entry {
            id: 2 + b as u64,
            body: Some(Body::Samples(batch.clone())),
            skipped_before: 0,
        })
        .collect();
    let start = Instant::now();
    for chunk in entries.chunks(256) {
        store.apply_batch("bench", 1, chunk).unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

async fn uploader_drain(dir: &std::path::Path, round: usize, outbox: Outbox) -> f64 {
    // The hub must know the test before it accepts its samples.
    let hub_store = cyclerhub::HubStore::open(dir.join(format!("hub-{round}.sqlite"))).unwrap();
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

/// Ages (ms) of what a Watch client and a hub Tail client receive, per window.
struct Live {
    watch_p50: Vec<f64>,
    watch_p99: Vec<f64>,
    tail_p50: Vec<f64>,
    tail_p99: Vec<f64>,
    channels: usize,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

/// `channels` PSB channels polled at 10 Hz in real time with every poll stored; after a
/// warm-up, [`ROUNDS`] windows of `window` each.
async fn live_latency(channels: usize, window: Duration) -> Live {
    use cyclerd::proto::control::WatchRequest;
    use cyclerd::proto::control::control_client::ControlClient;
    use cyclerd::proto::hub::TailRequest;
    use cyclerd::proto::hub::query_client::QueryClient;
    let protocol = "protocol: Slow charge, every poll stored\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nrecord: {every: 0.1 s}\nsteps:\n  - \"Charge at C/20 until 4.1 V\"\n";
    let lab = cyclerd_cli::lab::SimLab::start_with(cyclerd_cli::lab::LabOptions {
        channels,
        capacity_ah: 2.5,
        speed: 1.0,
        poll_interval_ms: Some(100),
        ..cyclerd_cli::lab::LabOptions::default()
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = listener.local_addr().unwrap();
    let (stop_control, control_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cyclerd::control::serve(
        lab.daemon.clone(),
        listener,
        async {
            let _ = control_stopped.await;
        },
    ));
    eprintln!("live: {channels} channels started; starting their tests");
    let ids = lab.start_everywhere(protocol, "slow.yaml").await.unwrap();
    eprintln!("live: tests started; watching");

    // Ages land in the current window's vectors; the main task swaps them out.
    type Ages = Arc<std::sync::Mutex<Vec<f64>>>;
    let watch_ages: Ages = Arc::default();
    let tail_ages: Ages = Arc::default();
    let mut watch = ControlClient::connect(format!("http://{control}"))
        .await
        .unwrap()
        .watch(WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let ages = Arc::clone(&watch_ages);
    tokio::spawn(async move {
        let mut seen = std::collections::HashMap::new();
        while let Ok(Some(s)) = watch.message().await {
            let now = unix_now();
            // A reading counts once, when it first arrives.
            if s.state == "running"
                && s.reading_unix_s > 0.0
                && seen.insert(s.channel_id.clone(), s.reading_unix_s) != Some(s.reading_unix_s)
            {
                ages.lock().unwrap().push((now - s.reading_unix_s) * 1e3);
            }
        }
    });
    let hub = QueryClient::connect(format!("http://{}", lab.hub_addr))
        .await
        .unwrap();
    for id in ids {
        let mut hub = hub.clone();
        let ages = Arc::clone(&tail_ages);
        tokio::spawn(async move {
            // The hub knows the test once the daemon uploaded its registration.
            let mut tail = loop {
                let request = TailRequest {
                    test_id: id.clone(),
                    from_seq: 0,
                };
                match hub.tail(request).await {
                    Ok(tail) => break tail.into_inner(),
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => panic!("tail: {s}"),
                }
            };
            while let Ok(Some(b)) = tail.message().await {
                let now = unix_now();
                let mut ages = ages.lock().unwrap();
                ages.extend(b.unix_time_s.iter().map(|t| (now - t) * 1e3));
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut live = Live {
        watch_p50: Vec::new(),
        watch_p99: Vec::new(),
        tail_p50: Vec::new(),
        tail_p99: Vec::new(),
        channels,
    };
    watch_ages.lock().unwrap().clear();
    tail_ages.lock().unwrap().clear();
    for _ in 0..ROUNDS {
        tokio::time::sleep(window).await;
        let mut w = std::mem::take(&mut *watch_ages.lock().unwrap());
        let mut t = std::mem::take(&mut *tail_ages.lock().unwrap());
        assert!(!w.is_empty() && !t.is_empty(), "no live data in a window");
        live.watch_p50.push(quantile(&mut w, 0.5));
        live.watch_p99.push(quantile(&mut w, 0.99));
        live.tail_p50.push(quantile(&mut t, 0.5));
        live.tail_p99.push(quantile(&mut t, 0.99));
    }
    eprintln!("live: measured; stopping the lab");
    let _ = stop_control.send(());
    // Bounded: the figures are taken; a slow stop must not hold the table back.
    match tokio::time::timeout(Duration::from_secs(60), lab.stop(Duration::from_secs(30))).await {
        Ok(stopped) => assert_eq!(stopped.unwrap().0.lost(), 0),
        Err(_) => eprintln!("live: the lab did not stop within 60 s"),
    }
    live
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
    // `BENCH_ONLY=live`: the live section alone; `BENCH_ONLY=outbox`: section 1 alone.
    let only = std::env::var("BENCH_ONLY").ok();
    if only.as_deref() != Some("live") {
        throughput(&rt, only.as_deref() == Some("outbox"));
    }
    if only.is_none() || only.as_deref() == Some("live") {
        live(&rt);
    }
}

/// Sections 1 to 3 (1 alone with `outbox_only`).
fn throughput(rt: &tokio::runtime::Runtime, outbox_only: bool) {
    let dir = tempfile::tempdir().unwrap();
    let batches = demo_batches();
    let (mut rows, mut packed, mut ingest, mut bytes) = (vec![], vec![], vec![], vec![]);
    let (mut direct, mut drain) = (vec![], vec![]);
    let mut per_commit = 0.0;
    for round in 0..ROUNDS {
        let i = rt.block_on(outbox_ingest(dir.path(), round, &batches));
        per_commit = i.per_commit;
        ingest.push(i.rate);
        bytes.push(i.bytes_per_sample);
        rows.push(bare_rows(dir.path(), round));
        packed.push(bare_packed(
            dir.path(),
            round,
            i.per_commit.round().max(1.0) as usize,
            &batches,
        ));
        if !outbox_only {
            direct.push(hub_apply(dir.path(), round, &batches));
            drain.push(rt.block_on(uploader_drain(dir.path(), round, i.outbox)));
        }
    }
    let (mut columns, mut protobuf) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        let (c, p) = encode_cost(&batches);
        columns.push(c);
        protobuf.push(p);
    }
    let (live_stored, live_file) = rt.block_on(live_entries_size(dir.path(), Held::Live));
    let (merged_stored, merged_file) = rt.block_on(live_entries_size(dir.path(), Held::Merged));
    let (outage_stored, outage_file) = rt.block_on(live_entries_size(dir.path(), Held::Outage));
    let what = format!("ingest: encode + CRC + commit ({per_commit:.0} entries/commit)");
    report(Row {
        section: "outbox",
        what: &what,
        unit: "samples/s",
        measured: Stats::of(&ingest),
        baseline: Some(("bare blobs, same commits, 2 threads", Stats::of(&packed))),
        goal: Goal::None,
    });
    report(Row {
        section: "outbox",
        what: "ingest, against one row per sample",
        unit: "samples/s",
        measured: Stats::of(&ingest),
        baseline: Some(("bare rusqlite, row per sample", Stats::of(&rows))),
        goal: Goal::None,
    });
    report(Row {
        section: "outbox",
        what: "encode + CRC of a batch of 2048, per sample: columns",
        unit: "ns",
        measured: Stats::of(&columns),
        baseline: Some(("protobuf Entry, as stored before", Stats::of(&protobuf))),
        goal: Goal::None,
    });
    report(Row {
        section: "outbox",
        what: "bytes on disk per sample (file + WAL), batches of 2048",
        unit: "B/sample",
        measured: Stats::of(&bytes),
        baseline: None,
        goal: Goal::AtMost(16.0),
    });
    // A live entry is held until the hub acknowledges it (a third of a second when the hub is
    // up) or, if the hub is away, until compact_after merges it: what the outbox keeps is the
    // merged form, as the outage line shows.
    let what = format!(
        "bytes stored per sample, live entries of {LIVE_BATCH} samples (held until acked or merged)"
    );
    report(Row {
        section: "outbox",
        what: &what,
        unit: "B/sample",
        measured: Stats::of(&[live_stored]),
        baseline: Some(("database pages per sample", Stats::of(&[live_file]))),
        goal: Goal::None,
    });
    report(Row {
        section: "outbox",
        what: "the same, merged as a backlog the hub has not taken (compact_after)",
        unit: "B/sample",
        measured: Stats::of(&[merged_stored]),
        baseline: Some(("database pages per sample", Stats::of(&[merged_file]))),
        goal: Goal::AtMost(16.0),
    });
    let what = format!(
        "held at the end of an outage {OUTAGE_RATIO}x compact_after (10 min at 30 s), live entries"
    );
    report(Row {
        section: "outbox",
        what: &what,
        unit: "B/sample",
        measured: Stats::of(&[outage_stored]),
        baseline: Some(("database pages per sample", Stats::of(&[outage_file]))),
        goal: Goal::AtMost(16.0),
    });
    if outbox_only {
        return;
    }
    report(Row {
        section: "pipeline",
        what: "drain after an outage: outbox -> gRPC -> hub commit",
        unit: "samples/s",
        measured: Stats::of(&drain),
        baseline: Some(("hub apply of the same entries, no gRPC", Stats::of(&direct))),
        goal: Goal::AtLeast(1e6),
    });
    let mut e2e = Vec::new();
    let mut acquired = 0;
    for _ in 0..ROUNDS {
        let (rate, n) = rt.block_on(end_to_end(8));
        e2e.push(rate);
        acquired = n;
    }
    let what = format!("8 PSB sims -> runners -> hub commit ({acquired} samples each run)");
    report(Row {
        section: "e2e",
        what: &what,
        unit: "samples/s",
        measured: Stats::of(&e2e),
        baseline: Some(("drain of the outbox alone", Stats::of(&drain))),
        goal: Goal::None,
    });
}

/// Section 4.
fn live(rt: &tokio::runtime::Runtime) {
    let live = rt.block_on(live_latency(64, Duration::from_secs(5)));
    let n = live.channels;
    for (what, p50, p99, goal) in [
        (
            "acquisition -> Watch client",
            &live.watch_p50,
            &live.watch_p99,
            50.0,
        ),
        (
            "acquisition -> hub commit -> Tail client",
            &live.tail_p50,
            &live.tail_p99,
            1000.0,
        ),
    ] {
        let what = format!("{what}, p99 ({n} channels at 10 Hz)");
        report(Row {
            section: "live",
            what: &what,
            unit: "ms",
            measured: Stats::of(p99),
            baseline: Some(("its p50", Stats::of(p50))),
            goal: Goal::AtMost(goal),
        });
    }
}

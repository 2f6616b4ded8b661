//! Section 1 of the pipeline benchmark: the outbox alone, and its baselines.

use super::{BATCH, LIVE_BATCH, SAMPLES, TEST_ID};
use cyclerd::outbox::Outbox;
use cyclerd::proto::ingest::{SampleBatch, TestRegistered, entry::Body};
use cyclerd_proto::chunk::encode_sample_batch;
use cyclerd_proto::demo_data::Demo;
use rusqlite::{Connection, params};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// [`SAMPLES`] demo-like samples of one test, in batches of [`BATCH`].
pub(super) fn demo_batches() -> Vec<SampleBatch> {
    let mut demo = Demo::new(1);
    (0..SAMPLES / BATCH)
        .map(|_| demo.batch(TEST_ID, BATCH))
        .collect()
}

pub(super) fn pragmas(conn: &Connection) {
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
        .unwrap();
}

/// Bare rusqlite, one row per sample, one transaction per batch: the row-per-sample ceiling.
pub(super) fn bare_rows(dir: &std::path::Path, round: usize) -> f64 {
    let conn = Connection::open(dir.join(format!("bare-rows-{round}.sqlite"))).unwrap();
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

/// Bare rusqlite, the same encoded blobs as the outbox's entries, `per_commit` of them per
/// transaction (the outbox's average), handed by a producer thread to a writer thread as the
/// outbox's are: the packed ceiling, without the outbox's encoding, CRC or bookkeeping.
pub(super) fn bare_packed(
    dir: &std::path::Path,
    round: usize,
    per_commit: usize,
    batches: &[SampleBatch],
) -> f64 {
    let conn = Connection::open(dir.join(format!("bare-packed-{round}.sqlite"))).unwrap();
    pragmas(&conn);
    conn.execute_batch("CREATE TABLE b (id INTEGER PRIMARY KEY, body BLOB, crc INTEGER)")
        .unwrap();
    let blobs: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| encode_sample_batch(b).unwrap())
        .collect();
    let entries = blobs.len();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut conn = conn;
        let mut left = entries;
        while left > 0 {
            let n = per_commit.min(left);
            let t = conn.transaction().unwrap();
            {
                let mut stmt = t
                    .prepare_cached("INSERT INTO b (body, crc) VALUES (?1, 0)")
                    .unwrap();
                for _ in 0..n {
                    stmt.execute([rx.recv().unwrap()]).unwrap();
                }
            }
            t.commit().unwrap();
            left -= n;
        }
    });
    for blob in blobs {
        tx.send(blob).unwrap();
    }
    writer.join().unwrap();
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// What one outbox ingest measured.
pub(super) struct Ingest {
    pub(super) rate: f64,
    pub(super) outbox: Outbox,
    /// Entries per transaction, on average.
    pub(super) per_commit: f64,
    /// Bytes on disk per sample (file and WAL, before anything is acknowledged).
    pub(super) bytes_per_sample: f64,
}

pub(super) async fn outbox_ingest(
    dir: &std::path::Path,
    round: usize,
    batches: &[SampleBatch],
) -> Ingest {
    let path = dir.join(format!("outbox-{round}.sqlite"));
    let outbox = Outbox::open(&path).unwrap();
    let commits_before = outbox.stats().commits.load(Ordering::Relaxed);
    let start = Instant::now();
    outbox
        .append(Body::TestRegistered(TestRegistered {
            test_id: TEST_ID.into(),
            channel_id: "bench/1".into(),
            protocol_name: "bench".into(),
            ..Default::default()
        }))
        .unwrap();
    for b in batches {
        // Building the batch is part of the cost a runner pays.
        outbox.append(Body::Samples(b.clone())).unwrap();
    }
    outbox.flush().await.unwrap();
    let rate = SAMPLES as f64 / start.elapsed().as_secs_f64();
    let commits = outbox.stats().commits.load(Ordering::Relaxed) - commits_before;
    let size = |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let bytes = size(path.clone()) + size(wal.into());
    Ingest {
        rate,
        outbox,
        per_commit: (SAMPLES / BATCH + 1) as f64 / commits.max(1) as f64,
        bytes_per_sample: bytes as f64 / SAMPLES as f64,
    }
}

/// Encoding and checksum of every batch, ns per sample: as the outbox stores a batch (columns)
/// and as it stored one before (its protobuf `Entry`).
pub(super) fn encode_cost(batches: &[SampleBatch]) -> (f64, f64) {
    use cyclerd::proto::ingest::Entry;
    use prost::Message;
    let time = |f: &dyn Fn(&SampleBatch) -> Vec<u8>| {
        let start = Instant::now();
        let mut sink = 0u32;
        for b in batches {
            sink ^= crc32fast::hash(&f(b));
        }
        std::hint::black_box(sink);
        start.elapsed().as_secs_f64() * 1e9 / SAMPLES as f64
    };
    let columns = time(&|b| encode_sample_batch(b).unwrap());
    let protobuf = time(&|b| {
        Entry {
            id: 0,
            body: Some(Body::Samples(b.clone())),
            skipped_before: 0,
        }
        .encode_to_vec()
    });
    (columns, protobuf)
}

/// How a live channel's entries are held, for [`live_entries_size`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Held {
    /// As written: until the hub acknowledges them (or they are merged).
    Live,
    /// Merged as a backlog older than `compact_after` is (here at once).
    Merged,
    /// Written steadily over an outage [`OUTAGE_RATIO`] times `compact_after` long, the
    /// merging running as it does in a daemon: what the outbox holds at its end.
    Outage,
}

/// An outage of ten minutes against the default `compact_after` of 30 s, scaled down to
/// `compact_after` = 250 ms (5 s of writing).
pub(super) const OUTAGE_RATIO: u32 = 20;

/// Bytes per sample in the outbox's rows (`LENGTH(body)`, what the quota counts) for a live
/// channel's entries of [`LIVE_BATCH`] samples, and the database pages they use, held as
/// `held` says.
pub(super) async fn live_entries_size(dir: &std::path::Path, held: Held) -> (f64, f64) {
    let path = dir.join(format!("outbox-live-{held:?}.sqlite"));
    let mut options = cyclerd::outbox::OutboxOptions::new(&path);
    let compact_after = Duration::from_millis(250);
    options.compact_after = match held {
        Held::Live => Duration::from_secs(3600),
        Held::Merged => Duration::ZERO,
        Held::Outage => compact_after,
    };
    let outbox = Outbox::open_with(options).unwrap();
    let mut demo = Demo::new(2);
    let entries = 20_000;
    let n = entries * LIVE_BATCH;
    // Outage: the entries spread evenly over its length, in steps of a tenth of compact_after.
    let steps = if held == Held::Outage {
        OUTAGE_RATIO as usize * 10
    } else {
        1
    };
    let start = tokio::time::Instant::now();
    for step in 0..steps {
        for _ in 0..entries / steps {
            let b = demo.batch(TEST_ID, LIVE_BATCH);
            outbox.append(Body::Samples(b)).unwrap();
        }
        if steps > 1 {
            tokio::time::sleep_until(start + compact_after / 10 * (step as u32 + 1)).await;
        }
    }
    outbox.flush().await.unwrap();
    // The last commit's rows merge at the next one.
    outbox.flush().await.unwrap();
    let summary = outbox.reader().unwrap().summary().unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    // Pages in use: merging frees some, which the file keeps until a vacuum gives them back.
    let pages: i64 = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count())
                  - (SELECT freelist_count FROM pragma_freelist_count())",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    (
        summary.pending_bytes as f64 / n as f64,
        (pages * page_size) as f64 / n as f64,
    )
}

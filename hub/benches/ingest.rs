//! Hub storage benchmark (run in release: `cargo bench -p cyclerhub --bench ingest`).
//!
//! On demo-like samples ([`demo_data`]), for each backend:
//! 1. apply: samples/s of `HubStore::apply_batch` (validation, the overlap probe, encoding
//!    each batch into a chunk, the insert, the counts, the resume point) next to the bare
//!    ceiling measured in the same run: a prepared `INSERT` of the same encoded chunk rows into
//!    an identical table, with the same entries per transaction and the same commits.
//!    [`ROUNDS`] rounds each, alternating; median, min and max;
//! 2. size: bytes per stored sample (the chunks' blobs, and the table with its indexes);
//! 3. read: samples/s of the read API's `read_batches` (every column) over one whole test of
//!    [`READ_SAMPLES`] samples;
//! 4. gRPC -> hub: the same samples uploaded on one stream to the hub's server on loopback
//!    (entries pipelined, timed to the last Ack), median of 3.
//!
//! PostgreSQL runs on a throwaway cluster with the server's default, durable settings;
//! SQLite as the hub opens it (`synchronous=FULL`, WAL).

use cyclerd_proto::demo_data;
#[path = "grpc.rs"]
mod grpc;
#[path = "../../scripts/bench_table.rs"]
mod table;
use table::{Goal, Row, Stats, report};

use std::collections::HashMap;
use std::time::Instant;

use cyclerd_proto::ingest::{Entry, TestRegistered, entry::Body};
use cyclerhub::HubStore;
use cyclerhub::store::{ChunkRow, chunk_row};
use cyclerhub::testing::PgCluster;
use demo_data::Demo;

/// Samples per entry, as a daemon's outbox packs them (`BATCH_SAMPLES`).
const SAMPLES_PER_ENTRY: usize = 2048;
/// Entries per transaction: about 6.5 MB encoded, under the server's 8 MiB batch limit.
const ENTRIES_PER_BATCH: usize = 32;
/// Transactions per measurement: 2^20 samples.
const BATCHES: usize = 16;
/// Measurements per side.
const ROUNDS: usize = 5;
const SAMPLES: usize = SAMPLES_PER_ENTRY * ENTRIES_PER_BATCH * BATCHES;
/// The whole test the read measurement reads.
const READ_SAMPLES: usize = 10_000_000;

fn registered(test_id: &str) -> Entry {
    Entry {
        id: 1,
        body: Some(Body::TestRegistered(TestRegistered {
            test_id: test_id.into(),
            channel_id: "psb1/1".into(),
            metadata: HashMap::from([("cell_id".into(), "bench".into())]),
            protocol_name: "bench".into(),
            protocol_source: String::new(),
            plan_json: "{}".into(),
            start_unix_s: 1.7e9,
            equipment: Vec::new(),
        })),
        skipped_before: 0,
    }
}

/// One test's samples in transactions of entries (ids 2..), demo-like from `seed`.
fn test_batches(test_id: &str, seed: u64) -> Vec<Vec<Entry>> {
    let mut demo = Demo::new(seed);
    let mut id = 1;
    (0..BATCHES)
        .map(|_| {
            (0..ENTRIES_PER_BATCH)
                .map(|_| {
                    id += 1;
                    Entry {
                        id,
                        body: Some(Body::Samples(demo.batch(test_id, SAMPLES_PER_ENTRY))),
                        skipped_before: 0,
                    }
                })
                .collect()
        })
        .collect()
}

/// The batches as one test `test_id`'s entries (registration first).
fn renamed(batches: &[Vec<Entry>], test_id: &str) -> Vec<Entry> {
    let mut entries = vec![registered(test_id)];
    for entry in batches.iter().flatten() {
        let mut entry = entry.clone();
        if let Some(Body::Samples(b)) = &mut entry.body {
            b.test_id = test_id.into();
        }
        entries.push(entry);
    }
    entries
}

/// 3 uploads of `batches` through gRPC into `store`, next to `apply` (the same store's
/// `apply_batch` without gRPC, measured before).
fn grpc_upload(store: &HubStore, backend: &str, batches: &[Vec<Entry>], apply: Stats) {
    let rates: Vec<f64> = (0..3)
        .map(|r| {
            let entries = renamed(batches, &format!("grpc-test-{r}"));
            grpc::upload(store, &format!("grpc-{r}"), entries, SAMPLES)
        })
        .collect();
    let what = format!("{backend}: one gRPC upload stream -> hub commit");
    report(Row {
        section: "hub",
        what: &what,
        unit: "samples/s",
        measured: Stats::of(&rates),
        baseline: Some(("apply_batch without gRPC", apply)),
        goal: Goal::AtLeast(1e6),
    });
}

/// Samples/s of `apply_batch` for a new test (daemon store `round`).
fn hub_apply(store: &HubStore, round: usize, batches: &[Vec<Entry>]) -> f64 {
    let daemon = format!("bench-{round}");
    let test_id = format!("test-{round}");
    store
        .apply_batch(&daemon, 1, &[registered(&test_id)])
        .unwrap();
    let mut batches = batches.to_vec();
    for entry in batches.iter_mut().flatten() {
        if let Some(Body::Samples(b)) = &mut entry.body {
            b.test_id.clone_from(&test_id);
        }
    }
    let start = Instant::now();
    for batch in &batches {
        let out = store.apply_batch(&daemon, 1, batch).unwrap();
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        assert_eq!(
            out.samples_inserted,
            (SAMPLES_PER_ENTRY * batch.len()) as u64
        );
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// The chunk rows of `batches`, encoded (outside the timing) as the hub encodes them.
fn chunk_rows(batches: &[Vec<Entry>]) -> Vec<Vec<ChunkRow>> {
    batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|e| match &e.body {
                    Some(Body::Samples(b)) => chunk_row(b),
                    _ => unreachable!("bench batches hold samples only"),
                })
                .collect()
        })
        .collect()
}

const BARE_INSERT: &str = "INSERT INTO bare_chunks (test_key, first_seq, last_seq, n_samples, \
    t_min, t_max, temps, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Samples/s of a bare prepared INSERT of the same chunk rows, a transaction per batch.
fn bare_pg(client: &mut postgres::Client, round: usize, rows: &[Vec<ChunkRow>]) -> f64 {
    let key = round as i64;
    let insert = client.prepare(BARE_INSERT).unwrap();
    let start = Instant::now();
    for batch in rows {
        let mut tx = client.transaction().unwrap();
        for c in batch {
            tx.execute(
                &insert,
                &[
                    &key,
                    &c.first_seq,
                    &c.last_seq,
                    &c.n_samples,
                    &c.t_min,
                    &c.t_max,
                    &c.temps,
                    &c.data,
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// As [`bare_pg`], with rusqlite on a file opened as the hub opens its own.
fn bare_sqlite(conn: &mut rusqlite::Connection, round: usize, rows: &[Vec<ChunkRow>]) -> f64 {
    let key = round as i64;
    let start = Instant::now();
    for batch in rows {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx.prepare_cached(&BARE_INSERT.replace('$', "?")).unwrap();
            for c in batch {
                stmt.execute(rusqlite::params![
                    key,
                    c.first_seq,
                    c.last_seq,
                    c.n_samples,
                    c.t_min,
                    c.t_max,
                    c.temps,
                    c.data
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// Runs `ours` and `bare` alternately [`ROUNDS`] times and reports both; `ours`' figures.
fn compare(
    backend: &str,
    goal: f64,
    mut ours: impl FnMut(usize) -> f64,
    mut bare: impl FnMut(usize) -> f64,
) -> Stats {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        a.push(ours(round));
        b.push(bare(round));
    }
    let what = format!("{backend}: apply_batch (demo-like samples)");
    let measured = Stats::of(&a);
    report(Row {
        section: "hub",
        what: &what,
        unit: "samples/s",
        measured,
        baseline: Some(("bare INSERT of the same chunks", Stats::of(&b))),
        goal: Goal::AtLeast(goal),
    });
    measured
}

/// Samples/s of reading a whole test of [`READ_SAMPLES`] samples, stored first, next to
/// `bare`: reading the same chunks' bytes and decoding nothing (it returns the bytes read).
fn read_whole_test(store: &HubStore, backend: &str, mut bare: impl FnMut() -> i64) {
    let test_id = "read-test";
    store
        .apply_batch("reader", 1, &[registered(test_id)])
        .unwrap();
    let mut demo = Demo::new(99);
    let mut id = 1;
    let mut left = READ_SAMPLES;
    while left > 0 {
        let entries: Vec<Entry> = (0..ENTRIES_PER_BATCH)
            .filter_map(|_| {
                let n = left.min(SAMPLES_PER_ENTRY);
                left -= n;
                id += 1;
                (n > 0).then(|| Entry {
                    id,
                    body: Some(Body::Samples(demo.batch(test_id, n))),
                    skipped_before: 0,
                })
            })
            .collect();
        store.apply_batch("reader", 1, &entries).unwrap();
    }
    let (mut times, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let start = Instant::now();
        // As the read API (gRPC ReadSamples, HTTP downloads) reads it: every column, in
        // batches, a page between token checks.
        let columns = cyclerhub::query::Columns::parse(&[]).unwrap();
        let (mut sum, mut n, mut from) = (0.0, 0u64, 0u64);
        loop {
            let (next, more) = cyclerhub::query::read_batches(
                store,
                test_id,
                &columns,
                (from, cyclerhub::query::PAGE),
                (0.0, 0.0),
                |b| {
                    n += b.voltage_v.len() as u64;
                    sum += b.voltage_v.iter().sum::<f64>();
                    true
                },
            )
            .unwrap();
            if !more {
                break;
            }
            from = next;
        }
        assert_eq!(n, READ_SAMPLES as u64);
        assert!(sum > 0.0);
        times.push(n as f64 / start.elapsed().as_secs_f64());
        let start = Instant::now();
        assert!(bare() > 0);
        raw.push(READ_SAMPLES as f64 / start.elapsed().as_secs_f64());
    }
    let what = format!(
        "{backend}: read a whole {}M-sample test",
        READ_SAMPLES / 1_000_000
    );
    report(Row {
        section: "hub",
        what: &what,
        unit: "samples/s",
        measured: Stats::of(&times),
        baseline: Some(("SELECT of its chunks' bytes, no decoding", Stats::of(&raw))),
        goal: Goal::AtLeast(10e6),
    });
}

fn size_line(backend: &str, blob: i64, table: i64, samples: i64) {
    let what = format!("{backend}: stored size with the table's indexes ({samples} samples)");
    let per = |b: i64| b as f64 / samples as f64;
    report(Row {
        section: "hub",
        what: &what,
        unit: "B/sample",
        measured: Stats::of(&[per(table)]),
        baseline: Some(("the chunks' blobs alone", Stats::of(&[per(blob)]))),
        goal: Goal::AtMost(16.0),
    });
}

fn main() {
    println!(
        "hub storage, demo-like samples: {SAMPLES} samples per measurement, {BATCHES} \
         transactions of {ENTRIES_PER_BATCH} entries x {SAMPLES_PER_ENTRY} samples, median of \
         {ROUNDS}"
    );
    let batches = test_batches("test", 7);
    let rows = chunk_rows(&batches);

    let dir = tempfile::tempdir().unwrap();
    let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
    // The same file as the hub's: its schema, WAL (which persists), and the hub's pragmas.
    drop(HubStore::open(dir.path().join("bare.sqlite")).unwrap());
    let mut conn = rusqlite::Connection::open(dir.path().join("bare.sqlite")).unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;
         CREATE TABLE bare_chunks (chunk_key INTEGER PRIMARY KEY, test_key INTEGER NOT NULL,
             first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, n_samples INTEGER NOT NULL,
             t_min REAL NOT NULL, t_max REAL NOT NULL, temps INTEGER NOT NULL,
             data BLOB NOT NULL, UNIQUE (test_key, first_seq));
         CREATE INDEX bare_time ON bare_chunks (test_key, t_max);",
    )
    .unwrap();
    let apply = compare(
        "SQLite",
        3e6,
        |round| hub_apply(&store, round, &batches),
        |round| bare_sqlite(&mut conn, round, &rows),
    );
    let db = rusqlite::Connection::open(dir.path().join("hub.sqlite")).unwrap();
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    // The whole file (every table, mostly chunks) over the samples in it.
    let (blob, table, samples): (i64, i64, i64) = db
        .query_row(
            "SELECT (SELECT sum(length(data)) FROM sample_chunks),
                    (SELECT (page_count - freelist_count) * page_size
                     FROM pragma_page_count, pragma_freelist_count, pragma_page_size),
                    (SELECT sum(n_samples) FROM sample_chunks)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    size_line("SQLite", blob, table, samples);
    read_whole_test(&store, "SQLite", || {
        db.query_row(
            "SELECT sum(length(c.data)) FROM sample_chunks c JOIN tests t ON t.test_key = c.test_key
             WHERE t.test_id = 'read-test'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    });
    grpc_upload(&store, "SQLite", &batches, apply);
    drop((store, conn, db));

    let cluster = PgCluster::start_durable();
    let url = cluster.create_database();
    let store = HubStore::connect(&url).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE bare_chunks (LIKE sample_chunks INCLUDING ALL);
             ALTER TABLE bare_chunks ALTER COLUMN data SET STORAGE EXTERNAL;",
        )
        .unwrap();
    let apply = compare(
        "PostgreSQL",
        2e6,
        |round| hub_apply(&store, round, &batches),
        |round| bare_pg(&mut client, round, &rows),
    );
    client
        .batch_execute("VACUUM ANALYZE sample_chunks")
        .unwrap();
    let r = client
        .query_one(
            "SELECT sum(length(data))::bigint, pg_total_relation_size('sample_chunks'),
                    sum(n_samples)::bigint FROM sample_chunks",
            &[],
        )
        .unwrap();
    size_line("PostgreSQL", r.get(0), r.get(1), r.get(2));
    read_whole_test(&store, "PostgreSQL", || {
        let mut n = 0i64;
        let rows = client
            .query(
                "SELECT c.data FROM sample_chunks c JOIN tests t ON t.test_key = c.test_key
                 WHERE t.test_id = 'read-test' ORDER BY c.first_seq",
                &[],
            )
            .unwrap();
        for r in rows {
            n += r.get::<_, &[u8]>(0).len() as i64;
        }
        n
    });
    grpc_upload(&store, "PostgreSQL", &batches, apply);
}

//! Hub ingest benchmark (run in release: `cargo bench -p cyclerhub --bench ingest`).
//!
//! Prints samples/s of `HubStore::apply_batch` on each backend next to the raw ceiling measured
//! in the same run, with the same rows in transactions of the same size:
//! 1. PostgreSQL (a throwaway cluster with the server's default, durable settings): the hub's
//!    apply (binary COPY into staging, then a conflict-ignoring move into `samples`) next to a
//!    bare binary COPY into an identical table;
//! 2. SQLite (`synchronous=FULL`, WAL, as the hub opens it): the hub's apply next to a bare
//!    rusqlite insert loop (one prepared statement, a row per sample) into an identical table.
//!
//! Each side runs [`ROUNDS`] times, alternating, and the best round counts: the machine is
//! shared, and the best round is the one least disturbed. A last line per backend re-sends rows
//! the hub already holds under new entry ids (a backfill overlapping what is there), once.

use std::collections::HashMap;
use std::time::Instant;

use cyclerd_proto::ingest::{Entry, SampleBatch, TestRegistered, entry::Body};
use cyclerhub::HubStore;
use cyclerhub::testing::PgCluster;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

/// Samples per entry, as a daemon's outbox packs them.
const SAMPLES_PER_ENTRY: usize = 2048;
/// Entries per transaction: about 6.5 MB encoded, under the server's 8 MiB batch limit.
const ENTRIES_PER_BATCH: usize = 32;
/// Transactions per measurement: 2^20 samples.
const BATCHES: usize = 16;
/// Measurements per side.
const ROUNDS: usize = 2;
const SAMPLES: usize = SAMPLES_PER_ENTRY * ENTRIES_PER_BATCH * BATCHES;

/// The samples table's columns, in the order both bare loaders write them.
const COLUMNS: &str = "test_key, seq, test_time_s, unix_time_s, voltage_v, current_a, cycle, \
    step, charge_capacity_ah, discharge_capacity_ah, charge_energy_wh, discharge_energy_wh, \
    temperature_c, ambient_temperature_c";

fn samples(test_id: &str, first_seq: u64) -> SampleBatch {
    let n = SAMPLES_PER_ENTRY;
    let f = |k: f64| (0..n).map(|i| k + i as f64 * 1e-3).collect::<Vec<f64>>();
    SampleBatch {
        test_id: test_id.into(),
        first_seq,
        test_time_s: f(first_seq as f64),
        unix_time_s: f(1.7e9 + first_seq as f64),
        voltage_v: f(3.7),
        current_a: f(1.25),
        cycle: vec![1; n],
        step: vec![2; n],
        charge_capacity_ah: f(0.5),
        discharge_capacity_ah: f(0.0),
        charge_energy_wh: f(1.8),
        discharge_energy_wh: f(0.0),
        temperature_c: f(25.0),
        ambient_temperature_c: Vec::new(),
        plan_step: Vec::new(),
    }
}

/// One test's registration (entry 1) and its samples in batches (entries 2..).
fn test_entries(test_id: &str) -> (Entry, Vec<Vec<Entry>>) {
    let registered = Entry {
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
    };
    let mut id = 1;
    let batches = (0..BATCHES)
        .map(|b| {
            (0..ENTRIES_PER_BATCH)
                .map(|e| {
                    id += 1;
                    let first_seq = ((b * ENTRIES_PER_BATCH + e) * SAMPLES_PER_ENTRY) as u64;
                    Entry {
                        id,
                        body: Some(Body::Samples(samples(test_id, first_seq))),
                        skipped_before: 0,
                    }
                })
                .collect()
        })
        .collect();
    (registered, batches)
}

/// Samples/s of `apply_batch` for a new test in `store` (daemon store `round`).
fn hub_apply(store: &HubStore, round: usize) -> f64 {
    let daemon = format!("bench-{round}");
    let (registered, batches) = test_entries(&format!("test-{round}"));
    store.apply_batch(&daemon, 1, &[registered]).unwrap();
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

/// Samples/s of `apply_batch` re-sending the samples of round 0 under new entry ids, as after a
/// backfill that overlaps what the hub holds: every row is already there (for PostgreSQL, the
/// staging path).
fn hub_resend(store: &HubStore) -> f64 {
    let (_, mut batches) = test_entries("test-0");
    for entry in batches.iter_mut().flatten() {
        entry.id += 1_000_000;
    }
    let start = Instant::now();
    for batch in &batches {
        let out = store.apply_batch("bench-0", 1, batch).unwrap();
        assert_eq!(out.samples_inserted, 0);
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// Calls `row` with the seq, the batch and the index of every sample in `batch`.
fn for_each_row(batch: &[Entry], mut row: impl FnMut(i64, &SampleBatch, usize)) {
    for entry in batch {
        let Some(Body::Samples(b)) = &entry.body else {
            unreachable!("bench batches hold samples only")
        };
        for i in 0..b.test_time_s.len() {
            row(b.first_seq as i64 + i as i64, b, i);
        }
    }
}

/// Samples/s of a bare binary COPY of the same rows into `bare_samples`, a transaction per
/// batch and a COPY per entry (as the hub's apply does).
fn bare_copy(client: &mut postgres::Client, round: usize) -> f64 {
    let types = [
        Type::INT8,
        Type::INT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::INT8,
        Type::INT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
    ];
    let key = round as i64;
    let (_, batches) = test_entries("bare");
    let copy = client
        .prepare(&format!(
            "COPY bare_samples ({COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .unwrap();
    let start = Instant::now();
    for batch in &batches {
        let mut tx = client.transaction().unwrap();
        for entry in batch {
            let mut writer = BinaryCopyInWriter::new(tx.copy_in(&copy).unwrap(), &types);
            for_each_row(std::slice::from_ref(entry), |seq, b, i| {
                let (cycle, step) = (i64::from(b.cycle[i]), i64::from(b.step[i]));
                writer
                    .write(&[
                        &key,
                        &seq,
                        &b.test_time_s[i],
                        &b.unix_time_s[i],
                        &b.voltage_v[i],
                        &b.current_a[i],
                        &cycle,
                        &step,
                        &b.charge_capacity_ah[i],
                        &b.discharge_capacity_ah[i],
                        &b.charge_energy_wh[i],
                        &b.discharge_energy_wh[i],
                        &b.temperature_c.get(i),
                        &b.ambient_temperature_c.get(i),
                    ])
                    .unwrap();
            });
            writer.finish().unwrap();
        }
        tx.commit().unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// Samples/s of a bare rusqlite loop inserting the same rows into `samples` of its own file,
/// a row per statement and a transaction per batch.
fn bare_rusqlite(conn: &mut rusqlite::Connection, round: usize) -> f64 {
    let key = round as i64;
    let (_, batches) = test_entries("bare");
    let start = Instant::now();
    for batch in &batches {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO samples ({COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ))
                .unwrap();
            for_each_row(batch, |seq, b, i| {
                stmt.execute(rusqlite::params![
                    key,
                    seq,
                    b.test_time_s[i],
                    b.unix_time_s[i],
                    b.voltage_v[i],
                    b.current_a[i],
                    b.cycle[i],
                    b.step[i],
                    b.charge_capacity_ah[i],
                    b.discharge_capacity_ah[i],
                    b.charge_energy_wh[i],
                    b.discharge_energy_wh[i],
                    b.temperature_c.get(i),
                    b.ambient_temperature_c.get(i),
                ])
                .unwrap();
            });
        }
        tx.commit().unwrap();
    }
    SAMPLES as f64 / start.elapsed().as_secs_f64()
}

/// Runs `ours` and `bare` alternately [`ROUNDS`] times; the best of each.
fn best_of(mut ours: impl FnMut(usize) -> f64, mut bare: impl FnMut(usize) -> f64) -> (f64, f64) {
    let (mut best_ours, mut best_bare) = (0f64, 0f64);
    for round in 0..ROUNDS {
        best_ours = best_ours.max(ours(round));
        best_bare = best_bare.max(bare(round));
    }
    (best_ours, best_bare)
}

fn report(backend: &str, ours: f64, bare_name: &str, bare: f64) {
    println!(
        "{backend:<10}  apply_batch {:>9.0} samples/s   {bare_name:<17} {:>9.0} samples/s   \
         ratio {:.2}",
        ours,
        bare,
        ours / bare
    );
}

fn report_resend(backend: &str, resend: f64, bare: f64) {
    println!(
        "{backend:<10}  re-sent rows, all already held: apply_batch {resend:>9.0} samples/s   \
         ratio to bare {:.2}",
        resend / bare
    );
}

fn main() {
    println!(
        "hub ingest: {SAMPLES} samples per measurement, {BATCHES} transactions of \
         {ENTRIES_PER_BATCH} entries x {SAMPLES_PER_ENTRY} samples, best of {ROUNDS}"
    );

    let cluster = PgCluster::start_durable();
    let url = cluster.create_database();
    let store = HubStore::connect(&url).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE TABLE bare_samples (LIKE samples INCLUDING ALL)")
        .unwrap();
    let (ours, bare) = best_of(
        |round| hub_apply(&store, round),
        |round| bare_copy(&mut client, round),
    );
    report("PostgreSQL", ours, "bare binary COPY", bare);
    report_resend("PostgreSQL", hub_resend(&store), bare);
    drop((store, client));
    drop(cluster);

    let dir = tempfile::tempdir().unwrap();
    let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
    // The same file as the hub's: its schema, WAL (which persists), and the hub's pragmas.
    drop(HubStore::open(dir.path().join("bare.sqlite")).unwrap());
    let mut conn = rusqlite::Connection::open(dir.path().join("bare.sqlite")).unwrap();
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;",
    )
    .unwrap();
    let (ours, bare) = best_of(
        |round| hub_apply(&store, round),
        |round| bare_rusqlite(&mut conn, round),
    );
    report("SQLite", ours, "bare insert loop", bare);
    report_resend("SQLite", hub_resend(&store), bare);
}

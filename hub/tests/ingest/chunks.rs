//! Samples kept in chunks: batches that overlap what the hub holds, time windows found by
//! the chunk index, and hubs made before chunks converted on open, on both backends.

use super::*;
use cyclerhub::SampleRow;

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

#[test]
fn a_batch_that_overlaps_held_chunks_adds_only_its_new_samples() {
    for backend in BACKENDS {
        let db = Database::new(backend);
        let store = db.connect();
        let first = [
            registered(1, T1),
            samples(2, T1, 0, 100),
            samples(3, T1, 200, 100),
        ];
        store.apply_batch("d", 1, &first).unwrap();
        // Re-sent under new ids (a backfill): seqs 50..250, of which 100..200 are new.
        let out = store
            .apply_batch("d", 1, &[samples(4, T1, 50, 200)])
            .unwrap();
        assert_eq!(out.samples_inserted, 100, "{backend:?}");
        let again = store
            .apply_batch("d", 1, &[samples(5, T1, 0, 300), samples(6, T1, 290, 20)])
            .unwrap();
        assert_eq!(again.samples_inserted, 10, "{backend:?}");
        let want = whole(T1, 310);
        assert_eq!(store.samples(T1).unwrap(), want, "{backend:?}");
        assert_eq!(store.sample_count(T1).unwrap(), 310);
        // From the middle of a chunk, as a follower resumes.
        let mut tail = Vec::new();
        store
            .for_each_sample_from(T1, 123, |s| {
                tail.push(s.clone());
                Ok::<_, cyclerhub::StoreError>(())
            })
            .unwrap();
        assert_eq!(tail, want[123..], "{backend:?}");
    }
}

/// The samples [`batch`] makes for seqs `0..n`, as the hub reads them back.
fn whole(test_id: &str, n: usize) -> Vec<SampleRow> {
    let b = batch(test_id, 0, n, false);
    (0..n)
        .map(|i| SampleRow {
            seq: i as u64,
            test_time_s: b.test_time_s[i],
            unix_time_s: b.unix_time_s[i],
            voltage_v: b.voltage_v[i],
            current_a: b.current_a[i],
            cycle: b.cycle[i],
            step: b.step[i],
            charge_capacity_ah: b.charge_capacity_ah[i],
            discharge_capacity_ah: b.discharge_capacity_ah[i],
            charge_energy_wh: b.charge_energy_wh[i],
            discharge_energy_wh: b.discharge_energy_wh[i],
            temperature_c: None,
            ambient_temperature_c: None,
            plan_step: None,
        })
        .collect()
}

#[test]
fn a_time_window_starts_at_the_first_chunk_that_reaches_it() {
    for backend in BACKENDS {
        let db = Database::new(backend);
        let store = db.connect();
        let mut entries = vec![registered(1, T1)];
        entries.extend((0..10).map(|k| samples(2 + k, T1, k * 300, 300)));
        store.apply_batch("d", 1, &entries).unwrap();
        // batch(): test time = seq.
        assert_eq!(store.first_seq_at(T1, 0.0).unwrap(), Some(0));
        assert_eq!(store.first_seq_at(T1, 450.5).unwrap(), Some(300));
        assert_eq!(store.first_seq_at(T1, 2999.0).unwrap(), Some(2700));
        assert_eq!(store.first_seq_at(T1, 3000.0).unwrap(), None, "{backend:?}");
    }
}

/// Old-format rows for two tests: one long with a gap, NULL and present optional values,
/// awkward floats; one short.
fn old_rows() -> Vec<(i64, SampleRow)> {
    let mut rows = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for seq in (0..3000u64).chain(3100..5100) {
        let t = seq as f64 * 0.5;
        rows.push((
            1,
            SampleRow {
                seq,
                test_time_s: t,
                unix_time_s: 1.7e9 + t + noise() * 1e-3,
                voltage_v: 3.6 + noise() * 0.1,
                current_a: if seq % 1000 < 500 { 1.25 } else { -2.5 },
                cycle: (seq / 1000) as u32,
                step: (seq / 500) as u32,
                charge_capacity_ah: t / 3600.0,
                discharge_capacity_ah: 0.0,
                charge_energy_wh: t * 3.7 / 3600.0,
                discharge_energy_wh: if seq == 7 { 1e-300 } else { 0.0 },
                temperature_c: (seq % 7 != 0).then(|| 25.0 + noise()),
                ambient_temperature_c: (seq > 4000).then_some(45.0),
                plan_step: (seq >= 2000).then_some((seq / 700) as u32),
            },
        ));
    }
    for seq in 0..10u64 {
        let mut s = rows[seq as usize].1.clone();
        s.temperature_c = None;
        s.ambient_temperature_c = None;
        rows.push((2, s));
    }
    rows
}

const OLD_SQLITE: &str = include_str!("fixtures/schema_before_chunks.sqlite.sql");
const OLD_PG: &str = include_str!("fixtures/schema_before_chunks.pg.sql");
const OLD_INSERT: &str = "INSERT INTO samples (test_key, seq, test_time_s, unix_time_s, \
    voltage_v, current_a, cycle, step, charge_capacity_ah, discharge_capacity_ah, \
    charge_energy_wh, discharge_energy_wh, temperature_c, ambient_temperature_c, plan_step) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

#[test]
fn a_sqlite_hub_made_before_chunks_reads_back_every_sample_after_opening() {
    let db = Database::new(Backend::Sqlite);
    {
        let mut conn = rusqlite::Connection::open(&db.location).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(OLD_SQLITE).unwrap();
        tx.execute_batch("PRAGMA user_version = 10").unwrap();
        for (key, id, n) in [(1, T1, 5000), (2, T2, 10)] {
            tx.execute(
                "INSERT INTO tests (test_key, test_id, daemon_id, store_epoch, channel_id, \
                 protocol_name, protocol_source, plan_json, metadata_json, start_unix_s, \
                 sample_count) VALUES (?1, ?2, 'd', 1, 'psb1/1', 'p', '', '{}', '{}', 1.7e9, ?3)",
                rusqlite::params![key, id, n],
            )
            .unwrap();
        }
        let mut insert = tx.prepare(&OLD_INSERT.replace('$', "?")).unwrap();
        for (key, s) in old_rows() {
            insert
                .execute(rusqlite::params![
                    key,
                    s.seq as i64,
                    s.test_time_s,
                    s.unix_time_s,
                    s.voltage_v,
                    s.current_a,
                    s.cycle,
                    s.step,
                    s.charge_capacity_ah,
                    s.discharge_capacity_ah,
                    s.charge_energy_wh,
                    s.discharge_energy_wh,
                    s.temperature_c,
                    s.ambient_temperature_c,
                    s.plan_step,
                ])
                .unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    }
    converted_hub_reads_back_every_sample(&db);
    let conn = rusqlite::Connection::open(&db.location).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'samples'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the former table is dropped");
}

#[test]
fn a_postgresql_hub_made_before_chunks_reads_back_every_sample_after_connecting() {
    let db = Database::new(Backend::Postgres);
    {
        let mut client = postgres::Client::connect(&db.location, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.batch_execute(OLD_PG).unwrap();
        tx.batch_execute(
            "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO schema_migrations (version) SELECT generate_series(1, 9)",
        )
        .unwrap();
        for (id, n) in [(T1, 5000i64), (T2, 10)] {
            tx.execute(
                "INSERT INTO tests (test_id, daemon_id, store_epoch, channel_id, protocol_name, \
                 protocol_source, plan_json, metadata, start_unix_s, sample_count) \
                 VALUES ($1, 'd', 1, 'psb1/1', 'p', '', '{}', '{}', 1.7e9, $2)",
                &[&id, &n],
            )
            .unwrap();
        }
        let insert = tx.prepare(OLD_INSERT).unwrap();
        for (key, s) in old_rows() {
            tx.execute(
                &insert,
                &[
                    &key,
                    &(s.seq as i64),
                    &s.test_time_s,
                    &s.unix_time_s,
                    &s.voltage_v,
                    &s.current_a,
                    &i64::from(s.cycle),
                    &i64::from(s.step),
                    &s.charge_capacity_ah,
                    &s.discharge_capacity_ah,
                    &s.charge_energy_wh,
                    &s.discharge_energy_wh,
                    &s.temperature_c,
                    &s.ambient_temperature_c,
                    &s.plan_step.map(i64::from),
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    converted_hub_reads_back_every_sample(&db);
    let mut client = postgres::Client::connect(&db.location, postgres::NoTls).unwrap();
    let gone: bool = client
        .query_one("SELECT to_regclass('samples') IS NULL", &[])
        .unwrap()
        .get(0);
    assert!(gone, "the former table is dropped");
}

/// Opens the old hub at `db` (converting it) and checks what it reads.
fn converted_hub_reads_back_every_sample(db: &Database) {
    let store = db.connect();
    let rows = old_rows();
    for (key, id) in [(1, T1), (2, T2)] {
        let want: Vec<SampleRow> = rows
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| s.clone())
            .collect();
        assert_eq!(store.samples(id).unwrap(), want, "test {id}");
        assert_eq!(store.sample_count(id).unwrap(), want.len() as u64);
    }
    assert_eq!(store.has_temperatures(T1).unwrap(), (true, true));
    assert_eq!(store.has_temperatures(T2).unwrap(), (false, false));
    // Opening again finds nothing left to convert, and the hub goes on ingesting.
    drop(store);
    let store = db.connect();
    let out = store.apply_batch("d", 1, &[samples(1, T2, 5, 10)]).unwrap();
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    assert_eq!(out.samples_inserted, 5);
    assert_eq!(store.samples(T2).unwrap().len(), 15);
}

/// Rows of `sample_chunks` in the database.
fn chunk_rows(db: &Database, backend: Backend) -> i64 {
    let count = "SELECT count(*) FROM sample_chunks";
    match backend {
        Backend::Sqlite => rusqlite::Connection::open(&db.location)
            .unwrap()
            .query_row(count, [], |r| r.get(0))
            .unwrap(),
        Backend::Postgres => postgres::Client::connect(&db.location, postgres::NoTls)
            .unwrap()
            .query_one(count, &[])
            .unwrap()
            .get(0),
    }
}

#[test]
fn small_batches_of_a_live_test_are_merged_into_few_chunks_and_read_back_the_same() {
    for backend in BACKENDS {
        let db = Database::new(backend);
        let store = db.connect();
        store.apply_batch("d", 1, &[registered(1, T1)]).unwrap();
        // A live test: a batch of 10 samples per batch interval, each applied on its own.
        for k in 0..150u64 {
            let out = store
                .apply_batch("d", 1, &[samples(2 + k, T1, k * 10, 10)])
                .unwrap();
            assert_eq!(out.samples_inserted, 10);
        }
        // Re-sent after a lost ack: nothing new, whether merged or not.
        let again = store
            .apply_batch(
                "d",
                1,
                &[samples(152, T1, 1000, 10), samples(153, T1, 1495, 10)],
            )
            .unwrap();
        assert_eq!(again.samples_inserted, 5, "{backend:?}");
        assert_eq!(store.samples(T1).unwrap(), whole(T1, 1505), "{backend:?}");
        assert_eq!(store.sample_count(T1).unwrap(), 1505);
        // At most 1024 samples in a merged chunk: 0..1020 and 1020..1500, then the new part
        // of the overlapping re-send on its own; three chunks, not 152.
        assert_eq!(chunk_rows(&db, backend), 3, "{backend:?}");
        assert_eq!(store.first_seq_at(T1, 1200.0).unwrap(), Some(1020));
    }
}

#[test]
fn a_reader_sees_each_sample_once_when_a_chunk_grows_between_its_pages() {
    for backend in BACKENDS {
        let db = Database::new(backend);
        let store = db.connect();
        let mut entries = vec![registered(1, T1)];
        // Fifteen chunks too big to merge into, and a small one: a page of sixteen.
        entries.extend((0..15).map(|k| samples(2 + k, T1, k * 1020, 1020)));
        entries.push(samples(17, T1, 15300, 10));
        store.apply_batch("d", 1, &entries).unwrap();
        let mut seen = Vec::new();
        store
            .for_each_sample(T1, |s| {
                seen.push(s.seq);
                if s.seq == 15309 {
                    // Merged into the chunk the reader has just read to its end.
                    let out = store
                        .apply_batch("d", 1, &[samples(18, T1, 15310, 10)])
                        .unwrap();
                    assert_eq!(out.samples_inserted, 10);
                }
                Ok::<_, cyclerhub::StoreError>(())
            })
            .unwrap();
        assert_eq!(chunk_rows(&db, backend), 16, "the small batch was merged");
        assert_eq!(seen, (0..15320).collect::<Vec<u64>>(), "{backend:?}");
    }
}

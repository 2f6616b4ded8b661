use super::*;
use crate::proto::demo_data::Demo;
use crate::proto::ingest::{Entry, Event, SampleBatch, TestRegistered};
use prost::Message;

fn registered(test_id: &str) -> Body {
    Body::TestRegistered(TestRegistered {
        test_id: test_id.into(),
        channel_id: "x/1".into(),
        protocol_name: "p".into(),
        ..Default::default()
    })
}

fn entry(body: Body) -> Entry {
    Entry {
        id: 0,
        body: Some(body),
        skipped_before: 0,
    }
}

/// The entries of a page, ids cleared, and each entry's id.
fn read_all(outbox: &Outbox) -> (Vec<Entry>, Vec<u64>) {
    let page = outbox.reader().unwrap().page_after(0, 10_000).unwrap();
    let mut ids = Vec::new();
    let entries = page
        .into_iter()
        .map(|item| match item {
            PageItem::Entry(mut s) => {
                ids.push(s.entry.id);
                s.entry.id = 0;
                s.entry
            }
            PageItem::Corrupt { id, reason } => panic!("entry {id} is corrupt: {reason}"),
        })
        .collect();
    (entries, ids)
}

/// Bit-exact: an entry's encoding holds every float's bits, so equal encodings are equal
/// entries (NaN payloads and -0.0 included), which `==` on f64 cannot tell.
fn encoded(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(Message::encode_to_vec).collect()
}

fn odd_batch() -> SampleBatch {
    let mut b = Demo::new(7).batch("0190f1a2-7b3c-7def-8123-456789abcdef", 300);
    b.voltage_v[3] = f64::NAN;
    b.current_a[4] = -0.0;
    b.test_time_s[5] = f64::from_bits(0x7ff8_dead_beef_0001);
    b.charge_capacity_ah[9] = f64::INFINITY;
    b.temperature_c = (0..300).map(|i| 25.0 + i as f64 * 0.01).collect();
    b.temperature_c[10] = f64::NAN;
    b.ambient_temperature_c = vec![-0.0; 300];
    b
}

#[tokio::test]
async fn an_outbox_written_before_column_encoding_still_reads_every_entry_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    let mut demo = Demo::new(1);
    let old = [
        entry(registered("t")),
        entry(Body::Samples(demo.batch("t", 2048))),
        entry(Body::Event(Event {
            test_id: "t".into(),
            kind: "info".into(),
            message: "m".into(),
            ..Default::default()
        })),
        entry(Body::Samples(demo.batch("t", 3))),
    ];
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::SCHEMA_2).unwrap();
        for e in &old {
            let bytes = e.encode_to_vec();
            let samples = match &e.body {
                Some(Body::Samples(b)) => b.test_time_s.len() as i64,
                _ => 0,
            };
            conn.execute(
                "INSERT INTO outbox (samples, body, crc, created_unix_s) VALUES (?1, ?2, ?3, 0)",
                rusqlite::params![samples, bytes, crc32fast::hash(&bytes)],
            )
            .unwrap();
        }
    }
    let outbox = Outbox::open(&path).unwrap();
    assert!(outbox.startup_alarms().is_empty());
    // New entries after the old ones, column-encoded.
    let new = demo.batch("t", 100);
    outbox.append(Body::Samples(new.clone())).unwrap();
    outbox.flush().await.unwrap();
    let (entries, ids) = read_all(&outbox);
    let mut want = old.to_vec();
    want.push(entry(Body::Samples(new)));
    assert_eq!(encoded(&entries), encoded(&want));
    assert_eq!(ids, [1, 2, 3, 4, 5]);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::VERSION);
    let bodies: Vec<(Vec<u8>, i64)> = conn
        .prepare("SELECT body, format FROM outbox ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (e, (body, format)) in old.iter().zip(&bodies) {
        assert_eq!(
            (body, *format),
            (&e.encode_to_vec(), stored::PROTOBUF),
            "old rows are kept as written"
        );
    }
    assert_eq!(bodies[4].1, stored::SAMPLE_COLUMNS);
}

#[tokio::test]
async fn a_sample_batch_round_trips_through_the_outbox_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
    let odd = odd_batch();
    let mut plain = Demo::new(2).batch("t", 5);
    plain.plan_step.clear();
    // Unequal columns: no chunk holds them, so they stay protobuf and reach the hub as sent
    // (which refuses them with a reason).
    let mut ragged = Demo::new(3).batch("t", 5);
    ragged.voltage_v.pop();
    let empty = Demo::new(4).batch("t", 0);
    let bodies = [odd, plain, ragged, empty].map(Body::Samples);
    for b in &bodies {
        outbox.append(b.clone()).unwrap();
    }
    outbox.flush().await.unwrap();
    let (entries, _) = read_all(&outbox);
    let want: Vec<Entry> = bodies.into_iter().map(entry).collect();
    assert_eq!(encoded(&entries), encoded(&want));
}

#[tokio::test]
async fn the_outbox_stores_the_demos_samples_in_at_most_16_bytes_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    let outbox = Outbox::open(&path).unwrap();
    let test_id = "0190f1a2-7b3c-7def-8123-456789abcdef";
    let mut demo = Demo::new(5);
    outbox.append(registered(test_id)).unwrap();
    let n = 32 * 2048;
    for _ in 0..32 {
        outbox
            .append(Body::Samples(demo.batch(test_id, 2048)))
            .unwrap();
    }
    outbox.flush().await.unwrap();
    let summary = outbox.reader().unwrap().summary().unwrap();
    assert_eq!(summary.pending_samples, n);
    let stored = summary.pending_bytes as f64 / n as f64;
    assert!(stored <= 8.0, "{stored:.2} bytes stored per sample");
    // The database's pages once the write-ahead log is folded in (the log itself is
    // transient, and in a run this short mostly the frames of a few commits).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    let on_disk = (pages * page_size) as f64 / n as f64;
    assert!(on_disk <= 16.0, "{on_disk:.2} bytes on disk per sample");
}

#[tokio::test]
async fn quota_and_acks_count_the_bytes_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    let outbox = Outbox::open(&path).unwrap();
    let mut demo = Demo::new(6);
    outbox.append(registered("t")).unwrap();
    for _ in 0..4 {
        outbox.append(Body::Samples(demo.batch("t", 500))).unwrap();
    }
    outbox.flush().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let on_disk: i64 = conn
        .query_row("SELECT SUM(LENGTH(body)) FROM outbox", [], |r| r.get(0))
        .unwrap();
    let stats = outbox.stats();
    assert_eq!(stats.pending_bytes.load(Ordering::Acquire), on_disk as u64);
    outbox.ack(3).unwrap();
    outbox.flush().await.unwrap();
    assert_eq!(stats.samples_acked.load(Ordering::Acquire), 1000);
    let left: i64 = conn
        .query_row("SELECT SUM(LENGTH(body)) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stats.pending_bytes.load(Ordering::Acquire), left as u64);
}

#[tokio::test]
async fn a_parked_sample_batch_comes_back_the_same_when_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
    let b = Body::Samples(odd_batch());
    outbox.append(b.clone()).unwrap();
    outbox.flush().await.unwrap();
    outbox.park(1, "refused".into()).unwrap();
    outbox.flush().await.unwrap();
    assert_eq!(outbox.requeue_dead_letters().await.unwrap(), 1);
    let (entries, ids) = read_all(&outbox);
    assert_eq!(ids, [2]);
    assert_eq!(encoded(&entries), encoded(&[entry(b)]));
}

#[tokio::test]
async fn a_damaged_column_encoded_entry_with_a_matching_checksum_is_reported_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    let outbox = Outbox::open(&path).unwrap();
    for k in 0..3 {
        let b = Demo::new(k).batch("t", 50);
        outbox.append(Body::Samples(b)).unwrap();
    }
    outbox.flush().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut body: Vec<u8> = conn
        .query_row("SELECT body FROM outbox WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    body.truncate(body.len() - 3);
    conn.execute(
        "UPDATE outbox SET body = ?1, crc = ?2 WHERE id = 2",
        rusqlite::params![&body, crc32fast::hash(&body)],
    )
    .unwrap();
    let page = outbox.reader().unwrap().page_after(0, 10).unwrap();
    assert!(matches!(page[0], PageItem::Entry(_)));
    assert!(
        matches!(&page[1], PageItem::Corrupt { id: 2, reason } if reason.contains("does not decode")),
        "{:?}",
        page[1]
    );
    assert!(matches!(page[2], PageItem::Entry(_)));
}

#[test]
fn a_row_of_an_unknown_format_is_an_error() {
    let err = stored::decode(9, &[]).unwrap_err();
    assert!(err.contains("unknown entry format 9"), "{err}");
}

/// Samples of `entries` of test `test_id`, in the order they come, as one batch.
fn samples_of(entries: &[Entry], test_id: &str) -> SampleBatch {
    let mut all = SampleBatch {
        test_id: test_id.into(),
        ..Default::default()
    };
    for e in entries {
        if let Some(Body::Samples(b)) = &e.body
            && b.test_id == test_id
        {
            assert_eq!(b.first_seq, all.test_time_s.len() as u64, "contiguous");
            all.test_time_s.extend(&b.test_time_s);
            all.unix_time_s.extend(&b.unix_time_s);
            all.voltage_v.extend(&b.voltage_v);
            all.current_a.extend(&b.current_a);
            all.cycle.extend(&b.cycle);
            all.step.extend(&b.step);
            all.charge_capacity_ah.extend(&b.charge_capacity_ah);
            all.discharge_capacity_ah.extend(&b.discharge_capacity_ah);
            all.charge_energy_wh.extend(&b.charge_energy_wh);
            all.discharge_energy_wh.extend(&b.discharge_energy_wh);
            all.temperature_c.extend(&b.temperature_c);
            all.ambient_temperature_c.extend(&b.ambient_temperature_c);
            all.plan_step.extend(&b.plan_step);
        }
    }
    all
}

#[tokio::test]
async fn a_backlog_of_small_sample_entries_is_merged_keeping_every_sample_and_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    let outbox = Outbox::open_with(OutboxOptions {
        compact_after: Duration::ZERO,
        ..OutboxOptions::new(&path)
    })
    .unwrap();
    // Two channels flushing 3 samples on the same tick, an event of one halfway.
    let (mut a, mut b) = (Demo::new(1), Demo::new(2));
    let mut appended = Vec::new();
    let mut push = |body: Body| {
        outbox.append(body.clone()).unwrap();
        appended.push(entry(body));
    };
    push(registered("a"));
    push(registered("b"));
    for k in 0..400 {
        push(Body::Samples(a.batch("a", 3)));
        push(Body::Samples(b.batch("b", 3)));
        if k == 200 {
            push(Body::Event(Event {
                test_id: "a".into(),
                kind: "step".into(),
                message: "halfway".into(),
                ..Default::default()
            }));
        }
    }
    outbox.flush().await.unwrap();
    // Rows merge once they are older than compact_after: at the next commit.
    outbox.flush().await.unwrap();
    outbox.append(registered("c")).unwrap();
    outbox.flush().await.unwrap();

    let (entries, ids) = read_all(&outbox);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*ids.last().unwrap(), appended.len() as u64 + 1);
    assert!(entries.len() < 20, "{} entries left", entries.len());
    for test in ["a", "b"] {
        let want = samples_of(&appended, test);
        let got = samples_of(&entries, test);
        assert_eq!(
            encoded(&[entry(Body::Samples(got))]),
            encoded(&[entry(Body::Samples(want))])
        );
    }
    // The event still comes after the samples taken before it and before those after it.
    let event = entries
        .iter()
        .position(|e| matches!(e.body, Some(Body::Event(_))))
        .unwrap();
    assert_eq!(
        samples_of(&entries[..event], "a").test_time_s.len(),
        201 * 3
    );
    let stats = outbox.stats();
    assert_eq!(stats.backlog(), entries.len() as u64);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let bytes: i64 = conn
        .query_row("SELECT SUM(LENGTH(body)) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stats.pending_bytes.load(Ordering::Acquire), bytes as u64);
    let per_sample = bytes as f64 / 2400.0;
    assert!(per_sample <= 16.0, "{per_sample:.1} bytes per sample");
}

#[tokio::test]
async fn young_or_acknowledged_entries_are_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
    let mut a = Demo::new(1);
    for _ in 0..10 {
        outbox.append(Body::Samples(a.batch("a", 3))).unwrap();
    }
    outbox.flush().await.unwrap();
    outbox.flush().await.unwrap();
    let (entries, _) = read_all(&outbox);
    assert_eq!(entries.len(), 10, "younger than compact_after (30 s)");
    drop(outbox);

    let path = dir.path().join("kept.sqlite");
    let outbox = Outbox::open_with(OutboxOptions {
        compact_after: Duration::ZERO,
        keep_acked: Duration::from_secs(3600),
        ..OutboxOptions::new(&path)
    })
    .unwrap();
    for _ in 0..10 {
        outbox.append(Body::Samples(a.batch("a", 3))).unwrap();
    }
    outbox.ack(10).unwrap();
    outbox.flush().await.unwrap();
    outbox.flush().await.unwrap();
    outbox.append(registered("b")).unwrap();
    outbox.flush().await.unwrap();
    let summary = outbox.reader().unwrap().summary().unwrap();
    assert_eq!(
        summary.kept_acked, 10,
        "acknowledged rows are kept as they are"
    );
}

//! The daemon's parts through real SQLite files, real Modbus and gRPC sockets on loopback, and
//! the control API's tokens file.

use cyclerd::outbox::{Outbox, PageItem};
use cyclerd::proto::ingest::{Event, SampleBatch, TestRegistered, entry::Body};
use cyclerd::uploader::{self, UploaderConfig, UploaderStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(60);

fn registered(test_id: &str) -> Body {
    Body::TestRegistered(TestRegistered {
        test_id: test_id.into(),
        channel_id: "x/1".into(),
        protocol_name: "p".into(),
        ..Default::default()
    })
}

fn samples(test_id: &str, first_seq: u64, n: usize) -> Body {
    let col = |k: f64| (0..n).map(|i| k + i as f64).collect::<Vec<_>>();
    Body::Samples(SampleBatch {
        test_id: test_id.into(),
        first_seq,
        test_time_s: col(first_seq as f64),
        unix_time_s: col(1.7e9),
        voltage_v: col(3.0),
        current_a: col(0.0),
        cycle: vec![1; n],
        step: vec![1; n],
        charge_capacity_ah: col(0.0),
        discharge_capacity_ah: col(0.0),
        charge_energy_wh: col(0.0),
        discharge_energy_wh: col(0.0),
        temperature_c: Vec::new(),
        ambient_temperature_c: Vec::new(),
        plan_step: Vec::new(),
    })
}

/// Like [`samples`], but every value is noise (random mantissas), which no column encoding
/// shrinks: for tests about sizes on disk and the quota, not about the codec.
fn noisy_samples(test_id: &str, first_seq: u64, n: usize) -> Body {
    let noise = |seq: u64, col: u64| {
        let mut x =
            seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ col.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 29;
        f64::from_bits(0x3ff0_0000_0000_0000 | (x >> 12))
    };
    let Body::Samples(mut b) = samples(test_id, first_seq, n) else {
        unreachable!("samples() makes a sample batch")
    };
    for (col, values) in [
        &mut b.test_time_s,
        &mut b.unix_time_s,
        &mut b.voltage_v,
        &mut b.current_a,
        &mut b.charge_capacity_ah,
        &mut b.discharge_capacity_ah,
        &mut b.charge_energy_wh,
        &mut b.discharge_energy_wh,
    ]
    .into_iter()
    .enumerate()
    {
        for (i, v) in values.iter_mut().enumerate() {
            *v = noise(first_seq + i as u64, col as u64);
        }
    }
    Body::Samples(b)
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + WAIT
}

mod outbox {
    use super::*;

    #[tokio::test]
    async fn entries_survive_a_reopen_and_keep_the_store_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let first = Outbox::open(&path).unwrap();
        first.append(registered("t")).unwrap();
        first.append(samples("t", 0, 100)).unwrap();
        first.flush().await.unwrap();
        let identity = first.identity().clone();
        drop(first);

        let again = Outbox::open(&path).unwrap();
        assert_eq!(again.identity(), identity);
        assert_eq!(again.stats().backlog(), 2);
        let page = again.reader().unwrap().page_after(0, 10).unwrap();
        assert_eq!(page.len(), 2);
        let PageItem::Entry(stored) = &page[1] else {
            panic!("entry 2 reads back intact: {:?}", page[1]);
        };
        assert_eq!(stored.entry.id, 2);
        assert_eq!(stored.samples, 100);
    }

    #[tokio::test]
    async fn the_outbox_size_counts_its_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let outbox = Outbox::open(&path).unwrap();
        outbox.append(registered("t")).unwrap();
        outbox.append(samples("t", 0, 2000)).unwrap();
        outbox.flush().await.unwrap();
        let on_disk: u64 = ["outbox.sqlite", "outbox.sqlite-wal", "outbox.sqlite-shm"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
            .sum();
        let wal = std::fs::metadata(dir.path().join("outbox.sqlite-wal"))
            .unwrap()
            .len();
        assert!(wal > 0, "the commits sit in the write-ahead log");
        let summary = outbox.reader().unwrap().summary().unwrap();
        assert_eq!(summary.file_bytes, on_disk);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_outbox_and_its_wal_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let outbox = Outbox::open(&path).unwrap();
        outbox.append(registered("t")).unwrap();
        outbox.flush().await.unwrap();
        let wal = dir.path().join("outbox.sqlite-wal");
        for file in [&path, &wal] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
    }

    #[tokio::test]
    async fn a_new_store_gets_a_new_identity_and_credential_which_no_debug_output_shows() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let one = Outbox::open(&a.path().join("o.sqlite")).unwrap();
        let two = Outbox::open(&b.path().join("o.sqlite")).unwrap();
        assert_ne!(one.identity().daemon_id, two.identity().daemon_id);
        assert_ne!(one.identity().secret, two.identity().secret);
        let secret = one.identity().secret.expose().to_owned();
        assert_eq!(secret.len(), 64);
        assert!(!format!("{:?}", one.identity()).contains(&secret));
    }

    #[tokio::test]
    async fn a_new_epoch_keeps_the_daemons_credential() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
        let before = outbox.identity();
        let after = outbox.new_epoch().await.unwrap();
        assert!(after.epoch > before.epoch);
        assert_eq!(
            after.secret, before.secret,
            "the hub knows the daemon by it"
        );
    }

    #[tokio::test]
    async fn acked_entries_are_deleted_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("o.sqlite")).unwrap();
        outbox.append(registered("t")).unwrap();
        outbox.append(samples("t", 0, 10)).unwrap();
        outbox.append(samples("t", 10, 5)).unwrap();
        outbox.flush().await.unwrap();
        outbox.ack(2).unwrap();
        outbox.flush().await.unwrap();
        let stats = outbox.stats();
        assert_eq!(
            stats
                .samples_acked
                .load(std::sync::atomic::Ordering::Acquire),
            10
        );
        assert_eq!(stats.backlog(), 1);
        let page = outbox.reader().unwrap().page_after(0, 10).unwrap();
        assert_eq!(page.len(), 1, "only the unacknowledged entry is left");
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_reported_for_parking_and_does_not_hide_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let outbox = Outbox::open(&path).unwrap();
        outbox.append(registered("t")).unwrap();
        outbox.append(samples("t", 0, 3)).unwrap();
        outbox.append(samples("t", 3, 3)).unwrap();
        outbox.flush().await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE outbox SET body = x'00ff00' WHERE id = 2", [])
            .unwrap();
        let page = outbox.reader().unwrap().page_after(0, 10).unwrap();
        assert!(matches!(page[0], PageItem::Entry(_)));
        assert!(
            matches!(&page[1], PageItem::Corrupt { id: 2, reason } if reason.contains("checksum"))
        );
        assert!(matches!(page[2], PageItem::Entry(_)));
        outbox.park(2, "corrupt".into()).unwrap();
        outbox.flush().await.unwrap();
        let dead: i64 = conn
            .query_row("SELECT COUNT(*) FROM dead_letters WHERE id = 2", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dead, 1);
    }
}

mod outbox_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Whatever bytes a damaged disk leaves in a row, even with a matching checksum, the
        /// reader answers with an entry or a corrupt marker for that row, and the rows around
        /// it still read back.
        #[test]
        fn damaged_rows_never_panic_the_reader(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("o.sqlite");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let outbox = Outbox::open(&path).unwrap();
            outbox.append(registered("t")).unwrap();
            outbox.append(samples("t", 0, 3)).unwrap();
            outbox.append(samples("t", 3, 3)).unwrap();
            rt.block_on(outbox.flush()).unwrap();
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE outbox SET body = ?1, crc = ?2 WHERE id = 2",
                rusqlite::params![&body, crc32fast::hash(&body)],
            )
            .unwrap();
            let page = outbox.reader().unwrap().page_after(0, 10).unwrap();
            prop_assert_eq!(page.len(), 3);
            prop_assert!(matches!(page[0], PageItem::Entry(_)));
            prop_assert!(matches!(page[2], PageItem::Entry(_)));
        }
    }
}

mod uploader_and_hub {
    use super::*;

    async fn start_hub(
        listener: TcpListener,
        db: &std::path::Path,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let store = cyclerhub::HubStore::open(db).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cyclerhub::server::run(listener, store, async {
            let _ = stopped.await;
        }));
        (stop, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploader_resumes_after_a_hub_restart_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hub.sqlite");
        let outbox = Outbox::open(&dir.path().join("outbox.sqlite")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_hub, hub) = start_hub(listener, &db).await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let status = Arc::new(UploaderStatus::default());
        let task = tokio::spawn(uploader::run(
            UploaderConfig {
                hub_addresses: vec![format!("http://{addr}")],
                hub_ca_pem: None,
                hub_token: None,
                daemon_name: "test".into(),
                hub_lab: None,
                window: 4,
            },
            outbox.clone(),
            Arc::clone(&status),
            stop_rx,
        ));
        outbox.append(registered("t")).unwrap();
        for k in 0..10 {
            outbox.append(samples("t", k * 100, 100)).unwrap();
        }
        outbox.flush().await.unwrap();
        assert!(outbox.caught_up(deadline()).await);

        // The hub goes away; the daemon keeps acquiring.
        let _ = stop_hub.send(());
        hub.await.unwrap().unwrap();
        for k in 10..20 {
            outbox.append(samples("t", k * 100, 100)).unwrap();
        }
        outbox
            .append(Body::Event(Event {
                test_id: "t".into(),
                kind: "info".into(),
                message: "while the hub was down".into(),
                ..Default::default()
            }))
            .unwrap();
        outbox.flush().await.unwrap();
        assert!(outbox.stats().backlog() > 0);

        // Back on the same address; the uploader reconnects by itself.
        let listener = TcpListener::bind(addr).await.unwrap();
        let (stop_hub, hub) = start_hub(listener, &db).await;
        assert!(
            outbox.caught_up(deadline()).await,
            "the backlog drains after the hub returns"
        );
        let _ = stop.send(true);
        task.await.unwrap();
        let _ = stop_hub.send(());
        hub.await.unwrap().unwrap();

        let store = cyclerhub::HubStore::open(&db).unwrap();
        let rows = store.samples("t").unwrap();
        assert_eq!(rows.len(), 2000, "every sample exactly once");
        assert!(rows.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        assert_eq!(store.events("t").unwrap().len(), 1);
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_entries_merged_while_the_hub_is_down_upload_every_sample_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hub.sqlite");
        let outbox = Outbox::open_with(cyclerd::outbox::OutboxOptions {
            compact_after: Duration::ZERO,
            ..cyclerd::outbox::OutboxOptions::new(&dir.path().join("outbox.sqlite"))
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_hub, hub) = start_hub(listener, &db).await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(uploader::run(
            UploaderConfig {
                hub_addresses: vec![format!("http://{addr}")],
                hub_ca_pem: None,
                hub_token: None,
                daemon_name: "test".into(),
                hub_lab: None,
                window: 4,
            },
            outbox.clone(),
            Arc::new(UploaderStatus::default()),
            stop_rx,
        ));
        // Two channels flushing 3 samples each on the same tick.
        let mut next = 0u64;
        let mut flush_ticks = |outbox: &Outbox, ticks: usize| {
            for _ in 0..ticks {
                outbox.append(samples("a", next, 3)).unwrap();
                outbox.append(samples("b", next, 3)).unwrap();
                next += 3;
            }
        };
        outbox.append(registered("a")).unwrap();
        outbox.append(registered("b")).unwrap();
        flush_ticks(&outbox, 50);
        outbox.flush().await.unwrap();
        assert!(outbox.caught_up(deadline()).await);

        // The hub goes away; the backlog of small entries is merged.
        let _ = stop_hub.send(());
        hub.await.unwrap().unwrap();
        flush_ticks(&outbox, 300);
        outbox.flush().await.unwrap();
        outbox.flush().await.unwrap();
        outbox.append(registered("c")).unwrap();
        outbox.flush().await.unwrap();
        assert!(
            outbox.stats().backlog() < 100,
            "{} entries wait",
            outbox.stats().backlog()
        );

        let listener = TcpListener::bind(addr).await.unwrap();
        let (stop_hub, hub) = start_hub(listener, &db).await;
        assert!(outbox.caught_up(deadline()).await);
        let _ = stop.send(true);
        task.await.unwrap();
        let _ = stop_hub.send(());
        hub.await.unwrap().unwrap();
        let store = cyclerhub::HubStore::open(&db).unwrap();
        for test in ["a", "b"] {
            let rows = store.samples(test).unwrap();
            assert_eq!(rows.len(), 350 * 3, "every sample of {test} exactly once");
            assert!(rows.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outbox_written_before_column_encoding_still_uploads_every_entry() {
        use cyclerd::proto::ingest::Entry;
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let db = dir.path().join("hub.sqlite");
        {
            // Rows as a daemon of schema 2 wrote them: every entry a protobuf Entry.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(cyclerd::outbox::schema::SCHEMA_2)
                .unwrap();
            let mut bodies = vec![(0, registered("t"))];
            bodies.extend((0..5).map(|k| (100, samples("t", k * 100, 100))));
            for (n, body) in bodies {
                let bytes = Entry {
                    id: 0,
                    body: Some(body),
                    skipped_before: 0,
                }
                .encode_to_vec();
                conn.execute(
                    "INSERT INTO outbox (samples, body, crc, created_unix_s) VALUES (?1, ?2, ?3, 0)",
                    rusqlite::params![n, bytes, crc32fast::hash(&bytes)],
                )
                .unwrap();
            }
        }
        let outbox = Outbox::open(&path).unwrap();
        // And new ones, column-encoded, after them.
        for k in 5..10 {
            outbox.append(samples("t", k * 100, 100)).unwrap();
        }
        outbox.flush().await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_hub, hub) = start_hub(listener, &db).await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(uploader::run(
            UploaderConfig {
                hub_addresses: vec![format!("http://{addr}")],
                hub_ca_pem: None,
                hub_token: None,
                daemon_name: "test".into(),
                hub_lab: None,
                window: 4,
            },
            outbox.clone(),
            Arc::new(UploaderStatus::default()),
            stop_rx,
        ));
        assert!(outbox.caught_up(deadline()).await);
        let _ = stop.send(true);
        task.await.unwrap();
        let _ = stop_hub.send(());
        hub.await.unwrap().unwrap();
        let rows = cyclerhub::HubStore::open(&db)
            .unwrap()
            .samples("t")
            .unwrap();
        assert_eq!(rows.len(), 1000, "every sample exactly once");
        let want = |s: u64| (s as f64, 1.7e9 + (s % 100) as f64, 3.0 + (s % 100) as f64);
        assert!(
            rows.iter().enumerate().all(|(i, r)| r.seq == i as u64
                && (r.test_time_s, r.unix_time_s, r.voltage_v) == want(r.seq)),
            "every sample as it was stored"
        );
    }
}

#[path = "daemon/outbox_model.rs"]
mod outbox_model;

#[path = "daemon/control_tokens.rs"]
mod control_tokens;

//! Upload semantics: resume points per daemon and store epoch, acks only after the commit,
//! idempotent re-sends, rejections that never block what follows, ownership of tests, stream
//! limits and shutdown.

use super::*;

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
    a_batch_applied_again_is_a_no_op_with_exact_counts,
    text_with_a_nul_character_is_rejected_and_recorded,
);

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
        Entry {
            id: 5,
            body: None,
            skipped_before: 0,
        },
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
                    daemon_secret: secret_of("daemon-a"),
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
            daemon_secret: secret_of("daemon\0a"),
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

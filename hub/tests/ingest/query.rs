//! The query API over real gRPC: list and get tests, read samples, tail a running test.

use super::*;
use cyclerd_proto::hub::query_client::QueryClient;
use cyclerd_proto::hub::{GetTestRequest, ListTestsRequest, ReadSamplesRequest, TailRequest};
use tonic::Code;

async fn query(hub: &Hub) -> QueryClient<tonic::transport::Channel> {
    QueryClient::new(hub.channel().await)
}

async fn tests_are_listed_by_cell_and_state_and_one_comes_with_its_metadata_and_events(
    backend: Backend,
) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    let mut entries = whole_test(0, T1);
    entries.push(registered(7, T2));
    up.send_entries(entries).await;
    up.until_ack(7).await;
    let mut q = query(&hub).await;
    let all = q
        .list_tests(ListTestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.tests.len(), 2);
    let running = q
        .list_tests(ListTestsRequest {
            state: "running".into(),
            cell_id: "NMC-0042".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.tests.len(), 1);
    assert_eq!(running.tests[0].test_id, T2);
    let none = q
        .list_tests(ListTestsRequest {
            cell_id: "LFP-7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.tests.is_empty());
    let detail = q
        .get_test(GetTestRequest { test_id: T1.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.summary.unwrap().state, "finished");
    assert_eq!(detail.metadata["operator"], "ada");
    assert_eq!(detail.expected_samples, 300);
    assert_eq!(detail.events[0].message, "step 2: charge");
    let missing = q
        .get_test(GetTestRequest {
            test_id: "no-such-test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    hub.shutdown().await;
}

async fn samples_are_read_with_only_the_chosen_columns_inside_the_time_window(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;
    let mut q = query(&hub).await;
    let mut stream = q
        .read_samples(ReadSamplesRequest {
            test_id: T1.into(),
            columns: vec!["test_time_s".into(), "voltage_v".into()],
            from_test_time_s: 50.0,
            to_test_time_s: 249.0,
            with_plan_step: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(b) = stream.message().await.unwrap() {
        assert!(
            b.current_a.is_empty() && b.cycle.is_empty(),
            "only the chosen columns"
        );
        assert_eq!(b.test_time_s.len(), b.voltage_v.len());
        seqs.extend((0..b.voltage_v.len() as u64).map(|i| b.first_seq + i));
    }
    assert_eq!(seqs, (50..=249).collect::<Vec<u64>>());
    let bad = q
        .read_samples(ReadSamplesRequest {
            test_id: T1.into(),
            columns: vec!["volts".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("voltage_v"), "{}", bad.message());
    hub.shutdown().await;
}

async fn a_hub_stops_with_a_tail_open_and_tells_its_client_why(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([registered(1, T1), samples(2, T1, 0, 10)])
        .await;
    up.until_ack(2).await;
    let mut tail = query(&hub)
        .await
        .tail(TailRequest {
            test_id: T1.into(),
            from_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap()
        .expect("what the hub holds");
    // The test runs on: the tail would follow it for days.
    hub.shutdown().await; // would hang while the tail kept the server alive
    let ended = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{ended:?}");
}

async fn a_tail_sends_what_is_stored_then_each_new_batch_and_ends_with_the_test(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([registered(1, T1), samples(2, T1, 0, 100)])
        .await;
    up.until_ack(2).await;
    let mut q = query(&hub).await;
    let mut tail = q
        .tail(TailRequest {
            test_id: T1.into(),
            from_seq: 40,
        })
        .await
        .unwrap()
        .into_inner();
    let next = |b: &SampleBatch| b.first_seq + b.voltage_v.len() as u64;
    let first = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((first.first_seq, next(&first)), (40, 100));
    up.send_entries([samples(3, T1, 100, 50)]).await;
    up.until_ack(3).await;
    let live = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((live.first_seq, next(&live)), (100, 150));
    up.send_entries([ended(4, T1, 150)]).await;
    up.until_ack(4).await;
    let end = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "the tail ends with the test: {end:?}");
    hub.shutdown().await;
}

async fn cells_are_known_from_the_metadata_of_the_tests_that_ran_them(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    let with_meta = |id: u64, test_id: &str, pairs: &[(&str, &str)], start: f64| {
        let mut e = registered(id, test_id);
        if let Some(Body::TestRegistered(t)) = &mut e.body {
            t.metadata
                .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            t.start_unix_s = start;
        }
        e
    };
    up.send_entries([
        with_meta(
            1,
            T1,
            &[("chemistry", "NMC811"), ("secondary.model", "M50")],
            2e9,
        ),
        with_meta(
            2,
            T2,
            &[
                ("chemistry", "LFP"),
                ("nominal_capacity_ah", "5.0"),
                ("secondary.manufacturer", "LG"),
            ],
            1e9,
        ),
    ])
    .await;
    up.until_ack(2).await;
    let cells = hub.store.cells().unwrap();
    assert_eq!(cells.len(), 1, "{cells:?}");
    let c = &cells[0];
    assert_eq!(c.cell_id, "NMC-0042");
    assert_eq!(
        c.chemistry.as_deref(),
        Some("NMC811"),
        "the first test's value stays"
    );
    assert_eq!(c.model.as_deref(), Some("M50"));
    assert_eq!(
        c.manufacturer.as_deref(),
        Some("LG"),
        "a later test fills a gap"
    );
    assert_eq!(c.nominal_capacity_ah, Some(5.0));
    assert_eq!(c.first_test_unix_s, 1e9);
    hub.shutdown().await;
}

async fn a_client_that_stops_reading_a_long_stream_does_not_stall_other_queries(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    // Far more than the server's buffers and the HTTP/2 windows hold: the stream's reader
    // ends up waiting for a client that does not read.
    let n = 50_000;
    let mut entries = vec![registered(1, T1)];
    entries.extend((0..10u64).map(|k| samples(k + 2, T1, k * n, n as usize)));
    up.send_entries(entries).await;
    up.until_ack(11).await;

    let mut q = query(&hub).await;
    let stalled = q
        .read_samples(ReadSamplesRequest {
            test_id: T1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A second connection, as another person would have.
    let mut other = query(&hub).await;
    for _ in 0..3 {
        let listed = tokio::time::timeout(WAIT, other.list_tests(ListTestsRequest::default()))
            .await
            .expect("a query answers while another client's stream waits")
            .unwrap()
            .into_inner();
        assert_eq!(listed.tests.len(), 1);
    }
    drop(stalled);
    hub.shutdown().await;
}

async fn a_read_and_a_tail_cross_a_gap_in_seqs_wider_than_a_page(backend: Backend) {
    let mut hub = Hub::start(backend).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    let far = 3 * cyclerhub::query::PAGE;
    up.send_entries([
        registered(1, T1),
        samples(2, T1, 0, 10),
        samples(3, T1, far, 10),
    ])
    .await;
    up.until_ack(3).await;
    let mut q = query(&hub).await;
    let mut read = q
        .read_samples(ReadSamplesRequest {
            test_id: T1.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut firsts = Vec::new();
    while let Some(b) = tokio::time::timeout(WAIT, read.message())
        .await
        .expect("the read ends")
        .unwrap()
    {
        firsts.push((b.first_seq, b.voltage_v.len()));
    }
    assert_eq!(firsts, [(0, 10), (far, 10)]);
    let mut tail = q
        .tail(TailRequest {
            test_id: T1.into(),
            from_seq: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let next = tokio::time::timeout(WAIT, tail.message())
        .await
        .expect("the tail reaches the samples after the gap")
        .unwrap()
        .unwrap();
    assert_eq!(next.first_seq, far);
    drop((tail, read, q));
    hub.shutdown().await;
}

on_both_backends!(
    a_read_and_a_tail_cross_a_gap_in_seqs_wider_than_a_page,
    a_client_that_stops_reading_a_long_stream_does_not_stall_other_queries,
    cells_are_known_from_the_metadata_of_the_tests_that_ran_them,
    tests_are_listed_by_cell_and_state_and_one_comes_with_its_metadata_and_events,
    samples_are_read_with_only_the_chosen_columns_inside_the_time_window,
    a_tail_sends_what_is_stored_then_each_new_batch_and_ends_with_the_test,
    a_hub_stops_with_a_tail_open_and_tells_its_client_why,
);

#[tokio::test]
async fn an_oversized_message_ends_the_stream_with_a_clear_status_and_stores_none_of_it() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([registered(1, T1), samples(2, T1, 0, 100)])
        .await;
    up.until_ack(2).await;
    // Eight f64 columns of 1.2 M samples: about 79 MB encoded, above the hub's 64 MiB limit.
    let huge = batch(T1, 100, 1_200_000, false);
    up.send_entries([entry(3, Body::Samples(huge))]).await;
    let status = up.final_status().await;
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    assert_eq!(
        hub.store.sample_count(T1).unwrap(),
        100,
        "nothing of it stored"
    );
    let (_, resume) = hub.upload("daemon-a", 1).await;
    assert_eq!(resume, 2, "the daemon resumes after the last entry applied");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_time_window_that_is_negative_not_a_number_or_inverted_is_an_invalid_argument() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;
    let mut q = query(&hub).await;
    for (from, to) in [
        (-1.0, 0.0),
        (f64::NAN, 0.0),
        (0.0, f64::NAN),
        (f64::INFINITY, 0.0),
        (200.0, 100.0),
    ] {
        let window = ReadSamplesRequest {
            test_id: T1.into(),
            from_test_time_s: from,
            to_test_time_s: to,
            ..Default::default()
        };
        let refused = q.read_samples(window).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{from}..{to}");
    }
    for (after, before) in [(f64::NAN, 0.0), (-5.0, 0.0), (0.0, -1.0), (2e9, 1e9)] {
        let window = ListTestsRequest {
            started_after_unix_s: after,
            started_before_unix_s: before,
            ..Default::default()
        };
        let refused = q.list_tests(window).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{after}..{before}");
        assert!(refused.message().contains("window") || refused.message().contains("time"));
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_query_larger_than_the_hub_accepts_is_refused_and_the_hub_still_serves() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries([registered(1, T1)]).await;
    up.until_ack(1).await;
    let mut q = query(&hub).await;
    let huge = GetTestRequest {
        test_id: "x".repeat(cyclerhub::server::MAX_QUERY_REQUEST_SIZE + 1),
    };
    let refused = q.get_test(huge).await.unwrap_err();
    assert!(
        matches!(refused.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{refused:?}"
    );
    let listed = q
        .list_tests(ListTestsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tests.len(), 1, "the same connection still serves");
    let detail = query(&hub)
        .await
        .get_test(GetTestRequest { test_id: T1.into() })
        .await
        .unwrap();
    assert_eq!(detail.into_inner().summary.unwrap().test_id, T1);
    hub.shutdown().await;
}

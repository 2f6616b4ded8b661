//! Several `cyclerhub serve` processes on one PostgreSQL database, serving the same daemon
//! through its list of hub addresses.

use super::faults::PROTOCOL;
use super::harness::{self, Process, WAIT};
use cyclerd_cli::lab::{LabOptions, SimLab};
use cyclerhub::HubStore;
use cyclerhub::testing::PgCluster;
use std::net::SocketAddr;

const SPEED: f64 = 500.0;

/// `cyclerhub serve --db DB --listen ADDR`, once it says it serves.
async fn serve(db: &str, addr: SocketAddr) -> Process {
    serve_with(db, addr, &[]).await
}

/// [`serve`] with more arguments.
async fn serve_with(db: &str, addr: SocketAddr, more: &[String]) -> Process {
    let mut args = vec![
        "serve".to_string(),
        "--db".into(),
        db.to_string(),
        "--listen".into(),
        addr.to_string(),
        "--no-http".into(),
    ];
    args.extend_from_slice(more);
    let mut hub = Process::spawn(env!("CARGO_BIN_EXE_cyclerhub-under-test"), &args);
    hub.wait_for_line("cyclerhub serving").await;
    hub
}

/// Waits until the hubs have acknowledged `more` entries beyond what they had.
async fn acked_more(lab: &SimLab, more: u64) {
    let mut acked = lab.daemon.outbox().acked();
    let target = *acked.borrow() + more;
    tokio::time::timeout(WAIT, acked.wait_for(|a| *a >= target))
        .await
        .expect("the daemon keeps uploading")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_hub_process_is_killed_moves_to_another_on_the_same_database_and_every_sample_lands_once()
 {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PgCluster::shared();
    let db = cluster.create_database();
    let (first, second) = (harness::free_addr(), harness::free_addr());
    let hub_a = serve(&db, first).await;
    let hub_b = serve(&db, second).await;
    let lab = SimLab::start_with(LabOptions {
        channels: 2,
        speed: SPEED,
        data_dir: Some(dir.path().join("daemon")),
        hub_address: Some(first),
        more_hub_addresses: vec![second],
        extra_config: "commit_interval_ms = 20".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    // Ten cycles: the tests cannot end on their own before they are stopped below.
    let tests = lab
        .start_everywhere(&PROTOCOL.replace("repeat: 2", "repeat: 10"), "hubs")
        .await
        .unwrap();
    // Streaming to the first process; kill it mid-stream: the daemon moves to the second.
    acked_more(&lab, 40).await;
    hub_a.kill().await;
    acked_more(&lab, 40).await;
    // The first comes back and the second dies: the daemon goes round to the first again.
    let hub_a = serve(&db, first).await;
    hub_b.kill().await;
    acked_more(&lab, 40).await;
    for channel in lab.channel_ids() {
        lab.daemon.stop_test(&channel, "enough").await.unwrap();
    }
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    let (summary, _, _) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    assert!(hub_a.terminate().await);
    harness::assert_every_sample_once_in(&HubStore::connect(&db).unwrap(), &tests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_process_reading_from_a_streaming_standby_answers_queries_with_what_the_primary_took_in()
 {
    use cyclerd::proto::hub::GetTestRequest;
    use cyclerd::proto::hub::query_client::QueryClient;
    let dir = tempfile::tempdir().unwrap();
    // Commits on the primary wait until the standby replayed them: an ack means the standby
    // has the entry, with no polling of the replay position.
    let primary = PgCluster::start_primary();
    let name = primary.create_replicated_database();
    let standby = primary.standby();
    let (ingest, query) = (harness::free_addr(), harness::free_addr());
    let writer = serve(&primary.url(&name), ingest).await;
    let reader = serve_with(
        &primary.url(&name),
        query,
        &["--read-db".into(), standby.url(&name)],
    )
    .await;
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: SPEED,
        data_dir: Some(dir.path().join("daemon")),
        hub_address: Some(ingest),
        extra_config: "commit_interval_ms = 20".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let tests = lab
        .start_everywhere(&PROTOCOL.replace("repeat: 2", "repeat: 10"), "replica")
        .await
        .unwrap();
    acked_more(&lab, 40).await;
    for channel in lab.channel_ids() {
        lab.daemon.stop_test(&channel, "enough").await.unwrap();
    }
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    let (summary, _, _) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    // Without the primary, the reading process still answers: its queries go to the standby.
    assert!(writer.terminate().await);
    drop(primary);
    let mut client = QueryClient::connect(format!("http://{query}"))
        .await
        .unwrap();
    let counts = harness::assert_every_sample_once_in(
        &HubStore::connect_read_only(&standby.url(&name)).unwrap(),
        &tests,
    );
    for test_id in &tests {
        let detail = client
            .get_test(GetTestRequest {
                test_id: test_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let summary = detail.summary.expect("a summary");
        assert_ne!(summary.state, "running", "{summary:?}");
        assert!(counts[test_id] > 0);
        assert_eq!(summary.sample_count, counts[test_id], "{summary:?}");
        assert_eq!(detail.expected_samples, counts[test_id]);
    }
    assert!(reader.terminate().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_on_one_hub_process_follows_what_another_process_commits_without_waiting_for_its_token_recheck()
 {
    use cyclerd::proto::hub::query_client::QueryClient;
    use cyclerd::proto::hub::{GetTestRequest, TailRequest};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let cluster = PgCluster::shared();
    let db = cluster.create_database();
    let (ingest, query) = (harness::free_addr(), harness::free_addr());
    let writer = serve(&db, ingest).await;
    let reader = serve(&db, query).await;
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        // Slow enough that the test runs for the whole check.
        speed: 20.0,
        data_dir: Some(dir.path().join("daemon")),
        hub_address: Some(ingest),
        extra_config: "commit_interval_ms = 20".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let test_id = lab
        .start_everywhere(&PROTOCOL.replace("repeat: 2", "repeat: 10"), "tail")
        .await
        .unwrap()
        .remove(0);
    let mut client = QueryClient::connect(format!("http://{query}"))
        .await
        .unwrap();
    let known = async {
        while client
            .get_test(GetTestRequest {
                test_id: test_id.clone(),
            })
            .await
            .is_err()
        {
            acked_more(&lab, 1).await;
        }
    };
    tokio::time::timeout(WAIT, known).await.unwrap();
    let mut tail = client
        .tail(TailRequest {
            test_id: test_id.clone(),
            from_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // The process serving the tail took in none of these samples itself; its recheck of the
    // token is 30 s away. Each new batch comes within a few seconds anyway.
    let mut next = 0;
    for _ in 0..5 {
        let batch = tokio::time::timeout(Duration::from_secs(5), tail.message())
            .await
            .expect("the tail wakes when the other process commits")
            .unwrap()
            .expect("the tail goes on while the test runs");
        assert_eq!(batch.first_seq, next, "samples in order, none twice");
        next += batch.voltage_v.len() as u64;
    }
    drop(tail);
    lab.daemon
        .stop_test(&lab.channel_ids()[0], "enough")
        .await
        .unwrap();
    let (summary, _, _) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    assert!(writer.terminate().await);
    assert!(reader.terminate().await);
}

//! Daemon identity at the hub: someone who knows a daemon's id and store epoch (any reader of
//! the lab sees the id; `cyclerctl status` shows the epoch) but not the credential its store
//! made cannot write as it, nor move the point the hub resumes it from.

use super::harness::{self, WAIT};
use cyclerd::proto::ingest::ingest_client::IngestClient;
use cyclerd::proto::ingest::{
    Entry, Event, Hello, UploadRequest, entry::Body, upload_request, upload_response,
};
use cyclerd_cli::lab::{LabOptions, SimLab};
use cyclerhub::HubStore;
use cyclerhub::auth::Role;
use cyclerhub::server::ServeOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

const PROTOCOL: &str = r#"
protocol: Short charge
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - "Rest for 1 minute"
  - "Charge at 1C for 20 minutes"
"#;

/// A plain hub on loopback (requiring tokens or not); stops when the sender is dropped.
async fn hub(db: &Path, require_tokens: bool) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        require_tokens,
        ..ServeOptions::default()
    };
    tokio::spawn(cyclerhub::server::run_with(
        listener,
        HubStore::open(db).unwrap(),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// Runs the short protocol on every channel of `lab` to its end; the tests' ids.
async fn run_a_test(lab: &SimLab) -> Vec<String> {
    let tests = lab.start_everywhere(PROTOCOL, "short.yaml").await.unwrap();
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    tests
}

/// Says Hello as `daemon_id`/`epoch` with a made-up credential (and `token`, if any), then sends
/// an entry with a huge id and one the hub would reject; the status the hub ends the stream
/// with.
async fn impersonate(
    hub: SocketAddr,
    token: Option<&str>,
    daemon_id: &str,
    epoch: u64,
) -> tonic::Status {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let hello = Hello {
        daemon_id: daemon_id.into(),
        store_epoch: epoch,
        daemon_name: "not the daemon".into(),
        lab: String::new(),
        daemon_secret: "f".repeat(64),
    };
    tx.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(hello)),
    })
    .await
    .unwrap();
    for id in [1u64 << 40, (1u64 << 40) + 1] {
        let body = Body::Event(Event {
            test_id: "no-such-test".into(),
            kind: "info".into(),
            ..Event::default()
        });
        tx.send(UploadRequest {
            msg: Some(upload_request::Msg::Entry(Entry {
                id,
                body: Some(body),
                skipped_before: 0,
            })),
        })
        .await
        .unwrap();
    }
    // The request ends after these: a server that answers before reading all of a request
    // still open resets it, which a client under load may see before the answer's status.
    drop(tx);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut client = IngestClient::connect(format!("http://{hub}"))
        .await
        .unwrap();
    let mut responses = match client.upload(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return status,
    };
    match responses.message().await {
        Ok(Some(r)) => match r.msg {
            Some(upload_response::Msg::Resume(_)) => {
                panic!("the hub took the impersonator's Hello")
            }
            other => panic!("unexpected answer to an impersonator: {other:?}"),
        },
        Ok(None) => panic!("the stream ended without a refusal"),
        Err(status) => status,
    }
}

/// The daemon runs a test, a client with its id and epoch tries to write as it, and the
/// daemon runs a second test: the impersonator is refused, the hub's resume point and data
/// for the daemon are what the daemon sent, and every sample of both tests arrives.
async fn impersonation_changes_nothing(
    dir: &Path,
    require_tokens: bool,
    daemon_token: Option<PathBuf>,
    impersonator_token: Option<String>,
) {
    let hub_db = dir.join("hub.sqlite");
    let (addr, stop) = hub(&hub_db, require_tokens).await;
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: 1000.0,
        data_dir: Some(dir.join("pc-1")),
        hub_address: Some(addr),
        hub_token_file: daemon_token,
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let mut tests = run_a_test(&lab).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    assert!(lab.daemon.outbox().caught_up(deadline).await);
    let identity = lab.daemon.outbox().identity();
    let store = HubStore::open(&hub_db).unwrap();
    let resume = store
        .applied_up_to(&identity.daemon_id, identity.epoch)
        .unwrap();
    assert!(resume > 0, "the daemon's first test reached the hub");

    let refused = impersonate(
        addr,
        impersonator_token.as_deref(),
        &identity.daemon_id,
        identity.epoch,
    )
    .await;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("another credential"),
        "{refused:?}"
    );
    // The daemon itself may still be sending (a late event of its first test), so the resume
    // point may grow by its own entries, never to the impersonator's.
    let after = store
        .applied_up_to(&identity.daemon_id, identity.epoch)
        .unwrap();
    assert!(
        (resume..1u64 << 40).contains(&after),
        "the impersonator moved the daemon's resume point: {resume} -> {after}"
    );
    assert!(
        store.events("no-such-test").is_err(),
        "the impersonator's entries were applied"
    );

    tests.extend(run_a_test(&lab).await);
    let (summary, _, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    harness::assert_every_sample_once(&hub_db, &tests);
    assert_eq!(store.rejections().unwrap(), vec![]);
    for test_id in &tests {
        let test = store.test(test_id).unwrap().unwrap();
        assert_eq!(test.daemon_id, identity.daemon_id);
        assert_eq!(test.outcome.as_deref(), Some("finished"), "{test:?}");
    }
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_daemons_id_and_epoch_on_an_open_hub_changes_nothing_and_every_sample_arrives()
 {
    let dir = tempfile::tempdir().unwrap();
    impersonation_changes_nothing(dir.path(), false, None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_daemons_id_and_epoch_and_a_same_lab_token_changes_nothing_and_every_sample_arrives()
 {
    let dir = tempfile::tempdir().unwrap();
    let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
    let token_file = dir.path().join("pc-1.token");
    std::fs::write(
        &token_file,
        store
            .issue_token("cell-ageing", "pc-1", Role::Daemon)
            .unwrap(),
    )
    .unwrap();
    let other = store
        .issue_token("cell-ageing", "pc-2", Role::Daemon)
        .unwrap();
    drop(store);
    impersonation_changes_nothing(dir.path(), true, Some(token_file), Some(other)).await;
}

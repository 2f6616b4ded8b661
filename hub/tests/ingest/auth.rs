//! Tokens: a hub that requires them refuses anonymous, unknown and revoked uploads and queries
//! with UNAUTHENTICATED, binds each daemon to its token's lab, answers each token's queries
//! about its own lab only, lets a reader token read but not upload, and keeps only hashes of
//! secrets.

use super::*;
use cyclerd_proto::hub::query_client::QueryClient;
use cyclerd_proto::hub::{GetTestRequest, ListTestsRequest, ReadSamplesRequest, TailRequest};
use cyclerhub::auth::Role;
use cyclerhub::server::ServeOptions;
use tonic::{Code, Status};

/// A hub requiring tokens, over a fresh database of `backend`.
pub(super) async fn token_hub(backend: Backend) -> Hub {
    let options = ServeOptions {
        require_tokens: true,
        ..ServeOptions::default()
    };
    Hub::start_with(backend, options).await
}

/// Opens an Upload stream with `token` (if any) and says Hello as `daemon_id`; the hub's first
/// answer: a resume point, or the status it refused with.
async fn hello_with(hub: &Hub, token: Option<&str>, daemon_id: &str) -> Result<u64, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    tx.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: daemon_id.into(),
            daemon_secret: secret_of(daemon_id),
            store_epoch: 1,
            daemon_name: daemon_id.into(),
            lab: String::new(),
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut responses = hub.client().await.upload(request).await?.into_inner();
    let first = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("the hub answers")?;
    match first.and_then(|r| r.msg) {
        Some(upload_response::Msg::Resume(r)) => Ok(r.applied_up_to),
        other => panic!("expected a resume point, got {other:?}"),
    }
}

async fn uploads_need_a_valid_unrevoked_token_and_say_so(backend: Backend) {
    let mut hub = token_hub(backend).await;
    let missing = hello_with(&hub, None, "daemon-a").await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("cyclerhub token issue"),
        "{}",
        missing.message()
    );
    let forged = "cyh_0123456789ab_".to_string() + &"0".repeat(64);
    let unknown = hello_with(&hub, Some(&forged), "daemon-a")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let token = hub
        .store
        .issue_token("cell-ageing", "daemon-a", Role::Daemon)
        .unwrap();
    assert_eq!(hello_with(&hub, Some(&token), "daemon-a").await.unwrap(), 0);
    hub.store.revoke_token("daemon-a").unwrap();
    let revoked = hello_with(&hub, Some(&token), "daemon-a")
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert!(
        revoked.message().contains("revoked"),
        "{}",
        revoked.message()
    );
    assert!(
        hub.store
            .issue_token("cell-ageing", "daemon-a", Role::Daemon)
            .is_err(),
        "names stay unique"
    );
    hub.shutdown().await;
}

async fn a_daemon_belongs_to_the_lab_of_its_first_token(backend: Backend) {
    let mut hub = token_hub(backend).await;
    let ageing = hub
        .store
        .issue_token("cell-ageing", "pc-1", Role::Daemon)
        .unwrap();
    let formation = hub
        .store
        .issue_token("formation", "pc-2", Role::Daemon)
        .unwrap();
    assert_eq!(
        hello_with(&hub, Some(&ageing), "daemon-a").await.unwrap(),
        0
    );
    let denied = hello_with(&hub, Some(&formation), "daemon-a")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("cell-ageing"),
        "{}",
        denied.message()
    );
    assert_eq!(
        hello_with(&hub, Some(&formation), "daemon-b")
            .await
            .unwrap(),
        0
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn the_hub_keeps_only_a_hash_of_each_token_secret() {
    let hub = Hub::start(Backend::Sqlite).await;
    let token = hub.store.issue_token("lab", "pc-1", Role::Daemon).unwrap();
    let secret = token.rsplit('_').next().unwrap().to_string();
    let listed = hub.store.tokens().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(token.contains(&listed[0].token_id));
    let db_bytes = std::fs::read(&hub.db).unwrap();
    let wal = std::fs::read(format!("{}-wal", hub.db)).unwrap_or_default();
    for bytes in [db_bytes, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is not stored"
        );
    }
}

async fn tests_are_listed_by_the_lab_of_the_daemon_that_ran_them(backend: Backend) {
    let mut hub = token_hub(backend).await;
    let token = hub
        .store
        .issue_token("cell-ageing", "pc-1", Role::Daemon)
        .unwrap();
    let mut up = upload_as(&hub, &token, "daemon-a").await;
    up.send_entries([registered(1, T1)]).await;
    up.until_ack(1).await;
    let mut q = QueryClient::new(hub.channel().await);
    let ours = q
        .list_tests(bearer(list("cell-ageing"), Some(&token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ours.tests.len(), 1);
    assert_eq!(ours.tests[0].lab, "cell-ageing");
    hub.shutdown().await;
}

/// `message` with `token` (if any) as its bearer token.
pub(super) fn bearer<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// A ListTests request naming `lab` (empty: any).
fn list(lab: &str) -> ListTestsRequest {
    ListTestsRequest {
        lab: lab.into(),
        ..Default::default()
    }
}

/// An Upload stream with `token` that said Hello as `daemon_id` and got its resume point.
pub(super) async fn upload_as(hub: &Hub, token: &str, daemon_id: &str) -> Upload {
    let (tx, rx) = mpsc::channel(64);
    let responses = hub
        .client()
        .await
        .upload(bearer(ReceiverStream::new(rx), Some(token)))
        .await
        .unwrap()
        .into_inner();
    let mut up = Upload { tx, responses };
    up.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: daemon_id.into(),
            daemon_secret: secret_of(daemon_id),
            store_epoch: 1,
            daemon_name: daemon_id.into(),
            lab: String::new(),
        })),
    })
    .await;
    assert!(matches!(up.next().await, upload_response::Msg::Resume(_)));
    up
}

/// Two labs' tests in a hub requiring tokens: lab `cell-ageing`'s daemon ran T1 (finished, 300
/// samples), lab `formation`'s ran T2 (running, 100 samples). The hub and a reader token of
/// each lab.
async fn two_labs(backend: Backend) -> (Hub, String, String) {
    let hub = token_hub(backend).await;
    let issue = |lab: &str, name: &str, role| hub.store.issue_token(lab, name, role).unwrap();
    let ageing = issue("cell-ageing", "pc-1", Role::Daemon);
    let formation = issue("formation", "pc-2", Role::Daemon);
    let mut up = upload_as(&hub, &ageing, "daemon-a").await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;
    let mut up = upload_as(&hub, &formation, "daemon-b").await;
    up.send_entries([registered(1, T2), samples(2, T2, 0, 100)])
        .await;
    up.until_ack(2).await;
    let ageing_reader = issue("cell-ageing", "ana", Role::Reader);
    let formation_reader = issue("formation", "bo", Role::Reader);
    (hub, ageing_reader, formation_reader)
}

/// The first answer of a sample stream.
async fn first(mut stream: Streaming<SampleBatch>) -> Result<Option<SampleBatch>, Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("the hub answers")
}

/// How GetTest, ReadSamples and Tail of `test_id` end for `token`: each must be refused before
/// sending anything; their statuses.
async fn refusals(hub: &Hub, token: Option<&str>, test_id: &str) -> [Status; 3] {
    let mut q = QueryClient::new(hub.channel().await);
    let id = || test_id.to_string();
    let get = q
        .get_test(bearer(GetTestRequest { test_id: id() }, token))
        .await
        .map(|r| format!("{:?}", r.into_inner()));
    let read = match q
        .read_samples(bearer(
            ReadSamplesRequest {
                test_id: id(),
                ..Default::default()
            },
            token,
        ))
        .await
    {
        Ok(stream) => first(stream.into_inner()).await,
        Err(status) => Err(status),
    };
    let tail = match q
        .tail(bearer(
            TailRequest {
                test_id: id(),
                from_seq: 0,
            },
            token,
        ))
        .await
    {
        Ok(stream) => first(stream.into_inner()).await,
        Err(status) => Err(status),
    };
    [
        get.expect_err("GetTest is refused"),
        read.expect_err("ReadSamples is refused before any sample"),
        tail.expect_err("Tail is refused before any sample"),
    ]
}

async fn queries_without_a_valid_unrevoked_token_are_unauthenticated(backend: Backend) {
    let (mut hub, ageing, _) = two_labs(backend).await;
    hub.store.revoke_token("ana").unwrap();
    let forged = "cyh_0123456789ab_".to_string() + &"0".repeat(64);
    let mut q = QueryClient::new(hub.channel().await);
    for (token, says) in [
        (None, "cyclerhub token issue"),
        (Some(forged.as_str()), "not valid"),
        (Some(ageing.as_str()), "revoked"),
    ] {
        let listed = q.list_tests(bearer(list(""), token)).await.unwrap_err();
        let [get, read, tail] = refusals(&hub, token, T1).await;
        for status in [listed, get, read, tail] {
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{token:?}: {status:?}"
            );
            assert!(status.message().contains(says), "{}", status.message());
        }
    }
    hub.shutdown().await;
}

async fn a_token_lists_only_the_tests_and_cells_of_its_own_lab(backend: Backend) {
    let (mut hub, ageing, formation) = two_labs(backend).await;
    let mut q = QueryClient::new(hub.channel().await);
    for (token, lab, test_id) in [(&ageing, "cell-ageing", T1), (&formation, "formation", T2)] {
        for asked in ["", lab] {
            let tests = q
                .list_tests(bearer(list(asked), Some(token)))
                .await
                .unwrap()
                .into_inner()
                .tests;
            let listed: Vec<(&str, &str)> = tests
                .iter()
                .map(|t| (t.test_id.as_str(), t.lab.as_str()))
                .collect();
            assert_eq!(listed, [(test_id, lab)], "asked for lab {asked:?}");
        }
    }
    let other = q
        .list_tests(bearer(list("formation"), Some(&ageing)))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(
        other.message().contains("cell-ageing") && other.message().contains("formation"),
        "{}",
        other.message()
    );
    let cells = |lab: &str| {
        bearer(
            cyclerd_proto::hub::ListCellsRequest { lab: lab.into() },
            Some(&ageing),
        )
    };
    let ours = q.list_cells(cells("")).await.unwrap().into_inner().cells;
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].cell_id, "NMC-0042");
    let theirs = q.list_cells(cells("formation")).await.unwrap_err();
    assert_eq!(theirs.code(), Code::PermissionDenied, "{theirs:?}");
    hub.shutdown().await;
}

async fn another_labs_test_or_an_unknown_id_is_denied_to_get_read_and_tail_alike(backend: Backend) {
    let (mut hub, ageing, _) = two_labs(backend).await;
    let theirs = refusals(&hub, Some(&ageing), T2).await;
    let unknown = refusals(&hub, Some(&ageing), T3).await;
    for (t, u) in theirs.iter().zip(&unknown) {
        assert_eq!(t.code(), Code::PermissionDenied, "{t:?}");
        assert!(t.message().contains("cell-ageing"), "{}", t.message());
        assert_eq!(
            (u.code(), u.message().replace(T3, "ID")),
            (t.code(), t.message().replace(T2, "ID")),
            "an unknown id and another lab's test are refused alike"
        );
    }
    // Its own lab's test it reads in full.
    let mut q = QueryClient::new(hub.channel().await);
    let own = ReadSamplesRequest {
        test_id: T1.into(),
        ..Default::default()
    };
    let mut stream = q
        .read_samples(bearer(own, Some(&ageing)))
        .await
        .unwrap()
        .into_inner();
    let mut read = 0;
    while let Some(b) = stream.message().await.unwrap() {
        read += b.voltage_v.len();
    }
    assert_eq!(read, 300);
    let detail = q
        .get_test(bearer(GetTestRequest { test_id: T1.into() }, Some(&ageing)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.summary.unwrap().lab, "cell-ageing");
    hub.shutdown().await;
}

async fn a_reader_token_reads_but_cannot_upload_and_its_upload_stores_nothing(backend: Backend) {
    let (mut hub, ageing, _) = two_labs(backend).await;
    let (tx, rx) = mpsc::channel(16);
    tx.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: "daemon-r".into(),
            daemon_secret: secret_of("daemon-r"),
            store_epoch: 1,
            daemon_name: "analyst's laptop".into(),
            lab: String::new(),
        })),
    })
    .await
    .unwrap();
    for e in whole_test(0, T3) {
        tx.send(UploadRequest {
            msg: Some(upload_request::Msg::Entry(e)),
        })
        .await
        .unwrap();
    }
    let refused = match hub
        .client()
        .await
        .upload(bearer(ReceiverStream::new(rx), Some(&ageing)))
        .await
    {
        Err(status) => status,
        Ok(responses) => {
            let mut up = Upload {
                tx,
                responses: responses.into_inner(),
            };
            up.final_status().await
        }
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("read-only"),
        "{}",
        refused.message()
    );
    let stored: Vec<String> = hub
        .store
        .list_tests()
        .unwrap()
        .into_iter()
        .map(|t| t.test_id)
        .collect();
    assert_eq!(
        stored.len(),
        2,
        "nothing of the upload is stored: {stored:?}"
    );
    assert!(!stored.contains(&T3.to_string()));
    assert!(!hub.store.daemon_labs().unwrap().contains_key("daemon-r"));
    assert_eq!(hub.store.applied_up_to("daemon-r", 1).unwrap(), 0);
    // And it reads its lab's tests.
    let mut q = QueryClient::new(hub.channel().await);
    let tail = q
        .tail(bearer(
            TailRequest {
                test_id: T1.into(),
                from_seq: 0,
            },
            Some(&ageing),
        ))
        .await
        .unwrap()
        .into_inner();
    let batch = first(tail).await.unwrap().expect("a first batch");
    assert_eq!(batch.first_seq, 0);
    hub.shutdown().await;
}

/// Says Hello as `daemon_id` naming `lab` (its hub.lab), with `token` if any; the hub's answer.
async fn hello_as(
    hub: &Hub,
    token: Option<&str>,
    daemon_id: &str,
    lab: &str,
) -> Result<Upload, Status> {
    let (tx, rx) = mpsc::channel(64);
    tx.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: daemon_id.into(),
            daemon_secret: secret_of(daemon_id),
            store_epoch: 1,
            daemon_name: daemon_id.into(),
            lab: lab.into(),
        })),
    })
    .await
    .unwrap();
    let responses = hub
        .client()
        .await
        .upload(bearer(ReceiverStream::new(rx), token))
        .await?
        .into_inner();
    let mut up = Upload { tx, responses };
    match up.try_next().await? {
        Some(upload_response::Msg::Resume(_)) => Ok(up),
        other => panic!("expected a resume point, got {other:?}"),
    }
}

async fn a_token_cannot_claim_a_daemon_that_uploaded_before_tokens_until_it_is_assigned(
    backend: Backend,
) {
    let db = Database::new(backend);
    let mut open_hub = Hub::start_at(&db).await;
    let (mut up, _) = open_hub.upload("daemon-b", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;
    drop(up);
    open_hub.shutdown().await;

    let options = ServeOptions {
        require_tokens: true,
        ..ServeOptions::default()
    };
    let mut hub = Hub::serve(&db, options).await;
    let intruder = hub
        .store
        .issue_token("formation", "intruder", Role::Daemon)
        .unwrap();
    let refused = hello_as(&hub, Some(&intruder), "daemon-b", "")
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("cyclerhub assign"),
        "{refused:?}"
    );
    assert!(!hub.store.daemon_labs().unwrap().contains_key("daemon-b"));
    let reader = hub
        .store
        .issue_token("formation", "intruder-reader", Role::Reader)
        .unwrap();
    let denied = QueryClient::new(hub.channel().await)
        .get_test(bearer(GetTestRequest { test_id: T1.into() }, Some(&reader)))
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "the test stays unreadable"
    );

    let unknown = hub
        .store
        .assign_daemon("daemon-typo", "cell-ageing")
        .unwrap_err();
    assert!(unknown.to_string().contains("ever connected"), "{unknown}");
    let cells_of = |lab: &str| -> Vec<(String, String)> {
        cyclerhub::query::cells_of(&hub.store, lab)
            .unwrap()
            .into_iter()
            .map(|c| (c.lab, c.cell_id))
            .collect()
    };
    assert_eq!(cells_of(""), [(String::new(), "NMC-0042".to_string())]);
    assert_eq!(
        hub.store.assign_daemon("daemon-b", "cell-ageing").unwrap(),
        None
    );
    let ageing_cell = [("cell-ageing".to_string(), "NMC-0042".to_string())];
    assert_eq!(cells_of("cell-ageing"), ageing_cell, "its cell came along");
    let own = hub
        .store
        .issue_token("cell-ageing", "pc-b", Role::Daemon)
        .unwrap();
    hello_as(&hub, Some(&own), "daemon-b", "").await.unwrap();
    // A person may move it: its tests go with it.
    assert_eq!(
        hub.store.assign_daemon("daemon-b", "formation").unwrap(),
        Some("cell-ageing".to_string())
    );
    let moved = hello_as(&hub, Some(&own), "daemon-b", "")
        .await
        .err()
        .expect("refused");
    assert_eq!(moved.code(), Code::PermissionDenied, "{moved:?}");
    assert_eq!(
        cells_of("formation"),
        [("formation".to_string(), "NMC-0042".to_string())]
    );
    assert!(
        cells_of("cell-ageing").is_empty(),
        "the lab it left no longer tested the cell"
    );
    assert_eq!(
        cells_of(""),
        [("formation".to_string(), "NMC-0042".to_string())],
        "nor keeps a row of it"
    );
    hub.shutdown().await;
}

async fn two_labs_naming_a_cell_alike_each_keep_their_own_cell(backend: Backend) {
    let mut hub = token_hub(backend).await;
    let issue = |lab: &str, name: &str, role| hub.store.issue_token(lab, name, role).unwrap();
    let labs = [
        ("cell-ageing", "daemon-a", T1, "LG"),
        ("formation", "daemon-b", T2, "Samsung"),
    ];
    for (lab, daemon, test_id, maker) in labs {
        let token = issue(lab, &format!("pc-{lab}"), Role::Daemon);
        let mut up = upload_as(&hub, &token, daemon).await;
        let mut e = registered(1, test_id);
        if let Some(Body::TestRegistered(t)) = &mut e.body {
            t.metadata
                .insert("secondary.manufacturer".into(), maker.into());
        }
        up.send_entries([e]).await;
        up.until_ack(1).await;
    }
    let mut q = QueryClient::new(hub.channel().await);
    for (lab, _, _, maker) in labs {
        let reader = issue(lab, &format!("reader-{lab}"), Role::Reader);
        let cells = q
            .list_cells(bearer(
                cyclerd_proto::hub::ListCellsRequest { lab: String::new() },
                Some(&reader),
            ))
            .await
            .unwrap()
            .into_inner()
            .cells;
        let seen: Vec<(&str, &str, &str)> = cells
            .iter()
            .map(|c| (c.lab.as_str(), c.cell_id.as_str(), c.manufacturer.as_str()))
            .collect();
        assert_eq!(seen, [(lab, "NMC-0042", maker)]);
    }
    assert_eq!(hub.store.cells().unwrap().len(), 2);
    hub.shutdown().await;
}

async fn a_daemon_names_its_lab_to_a_hub_without_tokens_and_must_match_its_token(backend: Backend) {
    let mut open_hub = Hub::start(backend).await;
    let up = hello_as(&open_hub, None, "daemon-c", "cell-ageing")
        .await
        .unwrap();
    up.send_entries([registered(1, T1)]).await;
    let mut up = up;
    up.until_ack(1).await;
    assert_eq!(
        open_hub
            .store
            .daemon_labs()
            .unwrap()
            .get("daemon-c")
            .map(String::as_str),
        Some("cell-ageing")
    );
    assert!(
        open_hub
            .store
            .labs()
            .unwrap()
            .iter()
            .any(|(l, _)| l == "cell-ageing")
    );
    // A daemon token presented to a hub that does not require one still says the lab.
    let token = open_hub
        .store
        .issue_token("formation", "pc-e", Role::Daemon)
        .unwrap();
    hello_as(&open_hub, Some(&token), "daemon-e", "")
        .await
        .unwrap();
    assert_eq!(
        open_hub
            .store
            .daemon_labs()
            .unwrap()
            .get("daemon-e")
            .map(String::as_str),
        Some("formation")
    );
    open_hub.shutdown().await;

    let mut hub = token_hub(backend).await;
    let token = hub
        .store
        .issue_token("cell-ageing", "pc-d", Role::Daemon)
        .unwrap();
    let mismatch = hello_as(&hub, Some(&token), "daemon-d", "formation")
        .await
        .err()
        .expect("refused");
    assert_eq!(mismatch.code(), Code::PermissionDenied, "{mismatch:?}");
    assert!(mismatch.message().contains("hub.lab"), "{mismatch:?}");
    hub.shutdown().await;
}

/// A hub requiring tokens that checks an open stream's token again after `recheck`, with a
/// daemon token of lab `cell-ageing` named `pc-1` and an upload stream of `daemon-a` with it
/// that registered T1.
async fn revocation_hub(backend: Backend, recheck: std::time::Duration) -> (Hub, String, Upload) {
    let options = ServeOptions {
        require_tokens: true,
        token_recheck: recheck,
        ..ServeOptions::default()
    };
    let hub = Hub::start_with(backend, options).await;
    let token = hub
        .store
        .issue_token("cell-ageing", "pc-1", Role::Daemon)
        .unwrap();
    let mut up = upload_as(&hub, &token, "daemon-a").await;
    up.send_entries([registered(1, T1)]).await;
    up.until_ack(1).await;
    (hub, token, up)
}

/// [`revocation_hub`] checking tokens at every use, with a reader token ("ana") of its lab.
async fn reader_hub(backend: Backend) -> (Hub, String, Upload) {
    let (hub, _, up) = revocation_hub(backend, std::time::Duration::ZERO).await;
    let reader = hub
        .store
        .issue_token("cell-ageing", "ana", Role::Reader)
        .unwrap();
    (hub, reader, up)
}

async fn revoking_a_token_ends_the_upload_stream_already_open_with_it(backend: Backend) {
    // Checked again before every batch, so the test needs no clock.
    let (mut hub, _, mut up) = revocation_hub(backend, std::time::Duration::ZERO).await;
    hub.store.revoke_token("pc-1").unwrap();
    up.send_entries([samples(2, T1, 0, 10)]).await;
    let ended = up.final_status().await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("revoked"), "{ended:?}");
    assert_eq!(
        hub.store.sample_count(T1).unwrap(),
        0,
        "nothing after the revocation"
    );
    hub.shutdown().await;
}

async fn revoking_a_reader_token_ends_the_tail_it_follows_a_test_with(backend: Backend) {
    let (mut hub, reader, mut up) = reader_hub(backend).await;
    up.send_entries([samples(2, T1, 0, 10)]).await;
    up.until_ack(2).await;
    let mut tail = QueryClient::new(hub.channel().await)
        .tail(bearer(
            TailRequest {
                test_id: T1.into(),
                from_seq: 0,
            },
            Some(&reader),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap()
        .expect("what the hub holds");
    assert_eq!(first.voltage_v.len(), 10);
    hub.store.revoke_token("ana").unwrap();
    up.send_entries([samples(3, T1, 10, 10)]).await;
    up.until_ack(3).await;
    let ended = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    hub.shutdown().await;
}

async fn revoking_a_reader_token_ends_a_long_read_within_a_page(backend: Backend) {
    let (mut hub, reader, mut up) = reader_hub(backend).await;
    let (per_batch, batches) = (30_000, 20);
    up.send_entries((0..batches).map(|k| samples(2 + k, T1, k * per_batch, per_batch as usize)))
        .await;
    up.until_ack(batches + 1).await;
    let total = batches * per_batch;
    assert!(total > 2 * cyclerhub::query::PAGE, "more than two pages");
    let mut read = QueryClient::new(hub.channel().await)
        .read_samples(bearer(
            ReadSamplesRequest {
                test_id: T1.into(),
                ..Default::default()
            },
            Some(&reader),
        ))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, read.message())
        .await
        .unwrap()
        .unwrap()
        .expect("the first batch");
    hub.store.revoke_token("ana").unwrap();
    let mut got = first.voltage_v.len() as u64;
    let ended = loop {
        match tokio::time::timeout(WAIT, read.message()).await.unwrap() {
            Ok(Some(b)) => got += b.voltage_v.len() as u64,
            Ok(None) => panic!("the read ran to its end ({got} samples) with a revoked token"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(
        got <= 2 * cyclerhub::query::PAGE,
        "{got} samples after revocation"
    );
    hub.shutdown().await;
}

async fn idle_streams_end_after_their_token_is_revoked(backend: Backend) {
    let (mut hub, daemon, mut up) =
        revocation_hub(backend, std::time::Duration::from_millis(100)).await;
    let mut tail = QueryClient::new(hub.channel().await)
        .tail(bearer(
            TailRequest {
                test_id: T1.into(),
                from_seq: 0,
            },
            Some(&daemon),
        ))
        .await
        .unwrap()
        .into_inner();
    hub.store.revoke_token("pc-1").unwrap();
    // Nothing more is sent or stored: both streams end by themselves.
    let ended = up.final_status().await;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    let ended = tokio::time::timeout(WAIT, tail.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    hub.shutdown().await;
}

on_both_backends!(
    idle_streams_end_after_their_token_is_revoked,
    revoking_a_reader_token_ends_the_tail_it_follows_a_test_with,
    revoking_a_reader_token_ends_a_long_read_within_a_page,
    revoking_a_token_ends_the_upload_stream_already_open_with_it,
    a_token_cannot_claim_a_daemon_that_uploaded_before_tokens_until_it_is_assigned,
    a_daemon_names_its_lab_to_a_hub_without_tokens_and_must_match_its_token,
    uploads_need_a_valid_unrevoked_token_and_say_so,
    a_daemon_belongs_to_the_lab_of_its_first_token,
    tests_are_listed_by_the_lab_of_the_daemon_that_ran_them,
    queries_without_a_valid_unrevoked_token_are_unauthenticated,
    a_token_lists_only_the_tests_and_cells_of_its_own_lab,
    two_labs_naming_a_cell_alike_each_keep_their_own_cell,
    another_labs_test_or_an_unknown_id_is_denied_to_get_read_and_tail_alike,
    a_reader_token_reads_but_cannot_upload_and_its_upload_stores_nothing,
);

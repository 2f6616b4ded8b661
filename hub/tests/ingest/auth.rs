//! Daemon tokens: a hub that requires them refuses anonymous, unknown and revoked uploads with
//! UNAUTHENTICATED, binds each daemon to its token's lab, and keeps only hashes of secrets.

use super::*;
use cyclerhub::server::ServeOptions;
use tonic::Code;

/// A hub requiring tokens, over a fresh database of `backend`.
async fn token_hub(backend: Backend) -> Hub {
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
            store_epoch: 1,
            daemon_name: daemon_id.into(),
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
    let token = hub.store.issue_token("cell-ageing", "daemon-a").unwrap();
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
        hub.store.issue_token("cell-ageing", "daemon-a").is_err(),
        "names stay unique"
    );
    hub.shutdown().await;
}

async fn a_daemon_belongs_to_the_lab_of_its_first_token(backend: Backend) {
    let mut hub = token_hub(backend).await;
    let ageing = hub.store.issue_token("cell-ageing", "pc-1").unwrap();
    let formation = hub.store.issue_token("formation", "pc-2").unwrap();
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
    let token = hub.store.issue_token("lab", "pc-1").unwrap();
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
    let token = hub.store.issue_token("cell-ageing", "pc-1").unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let responses = hub
        .client()
        .await
        .upload(request)
        .await
        .unwrap()
        .into_inner();
    let mut up = Upload { tx, responses };
    up.send(UploadRequest {
        msg: Some(upload_request::Msg::Hello(Hello {
            daemon_id: "daemon-a".into(),
            store_epoch: 1,
            daemon_name: "pc-1".into(),
        })),
    })
    .await;
    assert!(matches!(up.next().await, upload_response::Msg::Resume(_)));
    up.send_entries([registered(1, T1)]).await;
    up.until_ack(1).await;
    let mut q = cyclerd_proto::hub::query_client::QueryClient::new(hub.channel().await);
    let list = |lab: &str| cyclerd_proto::hub::ListTestsRequest {
        lab: lab.into(),
        ..Default::default()
    };
    let ours = q
        .list_tests(list("cell-ageing"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ours.tests.len(), 1);
    assert_eq!(ours.tests[0].lab, "cell-ageing");
    let theirs = q.list_tests(list("formation")).await.unwrap().into_inner();
    assert!(theirs.tests.is_empty());
    hub.shutdown().await;
}

on_both_backends!(
    uploads_need_a_valid_unrevoked_token_and_say_so,
    a_daemon_belongs_to_the_lab_of_its_first_token,
    tests_are_listed_by_the_lab_of_the_daemon_that_ran_them,
);

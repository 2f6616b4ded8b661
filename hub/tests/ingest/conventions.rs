//! What every port and process of the hub shares with the daemon: gRPC health and reflection
//! for exactly the services a port serves, and a log fit for a file, a pipe or journald.

use super::*;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Every service the hub's gRPC port serves.
const SERVED: [&str; 5] = [
    "cyclerd.hub.v1.Query",
    "cyclerd.ingest.v1.Ingest",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[tokio::test]
async fn health_reports_every_service_the_hub_port_serves_as_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut health = HealthClient::new(hub.channel().await);
    for service in SERVED.into_iter().chain([""]) {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "{service:?}");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn reflection_v1_lists_exactly_the_services_the_hub_port_serves() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(hub.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1 is served")
        .into_inner();
    let resp: ServerReflectionResponse = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response {resp:?}");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, SERVED);
    hub.shutdown().await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_exactly_the_services_the_hub_port_serves() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};

    let mut hub = Hub::start(Backend::Sqlite).await;
    let mut client = ServerReflectionClient::new(hub.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha is served")
        .into_inner();
    let resp: ServerReflectionResponse = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response {resp:?}");
    };
    let mut names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, SERVED);
    hub.shutdown().await;
}

/// `cyclerhub serve` on loopback with `extra` arguments, its stderr a pipe (as a file or
/// journald gets it): its log lines up to the one saying it serves, then it is killed.
async fn hub_log_until_serving(extra: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .arg("serve")
        .args(extra)
        .args(["--db", &db.display().to_string()])
        .args(["--listen", "127.0.0.1:0", "--no-http"])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run cyclerhub");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("cyclerhub logs in time")
            .expect("read its stderr");
        let Some(line) = line else {
            panic!("cyclerhub ended before serving; its log: {seen:#?}");
        };
        let serving = line.contains("cyclerhub serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn the_hub_log_on_a_pipe_is_plain_text_without_colour_codes() {
    let lines = hub_log_until_serving(&[]).await;
    for line in &lines {
        assert!(!line.contains('\x1b'), "colour codes in {line:?}");
    }
    assert!(
        lines.iter().any(|l| l.contains("INFO")),
        "the level is written as text: {lines:#?}"
    );
}

#[tokio::test]
async fn the_hub_log_format_json_writes_one_json_object_per_line_with_its_level() {
    let lines = hub_log_until_serving(&["--log-format", "json"]).await;
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let serving = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cyclerhub serving"))
        })
        .expect("the serving line");
    assert_eq!(serving["level"], "INFO", "{serving}");
}

//! What the daemon's ports and process share with the hub: gRPC health and reflection for
//! exactly the services the control port serves, and a log fit for a file, a pipe or journald.

use super::*;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Every service the control port serves (and nothing of the hub's).
const SERVED: [&str; 4] = [
    "cyclerd.daemon.v1.Control",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A one-channel lab whose control API serves on a loopback port until the sender drops.
async fn control_channel() -> (
    SimLab,
    tonic::transport::Channel,
    tokio::sync::oneshot::Sender<()>,
) {
    let lab = SimLab::start(1, 2.5, 10.0, None).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cyclerd::control::serve(
        lab.daemon.clone(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (lab, channel, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_every_service_the_control_port_serves_as_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let (_lab, channel, _stop) = control_channel().await;
    let mut health = HealthClient::new(channel);
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
    // The hub's services are not the daemon's.
    let err = health
        .check(HealthCheckRequest {
            service: "cyclerd.hub.v1.Query".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_exactly_the_services_the_control_port_serves() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let (_lab, channel, _stop) = control_channel().await;
    let mut client = ServerReflectionClient::new(channel);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1alpha_lists_exactly_the_services_the_control_port_serves() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::{ServerReflectionRequest, ServerReflectionResponse};

    let (_lab, channel, _stop) = control_channel().await;
    let mut client = ServerReflectionClient::new(channel);
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
}

/// `cyclerd run` of a lab with `extra` arguments, its stderr a pipe (as a file or journald gets
/// it): its log lines up to the one saying it runs, then it is killed.
async fn daemon_log_until_running(extra: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n[hub]\naddress = \"http://127.0.0.1:9\"\n[control]\n\
             listen = \"127.0.0.1:0\"\n[limits]\nvoltage_min = 2.5\nvoltage_max = 4.2\n\
             current_max = 5.0\n",
            dir.path().join("outbox.sqlite")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(extra)
        .args(["run", "--config"])
        .arg(&path)
        .env("CYCLERD__WEB__LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout_at(deadline(), lines.next_line())
            .await
            .expect("cyclerd logs in time")
            .unwrap();
        let Some(line) = line else {
            panic!("cyclerd ended before running; its log: {seen:#?}");
        };
        let running = line.contains("cyclerd running");
        seen.push(line);
        if running {
            break;
        }
    }
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn the_daemon_log_on_a_pipe_is_plain_text_without_colour_codes() {
    let lines = daemon_log_until_running(&[]).await;
    for line in &lines {
        assert!(!line.contains('\x1b'), "colour codes in {line:?}");
    }
    assert!(
        lines.iter().any(|l| l.contains("INFO")),
        "the level is written as text: {lines:#?}"
    );
}

#[tokio::test]
async fn the_daemon_log_format_json_writes_one_json_object_per_line_with_its_level() {
    let lines = daemon_log_until_running(&["--log-format", "json"]).await;
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let running = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cyclerd running"))
        })
        .expect("the running line");
    assert_eq!(running["level"], "INFO", "{running}");
}

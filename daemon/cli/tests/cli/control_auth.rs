//! The control API's tokens over real TCP on loopback: the rule that a listener beyond loopback
//! applies is forced here with `require_tokens` (in process, or in `cyclerd run`'s
//! configuration), since a test machine may have loopback only; the config tests check that
//! the address derives it.

use super::*;
use cyclerd::control::access::Access;
use cyclerd::control::tokens::{Role, TokenStore};
use cyclerd::control::{ServeOptions, serve_with};
use tonic::Code;
use tonic::transport::Channel;

const PROTOCOL: &str = r#"
protocol: Long charge
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Charge at C/10 until 4.2 V"]
"#;

fn start_request() -> StartTestRequest {
    let metadata = [
        ("cell_id", "C1"),
        ("operator", "op"),
        ("owner", "lab"),
        ("objective", "auth"),
        ("chemistry", "NMC"),
        ("nominal_capacity_ah", "2.5"),
    ];
    StartTestRequest {
        channel_id: "psb1/1".into(),
        protocol_yaml: PROTOCOL.into(),
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        params: Default::default(),
    }
}

fn stop_request() -> StopTestRequest {
    StopTestRequest {
        channel_id: "psb1/1".into(),
        reason: "by the operator".into(),
    }
}

/// A request carrying `token` (none for `None`).
fn with<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = cyclerd::proto::bearer(token).unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn secret_of(token: &str) -> &str {
    token.rsplit('_').next().unwrap()
}

/// A one-channel lab whose control API requires tokens from `tokens`, on a loopback port,
/// with TLS when `tls` is given; serves until the sender drops.
async fn lab_requiring_tokens(
    tokens: &TokenStore,
    tls: Option<tonic::transport::Identity>,
) -> (
    SimLab,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let lab = SimLab::start(1, 2.5, 10.0, None).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        tls,
        access: Some(Access::with_tokens(tokens.clone())),
        ..ServeOptions::default()
    };
    tokio::spawn(serve_with(lab.daemon.clone(), listener, options, async {
        let _ = stopped.await;
    }));
    (lab, addr, stop)
}

async fn client(addr: std::net::SocketAddr) -> ControlClient<Channel> {
    ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_token_reads_but_starting_stopping_or_retrying_with_it_is_permission_denied() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (_, reader) = tokens.issue("rita", Role::Reader).unwrap();
    let (lab, addr, _stop) = lab_requiring_tokens(&tokens, None).await;
    let mut c = client(addr).await;
    let token = Some(reader.as_str());
    let status = c
        .get_status(with(GetStatusRequest {}, token))
        .await
        .unwrap();
    assert_eq!(status.into_inner().channels.len(), 1);
    c.list_channels(with(ListChannelsRequest {}, token))
        .await
        .unwrap();
    c.get_outbox(with(GetOutboxRequest {}, token))
        .await
        .unwrap();
    let mut watch = c
        .watch(with(WatchRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());

    let denied = [
        c.start_test(with(start_request(), token))
            .await
            .unwrap_err(),
        c.stop_test(with(stop_request(), token)).await.unwrap_err(),
        c.retry_dead_letters(with(RetryDeadLettersRequest {}, token))
            .await
            .unwrap_err(),
    ];
    for status in denied {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("needs an operator's token"),
            "{}",
            status.message()
        );
        assert!(!status.message().contains(secret_of(&reader)));
    }
    assert_eq!(lab.daemon.snapshot("psb1/1").unwrap().state, "idle");
    lab.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_token_or_with_a_wrong_one_is_unauthenticated_and_never_echoes_it() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (record, _) = tokens.issue("otto", Role::Operator).unwrap();
    let (lab, addr, _stop) = lab_requiring_tokens(&tokens, None).await;
    let mut c = client(addr).await;
    let wrong_secret = "ab".repeat(32);
    let wrong = format!("cyd_{}_{wrong_secret}", record.id);
    for token in [None, Some(wrong.as_str()), Some("not-a-token")] {
        let refused = c
            .get_status(with(GetStatusRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{token:?}");
        let message = refused.message();
        assert!(
            !message.contains(&wrong_secret) && !message.contains("not-a-token"),
            "{message}"
        );
        let refused = c
            .start_test(with(start_request(), token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{token:?}");
    }
    let missing = c.get_status(GetStatusRequest {}).await.unwrap_err();
    assert!(
        missing.message().contains("cyclerd token issue"),
        "{}",
        missing.message()
    );
    assert_eq!(lab.daemon.snapshot("psb1/1").unwrap().state, "idle");
    lab.stop(WAIT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_token_starts_and_stops_a_test_and_retries_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (_, operator) = tokens.issue("otto", Role::Operator).unwrap();
    let (lab, addr, _stop) = lab_requiring_tokens(&tokens, None).await;
    let mut c = client(addr).await;
    let token = Some(operator.as_str());
    let started = c
        .start_test(with(start_request(), token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        lab.daemon.snapshot("psb1/1").unwrap().test_id,
        started.test_id
    );
    c.stop_test(with(stop_request(), token)).await.unwrap();
    let retried = c
        .retry_dead_letters(with(RetryDeadLettersRequest {}, token))
        .await
        .unwrap();
    assert_eq!(retried.into_inner().requeued, 0);
    let (summary, _, _tmp) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_from_the_next_call_and_ends_its_open_watch() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (_, reader) = tokens.issue("rita", Role::Reader).unwrap();
    let (_, operator) = tokens.issue("otto", Role::Operator).unwrap();
    let (lab, addr, _stop) = lab_requiring_tokens(&tokens, None).await;
    let mut c = client(addr).await;
    let mut watch = c
        .watch(with(WatchRequest {}, Some(&reader)))
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    tokens.revoke("rita").unwrap();
    let refused = c
        .get_status(with(GetStatusRequest {}, Some(&reader)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("\"rita\" was revoked"),
        "{}",
        refused.message()
    );
    // A running test keeps snapshots coming; the stream ends with the refusal.
    c.start_test(with(start_request(), Some(&operator)))
        .await
        .unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ended without saying why"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("a revoked token's watch ends");
    assert_eq!(ended.code(), Code::Unauthenticated);
    lab.daemon.stop_test("psb1/1", "").await.unwrap();
    lab.stop(WAIT).await.unwrap();
}

/// A CA (written to `dir/ca.pem`) and a certificate it signed for 127.0.0.1 and localhost.
fn loopback_pki(dir: &std::path::Path) -> (std::path::PathBuf, tonic::transport::Identity) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let identity = tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem());
    (ca_file, identity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclerctl_over_https_with_the_ca_and_a_reader_token_reads_and_is_refused_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (_, reader) = tokens.issue("rita", Role::Reader).unwrap();
    let (ca, identity) = loopback_pki(dir.path());
    let (lab, addr, _stop) = lab_requiring_tokens(&tokens, Some(identity)).await;
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, PROTOCOL).unwrap();
    let daemon = format!("https://127.0.0.1:{}", addr.port());
    let cyclerctl = |args: &[&str], token: Option<&str>| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"));
        command
            .args(args)
            .arg("--daemon")
            .arg(&daemon)
            .arg("--ca")
            .arg(&ca);
        command.env_remove("CYCLERD_TOKEN");
        if let Some(token) = token {
            command.env("CYCLERD_TOKEN", token);
        }
        command.output()
    };
    let status = cyclerctl(&["status"], Some(&reader)).await.unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{err}");
    assert!(out.contains("psb1/1"), "{out}");
    assert!(!out.contains(secret_of(&reader)) && !err.contains(secret_of(&reader)));

    let protocol = protocol.to_str().unwrap();
    let start = ["start", "psb1/1", "--protocol", protocol, "--cell", "C1"];
    let started = cyclerctl(&start, Some(&reader)).await.unwrap();
    let err = String::from_utf8_lossy(&started.stderr);
    assert!(!started.status.success());
    assert!(err.contains("StartTest needs an operator's token"), "{err}");
    let anonymous = cyclerctl(&["status"], None).await.unwrap();
    let err = String::from_utf8_lossy(&anonymous.stderr);
    assert!(!anonymous.status.success());
    assert!(
        err.contains("requires a token") && err.contains("CYCLERD_TOKEN"),
        "{err}"
    );
    let without_ca = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
        .args(["status", "--daemon", &daemon])
        .env_remove("CYCLERD_CA")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&without_ca.stderr);
    assert!(!without_ca.status.success(), "{err}");
    assert!(err.contains("needs --ca FILE"), "{err}");
    lab.stop(WAIT).await.unwrap();
}

/// `cyclerd token ARGS --config CONFIG`: its stdout and stderr, after checking it succeeded.
fn cyclerd_token(args: &[&str], config: &std::path::Path) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .arg("token")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "cyclerd token {args:?}: {stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclerd_token_issues_lists_and_revokes_and_cyclerd_run_never_logs_a_secret() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("o.sqlite");
    let config = dir.path().join("lab.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:9\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\nrequire_tokens = true\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.2\ncurrent_max = 5.0\n"
        ),
    )
    .unwrap();
    let (operator, said) =
        cyclerd_token(&["issue", "--role", "operator", "--name", "otto"], &config);
    let operator = operator.trim().to_string();
    assert!(
        operator.starts_with("cyd_") && !said.contains(secret_of(&operator)),
        "{said}"
    );
    let (reader, _) = cyclerd_token(&["issue", "--role", "reader", "--name", "rita"], &config);
    let reader = reader.trim().to_string();
    let (_, _) = cyclerd_token(&["issue", "--role", "reader", "--name", "gone"], &config);
    let (revoked, _) = cyclerd_token(&["revoke", "gone"], &config);
    assert!(revoked.contains("revoked token \"gone\""), "{revoked}");
    let (listed, _) = cyclerd_token(&["list"], &config);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(
        listed.contains("operator") && listed.contains("otto") && listed.contains("revoked at"),
        "{listed}"
    );
    let tokens_file = std::fs::read_to_string(dir.path().join("control-tokens.toml")).unwrap();
    for secret in [&operator, &reader] {
        assert!(!listed.contains(secret_of(secret)) && !tokens_file.contains(secret_of(secret)));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join("control-tokens.toml")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("CYCLERD__WEB__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The whole log, read as it comes (a full pipe would stall the daemon); the control
    // address as soon as it is logged.
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let mut lines = tokio::io::BufReader::new(daemon.stderr.take().unwrap()).lines();
    let reading = tokio::spawn(async move {
        let (mut log, mut addr_tx) = (Vec::new(), Some(addr_tx));
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line
                .split("control API on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr.to_string());
            }
            log.push(line);
        }
        log.join("\n")
    });
    let addr = tokio::time::timeout_at(deadline(), addr_rx)
        .await
        .expect("the control address is logged in time")
        .expect("cyclerd run logs its control address before it ends");
    let cyclerctl = async |args: &[&str], token: &str| {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cyclerctl"))
            .args(args)
            .args(["--daemon", &format!("http://{addr}")])
            .env("CYCLERD_TOKEN", token)
            .output();
        tokio::time::timeout_at(deadline(), output)
            .await
            .expect("cyclerctl answers in time")
    };
    let read = cyclerctl(&["status"], &reader).await.unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let denied = cyclerctl(&["stop", "x/1"], &reader).await.unwrap();
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("StopTest needs an operator's token"), "{err}");
    let wrong = format!("{}{}", &operator[..operator.len() - 4], "0000");
    let refused = cyclerctl(&["stop", "x/1"], &wrong).await.unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not valid for this daemon"), "{err}");
    let allowed = cyclerctl(&["stop", "x/1"], &operator).await.unwrap();
    let err = String::from_utf8_lossy(&allowed.stderr);
    assert!(
        err.contains("x/1") && !err.contains("token"),
        "past the check: {err}"
    );
    let outputs = [read, denied, refused, allowed];

    daemon.start_kill().unwrap();
    let log = tokio::time::timeout_at(deadline(), reading)
        .await
        .expect("the killed daemon's log ends")
        .unwrap();
    assert!(log.contains("StopTest"), "refusals are logged: {log}");
    for secret in [&operator, &reader] {
        let secret = secret_of(secret);
        assert!(!log.contains(secret), "a secret in the log");
        for out in &outputs {
            assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
            assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
        }
    }
}

#[test]
fn cyclerd_run_refuses_a_control_api_beyond_loopback_without_tls_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("o.sqlite");
    let config = dir.path().join("lab.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n[hub]\naddress = \"http://127.0.0.1:9\"\n\
             [control]\nlisten = \"0.0.0.0:0\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.2\ncurrent_max = 5.0\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerd"))
        .args(["run", "--config"])
        .arg(&config)
        .env("CYCLERD__WEB__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("lab.toml")
            && err.contains("control.tls_cert")
            && err.contains("cyclerd token issue"),
        "{err}"
    );
    // Tokens can be issued for it all the same: the command reads the file unchecked.
    let (token, _) = cyclerd_token(&["issue", "--role", "operator", "--name", "otto"], &config);
    assert!(token.starts_with("cyd_"), "{token}");
}

#[tokio::test]
async fn the_demo_refuses_a_control_address_beyond_loopback_before_starting_anything() {
    let options = cyclerd_cli::demo::DemoOptions {
        control: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let e = cyclerd_cli::demo::run(options, &mut out).await.unwrap_err();
    assert!(e.to_string().contains("give a loopback address"), "{e}");
    assert!(out.is_empty(), "nothing was started");
}

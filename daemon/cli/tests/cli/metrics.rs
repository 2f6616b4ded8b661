//! `/metrics` of the daemon (on its web monitor) and of the embedded hub (on its HTTP
//! listener), scraped over real HTTP after a short simulated run: valid OpenMetrics text whose
//! numbers agree with each other and with what the hub holds.

use super::*;
use cyclerd::control::tokens::{Role, TokenStore};
use cyclerd::web::WebOptions;
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const REST: &str = r#"
protocol: Short rest
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps: ["Rest for 2 minutes"]
"#;

/// `GET path` on `addr` over HTTP/1.1, with `token` as a bearer token: status and body.
async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("the response in time")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Every sample of an OpenMetrics text by its series (name and labels as written), after
/// checking each line's form: `# HELP`, `# TYPE` or `# UNIT` comments, `name{labels} value`
/// samples, each series once, and `# EOF` last.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or_default();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line:?}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `series value`: {line:?}"));
        let name = &series[..series.find('{').unwrap_or(series.len())];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(
            name.len() == series.len() || series.ends_with('}'),
            "bad labels in {line:?}"
        );
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "a series twice: {line:?}"
        );
    }
    assert!(eof, "no # EOF at the end:\n{text}");
    samples
}

/// The value of `series`, which must be there.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// The daemon's web monitor on a loopback port, as `options` say, until the sender drops.
async fn monitor(
    lab: &SimLab,
    options: WebOptions,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cyclerd::web::run(
        lab.daemon.clone(),
        listener,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_run_the_metrics_of_daemon_and_hub_agree_with_what_the_hub_holds() {
    let lab = SimLab::start(2, 2.5, 500.0, None).await.unwrap();
    let tests = lab.start_everywhere(REST, "rest.yaml").await.unwrap();
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    // Every sample read is acknowledged (woken by each ack, not by polling).
    let mut acked = lab.daemon.outbox().acked();
    tokio::time::timeout(WAIT, async {
        loop {
            acked.borrow_and_update();
            let status = lab.daemon.status();
            if status.samples_acquired > 0 && status.samples_acknowledged == status.samples_acquired
            {
                break;
            }
            acked.changed().await.unwrap();
        }
    })
    .await
    .expect("the hub acknowledges every sample");
    let hub = cyclerhub::HubStore::open(lab.hub_db()).unwrap();
    let held: u64 = tests
        .iter()
        .map(|t| hub.samples(t).unwrap().len() as u64)
        .sum();
    assert!(held > 0);

    let (web, _stop) = monitor(&lab, WebOptions::default()).await;
    let (status, text) = get(web, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let daemon = parse(&text);
    assert_eq!(
        value(&daemon, "cyclerd_samples_acknowledged_total"),
        held as f64
    );
    assert_eq!(
        value(&daemon, "cyclerd_samples_acquired_total"),
        held as f64
    );
    assert_eq!(value(&daemon, "cyclerd_outbox_entries"), 0.0);
    assert_eq!(value(&daemon, "cyclerd_outbox_bytes"), 0.0);
    assert_eq!(
        value(&daemon, "cyclerd_outbox_oldest_unacknowledged_age_seconds"),
        0.0
    );
    assert_eq!(value(&daemon, "cyclerd_outbox_dead_letters"), 0.0);
    assert_eq!(value(&daemon, "cyclerd_outbox_commit_failing"), 0.0);
    assert_eq!(value(&daemon, "cyclerd_hub_connected"), 1.0);
    assert_eq!(value(&daemon, r#"cyclerd_channels{state="finished"}"#), 2.0);
    assert_eq!(value(&daemon, r#"cyclerd_channels{state="running"}"#), 0.0);
    let per_channel: f64 = lab
        .channel_ids()
        .iter()
        .map(|c| {
            value(
                &daemon,
                &format!(r#"cyclerd_channel_test_samples{{channel="{c}"}}"#),
            )
        })
        .sum();
    assert_eq!(per_channel, held as f64);

    // A query of each API, so that both are timed.
    let hub_http = lab.hub_app_addr.expect("the embedded hub serves HTTP");
    assert_eq!(get(hub_http, "/api/v1/tests", None).await.0, 200);
    let mut query =
        cyclerd::proto::hub::query_client::QueryClient::connect(format!("http://{}", lab.hub_addr))
            .await
            .unwrap();
    query
        .list_tests(cyclerd::proto::hub::ListTestsRequest::default())
        .await
        .unwrap();
    let (status, text) = get(hub_http, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    let hub = parse(&text);
    assert_eq!(value(&hub, "cyclerhub_ingest_samples_total"), held as f64);
    assert!(value(&hub, r#"cyclerhub_ingest_entries_total{outcome="applied"}"#) > 0.0);
    assert_eq!(value(&hub, "cyclerhub_upload_streams"), 1.0);
    assert!(value(&hub, "cyclerhub_upload_streams_max") >= 1.0);
    assert!(value(&hub, "cyclerhub_ingest_batch_duration_seconds_count") > 0.0);
    assert_eq!(
        value(
            &hub,
            r#"cyclerhub_query_duration_seconds_count{api="grpc",method="ListTests"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &hub,
            r#"cyclerhub_query_duration_seconds_count{api="http",method="/api/v1/tests"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_metrics_need_a_reader_token_where_the_monitor_requires_tokens() {
    let lab = SimLab::start(1, 2.5, 10.0, None).await.unwrap();
    let tokens = TokenStore::new(lab.data_dir.join("control-tokens.toml"));
    let (_, reader) = tokens.issue("prometheus", Role::Reader).unwrap();
    let options = WebOptions {
        tokens: Some(tokens),
        tls: None,
    };
    let (web, _stop) = monitor(&lab, options).await;
    let (status, why) = get(web, "/metrics", None).await;
    assert_eq!(status, 401, "{why}");
    assert!(why.contains("Bearer"), "{why}");
    let (status, text) = get(web, "/metrics", Some(&reader)).await;
    assert_eq!(status, 200, "{text}");
    assert!(parse(&text).contains_key("cyclerd_samples_acquired_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_stops_answering_counts_device_errors() {
    let lab = SimLab::start(1, 2.5, 100.0, None).await.unwrap();
    let long_rest = REST.replace("2 minutes", "10 hours");
    lab.start_everywhere(&long_rest, "rest.yaml").await.unwrap();
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples > 5))
        .await
        .unwrap()
        .unwrap();
    let (web, _stop) = monitor(&lab, WebOptions::default()).await;
    let before = parse(&get(web, "/metrics", None).await.1);
    assert_eq!(value(&before, "cyclerd_device_errors_total"), 0.0);
    assert_eq!(value(&before, "cyclerd_device_reconnects_total"), 0.0);

    lab.sims[0].cut_link();
    // Shorter than the channel's communication timeout (5 s of wall time).
    lab.clock.sleep(100.0).await;
    lab.sims[0].restore_link();
    let resumed = live.borrow().samples + 2;
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples > resumed))
        .await
        .unwrap()
        .unwrap();
    let after = parse(&get(web, "/metrics", None).await.1);
    assert!(value(&after, "cyclerd_device_errors_total") > 0.0);
    assert!(value(&after, "cyclerd_device_reconnects_total") >= 0.0);
    assert_eq!(value(&after, r#"cyclerd_channels{state="running"}"#), 1.0);
}

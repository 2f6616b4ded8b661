//! The hub's `/metrics` over real HTTP: what an upload stored, the streams open, and the
//! credential it needs where the hub requires tokens.

use super::*;
use cyclerhub::auth::Role;
use std::collections::BTreeMap;

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

async fn scrape(hub: &Hub, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{}/metrics", hub.http));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_upload_is_counted_in_samples_and_entries_stored_and_its_stream_as_open() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    up.until_ack(6).await;

    let response = scrape(&hub, None).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let metrics = parse(&response.text().await.unwrap());
    assert_eq!(metrics["cyclerhub_ingest_samples_total"], 300.0);
    assert_eq!(
        metrics[r#"cyclerhub_ingest_entries_total{outcome="applied"}"#],
        6.0
    );
    assert_eq!(
        metrics[r#"cyclerhub_ingest_entries_total{outcome="rejected"}"#],
        0.0
    );
    assert_eq!(metrics["cyclerhub_upload_streams"], 1.0);
    assert!(metrics["cyclerhub_ingest_batch_duration_seconds_count"] >= 1.0);
    drop(up);
    hub.shutdown().await;
}

#[tokio::test]
async fn the_hub_metrics_need_a_valid_token_where_the_hub_requires_tokens() {
    let mut hub = super::auth::token_hub(Backend::Sqlite).await;
    let reader = hub
        .store
        .issue_token("cell-ageing", "prometheus", Role::Reader)
        .unwrap();
    assert_eq!(scrape(&hub, None).await.status(), 401);
    let forged = "cyh_0123456789ab_".to_string() + &"0".repeat(64);
    assert_eq!(scrape(&hub, Some(&forged)).await.status(), 401);
    let allowed = scrape(&hub, Some(&reader)).await;
    assert_eq!(allowed.status(), 200);
    assert!(parse(&allowed.text().await.unwrap()).contains_key("cyclerhub_ingest_samples_total"));
    hub.shutdown().await;
}

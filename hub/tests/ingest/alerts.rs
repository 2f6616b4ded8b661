//! The hub's lab-wide alerts (`--alerts FILE`) against a local webhook receiver (axum) over
//! loopback: a test that faults on any lab PC is announced once, and a daemon whose uploads
//! stop is announced after `after_s`; the hub's own rules refuse what only a daemon sees.

use super::*;
use cyclerhub::alerts::HubAlerts;

/// One POST the receiver took, as JSON.
type Hook = serde_json::Value;

/// A webhook receiver on loopback: every POST to `/hook` is passed on and answered 200.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Hook>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_str(&body).unwrap_or_default());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// An alerts file in `dir` with `rules` and the webhook at `url`; checked every 50 ms.
fn alerts_file(dir: &std::path::Path, url: &str, rules: &str) -> std::path::PathBuf {
    let path = dir.join("alerts.toml");
    std::fs::write(
        &path,
        format!(
            "[alerts]\ncheck_interval_ms = 50\nstore_path = {:?}\n{rules}\n\
             [alerts.webhook]\nurl = {url:?}\n",
            dir.join("alerts.sqlite")
        ),
    )
    .unwrap();
    path
}

async fn next_hook(hooks: &mut mpsc::UnboundedReceiver<Hook>) -> Hook {
    tokio::time::timeout(WAIT, hooks.recv())
        .await
        .expect("an alert arrives in time")
        .expect("receiver open")
}

fn faulted(id: u64, test_id: &str) -> Entry {
    entry(
        id,
        Body::TestEnded(TestEnded {
            test_id: test_id.into(),
            unix_time_s: 1_700_003_600.0,
            outcome: "faulted".into(),
            reason: "voltage 4.31 V above voltage_max 4.25 V".into(),
            sample_count: 0,
        }),
    )
}

async fn a_test_that_faults_on_any_lab_pc_is_announced_once_by_the_hub(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut hooks) = receiver().await;
    let file = alerts_file(
        dir.path(),
        &url,
        "[[alerts.rule]]\nkind = \"test_faulted\"\n",
    );
    let section = cyclerhub::alerts::load(&file).unwrap();
    let db = Database::new(backend);
    let alerts = HubAlerts::open(&section, &db.location, "hub-under-test")
        .unwrap()
        .expect("rules given");
    let options = cyclerhub::server::ServeOptions {
        alerts: Some(alerts.clone()),
        ..Default::default()
    };
    let hub = Hub::serve(&db, options).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    // A finished test raises nothing here (no test_ended rule); the faulted one raises one.
    up.send_entries([
        registered(1, T1),
        ended(2, T1, 0),
        registered(3, T2),
        faulted(4, T2),
    ])
    .await;
    let hook = next_hook(&mut hooks).await;
    assert_eq!(hook["kind"], "test_faulted");
    assert_eq!(hook["test_id"], T2);
    assert_eq!(hook["daemon"], "hub-under-test");
    let text = hook["text"].as_str().unwrap();
    assert!(
        text.contains("faulted") && text.contains("4.31 V"),
        "{text}"
    );
    // Re-sent, the same end raises nothing new: the next alert is that of a test faulting
    // after it (the hub stores the stream in order, so the look that raised it saw the
    // re-sent end too), and the store holds those two alerts only (every alert of a look is
    // stored before any is sent).
    up.send_entries([faulted(5, T2), registered(6, T3), faulted(7, T3)])
        .await;
    assert_eq!(up.until_ack(7).await, []);
    drop(up);
    let hook = next_hook(&mut hooks).await;
    assert_eq!(hook["test_id"], T3, "one alert per end: {hook}");
    let raised: Vec<String> = alerts
        .recent()
        .iter()
        .map(|a| a.alert.test_id.clone())
        .collect();
    assert_eq!(raised, [T3, T2], "one alert per end");
    // The web app's alerts page lists it with its delivery.
    let page = reqwest::get(format!("http://{}/alerts", hub.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("test_faulted") && page.contains("webhook sent"),
        "{page}"
    );
    assert!(page.contains(T2), "{page}");
}

async fn a_daemon_whose_uploads_stop_is_announced_after_its_silence_lasts(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, mut hooks) = receiver().await;
    let file = alerts_file(
        dir.path(),
        &url,
        "[[alerts.rule]]\nkind = \"daemon_offline\"\nafter_s = 1\n",
    );
    let section = cyclerhub::alerts::load(&file).unwrap();
    let db = Database::new(backend);
    let alerts = HubAlerts::open(&section, &db.location, "hub")
        .unwrap()
        .unwrap();
    let options = cyclerhub::server::ServeOptions {
        alerts: Some(alerts),
        ..Default::default()
    };
    let hub = Hub::serve(&db, options).await;
    let (up, _) = hub.upload("daemon-pc-7", 1).await;
    up.send_entries([registered(1, T1)]).await;
    let gone = std::time::Instant::now();
    drop(up);
    let hook = next_hook(&mut hooks).await;
    assert!(
        gone.elapsed() >= Duration::from_secs(1),
        "raised before after_s"
    );
    assert_eq!(hook["kind"], "daemon_offline");
    assert_eq!(hook["channel"], "daemon-pc-7");
    let text = hook["text"].as_str().unwrap();
    assert!(text.contains("daemon-pc-7 has not uploaded for"), "{text}");
}

#[test]
fn the_hubs_alerts_file_refuses_rules_only_a_daemon_can_see_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (rules, expected) in [
        (
            "[[alerts.rule]]\nkind = \"channel_offline\"\n",
            "only a daemon sees this",
        ),
        (
            "[[alerts.rule]]\nkind = \"test_ended\"\nchannels = [\"a/1\"]\n",
            "alerts.rule[0] (test_ended).channels",
        ),
        ("[[alerts.rule]]\nkind = \"no_such\"\n", "unknown variant"),
    ] {
        let file = alerts_file(dir.path(), "http://127.0.0.1:9/hook", rules);
        let err = format!("{:#}", cyclerhub::alerts::load(&file).unwrap_err());
        assert!(err.contains(expected), "{rules}: {err}");
        assert!(err.contains("alerts.toml"), "names the file: {err}");
    }
}

on_both_backends!(
    a_test_that_faults_on_any_lab_pc_is_announced_once_by_the_hub,
    a_daemon_whose_uploads_stop_is_announced_after_its_silence_lasts,
);

//! The daemon's web monitor against a simulated lab: in headless Chromium (skipped, loudly, only
//! when chromedriver is absent) and over plain HTTP for what a browser cannot measure.

use crate::harness::WAIT;
use cyclerd::control::tokens::{Role, TokenStore};
use cyclerd::web::WebOptions;
use cyclerd_cli::lab::{DEMO_PROTOCOL, LabOptions, SimLab};
use cyclerd_tests::browser::{Browser, Error, wait_until};
use fantoccini::Locator;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The monitor of a running lab, stopped when dropped.
struct Monitor {
    /// Where it listens.
    addr: SocketAddr,
    /// Ends it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Monitor {
    async fn start(lab: &SimLab, options: WebOptions) -> Monitor {
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
        Monitor { addr, _stop: stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn lab(channels: usize, speed: f64) -> SimLab {
    SimLab::start_with(LabOptions {
        channels,
        speed,
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

/// The text of the cell `field` in channel `channel`'s row of the overview.
async fn cell(browser: &Browser, channel: &str, field: &str) -> Result<Option<String>, Error> {
    browser
        .text(&format!(
            "tr[data-channel=\"{channel}\"] [data-field=\"{field}\"]"
        ))
        .await
}

async fn assert_no_js_errors(browser: &Browser) {
    let errors = browser.js_errors().await.unwrap();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_lists_every_channel_and_its_values_change_as_samples_arrive() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let lab = lab(3, 200.0).await;
    lab.start_everywhere(DEMO_PROTOCOL, "deploy/protocols/demo.yaml")
        .await
        .unwrap();
    let monitor = Monitor::start(&lab, WebOptions::default()).await;
    browser.goto(&monitor.url("/")).await.unwrap();
    browser
        .wait_for_text("#live", "connected", WAIT)
        .await
        .unwrap();
    for channel in lab.channel_ids() {
        let state = cell(&browser, &channel, "state").await.unwrap();
        assert!(state.is_some(), "{channel} is listed");
    }
    let first = lab.channel_ids()[0].clone();
    let before = wait_until("a voltage on the overview", WAIT, || async {
        Ok(cell(&browser, &first, "voltage")
            .await?
            .filter(|v| v.ends_with(" V")))
    })
    .await
    .unwrap();
    let after = wait_until("the voltage to change", WAIT, || async {
        Ok(cell(&browser, &first, "voltage")
            .await?
            .filter(|v| *v != before))
    })
    .await
    .unwrap();
    assert!(after.ends_with(" V"), "{after}");
    assert_eq!(
        cell(&browser, &first, "state").await.unwrap().as_deref(),
        Some("running")
    );
    browser.screenshot("monitor-overview").await.unwrap();

    // The channel page: its plots fill as samples arrive.
    browser
        .goto(&monitor.url(&format!("/channel/{first}")))
        .await
        .unwrap();
    browser
        .wait_for_text("#live", "connected", WAIT)
        .await
        .unwrap();
    let points = || async {
        let n = browser
            .client()
            .execute(
                "var u = document.querySelectorAll('#plot-v .uplot'); \
                 return u.length ? document.querySelectorAll('#plot-v canvas').length : 0;",
                vec![],
            )
            .await?;
        Ok(n.as_u64().filter(|n| *n > 0))
    };
    wait_until("the voltage plot", WAIT, points).await.unwrap();
    browser
        .wait_for_text("#now [data-field=\"state\"]", "running", WAIT)
        .await
        .unwrap();
    browser.screenshot("monitor-channel").await.unwrap();
    assert_no_js_errors(&browser).await;
    browser.close().await;
    lab.stop(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_through_the_form_runs_a_test_and_a_stop_ends_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let lab = lab(1, 50.0).await;
    let channel = lab.channel_ids()[0].clone();
    let monitor = Monitor::start(&lab, WebOptions::default()).await;
    browser
        .goto(&monitor.url(&format!("/channel/{channel}/start")))
        .await
        .unwrap();
    let c = browser.client();
    c.find(Locator::Id("protocol"))
        .await
        .unwrap()
        .select_by_value("demo.yaml")
        .await
        .unwrap();
    for (field, value) in [
        ("cell_id", "WEB-001"),
        ("operator", "browser"),
        ("owner", "cyclerd-tests"),
        ("objective", "start from the monitor"),
        ("chemistry", "NMC/graphite"),
        ("nominal_capacity_ah", "two and a half"),
    ] {
        c.find(Locator::Id(field))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    c.find(Locator::Id("start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Refused as cyclerctl start would refuse it, on the form, with the values kept.
    let error = browser
        .wait_for_text("#error", "nominal_capacity_ah", WAIT)
        .await
        .unwrap();
    assert!(error.contains("Not started"), "{error}");
    assert_eq!(
        c.find(Locator::Id("cell_id"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("WEB-001")
    );
    assert_eq!(lab.daemon.snapshot(&channel).unwrap().test_id, "");
    browser.screenshot("monitor-start-refused").await.unwrap();

    let capacity = c.find(Locator::Id("nominal_capacity_ah")).await.unwrap();
    capacity.clear().await.unwrap();
    capacity.send_keys("2.5").await.unwrap();
    // A file input cannot keep its file across a refused submit: the library is chosen again.
    c.find(Locator::Id("protocol"))
        .await
        .unwrap()
        .select_by_value("demo.yaml")
        .await
        .unwrap();
    c.find(Locator::Id("start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text("#now [data-field=\"state\"]", "running", WAIT)
        .await
        .unwrap();
    let snapshot = lab.daemon.snapshot(&channel).unwrap();
    assert_eq!(snapshot.cell_id, "WEB-001");
    assert_eq!(snapshot.state, "running");

    c.find(Locator::Id("reason"))
        .await
        .unwrap()
        .send_keys("ended by the browser test")
        .await
        .unwrap();
    c.find(Locator::Id("stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text("#now [data-field=\"state\"]", "stopped", WAIT)
        .await
        .unwrap();
    let snapshot = lab.daemon.snapshot(&channel).unwrap();
    assert_eq!(snapshot.state, "stopped");
    assert!(
        snapshot.reason.contains("ended by the browser test"),
        "{}",
        snapshot.reason
    );
    browser.screenshot("monitor-stopped").await.unwrap();
    assert_no_js_errors(&browser).await;
    browser.close().await;
    lab.stop(Duration::from_secs(30)).await.unwrap();
}

/// One HTTP/1.1 request; the status and the body (the connection closes after it).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = if method == "POST" { "reason=x" } else { "" };
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("a response")
        .unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_refused_where_the_monitor_requires_tokens() {
    let lab = lab(1, 50.0).await;
    let channel = lab.channel_ids()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (_, reader) = tokens.issue("rita", Role::Reader).unwrap();
    let (_, operator) = tokens.issue("otto", Role::Operator).unwrap();
    let options = WebOptions {
        tokens: Some(tokens),
        tls: None,
    };
    let monitor = Monitor::start(&lab, options).await;
    let addr = monitor.addr;
    let bearer = |t: &str| format!("Bearer {t}");

    let (status, response) = http(addr, "GET", "/", &[]).await;
    assert_eq!(status, 303, "{response}");
    assert!(response.contains("location: /signin"), "{response}");
    assert_eq!(http(addr, "GET", "/events", &[]).await.0, 401);
    let bad = bearer("cyd_0000_not-a-token");
    assert_eq!(
        http(addr, "GET", "/", &[("Authorization", &bad)]).await.0,
        401
    );
    let (status, response) = http(addr, "GET", "/", &[("Authorization", &bearer(&reader))]).await;
    assert_eq!(status, 200);
    assert!(
        !response.contains(&reader),
        "the page never shows the token"
    );
    let stop = format!("/channel/{channel}/stop");
    let (status, _) = http(addr, "POST", &stop, &[("Authorization", &bearer(&reader))]).await;
    assert_eq!(status, 403, "a reader may not stop a test");
    let (status, response) = http(
        addr,
        "POST",
        &stop,
        &[
            ("Authorization", &bearer(&operator)),
            ("Origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(
        status, 403,
        "a form from another site is refused: {response}"
    );

    let Some(browser) = Browser::start().await else {
        return;
    };
    browser.goto(&monitor.url("/")).await.unwrap();
    browser.wait_for_text("h1", "Sign in", WAIT).await.unwrap();
    let c = browser.client();
    let sign_in = async |token: &str| {
        let field = c.find(Locator::Id("token")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(token).await.unwrap();
        c.find(Locator::Id("signin"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    };
    sign_in("cyd_0000_wrong").await;
    browser
        .wait_for_text("#error", "not valid", WAIT)
        .await
        .unwrap();
    browser.screenshot("monitor-sign-in-refused").await.unwrap();
    sign_in(&reader).await;
    browser
        .wait_for_text("#live", "connected", WAIT)
        .await
        .unwrap();
    assert!(cell(&browser, &channel, "state").await.unwrap().is_some());
    // A reader's session may look but not start.
    browser
        .goto(&monitor.url(&format!("/channel/{channel}/start")))
        .await
        .unwrap();
    browser
        .wait_for_text("#error", "operator", WAIT)
        .await
        .unwrap();
    // The session cookie is out of the page's reach.
    let cookies = c.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(cookies.as_str(), Some(""), "the session cookie is HttpOnly");
    // The browser logged the refusals (401, 403) as failed loads; nothing else.
    let errors = browser.js_errors().await.unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("401") || e.contains("403")),
        "{errors:#?}"
    );
    browser.close().await;
    lab.stop(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_reaches_the_event_stream_within_200_ms() {
    let lab = lab(1, 20.0).await;
    let channel = lab.channel_ids()[0].clone();
    let monitor = Monitor::start(&lab, WebOptions::default()).await;
    // When the daemon published each sample count.
    let published: std::sync::Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Default::default();
    let mut rx = lab.daemon.watchers().remove(0);
    let record = published.clone();
    let recorder = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let samples = rx.borrow_and_update().samples;
            record
                .lock()
                .unwrap()
                .entry(samples)
                .or_insert_with(Instant::now);
        }
    });
    let mut stream = TcpStream::connect(monitor.addr).await.unwrap();
    let request = format!(
        "GET /events?channel={channel} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        monitor.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    lab.start_everywhere(DEMO_PROTOCOL, "deploy/protocols/demo.yaml")
        .await
        .unwrap();

    let mut text = String::new();
    let mut buf = vec![0u8; 65536];
    let mut latencies = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while latencies.len() < 30 {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("events keep coming")
            .unwrap();
        assert!(n > 0, "the event stream stays open");
        let arrived = Instant::now();
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let Some(samples) = event
                .split("\"samples\":")
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| *n > 0)
            else {
                continue;
            };
            if let Some(at) = published.lock().unwrap().get(&samples) {
                latencies.push(arrived.duration_since(*at));
            }
        }
    }
    recorder.abort();
    let worst = latencies.iter().max().unwrap();
    assert!(
        *worst < Duration::from_millis(200),
        "a sample took {worst:?} to reach the event stream: {latencies:?}"
    );
    lab.stop(Duration::from_secs(30)).await.unwrap();
}

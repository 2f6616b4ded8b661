//! A real browser for the web tests: headless Chromium driven through `chromedriver` (WebDriver)
//! with [`fantoccini`].
//!
//! ```ignore
//! let Some(browser) = cyclerd_tests::browser::Browser::start().await else {
//!     return; // chromedriver is not installed: skipped, loudly
//! };
//! browser.goto(&format!("http://{addr}/")).await?;
//! let heading = browser.wait_for_text("h1", "Lab", WAIT).await?;
//! browser.screenshot("monitor-overview").await?;   // target/screenshots/monitor-overview.png
//! assert_eq!(browser.js_errors().await?, Vec::<String>::new());
//! browser.close().await;
//! ```
//!
//! What it does:
//! - [`Browser::start`] runs `chromedriver` on a free loopback port (plain HTTP on loopback: no
//!   TLS client in the harness) and opens a headless Chromium session with a fresh profile
//!   directory, no network beyond what the page asks for, and the browser's console log kept.
//!   It returns `None`, after a loud message on stderr, only when `chromedriver` is absent;
//!   any other failure panics (CI installs Chromium, see `.ci/run`).
//! - [`Browser::js_errors`] is every uncaught JavaScript error and `console.error` line the
//!   pages logged since the session started (the browser's SEVERE log entries), so a test can
//!   assert there are none; [`Browser::failed_loads`] the failed loads (4xx/5xx answers).
//! - [`Browser::screenshot`] writes `target/screenshots/NAME.png` (under `CARGO_TARGET_DIR`
//!   when set) and returns its path.
//! - [`Browser::client`] is the fantoccini client for anything else (forms, clicks, scripts).
//! - [`wait_until`] polls a condition with a timeout: tests wait on what they expect to see,
//!   never on a fixed sleep.

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where Debian's `chromium-driver` puts chromedriver; `CHROMEDRIVER` overrides it.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's `chromium`; `CHROMIUM` overrides it (when absent, chromedriver looks on its own).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long chromedriver and the browser session may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium session and the chromedriver process behind it.
pub struct Browser {
    /// The WebDriver session: navigate, find elements, run scripts.
    client: Client,
    /// The chromedriver child; killed when the browser is dropped.
    driver: Child,
    /// The fresh profile directory Chromium uses, removed when the browser is dropped.
    _profile: tempfile::TempDir,
    /// SEVERE browser-log entries read so far, each with whether it is a failed load (the
    /// log is drained on every read).
    errors: Mutex<Vec<(bool, String)>>,
}

/// What went wrong talking to the browser.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (after a loud message) when
    /// chromedriver is not installed.
    pub async fn start() -> Option<Browser> {
        let driver_path = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CHROMEDRIVER));
        if !driver_path.exists() {
            eprintln!(
                "\n*** SKIPPED: browser test: {} is not installed (Debian: apt-get install \
                 chromium chromium-driver; .ci/run installs them) ***\n",
                driver_path.display()
            );
            return None;
        }
        Some(
            Browser::launch(&driver_path)
                .await
                .unwrap_or_else(|e| panic!("starting headless Chromium: {e}")),
        )
    }

    async fn launch(driver_path: &Path) -> Result<Browser, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = driver.stdout.take().ok_or("chromedriver has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let up = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let ok = line.contains("started successfully");
                seen.push(line);
                if ok {
                    return true;
                }
            }
            false
        })
        .await;
        if up != Ok(true) {
            return Err(format!(
                "chromedriver did not start; it printed:\n{}",
                seen.join("\n")
            )
            .into());
        }
        // Keep draining its stdout so chromedriver never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir()?;
        let mut chrome = json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CHROMIUM));
        if chromium.exists() {
            chrome["binary"] = json!(chromium.display().to_string());
        }
        let mut caps = Capabilities::new();
        caps.insert("goog:chromeOptions".into(), chrome);
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = tokio::time::timeout(
            START_TIMEOUT,
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .map_err(|_| "no browser session within a minute")??;
        Ok(Browser {
            client,
            driver,
            _profile: profile,
            errors: Mutex::new(Vec::new()),
        })
    }

    /// The WebDriver client, for anything this harness does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) -> Result<(), Error> {
        Ok(self.client.goto(url).await?)
    }

    /// Types `text` into the element at `at` (a form field; for a file input, a path).
    pub async fn type_into(&self, at: Locator<'_>, text: &str) -> Result<(), Error> {
        Ok(self.client.find(at).await?.send_keys(text).await?)
    }

    /// Clicks the element at `at`.
    pub async fn click(&self, at: Locator<'_>) -> Result<(), Error> {
        Ok(self.client.find(at).await?.click().await?)
    }

    /// Every uncaught JavaScript error and `console.error` line the browser logged since the
    /// session started (failed loads, such as a page answered 4xx, are [`Browser::failed_loads`]).
    pub async fn js_errors(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .severe()
            .await?
            .into_iter()
            .filter(|(network, _)| !network)
            .map(|(_, m)| m)
            .collect())
    }

    /// Every failed load (an HTTP error status, a refused connection) the browser logged since
    /// the session started.
    pub async fn failed_loads(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .severe()
            .await?
            .into_iter()
            .filter(|(network, _)| *network)
            .map(|(_, m)| m)
            .collect())
    }

    /// The SEVERE log entries so far, each with whether it is a network one.
    async fn severe(&self) -> Result<Vec<(bool, String)>, Error> {
        let log = self.client.issue_cmd(BrowserLog).await?;
        let mut errors = self.errors.lock().map_err(|_| "poisoned")?;
        for entry in log.as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                let message = entry["message"].as_str().unwrap_or_default().to_string();
                let network =
                    entry["source"] == "network" || message.contains("Failed to load resource");
                errors.push((network, message));
            }
        }
        Ok(errors.clone())
    }

    /// Writes a PNG of the viewport to `target/screenshots/NAME.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, Error> {
        let png = self.client.screenshot().await?;
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }

    /// The text of the first element matching the CSS `selector`, if there is one (`None`
    /// too when the page went away between finding it and reading it: a form was submitted).
    pub async fn text(&self, selector: &str) -> Result<Option<String>, Error> {
        let element = match self.client.find(Locator::Css(selector)).await {
            Ok(element) => element,
            Err(e) if e.is_no_such_element() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match element.text().await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.is_stale_element_reference() || e.is_no_such_element() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the element matching `selector` shows a text containing `needle`; returns
    /// the whole text.
    pub async fn wait_for_text(
        &self,
        selector: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        let what = format!("{selector:?} to show {needle:?}");
        wait_until(&what, timeout, || async {
            Ok(self
                .text(selector)
                .await?
                .filter(|text| text.contains(needle)))
        })
        .await
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, an error, or `timeout` passes (then an
/// error naming `what` and the last value seen is `None`).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, Error>>,
{
    let waited = tokio::time::timeout(timeout, async {
        loop {
            if let Some(value) = check().await? {
                return Ok::<T, Error>(value);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(format!("waited {timeout:?} for {what}").into()),
    }
}

/// `target/screenshots` of this workspace (or of `CARGO_TARGET_DIR`).
pub fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}

/// chromedriver's log endpoint (not in W3C WebDriver, so not in fantoccini): the browser log
/// entries since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(Value::to_string(&json!({"type": "browser"}))),
        )
    }
}

//! The hub's web app against a simulated lab's embedded hub, in headless Chromium (skipped,
//! loudly, only when chromedriver is absent): a bad token is refused at sign in, the test list
//! shows the lab's tests, a finished and a running test's pages plot their samples and cycles
//! (the running one follows the test live), the cells and retention pages draw, and no page logs
//! a JavaScript error. Screenshots go to `target/screenshots/hub-*.png`.

use crate::harness::WAIT;
use cyclerd_cli::lab::{DEMO_PROTOCOL, LabOptions, SimLab};
use cyclerd_tests::browser::{Browser, Error, wait_until};
use fantoccini::Locator;
use std::time::Duration;

/// A protocol that runs far longer than the test: the running test.
const LONG_PROTOCOL: &str = include_str!("../../../deploy/protocols/cycle-life-1c.yaml");

/// The number of points the page's time plot drew (its `data-loaded`), once it drew some.
async fn plotted(browser: &Browser) -> Result<Option<u64>, Error> {
    let n = browser
        .client()
        .execute(
            "const e = document.getElementById('plot-vit'); \
             return e && e.querySelector('canvas') ? Number(e.dataset.loaded || 0) : 0;",
            vec![],
        )
        .await?;
    Ok(n.as_u64().filter(|n| *n > 0))
}

/// Whether the element `id` holds a drawn uPlot chart.
async fn drawn(browser: &Browser, id: &str) -> Result<Option<()>, Error> {
    let found = browser
        .client()
        .execute(
            &format!("return !!document.querySelector('#{id} canvas');"),
            vec![],
        )
        .await?;
    Ok(found.as_bool().filter(|b| *b).map(|_| ()))
}

/// Asserts that no error was logged after the first `known` (the harness keeps every error
/// since the session started).
async fn assert_no_js_errors(browser: &Browser, page: &str, known: usize) {
    let errors = browser.js_errors().await.unwrap();
    let new = errors.get(known..).unwrap_or_default();
    assert!(new.is_empty(), "{page} logged errors: {new:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_app_plots_a_finished_and_a_running_test_and_refuses_a_bad_token() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let lab = SimLab::start_with(LabOptions {
        channels: 2,
        speed: 1500.0,
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let app = lab
        .hub_app_addr
        .expect("the demo lab's embedded hub serves its app");
    let url = |path: &str| format!("http://{app}{path}");
    let finished = lab
        .start_on(0, DEMO_PROTOCOL, "deploy/protocols/demo.yaml")
        .await
        .unwrap();
    let running = lab
        .start_on(1, LONG_PROTOCOL, "deploy/protocols/cycle-life-1c.yaml")
        .await
        .unwrap();

    // A bad token is refused at sign in (the refusal's 401 is logged by the browser as a failed
    // load: read off before the pages whose logs must be clean).
    browser.goto(&url("/signin")).await.unwrap();
    browser
        .type_into(Locator::Id("token"), "cyh_0123456789ab_not-a-token")
        .await
        .unwrap();
    browser
        .click(Locator::Css("form.stack button[type=submit]"))
        .await
        .unwrap();
    browser
        .wait_for_text("#signin-error", "not valid", WAIT)
        .await
        .unwrap();
    browser.screenshot("hub-signin-refused").await.unwrap();
    // The refused sign-in is a failed load (401), not a JavaScript error.
    wait_until("the refusal in the browser's log", WAIT, || async {
        let loads = browser.failed_loads().await?;
        Ok(loads.iter().any(|e| e.contains("401")).then_some(()))
    })
    .await
    .unwrap();
    let known = browser.js_errors().await.unwrap().len();

    // The finished test, once the hub holds its end.
    let store = cyclerhub::HubStore::open(lab.hub_db()).unwrap();
    wait_until("the demo test to finish in the hub", WAIT * 2, || async {
        Ok(store
            .test(&finished)?
            .filter(|t| t.state() == "finished")
            .map(|_| ()))
    })
    .await
    .unwrap();

    browser.goto(&url("/")).await.unwrap();
    browser
        .wait_for_text("#tests", &finished[..8], WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#tests", &running[..8], WAIT)
        .await
        .unwrap();
    browser.screenshot("hub-tests").await.unwrap();
    assert_no_js_errors(&browser, "the test list", known).await;

    browser
        .goto(&url(&format!("/tests/{finished}")))
        .await
        .unwrap();
    let points = wait_until("the finished test's plot", WAIT, || plotted(&browser))
        .await
        .unwrap();
    assert!(points > 100, "{points} points");
    for id in [
        "plot-capacity",
        "plot-efficiency",
        "plot-retention",
        "plot-dqdv",
    ] {
        wait_until(id, WAIT, || drawn(&browser, id)).await.unwrap();
    }
    assert_eq!(
        browser.text("#state").await.unwrap().as_deref(),
        Some("finished")
    );
    browser.screenshot("hub-test-finished").await.unwrap();
    assert_no_js_errors(&browser, "the finished test's page", known).await;

    // The running test: plotted, and followed as samples arrive.
    browser
        .goto(&url(&format!("/tests/{running}")))
        .await
        .unwrap();
    wait_until("the running test's plot", WAIT, || plotted(&browser))
        .await
        .unwrap();
    let before = browser.text("#samples").await.unwrap().unwrap_or_default();
    let after = wait_until("the sample count to grow", WAIT, || async {
        Ok(browser.text("#samples").await?.filter(|n| *n != before))
    })
    .await
    .unwrap();
    assert_eq!(
        browser.text("#state").await.unwrap().as_deref(),
        Some("running")
    );
    assert!(
        after.parse::<u64>().unwrap() > before.parse::<u64>().unwrap_or(0),
        "{before} -> {after}"
    );
    browser.screenshot("hub-test-running").await.unwrap();
    assert_no_js_errors(&browser, "the running test's page", known).await;

    browser.goto(&url("/cells")).await.unwrap();
    browser
        .wait_for_text("#cells", "SIM-NMC-001", WAIT)
        .await
        .unwrap();
    browser
        .goto(&url(&format!("/compare?test={finished}&test={running}")))
        .await
        .unwrap();
    wait_until("the retention comparison", WAIT, || {
        drawn(&browser, "plot-compare")
    })
    .await
    .unwrap();
    browser.screenshot("hub-compare").await.unwrap();
    assert_no_js_errors(&browser, "the cells and comparison pages", known).await;

    browser.close().await;
    lab.stop(Duration::from_secs(30)).await.unwrap();
}

//! The hub's web app: server-rendered pages (askama templates in `hub/templates/`) that read
//! through the same functions as the API, and one script (`hub/assets/hub.js`) that draws the
//! plots with uPlot from the API's JSON. Signing in with a reader token makes a session
//! ([`super::session`]); on a hub that requires tokens every page but the sign-in needs one.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use super::EXPORTS;
use super::api::{readable, select_tests};
use super::session::{clear_cookie, set_cookie};
use super::{ApiError, HttpState, blocking, caller};
use crate::export::metadata::tier_of;
use crate::store::TestRow;
use crate::utc::Utc;

/// The script of the app's pages.
const HUB_JS: &str = include_str!("../../assets/hub.js");

/// The app's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(tests_page))
        .route("/signin", get(signin_page).post(signin))
        .route("/signout", axum::routing::post(signout))
        .route("/tests/{test_id}", get(test_page))
        .route("/cells", get(cells_page))
        .route("/compare", get(compare_page))
        .route("/alerts", get(alerts_page))
        .route("/app/hub.js", get(script))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        HUB_JS,
    )
        .into_response()
}

/// A page, or where to go instead.
enum Page {
    /// The rendered HTML.
    Html(String),
    /// Not signed in (or the session's token was revoked): to the sign-in page.
    SignIn,
    /// A failure, shown as a short page with its status.
    Error(ApiError),
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self {
            Page::Html(html) => Html(html).into_response(),
            Page::SignIn => Redirect::to("/signin").into_response(),
            Page::Error(e) => (
                e.status,
                Html(format!(
                    "<!doctype html><meta charset=utf-8><meta name=viewport \
                     content=\"width=device-width, initial-scale=1\"><link rel=stylesheet \
                     href=/assets/site.css><main><h1>{}</h1><p class=error role=alert>{}</p>\
                     <p><a href=\"/\">Tests</a></p></main>",
                    e.status,
                    escape(&e.message)
                )),
            )
                .into_response(),
        }
    }
}

impl From<ApiError> for Page {
    fn from(e: ApiError) -> Page {
        if e.status == StatusCode::UNAUTHORIZED {
            Page::SignIn
        } else {
            Page::Error(e)
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render(t: impl Template) -> Page {
    match t.render() {
        Ok(html) => Page::Html(html),
        Err(e) => Page::Error(ApiError::internal(format!("the page did not render: {e}"))),
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignIn {
    /// Whether a session is open (the header shows sign out).
    signed_in: bool,
    /// Why the last attempt was refused.
    error: Option<String>,
}

async fn signin_page(State(state): State<HttpState>, headers: HeaderMap) -> Page {
    render(SignIn {
        signed_in: state.sessions.signed_in(&headers),
        error: None,
    })
}

/// The sign-in form.
#[derive(serde::Deserialize)]
struct Credentials {
    /// The reader (or daemon) token, as `cyclerhub token issue` printed it.
    token: String,
}

async fn signin(State(state): State<HttpState>, Form(form): Form<Credentials>) -> Response {
    let token = form.token.trim().to_string();
    let mut metadata = tonic::metadata::MetadataMap::new();
    let refused = |message: String| {
        let page = render(SignIn {
            signed_in: false,
            error: Some(message),
        });
        (StatusCode::UNAUTHORIZED, page).into_response()
    };
    match format!("Bearer {token}").parse() {
        Ok(v) if !token.is_empty() => {
            metadata.insert("authorization", v);
        }
        _ => return refused("give the token as `cyclerhub token issue` printed it".into()),
    }
    match state.auth.presented(&metadata).await {
        Ok(Some(_)) => {}
        Ok(None) => return refused("give a token".into()),
        Err(status) => return refused(status.message().to_string()),
    }
    let id = state.sessions.create(token);
    let mut response = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&set_cookie(&id, state.tls)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn signout(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    state.sessions.remove(&headers);
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&clear_cookie(state.tls)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// A test as a list row or page header shows it.
struct TestView {
    /// The full id, for links.
    test_id: String,
    /// Its first 8 characters, to fit a table.
    short_id: String,
    /// Primary metadata `cell_id`.
    cell_id: String,
    /// Primary metadata `chemistry`.
    chemistry: String,
    /// Its daemon's lab.
    lab: String,
    /// `DEVICE/N`.
    channel_id: String,
    /// What it ran.
    protocol_name: String,
    /// running, finished, stopped or faulted.
    state: String,
    /// Start, `YYYY-MM-DD HH:MM:SS`.
    started: String,
    /// Samples the hub holds.
    sample_count: u64,
    /// Where it came from when another hub shared it (`hub X, share Y`); empty for this hub's
    /// own tests.
    shared: String,
    /// Its grade as of now, `B (80)`; empty when none.
    grade: String,
    /// Its letter alone, for the cell's class; empty when none.
    grade_letter: String,
    /// Why it has that grade.
    grade_reasons: Vec<String>,
}

fn view(t: &TestRow, lab: &str) -> TestView {
    let meta = |k: &str| t.metadata.get(k).cloned().unwrap_or_default();
    TestView {
        test_id: t.test_id.clone(),
        short_id: t.test_id.chars().take(8).collect(),
        cell_id: meta("cell_id"),
        chemistry: meta("chemistry"),
        lab: lab.into(),
        channel_id: t.channel_id.clone(),
        protocol_name: t.protocol_name.clone(),
        state: t.state().into(),
        started: Utc::from_unix_s(t.start_unix_s)
            .map(|u| {
                u.seconds()
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string()
            })
            .unwrap_or_default(),
        sample_count: t.sample_count,
        shared: t.shared_from.as_ref().map_or_else(String::new, |f| {
            format!(
                "hub {}, share {}{}",
                f.hub,
                f.share,
                if f.anonymised { ", anonymised" } else { "" }
            )
        }),
        grade: t
            .grade
            .as_ref()
            .map(|g| format!("{} ({})", g.letter, g.score))
            .unwrap_or_default(),
        grade_letter: t
            .grade
            .as_ref()
            .map(|g| g.letter.to_string())
            .unwrap_or_default(),
        grade_reasons: t
            .grade
            .as_ref()
            .map(|g| g.reasons.clone())
            .unwrap_or_default(),
    }
}

/// The filter form's values, as given.
#[derive(Default)]
struct FilterForm {
    q: String,
    lab: String,
    cell: String,
    chemistry: String,
    state: String,
    /// First start date, `YYYY-MM-DD`.
    from: String,
    /// Start date before which tests started, `YYYY-MM-DD`.
    until: String,
    /// The lowest grade shown (`A` to `E`; empty: any).
    min_grade: String,
}

#[derive(Template)]
#[template(path = "tests.html")]
struct TestsPage {
    /// Whether a session is open.
    signed_in: bool,
    /// The filter as given, to fill the form again.
    f: FilterForm,
    /// The state choices.
    states: [&'static str; 5],
    /// The minimum grade choices.
    grades: [&'static str; 5],
    /// Matching tests, newest first.
    tests: Vec<TestView>,
    /// Why the filter was refused.
    error: Option<String>,
}

/// Unix seconds of midnight UTC of `YYYY-MM-DD`.
fn date_unix_s(date: &str) -> Option<f64> {
    let mut parts = date.trim().splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    // Four-digit years (a longer one would overflow the day count).
    if !(0..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((cyclerd_proto::time::days_from_civil(y, m, d) * 86_400) as f64)
}

async fn tests_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(mut params): Query<HashMap<String, String>>,
) -> Page {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let get = |k: &str| params.get(k).cloned().unwrap_or_default();
    let f = FilterForm {
        q: get("q"),
        lab: get("lab"),
        cell: get("cell"),
        chemistry: get("chemistry"),
        state: get("state"),
        from: get("from"),
        until: get("until"),
        min_grade: get("min_grade"),
    };
    let mut error = None;
    for (value, param) in [
        (f.from.clone(), "started_after"),
        (f.until.clone(), "started_before"),
    ] {
        if value.trim().is_empty() {
            continue;
        }
        match date_unix_s(&value) {
            Some(s) => {
                params.insert(param.into(), s.to_string());
            }
            None => error = Some(format!("{value:?} is not a date (YYYY-MM-DD)")),
        }
    }
    let tests = match select_tests(&state, caller.as_ref(), &params).await {
        Ok(t) => t,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => return Page::SignIn,
        Err(e) => {
            error = Some(e.message);
            Vec::new()
        }
    };
    render(TestsPage {
        signed_in: state.sessions.signed_in(&headers),
        f,
        states: ["", "running", "finished", "stopped", "faulted"],
        grades: ["", "A", "B", "C", "D"],
        tests: tests.iter().map(|(t, lab)| view(t, lab)).collect(),
        error,
    })
}

/// An event row of the test page.
struct EventView {
    /// Test time, seconds with one decimal.
    time: String,
    kind: String,
    cycle: u32,
    step: u32,
    message: String,
}

#[derive(Template)]
#[template(path = "test.html")]
struct TestPage {
    /// Whether a session is open.
    signed_in: bool,
    /// The test.
    t: TestView,
    /// Why it ended, if it did with a reason.
    reason: String,
    /// Whether it still runs: the page then follows it.
    running: bool,
    /// Metadata by tier: (tier, [(key, value)]).
    tiers: Vec<(&'static str, Vec<(String, String)>)>,
    /// Where the metadata broke the lab's schemas.
    problems: Vec<String>,
    /// Its events, in order.
    events: Vec<EventView>,
    /// Its quality findings, by first seq.
    findings: Vec<crate::store::FindingRow>,
    /// The export downloads: (URL name, label).
    exports: [(&'static str, &'static str); 7],
}

async fn test_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
) -> Page {
    let (t, lab) = match readable(&state, &headers, &test_id).await {
        Ok(found) => found,
        Err(e) => return e.into(),
    };
    let store = state.store.clone();
    let id = t.test_id.clone();
    let read = blocking(move || Ok((store.events(&id)?, store.quality_findings(&id)?)));
    let (events, findings) = match read.await {
        Ok(e) => e,
        Err(e) => return e.into(),
    };
    let mut tiers: Vec<(&'static str, Vec<(String, String)>)> =
        ["primary", "secondary", "tertiary"]
            .into_iter()
            .map(|n| (n, Vec::new()))
            .collect();
    for (key, value) in &t.metadata {
        let (tier, name) = tier_of(key);
        if let Some((_, kv)) = tiers.iter_mut().find(|(n, _)| *n == tier.name()) {
            kv.push((name.to_string(), value.clone()));
        }
    }
    render(TestPage {
        signed_in: state.sessions.signed_in(&headers),
        t: view(&t, &lab),
        reason: t.reason.clone().unwrap_or_default(),
        running: t.outcome.is_none(),
        tiers,
        problems: t.metadata_problems.clone(),
        events: events
            .into_iter()
            .map(|e| EventView {
                time: format!("{:.1}", e.test_time_s),
                kind: e.kind,
                cycle: e.cycle,
                step: e.step,
                message: e.message,
            })
            .collect(),
        findings,
        exports: EXPORTS,
    })
}

/// A cell row.
struct CellView {
    cell_id: String,
    lab: String,
    manufacturer: String,
    model: String,
    chemistry: String,
    form_factor: String,
    /// Nominal capacity, Ah (empty when unknown).
    capacity: String,
    /// Nominal voltage, V (empty when unknown).
    voltage: String,
}

#[derive(Template)]
#[template(path = "cells.html")]
struct CellsPage {
    /// Whether a session is open.
    signed_in: bool,
    /// The cells the caller's lab tested.
    cells: Vec<CellView>,
}

async fn cells_page(State(state): State<HttpState>, headers: HeaderMap) -> Page {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let lab = caller.map(|c| c.lab).unwrap_or_default();
    let store = state.store.clone();
    let cells = match blocking(move || Ok(crate::query::cells_of(&store, &lab)?)).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let number = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    render(CellsPage {
        signed_in: state.sessions.signed_in(&headers),
        cells: cells
            .iter()
            .map(|c| CellView {
                cell_id: c.cell_id.clone(),
                lab: c.lab.clone(),
                manufacturer: text(&c.manufacturer),
                model: text(&c.model),
                chemistry: text(&c.chemistry),
                form_factor: text(&c.form_factor),
                capacity: number(c.nominal_capacity_ah),
                voltage: number(c.nominal_voltage_v),
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    /// Whether a session is open.
    signed_in: bool,
    /// The tests compared (each readable by the caller).
    tests: Vec<String>,
    /// The same, comma-separated, for the script.
    tests_csv: String,
}

async fn compare_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Page {
    let ids: Vec<String> = pairs
        .into_iter()
        .filter(|(k, _)| k == "test")
        .map(|(_, v)| v)
        .take(20)
        .collect();
    for id in &ids {
        if let Err(e) = readable(&state, &headers, id).await {
            return e.into();
        }
    }
    render(ComparePage {
        signed_in: state.sessions.signed_in(&headers),
        tests_csv: ids.join(","),
        tests: ids,
    })
}

/// An alert as the alerts page lists it.
struct AlertLine {
    /// When, `YYYY-MM-DD HH:MM` UTC.
    raised: String,
    kind: &'static str,
    /// The sentence receivers got.
    text: String,
    /// Each target's delivery: sent, pending, or not sent with the last error.
    deliveries: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    /// Whether a session is open.
    signed_in: bool,
    /// Whether the hub runs alert rules (`--alerts`).
    configured: bool,
    /// The newest alerts about the caller's lab, newest first.
    alerts: Vec<AlertLine>,
}

/// The hub's newest lab-wide alerts: with tokens, those about the caller's lab's tests and
/// daemons only.
async fn alerts_page(State(state): State<HttpState>, headers: HeaderMap) -> Page {
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let signed_in = state.sessions.signed_in(&headers);
    let Some(alerts) = state.alerts.clone() else {
        return render(AlertsPage {
            signed_in,
            configured: false,
            alerts: Vec::new(),
        });
    };
    let store = state.store.clone();
    let lab = caller.map(|c| c.lab);
    let visible = blocking(move || {
        let recent = alerts.recent();
        let Some(lab) = lab else {
            return Ok(recent);
        };
        let labs = store.daemon_labs()?;
        let mut kept = Vec::new();
        for a in recent {
            // A test's alert belongs to its daemon's lab; daemon_offline names the daemon.
            let daemon = match a.alert.test_id.as_str() {
                "" => Some(a.alert.channel.clone()),
                test_id => store.test(test_id)?.map(|t| t.daemon_id),
            };
            if daemon.and_then(|d| labs.get(&d).cloned()).as_deref() == Some(lab.as_str()) {
                kept.push(a);
            }
        }
        Ok(kept)
    })
    .await;
    let visible = match visible {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let alerts = visible
        .iter()
        .map(|a| AlertLine {
            raised: cyclerd_alerts::rfc3339(a.alert.raised_unix_ms)[..16].replace('T', " "),
            kind: a.alert.kind.name(),
            text: a.alert.text.clone(),
            deliveries: a
                .deliveries
                .iter()
                .map(|d| match (d.delivered_unix_ms, d.last_error.as_str()) {
                    (Some(_), _) => format!("{} sent", d.target.name()),
                    (None, "") => format!("{} pending", d.target.name()),
                    (None, e) => format!(
                        "{} NOT SENT after {} attempts: {e}",
                        d.target.name(),
                        d.attempts
                    ),
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect();
    render(AlertsPage {
        signed_in,
        configured: true,
        alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::date_unix_s;

    #[test]
    fn a_filter_date_is_midnight_utc_and_a_year_beyond_four_digits_is_no_date_not_a_panic() {
        assert_eq!(date_unix_s("2024-02-29"), Some(1_709_164_800.0));
        assert_eq!(date_unix_s("99999999999999999-01-01"), None);
        assert_eq!(date_unix_s("2024-13-01"), None);
    }
}

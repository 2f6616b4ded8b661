//! The monitor's routes and handlers.
//!
//! | route | needs | what |
//! |---|---|---|
//! | `GET /` | reader | the lab overview |
//! | `GET /events[?channel=ID]` | reader | server-sent events ([`super::sse`]) |
//! | `GET /channel/{device}/{n}` | reader | a channel: plots, cycles, stop form |
//! | `GET /channel/{device}/{n}/history` | reader | its running test's points and cycles (JSON) |
//! | `GET /metrics` | reader | Prometheus metrics ([`crate::metrics`]) |
//! | `GET /channel/{device}/{n}/start` | operator | the start form |
//! | `POST /channel/{device}/{n}/start` | operator | start (multipart form) |
//! | `POST /channel/{device}/{n}/stop` | operator | stop with a reason |
//! | `GET, POST /signin`, `POST /signout` | – | sessions ([`super::auth`]) |
//! | `/assets/…`, `/monitor.js` | – | the embedded front end |
//!
//! Every POST passes [`auth::same_origin`] first.

use super::WebOptions;
use super::auth::{self, Auth, Refused};
use super::feed::Feed;
use super::forms::{LIBRARY, StartForm};
use super::history::History;
use super::sse;
use super::templates::{
    ChannelPage, ChannelView, Chrome, Message, Overview, SignIn, StartPage, StatusView,
};
use crate::control::tokens::{Caller, Role};
use crate::daemon::Daemon;
use askama::Template;
use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::watch;

/// The monitor's page script.
const MONITOR_JS: &str = include_str!("monitor.js");

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    /// The daemon the pages show and act on.
    daemon: Daemon,
    /// Tokens and sessions.
    auth: Auth,
    /// Each channel's running test, for its plots.
    history: History,
    /// The overview's event blocks, encoded once for every page.
    feed: Feed,
    /// Turns true when the monitor shuts down, ending the event streams.
    stopping: watch::Receiver<bool>,
    /// An open monitor on loopback: only requests naming a loopback host are answered.
    loopback_hosts_only: bool,
}

impl AppState {
    pub fn new(
        daemon: Daemon,
        options: WebOptions,
        history: History,
        feed: Feed,
        stopping: watch::Receiver<bool>,
        loopback: bool,
    ) -> AppState {
        let secure = options.tls.is_some();
        AppState(Arc::new(Inner {
            daemon,
            loopback_hosts_only: loopback && options.tokens.is_none(),
            auth: Auth::new(options.tokens, secure),
            history,
            feed,
            stopping,
        }))
    }

    /// Lets a request needing `need` through, or answers: a page without a credential goes to
    /// the sign-in form (back to `here` afterwards), anything else gets 401 or 403 with why.
    #[allow(clippy::result_large_err)] // the refusal is the response, built once
    fn allow(&self, headers: &HeaderMap, need: Role, here: &str) -> Result<Chrome, Response> {
        match self.0.auth.check(headers, need) {
            Ok(caller) => Ok(self.chrome(caller)),
            Err(Refused::SignIn) => {
                Err(Redirect::to(&format!("/signin?next={}", encode(here))).into_response())
            }
            Err(Refused::Invalid(why)) => Err(page(
                StatusCode::UNAUTHORIZED,
                Message {
                    title: "Sign in again".into(),
                    text: format!("{why}. Sign in at /signin."),
                },
            )),
            Err(Refused::Forbidden(why)) => Err(page(
                StatusCode::FORBIDDEN,
                Message {
                    title: "Not allowed".into(),
                    text: why,
                },
            )),
        }
    }

    fn chrome(&self, caller: Option<Caller>) -> Chrome {
        Chrome {
            daemon_id: self.0.daemon.outbox().identity().daemon_id,
            who: caller
                .map(|c| format!("{} ({})", c.name, c.role.as_str()))
                .unwrap_or_default(),
            signed: self.0.auth.requires_tokens(),
        }
    }
}

/// Percent-encodes a path for a query value (only what a path on this monitor can hold).
fn encode(path: &str) -> String {
    path.replace('%', "%25")
        .replace('&', "%26")
        .replace('?', "%3F")
        .replace('#', "%23")
        .replace('+', "%2B")
}

/// A rendered template with `status`.
fn page(status: StatusCode, template: impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("web monitor: a page failed to render: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

fn not_found(channel: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        Message {
            title: "No such channel".into(),
            text: format!("this daemon has no channel {channel}"),
        },
    )
}

/// The router of every route above.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/events", get(events))
        .route("/monitor.js", get(monitor_js))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", axum::routing::post(signout))
        .route("/channel/{device}/{n}", get(channel))
        .route("/channel/{device}/{n}/history", get(history))
        .route("/metrics", get(metrics))
        .route("/channel/{device}/{n}/start", get(start_form).post(start))
        .route("/channel/{device}/{n}/stop", axum::routing::post(stop))
        .merge(cyclerd_web::assets_router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            loopback_hosts,
        ))
        .with_state(state)
}

/// On an open loopback monitor, refuses a request that names another host (DNS rebinding).
async fn loopback_hosts(
    State(s): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if s.0.loopback_hosts_only && !auth::loopback_host(request.headers()) {
        return page(
            StatusCode::MISDIRECTED_REQUEST,
            Message {
                title: "Wrong address".into(),
                text: "this monitor answers on this machine only: open it as \
                       http://127.0.0.1:PORT/ or http://localhost:PORT/"
                    .into(),
            },
        );
    }
    next.run(request).await
}

async fn overview(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let chrome = match s.allow(&headers, Role::Reader, "/") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let status = StatusView::of(&s.0.daemon);
    page(
        StatusCode::OK,
        Overview {
            chrome,
            channels: s.0.daemon.snapshots().iter().map(ChannelView::of).collect(),
            alarms: status.alarms,
            alerts: status.alerts,
            hub: status.hub,
        },
    )
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Only this channel's events.
    channel: Option<String>,
}

async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    if let Err(refused) = s.0.auth.check(&headers, Role::Reader) {
        let why = match refused {
            Refused::SignIn => "sign in first (/signin) or send Authorization: Bearer TOKEN".into(),
            Refused::Invalid(why) | Refused::Forbidden(why) => why,
        };
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    let (state, headers) = (s.clone(), headers.clone());
    let allowed = move || state.0.auth.check(&headers, Role::Reader).is_ok();
    match q.channel.as_deref() {
        None => sse::overview(&s.0.feed, s.0.stopping.clone(), allowed).into_response(),
        Some(only) => {
            sse::events(&s.0.daemon, Some(only), s.0.stopping.clone(), allowed).into_response()
        }
    }
}

/// The daemon's metrics, for a reader as the pages are; a scraper gets 401 with why, never the
/// sign-in page.
async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = s.0.auth.check(&headers, Role::Reader) {
        let why = match refused {
            Refused::SignIn => "send Authorization: Bearer TOKEN (a reader token)".into(),
            Refused::Invalid(why) | Refused::Forbidden(why) => why,
        };
        return (StatusCode::UNAUTHORIZED, why).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        crate::metrics::render(&s.0.daemon).await,
    )
        .into_response()
}

async fn monitor_js() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        MONITOR_JS,
    )
        .into_response()
}

async fn channel(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((device, n)): Path<(String, String)>,
) -> Response {
    let id = format!("{device}/{n}");
    let chrome = match s.allow(&headers, Role::Reader, &format!("/channel/{id}")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match s.0.daemon.snapshot(&id) {
        Some(snapshot) => page(
            StatusCode::OK,
            ChannelPage {
                chrome,
                c: ChannelView::of(&snapshot),
                error: String::new(),
            },
        ),
        None => not_found(&id),
    }
}

async fn history(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((device, n)): Path<(String, String)>,
) -> Response {
    if s.0.auth.check(&headers, Role::Reader).is_err() {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    }
    let id = format!("{device}/{n}");
    if s.0.daemon.snapshot(&id).is_none() {
        return not_found(&id);
    }
    Json(s.0.history.of(&id)).into_response()
}

fn start_page(chrome: Chrome, id: &str, form: StartForm, error: String) -> StartPage {
    StartPage {
        chrome,
        channel: id.to_string(),
        href: format!("/channel/{id}"),
        library: LIBRARY.iter().map(|(name, _)| name.to_string()).collect(),
        form,
        error,
    }
}

async fn start_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((device, n)): Path<(String, String)>,
) -> Response {
    let id = format!("{device}/{n}");
    let chrome = match s.allow(&headers, Role::Operator, &format!("/channel/{id}/start")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if s.0.daemon.snapshot(&id).is_none() {
        return not_found(&id);
    }
    page(
        StatusCode::OK,
        start_page(chrome, &id, StartForm::default(), String::new()),
    )
}

fn cross_site(why: String) -> Response {
    page(
        StatusCode::FORBIDDEN,
        Message {
            title: "Refused".into(),
            text: why,
        },
    )
}

async fn start(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((device, n)): Path<(String, String)>,
    multipart: Multipart,
) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        return cross_site(why);
    }
    let id = format!("{device}/{n}");
    let chrome = match s.allow(&headers, Role::Operator, &format!("/channel/{id}/start")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let form = match StartForm::read(multipart).await {
        Ok(form) => form,
        Err(why) => {
            return page(
                StatusCode::BAD_REQUEST,
                start_page(chrome, &id, StartForm::default(), why),
            );
        }
    };
    match form.start(&s.0.daemon, &id).await {
        Ok(started) => {
            tracing::info!(channel = %id, test = %started.test_id, who = %chrome.who, "web monitor: test started");
            Redirect::to(&format!("/channel/{id}")).into_response()
        }
        Err(why) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            start_page(chrome, &id, form, why),
        ),
    }
}

#[derive(Deserialize)]
struct StopForm {
    /// Why the operator stops the test (recorded with it).
    #[serde(default)]
    reason: String,
}

async fn stop(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((device, n)): Path<(String, String)>,
    Form(form): Form<StopForm>,
) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        return cross_site(why);
    }
    let id = format!("{device}/{n}");
    let chrome = match s.allow(&headers, Role::Operator, &format!("/channel/{id}")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(snapshot) = s.0.daemon.snapshot(&id) else {
        return not_found(&id);
    };
    let reason = form.reason.trim();
    let result = if reason.is_empty() {
        Err("give a reason for stopping the test".to_string())
    } else {
        s.0.daemon
            .stop_test(&id, &format!("stopped from the web monitor: {reason}"))
            .await
            .map_err(|e| e.to_string())
    };
    match result {
        Ok(()) => {
            tracing::info!(channel = %id, who = %chrome.who, "web monitor: test stopped");
            Redirect::to(&format!("/channel/{id}")).into_response()
        }
        Err(error) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            ChannelPage {
                chrome,
                c: ChannelView::of(&snapshot),
                error,
            },
        ),
    }
}

#[derive(Deserialize)]
struct NextQuery {
    /// Where to go after signing in.
    next: Option<String>,
}

/// Only a path on this monitor (never another site) may follow a sign-in.
fn local(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into())
}

async fn signin_form(Query(q): Query<NextQuery>) -> Response {
    page(
        StatusCode::OK,
        SignIn {
            error: String::new(),
            next: local(q.next),
        },
    )
}

#[derive(Deserialize)]
struct SignInForm {
    /// The token typed in (never logged).
    token: String,
    /// Where to go afterwards.
    next: Option<String>,
}

async fn signin(
    State(s): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        return cross_site(why);
    }
    let next = local(form.next);
    match s.0.auth.sign_in(&form.token) {
        Ok((cookie, _)) => {
            let mut response = Redirect::to(&next).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(error) => page(StatusCode::UNAUTHORIZED, SignIn { error, next }),
    }
}

async fn signout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(why) = auth::same_origin(&headers) {
        return cross_site(why);
    }
    let cookie = s.0.auth.sign_out(&headers);
    let mut response = Redirect::to("/signin").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

//! `/api/v1`: the JSON routes (labs, cells, tests, a test's detail, cycles, events, plot,
//! dQ/dV) and the downloads (samples in a chosen format and columns, the exports). Each answers
//! what the gRPC query service answers, through the same functions ([`crate::query`]), and a
//! failure as `{"error": ...}` with its status.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::plot::{MAX_WIDTH, PlotRequest, SERIES};
use super::stream::{SampleFormat, SampleRead};
use super::{ApiError, EXPORTS, HttpState, blocking, caller, credentials};
use crate::auth::Caller;
use crate::export::metadata::tier_of;
use crate::query::{Columns, TestFilter, check_window, detail, readable_test, scoped_lab};
use crate::store::TestRow;

/// How long a download's token holds before it is checked again.
const TOKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// The API's routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/labs", get(labs))
        .route("/api/v1/cells", get(cells))
        .route("/api/v1/tests", get(tests))
        .route("/api/v1/tests/{test_id}", get(test))
        .route("/api/v1/tests/{test_id}/cycles", get(cycles))
        .route("/api/v1/tests/{test_id}/events", get(events))
        .route("/api/v1/tests/{test_id}/samples", get(samples))
        .route("/api/v1/tests/{test_id}/plot", get(plot))
        .route("/api/v1/tests/{test_id}/dqdv", get(dqdv))
        .route("/api/v1/tests/{test_id}/export/{format}", get(export))
        .fallback(not_found)
}

type Params = Query<HashMap<String, String>>;

async fn not_found() -> ApiError {
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        message: "no such route: see /api/v1/openapi.json for the API's routes".into(),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi::document(),
    )
        .into_response()
}

/// A number parameter, or a 400 naming it.
fn number(params: &HashMap<String, String>, name: &str) -> Result<f64, ApiError> {
    match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(0.0),
        Some(v) => v
            .parse::<f64>()
            .map_err(|_| ApiError::bad_request(format!("{name}={v:?} is not a number of seconds"))),
    }
}

fn text(params: &HashMap<String, String>, name: &str) -> String {
    params.get(name).cloned().unwrap_or_default()
}

async fn labs(State(state): State<HttpState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers).await?;
    let store = state.store.clone();
    let labs = blocking(move || Ok(store.labs()?)).await?;
    let labs: Vec<Value> = labs
        .into_iter()
        .filter(|(name, _)| caller.as_ref().is_none_or(|c| c.lab == *name))
        .map(|(name, created)| json!({ "name": name, "created_unix_s": created }))
        .collect();
    Ok(axum::Json(json!({ "labs": labs })).into_response())
}

async fn cells(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers).await?;
    let lab = scoped_lab(caller.as_ref(), text(&params, "lab"), "cells")?;
    let store = state.store.clone();
    let cells = blocking(move || Ok(crate::query::cells_of(&store, &lab)?)).await?;
    let cells: Vec<Value> = cells
        .iter()
        .map(|c| {
            json!({
                "cell_id": c.cell_id, "lab": c.lab, "manufacturer": c.manufacturer,
                "model": c.model, "chemistry": c.chemistry, "form_factor": c.form_factor,
                "nominal_capacity_ah": c.nominal_capacity_ah,
                "nominal_voltage_v": c.nominal_voltage_v,
                "first_test_unix_s": c.first_test_unix_s,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "cells": cells })).into_response())
}

/// The tests a filter of query parameters selects, for a caller: `lab`, `cell`, `chemistry`,
/// `state`, `team`, `daemon`, `started_after`/`started_before` (Unix seconds), `min_grade`
/// (a letter: that grade or better) and `q`, a
/// case-insensitive search of ids, channel, protocol and metadata values. Newest first.
pub async fn select_tests(
    state: &HttpState,
    caller: Option<&Caller>,
    params: &HashMap<String, String>,
) -> Result<Vec<(TestRow, String)>, ApiError> {
    let filter = TestFilter {
        lab: scoped_lab(caller, text(params, "lab"), "tests")?,
        team: text(params, "team"),
        daemon_id: text(params, "daemon"),
        cell_id: text(params, "cell"),
        chemistry: text(params, "chemistry"),
        state: text(params, "state"),
        started_after_unix_s: number(params, "started_after")?,
        started_before_unix_s: number(params, "started_before")?,
        min_grade: text(params, "min_grade"),
    };
    filter.check().map_err(ApiError::bad_request)?;
    let q = text(params, "q").trim().to_lowercase();
    let store = state.store.clone();
    let tests = blocking(move || Ok(filter.select(&store)?)).await?;
    Ok(tests
        .into_iter()
        .filter(|(t, _)| q.is_empty() || searched(t, &q))
        .collect())
}

/// Whether the lower-case `q` occurs in the test's ids, channel, protocol or metadata values.
fn searched(t: &TestRow, q: &str) -> bool {
    [&t.test_id, &t.daemon_id, &t.channel_id, &t.protocol_name]
        .into_iter()
        .chain(t.metadata.values())
        .any(|v| v.to_lowercase().contains(q))
}

/// A test's summary as JSON (the fields of gRPC's `TestSummary`).
pub fn summary_json(t: &TestRow, lab: &str) -> Value {
    let s = crate::query::summary(t, lab);
    json!({
        "test_id": s.test_id, "lab": s.lab, "daemon_id": s.daemon_id,
        "channel_id": s.channel_id, "protocol_name": s.protocol_name, "state": s.state,
        "start_unix_s": s.start_unix_s,
        "end_unix_s": t.end_unix_s, "sample_count": s.sample_count, "cell_id": s.cell_id,
        "chemistry": s.chemistry, "team": t.team,
        // Set when another hub shared the test with this one (`cyclerhub share`).
        "shared_from": t.shared_from.as_ref().map(|f| json!({
            "hub": f.hub, "share": f.share, "anonymised": f.anonymised,
            "selection": f.selection, "since_unix_s": f.since_unix_s,
        })),
        "grade": t.grade.as_ref().map(|g| g.letter.to_string()),
        "grade_score": t.grade.as_ref().map(|g| g.score),
    })
}

async fn tests(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers).await?;
    let tests = select_tests(&state, caller.as_ref(), &params).await?;
    let tests: Vec<Value> = tests.iter().map(|(t, lab)| summary_json(t, lab)).collect();
    Ok(axum::Json(json!({ "tests": tests })).into_response())
}

/// The test `test_id` and its lab, if the request's caller may read it.
pub async fn readable(
    state: &HttpState,
    headers: &HeaderMap,
    test_id: &str,
) -> Result<(TestRow, String), ApiError> {
    let caller = caller(state, headers).await?;
    let (store, id) = (state.store.clone(), test_id.to_owned());
    blocking(move || Ok(readable_test(&store, &id, caller.as_ref())?)).await
}

/// A test's detail as JSON: its summary, metadata by tier, schema problems, equipment and
/// events.
pub async fn detail_json(state: &HttpState, t: TestRow, lab: String) -> Result<Value, ApiError> {
    let store = state.store.clone();
    let (t, d) = blocking(move || {
        let d = detail(&store, &t, &lab)?;
        Ok((t, d))
    })
    .await?;
    let mut tiers: HashMap<&str, serde_json::Map<String, Value>> = HashMap::new();
    for (key, value) in &t.metadata {
        let (tier, name) = tier_of(key);
        tiers
            .entry(tier.name())
            .or_default()
            .insert(name.into(), json!(value));
    }
    let tier = |name| tiers.get(name).cloned().unwrap_or_default();
    let lab = d
        .summary
        .as_ref()
        .map(|s| s.lab.clone())
        .unwrap_or_default();
    Ok(json!({
        "summary": summary_json(&t, &lab),
        "metadata": {
            "primary": tier("primary"), "secondary": tier("secondary"),
            "tertiary": tier("tertiary"),
        },
        "metadata_problems": d.metadata_problems,
        "reason": t.reason,
        "expected_samples": t.expected_samples,
        "equipment": d.equipment.iter().map(|e| json!({
            "name": e.name, "family": e.family, "address": e.address, "role": e.role,
        })).collect::<Vec<_>>(),
        "events": events_json(&d.events),
        "grade_reasons": d.grade_reasons,
        "quality_findings": d.quality_findings.iter().map(|f| json!({
            "source": f.source, "check": f.check, "first_seq": f.first_seq,
            "last_seq": f.last_seq, "open": f.open, "first_test_time_s": f.first_test_time_s,
            "last_test_time_s": f.last_test_time_s, "missing_s": f.missing_s,
            "reason": f.reason,
        })).collect::<Vec<_>>(),
    }))
}

fn events_json(events: &[cyclerd_proto::hub::TestEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            json!({
                "unix_time_s": e.unix_time_s, "test_time_s": e.test_time_s, "kind": e.kind,
                "message": e.message, "step": e.step, "cycle": e.cycle,
            })
        })
        .collect()
}

async fn test(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
) -> Result<Response, ApiError> {
    let (t, lab) = readable(&state, &headers, &test_id).await?;
    Ok(axum::Json(detail_json(&state, t, lab).await?).into_response())
}

async fn events(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
) -> Result<Response, ApiError> {
    readable(&state, &headers, &test_id).await?;
    let store = state.store.clone();
    let events = blocking(move || Ok(store.events(&test_id)?)).await?;
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "unix_time_s": e.unix_time_s, "test_time_s": e.test_time_s, "kind": e.kind,
                "message": e.message, "step": e.step, "cycle": e.cycle,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "events": events })).into_response())
}

/// A test's cycles as JSON, as `ListCycles` gives them. Blocking.
pub fn cycles_json(store: &crate::HubStore, test_id: &str) -> Result<Value, ApiError> {
    let c = crate::cycles::list(store, test_id)?;
    let rows: Vec<Value> = c
        .cycles
        .iter()
        .map(|r| {
            json!({
                "cycle": r.cycle, "complete": r.complete,
                "start_test_time_s": r.start_test_time_s, "end_test_time_s": r.end_test_time_s,
                "duration_s": r.duration_s, "charge_capacity_ah": r.charge_capacity_ah,
                "discharge_capacity_ah": r.discharge_capacity_ah,
                "charge_energy_wh": r.charge_energy_wh,
                "discharge_energy_wh": r.discharge_energy_wh,
                "coulombic_efficiency": r.coulombic_efficiency,
                "energy_efficiency": r.energy_efficiency,
                "mean_charge_voltage_v": r.mean_charge_voltage_v,
                "mean_discharge_voltage_v": r.mean_discharge_voltage_v,
                "max_temperature_c": r.max_temperature_c,
                "capacity_retention": r.capacity_retention,
            })
        })
        .collect();
    Ok(json!({
        "test_id": c.test_id, "source": c.source,
        "retention_reference_cycle": c.retention_reference_cycle, "cycles": rows,
    }))
}

async fn cycles(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
) -> Result<Response, ApiError> {
    readable(&state, &headers, &test_id).await?;
    let store = state.store.clone();
    let cycles = blocking(move || cycles_json(&store, &test_id)).await?;
    Ok(axum::Json(cycles).into_response())
}

/// A comma-separated list parameter (absent or empty: none).
fn list(params: &HashMap<String, String>, name: &str) -> Vec<String> {
    params
        .get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn samples(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let format = SampleFormat::choose(
        params.get("format").map(String::as_str),
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    )?;
    let columns = Columns::parse(&list(&params, "columns")).map_err(ApiError::bad_request)?;
    let window = (number(&params, "from")?, number(&params, "to")?);
    check_window(window.0, window.1).map_err(ApiError::bad_request)?;
    readable(&state, &headers, &test_id).await?;
    let body = super::stream::body(
        state.store.clone(),
        state.auth.clone(),
        credentials(&state, &headers),
        TOKEN_RECHECK,
        SampleRead {
            test_id: test_id.clone(),
            columns,
            window,
        },
        format,
    );
    Ok(download(
        body,
        format.content_type(),
        &format!("{test_id}.{}", format.extension()),
    ))
}

/// A streamed download response named `file`.
fn download(body: Body, content_type: &'static str, file: &str) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn plot(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let width = match params.get("width").map(|w| w.trim()) {
        None | Some("") => 1000,
        Some(w) => w
            .parse::<usize>()
            .ok()
            .filter(|w| (1..=MAX_WIDTH).contains(w))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "width={w:?} is not a plot width: give pixels from 1 to {MAX_WIDTH}"
                ))
            })?,
    };
    let mut series = Vec::new();
    for name in list(&params, "series") {
        let known = SERIES.iter().find(|s| **s == name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "series {name:?} is not one a plot draws: give some of {}",
                SERIES.join(", ")
            ))
        })?;
        series.push(*known);
    }
    if series.is_empty() {
        series = vec!["voltage_v", "current_a", "temperature_c"];
    }
    let (from, to) = (number(&params, "from")?, number(&params, "to")?);
    check_window(from, to).map_err(ApiError::bad_request)?;
    readable(&state, &headers, &test_id).await?;
    let store = state.store.clone();
    let request = PlotRequest {
        test_id,
        from,
        to,
        width,
        series,
    };
    let plot = blocking(move || Ok(super::plot::reduce(&store, &request)?)).await?;
    Ok(axum::Json(plot).into_response())
}

async fn dqdv(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(test_id): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut cycles = Vec::new();
    for c in list(&params, "cycles") {
        cycles
            .push(c.parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!("cycle {c:?} is not a cycle number"))
            })?);
    }
    readable(&state, &headers, &test_id).await?;
    let store = state.store.clone();
    let curves = blocking(move || Ok(super::plot::dqdv(&store, &test_id, &cycles)?)).await?;
    Ok(axum::Json(curves).into_response())
}

async fn export(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path((test_id, format)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (content_type, suffix): (&'static str, &str) = match format.as_str() {
        "bdf-csv" => ("text/csv; charset=utf-8", "bdf.csv"),
        "bdf-parquet" => ("application/vnd.apache.parquet", "bdf.parquet"),
        "cycles-csv" => ("text/csv; charset=utf-8", "cycles.csv"),
        "cycles-parquet" => ("application/vnd.apache.parquet", "cycles.parquet"),
        "battery-archive-timeseries" => ("text/csv; charset=utf-8", "timeseries.csv"),
        "battery-archive-cycles" => ("text/csv; charset=utf-8", "cycle_data.csv"),
        "metadata-json" => ("application/json", "metadata.json"),
        other => {
            return Err(ApiError {
                status: axum::http::StatusCode::NOT_FOUND,
                message: format!(
                    "export format {other:?} is not one the hub writes: give one of {}",
                    EXPORTS.map(|(n, _)| n).join(", ")
                ),
            });
        }
    };
    readable(&state, &headers, &test_id).await?;
    let body = super::stream::export(state.store.clone(), test_id.clone(), format);
    Ok(download(body, content_type, &format!("{test_id}.{suffix}")))
}

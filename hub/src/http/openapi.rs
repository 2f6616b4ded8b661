//! The OpenAPI 3 document of `/api/v1`, written by hand beside the routes it describes
//! (`api.rs`); a test requests every path it lists.

use serde_json::{Value, json};

/// A query parameter.
fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false,
            "description": description, "schema": schema })
}

fn test_id() -> Value {
    json!({ "name": "test_id", "in": "path", "required": true,
            "description": "The test's id (a UUIDv7).", "schema": { "type": "string" } })
}

/// A GET operation answering JSON.
fn get_json(summary: &str, parameters: Vec<Value>) -> Value {
    json!({ "get": {
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": { "description": "OK", "content": { "application/json": {
                "schema": { "type": "object" } } } },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" }
        }
    }})
}

/// A GET operation answering a download in one of `types`.
fn get_file(summary: &str, parameters: Vec<Value>, types: &[&str]) -> Value {
    let content: serde_json::Map<String, Value> = types
        .iter()
        .map(|t| {
            (
                (*t).to_string(),
                json!({ "schema": { "type": "string", "format": "binary" } }),
            )
        })
        .collect();
    json!({ "get": {
        "summary": summary,
        "parameters": parameters,
        "responses": {
            "200": { "description": "The file, streamed (chunked).", "content": content },
            "400": { "$ref": "#/components/responses/Error" },
            "401": { "$ref": "#/components/responses/Error" },
            "403": { "$ref": "#/components/responses/Error" },
            "404": { "$ref": "#/components/responses/Error" }
        }
    }})
}

/// The document, as served at `/api/v1/openapi.json`.
pub fn document() -> String {
    let window = || {
        vec![
            query(
                "from",
                "Window start, test time in seconds (default 0).",
                json!({ "type": "number", "minimum": 0 }),
            ),
            query(
                "to",
                "Window end, test time in seconds (0 or absent: the end).",
                json!({ "type": "number", "minimum": 0 }),
            ),
        ]
    };
    let mut samples = vec![test_id()];
    samples.extend(window());
    samples.push(query(
        "columns",
        &format!(
            "Comma-separated columns (default all): {}.",
            crate::query::COLUMNS.join(", ")
        ),
        json!({ "type": "string" }),
    ));
    samples.push(query(
        "format",
        "csv, parquet or arrow (an Arrow IPC stream); absent: the Accept header decides \
         (default csv).",
        json!({ "type": "string", "enum": ["csv", "parquet", "arrow"] }),
    ));
    let mut plot = vec![test_id()];
    plot.extend(window());
    plot.push(query(
        "width",
        "Pixel columns of the plot (1 to 8192, default 1000).",
        json!({ "type": "integer", "minimum": 1, "maximum": super::plot::MAX_WIDTH }),
    ));
    plot.push(query(
        "series",
        &format!(
            "Comma-separated series (default voltage_v,current_a,temperature_c): {}.",
            super::plot::SERIES.join(", ")
        ),
        json!({ "type": "string" }),
    ));
    let tests = vec![
        query(
            "lab",
            "The lab whose daemons ran them.",
            json!({"type": "string"}),
        ),
        query(
            "cell",
            "Primary metadata cell_id.",
            json!({"type": "string"}),
        ),
        query(
            "chemistry",
            "Primary metadata chemistry.",
            json!({"type": "string"}),
        ),
        query(
            "state",
            "running, finished, stopped or faulted; ended: any of the last three.",
            json!({"type": "string", "enum": crate::query::STATES}),
        ),
        query("team", "The metadata's team.", json!({"type": "string"})),
        query(
            "daemon",
            "The daemon that ran them.",
            json!({"type": "string"}),
        ),
        query(
            "started_after",
            "Started at or after, Unix seconds.",
            json!({"type": "number"}),
        ),
        query(
            "started_before",
            "Started before, Unix seconds.",
            json!({"type": "number"}),
        ),
        query(
            "min_grade",
            "Graded this letter or better (A best, to E; docs/quality.md).",
            json!({"type": "string", "enum": ["A", "B", "C", "D", "E"]}),
        ),
        query(
            "q",
            "Search: ids, channel, protocol and metadata values contain it (any case).",
            json!({"type": "string"}),
        ),
    ];
    let export_names: Vec<&str> = super::EXPORTS.iter().map(|(n, _)| *n).collect();
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, op: Value| {
        paths.insert(path.to_string(), op);
    };
    add("/api/v1/openapi.json", get_json("This document.", vec![]));
    add(
        "/api/v1/labs",
        get_json("The labs the caller may read.", vec![]),
    );
    add(
        "/api/v1/cells",
        get_json(
            "The cells a lab tested.",
            vec![query(
                "lab",
                "The lab (default: the token's).",
                json!({"type": "string"}),
            )],
        ),
    );
    add("/api/v1/tests", get_json("Tests, newest first.", tests));
    add(
        "/api/v1/tests/{test_id}",
        get_json(
            "A test: summary, metadata by tier, schema problems, equipment, events.",
            vec![test_id()],
        ),
    );
    add(
        "/api/v1/tests/{test_id}/cycles",
        get_json(
            "Per-cycle results (capacity, efficiency, retention).",
            vec![test_id()],
        ),
    );
    add(
        "/api/v1/tests/{test_id}/events",
        get_json("Events (steps, states, alarms).", vec![test_id()]),
    );
    add(
        "/api/v1/tests/{test_id}/samples",
        get_file(
            "Samples, streamed: a column selection in a test-time window.",
            samples,
            &[
                "text/csv",
                "application/vnd.apache.parquet",
                "application/vnd.apache.arrow.stream",
            ],
        ),
    );
    add(
        "/api/v1/tests/{test_id}/plot",
        get_json(
            "A window reduced to per-pixel min/max strokes (or its samples when few).",
            plot,
        ),
    );
    add(
        "/api/v1/tests/{test_id}/dqdv",
        get_json(
            "dQ/dV of chosen cycles, per 5 mV bin.",
            vec![
                test_id(),
                query(
                    "cycles",
                    "Comma-separated cycle numbers (at most 12).",
                    json!({"type": "string"}),
                ),
            ],
        ),
    );
    add(
        "/api/v1/tests/{test_id}/export/{format}",
        get_file(
            "The test in an export format, streamed.",
            vec![
                test_id(),
                json!({ "name": "format", "in": "path", "required": true,
                        "schema": { "type": "string", "enum": export_names } }),
            ],
            &[
                "text/csv",
                "application/vnd.apache.parquet",
                "application/json",
            ],
        ),
    );
    let doc = json!({
        "openapi": "3.0.3",
        "info": {
            "title": "cyclerhub API",
            "version": "1",
            "description": "Read a lab hub's tests, cycles, events and samples. With \
                --require-tokens every request needs `Authorization: Bearer <token>` \
                (a reader token from `cyclerhub token issue --reader`) and sees its lab only."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": {
                    "description": "What was wrong, and what to do.",
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error"],
                        "properties": { "error": { "type": "string" } }
                    } } }
                }
            }
        }
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

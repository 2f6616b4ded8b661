//! Plots over HTTP: a plot built from the chunks' stored summaries is the plot of every sample
//! decoded, whatever the window and width, before the summaries exist (an older hub: chunks
//! are decoded) and after the backfill gave them.

use std::collections::BTreeMap;

use super::http::{get, grpc_table, many_samples};
use super::*;

/// `n` samples of `test_id` from `first` whose voltage and current wave (extremes inside a
/// chunk, not at its ends) and whose cell temperature is there on every third sample only.
fn wavy(test_id: &str, first: u64, n: usize) -> SampleBatch {
    let seqs: Vec<f64> = (first..first + n as u64).map(|s| s as f64).collect();
    let mut b = batch(test_id, first, n, false);
    b.voltage_v = seqs.iter().map(|s| 3.6 + 0.4 * (s / 37.0).sin()).collect();
    b.current_a = seqs.iter().map(|s| (s / 501.0).cos() * 2.0).collect();
    b.cycle = seqs.iter().map(|s| 1 + (*s as u32) / 10_000).collect();
    b.temperature_c = seqs
        .iter()
        .map(|s| {
            if (*s as u64).is_multiple_of(3) {
                25.0 + (s / 997.0).sin()
            } else {
                f64::NAN
            }
        })
        .collect();
    b
}

/// A test of 60 000 samples in batches of 2048, then 3000 in live batches of 40 (merged into
/// chunks that grow), on `hub`.
fn store_test(hub: &Hub) {
    let mut entries = vec![registered(1, T1)];
    let mut id = 2;
    for first in (0..60_000u64).step_by(2048) {
        let n = (60_000 - first).min(2048) as usize;
        entries.push(entry(id, Body::Samples(wavy(T1, first, n))));
        id += 1;
    }
    for first in (60_000..63_000u64).step_by(40) {
        entries.push(entry(id, Body::Samples(wavy(T1, first, 40))));
        id += 1;
    }
    hub.store.apply_batch("daemon-a", 1, &entries).unwrap();
}

/// The plot of every sample: per pixel column (`trunc((t - from) * width / span)`, the last
/// column taking `to`) the first sample's time with each series' minimum and, when the column
/// has more than one sample, the last one's time with each series' maximum.
fn reference(hub: &Hub, from: f64, to: f64, width: usize, series: &[&str]) -> serde_json::Value {
    #[derive(Clone)]
    struct Column {
        n: u64,
        first_t: f64,
        last_t: f64,
        min: Vec<f64>,
        max: Vec<f64>,
    }
    let empty = Column {
        n: 0,
        first_t: 0.0,
        last_t: 0.0,
        min: vec![f64::NAN; series.len()],
        max: vec![f64::NAN; series.len()],
    };
    let mut columns = vec![empty; width];
    let scale = width as f64 / (to - from).max(f64::MIN_POSITIVE);
    let mut n = 0;
    hub.store
        .for_each_sample(T1, |s| {
            if s.test_time_s < from || s.test_time_s > to {
                return Ok::<_, cyclerhub::store::StoreError>(());
            }
            n += 1;
            let c = &mut columns[(((s.test_time_s - from) * scale) as usize).min(width - 1)];
            if c.n == 0 {
                c.first_t = s.test_time_s;
            }
            c.n += 1;
            c.last_t = s.test_time_s;
            for (j, name) in series.iter().enumerate() {
                let v = match *name {
                    "voltage_v" => s.voltage_v,
                    "current_a" => s.current_a,
                    "temperature_c" => s.temperature_c.unwrap_or(f64::NAN),
                    "cycle" => f64::from(s.cycle),
                    other => panic!("no {other} in the reference"),
                };
                c.min[j] = c.min[j].min(v);
                c.max[j] = c.max[j].max(v);
            }
            Ok(())
        })
        .unwrap();
    let mut t = Vec::new();
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for c in columns.iter().filter(|c| c.n > 0) {
        t.push(c.first_t);
        for (j, name) in series.iter().enumerate() {
            values.entry(name).or_default().push(c.min[j]);
        }
        if c.n > 1 {
            t.push(c.last_t);
            for (j, name) in series.iter().enumerate() {
                values.entry(name).or_default().push(c.max[j]);
            }
        }
    }
    serde_json::json!({ "samples": n, "t": t, "series": values })
}

/// The hub's plot of the window, as JSON.
async fn plot(hub: &Hub, from: f64, to: f64, width: usize, series: &[&str]) -> serde_json::Value {
    let url = format!(
        "http://{}/api/v1/tests/{T1}/plot?from={from}&to={to}&width={width}&series={}",
        hub.http,
        series.join(",")
    );
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// Every window and width checked: the whole test, a window whose edges cut chunks, one at the
/// merged live chunks, and widths from a few columns to more than there are chunks.
async fn plots_match_every_sample(hub: &Hub) {
    let series = ["voltage_v", "current_a", "temperature_c", "cycle"];
    for (from, to) in [(0.0, 62_999.0), (1234.5, 45_678.9), (40_000.0, 62_999.0)] {
        for width in [7, 300, 1024, 4000] {
            let got = plot(hub, from, to, width, &series).await;
            let want = reference(hub, from, to, width, &series);
            assert_eq!(got["reduced"], true, "{from}..{to} at {width}");
            for key in ["samples", "t", "series"] {
                assert_eq!(got[key], want[key], "{key} of {from}..{to} at {width}");
            }
        }
    }
}

/// Runs `sql` on the hub's database (SQLite file or PostgreSQL), as an operator would (on a
/// thread of its own: the PostgreSQL client blocks).
fn execute(hub: &Hub, backend: Backend, sql: &str) {
    std::thread::scope(|s| {
        s.spawn(|| execute_blocking(hub, backend, sql))
            .join()
            .unwrap()
    });
}

fn execute_blocking(hub: &Hub, backend: Backend, sql: &str) {
    match backend {
        Backend::Sqlite => rusqlite::Connection::open(&hub.db)
            .unwrap()
            .execute_batch(sql)
            .unwrap(),
        Backend::Postgres => postgres::Client::connect(&hub.db, postgres::NoTls)
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
    }
}

fn count(hub: &Hub, backend: Backend, table: &str) -> i64 {
    std::thread::scope(|s| {
        s.spawn(|| count_blocking(hub, backend, table))
            .join()
            .unwrap()
    })
}

fn count_blocking(hub: &Hub, backend: Backend, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    match backend {
        Backend::Sqlite => rusqlite::Connection::open(&hub.db)
            .unwrap()
            .query_row(&sql, [], |r| r.get(0))
            .unwrap(),
        Backend::Postgres => postgres::Client::connect(&hub.db, postgres::NoTls)
            .unwrap()
            .query_one(&sql, &[])
            .unwrap()
            .get(0),
    }
}

async fn a_plot_from_chunk_summaries_is_the_plot_of_every_sample_before_and_after_the_backfill(
    backend: Backend,
) {
    let hub = Hub::start(backend).await;
    store_test(&hub);
    let chunks = count(&hub, backend, "sample_chunks");
    assert!(chunks > 30, "{chunks} chunks");
    assert_eq!(count(&hub, backend, "chunk_summaries"), chunks);
    plots_match_every_sample(&hub).await;

    // A hub from before summaries: every chunk is decoded, to the same plot.
    execute(
        &hub,
        backend,
        "DELETE FROM chunk_summaries; \
         INSERT INTO summary_backfill VALUES (-9223372036854775808, -9223372036854775808)",
    );
    plots_match_every_sample(&hub).await;
    // Opening it again backfills every chunk's summary, once.
    std::thread::scope(|s| {
        s.spawn(|| drop(HubStore::connect(&hub.db).unwrap()))
            .join()
            .unwrap()
    });
    assert_eq!(count(&hub, backend, "chunk_summaries"), chunks);
    assert_eq!(count(&hub, backend, "summary_backfill"), 0);
    plots_match_every_sample(&hub).await;
}

async fn a_plot_is_reduced_to_two_points_per_pixel_column_keeping_the_extremes(backend: Backend) {
    let hub = Hub::start(backend).await;
    let mut entries = vec![registered(1, T1)];
    entries.extend(many_samples(2, T1, 0, 100_000));
    hub.store.apply_batch("daemon-a", 1, &entries).unwrap();
    let plot: serde_json::Value = serde_json::from_str(
        &get(
            &hub,
            &format!("/api/v1/tests/{T1}/plot?width=300&series=voltage_v,temperature_c"),
        )
        .await
        .text()
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(plot["samples"], 100_000);
    assert_eq!(plot["reduced"], true);
    let t = plot["t"].as_array().unwrap();
    assert!(t.len() <= 600 && t.len() >= 300, "{} points", t.len());
    let v: Vec<f64> = plot["series"]["voltage_v"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let grpc = grpc_table(&hub, T1, &["voltage_v"], (0.0, 0.0)).await;
    let max = grpc["voltage_v"]
        .iter()
        .flatten()
        .fold(f64::MIN, |a, b| a.max(*b));
    let min = grpc["voltage_v"]
        .iter()
        .flatten()
        .fold(f64::MAX, |a, b| a.min(*b));
    assert_eq!(v.iter().fold(f64::MIN, |a, b| a.max(*b)), max);
    assert_eq!(v.iter().fold(f64::MAX, |a, b| a.min(*b)), min);

    // Zoomed in to fewer samples than pixels: the samples themselves.
    let zoom: serde_json::Value = serde_json::from_str(
        &get(
            &hub,
            &format!("/api/v1/tests/{T1}/plot?from=500&to=599&width=300"),
        )
        .await
        .text()
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(zoom["reduced"], false);
    assert_eq!(zoom["t"].as_array().unwrap().len(), 100);
    assert_eq!(zoom["t"][0], 500.0);

    let bad = get(&hub, &format!("/api/v1/tests/{T1}/plot?width=0")).await;
    assert_eq!(bad.status(), 400);
    let error: serde_json::Value = serde_json::from_str(&bad.text().await.unwrap()).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("width"),
        "{error}"
    );
}

on_both_backends!(
    a_plot_from_chunk_summaries_is_the_plot_of_every_sample_before_and_after_the_backfill,
    a_plot_is_reduced_to_two_points_per_pixel_column_keeping_the_extremes,
);

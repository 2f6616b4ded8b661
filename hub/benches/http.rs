//! Hub HTTP benchmark (run in release: `cargo bench -p cyclerhub --bench http`).
//!
//! One SQLite hub holding one test of [`SAMPLES`] demo-like samples ([`demo_data`]), served on
//! loopback with its HTTP listener; measured in the same run, [`ROUNDS`] rounds each, median,
//! min and max:
//! 1. baseline: the bare store read, `for_each_chunk_from` over the whole test, every column
//!    decoded (samples/s);
//! 2. plot: `GET /api/v1/tests/ID/plot?width=1000` of the whole test, time to the first byte
//!    and to the full data, against the time of the bare read; and a zoomed window (1 %);
//! 3. Parquet: `GET /api/v1/tests/ID/samples?format=parquet` read to its end by an HTTP client
//!    (samples/s, and the ratio to the bare read).
//!
//! The hub requires tokens, and every request carries a reader token. With `PANDAS_PYTHON` set
//! to a Python that has pandas and pyarrow, `pandas.read_parquet(URL, storage_options=...)`
//! reads the whole test once more, as the README shows it, and its rows are checked.

use cyclerd_proto::demo_data;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cyclerd_proto::ingest::{Entry, TestRegistered, entry::Body};
use cyclerhub::HubStore;
use demo_data::Demo;

/// Samples of the test.
const SAMPLES: usize = 10_000_000;
/// Samples per entry, as a daemon's outbox packs them.
const SAMPLES_PER_ENTRY: usize = 2048;
/// Entries per transaction.
const ENTRIES_PER_BATCH: usize = 32;
/// Measurements per quantity.
const ROUNDS: usize = 5;
const TEST_ID: &str = "0190a0c0-0000-7000-8000-00000000b001";

fn registered() -> Entry {
    Entry {
        id: 1,
        body: Some(Body::TestRegistered(TestRegistered {
            test_id: TEST_ID.into(),
            channel_id: "psb1/1".into(),
            metadata: HashMap::from([("cell_id".into(), "bench".into())]),
            protocol_name: "bench".into(),
            protocol_source: String::new(),
            plan_json: "{}".into(),
            start_unix_s: 1.7e9,
            equipment: Vec::new(),
        })),
        skipped_before: 0,
    }
}

/// Median, min and max.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Time to the first byte of the body and to its end, and the bytes, of `GET url`.
async fn timed_get(client: &reqwest::Client, url: &str) -> (Duration, Duration, usize) {
    let start = Instant::now();
    let mut response = client.get(url).bearer_auth(token()).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let mut first = None;
    let mut bytes = 0;
    while let Some(piece) = response.chunk().await.unwrap() {
        first.get_or_insert_with(|| start.elapsed());
        bytes += piece.len();
    }
    let total = start.elapsed();
    (first.unwrap_or(total), total, bytes)
}

/// The reader token every request carries.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn token() -> &'static str {
    TOKEN.get().map(String::as_str).unwrap_or_default()
}

/// Reads the test with pandas, as the README says, when `PANDAS_PYTHON` names a Python.
fn pandas(url: &str) {
    let Some(python) = std::env::var_os("PANDAS_PYTHON") else {
        println!("pandas: skipped (set PANDAS_PYTHON to a Python with pandas and pyarrow)");
        return;
    };
    let script = format!(
        "import time, pandas as pd\nt = time.time()\n\
         df = pd.read_parquet({url:?}, storage_options={{'Authorization': 'Bearer {}'}})\n\
         print(len(df), round(time.time() - t, 2), pd.__version__, list(df.columns)[:4])",
        token()
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: usize = text.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(rows, SAMPLES);
    println!(
        "pandas.read_parquet(URL, storage_options=Bearer): rows, seconds, pandas, columns: {text}"
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = HubStore::open(dir.path().join("hub.sqlite")).unwrap();
    let reader = store
        .issue_token("bench-lab", "bench-reader", cyclerhub::auth::Role::Reader)
        .unwrap();
    TOKEN.set(reader).unwrap();
    let loading = Instant::now();
    store.apply_batch("bench", 1, &[registered()]).unwrap();
    let mut demo = Demo::new(7);
    let (mut id, mut written) = (1u64, 0usize);
    while written < SAMPLES {
        let entries: Vec<Entry> = (0..ENTRIES_PER_BATCH)
            .map(|_| {
                id += 1;
                let n = SAMPLES_PER_ENTRY.min(SAMPLES - written);
                written += n;
                Entry {
                    id,
                    body: Some(Body::Samples(demo.batch(TEST_ID, n))),
                    skipped_before: 0,
                }
            })
            .filter(|e| matches!(&e.body, Some(Body::Samples(b)) if !b.test_time_s.is_empty()))
            .collect();
        store.apply_batch("bench", 1, &entries).unwrap();
    }
    store.assign_daemon("bench", "bench-lab").unwrap();
    println!(
        "hub HTTP, SQLite, one test of {SAMPLES} demo-like samples (loaded in {:.1} s), \
         median of {ROUNDS} (min, max)",
        loading.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1/tests/{TEST_ID}", http.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(cyclerhub::server::serve_all(
            grpc,
            Some(cyclerhub::server::HttpListener {
                listener: http,
                tls: None,
            }),
            store.clone(),
            cyclerhub::server::ServeOptions {
                require_tokens: true,
                ..cyclerhub::server::ServeOptions::default()
            },
            async {
                let _ = stopped.await;
            },
        ));
        let client = reqwest::Client::new();

        let mut bare = Vec::new();
        let (mut plot_first, mut plot_full, mut zoom_full) = (Vec::new(), Vec::new(), Vec::new());
        let mut parquet = Vec::new();
        let mut points = 0;
        let mut parquet_bytes = 0;
        for _ in 0..ROUNDS {
            let s = store.clone();
            let t = tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                let mut sum = 0.0;
                let n = s
                    .for_each_chunk_from(TEST_ID, 0, |_, c| {
                        sum += c.head[2].iter().sum::<f64>();
                        Ok::<_, cyclerhub::StoreError>(())
                    })
                    .unwrap();
                assert!(sum > 0.0);
                assert_eq!(n as usize, SAMPLES);
                start.elapsed()
            })
            .await
            .unwrap();
            bare.push(t);
            let (first, full, bytes) = timed_get(&client, &format!("{base}/plot?width=1000")).await;
            plot_first.push(first);
            plot_full.push(full);
            points = bytes;
            let span = SAMPLES as f64 * 0.1; // demo samples are 0.1 s apart
            let (_, zoom, _) = timed_get(
                &client,
                &format!("{base}/plot?width=1000&from={}&to={}", span * 0.5, span * 0.51),
            )
            .await;
            zoom_full.push(zoom);
            let (_, full, bytes) = timed_get(&client, &format!("{base}/samples?format=parquet")).await;
            parquet.push(full);
            parquet_bytes = bytes;
        }
        let rate = |d: &[Duration]| {
            stats(d.iter().map(|d| SAMPLES as f64 / d.as_secs_f64() / 1e6).collect())
        };
        let times = |d: &[Duration]| stats(d.iter().map(|d| ms(*d)).collect());
        let (b, bmin, bmax) = times(&bare);
        let (br, brmin, brmax) = rate(&bare);
        println!(
            "bare store read (for_each_chunk_from, whole test):  {b:.0} ms ({bmin:.0}, {bmax:.0}) = \
             {br:.1} M samples/s ({brmin:.1}, {brmax:.1})"
        );
        let (f, fmin, fmax) = times(&plot_first);
        let (p, pmin, pmax) = times(&plot_full);
        println!(
            "plot, whole test, width 1000 ({points} bytes of JSON): first byte {f:.0} ms \
             ({fmin:.0}, {fmax:.0}), full data {p:.0} ms ({pmin:.0}, {pmax:.0}) = {:.2}x the bare read",
            p / b
        );
        let (z, zmin, zmax) = times(&zoom_full);
        println!("plot, 1 % window, width 1000: full data {z:.1} ms ({zmin:.1}, {zmax:.1})");
        let (r, rmin, rmax) = rate(&parquet);
        println!(
            "Parquet download, whole test ({:.0} MB): {r:.2} M samples/s ({rmin:.2}, {rmax:.2}) \
             = {:.2}x the bare read",
            parquet_bytes as f64 / 1e6,
            r / br
        );
        let url = format!("{base}/samples?format=parquet");
        tokio::task::spawn_blocking(move || pandas(&url)).await.unwrap();
        let _ = stop.send(());
        let _ = server.await;
    });
}

//! The HTTP API and web app over loopback with a real HTTP client (reqwest): Parquet, Arrow and
//! CSV downloads hold what the gRPC read gives, a download is streamed (it starts before the test
//! is read to its end), every path of the OpenAPI document answers,
//! and a bad token is refused on the API (401) and at sign in.

use std::collections::BTreeMap;

use super::*;
use cyclerd_proto::hub::ReadSamplesRequest;
use cyclerd_proto::hub::query_client::QueryClient;
use cyclerhub::auth::Role;
use cyclerhub::query::{COLUMNS, Column, column};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

/// Columns by name, each value as f64 (`None`: missing), in seq order.
pub(super) type Table = BTreeMap<String, Vec<Option<f64>>>;

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(super) fn url(hub: &Hub, path: &str) -> String {
    format!("http://{}{path}", hub.http)
}

/// `n` samples of `test_id` from seq `first` as store entries of 10 000 samples, ids from `id`.
pub(super) fn many_samples(id: u64, test_id: &str, first: u64, n: u64) -> Vec<Entry> {
    (0..n.div_ceil(10_000))
        .map(|i| {
            let from = first + i * 10_000;
            let len = (first + n - from).min(10_000) as usize;
            entry(id + i, Body::Samples(batch(test_id, from, len, i % 2 == 0)))
        })
        .collect()
}

/// What gRPC's ReadSamples gives for the columns and window, as a [`Table`] with `seq`.
pub(super) async fn grpc_table(
    hub: &Hub,
    test_id: &str,
    columns: &[&str],
    window: (f64, f64),
) -> Table {
    let mut q = QueryClient::new(hub.channel().await);
    let mut stream = q
        .read_samples(ReadSamplesRequest {
            test_id: test_id.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            from_test_time_s: window.0,
            to_test_time_s: window.1,
            with_plan_step: false,
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = if columns.is_empty() {
        COLUMNS.to_vec()
    } else {
        COLUMNS
            .iter()
            .copied()
            .filter(|c| columns.contains(c))
            .collect()
    };
    let mut table = Table::new();
    while let Some(b) = stream.message().await.unwrap() {
        let n = column(&b, names[0]).len();
        let seqs = table.entry("seq".into()).or_default();
        seqs.extend((0..n).map(|i| Some((b.first_seq + i as u64) as f64)));
        for name in &names {
            let values = table.entry(name.to_string()).or_default();
            match column(&b, name) {
                Column::Real(v) => {
                    values.extend(v.iter().map(|x| Some(*x).filter(|x| !x.is_nan())))
                }
                Column::Count(v) => values.extend(v.iter().map(|x| Some(f64::from(*x)))),
            }
        }
    }
    table
}

/// A Parquet file's columns as a [`Table`].
fn parquet_table(bytes: impl parquet::file::reader::ChunkReader + 'static) -> Table {
    let reader = SerializedFileReader::new(bytes).expect("a Parquet file");
    let mut table = Table::new();
    for row in reader.get_row_iter(None).unwrap() {
        for (name, field) in row.unwrap().get_column_iter() {
            let value = match field {
                Field::Long(v) => Some(*v as f64),
                Field::Double(v) => Some(*v),
                Field::Null => None,
                other => panic!("column {name} holds {other:?}"),
            };
            table.entry(name.clone()).or_default().push(value);
        }
    }
    table
}

/// An Arrow IPC stream's columns as a [`Table`].
fn arrow_table(bytes: &[u8]) -> Table {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_schema::DataType;
    let reader = arrow_ipc::reader::StreamReader::try_new(bytes, None).expect("an Arrow stream");
    let mut table = Table::new();
    for batch in reader {
        let batch = batch.unwrap();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let values = table.entry(field.name().clone()).or_default();
            match field.data_type() {
                DataType::Int64 => values.extend(
                    array
                        .as_primitive::<Int64Type>()
                        .iter()
                        .map(|v| v.map(|v| v as f64)),
                ),
                DataType::Float64 => values.extend(array.as_primitive::<Float64Type>().iter()),
                other => panic!("column {} holds {other}", field.name()),
            }
        }
    }
    table
}

/// A CSV download as a [`Table`] (empty fields missing).
fn csv_table(text: &str) -> Table {
    let mut lines = text.lines();
    let names: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut table = Table::new();
    for line in lines {
        for (name, field) in names.iter().zip(line.split(',')) {
            table
                .entry(name.clone())
                .or_default()
                .push(field.parse::<f64>().ok());
        }
    }
    table
}

pub(super) async fn get(hub: &Hub, path: &str) -> reqwest::Response {
    client().get(url(hub, path)).send().await.unwrap()
}

async fn parquet_arrow_and_csv_downloads_hold_what_the_grpc_read_gives(backend: Backend) {
    let hub = Hub::start(backend).await;
    let mut entries = vec![registered(1, T1)];
    entries.extend(many_samples(2, T1, 0, 150_000));
    hub.store.apply_batch("daemon-a", 1, &entries).unwrap();

    let response = get(&hub, &format!("/api/v1/tests/{T1}/samples?format=parquet")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let parquet = parquet_table(response.bytes().await.unwrap());
    let grpc = grpc_table(&hub, T1, &[], (0.0, 0.0)).await;
    assert_eq!(parquet["seq"].len(), 150_000);
    assert_eq!(parquet, grpc);

    // A column selection and a window, asked for by the Accept header.
    let response = client()
        .get(url(
            &hub,
            &format!("/api/v1/tests/{T1}/samples?columns=voltage_v,temperature_c,cycle&from=70000.5&to=90000"),
        ))
        .header("accept", "application/vnd.apache.parquet")
        .send()
        .await
        .unwrap();
    let parquet = parquet_table(response.bytes().await.unwrap());
    let grpc = grpc_table(
        &hub,
        T1,
        &["voltage_v", "temperature_c", "cycle"],
        (70_000.5, 90_000.0),
    )
    .await;
    assert_eq!(parquet.len(), 4, "seq and the three columns");
    assert_eq!(parquet["seq"].len(), 20_000);
    assert_eq!(parquet, grpc);

    // The same as an Arrow IPC stream.
    let response = get(
        &hub,
        &format!("/api/v1/tests/{T1}/samples?format=arrow&columns=voltage_v,temperature_c,cycle&from=70000.5&to=90000"),
    )
    .await;
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    assert_eq!(arrow_table(&response.bytes().await.unwrap()), grpc);
    let whole = get(&hub, &format!("/api/v1/tests/{T1}/samples?format=arrow")).await;
    let whole = arrow_table(&whole.bytes().await.unwrap());
    assert_eq!(whole, grpc_table(&hub, T1, &[], (0.0, 0.0)).await);

    let csv = get(
        &hub,
        &format!("/api/v1/tests/{T1}/samples?format=csv&columns=current_a,temperature_c&to=20000"),
    )
    .await
    .text()
    .await
    .unwrap();
    let grpc = grpc_table(&hub, T1, &["current_a", "temperature_c"], (0.0, 20_000.0)).await;
    assert_eq!(csv_table(&csv), grpc);
}

async fn a_download_starts_before_the_test_is_read_to_its_end(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let hub = Hub::start(backend).await;
    let mut entries = vec![registered(1, T1)];
    entries.extend(many_samples(2, T1, 0, 600_000));
    let next_id = entries.last().unwrap().id + 1;
    hub.store.apply_batch("daemon-a", 1, &entries).unwrap();
    // A client with a small receive window (loopback would otherwise buffer megabytes): what
    // the hub has encoded ahead of it is bounded by the hub, not by the socket.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 << 10).unwrap();
    let mut stream = socket.connect(hub.http).await.unwrap();
    stream
        .write_all(
            format!("GET /api/v1/tests/{T1}/samples?format=parquet HTTP/1.0\r\nHost: hub\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut piece = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut piece).await.unwrap();
        assert!(n > 0, "the response starts");
        response.extend_from_slice(&piece[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n")
            && response.len() > at + 4
        {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&response[..header_end]).to_string();
    assert!(head.contains(" 200 "), "{head}");
    // The test grows after the first bytes arrived: a response buffered whole would not hold
    // these samples; a streamed one reads them when it gets there.
    hub.store
        .apply_batch("daemon-a", 1, &[samples(next_id, T1, 600_000, 1_000)])
        .unwrap();
    assert_eq!(hub.store.sample_count(T1).unwrap(), 601_000);
    stream.read_to_end(&mut response).await.unwrap();
    let parquet = parquet_table(bytes_of(response.split_off(header_end)));
    assert_eq!(parquet["seq"].len(), 601_000);
    assert_eq!(parquet["seq"].last(), Some(&Some(600_999.0)));
}

/// Bytes a Parquet reader reads.
fn bytes_of(v: Vec<u8>) -> impl parquet::file::reader::ChunkReader + 'static {
    bytes::Bytes::from(v)
}

async fn every_path_of_the_openapi_document_answers(backend: Backend) {
    let hub = Hub::start(backend).await;
    hub.store
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(
        &get(&hub, "/api/v1/openapi.json")
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 11, "{} paths", paths.len());
    for (path, item) in paths {
        let formats: Vec<String> = item["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == "format" && p["in"] == "path")
            .flat_map(|p| p["schema"]["enum"].as_array().unwrap().clone())
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        let formats = if formats.is_empty() {
            vec![String::new()]
        } else {
            formats
        };
        for format in formats {
            let concrete = path.replace("{test_id}", T1).replace("{format}", &format);
            let response = get(&hub, &concrete).await;
            let status = response.status();
            let body = response.bytes().await.expect("the whole body");
            assert_eq!(
                status,
                200,
                "{concrete}: {}",
                String::from_utf8_lossy(&body)
            );
            assert!(!body.is_empty(), "{concrete} answers something");
        }
    }
    let missing = get(&hub, "/api/v1/tests/no-such-test").await;
    assert_eq!(missing.status(), 404);
}

async fn a_bad_token_is_refused_on_the_api_and_at_sign_in(backend: Backend) {
    let hub = super::auth::token_hub(backend).await;
    hub.store
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    hub.store.assign_daemon("daemon-a", "cell-ageing").unwrap();
    hub.store
        .apply_batch("daemon-b", 1, &whole_test(0, T2))
        .unwrap();
    hub.store.assign_daemon("daemon-b", "other-lab").unwrap();
    let reader = hub
        .store
        .issue_token("cell-ageing", "analyst", Role::Reader)
        .unwrap();
    let forged = "cyh_0123456789ab_".to_string() + &"0".repeat(64);

    let anonymous = get(&hub, "/api/v1/tests").await;
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let error: serde_json::Value = serde_json::from_str(&anonymous.text().await.unwrap()).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("token"),
        "{error}"
    );
    for path in ["/api/v1/tests", &format!("/api/v1/tests/{T1}/samples")] {
        let bad = client()
            .get(url(&hub, path))
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 401, "{path}");
    }
    let listed = client()
        .get(url(&hub, "/api/v1/tests"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed: serde_json::Value = serde_json::from_str(&listed.text().await.unwrap()).unwrap();
    assert_eq!(
        listed["tests"].as_array().unwrap().len(),
        1,
        "its lab's only"
    );
    let other = client()
        .get(url(&hub, &format!("/api/v1/tests/{T2}")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    // The app: pages send a stranger to sign in, which refuses a bad token.
    let page = get(&hub, "/").await;
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/signin");
    let refused = client()
        .post(url(&hub, "/signin"))
        .form(&[("token", forged.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(!refused.headers().contains_key("set-cookie"));
    assert!(refused.text().await.unwrap().contains("signin-error"));

    let signed_in = client()
        .post(url(&hub, "/signin"))
        .form(&[("token", reader.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let list = client()
        .get(url(&hub, "/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let html = list.text().await.unwrap();
    assert!(html.contains(T1) && !html.contains(T2));
    let page = client()
        .get(url(&hub, &format!("/tests/{T1}")))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("NMC-0042"));

    // Signing out ends the session.
    let out = client()
        .post(url(&hub, "/signout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    let after = client()
        .get(url(&hub, "/api/v1/tests"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

on_both_backends!(
    parquet_arrow_and_csv_downloads_hold_what_the_grpc_read_gives,
    a_download_starts_before_the_test_is_read_to_its_end,
    every_path_of_the_openapi_document_answers,
    a_bad_token_is_refused_on_the_api_and_at_sign_in,
);

//! `cyclerhub` reading from anywhere: exports over `--hub` the same as from the database, bulk
//! exports into a folder, dates and states in filters, id prefixes, and the errors for a hub
//! that cannot be reached.

use std::collections::BTreeMap;

use cyclerd_proto::hub::ReadSamplesRequest;
use cyclerd_proto::hub::query_client::QueryClient;

use super::*;

/// Runs `cyclerhub` off the test's runtime (the hub it asks runs on it).
pub(super) async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cyclerhub(&args)
    })
    .await
    .unwrap()
}

pub(super) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Every file under `dir` (relative name -> bytes).
pub(super) fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn an_export_from_a_running_hub_is_byte_identical_to_one_from_the_database() {
    let mut hub = hub_with_cycling_test(Backend::Sqlite, HALF_CYCLE).await;
    let (db, url) = (hub.db.clone(), format!("http://{}", hub.addr));
    let dir = tempfile::tempdir().unwrap();
    // A unique prefix of the id names the test, here on the hub side.
    let prefix = &TEST_ID[..TEST_ID.len() - 1];
    for format in ["bdf-csv", "bdf-parquet", "battery-archive"] {
        let mut exported = Vec::new();
        for (from, id) in [("--db", db.as_str()), ("--hub", url.as_str())] {
            // Into folders that do not exist yet.
            let folder = dir.path().join(format).join(&from[2..]).join("new");
            let out = folder.join("run");
            let test = if from == "--hub" { prefix } else { TEST_ID };
            let args = [
                "export",
                from,
                id,
                test,
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
            ];
            let done = run(strings(&args)).await;
            assert!(done.status.success(), "{format} {from}: {}", stderr(&done));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = fs::metadata(&folder).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o700, "{}", folder.display());
            }
            exported.push(files(&folder));
        }
        assert_eq!(exported[0].len(), 3, "{format}: {:?}", exported[0].keys());
        assert_eq!(
            exported[0].keys().collect::<Vec<_>>(),
            exported[1].keys().collect::<Vec<_>>()
        );
        for (name, bytes) in &exported[0] {
            assert!(exported[1][name] == *bytes, "{format}: {name} differs");
        }
    }
    // BDF CSV on standard output, too.
    let mut printed = Vec::new();
    for from in [["--db", db.as_str()], ["--hub", url.as_str()]] {
        let done = run(strings(&["export", from[0], from[1], TEST_ID])).await;
        assert!(done.status.success(), "{}", stderr(&done));
        printed.push(done.stdout);
    }
    assert_eq!(printed[0].len(), printed[1].len());
    assert!(printed[0] == printed[1]);
    hub.shutdown().await;
}

/// Registers a test of `cell` started at `start` (ended when `ended`), with a few samples.
async fn upload_test(hub: &Hub, daemon: &str, test_id: &str, cell: &str, start: f64, ended: bool) {
    let (mut up, resume) = hub.upload(daemon, 1).await;
    let Some(Body::TestRegistered(mut test)) = registered(resume + 1, test_id).body else {
        unreachable!("registered builds a TestRegistered")
    };
    test.metadata.insert("cell_id".into(), cell.into());
    test.start_unix_s = start;
    let mut entries = vec![
        entry(resume + 1, Body::TestRegistered(test)),
        samples(resume + 2, test_id, 0, 10),
    ];
    if ended {
        entries.push(super::ended(resume + 3, test_id, 10));
    }
    let last = entries.last().unwrap().id;
    up.send_entries(entries).await;
    assert!(up.until_ack(last).await.is_empty());
}

/// 2026-12-01 08:00 UTC.
pub(super) const DAY: f64 = 1_796_112_000.0;
pub(super) const A1: &str = "0190a0c0-0000-7000-8000-00000000a001";
pub(super) const A2: &str = "0190a0c0-0000-7000-8000-00000000a002";
pub(super) const B1: &str = "0190a0c0-0000-7000-8000-00000000b001";
pub(super) const OLD: &str = "0190a0c0-0000-7000-8000-00000000c001";

/// A hub with four tests of lab `cell-lab`: two ended ones of cell NMC_42 on 1 December 2026,
/// one still running that day, and one ended the day before.
pub(super) async fn hub_with_a_lab() -> Hub {
    let hub = Hub::start(Backend::Sqlite).await;
    upload_test(&hub, "pc-1", A1, "NMC_42", DAY, true).await;
    upload_test(&hub, "pc-1", A2, "NMC_42", DAY + 3600.0, true).await;
    upload_test(&hub, "pc-1", B1, "NMC_42", DAY + 7200.0, false).await;
    upload_test(&hub, "pc-1", OLD, "NMC_42", DAY - 86_400.0, true).await;
    hub.store.assign_daemon("pc-1", "cell-lab").unwrap();
    hub
}

#[tokio::test]
async fn a_bulk_export_writes_one_file_set_per_matching_test_named_as_bdf_names_files() {
    let mut hub = hub_with_a_lab().await;
    let (db, url) = (hub.db.clone(), format!("http://{}", hub.addr));
    let dir = tempfile::tempdir().unwrap();
    let mut exported = Vec::new();
    for (from, id) in [("--db", db.as_str()), ("--hub", url.as_str())] {
        let folder = dir.path().join(&from[2..]).join("december");
        let args = [
            "export",
            from,
            id,
            "--lab",
            "cell-lab",
            "--state",
            "ended",
            "--since",
            "2026-12-01",
            "-o",
            folder.to_str().unwrap(),
        ];
        let done = run(strings(&args)).await;
        assert!(done.status.success(), "{from}: {}", stderr(&done));
        assert!(
            stderr(&done).contains("exported 2 tests"),
            "{}",
            stderr(&done)
        );
        exported.push(files(&folder));
    }
    let names: Vec<&String> = exported[0].keys().collect();
    assert_eq!(
        names,
        [
            "cell-lab__NMC-42__20261201_001.bdf.csv",
            "cell-lab__NMC-42__20261201_001.bdf.csv.metadata.json",
            "cell-lab__NMC-42__20261201_001.cycles.csv",
            "cell-lab__NMC-42__20261201_002.bdf.csv",
            "cell-lab__NMC-42__20261201_002.bdf.csv.metadata.json",
            "cell-lab__NMC-42__20261201_002.cycles.csv",
        ],
        "the running test (the day's third) and the day before's are not exported"
    );
    assert_eq!(exported[0], exported[1]);
    let json: Value = serde_json::from_slice(
        &exported[0]["cell-lab__NMC-42__20261201_001.bdf.csv.metadata.json"],
    )
    .unwrap();
    assert_eq!(json["test_id"], A1);

    // A filter that matches nothing exports nothing, and says so.
    let args = ["export", "--db", &db, "--cell", "LFP-1", "-o", "unused"];
    let done = run(strings(&args)).await;
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(
        stderr(&done).contains("no test matches"),
        "{}",
        stderr(&done)
    );
    assert!(!Path::new("unused").exists());
    hub.shutdown().await;
}

#[tokio::test]
async fn tests_filter_by_dates_and_states_the_same_from_the_database_and_a_hub() {
    let mut hub = hub_with_a_lab().await;
    let (db, url) = (hub.db.clone(), format!("http://{}", hub.addr));
    for (from, id) in [("--db", db.as_str()), ("--hub", url.as_str())] {
        let list = async |more: &[&str]| {
            let done = run(strings(&[&["tests", from, id], more].concat())).await;
            assert!(done.status.success(), "{more:?}: {}", stderr(&done));
            String::from_utf8(done.stdout).unwrap()
        };
        let december = list(&["--since", "2026-12-01", "--until", "2026-12-02"]).await;
        assert!(december.contains(A1) && december.contains(A2) && december.contains(B1));
        assert!(!december.contains(OLD), "{december}");
        let after_nine = list(&["--since", "2026-12-01T10:00:00+01:00"]).await;
        assert!(
            !after_nine.contains(A1) && after_nine.contains(A2),
            "{after_nine}"
        );
        let running = list(&["--state", "running"]).await;
        assert!(running.contains(B1) && !running.contains(A1), "{running}");
        let ended = list(&["--state", "ended"]).await;
        assert!(ended.contains(A1) && ended.contains(OLD) && !ended.contains(B1));

        let done = run(strings(&["tests", from, id, "--state", "done"])).await;
        assert!(!done.status.success());
        assert!(stderr(&done).contains("ended"), "{}", stderr(&done));
        let done = run(strings(&["tests", from, id, "--since", "1 Dec"])).await;
        assert!(!done.status.success());
        assert!(stderr(&done).contains("2026-12-01"), "{}", stderr(&done));
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_unique_prefix_of_a_test_id_names_the_test_everywhere() {
    let mut hub = hub_with_a_lab().await;
    let (db, url) = (hub.db.clone(), format!("http://{}", hub.addr));
    // The only id starting so (A1 and A2 share all but their last character).
    let unique = &B1[..B1.len() - 1];
    for (from, id) in [("--db", db.as_str()), ("--hub", url.as_str())] {
        for command in ["show", "samples", "cycles"] {
            let done = run(strings(&[command, from, id, unique])).await;
            assert!(done.status.success(), "{command} {from}: {}", stderr(&done));
        }
        let shown = run(strings(&["show", from, id, unique])).await;
        assert!(String::from_utf8_lossy(&shown.stdout).contains(B1));
        // A prefix of several tests names none of them, and says which.
        let done = run(strings(&["show", from, id, "0190a0c0-0000"])).await;
        assert!(!done.status.success());
        let e = stderr(&done);
        assert!(e.contains("4 tests have an id starting with"), "{e}");
        let done = run(strings(&["show", from, id, "ffff"])).await;
        assert!(!done.status.success());
        assert!(stderr(&done).contains("no test has an id starting with"));
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn labs_and_cells_read_from_a_running_hub() {
    let mut hub = hub_with_a_lab().await;
    let url = format!("http://{}", hub.addr);
    let labs = run(strings(&["labs", "--hub", &url])).await;
    assert!(labs.status.success(), "{}", stderr(&labs));
    let out = String::from_utf8(labs.stdout).unwrap();
    assert!(out.starts_with("cell-lab (first test 2026-11-30"), "{out}");
    assert!(out.contains("daemons:  pc-1"), "{out}");
    let cells = run(strings(&["cells", "--hub", &url])).await;
    assert!(cells.status.success(), "{}", stderr(&cells));
    assert!(String::from_utf8_lossy(&cells.stdout).contains("NMC_42"));
    hub.shutdown().await;
}

#[tokio::test]
async fn read_samples_sends_the_plan_steps_an_export_needs_when_asked() {
    let mut hub = Hub::start(Backend::Sqlite).await;
    let (mut up, _) = hub.upload("pc-1", 1).await;
    let mut with = batch(A1, 0, 5, false);
    with.plan_step = vec![0, 0, 1, 1, 2];
    let without = batch(A1, 5, 3, false);
    up.send_entries([
        registered(1, A1),
        entry(2, Body::Samples(with)),
        entry(3, Body::Samples(without)),
    ])
    .await;
    assert!(up.until_ack(3).await.is_empty());
    let mut client = QueryClient::new(hub.channel().await);
    let mut read = async |with_plan_step| {
        let mut stream = client
            .read_samples(ReadSamplesRequest {
                test_id: A1.into(),
                with_plan_step,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut steps = Vec::new();
        let mut count = 0;
        while let Some(b) = stream.message().await.unwrap() {
            count += b.test_time_s.len();
            steps.extend(b.plan_step);
        }
        (count, steps)
    };
    assert_eq!(read(false).await, (8, vec![]));
    let none = u32::MAX;
    assert_eq!(read(true).await, (8, vec![0, 0, 1, 1, 2, none, none, none]));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_hub_that_cannot_be_reached_is_named_with_the_cause() {
    // A port nobody listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = run(strings(&[
        "tests",
        "--hub",
        &format!("http://127.0.0.1:{port}"),
    ]))
    .await;
    assert!(!refused.status.success());
    let e = stderr(&refused);
    assert!(
        e.contains("cannot reach the hub") && e.contains("connection refused"),
        "{e}"
    );
    let unnamed = run(strings(&["cells", "--hub", "http://hub.invalid:50051"])).await;
    assert!(!unnamed.status.success());
    let e = stderr(&unnamed);
    assert!(e.contains("does not resolve"), "{e}");
    // And a database in a folder that is not there.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gone").join("hub.sqlite");
    let missing = run(strings(&["tests", "--db", db.to_str().unwrap()])).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("the folder") && stderr(&missing).contains("does not exist"),
        "{}",
        stderr(&missing)
    );
}

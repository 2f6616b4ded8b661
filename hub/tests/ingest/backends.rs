//! PostgreSQL beside SQLite: the same effects on both, migrations and newer schemas refused,
//! the real `cyclerhub serve` on each, reconnecting after PostgreSQL drops the hub, and what
//! `serve` refuses (an address other machines reach without TLS and tokens) and creates
//! (private database files).

use super::*;

/// A test whose samples exercise the float formatting and the NULL columns of an export.
fn awkward_test(test_id: &str) -> Vec<Entry> {
    let mut a = batch(test_id, 0, 6, true);
    a.voltage_v = vec![0.1 + 0.2, 1e-300, 5e-324, f64::MAX, 4.2, -0.0];
    a.current_a = vec![-1.25, 2.5e-7, -0.0, 1e21, 123_456.789, -3.0];
    a.cycle = vec![0, 1, 2, u32::MAX, 7, 8];
    a.temperature_c = vec![25.5, f64::NAN, -40.125, 25.0, f64::INFINITY, 0.0];
    a.ambient_temperature_c = vec![f64::NAN, 45.0, 44.999_999_999, f64::NAN, 0.5, -10.0];
    let b = batch(test_id, 6, 1000, false);
    vec![
        registered(1, test_id),
        entry(2, Body::Samples(a)),
        entry(3, Body::Samples(b)),
        ended(4, test_id, 1006),
    ]
}

#[test]
fn bdf_export_from_postgresql_equals_the_sqlite_export_byte_for_byte() {
    let export = |backend| {
        let db = Database::new(backend);
        let store = db.connect();
        let out = store.apply_batch("daemon-a", 1, &awkward_test(T1)).unwrap();
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        let mut csv = Vec::new();
        let rows = cyclerhub::export::write_bdf_csv(&store, T1, &mut csv).unwrap();
        assert_eq!(rows, 1006);
        (csv, store.samples(T1).unwrap())
    };
    let (sqlite_csv, sqlite_rows) = export(Backend::Sqlite);
    let (pg_csv, pg_rows) = export(Backend::Postgres);
    assert_eq!(pg_rows, sqlite_rows);
    if pg_csv != sqlite_csv {
        let (pg_csv, sqlite_csv) = (
            String::from_utf8_lossy(&pg_csv),
            String::from_utf8_lossy(&sqlite_csv),
        );
        let first = pg_csv
            .lines()
            .zip(sqlite_csv.lines())
            .position(|(p, s)| p != s);
        let line = |csv: &str| first.and_then(|i| csv.lines().nth(i)).map(str::to_owned);
        panic!(
            "exports differ at line {first:?}: PostgreSQL {:?}, SQLite {:?}",
            line(&pg_csv),
            line(&sqlite_csv)
        );
    }
}

#[cfg(unix)]
#[test]
fn a_new_sqlite_hub_database_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.sqlite");
    let store = HubStore::open(&path).unwrap();
    store
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    for name in ["hub.sqlite", "hub.sqlite-wal"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
}

#[test]
fn a_sqlite_database_with_a_newer_schema_is_refused() {
    let db = Database::new(Backend::Sqlite);
    drop(db.connect());
    rusqlite::Connection::open(&db.location)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = HubStore::connect(&db.location).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("use a newer cyclerhub"), "{err}");
}

#[test]
fn a_postgresql_database_with_a_newer_schema_is_refused() {
    let db = Database::new(Backend::Postgres);
    drop(db.connect());
    let mut admin = postgres::Client::connect(&db.location, postgres::NoTls).unwrap();
    admin
        .execute("INSERT INTO schema_migrations (version) VALUES (99)", &[])
        .unwrap();
    let err = HubStore::connect(&db.location).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("use a newer cyclerhub"), "{err}");
}

#[test]
fn a_missing_postgresql_database_is_named_with_what_to_do() {
    let cluster = PgCluster::shared();
    let err = HubStore::connect(&cluster.url("no_such_db")).unwrap_err();
    let message = cyclerhub::store::error_chain(&err);
    assert!(message.contains("/no_such_db"), "{message}");
    assert!(message.contains("createdb"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn after_postgresql_drops_the_hubs_connections_the_hub_reconnects() {
    let db = Database::new(Backend::Postgres);
    survives_dropped_connections(&db.connect(), &db.location);
}

#[test]
fn cyclerhub_lists_and_exports_a_test_from_postgresql() {
    let db = Database::new(Backend::Postgres);
    db.connect()
        .apply_batch("daemon-a", 1, &whole_test(0, T1))
        .unwrap();
    let cyclerhub = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = cyclerhub(&["tests", "--db", &db.location]);
    assert!(listed.contains(T1), "{listed}");
    assert!(listed.contains("finished"), "{listed}");
    let csv = cyclerhub(&["export", "--db", &db.location, T1]);
    assert_eq!(csv.lines().count(), 1 + 300);
    assert_eq!(csv.lines().next(), Some(BDF_HEADER));
}

#[tokio::test]
async fn cyclerhub_serve_ingests_into_postgresql() {
    use std::io::BufRead as _;

    let db = Database::new(Backend::Postgres);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args([
            "serve",
            "--db",
            &db.location,
            "--listen",
            &addr.to_string(),
            "--no-http",
        ])
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kills the hub however this test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let (serving_tx, serving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("cyclerhub serving") {
                let _ = serving_tx.send(());
            }
        }
    });
    tokio::task::spawn_blocking(move || serving.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("cyclerhub serve starts");

    let hub = Hub {
        addr,
        // This hub serves no HTTP (--no-http): the address is never used.
        http: addr,
        store: db.connect(),
        db: db.location.clone(),
        stop: None,
        task: None,
        _db: None,
    };
    let (mut up, resume) = hub.upload("daemon-a", 1).await;
    assert_eq!(resume, 0);
    up.send_entries(whole_test(0, T1)).await;
    assert!(up.until_ack(6).await.is_empty());
    assert_eq!(hub.store.sample_count(T1).unwrap(), 300);
    assert_eq!(hub.store.test(T1).unwrap().unwrap().state(), "finished");
}

#[test]
fn serving_where_other_machines_reach_it_needs_tls_and_tokens_or_insecure_said_aloud() {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite").display().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--db",
            db.as_str(),
            "--listen",
            "0.0.0.0:0",
            "--no-http",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
            .args(args)
            .env("NO_COLOR", "1")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    for extra in [&[][..], &["--require-tokens"][..]] {
        let refused = serve(extra).wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{said}");
        assert!(said.contains("refusing to serve on 0.0.0.0:0"), "{said}");
        assert!(said.contains("TLS"), "{said}");
        assert!(said.contains("--insecure"), "{said}");
    }
    assert!(
        !dir.path().join("hub.sqlite").exists(),
        "a refused hub creates no database"
    );
    let mut child = serve(&["--insecure"]);
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut warned = false;
    for line in lines {
        let line = line.unwrap();
        warned |= line.contains("--insecure") && line.contains("without TLS and required tokens");
        if line.contains("cyclerhub serving") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "an insecure hub says so when it starts");
}

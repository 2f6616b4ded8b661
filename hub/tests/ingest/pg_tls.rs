//! The hub on a PostgreSQL server it reaches over TCP with TLS, as a lab's server on another
//! machine: a throwaway cluster ([`PgCluster::start_tls`]) whose certificate a test CA signed
//! and whose `pg_hba.conf` refuses plaintext TCP.

use std::io::{Read as _, Write as _};
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

use super::*;

/// `params` for verifying the cluster's certificate with the lab's (the test) CA.
fn verified(cluster: &PgCluster, mode: &str) -> String {
    format!("sslmode={mode}&sslrootcert={}", cluster.ca_file().display())
}

/// A fresh database on the shared TLS cluster, reached at `localhost` with `params`.
fn tls_database(params: &str) -> (Database, String) {
    let cluster = PgCluster::shared_tls();
    let name = cluster.create_named_database();
    let db = Database {
        location: cluster.tcp_url("localhost", &name, params),
        _dir: None,
        _cluster: Some(cluster),
    };
    (db, name)
}

/// The hub's sessions on database `name`: how many, and how many of them use TLS (the
/// server's own view, `pg_stat_ssl`), asked over the cluster's unix socket.
fn hub_sessions(cluster: &PgCluster, name: &str) -> (i64, i64) {
    let mut admin = postgres::Client::connect(&cluster.url(name), postgres::NoTls).unwrap();
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = current_database() AND a.application_name = 'cyclerhub'",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// The error `HubStore::connect(db)` fails with, with its sources.
fn connect_error(db: &str) -> String {
    match HubStore::connect(db) {
        Ok(_) => panic!("{db} connected"),
        Err(e) => cyclerhub::store::error_chain(&e),
    }
}

/// Writes a self-signed CA certificate (one that signed nothing the server has) to `path`.
fn write_other_ca(path: &Path) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    std::fs::write(path, ca.pem()).unwrap();
}

#[tokio::test]
async fn the_hub_stores_into_postgresql_over_tls_verified_by_the_labs_ca() {
    let cluster = PgCluster::shared_tls();
    let (db, name) = tls_database(&verified(&cluster, "verify-full"));
    let mut hub = Hub::start_at(&db).await;
    let (mut up, _) = hub.upload("daemon-a", 1).await;
    up.send_entries(whole_test(0, T1)).await;
    let rejections = up.until_ack(6).await;
    assert!(rejections.is_empty(), "{rejections:?}");

    let store = db.connect();
    assert_eq!(store.sample_count(T1).unwrap(), 300);
    assert_eq!(store.samples(T1).unwrap().len(), 300);
    assert_eq!(store.list_tests().unwrap()[0].state(), "finished");

    // The hub's writer, reader and commit listener (it hears other hub processes' commits,
    // connected at start) and the second store's writer and reader: all over TLS.
    let (sessions, encrypted) = tokio::task::spawn_blocking(move || hub_sessions(&cluster, &name))
        .await
        .unwrap();
    assert_eq!(sessions, 5);
    assert_eq!(encrypted, sessions);
    hub.shutdown().await;
}

#[test]
fn after_postgresql_drops_the_hubs_tls_connections_the_hub_reconnects_over_tls() {
    let cluster = PgCluster::shared_tls();
    let (db, name) = tls_database(&verified(&cluster, "verify-full"));
    let store = db.connect();
    survives_dropped_connections(&store, &cluster.url(&name));
    assert_eq!(
        hub_sessions(&cluster, &name),
        (2, 2),
        "reconnected over TLS"
    );
}

#[test]
fn a_postgresql_server_the_ca_did_not_sign_is_refused_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    write_other_ca(&other_ca);
    let (db, _) = tls_database(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    ));
    let err = connect_error(&db.location);
    assert!(err.contains("certificate is not trusted"), "{err}");
    assert!(
        err.contains(&format!("the CA in sslrootcert {}", other_ca.display())),
        "{err}"
    );
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn require_with_sslrootcert_checks_the_ca_as_libpq_does() {
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    write_other_ca(&other_ca);
    let (db, _) = tls_database(&format!(
        "sslmode=require&sslrootcert={}",
        other_ca.display()
    ));
    let err = connect_error(&db.location);
    assert!(err.contains("certificate is not trusted"), "{err}");

    // Without one, require encrypts but takes the server's certificate as it is.
    let (db, _) = tls_database("sslmode=require");
    db.connect();
}

#[test]
fn verify_full_refuses_a_host_name_the_certificate_does_not_name_and_verify_ca_does_not_check_it() {
    let cluster = PgCluster::shared_tls();
    let name = cluster.create_named_database();
    let url = |mode| cluster.tcp_url("db.elsewhere.test", &name, &verified(&cluster, mode));
    let err = connect_error(&url("verify-full"));
    assert!(err.contains("host name mismatch"), "{err}");
    assert!(err.contains("sslmode=verify-ca"), "{err}");
    assert!(
        err.contains("certificate not valid for name \"db.elsewhere.test\""),
        "{err}"
    );
    HubStore::connect(&url("verify-ca")).expect("verify-ca checks the CA only");
}

#[test]
fn plaintext_to_a_server_that_requires_tls_is_refused_and_says_so() {
    let (db, _) = tls_database("sslmode=disable");
    let err = connect_error(&db.location);
    assert!(
        err.contains("the server refuses connections without TLS"),
        "{err}"
    );
    assert!(err.contains("sslmode=verify-full"), "{err}");
    // PostgreSQL's own words.
    assert!(err.contains("no encryption"), "{err}");
}

#[test]
fn a_server_without_tls_is_refused_when_the_url_requires_it_and_says_so() {
    // A server with ssl off answers the TLS request with "N".
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut ssl_request = [0u8; 8];
        conn.read_exact(&mut ssl_request).unwrap();
        conn.write_all(b"N").unwrap();
        // Until the client hangs up.
        let _ = conn.read_to_end(&mut Vec::new());
        ssl_request
    });
    let err = connect_error(&format!(
        "postgres://cyclerhub:s3cret@127.0.0.1:{port}/cyclerhub?sslmode=require"
    ));
    assert!(err.contains("the server does not support TLS"), "{err}");
    assert!(err.contains("turn ssl on"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    // The SSLRequest code, 80877103.
    assert_eq!(server.join().unwrap()[4..], [0x04, 0xd2, 0x16, 0x2f]);
}

#[test]
fn verify_full_without_sslrootcert_is_a_clear_error() {
    let err = connect_error("postgres://cyclerhub:s3cret@db.lab/cyclerhub?sslmode=verify-full");
    assert!(
        err.contains("hub database postgres://cyclerhub:***@db.lab/cyclerhub"),
        "{err}"
    );
    assert!(
        err.contains("sslmode=verify-full checks the server's certificate"),
        "{err}"
    );
    assert!(err.contains("add sslrootcert=FILE"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

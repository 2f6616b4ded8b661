//! The hub over TLS: a daemon streams only to a hub whose certificate chains to the lab CA in
//! its `hub.ca_file`.

use super::harness::{self, Process, WAIT};
use cyclerd_cli::lab::{LabOptions, SimLab};
use cyclerhub::HubStore;
use cyclerhub::auth::Role;
use cyclerhub::server::ServeOptions;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;

const PROTOCOL: &str = r#"
protocol: Short charge
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - "Rest for 1 minute"
  - "Charge at 1C for 20 minutes"
"#;

/// A lab CA (written to `dir/NAME.pem`) and a certificate it signed for `localhost` and
/// 127.0.0.1, as the hub's identity.
fn lab_pki(dir: &Path, name: &str) -> (PathBuf, tonic::transport::Identity) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join(format!("{name}.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    // The hub's certificate and key as files too, for `cyclerhub serve --tls-cert --tls-key`.
    std::fs::write(dir.join(format!("{name}-hub.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-hub-key.pem")), key.serialize_pem()).unwrap();
    (
        ca_file,
        tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem()),
    )
}

/// A hub serving TLS with `identity`; stops when the sender is dropped or sent to.
async fn tls_hub(
    db: &Path,
    identity: tonic::transport::Identity,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    serve(db, identity, false).await
}

async fn serve(
    db: &Path,
    identity: tonic::transport::Identity,
    require_tokens: bool,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        tls: Some(identity),
        require_tokens,
        ..ServeOptions::default()
    };
    tokio::spawn(cyclerhub::server::run_with(
        listener,
        HubStore::open(db).unwrap(),
        options,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

async fn lab(dir: &Path, hub: SocketAddr, ca_file: Option<PathBuf>) -> SimLab {
    lab_with_token(dir, hub, ca_file, None).await
}

async fn lab_with_token(
    dir: &Path,
    hub: SocketAddr,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
) -> SimLab {
    SimLab::start_with(LabOptions {
        hub_token_file: token_file,
        channels: 1,
        speed: 1000.0,
        data_dir: Some(dir.to_path_buf()),
        hub_address: Some(hub),
        hub_ca_file: ca_file,
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

/// Runs the short protocol on `lab` to its end and checks the hub at `hub_db` got every sample.
async fn runs_through(lab: SimLab, hub_db: &Path) {
    let tests = lab.start_everywhere(PROTOCOL, "short.yaml").await.unwrap();
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    let (summary, _, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    harness::assert_every_sample_once(hub_db, &tests);
}

/// Starts the short protocol on `lab` and waits for the daemon's alarm about the hub.
async fn hub_alarm(lab: &SimLab) -> (String, u64) {
    lab.start_everywhere(PROTOCOL, "short.yaml").await.unwrap();
    tokio::time::timeout(WAIT, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        loop {
            ticks.tick().await;
            let status = lab.daemon.status();
            if let Some(alarm) = status.alarms.iter().find(|a| a.contains("hub unreachable")) {
                return (alarm.clone(), status.samples_acknowledged);
            }
        }
    })
    .await
    .expect("the uploader reports the hub unreachable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_streams_to_a_tls_hub_whose_certificate_its_ca_file_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, identity) = lab_pki(dir.path(), "lab-ca");
    let hub_db = dir.path().join("hub.sqlite");
    let (addr, stop) = tls_hub(&hub_db, identity).await;
    let lab = lab(&dir.path().join("daemon"), addr, Some(ca_file)).await;
    runs_through(lab, &hub_db).await;
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_sends_nothing_to_a_hub_its_ca_did_not_sign_nor_in_clear_to_a_tls_hub() {
    let dir = tempfile::tempdir().unwrap();
    let (_, identity) = lab_pki(dir.path(), "lab-ca");
    let (other_ca, _) = lab_pki(dir.path(), "other-ca");
    let (addr, _stop) = tls_hub(&dir.path().join("hub.sqlite"), identity).await;
    for (name, ca_file) in [("wrong-ca", Some(other_ca)), ("plain", None)] {
        let lab = lab(&dir.path().join(name), addr, ca_file).await;
        let refused = hub_alarm(&lab).await;
        assert_eq!(refused.1, 0, "{name}: nothing acknowledged: {}", refused.0);
        lab.daemon
            .stop_test(&lab.channel_ids()[0], "")
            .await
            .unwrap();
        let (summary, data_dir, _keep) = lab.stop(Duration::from_millis(100)).await.unwrap();
        assert_eq!(summary.samples_acknowledged, 0, "{name}");
        assert!(
            harness::outbox_pending(&data_dir.join("outbox.sqlite")) > 0,
            "{name}: the test stays in the outbox for a hub it can trust"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_its_labs_token_streams_and_one_with_a_revoked_token_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, identity) = lab_pki(dir.path(), "lab-ca");
    let hub_db = dir.path().join("hub.sqlite");
    let store = HubStore::open(&hub_db).unwrap();
    let token_file = |name: &str| {
        let path = dir.path().join(format!("{name}.token"));
        std::fs::write(
            &path,
            store
                .issue_token("cell-ageing", name, Role::Daemon)
                .unwrap(),
        )
        .unwrap();
        path
    };
    let (good, revoked) = (token_file("pc-1"), token_file("pc-2"));
    store.revoke_token("pc-2").unwrap();
    let (addr, stop) = serve(&hub_db, identity, true).await;

    let lab = lab_with_token(
        &dir.path().join("pc-1"),
        addr,
        Some(ca_file.clone()),
        Some(good),
    )
    .await;
    runs_through(lab, &hub_db).await;

    let lab = lab_with_token(&dir.path().join("pc-2"), addr, Some(ca_file), Some(revoked)).await;
    let (alarm, acknowledged) = hub_alarm(&lab).await;
    assert_eq!(acknowledged, 0);
    assert!(alarm.contains("revoked"), "{alarm}");
    lab.daemon
        .stop_test(&lab.channel_ids()[0], "")
        .await
        .unwrap();
    let (summary, _, _keep) = lab.stop(Duration::from_millis(100)).await.unwrap();
    assert_eq!(summary.samples_acknowledged, 0);
    let _ = stop.send(());
}

/// Runs the real `cyclerhub` (the test binary's copy) to completion.
fn run_cyclerhub(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub-under-test"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the real `cyclerhub`, which must succeed; its stdout.
fn cyclerhub(args: &[&str]) -> String {
    let out = run_cyclerhub(args);
    assert!(
        out.status.success(),
        "cyclerhub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the real `cyclerhub`, which must fail, printing nothing; its stderr.
fn cyclerhub_fails(args: &[&str]) -> String {
    let out = run_cyclerhub(args);
    assert!(!out.status.success(), "cyclerhub {args:?} succeeded");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The lab hub for real: `cyclerhub token issue` and `schema set`, `cyclerhub serve` over TLS
/// requiring tokens, `cyclerd run` with the lab CA and its token (refusing a test whose
/// metadata breaks the lab's schema), a test through them; then `cyclerhub tests` and
/// `cyclerhub samples` asking the running hub over TLS with a reader token print what they
/// print from the database, another lab's reader is refused, and `cyclerhub export` exports
/// it: all real binaries, on `db`.
async fn real_binaries_over_tls_with_tokens(dir: &Path, db: &str) {
    use cyclerd_drivers::cell::{CellParams, Chemistry};
    use cyclerd_drivers::ea_psb::{PsbSim, sim::SimConfig};
    // The lab's hub set up as the README says: one command makes the CA, the hub's certificate
    // and the first tokens, keys and tokens readable by their owner only.
    let pki = dir.join("pki");
    let pki_dir = pki.display().to_string();
    let setup = |more: &[&'static str]| {
        let base = [
            "setup",
            "--db",
            db,
            "--dir",
            &pki_dir,
            "--lab",
            "cell-ageing",
            "--host",
            "localhost",
        ];
        [&base[..], more].concat()
    };
    let said = cyclerhub(&setup(&[
        "--host",
        "127.0.0.1",
        "--daemon",
        "pc-1",
        "--reader",
        "ana",
    ]));
    assert!(said.contains("--require-tokens"), "{said}");
    let ca_file = pki.join("lab-ca.pem");
    let token_file = pki.join("tokens/pc-1.token");
    let analyst = pki.join("tokens/ana.token");
    #[cfg(unix)]
    for secret in [
        "lab-ca-key.pem",
        "hub-key.pem",
        "tokens/pc-1.token",
        "tokens/ana.token",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    let again = run_cyclerhub(&setup(&[]));
    assert!(
        !again.status.success(),
        "a second setup never overwrites the lab's keys"
    );
    let issue = |lab: &str, name: &str, role: &[&str]| {
        let args = [
            &["token", "issue", "--db", db, "--lab", lab, "--name", name],
            role,
        ]
        .concat();
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, cyclerhub(&args).trim()).unwrap();
        file
    };
    let outsider = issue("formation", "bo", &["--reader"]);
    // The lab pins its secondary metadata down; the daemon holds its tests to it.
    let schema = dir.join("secondary.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"form_factor": {"enum": ["18650", "21700"]}}}"#,
    )
    .unwrap();
    let schema = schema.display().to_string();
    cyclerhub(&[
        "schema",
        "set",
        "--db",
        db,
        "--lab",
        "cell-ageing",
        "--tier",
        "secondary",
        &schema,
    ]);
    let labs = cyclerhub(&["labs", "--db", db]);
    assert!(labs.contains("metadata schemas: secondary"), "{labs}");
    let roles = cyclerhub(&["token", "list", "--db", db]);
    assert!(
        roles
            .lines()
            .any(|l| l.starts_with("ana ") && l.contains(" reader ")),
        "{roles}"
    );

    let hub_addr = harness::free_addr();
    let pem = |name: &str| dir.join(name).display().to_string();
    let hub_args = [
        "serve",
        "--db",
        db,
        "--listen",
        &hub_addr.to_string(),
        "--tls-cert",
        &pem("pki/hub.pem"),
        "--tls-key",
        &pem("pki/hub-key.pem"),
        "--require-tokens",
        "--no-http",
    ]
    .map(String::from);
    let mut hub = Process::spawn(env!("CARGO_BIN_EXE_cyclerhub-under-test"), &hub_args);
    hub.wait_for_line("cyclerhub serving").await;

    let anchor = cyclerd_drivers::Clock::real().unix_time_s();
    let clock = cyclerd_drivers::Clock::anchored(1000.0, anchor);
    let cell = CellParams {
        initial_soc: 0.4,
        ..CellParams::new(Chemistry::Nmc, 2.5)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let psb = PsbSim::spawn(listener, SimConfig::psb_10060_60("REAL1", cell), clock).unwrap();
    let control = harness::free_addr();
    let config = dir.join("lab.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nname = \"pc-1\"\n[store]\npath = {store:?}\ncommit_interval_ms = 50\n\
             [hub]\naddress = \"https://localhost:{port}\"\nca_file = {ca:?}\ntoken_file = {token:?}\n\
             [control]\nlisten = \"{control}\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n\
             [[device]]\nname = \"psb1\"\nfamily = \"ea-psb\"\naddress = \"{psb}\"\n\
             [[channel]]\nid = \"psb1/1\"\n",
            store = dir.join("outbox.sqlite").display().to_string(),
            port = hub_addr.port(),
            ca = ca_file.display().to_string(),
            token = token_file.display().to_string(),
            psb = psb.endpoint(),
        ),
    )
    .unwrap();
    let (daemon, mut control) = harness::run_daemon(&config, 1000.0, anchor, control).await;
    let mut off_schema = harness::metadata("cell-psb1/1");
    off_schema.insert("secondary.form_factor".into(), "AA".into());
    let refused = control
        .start_test(cyclerd::proto::control::StartTestRequest {
            channel_id: "psb1/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: off_schema,
            params: Default::default(),
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("cell-ageing")
            && refused.message().contains("secondary.form_factor"),
        "{refused:?}"
    );
    let test_id = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
    harness::wait_all_ended(&mut control, &["psb1/1".to_string()]).await;
    assert!(
        daemon.terminate().await,
        "a clean exit after the backlog drained"
    );

    let url = format!("https://localhost:{}", hub_addr.port());
    let ca = ca_file.display().to_string();
    let remote = |token: &Path| {
        let token = token.display().to_string();
        ["--hub", &url, "--ca-file", &ca, "--token-file", &token].map(String::from)
    };
    /// `args` followed by `source`'s.
    fn with<'a>(args: &[&'a str], source: &'a [String]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(source.iter().map(String::as_str));
        all
    }
    let local = ["--db", db].map(String::from);
    let tests = ["tests", "--lab", "cell-ageing", "--state", "finished"];
    let listed = cyclerhub(&with(&tests, &local));
    assert!(listed.contains(&test_id), "{listed}");
    assert_eq!(
        cyclerhub(&with(&tests, &remote(&analyst))),
        listed,
        "the hub lists what the database holds"
    );
    let samples = [
        "samples",
        &test_id,
        "--columns",
        "test_time_s,voltage_v,current_a",
    ];
    let csv_from_db = cyclerhub(&with(&samples, &local));
    assert_eq!(
        cyclerhub(&with(&samples, &remote(&analyst))),
        csv_from_db,
        "the hub sends every sample the database holds"
    );
    let cells = cyclerhub(&with(&["cells", "--lab", "cell-ageing"], &local));
    assert!(cells.contains("cell-psb1/1"), "{cells}");
    assert_eq!(cyclerhub(&with(&["cells"], &remote(&analyst))), cells);
    let none = cyclerhub(&with(&["cells"], &remote(&outsider)));
    assert_eq!(
        none.lines().count(),
        1,
        "the other lab tested no cell: {none}"
    );
    let show = ["show", &test_id];
    let shown = cyclerhub(&with(&show, &local));
    for line in [
        "cell_id = cell-psb1/1",
        "lab       cell-ageing",
        "ea-psb",
        "state     finished",
    ] {
        assert!(shown.contains(line), "{line} in {shown}");
    }
    assert_eq!(cyclerhub(&with(&show, &remote(&analyst))), shown);
    let as_analyst = remote(&analyst);
    let mut follow = with(&samples, &as_analyst);
    follow.push("--follow");
    assert_eq!(
        cyclerhub(&follow),
        csv_from_db,
        "following an ended test prints all of it and ends"
    );
    let refused = cyclerhub_fails(&with(&samples, &remote(&outsider)));
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    assert!(
        refused.contains("permission denied") && refused.contains("formation"),
        "{refused}"
    );
    assert!(hub.terminate().await);
    let csv = dir.join("export.bdf.csv").display().to_string();
    cyclerhub(&[
        "export", "--db", db, &test_id, "--format", "bdf-csv", "-o", &csv,
    ]);
    let rows = std::fs::read_to_string(&csv).unwrap().lines().count() - 1;
    let store = HubStore::connect(db).unwrap();
    let counts = harness::assert_every_sample_once_in(&store, std::slice::from_ref(&test_id));
    assert_eq!(rows as u64, counts[&test_id], "the export has every sample");
    assert_eq!(
        csv_from_db.lines().count() - 1,
        rows,
        "and so do `cyclerhub samples`"
    );
    assert!(rows > 100);
    let metadata = std::fs::read_to_string(format!("{csv}.metadata.json")).unwrap();
    assert!(
        metadata.contains("\"family\": \"ea-psb\"") && metadata.contains("\"role\": \"source\""),
        "the export names the instrument: {metadata}"
    );
    let out = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("lab-secret"), "0123456789abcdef0123456789abcdef").unwrap();
    for (args, files) in [
        (
            vec!["--format", "bdf-parquet", "-o", &out("t.parquet")],
            vec!["t.bdf.parquet", "t.bdf.parquet.metadata.json"],
        ),
        (
            vec!["--format", "battery-archive", "-o", &out("ba")],
            vec!["ba_timeseries.csv", "ba_cycle_data.csv", "ba.metadata.json"],
        ),
        (
            vec![
                "-o",
                &out("shared.csv"),
                "--anonymise",
                "--salt",
                &out("lab-secret"),
            ],
            vec!["shared.bdf.csv", "shared.bdf.csv.metadata.json"],
        ),
    ] {
        cyclerhub(
            &with(&["export", &test_id], &local)
                .into_iter()
                .chain(args)
                .collect::<Vec<_>>(),
        );
        for f in files {
            assert!(dir.join(f).is_file(), "{f}");
        }
    }
    let shared = std::fs::read_to_string(dir.join("shared.bdf.csv.metadata.json")).unwrap();
    assert!(
        !shared.contains(&test_id) && !shared.contains("cell-psb1/1"),
        "an anonymised export names neither the test nor the cell: {shared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binaries_carry_a_test_over_tls_with_a_token_into_sqlite_and_read_and_export_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite").display().to_string();
    real_binaries_over_tls_with_tokens(dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binaries_carry_a_test_over_tls_with_a_token_into_postgresql_and_read_and_export_it()
 {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cyclerhub::testing::PgCluster::shared();
    real_binaries_over_tls_with_tokens(dir.path(), &cluster.create_database()).await;
}

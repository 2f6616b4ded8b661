//! Sharing between hubs (`cyclerhub share`), end to end: two real `cyclerhub serve` processes,
//! each on its own database (SQLite and PostgreSQL), the share added and removed with the real
//! `cyclerhub share` commands, and the sending hub's tests written by a second process (this
//! test, through the store API) as its daemons would. Either hub is killed with SIGKILL and
//! started again on the same database and port. Waits are for the receiving database to show
//! what is expected, or for a line of a hub's log, each bounded by a timeout.

use cyclerd_proto::ingest::CycleSummary;
use cyclerhub::HubStore;
use cyclerhub::export::Pseudonymiser;
use cyclerhub::export::anonymise::Kind;

use super::{Backend, Database, T1, T2, T3};
use harness::{
    Daemon, SECRET, Serve, cyclerhub, cyclerhub_stdout, received, salt_file, samples_at, until,
};

#[path = "share_harness.rs"]
mod harness;

/// The whole scenario, from a hub on `from` to a hub on `to`: a continuous, anonymised share
/// of one chemistry while the sending hub's tests grow; the receiver killed mid-stream and
/// restarted while new samples come in, then the sender killed mid-stream and started again
/// (each once the first of 2000 new entries reached the receiver). At the end the receiver
/// holds every sample of the shared test once, its events and cycles once, its end, nothing of
/// the test outside the share, and no id of the sending hub.
async fn shares_live_anonymised_exactly_once_across_kills(from: Backend, to: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (sender_db, receiver_db) = (Database::new(from), Database::new(to));
    let mut receiver = Serve::start(&receiver_db.location, None).await;
    let mut sender = Serve::start(&sender_db.location, None).await;
    let mut daemon = Daemon {
        store: sender_db.connect(),
        id: 0,
    };
    daemon.register(T1, "NMC-0042", "NMC");
    daemon.register(T2, "LFP-0007", "LFP");
    daemon.samples(T1, 0, 3000);
    daemon.cycle(T1, 1, (0, 2999), true);
    daemon.cycle(T1, 2, (3000, 3000), false);
    daemon.samples(T2, 0, 3000);

    let salt = salt_file(dir.path());
    let added = cyclerhub(&[
        "share",
        "add",
        "--db",
        &sender_db.location,
        "nmc",
        "--to",
        &receiver.url(),
        "--chemistry",
        "NMC",
        "--anonymise",
        "--salt",
        salt.to_str().unwrap(),
        "--origin",
        "lab-a",
    ])
    .await;
    assert!(added.contains("continuous, anonymised"), "{added}");
    let pseudonyms = Pseudonymiser::new(SECRET).unwrap();
    let shared = pseudonyms.pseudonym(Kind::Test, T1);
    let at = receiver_db.connect();
    until("the receiver holds the first samples", || {
        (samples_at(&at, &shared) == 3000).then_some(())
    })
    .await;

    // The receiver goes down hard in the middle of a stream, while the test goes on; it
    // catches up once it is back.
    stream_then_kill(&mut daemon, &at, &shared, &mut receiver).await;
    daemon.samples(T1, 3000, 6000);
    daemon.samples(T2, 3000, 6000);
    let mut receiver = Serve::start(&receiver_db.location, Some(receiver.addr)).await;
    until("the receiver catches up after its restart", || {
        (samples_at(&at, &shared) == 6000).then_some(())
    })
    .await;

    // The sender goes down hard in the middle of a stream, and more comes in while it is
    // down.
    daemon.samples(T1, 6000, 12_000);
    stream_then_kill(&mut daemon, &at, &shared, &mut sender).await;
    daemon.samples(T1, 12_000, 15_000);
    daemon.cycle(T1, 2, (3000, 14_999), true);
    daemon.end(T1, 15_000);
    daemon.end(T2, 6000);
    let _sender = Serve::start(&sender_db.location, Some(sender.addr)).await;
    let t = until("the shared test ends at the receiver", || {
        at.test(&shared).unwrap().filter(|t| t.outcome.is_some())
    })
    .await;

    // Every sample once, as the sender holds it; every event once; nothing else.
    assert_eq!(t.outcome.as_deref(), Some("finished"));
    assert_eq!(t.expected_samples, Some(15_000));
    let mine = daemon.store.samples(T1).unwrap();
    let theirs = at.samples(&shared).unwrap();
    assert_eq!(theirs.len(), 15_000);
    assert_eq!(
        theirs, mine,
        "the receiver's samples are the sender's, each once"
    );
    let events = at.events(&shared).unwrap();
    assert_eq!(events.len(), daemon.store.events(T1).unwrap().len());
    assert_eq!(received(&at), vec![shared.clone()], "only the shared test");
    let cycles = |store: &HubStore, id: &str| -> Vec<String> {
        let cycles = store.cycles(id).unwrap();
        cycles
            .iter()
            .map(|c| {
                format!(
                    "{:?}",
                    CycleSummary {
                        test_id: String::new(),
                        ..c.clone()
                    }
                )
            })
            .collect()
    };
    assert_eq!(
        cycles(&at, &shared),
        cycles(&daemon.store, T1),
        "the complete cycles, as sent"
    );
    assert_eq!(at.cycles(&shared).unwrap().len(), 2);

    // Anonymised: neither the sender's test ids nor the cell nor the operator appear.
    let cell = pseudonyms.pseudonym(Kind::Cell, "NMC-0042");
    assert_eq!(t.metadata.get("cell_id"), Some(&cell));
    let operator = pseudonyms.pseudonym(Kind::Operator, "ada");
    assert_eq!(t.metadata.get("operator"), Some(&operator));
    let naming: Vec<_> = events
        .iter()
        .filter(|e| e.message.contains("samples of"))
        .collect();
    assert_eq!(
        naming.len(),
        4,
        "the events that named the cell and the operator"
    );
    assert!(
        naming
            .iter()
            .all(|e| e.message.contains(&cell) && e.message.contains(&operator))
    );
    let text = format!("{t:?} {events:?} {:?}", at.test_equipment(&shared).unwrap());
    for secret in [T1, T2, "NMC-0042", "LFP-0007", "192.0.2.10"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the receiver: {text}"
        );
    }
    receiver.kill().await;
    if let Backend::Sqlite = to {
        // Not anywhere in the receiver's database either.
        let mut bytes = std::fs::read(&receiver_db.location).unwrap();
        bytes.extend(std::fs::read(format!("{}-wal", receiver_db.location)).unwrap_or_default());
        let bytes = String::from_utf8_lossy(&bytes);
        for secret in [T1, T2, "NMC-0042", "LFP-0007"] {
            assert!(
                !bytes.contains(secret),
                "{secret} is in the receiver's database"
            );
        }
    }

    // The receiver keeps the provenance, and shows it.
    let from = t.shared_from.expect("the test is shown as shared");
    assert_eq!((from.hub.as_str(), from.share.as_str()), ("lab-a", "nmc"));
    assert!(from.anonymised);
    assert_eq!(from.selection, "chemistry=NMC");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
        .args(["tests", "--db", &receiver_db.location])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("SHARED FROM") && listed.contains("hub lab-a, share nmc, anonymised"),
        "{listed}"
    );
}

/// Gives the share many small entries (2000 events of the shared test), and kills `hub` once
/// the first of them reached the receiver `at`: in the middle of the stream.
async fn stream_then_kill(daemon: &mut Daemon, at: &HubStore, shared: &str, hub: &mut Serve) {
    let before = at.events(shared).unwrap().len();
    daemon.apply((0..2000).map(|i| super::event(0, T1, &format!("note {i}")).body.unwrap()));
    until("the share streams the new entries", || {
        (at.events(shared).unwrap().len() > before).then_some(())
    })
    .await;
    hub.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_from_sqlite_to_postgres_sends_the_subset_live_anonymised_and_once_across_kills_of_either_hub()
 {
    shares_live_anonymised_exactly_once_across_kills(Backend::Sqlite, Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_from_postgres_to_sqlite_sends_the_subset_live_anonymised_and_once_across_kills_of_either_hub()
 {
    shares_live_anonymised_exactly_once_across_kills(Backend::Postgres, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_removed_stops_the_flow_while_other_shares_go_on() {
    let (sender_db, receiver_db) = (
        Database::new(Backend::Sqlite),
        Database::new(Backend::Sqlite),
    );
    let _receiver = Serve::start(&receiver_db.location, None).await;
    let mut sender = Serve::start(&sender_db.location, None).await;
    let mut daemon = Daemon {
        store: sender_db.connect(),
        id: 0,
    };
    daemon.register(T1, "NMC-0042", "NMC");
    daemon.register(T3, "NMC-0043", "NMC");
    daemon.samples(T1, 0, 1000);
    let db = sender_db.location.as_str();
    let url = _receiver.url();
    cyclerhub(&[
        "share", "add", "--db", db, "one", "--to", &url, "--test", T1,
    ])
    .await;
    let at = receiver_db.connect();
    until("the shared test arrives", || {
        (samples_at(&at, T1) == 1000).then_some(())
    })
    .await;

    // `share list` says how far the receiver got: all of it.
    let store = sender_db.connect();
    until(
        "the sender records that the receiver has everything",
        || {
            let s = &store.shares().unwrap()[0];
            (s.state == "streaming" && s.logged > 0 && s.acked == s.logged).then_some(())
        },
    )
    .await;
    let listed = cyclerhub_stdout(&["share", "list", "--db", db]).await;
    assert!(listed.contains("\tstreaming\tacked "), "{listed}");

    let removed = cyclerhub(&["share", "remove", "--db", db, "one"]).await;
    assert!(removed.contains("removed"), "{removed}");
    sender.logged("share removed: its stream stops").await;
    daemon.samples(T1, 1000, 2000);
    daemon.end(T1, 2000);
    // Another share to the same hub goes on; once its test is there, the first would have been
    // too, had it not stopped.
    daemon.samples(T3, 0, 500);
    daemon.end(T3, 500);
    cyclerhub(&[
        "share", "add", "--db", db, "other", "--to", &url, "--cell", "NMC-0043",
    ])
    .await;
    until("the other share's test arrives whole", || {
        at.test(T3).unwrap().filter(|t| t.outcome.is_some())
    })
    .await;
    assert_eq!(samples_at(&at, T1), 1000, "nothing of T1 after the removal");
    assert!(at.test(T1).unwrap().unwrap().outcome.is_none());
    let listed = cyclerhub_stdout(&["share", "list", "--db", db]).await;
    assert!(!listed.contains("one\t"), "{listed}");
    assert!(listed.starts_with("other\t"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_once_sends_what_matched_when_added_and_then_is_done() {
    let (sender_db, receiver_db) = (
        Database::new(Backend::Sqlite),
        Database::new(Backend::Sqlite),
    );
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let receiver =
        Serve::start_with(&receiver_db.location, None, &["--http", &http.to_string()]).await;
    let _sender = Serve::start(&sender_db.location, None).await;
    let mut daemon = Daemon {
        store: sender_db.connect(),
        id: 0,
    };
    daemon.register(T1, "NMC-0042", "NMC");
    daemon.samples(T1, 0, 800);
    daemon.end(T1, 800);
    let db = sender_db.location.as_str();
    let url = receiver.url();
    let added = cyclerhub(&[
        "share",
        "add",
        "--db",
        db,
        "now",
        "--to",
        &url,
        "--chemistry",
        "NMC",
        "--once",
    ])
    .await;
    assert!(added.contains("once"), "{added}");
    let sender_store = sender_db.connect();
    until("the share is done", || {
        let shares = sender_store.shares().unwrap();
        (shares[0].state == "done").then_some(())
    })
    .await;
    assert_eq!(samples_at(&receiver_db.connect(), T1), 800);
    // The receiver's HTTP API and web app say where the test came from.
    let api = reqwest::get(format!("http://{http}/api/v1/tests"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let from = &api["tests"][0]["shared_from"];
    assert_eq!(from["share"], "now", "{api}");
    assert_eq!(from["anonymised"], false, "{api}");
    assert_eq!(from["selection"], "chemistry=NMC", "{api}");
    let page = reqwest::get(format!("http://{http}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("shared from hub "), "{page}");
    // So do `cyclerhub tests` and `show` through its query API.
    let listed = cyclerhub_stdout(&["tests", "--hub", &url]).await;
    assert!(
        listed.contains("SHARED FROM") && listed.contains(", share now"),
        "{listed}"
    );
    let shown = cyclerhub_stdout(&["show", "--hub", &url, T1]).await;
    assert!(
        shown.contains("shared    from hub ") && shown.contains("(chemistry=NMC) since"),
        "{shown}"
    );
    let done = &sender_store.shares().unwrap()[0];
    assert_eq!((done.acked, done.logged), (done.logged, done.logged));

    // A test that matches later is not sent: a continuous share of another test arrives, and
    // the later one still has not.
    daemon.register(T2, "NMC-0044", "NMC");
    daemon.samples(T2, 0, 100);
    daemon.register(T3, "LFP-0007", "LFP");
    daemon.samples(T3, 0, 100);
    daemon.end(T3, 100);
    cyclerhub(&[
        "share",
        "add",
        "--db",
        db,
        "probe",
        "--to",
        &url,
        "--chemistry",
        "LFP",
    ])
    .await;
    let at = receiver_db.connect();
    until("the probe share's test arrives whole", || {
        at.test(T3).unwrap().filter(|t| t.outcome.is_some())
    })
    .await;
    assert_eq!(
        at.test(T2).unwrap(),
        None,
        "the once share sent a later test"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_over_tls_needs_the_receivers_token_and_lands_in_its_lab() {
    let dir = tempfile::tempdir().unwrap();
    let (sender_db, receiver_db) = (
        Database::new(Backend::Sqlite),
        Database::new(Backend::Sqlite),
    );
    let pki = dir.path().join("receiver");
    cyclerhub(&[
        "setup",
        "--db",
        &receiver_db.location,
        "--dir",
        pki.to_str().unwrap(),
        "--lab",
        "partner",
        "--host",
        "127.0.0.1",
        "--daemon",
        "from-lab-a",
    ])
    .await;
    let file = |name: &str| pki.join(name).display().to_string();
    let receiver = Serve::start_with(
        &receiver_db.location,
        None,
        &[
            "--tls-cert",
            &file("hub.pem"),
            "--tls-key",
            &file("hub-key.pem"),
            "--require-tokens",
        ],
    )
    .await;
    let _sender = Serve::start(&sender_db.location, None).await;
    let mut daemon = Daemon {
        store: sender_db.connect(),
        id: 0,
    };
    daemon.register(T1, "NMC-0042", "NMC");
    daemon.samples(T1, 0, 500);
    daemon.end(T1, 500);
    let db = sender_db.location.as_str();
    let url = format!("https://{}", receiver.addr);
    let ca = file("lab-ca.pem");

    // Plain http to another machine, or https without the receiver's CA: refused at once.
    for (args, why) in [
        (&["--to", "http://192.0.2.1:50051"][..], "--insecure"),
        (&["--to", url.as_str()][..], "--ca-file"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cyclerhub"))
            .args(["share", "add", "--db", db, "refused", "--all"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{stderr}");
    }

    // Without the receiver's token the stream is refused, and `share list` says why.
    cyclerhub(&[
        "share",
        "add",
        "--db",
        db,
        "tokenless",
        "--to",
        &url,
        "--ca-file",
        &ca,
        "--all",
    ])
    .await;
    let store = sender_db.connect();
    let error = until("the tokenless share is refused", || {
        store.shares().unwrap()[0].last_error.clone()
    })
    .await;
    assert!(error.contains("token"), "{error}");
    let listed = cyclerhub_stdout(&["share", "list", "--db", db]).await;
    assert!(
        listed.contains("retrying") && listed.contains("last error"),
        "{listed}"
    );
    cyclerhub(&["share", "remove", "--db", db, "tokenless"]).await;

    let token = file("tokens/from-lab-a.token");
    cyclerhub(&[
        "share",
        "add",
        "--db",
        db,
        "tls",
        "--to",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        &token,
        "--all",
    ])
    .await;
    let at = receiver_db.connect();
    let t = until("the shared test arrives whole", || {
        at.test(T1).unwrap().filter(|t| t.outcome.is_some())
    })
    .await;
    assert_eq!(t.sample_count, 500);
    let labs = at.daemon_labs().unwrap();
    assert_eq!(labs.get(&t.daemon_id).map(String::as_str), Some("partner"));
    let from = t.shared_from.unwrap();
    assert_eq!((from.share.as_str(), from.anonymised), ("tls", false));
    // The token never reaches the sending hub's database.
    let secret = std::fs::read_to_string(&token).unwrap();
    let stored = std::fs::read(db).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(secret.trim()));
}

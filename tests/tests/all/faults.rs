//! Fault injection. Every test ends with the same check: the hub holds every sample the daemon
//! acquired and committed, exactly once, numbered contiguously per test from 0.

use super::harness::{self, Hub, Process, WAIT};
use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::control::{GetStatusRequest, StartTestRequest, StopTestRequest};
use cyclerd_cli::lab::{self, DemoDevice, LabOptions, SimLab};
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::ea_psb::sim::SimConfig;
use cyclerd_drivers::ea_psb::{PsbSim, SimHandle};
use cyclerhub::HubStore;
use cyclerhub::testing::PgCluster;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;

/// Two short cycles: long enough to be interrupted many times, short enough for CI.
pub(super) const PROTOCOL: &str = r#"
protocol: Fault test cycling
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Rest for 2 minutes"
  - repeat: 2
    cycle: true
    steps:
      - "Charge at 2C until 4.1 V"
      - "Rest for 5 minutes"
      - "Discharge at 2C until 3.3 V"
      - "Rest for 5 minutes"
"#;

/// [`PROTOCOL`] with ten cycles, for tests that interrupt many times and then stop the test:
/// long enough that it cannot end first however slow the machine (a restart lets the cell run
/// on alone).
fn long_protocol() -> String {
    PROTOCOL.replace("repeat: 2", "repeat: 10")
}

const SPEED: f64 = 500.0;

fn rng() -> rand::rngs::StdRng {
    // Fixed seed: a failure replays the same kill points.
    rand::rngs::StdRng::seed_from_u64(0x5eed_cafe)
}

/// The daemon as a child process (the real `cyclerd run`), simulators and hub in this process.
pub(super) struct ProcessLab {
    dir: tempfile::TempDir,
    pub(super) hub: Hub,
    pub(super) sims: Vec<SimHandle>,
    pub(super) config: PathBuf,
    pub(super) control: SocketAddr,
    anchor: f64,
    pub(super) channels: Vec<String>,
}

impl ProcessLab {
    pub(super) async fn start(channels: usize) -> ProcessLab {
        ProcessLab::start_with(channels, "continue").await
    }

    /// `resume` is the daemon's `[daemon] resume` policy.
    async fn start_with(channels: usize, resume: &str) -> ProcessLab {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start(&dir.path().join("hub.sqlite")).await;
        let anchor = Clock::real().unix_time_s();
        let clock = Clock::anchored(SPEED, anchor);
        let control = harness::free_addr();
        let mut sims = Vec::new();
        let mut devices = String::new();
        for k in 0..channels {
            let cell = CellParams {
                initial_soc: 0.3 + 0.1 * k as f64,
                ..CellParams::new(Chemistry::Nmc, 2.5)
            };
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let sim = PsbSim::spawn(
                listener,
                SimConfig::psb_10060_60(&format!("K{k}"), cell),
                clock.clone(),
            )
            .unwrap();
            devices.push_str(&format!(
                "[[device]]\nname = \"psb{n}\"\nfamily = \"ea-psb\"\naddress = \"{a}\"\n[[channel]]\nid = \"psb{n}/1\"\n",
                n = k + 1,
                a = sim.endpoint()
            ));
            sims.push(sim);
        }
        let config = dir.path().join("lab.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nname = \"fault-test\"\nid = \"fault-test-daemon\"\nresume = \"{resume}\"\n\
                 [store]\npath = {store:?}\ncommit_interval_ms = 50\n[hub]\naddress = \"http://{hub}\"\n\
                 [control]\nlisten = \"{control}\"\n[limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n{devices}",
                store = dir.path().join("outbox.sqlite").display().to_string(),
                hub = hub.addr,
            ),
        )
        .unwrap();
        ProcessLab {
            hub,
            sims,
            config,
            control,
            anchor,
            channels: (1..=channels).map(|n| format!("psb{n}/1")).collect(),
            dir,
        }
    }

    pub(super) fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox.sqlite")
    }

    /// The arguments of `cyclerd run` on the lab, and its control API's address.
    pub(super) fn run_args(&self) -> (Vec<String>, SocketAddr) {
        (
            harness::daemon_args(&self.config, SPEED, self.anchor),
            self.control,
        )
    }

    /// Starts `cyclerd run` on the lab and waits until its control API is up.
    pub(super) async fn daemon(&self) -> (Process, ControlClient<tonic::transport::Channel>) {
        harness::run_daemon(&self.config, SPEED, self.anchor, self.control).await
    }

    /// Starts a test on `psb1/1` and kills the daemon (SIGKILL) once it has charged for
    /// `samples`, leaving the supply on; returns the test's id.
    pub(super) async fn killed_mid_charge(&self, samples: u64) -> String {
        let (daemon, mut control) = self.daemon().await;
        let test = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
        harness::watch_until(&mut control, |s| s.samples >= samples && s.current_a > 1.0).await;
        daemon.kill().await;
        assert!(
            self.sims[0].snapshot().output_on,
            "a killed daemon leaves the supply as it was"
        );
        test
    }

    /// Runs `cyclerd run`, which must refuse to start: it exits non-zero, and the supply a
    /// killed daemon left charging is off by then.
    pub(super) async fn refused_start_switches_the_output_off(&self) {
        assert!(
            self.sims[0].snapshot().output_on,
            "the supply still charges"
        );
        let args = harness::daemon_args(&self.config, SPEED, self.anchor);
        let mut refused = Process::spawn(env!("CARGO_BIN_EXE_cyclerd-under-test"), &args);
        refused
            .wait_for_line("switched off the output of channel psb1/1")
            .await;
        let status = tokio::time::timeout(WAIT, refused.child.wait())
            .await
            .expect("the refused start exits")
            .unwrap();
        assert!(!status.success(), "{status:?}");
        assert!(
            !self.sims[0].snapshot().output_on,
            "the supply the killed daemon left charging is off"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_killed_twenty_times_loses_and_duplicates_nothing() {
    let lab = ProcessLab::start(2).await;
    let (mut daemon, mut control) = lab.daemon().await;
    let mut tests = Vec::new();
    for channel in &lab.channels {
        tests.push(harness::start_on(&mut control, channel, &long_protocol()).await);
    }
    let mut rng = rng();
    for _ in 0..20 {
        let now = harness::watch_until(&mut control, |s| {
            s.channel_id == "psb1/1" && s.state == "running"
        })
        .await;
        let target = now.samples + rng.random_range(500..2500);
        harness::watch_until(&mut control, |s| {
            s.channel_id == "psb1/1" && s.samples >= target
        })
        .await;
        // The restart's interruption event is in the hub before the kill (however slow the
        // disk), so the count below is exact; the daemon goes on acquiring meanwhile.
        lab.hub.wait_for_sample(&tests[0], now.samples).await;
        daemon.kill().await;
        (daemon, control) = lab.daemon().await;
    }
    harness::watch_until(&mut control, |s| {
        s.channel_id == "psb1/1" && s.state == "running"
    })
    .await;
    for channel in &lab.channels {
        control
            .stop_test(StopTestRequest {
                channel_id: channel.clone(),
                reason: "enough interruptions".into(),
            })
            .await
            .unwrap();
    }
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(
        daemon.terminate().await,
        "a clean shutdown after the last restart"
    );
    assert_eq!(
        harness::outbox_pending(&lab.outbox()),
        0,
        "the hub acknowledged everything"
    );

    harness::assert_every_sample_once(&lab.hub.db, &tests);
    let hub = HubStore::open(&lab.hub.db).unwrap();
    let first = hub.test(&tests[0]).unwrap().unwrap();
    assert_eq!(first.outcome.as_deref(), Some("stopped"), "{first:?}");
    let interruptions = hub
        .events(&tests[0])
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "interruption")
        .count();
    assert_eq!(interruptions, 20, "every restart is recorded with its gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_while_the_daemon_starts_with_an_interrupted_test_leaves_the_output_off() {
    let lab = ProcessLab::start(1).await;
    lab.killed_mid_charge(500).await;
    // A chamber that takes the connection and never answers holds the start for its timeout,
    // before the supply (still charging) is reached: the SIGTERM lands in the middle.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let good = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(
        &lab.config,
        format!(
            "{good}[[chamber]]\nname = \"silent\"\nfamily = \"espec\"\naddress = \"{}\"\n\
             channels = []\ntimeout_ms = 3000\n",
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    let args = harness::daemon_args(&lab.config, SPEED, lab.anchor);
    let daemon = Process::spawn(env!("CARGO_BIN_EXE_cyclerd-under-test"), &args);
    let (_held, _) = tokio::time::timeout(WAIT, silent.accept())
        .await
        .expect("the starting daemon reaches the chamber")
        .unwrap();
    assert!(
        lab.sims[0].snapshot().output_on,
        "the supply still charges while the daemon starts"
    );
    assert!(daemon.terminate().await, "the daemon stops cleanly");
    assert!(
        !lab.sims[0].snapshot().output_on,
        "a SIGTERM during the start still switches the output off"
    );
    // Whether the test resumed before the stop or not, it is left interrupted with its
    // checkpoint for the next start; either way the hub has all it recorded.
    assert_eq!(harness::outbox_pending(&lab.outbox()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resume_abort_an_interrupted_test_ends_faulted_and_the_output_stays_off() {
    let lab = ProcessLab::start_with(1, "abort").await;
    let test = lab.killed_mid_charge(1000).await;
    let (daemon, mut control) = lab.daemon().await;
    let ended = harness::watch_until(&mut control, |s| s.state == "faulted").await;
    assert!(
        ended.reason.contains("resume = \"abort\""),
        "{}",
        ended.reason
    );
    assert!(
        !lab.sims[0].snapshot().output_on,
        "the restarted daemon switched the output off"
    );
    assert!(daemon.terminate().await);
    assert_eq!(harness::outbox_pending(&lab.outbox()), 0);
    harness::assert_every_sample_once(&lab.hub.db, &[test]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_killed_mid_commit_five_times_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite").display().to_string();
    hub_killed_mid_commit_five_times(dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_on_postgresql_killed_mid_commit_five_times_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PgCluster::shared();
    hub_killed_mid_commit_five_times(dir.path(), &cluster.create_database()).await;
}

/// Runs `cyclerhub serve --db DB` for a lab of two channels and kills it (SIGKILL) five times
/// while batches commit; then every sample must be in the hub exactly once.
async fn hub_killed_mid_commit_five_times(dir: &std::path::Path, db: &str) {
    let addr = harness::free_addr();
    let hub_args = [
        "serve".to_string(),
        "--db".into(),
        db.to_string(),
        "--listen".into(),
        addr.to_string(),
        "--no-http".into(),
    ];
    let spawn_hub = || async {
        let mut hub = Process::spawn(env!("CARGO_BIN_EXE_cyclerhub-under-test"), &hub_args);
        hub.wait_for_line("cyclerhub serving").await;
        hub
    };
    let mut hub = spawn_hub().await;
    let lab = SimLab::start_with(LabOptions {
        channels: 2,
        speed: SPEED,
        data_dir: Some(dir.join("daemon")),
        hub_address: Some(addr),
        extra_config: "commit_interval_ms = 20".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let tests = lab
        .start_everywhere(&long_protocol(), "fault protocol")
        .await
        .unwrap();
    let mut acked = lab.daemon.outbox().acked();
    let mut rng = rng();
    for _ in 0..5 {
        let target = *acked.borrow() + rng.random_range(20..80);
        tokio::time::timeout(WAIT, acked.wait_for(|a| *a >= target))
            .await
            .unwrap()
            .unwrap();
        hub.kill().await;
        hub = spawn_hub().await;
    }
    for channel in lab.channel_ids() {
        lab.daemon
            .stop_test(&channel, "enough hub restarts")
            .await
            .unwrap();
    }
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    let (summary, _, _) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    assert!(hub.terminate().await);
    harness::assert_every_sample_once_in(&HubStore::connect(db).unwrap(), &tests);
}

/// A lab whose hub this test can stop and restart.
async fn lab_with_own_hub(dir: &std::path::Path, extra: &str) -> (Hub, SimLab) {
    let hub = Hub::start(&dir.join("hub.sqlite")).await;
    let lab = SimLab::start_with(LabOptions {
        channels: 2,
        speed: SPEED,
        data_dir: Some(dir.join("daemon")),
        hub_address: Some(hub.addr),
        extra_config: extra.into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    (hub, lab)
}

/// Waits for every test to end, checks they finished with nothing lost, and returns the hub.
async fn finish(lab: SimLab, mut hub: Hub, tests: &[String]) -> HubStore {
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .unwrap();
    let states: Vec<String> = lab
        .daemon
        .snapshots()
        .into_iter()
        .map(|s| s.state)
        .collect();
    let (summary, _, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{summary:?}");
    assert!(states.iter().all(|s| s == "finished"), "{states:?}");
    hub.stop().await;
    harness::assert_every_sample_once(&hub.db, tests);
    HubStore::open(&hub.db).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_down_for_ten_simulated_minutes_gets_the_backlog_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let (mut hub, lab) = lab_with_own_hub(dir.path(), "").await;
    let tests = lab
        .start_everywhere(PROTOCOL, "fault protocol")
        .await
        .unwrap();
    let mut acked = lab.daemon.outbox().acked();
    tokio::time::timeout(WAIT, acked.wait_for(|a| *a > 10))
        .await
        .unwrap()
        .unwrap();
    hub.stop().await;
    lab.clock.sleep(600.0).await;
    assert!(
        lab.daemon.outbox().stats().backlog() > 0,
        "data piled up while the hub was away"
    );
    hub.restart().await;
    finish(lab, hub, &tests).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_device_link_is_recorded_and_the_test_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, lab) = lab_with_own_hub(dir.path(), "").await;
    let tests = lab
        .start_everywhere(PROTOCOL, "fault protocol")
        .await
        .unwrap();
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples > 500))
        .await
        .unwrap()
        .unwrap();
    lab.sims[0].cut_link();
    // Shorter than the channel's communication timeout (5 s of wall time).
    lab.clock.sleep(300.0).await;
    lab.sims[0].restore_link();
    let store = finish(lab, hub, &tests).await;
    let link: Vec<String> = store
        .events(&tests[0])
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "link")
        .map(|e| e.message)
        .collect();
    assert!(
        link.iter().any(|m| m.starts_with("communication lost")),
        "{link:?}"
    );
    assert!(
        link.iter().any(|m| m.starts_with("communication restored")),
        "{link:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_pauses_the_channels_at_rest_until_the_hub_returns() {
    let dir = tempfile::tempdir().unwrap();
    // A few thousand samples: the outbox keeps about 8 bytes of each (column-encoded).
    let (mut hub, lab) = lab_with_own_hub(dir.path(), "max_bytes = 40000").await;
    let tests = lab
        .start_everywhere(PROTOCOL, "fault protocol")
        .await
        .unwrap();
    let mut acked = lab.daemon.outbox().acked();
    tokio::time::timeout(WAIT, acked.wait_for(|a| *a > 5))
        .await
        .unwrap()
        .unwrap();
    hub.stop().await;
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.state == "paused"))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !lab.sims[0].snapshot().output_on,
        "a paused channel rests with its output off"
    );
    let alarms = lab.daemon.status().alarms;
    assert!(alarms.iter().any(|a| a.contains("max_bytes")), "{alarms:?}");
    lab.clock.sleep(120.0).await;
    hub.restart().await;
    let store = finish(lab, hub, &tests).await;
    let events = store.events(&tests[0]).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("paused: the outbox is full"))
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("resumed after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_channels_until_space_returns() {
    let lab = ProcessLab::start(1).await;
    let (daemon, mut control) = lab.daemon().await;
    let test = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
    harness::watch_until(&mut control, |s| s.samples >= 1000).await;
    // The file-size limit stands in for a full disk: every write past 4 KiB fails.
    let pid = daemon.child.id().unwrap().to_string();
    let limit = |fsize: &str| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--fsize={fsize}")])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit works here");
    };
    limit("4096:unlimited");
    harness::watch_until(&mut control, |s| s.state == "paused").await;
    let status = control
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.alarms.iter().any(|a| a.contains("cannot commit")),
        "{:?}",
        status.alarms
    );
    assert!(
        !lab.sims[0].snapshot().output_on,
        "paused at rest, output off"
    );
    limit("unlimited:unlimited");
    harness::watch_until(&mut control, |s| s.state == "running").await;
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);
    assert_eq!(harness::outbox_pending(&lab.outbox()), 0);
    harness::assert_every_sample_once(&lab.hub.db, std::slice::from_ref(&test));
    let hub = HubStore::open(&lab.hub.db).unwrap();
    let row = hub.test(&test).unwrap().unwrap();
    assert_eq!(row.outcome.as_deref(), Some("finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_and_a_flipped_byte_are_survived_and_the_damaged_entry_is_quarantined() {
    let mut lab = ProcessLab::start(1).await;
    let (daemon, mut control) = lab.daemon().await;
    let test = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
    harness::watch_until(&mut control, |s| s.samples >= 500).await;
    // From here on nothing reaches the hub, so the damage hits entries only the outbox holds.
    lab.hub.stop().await;
    harness::watch_until(&mut control, |s| s.samples >= 3000).await;
    daemon.kill().await;

    // A byte flipped inside one stored sample batch.
    let outbox = lab.outbox();
    let (victim_id, victim) = {
        let conn = rusqlite::Connection::open(&outbox).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let (id, body, format): (i64, Vec<u8>, i64) = conn
            .query_row(
                "SELECT id, body, format FROM outbox WHERE samples > 0 AND acked_unix_s IS NULL ORDER BY id DESC LIMIT 1 OFFSET 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        (id, cyclerd::outbox::stored::decode(format, &body).unwrap())
    };
    let mut file = std::fs::read(&outbox).unwrap();
    let needle = {
        let conn = rusqlite::Connection::open(&outbox).unwrap();
        let body: Vec<u8> = conn
            .query_row("SELECT body FROM outbox WHERE id = ?1", [victim_id], |r| {
                r.get(0)
            })
            .unwrap();
        // Past the test id: its first sequence number and its columns, bytes no other entry
        // has.
        let past_test_id = 1 + test.len();
        body[past_test_id..].to_vec()
    };
    let hits: Vec<usize> = file
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_slice())
        .map(|(i, _)| i)
        .collect();
    // SQLite leaves stale copies of moved cells in free space when it rebalances pages, so the
    // bytes may be found more than once: flipping every copy damages the live one, and the
    // stale ones are never read.
    assert!(!hits.is_empty(), "the entry's bytes are in the file");
    for hit in hits {
        file[hit + needle.len() / 2] ^= 0x40;
    }
    std::fs::write(&outbox, &file).unwrap();

    // The restarted daemon finds the damage, quarantines the entry and says so; then more
    // data, and a kill whose last write is torn.
    let (daemon, mut control) = lab.daemon().await;
    let status = control
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let quarantined = format!("entry {victim_id} was corrupt at startup");
    assert!(
        status.alarms.iter().any(|a| a.contains(&quarantined)),
        "{:?}",
        status.alarms
    );
    let resumed = harness::watch_until(&mut control, |s| s.state == "running").await;
    harness::watch_until(&mut control, |s| s.samples >= resumed.samples + 1500).await;
    daemon.kill().await;
    let wal = PathBuf::from(format!("{}-wal", outbox.display()));
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 4096, "the killed daemon left a write-ahead log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();

    lab.hub.restart().await;
    let (daemon, mut control) = lab.daemon().await;
    let status = control
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.alarms.iter().any(|a| a.contains("dead letters")),
        "{:?}",
        status.alarms
    );
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);

    // Everything is in the hub once, except the quarantined batch, which waits in the
    // dead-letter table: damaged, but not thrown away.
    let Some(cyclerd::proto::ingest::entry::Body::Samples(batch)) = victim.body else {
        panic!("the victim is a sample batch");
    };
    let hole = batch.first_seq..batch.first_seq + batch.voltage_v.len() as u64;
    let hub = HubStore::open(&lab.hub.db).unwrap();
    let row = hub.test(&test).unwrap().unwrap();
    let seqs: Vec<u64> = hub.samples(&test).unwrap().iter().map(|s| s.seq).collect();
    let expected: Vec<u64> = (0..row.expected_samples.unwrap())
        .filter(|s| !hole.contains(s))
        .collect();
    assert_eq!(
        seqs, expected,
        "every sample once except the quarantined batch {hole:?}"
    );
    let conn = rusqlite::Connection::open(&outbox).unwrap();
    let parked: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM dead_letters WHERE id = ?1",
            [victim_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(parked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_down_when_the_daemon_starts_is_waited_for_while_the_others_run() {
    let lab = ProcessLab::start(2).await;
    lab.sims[1].cut_link();
    let (daemon, mut control) = lab.daemon().await;
    let first = harness::start_on(&mut control, "psb1/1", PROTOCOL).await;
    let offline = harness::watch_until(&mut control, |s| {
        s.channel_id == "psb2/1" && s.state == "offline"
    })
    .await;
    assert!(
        offline.reason.contains("device \"psb2\" at") && offline.reason.contains("does not answer"),
        "{}",
        offline.reason
    );
    let refused = control
        .start_test(StartTestRequest {
            channel_id: "psb2/1".into(),
            protocol_yaml: PROTOCOL.into(),
            metadata: harness::metadata("cell-psb2"),
            params: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("psb2") && refused.message().contains("does not answer"),
        "{}",
        refused.message()
    );
    harness::assert_alarm(&mut control, "offline channels psb2/1:").await;

    lab.sims[1].restore_link();
    harness::watch_until(&mut control, |s| {
        s.channel_id == "psb2/1" && s.state == "idle"
    })
    .await;
    let second = harness::start_on(&mut control, "psb2/1", PROTOCOL).await;
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);
    harness::assert_every_sample_once(&lab.hub.db, &[first, second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_cut_a_test_whose_device_boots_late_resumes_when_it_answers() {
    let lab = ProcessLab::start(1).await;
    let test = lab.killed_mid_charge(500).await;
    lab.sims[0].cut_link();

    let (daemon, mut control) = lab.daemon().await;
    let waiting = harness::watch_until(&mut control, |s| s.state == "offline").await;
    assert_eq!(
        waiting.test_id, test,
        "the channel names the test that waits"
    );
    lab.sims[0].restore_link();
    let resumed = harness::watch_until(&mut control, |s| s.state == "running").await;
    assert_eq!(resumed.test_id, test);
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);
    let counts = harness::assert_every_sample_once(&lab.hub.db, std::slice::from_ref(&test));
    let hub = HubStore::open(&lab.hub.db).unwrap();
    let row = hub.test(&test).unwrap().unwrap();
    assert_eq!(row.outcome.as_deref(), Some("finished"), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_waiting_for_its_device_can_be_stopped_and_the_output_goes_off_when_it_answers() {
    let lab = ProcessLab::start(1).await;
    let test = lab.killed_mid_charge(500).await;
    lab.sims[0].cut_link();

    let (daemon, mut control) = lab.daemon().await;
    harness::watch_until(&mut control, |s| s.state == "offline" && s.test_id == test).await;
    control
        .stop_test(StopTestRequest {
            channel_id: "psb1/1".into(),
            reason: "cell replaced".into(),
        })
        .await
        .unwrap();
    let refused = control
        .stop_test(StopTestRequest {
            channel_id: "psb1/1".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    lab.sims[0].restore_link();
    harness::watch_until(&mut control, |s| s.state == "idle").await;
    assert!(
        !lab.sims[0].snapshot().output_on,
        "the output is off once the device answers"
    );
    assert!(daemon.terminate().await);
    harness::assert_every_sample_once(&lab.hub.db, std::slice::from_ref(&test));
    let row = HubStore::open(&lab.hub.db)
        .unwrap()
        .test(&test)
        .unwrap()
        .unwrap();
    assert_eq!(row.outcome.as_deref(), Some("stopped"), "{row:?}");
    let reason = row.reason.unwrap_or_default();
    assert!(
        reason.contains("cell replaced") && reason.contains("does not answer"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_on_one_device_switches_the_outputs_it_reached_off_and_keeps_the_tests()
{
    let lab = ProcessLab::start(1).await;
    let test = lab.killed_mid_charge(500).await;

    // A cycler whose configured channel does not exist: a mistake the start refuses.
    let clock = Clock::anchored(SPEED, lab.anchor);
    let mut cyclers = Vec::new();
    let cells = vec![CellParams::new(Chemistry::Nmc, 2.5)];
    let (name, entry) = lab::cycler_sim(
        DemoDevice::Neware,
        cells,
        &clock,
        lab.dir.path(),
        &mut cyclers,
    )
    .await
    .unwrap();
    let good = std::fs::read_to_string(&lab.config).unwrap();
    std::fs::write(
        &lab.config,
        format!("{good}[[device]]\nname = \"{name}\"\n{entry}\n[[channel]]\nid = \"{name}/9\"\n"),
    )
    .unwrap();
    let args = harness::daemon_args(&lab.config, SPEED, lab.anchor);
    let mut refused = Process::spawn(env!("CARGO_BIN_EXE_cyclerd-under-test"), &args);
    refused
        .wait_for_line(&format!("channel {name}/9 does not exist"))
        .await;
    let status = tokio::time::timeout(WAIT, refused.child.wait())
        .await
        .expect("the refused start exits")
        .unwrap();
    assert!(!status.success());
    assert!(
        !lab.sims[0].snapshot().output_on,
        "the supply it reached was switched off"
    );

    std::fs::write(&lab.config, good).unwrap();
    let (daemon, mut control) = lab.daemon().await;
    let resumed = harness::watch_until(&mut control, |s| s.state == "running").await;
    assert_eq!(resumed.test_id, test, "the test kept its checkpoint");
    harness::wait_all_ended(&mut control, &lab.channels).await;
    assert!(daemon.terminate().await);
    harness::assert_every_sample_once(&lab.hub.db, std::slice::from_ref(&test));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_stops_the_daemon_while_a_client_watches_its_channels() {
    let lab = ProcessLab::start(1).await;
    let (daemon, mut control) = lab.daemon().await;
    // An operator's `cyclerctl watch` left open: the graceful stop of the control server waits
    // for it, so it must end when the channels' runners do.
    let mut stream = control
        .watch(cyclerd::proto::control::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a snapshot comes")
        .unwrap();
    assert!(first.is_some(), "the stream opens with the channel's state");
    assert!(
        daemon.terminate().await,
        "the daemon stops cleanly with a Watch stream open"
    );
    // The watcher is told the stream ended rather than left hanging.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch stream ends when the daemon stops");
    assert!(!matches!(end, Ok(Some(_))));
}

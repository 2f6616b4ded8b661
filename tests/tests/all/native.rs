//! Native channels: the daemon compiles a protocol for a simulated Neware, Maccor or Arbin
//! cycler, starts it there and follows it through real sockets. Every test ends with the same
//! check: the hub holds every record the cycler logged for the test, exactly once, in the
//! cycler's own order, with no gap in test time.

use super::harness::{self, Hub, Process, WAIT};
use cyclerd::proto::control::control_client::ControlClient;
use cyclerd::proto::control::{ChannelSnapshot, StopTestRequest};
use cyclerd_cli::lab::{self, CYCLER_RECORD_INTERVAL_S, DemoDevice, KeptSim, LabOptions, SimLab};
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::cycler::ChannelAddr;
use cyclerd_drivers::{arbin, maccor, neware};
use cyclerhub::HubStore;
use std::path::Path;
use tokio::sync::watch;

/// One short cycle: about an hour of test time, a few seconds at the test speed.
const PROTOCOL: &str = r#"
protocol: Native cycler test
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Rest for 2 minutes"
  - "Charge at 2C until 4.1 V"
  - "Rest for 5 minutes"
  - "Discharge at 2C until 3.3 V"
  - "Rest for 5 minutes"
"#;

/// [`PROTOCOL`] for a channel that a test trips or stops: still running however slowly the
/// others started.
fn held_protocol() -> String {
    PROTOCOL.replacen("Rest for 5 minutes", "Rest for 10 hours", 1)
}

const SPEED: f64 = 1000.0;
const FAMILIES: [DemoDevice; 3] = [DemoDevice::Neware, DemoDevice::Maccor, DemoDevice::Arbin];

/// The simulated cycler of a lab, whatever its family.
enum Cycler<'a> {
    Neware(&'a neware::SimHandle),
    Maccor(&'a maccor::SimHandle),
    Arbin(&'a arbin::SimHandle),
}

impl Cycler<'_> {
    fn of(sims: &[KeptSim]) -> Cycler<'_> {
        let sim = &sims[0];
        if let Some(s) = sim.downcast_ref::<neware::SimHandle>() {
            Cycler::Neware(s)
        } else if let Some(s) = sim.downcast_ref::<maccor::SimHandle>() {
            Cycler::Maccor(s)
        } else {
            Cycler::Arbin(sim.downcast_ref::<arbin::SimHandle>().unwrap())
        }
    }

    fn in_lab(lab: &SimLab) -> Cycler<'_> {
        if let Some(s) = lab.sim::<neware::SimHandle>(0) {
            Cycler::Neware(s)
        } else if let Some(s) = lab.sim::<maccor::SimHandle>(0) {
            Cycler::Maccor(s)
        } else {
            Cycler::Arbin(lab.sim::<arbin::SimHandle>(0).unwrap())
        }
    }

    /// Neware channel `k` (from 0) as the demo's cycler numbers it.
    fn neware_addr(k: usize) -> ChannelAddr {
        ChannelAddr {
            unit: 1,
            sub_unit: 1,
            channel: k as u32 + 1,
        }
    }

    /// Records the cycler logged for the test on channel `k` (from 0).
    fn records(&self, k: usize) -> u64 {
        match self {
            Cycler::Neware(s) => s.channel(Self::neware_addr(k)).unwrap().records,
            Cycler::Maccor(s) => u64::from(s.snapshot(k as u16).last_rec),
            Cycler::Arbin(s) => s.channel(k as u32).unwrap().records,
        }
    }

    fn cut_link(&self) {
        match self {
            Cycler::Neware(s) => s.cut_link(),
            Cycler::Maccor(s) => s.cut_link(),
            Cycler::Arbin(s) => s.cut_link(),
        }
    }

    fn restore_link(&self) {
        match self {
            Cycler::Neware(s) => s.restore_link(),
            Cycler::Maccor(s) => s.restore_link(),
            Cycler::Arbin(s) => s.restore_link(),
        }
    }

    /// Trips channel `k`'s protection on the cycler.
    fn trip(&self, k: usize) {
        let tripped = match self {
            Cycler::Neware(s) => s.raise_protect(Self::neware_addr(k), 7),
            Cycler::Maccor(s) => {
                s.set_problem(k as u16, maccor::wire::rf2::VOLTAGE_SAFETY);
                true
            }
            Cycler::Arbin(s) => s.set_fault(k as u32, arbin::SimFault::Unsafe, "over-voltage"),
        };
        assert!(tripped, "the simulator tripped channel {k}");
    }

    fn set_paused(&self, k: usize, paused: bool) {
        let done = match self {
            Cycler::Neware(s) => s.set_paused(Self::neware_addr(k), paused),
            Cycler::Arbin(s) => s.set_paused(k as u32, paused),
            Cycler::Maccor(_) => unreachable!("not used with Maccor"),
        };
        assert!(done, "the simulator paused channel {k}");
    }
}

async fn lab(device: DemoDevice, channels: usize) -> SimLab {
    SimLab::start_with(LabOptions {
        channels,
        speed: SPEED,
        device,
        extra_config: "commit_interval_ms = 50".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

/// Waits until `live` satisfies `done`.
async fn until(
    mut live: watch::Receiver<ChannelSnapshot>,
    done: impl Fn(&ChannelSnapshot) -> bool,
) {
    tokio::time::timeout(WAIT, live.wait_for(|s| done(s)))
        .await
        .expect("the awaited channel state came")
        .unwrap();
}

/// A lab on `device` with the test protocol started on every channel, once the first channel
/// has stored a hundred records; returns the test ids and the first channel's live state.
async fn running(
    device: DemoDevice,
    channels: usize,
) -> (SimLab, Vec<String>, watch::Receiver<ChannelSnapshot>) {
    let lab = lab(device, channels).await;
    let tests = lab.start_everywhere(PROTOCOL, "native.yaml").await.unwrap();
    let live = lab.daemon.watchers().remove(0);
    until(live.clone(), |s| s.samples > 100).await;
    (lab, tests, live)
}

async fn wait_done(lab: &SimLab) {
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .expect("every test ends");
}

/// The check every test ends with: exactly once (contiguous, as many as the daemon counted),
/// as many as the cycler logged, and no gap in test time longer than the record interval.
fn assert_every_record_once(hub_db: &Path, tests: &[(String, u64)]) {
    let ids: Vec<String> = tests.iter().map(|(t, _)| t.clone()).collect();
    let counts = harness::assert_every_sample_once(hub_db, &ids);
    let hub = HubStore::open(hub_db).unwrap();
    for (test_id, logged) in tests {
        assert_eq!(
            counts[test_id], *logged,
            "test {test_id}: the hub holds every record the cycler logged"
        );
        let samples = hub.samples(test_id).unwrap();
        for w in samples.windows(2) {
            let gap = w[1].test_time_s - w[0].test_time_s;
            assert!(
                (0.0..=CYCLER_RECORD_INTERVAL_S + 1e-3).contains(&gap),
                "test {test_id}: records {} and {} are {gap} s apart",
                w[0].seq,
                w[1].seq
            );
        }
    }
}

fn event_kinds(hub_db: &Path, test_id: &str) -> Vec<(String, String)> {
    HubStore::open(hub_db)
        .unwrap()
        .events(test_id)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.message))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_runs_to_its_end_on_each_cycler_family_with_every_record_once() {
    for device in FAMILIES {
        let lab = lab(device, 2).await;
        let tests = lab.start_everywhere(PROTOCOL, "native.yaml").await.unwrap();
        wait_done(&lab).await;
        let logged: Vec<u64> = (0..2).map(|k| Cycler::in_lab(&lab).records(k)).collect();
        for s in lab.daemon.snapshots() {
            assert_eq!(s.state, "finished", "{device:?}: {s:?}");
        }
        let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0, "{device:?}");
        let hub_db = dir.join("hub.sqlite");
        assert_every_record_once(
            &hub_db,
            &tests.iter().cloned().zip(logged).collect::<Vec<_>>(),
        );
        let events = event_kinds(&hub_db, &tests[0]);
        let steps = events.iter().filter(|(k, _)| k == "step").count();
        assert!(
            steps >= 4,
            "{device:?}: step changes are events: {events:?}"
        );
        let hub = HubStore::open(&hub_db).unwrap();
        let samples = hub.samples(&tests[0]).unwrap();
        let last = samples.last().unwrap();
        assert!(
            last.charge_capacity_ah > 0.5 && last.discharge_capacity_ah > 0.5,
            "{device:?}: capacity is integrated from the records: {last:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_mid_test_is_recorded_and_the_missed_records_are_downloaded() {
    for device in FAMILIES {
        let (lab, tests, live) = running(device, 1).await;
        Cycler::in_lab(&lab).cut_link();
        until(live.clone(), |s| s.reason.contains("link")).await;
        let before = lab.daemon.snapshot(&lab.channel_ids()[0]).unwrap().samples;
        lab.clock.sleep(600.0).await;
        Cycler::in_lab(&lab).restore_link();
        wait_done(&lab).await;
        let logged = Cycler::in_lab(&lab).records(0);
        let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0);
        let hub_db = dir.join("hub.sqlite");
        assert!(
            logged > before + 200,
            "{device:?}: the cycler logged on while the link was down"
        );
        assert_every_record_once(&hub_db, &[(tests[0].clone(), logged)]);
        let events = event_kinds(&hub_db, &tests[0]);
        assert!(
            events
                .iter()
                .any(|(k, m)| k == "link" && m.contains("lost")),
            "{device:?}: {events:?}"
        );
        assert!(
            events
                .iter()
                .any(|(k, m)| k == "link" && m.contains("restored")),
            "{device:?}: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_protection_on_the_cycler_faults_the_test_and_keeps_every_record() {
    for device in FAMILIES {
        let (lab, tests, _) = running(device, 2).await;
        Cycler::in_lab(&lab).trip(0);
        wait_done(&lab).await;
        let snaps = lab.daemon.snapshots();
        assert_eq!(snaps[0].state, "faulted", "{device:?}: {:?}", snaps[0]);
        assert_eq!(snaps[1].state, "finished", "{device:?}: {:?}", snaps[1]);
        let logged: Vec<u64> = (0..2).map(|k| Cycler::in_lab(&lab).records(k)).collect();
        let (_, dir, _temp) = lab.stop(WAIT).await.unwrap();
        let hub_db = dir.join("hub.sqlite");
        assert_every_record_once(
            &hub_db,
            &tests.iter().cloned().zip(logged).collect::<Vec<_>>(),
        );
        let hub = HubStore::open(&hub_db).unwrap();
        let row = hub.test(&tests[0]).unwrap().unwrap();
        assert_eq!(row.outcome.as_deref(), Some("faulted"));
        let events = event_kinds(&hub_db, &tests[0]);
        assert!(
            events
                .iter()
                .any(|(k, m)| k == "alarm" && m.contains("reports a fault")),
            "{device:?}: the cycler's reason is recorded: {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_channels_in_different_states_each_get_their_own_records() {
    for device in [DemoDevice::Arbin, DemoDevice::Neware] {
        let lab = lab(device, 16).await;
        let ids = lab.channel_ids();
        let mut tests = Vec::new();
        for (k, channel) in ids[..12].iter().enumerate() {
            let protocol = if k == 4 || k == 7 {
                held_protocol()
            } else if k == 2 {
                // Paused once the daemon has stored 50 of its records: still running then,
                // however far a loaded machine leaves the daemon behind the cycler.
                PROTOCOL.replacen("Rest for 5 minutes", "Rest for 2 hours", 1)
            } else {
                PROTOCOL.to_string()
            };
            tests.push(
                lab.daemon
                    .start_test(
                        channel,
                        &protocol,
                        "native.yaml",
                        harness::metadata(channel),
                    )
                    .await
                    .unwrap(),
            );
        }
        let watchers = lab.daemon.watchers();
        until(watchers[2].clone(), |s| s.samples > 50).await;
        Cycler::in_lab(&lab).set_paused(2, true);
        until(watchers[2].clone(), |s| s.state == "paused").await;
        Cycler::in_lab(&lab).trip(4);
        lab.daemon
            .stop_test(&ids[7], "operator stop")
            .await
            .unwrap();
        for (k, w) in watchers.iter().enumerate().take(12) {
            if k != 2 {
                until(w.clone(), |s| s.state != "running").await;
            }
        }
        let snaps = lab.daemon.snapshots();
        assert_eq!(snaps[2].state, "paused", "{device:?}");
        assert_eq!(snaps[4].state, "faulted", "{device:?}");
        assert_eq!(snaps[7].state, "stopped", "{device:?}");
        assert_eq!(snaps[7].reason, "operator stop", "{device:?}");
        for k in [0, 1, 3, 5, 6, 8, 9, 10, 11] {
            assert_eq!(snaps[k].state, "finished", "{device:?} channel {k}");
        }
        for s in &snaps[12..] {
            assert_eq!(s.state, "idle", "{device:?}: {s:?}");
        }
        Cycler::in_lab(&lab).set_paused(2, false);
        wait_done(&lab).await;
        let logged: Vec<u64> = (0..12).map(|k| Cycler::in_lab(&lab).records(k)).collect();
        let arbin_records: Vec<Vec<arbin::wire::DataRecord>> = match Cycler::in_lab(&lab) {
            Cycler::Arbin(s) => (0..12).map(|k| s.records(k)).collect(),
            _ => Vec::new(),
        };
        let (_, dir, _temp) = lab.stop(WAIT).await.unwrap();
        let hub_db = dir.join("hub.sqlite");
        assert_every_record_once(
            &hub_db,
            &tests.iter().cloned().zip(logged).collect::<Vec<_>>(),
        );
        // Each channel's cell starts at its own charge, so each channel's voltages are its own:
        // the hub's must be the very ones the simulator logged on that channel.
        let hub = HubStore::open(&hub_db).unwrap();
        for (k, records) in arbin_records.iter().enumerate() {
            let samples = hub.samples(&tests[k]).unwrap();
            assert_eq!(samples.len(), records.len());
            for (s, r) in samples.iter().zip(records) {
                assert!(
                    (s.voltage_v - f64::from(r.voltage_v)).abs() < 1e-5,
                    "channel {k} record {}: hub {} V, cycler {} V",
                    r.index,
                    s.voltage_v,
                    r.voltage_v
                );
            }
        }
    }
}

/// `cyclerd run` as a child process following a simulated cycler in this process.
struct ProcessLab {
    dir: tempfile::TempDir,
    hub: Hub,
    sims: Vec<KeptSim>,
    config: std::path::PathBuf,
    control: std::net::SocketAddr,
    clock: Clock,
    anchor: f64,
    channels: Vec<String>,
}

impl ProcessLab {
    async fn start(device: DemoDevice, channels: usize) -> ProcessLab {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start(&dir.path().join("hub.sqlite")).await;
        let anchor = Clock::real().unix_time_s();
        let clock = Clock::anchored(SPEED, anchor);
        let control = harness::free_addr();
        let cells = (0..channels)
            .map(|k| CellParams {
                initial_soc: 0.3 + 0.1 * k as f64,
                ..CellParams::new(Chemistry::Nmc, 2.5)
            })
            .collect();
        let mut sims = Vec::new();
        let (name, entry) = lab::cycler_sim(device, cells, &clock, dir.path(), &mut sims)
            .await
            .unwrap();
        let channel_ids: Vec<String> = (1..=channels).map(|n| format!("{name}/{n}")).collect();
        let channel_entries: String = channel_ids
            .iter()
            .map(|id| format!("[[channel]]\nid = \"{id}\"\n"))
            .collect();
        let config = dir.path().join("lab.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nname = \"native-test\"\nid = \"native-test-daemon\"\n\
                 [store]\npath = {store:?}\ncommit_interval_ms = 50\n[hub]\naddress = \"http://{hub}\"\n\
                 [control]\nlisten = \"{control}\"\n[limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\n\
                 [[device]]\nname = \"{name}\"\n{entry}\n{channel_entries}",
                store = dir.path().join("outbox.sqlite").display().to_string(),
                hub = hub.addr,
            ),
        )
        .unwrap();
        ProcessLab {
            dir,
            hub,
            sims,
            config,
            control,
            clock,
            anchor,
            channels: channel_ids,
        }
    }

    async fn daemon(&self) -> (Process, ControlClient<tonic::transport::Channel>) {
        harness::run_daemon(&self.config, SPEED, self.anchor, self.control).await
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_restarted_re_attaches_with_no_gap_and_no_duplicate() {
    for device in FAMILIES {
        let mut lab = ProcessLab::start(device, 2).await;
        let (daemon, mut control) = lab.daemon().await;
        let mut tests = Vec::new();
        for channel in &lab.channels {
            tests.push(harness::start_on(&mut control, channel, PROTOCOL).await);
        }
        harness::watch_until(&mut control, |s| s.samples > 200).await;
        daemon.kill().await;
        // The cycler goes on alone for ten simulated minutes.
        lab.clock.sleep(600.0).await;
        let (daemon, mut control) = lab.daemon().await;
        // The test may run to its end right after it is re-attached: either state will do.
        let again = harness::watch_until(&mut control, |s| {
            tests.contains(&s.test_id) && s.state != "offline" && s.state != "idle"
        })
        .await;
        assert!(
            again.state == "running" || again.state == "finished",
            "{device:?}: {again:?}"
        );
        harness::wait_all_ended(&mut control, &lab.channels).await;
        // A stop after the end is refused: the channel is free again.
        let refused = control
            .stop_test(StopTestRequest {
                channel_id: lab.channels[0].clone(),
                reason: String::new(),
            })
            .await;
        assert!(refused.is_err(), "{device:?}");
        assert!(daemon.terminate().await, "{device:?}: a clean exit");
        let cycler = Cycler::of(&lab.sims);
        let logged: Vec<u64> = (0..2).map(|k| cycler.records(k)).collect();
        lab.hub.stop().await;
        let hub_db = lab.dir.path().join("hub.sqlite");
        assert_every_record_once(
            &hub_db,
            &tests.iter().cloned().zip(logged).collect::<Vec<_>>(),
        );
        let events = event_kinds(&hub_db, &tests[0]);
        assert!(
            events
                .iter()
                .any(|(k, m)| k == "interruption" && m.contains("re-attached")),
            "{device:?}: {events:?}"
        );
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycler_that_answers_only_after_the_daemon_restarted_is_re_attached_with_every_record_once()
 {
    for device in FAMILIES {
        let mut lab = ProcessLab::start(device, 2).await;
        let (daemon, mut control) = lab.daemon().await;
        let mut tests = Vec::new();
        for channel in &lab.channels {
            tests.push(harness::start_on(&mut control, channel, PROTOCOL).await);
        }
        harness::watch_until(&mut control, |s| s.samples > 200).await;
        daemon.kill().await;
        let cycler = Cycler::of(&lab.sims);
        cycler.cut_link();

        let (daemon, mut control) = lab.daemon().await;
        let waiting = harness::watch_until(&mut control, |s| s.state == "offline").await;
        assert!(tests.contains(&waiting.test_id), "{device:?}: {waiting:?}");
        assert!(
            waiting.reason.starts_with("cycler ") && waiting.reason.contains("does not answer"),
            "{device:?}: {}",
            waiting.reason
        );
        // The cycler goes on alone for five simulated minutes, then answers again.
        lab.clock.sleep(300.0).await;
        cycler.restore_link();
        harness::wait_all_ended(&mut control, &lab.channels).await;
        assert!(daemon.terminate().await, "{device:?}: a clean exit");
        let logged: Vec<u64> = (0..2).map(|k| cycler.records(k)).collect();
        lab.hub.stop().await;
        assert_every_record_once(
            &lab.dir.path().join("hub.sqlite"),
            &tests.iter().cloned().zip(logged).collect::<Vec<_>>(),
        );
    }
}

/// A short protocol for a stepped channel: each poll is a MacNet reading, so it stays short.
const DIRECT_PROTOCOL: &str = r#"
protocol: Direct mode test
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Rest for 1 minute"
  - "Charge at 1C for 3 minutes"
  - "Discharge at 1C for 3 minutes"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maccor_channel_in_direct_mode_is_stepped_with_outputs_100_ms_apart_and_its_watchdog_fed()
{
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(&dir.path().join("hub.sqlite")).await;
    // 50x: the watchdog's 60 s are 1.2 s of wall time, which a loaded machine does not miss.
    let clock = Clock::scaled(50.0);
    // The tester suspends a direct-mode channel not updated for 60 s; the 3-minute steps set
    // one output each, so the test only finishes if the daemon keeps the watchdog fed.
    let (sim, daemon) = harness::maccor_direct(dir.path(), hub.addr, &clock, Some(60.0)).await;
    let test = daemon
        .start_test(
            "mdirect/2",
            DIRECT_PROTOCOL,
            "direct.yaml",
            harness::metadata("direct"),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, daemon.wait_all_done())
        .await
        .expect("the test ends");
    let snap = daemon.snapshot("mdirect/2").unwrap();
    assert_eq!(snap.state, "finished", "{snap:?}");
    assert!(
        snap.charge_capacity_ah > 0.1 && snap.discharge_capacity_ah > 0.1,
        "{snap:?}"
    );
    let summary = daemon.shutdown(WAIT).await;
    assert_eq!(summary.lost(), 0);
    // Channel 2 of the configuration is the tester's channel 1 (MacNet counts from 0).
    let outputs = sim.direct_outputs(1);
    assert!(outputs.len() >= 3, "outputs were set: {outputs:?}");
    for w in outputs.windows(2) {
        assert!(w[1] - w[0] >= 0.1, "outputs {} s apart", w[1] - w[0]);
    }
    assert_eq!(sim.refused_outputs(1), 0, "no output came too fast");
    assert!(sim.direct_outputs(0).is_empty(), "channel 0 was left alone");
    hub.stop().await;
    harness::assert_every_sample_once(&dir.path().join("hub.sqlite"), &[test]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_outbox_full_downloads_wait_and_the_cycler_keeps_the_records_until_there_is_room()
{
    let dir = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(&dir.path().join("hub.sqlite")).await;
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: SPEED,
        device: DemoDevice::Neware,
        data_dir: Some(dir.path().join("daemon")),
        hub_address: Some(hub.addr),
        // A few hundred records: the outbox keeps 10 to 60 bytes of each (column-encoded).
        extra_config: "commit_interval_ms = 50\nmax_bytes = 4000".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let tests = lab.start_everywhere(PROTOCOL, "native.yaml").await.unwrap();
    let live = lab.daemon.watchers().remove(0);
    until(live.clone(), |s| s.samples > 50).await;
    hub.stop().await;
    until(live.clone(), |s| s.reason.contains("outbox full")).await;
    let stored = lab.daemon.snapshot(&lab.channel_ids()[0]).unwrap().samples;
    lab.clock.sleep(600.0).await;
    assert!(
        Cycler::in_lab(&lab).records(0) > stored + 200,
        "the cycler logs on while the daemon waits"
    );
    hub.restart().await;
    wait_done(&lab).await;
    let logged = Cycler::in_lab(&lab).records(0);
    let (summary, _, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
    hub.stop().await;
    assert_every_record_once(&hub.db, &[(tests[0].clone(), logged)]);
    let events = event_kinds(&hub.db, &tests[0]);
    assert!(
        events.iter().any(|(_, m)| m.starts_with("downloads wait")),
        "{events:?}"
    );
}

//! Thermal chambers through the daemon: simulated chambers of each family on real sockets, the
//! cells of simulated channels in their air. A protocol sets the chamber and cycles at each
//! temperature; an unsafe chamber stops every channel inside it; one test owns the set point.

use super::harness::{self, WAIT};
use cyclerd::channel::StartError;
use cyclerd_cli::lab::{
    self, CHAMBER_PROTOCOL, DEMO_PROTOCOL, DemoChamber, DemoDevice, LabOptions, SimLab,
};
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::{CellParams, Chemistry};
use cyclerd_drivers::chamber::thermal::Air;
use cyclerd_drivers::ea_psb::PsbSim;
use cyclerd_drivers::ea_psb::sim::SimConfig;
use cyclerd_drivers::{binder, espec, neware, watlow, weiss};
use cyclerhub::HubStore;
use tokio::net::TcpListener;

const SPEED: f64 = 2000.0;

async fn lab(chamber: DemoChamber, device: DemoDevice, channels: usize) -> SimLab {
    SimLab::start_with(LabOptions {
        channels,
        speed: SPEED,
        device,
        chamber: Some(chamber),
        extra_config: "commit_interval_ms = 50".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

async fn wait_done(lab: &SimLab) {
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .expect("every test ends");
}

/// The simulated chamber of a lab, whatever its family.
enum Chamber<'a> {
    Espec(&'a espec::SimHandle),
    Weiss(&'a weiss::SimHandle),
    Watlow(&'a watlow::SimHandle),
    Binder(&'a binder::SimHandle),
}

impl Chamber<'_> {
    fn in_lab(lab: &SimLab) -> Chamber<'_> {
        if let Some(s) = lab.sim::<espec::SimHandle>(0) {
            Chamber::Espec(s)
        } else if let Some(s) = lab.sim::<weiss::SimHandle>(0) {
            Chamber::Weiss(s)
        } else if let Some(s) = lab.sim::<watlow::SimHandle>(0) {
            Chamber::Watlow(s)
        } else {
            Chamber::Binder(lab.sim::<binder::SimHandle>(0).unwrap())
        }
    }

    fn set_alarm(&self, alarm: &str) {
        match self {
            Chamber::Espec(s) => s.set_alarm(Some(alarm)),
            Chamber::Weiss(s) => s.set_alarm(Some(alarm)),
            Chamber::Watlow(s) => s.set_alarm(Some(alarm)),
            Chamber::Binder(s) => s.set_alarm(Some(alarm)),
        }
    }

    fn cut_link(&self) {
        match self {
            Chamber::Espec(s) => s.cut_link(),
            Chamber::Weiss(s) => s.cut_link(),
            Chamber::Watlow(s) => s.cut_link(),
            Chamber::Binder(s) => s.cut_link(),
        }
    }

    fn restore_link(&self) {
        match self {
            Chamber::Espec(s) => s.restore_link(),
            Chamber::Weiss(s) => s.restore_link(),
            Chamber::Watlow(s) => s.restore_link(),
            Chamber::Binder(s) => s.restore_link(),
        }
    }

    fn set_runaway(&self, c_per_min: f64) {
        match self {
            Chamber::Espec(s) => s.set_runaway(Some(c_per_min)),
            Chamber::Weiss(s) => s.set_runaway(Some(c_per_min)),
            Chamber::Watlow(s) => s.set_runaway(Some(c_per_min)),
            Chamber::Binder(s) => s.set_runaway(Some(c_per_min)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_steps_the_chamber_25_45_25_degc_and_cycles_the_cell_at_each_temperature() {
    let lab = lab(DemoChamber::Espec, DemoDevice::EaPsb, 2).await;
    let owner = lab
        .start_on(0, CHAMBER_PROTOCOL, "chamber-25-45-25.yaml")
        .await
        .unwrap();
    // A test without chamber steps shares the chamber.
    let sharer = lab.start_on(1, DEMO_PROTOCOL, "demo.yaml").await.unwrap();
    wait_done(&lab).await;
    for s in lab.daemon.snapshots() {
        assert_eq!(s.state, "finished", "{s:?}");
    }
    let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
    let hub_db = dir.join("hub.sqlite");
    harness::assert_every_sample_once(&hub_db, &[owner.clone(), sharer.clone()]);
    let hub = HubStore::open(&hub_db).unwrap();
    let samples = hub.samples(&owner).unwrap();
    // Steps 3-6 cycle at 25 degC, 9-12 at 45 degC, 15-18 at 25 degC again: each cycle runs in
    // settled air (the cell's heat moves it a little).
    for (steps, target) in [(3..=6, 25.0), (9..=12, 45.0), (15..=18, 25.0)] {
        let air: Vec<f64> = samples
            .iter()
            .filter(|s| steps.contains(&s.step))
            .map(|s| s.ambient_temperature_c.expect("the air is recorded"))
            .collect();
        assert!(air.len() > 100, "steps {steps:?} ran");
        assert!(
            air.iter().all(|t| (t - target).abs() < 1.0),
            "steps {steps:?} cycle at {target} degC: {:?}..{:?}",
            air.iter().copied().reduce(f64::min),
            air.iter().copied().reduce(f64::max)
        );
    }
    let shared = hub.samples(&sharer).unwrap();
    assert!(
        shared.iter().all(|s| s.ambient_temperature_c.is_some()),
        "the sharing channel records the chamber air too"
    );
    let mut csv = Vec::new();
    cyclerhub::export::write_bdf_csv(&hub, &owner, &mut csv).unwrap();
    let header = String::from_utf8(csv).unwrap();
    assert!(
        header
            .lines()
            .next()
            .unwrap()
            .ends_with(",Ambient Temperature / degC"),
        "{}",
        header.lines().next().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_test_with_chamber_steps_in_the_same_chamber_is_refused_naming_the_owner() {
    let lab = lab(DemoChamber::Watlow, DemoDevice::EaPsb, 3).await;
    let owner = lab
        .start_on(0, CHAMBER_PROTOCOL, "chamber-25-45-25.yaml")
        .await
        .unwrap();
    let refused = lab
        .start_on(1, CHAMBER_PROTOCOL, "chamber-25-45-25.yaml")
        .await
        .unwrap_err()
        .downcast::<StartError>()
        .unwrap();
    match &refused {
        StartError::Chamber(message) => assert!(message.contains(&owner), "{message}"),
        other => panic!("refused as a chamber conflict, not {other:?}"),
    }
    assert_eq!(lab.daemon.snapshots()[1].state, "idle");
    lab.start_on(2, DEMO_PROTOCOL, "demo.yaml").await.unwrap();
    // Once the owner's test ends, the chamber can be owned again.
    lab.daemon
        .stop_test(&lab.channel_ids()[0], "")
        .await
        .unwrap();
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.state == "stopped"))
        .await
        .unwrap()
        .unwrap();
    lab.start_on(1, CHAMBER_PROTOCOL, "chamber-25-45-25.yaml")
        .await
        .unwrap();
    lab.stop(WAIT).await.unwrap();
}

/// Makes a chamber unsafe.
type Fault = fn(&Chamber<'_>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_chamber_of_any_family_switches_every_stepped_channel_inside_off_and_faults_its_test()
 {
    let cases: [(DemoChamber, &str, Fault); 4] = [
        (DemoChamber::Espec, "alarm", |c| c.set_alarm("21")),
        (DemoChamber::Weiss, "lost communication", |c| c.cut_link()),
        (DemoChamber::Watlow, "outside its limits", |c| {
            c.set_runaway(20.0)
        }),
        (DemoChamber::Binder, "alarm", |c| c.set_alarm("door open")),
    ];
    for (family, why, fault) in cases {
        let lab = lab(family, DemoDevice::EaPsb, 2).await;
        let tests = lab
            .start_everywhere(DEMO_PROTOCOL, "demo.yaml")
            .await
            .unwrap();
        let mut live = lab.daemon.watchers().remove(0);
        tokio::time::timeout(WAIT, live.wait_for(|s| s.samples > 200))
            .await
            .unwrap()
            .unwrap();
        fault(&Chamber::in_lab(&lab));
        wait_done(&lab).await;
        for (s, sim) in lab.daemon.snapshots().iter().zip(&lab.sims) {
            assert_eq!(s.state, "faulted", "{family:?}: {s:?}");
            assert!(
                s.reason.contains("chamber") && s.reason.contains(why),
                "{family:?}: {}",
                s.reason
            );
            assert!(!sim.snapshot().output_on, "{family:?}: output off");
        }
        // A test does not start in an unsafe chamber.
        let refused = lab.start_on(0, DEMO_PROTOCOL, "demo.yaml").await;
        assert!(refused.is_err(), "{family:?}");
        let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0);
        harness::assert_every_sample_once(&dir.join("hub.sqlite"), &tests);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_chamber_stops_native_channels_through_their_cycler_and_keeps_every_record() {
    let lab = lab(DemoChamber::Espec, DemoDevice::Neware, 2).await;
    let tests = lab
        .start_everywhere(DEMO_PROTOCOL, "demo.yaml")
        .await
        .unwrap();
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples > 100))
        .await
        .unwrap()
        .unwrap();
    Chamber::in_lab(&lab).set_alarm("21");
    wait_done(&lab).await;
    let cycler = lab.sim::<neware::SimHandle>(0).unwrap();
    let mut logged = Vec::new();
    for (k, s) in lab.daemon.snapshots().iter().enumerate() {
        assert_eq!(s.state, "faulted", "{s:?}");
        assert!(s.reason.contains("chamber"), "{}", s.reason);
        let addr = cyclerd_drivers::cycler::ChannelAddr {
            unit: 1,
            sub_unit: 1,
            channel: k as u32 + 1,
        };
        let on_cycler = cycler.channel(addr).unwrap();
        assert_ne!(
            on_cycler.status,
            neware::wire::WorkStatus::Working,
            "the cycler stopped channel {k}"
        );
        logged.push(on_cycler.records);
    }
    let (_, dir, _temp) = lab.stop(WAIT).await.unwrap();
    let counts = harness::assert_every_sample_once(&dir.join("hub.sqlite"), &tests);
    for (test, logged) in tests.iter().zip(logged) {
        assert_eq!(counts[test], logged, "every record the cycler logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_test_starts_in_a_chamber_that_has_not_answered_since_the_daemon_started() {
    let mut lab = lab(DemoChamber::Binder, DemoDevice::EaPsb, 1).await;
    Chamber::in_lab(&lab).cut_link();
    lab.restart_daemon(WAIT).await.unwrap();
    let alarms = lab.daemon.status().alarms;
    assert!(
        alarms
            .iter()
            .any(|a| a.starts_with("chamber \"chamber1\" at") && a.contains("does not answer")),
        "{alarms:?}"
    );
    let refused = lab
        .start_on(0, CHAMBER_PROTOCOL, "chamber-25-45-25.yaml")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("chamber1") && refused.contains("does not answer"),
        "{refused}"
    );

    Chamber::in_lab(&lab).restore_link();
    let mut chamber = lab.daemon.chambers()[0].watch();
    tokio::time::timeout(
        WAIT,
        chamber.wait_for(|s| s.fault.is_none() && s.temperature_c.is_some()),
    )
    .await
    .expect("the chamber answers")
    .unwrap();
    let test = lab
        .start_on(0, CHAMBER_PROTOCOL, "chamber-25-45-25.yaml")
        .await
        .unwrap();
    wait_done(&lab).await;
    assert_eq!(lab.daemon.snapshots()[0].state, "finished");
    let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
    harness::assert_every_sample_once(&dir.join("hub.sqlite"), &[test]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_cut_a_test_waits_for_its_chamber_and_resumes_once_it_reads_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = harness::Hub::start(&dir.path().join("hub.sqlite")).await;
    let speed = 500.0;
    let anchor = Clock::real().unix_time_s();
    let clock = Clock::anchored(speed, anchor);
    let control = harness::free_addr();
    let air = Air::new(25.0);
    let mut sims = Vec::new();
    // A generous communication timeout: the test restores the chamber well within it.
    let chamber = lab::chamber_sim(DemoChamber::Binder, air.clone(), &clock, &mut sims)
        .await
        .unwrap()
        .replace("comm_timeout_ms = 5000", "comm_timeout_ms = 60000");
    let cell = CellParams {
        air: Some(air),
        ..CellParams::new(Chemistry::Nmc, 2.5)
    };
    let psb = PsbSim::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SimConfig::psb_10060_60("C1", cell),
        clock.clone(),
    )
    .unwrap();
    let config = dir.path().join("lab.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nname = \"chamber-test\"\n\
             [store]\npath = {store:?}\ncommit_interval_ms = 50\n[hub]\naddress = \"http://{hub}\"\n\
             [control]\nlisten = \"{control}\"\n\
             [limits]\nvoltage_min = 2.5\nvoltage_max = 4.3\ncurrent_max = 10.0\ntemperature_max = 60.0\n\
             [[device]]\nname = \"psb1\"\nfamily = \"ea-psb\"\naddress = \"{psb}\"\n[[channel]]\nid = \"psb1/1\"\n\
             [[chamber]]\nname = \"chamber1\"\n{chamber}\nchannels = [\"psb1/1\"]\n",
            store = dir.path().join("outbox.sqlite").display().to_string(),
            hub = hub.addr,
            psb = psb.endpoint(),
        ),
    )
    .unwrap();
    let binder = sims[0].downcast_ref::<binder::SimHandle>().unwrap();

    let (daemon, mut control_client) = harness::run_daemon(&config, speed, anchor, control).await;
    let test = harness::start_on(&mut control_client, "psb1/1", DEMO_PROTOCOL).await;
    harness::watch_until(&mut control_client, |s| s.samples >= 500).await;
    daemon.kill().await;
    binder.cut_link();

    let (daemon, mut control_client) = harness::run_daemon(&config, speed, anchor, control).await;
    let waiting = harness::watch_until(&mut control_client, |s| {
        s.state == "offline" && s.reason.starts_with(&format!("test {test} waits"))
    })
    .await;
    assert!(
        waiting.reason.contains("chamber1") && waiting.reason.contains("does not answer"),
        "{}",
        waiting.reason
    );
    binder.restore_link();
    let resumed = harness::watch_until(&mut control_client, |s| s.state == "running").await;
    assert_eq!(resumed.test_id, test);
    harness::wait_all_ended(&mut control_client, &["psb1/1".to_string()]).await;
    assert!(daemon.terminate().await);
    hub.stop().await;
    harness::assert_every_sample_once(&dir.path().join("hub.sqlite"), std::slice::from_ref(&test));
    let row = HubStore::open(dir.path().join("hub.sqlite"))
        .unwrap()
        .test(&test)
        .unwrap()
        .unwrap();
    assert_eq!(row.outcome.as_deref(), Some("finished"), "{row:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chamber_returns_to_its_idle_set_point_when_the_test_that_owned_it_ends() {
    const WARM_SOAK: &str = r#"
protocol: Warm soak
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A, temperature: 60 degC}
steps:
  - chamber: 40 degC
    wait: {within: 0.5 degC, for: 1 min}
    timeout: 2 h
  - "Rest for 1 minute"
"#;
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: SPEED,
        chamber: Some(DemoChamber::Weiss),
        chamber_config: "idle_set_point = 20.0".into(),
        extra_config: "commit_interval_ms = 50".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let mut chamber = lab.daemon.chambers()[0].watch();
    let test = lab.start_on(0, WARM_SOAK, "warm-soak.yaml").await.unwrap();
    let near = |t: Option<f64>, target: f64| t.is_some_and(|t| (t - target).abs() < 0.05);
    tokio::time::timeout(WAIT, chamber.wait_for(|s| near(s.set_point_c, 40.0)))
        .await
        .expect("the test sets the chamber")
        .unwrap();
    wait_done(&lab).await;
    assert_eq!(lab.daemon.snapshots()[0].state, "finished");
    let idle = tokio::time::timeout(
        WAIT,
        chamber.wait_for(|s| s.owner.is_none() && near(s.set_point_c, 20.0)),
    )
    .await
    .expect("the chamber goes back to its idle set point")
    .unwrap()
    .clone();
    assert_eq!(idle.fault, None);
    // A test that owns the chamber when the daemon shuts down is left interrupted (for the next
    // start), and gives the chamber back too.
    let held = WARM_SOAK.replace("Rest for 1 minute", "Rest for 10 hours");
    let interrupted = lab.start_on(0, &held, "warm-soak.yaml").await.unwrap();
    tokio::time::timeout(WAIT, chamber.wait_for(|s| near(s.set_point_c, 40.0)))
        .await
        .expect("the second test sets the chamber")
        .unwrap();
    let weiss = lab.sim::<weiss::SimHandle>(0).unwrap();
    assert!((weiss.set_point_c() - 40.0).abs() < 0.05);
    let summary = lab.daemon.shutdown(WAIT).await;
    assert!(
        (weiss.set_point_c() - 20.0).abs() < 0.05,
        "after the shutdown the chamber is at {} degC",
        weiss.set_point_c()
    );
    assert_eq!(summary.lost(), 0);
    assert_eq!(lab.daemon.snapshots()[0].state, "interrupted");
    let (_, dir, _temp) = lab.stop(WAIT).await.unwrap();
    harness::assert_every_sample_once(&dir.join("hub.sqlite"), &[test]);
    harness::assert_interrupted_samples_once(
        &dir.join("hub.sqlite"),
        &dir.join("outbox.sqlite"),
        &interrupted,
    );
}

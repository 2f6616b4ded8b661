//! Supervised execution on native cyclers: what a schedule format cannot say (a loop's exit, a
//! relaxation end on dV/dt, a temperature end, a chamber step) the daemon decides from the
//! records it downloads, running the test as segments on the cycler. The same protocol on the
//! power supply (stepped by the daemon) is the reference: the same cycles, the same per-cycle
//! discharge capacity within 1 %.

use super::harness::{self, WAIT};
use cyclerd_cli::lab::{DemoChamber, DemoDevice, LabOptions, SimLab};
use cyclerhub::HubStore;

/// A loop left by the daemon at cycle 3 (of at most 10), around a charge, a rest that ends
/// when the voltage has relaxed (dV/dt, which no cycler format here can say) and a discharge.
const LOOP_PROTOCOL: &str = r#"
protocol: Supervised loop
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
  temperature: 60 degC
steps:
  - "Rest for 2 minutes"
  - repeat: 10
    until: cycle >= 3
    cycle: true
    steps:
      - "Charge at 2C until 4.1 V"
      - rest: 30 min
        until: ["dV/dt <= 1 mV/min"]
      - cc: 2C
        direction: discharge
        until: ["V <= 3.3 V"]
      - "Rest for 5 minutes"
"#;

const SPEED: f64 = 1000.0;
const FAMILIES: [DemoDevice; 3] = [DemoDevice::Neware, DemoDevice::Maccor, DemoDevice::Arbin];

struct Run {
    outcome: Option<String>,
    /// Discharge capacity per cycle, Ah.
    discharge: Vec<f64>,
    events: Vec<(String, String)>,
}

async fn run(device: DemoDevice, chamber: Option<DemoChamber>, protocol: &str) -> Run {
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: SPEED,
        device,
        chamber,
        // The power supply is stepped every poll: one a second of test time is plenty here.
        poll_interval_ms: (device == DemoDevice::EaPsb).then_some(1000),
        extra_config: "commit_interval_ms = 50".into(),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let channel = lab.channel_ids()[0].clone();
    let test_id = lab
        .daemon
        .start_test(
            &channel,
            protocol,
            "supervised.yaml",
            harness::metadata(&channel),
        )
        .await
        .unwrap_or_else(|e| panic!("{device:?}: {e}"));
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .expect("the test ends");
    let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{device:?}");
    let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
    harness::assert_every_sample_once_in(&hub, std::slice::from_ref(&test_id));
    let outcome = hub.test(&test_id).unwrap().unwrap().outcome;
    let discharge = hub
        .cycles(&test_id)
        .unwrap()
        .iter()
        .map(|c| c.discharge_capacity_ah)
        .collect();
    let events = hub
        .events(&test_id)
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.message))
        .collect();
    Run {
        outcome,
        discharge,
        events,
    }
}

fn assert_same_cycles(device: DemoDevice, reference: &Run, native: &Run) {
    assert_eq!(
        native.discharge.len(),
        reference.discharge.len(),
        "{device:?}: cycles {:?} against the power supply's {:?}",
        native.discharge,
        reference.discharge
    );
    for (n, (a, b)) in native
        .discharge
        .iter()
        .zip(&reference.discharge)
        .enumerate()
    {
        if *b < 0.025 {
            continue;
        }
        let off = (a - b).abs() / b;
        assert!(
            off < 0.01,
            "{device:?}: cycle {}: {a:.4} Ah against {b:.4} Ah ({:.2} %)",
            n + 1,
            off * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_exit_and_a_relaxation_end_run_on_every_cycler_family_as_on_the_power_supply() {
    let reference = run(DemoDevice::EaPsb, None, LOOP_PROTOCOL).await;
    assert_eq!(reference.outcome.as_deref(), Some("finished"));
    assert_eq!(reference.discharge.len(), 3, "{:?}", reference.discharge);
    for device in FAMILIES {
        let native = run(device, None, LOOP_PROTOCOL).await;
        assert_eq!(
            native.outcome.as_deref(),
            Some("finished"),
            "{device:?}: {:?}",
            native.events
        );
        assert_same_cycles(device, &reference, &native);
        let held = native
            .events
            .iter()
            .filter(|(_, m)| m.contains("|dV/dt| <=") && m.contains("held"))
            .count();
        assert_eq!(
            held, 3,
            "{device:?}: one relaxation end per pass: {:?}",
            native.events
        );
        let segments = native
            .events
            .iter()
            .filter(|(_, m)| m.starts_with("segment "))
            .count();
        // Rest | 3 x (charge + rest) and (discharge + rest): one segment, then two per pass.
        assert_eq!(segments, 6, "{device:?}: {:?}", native.events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temperature_end_no_cycler_format_says_ends_the_test_from_what_the_daemon_reads() {
    // The cell warms a little in a 2C discharge; the end fires during the first one.
    let protocol = LOOP_PROTOCOL.replace(
        "until: [\"V <= 3.3 V\"]",
        "until: [\"V <= 3.3 V\", \"Temp >= 25.3 degC -> end\"]",
    );
    // Maccor's records carry no cell temperature: the daemon reads its auxiliary input live.
    for device in FAMILIES {
        let native = run(device, None, &protocol).await;
        assert_eq!(
            native.outcome.as_deref(),
            Some("finished"),
            "{device:?}: {:?}",
            native.events
        );
        assert!(
            native
                .events
                .iter()
                .any(|(_, m)| m.contains("T >= 25.3 degC held") && m.contains("end of the test")),
            "{device:?}: {:?}",
            native.events
        );
        assert_eq!(
            native.discharge.len(),
            1,
            "{device:?}: {:?}",
            native.discharge
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chamber_step_on_a_native_cycler_sets_the_chamber_and_goes_on_once_it_settled() {
    let protocol = r#"
protocol: Chamber then discharge
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
  temperature: 60 degC
steps:
  - chamber: 30 degC
    wait: {within: 0.5 degC, for: 5 min}
    timeout: 2 h
  - "Discharge at 1C until 3.3 V"
"#;
    for device in FAMILIES {
        let native = run(device, Some(DemoChamber::Espec), protocol).await;
        assert_eq!(
            native.outcome.as_deref(),
            Some("finished"),
            "{device:?}: {:?}",
            native.events
        );
        assert!(
            native
                .events
                .iter()
                .any(|(_, m)| m.contains("the chamber settled at 30 degC")),
            "{device:?}: {:?}",
            native.events
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_re_attaches_to_the_segment_on_the_cycler_and_finishes_the_loop() {
    let reference = run(DemoDevice::EaPsb, None, LOOP_PROTOCOL).await;
    for device in FAMILIES {
        let mut lab = SimLab::start_with(LabOptions {
            channels: 1,
            speed: SPEED,
            device,
            extra_config: "commit_interval_ms = 50".into(),
            ..LabOptions::default()
        })
        .await
        .unwrap();
        let channel = lab.channel_ids()[0].clone();
        let test_id = lab
            .daemon
            .start_test(
                &channel,
                LOOP_PROTOCOL,
                "supervised.yaml",
                harness::metadata(&channel),
            )
            .await
            .unwrap();
        // Into the second pass: segments have started and the daemon counts the loop.
        let mut live = lab.daemon.watchers().remove(0);
        tokio::time::timeout(WAIT, live.wait_for(|s| s.cycle >= 2))
            .await
            .expect("the second cycle came")
            .unwrap();
        lab.restart_daemon(WAIT).await.unwrap();
        // The restarted daemon re-attaches once its devices were tried.
        let mut live = lab.daemon.watchers().remove(0);
        tokio::time::timeout(
            WAIT,
            live.wait_for(|s| s.test_id == test_id && s.state != "idle"),
        )
        .await
        .expect("the test was re-attached")
        .unwrap();
        tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
            .await
            .expect("the test ends");
        let (summary, dir, _temp) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0, "{device:?}");
        let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
        harness::assert_every_sample_once_in(&hub, std::slice::from_ref(&test_id));
        let events: Vec<String> = hub
            .events(&test_id)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert!(
            events.iter().any(|m| m.contains("re-attached")),
            "{device:?}: {events:?}"
        );
        let native = Run {
            outcome: hub.test(&test_id).unwrap().unwrap().outcome,
            discharge: hub
                .cycles(&test_id)
                .unwrap()
                .iter()
                .map(|c| c.discharge_capacity_ah)
                .collect(),
            events: Vec::new(),
        };
        assert_eq!(
            native.outcome.as_deref(),
            Some("finished"),
            "{device:?}: {events:?}"
        );
        assert_same_cycles(device, &reference, &native);
    }
}

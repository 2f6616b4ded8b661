//! Step identity on every cycler: the same protocol, stepped by the daemon on a power supply or
//! run natively by a Neware, Maccor or Arbin cycler, stores the same sequence of (cycle, plan
//! step) and step counts in the hub, and names each step by the protocol's own text.

use super::harness::WAIT;
use cyclerd_cli::lab::DemoDevice;
use cyclerd_protocols::{Plan, PlanStep};
use cyclerhub::HubStore;

/// A charging preamble, a cycling loop of two passes, a step after it. Every step lasts well
/// over a cycler's record interval, so each one leaves records.
const PROTOCOL: &str = r#"
protocol: Step identity
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Charge at 2C until 4.1 V"
  - repeat: 2
    cycle: true
    steps:
      - "Discharge at 2C until 3.3 V"
      - "Rest for 2 minutes"
      - "Charge at 2C until 4.1 V"
  - "Rest for 5 minutes"
"#;

/// Runs [`PROTOCOL`] on one channel of `device` to its end; returns the hub's samples as
/// deduplicated consecutive (cycle, plan step) pairs, the step counts and the step events'
/// messages.
async fn run(device: DemoDevice) -> (Vec<(u32, Option<u32>)>, Vec<u32>, Vec<String>) {
    let (lab, test) = super::harness::ran_to_end(device, PROTOCOL, "steps.yaml").await;
    let snapshot = lab.daemon.snapshots().remove(0);
    assert_eq!(snapshot.state, "finished", "{device:?}: {snapshot:?}");
    assert_eq!(
        snapshot.step_description, "Rest for 5 minutes",
        "{device:?}: the live view names the protocol's step"
    );
    let (summary, dir, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0, "{device:?}");
    let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
    let samples = hub.samples(&test).unwrap();
    let mut places: Vec<(u32, Option<u32>)> =
        samples.iter().map(|s| (s.cycle, s.plan_step)).collect();
    places.dedup();
    let mut steps: Vec<u32> = samples.iter().map(|s| s.step).collect();
    steps.dedup();
    let events = hub
        .events(&test)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "step")
        .map(|e| e.message)
        .collect();
    (places, steps, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_protocol_gives_the_same_cycles_plan_steps_and_step_counts_stepped_and_on_every_native_cycler()
 {
    let plan = Plan::from_yaml(PROTOCOL, "steps.yaml").unwrap();
    let texts: Vec<&str> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            PlanStep::Action(a) => Some(a.description.as_str()),
            _ => None,
        })
        .collect();
    // Plan: 0 charge, 1 loop, 2 discharge, 3 rest, 4 charge, 5 loop end, 6 rest, 7 end. The
    // preamble is cycle 1, each pass a cycle, the closing rest stays in the last pass's cycle.
    let expected: Vec<(u32, Option<u32>)> = [
        (1, 0),
        (2, 2),
        (2, 3),
        (2, 4),
        (3, 2),
        (3, 3),
        (3, 4),
        (3, 6),
    ]
    .into_iter()
    .map(|(c, p)| (c, Some(p)))
    .collect();
    for device in [
        DemoDevice::EaPsb,
        DemoDevice::Neware,
        DemoDevice::Maccor,
        DemoDevice::Arbin,
    ] {
        let (places, steps, events) = run(device).await;
        assert_eq!(
            places, expected,
            "{device:?}: (cycle, plan step) of the samples"
        );
        assert_eq!(
            steps,
            (1..=8).collect::<Vec<u32>>(),
            "{device:?}: the step count rises by one at every step change"
        );
        assert!(!events.is_empty(), "{device:?}: step changes are events");
        for message in &events {
            assert!(
                texts.contains(&message.as_str()),
                "{device:?}: step event {message:?} names a step of the protocol ({texts:?})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_step_on_a_stepped_channel_ends_at_its_time_not_at_the_next_poll() {
    use cyclerd_cli::lab::{LabOptions, SimLab};
    // Polled once a second, 2.5 s steps: without a poll at the step's end they would last 3 s.
    let protocol = "protocol: pulses\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - \"Discharge at 1C for 2.5 seconds\"\n  - \"Rest for 2.5 seconds\"\n  - \"Charge at 1C for 2.5 seconds\"\n";
    let lab = SimLab::start_with(LabOptions {
        channels: 1,
        speed: 10.0,
        poll_interval_ms: Some(1000),
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
            "pulses.yaml",
            super::harness::metadata(&channel),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .expect("the test ends");
    let (_, dir, _temp) = lab.stop(WAIT).await.unwrap();
    let samples = HubStore::open(dir.join("hub.sqlite"))
        .unwrap()
        .samples(&test_id)
        .unwrap();
    // The last sample of each step: the poll that ended it (the next step's first sample is
    // the next poll).
    let mut ends: Vec<f64> = samples
        .windows(2)
        .filter(|w| w[1].step != w[0].step)
        .map(|w| w[0].test_time_s)
        .collect();
    ends.push(samples.last().unwrap().test_time_s);
    assert_eq!(ends.len(), 3, "{samples:?}");
    for (n, w) in ends.windows(2).enumerate() {
        let lasted = w[1] - w[0];
        assert!(
            (2.5..2.7).contains(&lasted),
            "step {} lasted {lasted} s, not 2.5 s: steps ended at {ends:?}",
            n + 2
        );
    }
}

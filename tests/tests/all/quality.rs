//! Quality before submission, end to end: the daemon's test journal records a demo-like test
//! whose voltage sensor sticks and whose current reads with the wrong sign for a while, and a
//! clean one; its outbox is uploaded over real gRPC to a hub. Both the daemon (as it recorded)
//! and the hub (as it stored) find the faults at exactly their samples, and the faulty test is
//! graded below the clean one.

use super::harness::{self, WAIT};
use cyclerd::channel::journal::{RunnerState, Sample, TestJournal};
use cyclerd::channel::{ChannelSpec, Ending, Shared, TestRequest};
use cyclerd::outbox::Outbox;
use cyclerd::proto::control::ChannelSnapshot;
use cyclerd::proto::quality::config::Layered;
use cyclerd::uploader::{self, UploaderConfig, UploaderStatus};
use cyclerd_drivers::Clock;
use cyclerd_protocols::{Plan, Safety};
use cyclerhub::HubStore;
use std::sync::Arc;
use std::time::Duration;

/// Two cycles of a 2.5 Ah cell at C/2 with rests, the demo's shape.
const PROTOCOL: &str = r#"
protocol: Two cycles
version: 1
params: {capacity: 2.5 Ah}
safety: {voltage: [2.5 V, 4.25 V], current: 5 A}
steps:
  - repeat: 2
    cycle: true
    steps:
      - "Charge at C/2 until 4.1 V"
      - "Rest for 2 minutes"
      - "Discharge at C/2 until 3.2 V"
      - "Rest for 2 minutes"
"#;

/// Samples a second apart per phase: charge, rest, discharge, rest; two cycles.
const PHASE: [u64; 4] = [600, 120, 600, 120];
/// The voltage sensor sticks over these seqs (in the first charge) ...
const STUCK: (u64, u64) = (200, 549);
/// ... and the current reads with the wrong sign over these (in the second discharge).
const FLIPPED: (u64, u64) = (2300, 2339);

/// The plan step and BDF-like step count of `seq`, its cycle and the commanded current.
fn place(plan: &Plan, seq: u64) -> (u32, u32, u32, f64) {
    let per_cycle: u64 = PHASE.iter().sum();
    let cycle = seq / per_cycle;
    let mut within = seq % per_cycle;
    let mut phase = 0;
    while within >= PHASE[phase] {
        within -= PHASE[phase];
        phase += 1;
    }
    // Plan steps: 0 the loop start, then the four actions.
    let plan_step = phase as u32 + 1;
    let current = match &plan.steps[plan_step as usize] {
        cyclerd_protocols::PlanStep::Action(a) => match a.control {
            cyclerd_protocols::Control::Current { amps }
            | cyclerd_protocols::Control::Cccv { amps, .. } => amps,
            _ => 0.0,
        },
        other => panic!("plan step {plan_step} is {other:?}"),
    };
    let step = (cycle * 4 + phase as u64 + 1) as u32;
    (plan_step, step, cycle as u32 + 1, current)
}

/// Sample `seq`: the cell's voltage follows its charge; `faulty` adds the stuck sensor and the
/// wrong sign, the capacities counting the current as measured (a sign error in the sensor).
fn sample(plan: &Plan, seq: u64, faulty: bool, q: &mut (f64, f64)) -> Sample {
    let (plan_step, step, cycle, mut current) = place(plan, seq);
    if faulty && (FLIPPED.0..=FLIPPED.1).contains(&seq) {
        current = -current;
    }
    if current > 0.0 {
        q.0 += current / 3600.0;
    } else {
        q.1 -= current / 3600.0;
    }
    let soc = 0.1 + (q.0 - q.1) / 2.5;
    let mut voltage = 3.3 + 0.8 * soc + 0.04 * current;
    if faulty && (STUCK.0..=STUCK.1).contains(&seq) {
        voltage = 3.71;
    }
    let t = seq as f64;
    Sample {
        test_time_s: t,
        unix_time_s: 1.8e9 + t,
        voltage_v: voltage,
        current_a: current,
        cycle,
        step,
        plan_step,
        charge_ah: q.0,
        discharge_ah: q.1,
        charge_wh: q.0 * 3.7,
        discharge_wh: q.1 * 3.6,
        temperature_c: Some(25.0 + 0.5 * current.abs()),
        ambient_c: None,
    }
}

/// Records a whole test on `channel` through the daemon's journal, a batch per 100 samples.
fn record(shared: &Shared, channel: &str, test_id: &str, faulty: bool) -> u64 {
    let plan = Plan::from_yaml(PROTOCOL, "two.yaml").unwrap();
    let spec = ChannelSpec {
        id: channel.into(),
        poll_interval_s: 1.0,
        comm_timeout: Duration::from_secs(5),
        limits: Safety::default(),
        commit_interval: Duration::from_millis(50),
        chamber: None,
        equipment: Vec::new(),
    };
    let (live, _watch) = tokio::sync::watch::channel(ChannelSnapshot::default());
    let state = || RunnerState {
        json: "{}".into(),
        paused_s: 0.0,
    };
    let test = TestRequest {
        plan: plan.clone(),
        source: PROTOCOL.into(),
        origin: "two.yaml".into(),
        metadata: harness::metadata(channel),
        notes: Vec::new(),
    };
    let mut journal = TestJournal::register(
        shared,
        &spec,
        &live,
        (test_id.into(), 1.8e9),
        test,
        state(),
        ((1, 1), "charge".into()),
    );
    let n: u64 = 2 * PHASE.iter().sum::<u64>();
    let mut q = (0.0, 0.0);
    for seq in 0..n {
        journal.push(sample(&plan, seq, faulty, &mut q));
        if seq % 100 == 99 {
            journal.flush(state);
        }
    }
    journal.flush(state);
    journal.end(&live, (n - 1) as f64, (8, 2), Ending::Finished);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_voltage_sensor_and_a_sign_error_are_found_at_their_samples_by_daemon_and_hub() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = harness::Hub::start(&dir.path().join("hub.sqlite")).await;
    let outbox = Outbox::open(&dir.path().join("outbox.sqlite")).unwrap();
    let shared = Shared {
        clock: Clock::real(),
        outbox: outbox.clone(),
        acquired: Arc::default(),
        device_errors: Arc::default(),
        reconnects: Arc::default(),
        quality: Arc::new(Layered::default()),
    };
    let (faulty, clean) = (
        "0190a0c0-0000-7000-8000-00000000f001",
        "0190a0c0-0000-7000-8000-00000000c001",
    );
    let n = record(&shared, "sim/1", faulty, true);
    record(&shared, "sim/2", clean, false);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let upload = tokio::spawn(uploader::run(
        UploaderConfig {
            hub_addresses: vec![format!("http://{}", hub.addr)],
            hub_ca_pem: None,
            hub_token: None,
            daemon_name: "quality-test".into(),
            hub_lab: None,
            window: 64,
        },
        outbox.clone(),
        Arc::new(UploaderStatus::default()),
        stopped,
    ));
    outbox.flush().await.unwrap();
    assert!(
        outbox.caught_up(tokio::time::Instant::now() + WAIT).await,
        "the hub acknowledges everything"
    );
    stop.send(true).unwrap();
    upload.await.unwrap();
    hub.stop().await;

    let store = HubStore::open(&hub.db).unwrap();
    assert_eq!(store.sample_count(faulty).unwrap(), n);
    let findings = store.quality_findings(faulty).unwrap();
    let by = |source: &str| -> Vec<(String, u64, u64, bool)> {
        findings
            .iter()
            .filter(|f| f.source == source)
            .map(|f| (f.check.clone(), f.first_seq, f.last_seq, f.open))
            .collect()
    };
    let expected = vec![
        ("voltage_stuck".to_string(), STUCK.0, STUCK.1, false),
        ("current_sign".to_string(), FLIPPED.0, FLIPPED.1, false),
    ];
    assert_eq!(by("daemon"), expected, "the daemon's: {findings:#?}");
    assert_eq!(by("hub"), expected, "the hub's: {findings:#?}");
    assert!(store.quality_findings(clean).unwrap().is_empty());

    let graded = |id| store.test(id).unwrap().unwrap().grade.unwrap();
    let (faulty, clean) = (graded(faulty), graded(clean));
    assert_eq!((clean.letter, clean.score), ('A', 100), "{clean:?}");
    assert!(faulty.score < clean.score, "{faulty:?}");
    assert_eq!((faulty.letter, faulty.score), ('B', 80), "{faulty:?}");
}

/// A demo-like protocol with a constant-voltage hold (where the voltage does not move while
/// current flows: held, not stuck) and rests.
const DEMO: &str = r#"
protocol: Demo cycle
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Rest for 1 minute"
  - repeat: 2
    cycle: true
    steps:
      - "Charge at 1C until 4.1 V"
      - "Hold at 4.1 V until C/10"
      - "Rest for 2 minutes"
      - "Discharge at 1C until 3.3 V"
      - "Rest for 2 minutes"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_stepped_or_native_test_has_no_quality_finding_and_grades_a() {
    use cyclerd_cli::lab::{DemoDevice, LabOptions, SimLab};
    for device in [DemoDevice::EaPsb, DemoDevice::Neware] {
        // At 1000x a hiccup of the loaded test machine is a minute of test time without a
        // sample: a gap the checks would rightly report, but not what this test is about.
        let mut quality = Layered::default();
        quality.base.max_gap_s = 600.0;
        let lab = SimLab::start_with(LabOptions {
            channels: 1,
            speed: 1000.0,
            device,
            quality,
            ..LabOptions::default()
        })
        .await
        .unwrap();
        let test = lab
            .start_everywhere(DEMO, "demo.yaml")
            .await
            .unwrap()
            .remove(0);
        tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
            .await
            .expect("the test ends");
        let (summary, dir, _keep) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0);
        let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
        let findings = hub.quality_findings(&test).unwrap();
        assert!(findings.is_empty(), "{device:?}: {findings:#?}");
        let grade = hub.test(&test).unwrap().unwrap().grade.unwrap();
        assert_eq!(
            (grade.letter, grade.score),
            ('A', 100),
            "{device:?}: {grade:?}"
        );
    }
}

/// Waits until channel `rx`'s snapshot satisfies `ok`; returns it.
async fn until(
    rx: &mut tokio::sync::watch::Receiver<ChannelSnapshot>,
    what: &str,
    ok: impl FnMut(&ChannelSnapshot) -> bool,
) -> ChannelSnapshot {
    tokio::time::timeout(WAIT, rx.wait_for(ok))
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
        .expect("the channel is gone")
        .clone()
}

/// The longest run of consecutive samples satisfying `hit`, as inclusive seqs.
fn longest_run(samples: &[cyclerhub::SampleRow], hit: impl Fn(usize) -> bool) -> (u64, u64) {
    let (mut best, mut start) = ((0, 0), None);
    for i in 0..=samples.len() {
        match (i < samples.len() && hit(i), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s > best.1 - best.0 {
                    best = (s, i);
                }
                start = None;
            }
            _ => {}
        }
    }
    (samples[best.0].seq, samples[best.1 - 1].seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_run_whose_psb_voltage_readback_sticks_and_current_reads_inverted_is_found_at_those_samples_and_graded_lower()
 {
    use cyclerd_cli::lab::{DemoDevice, LabOptions, SimLab};
    let mut quality = Layered::default();
    // See a_simulated_stepped_or_native_test_has_no_quality_finding_and_grades_a.
    quality.base.max_gap_s = 600.0;
    let lab = SimLab::start_with(LabOptions {
        channels: 2,
        speed: 1000.0,
        device: DemoDevice::EaPsb,
        poll_interval_ms: Some(1000),
        quality,
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let tests = lab.start_everywhere(DEMO, "demo.yaml").await.unwrap();
    let (faulty, clean) = (&tests[0], &tests[1]);
    let mut rx = lab
        .daemon
        .watchers()
        .into_iter()
        .find(|w| w.borrow().channel_id == "psb1/1")
        .unwrap();
    let sim = &lab.sims[0];

    // The voltage readback of psb1 sticks for 400 polls in the first charge ...
    let charging = until(&mut rx, "the first charge", |s| {
        s.step_description.starts_with("Charge")
    })
    .await;
    until(&mut rx, "60 polls into it", |s| {
        s.samples >= charging.samples + 60
    })
    .await;
    sim.stick_voltage(true);
    let stuck_at = lab.daemon.snapshot("psb1/1").unwrap().samples;
    until(&mut rx, "400 stuck polls", |s| s.samples >= stuck_at + 400).await;
    sim.stick_voltage(false);
    let freed_at = lab.daemon.snapshot("psb1/1").unwrap().samples;
    // ... and its current reads with the wrong sign for 40 polls in the first discharge.
    let discharging = until(&mut rx, "the first discharge", |s| {
        s.step_description.starts_with("Discharge")
    })
    .await;
    until(&mut rx, "60 polls into it", |s| {
        s.samples >= discharging.samples + 60
    })
    .await;
    sim.invert_current_sign(true);
    let inverted_at = lab.daemon.snapshot("psb1/1").unwrap().samples;
    until(&mut rx, "40 inverted polls", |s| {
        s.samples >= inverted_at + 40
    })
    .await;
    sim.invert_current_sign(false);
    let righted_at = lab.daemon.snapshot("psb1/1").unwrap().samples;

    tokio::time::timeout(WAIT, lab.daemon.wait_all_done())
        .await
        .expect("both tests end");
    let (summary, dir, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);
    let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
    let test = hub.test(faulty).unwrap().unwrap();
    assert_eq!(test.outcome.as_deref(), Some("finished"), "{test:?}");

    // Where the faults are in what was stored: the run of one voltage under current around the
    // sticking, and the run of charging current in the first discharge.
    let samples = hub.samples(faulty).unwrap();
    let at = |seq: u64| samples.iter().position(|s| s.seq == seq).unwrap();
    let stuck_v = samples[at(stuck_at + 1)].voltage_v;
    let stuck = longest_run(&samples, |i| {
        samples[i].voltage_v == stuck_v && samples[i].current_a.abs() > 0.01
    });
    let first_discharge = samples[at(inverted_at)].step;
    let inverted = longest_run(&samples, |i| {
        samples[i].step == first_discharge && samples[i].current_a > 0.0
    });
    // They are where the faults were injected (a poll or two may pass between a snapshot and
    // the injection; a stuck run begins with the first sample of its value).
    assert!(
        stuck.0 <= stuck_at + 2 && stuck.1 + 1 >= freed_at,
        "{stuck:?}"
    );
    assert!(stuck.1 <= freed_at + 2, "{stuck:?} freed at {freed_at}");
    assert!(
        inverted.0 >= inverted_at && inverted.0 <= inverted_at + 2,
        "{inverted:?} inverted at {inverted_at}"
    );
    assert!(
        inverted.1 + 1 >= righted_at && inverted.1 <= righted_at + 2,
        "{inverted:?} righted at {righted_at}"
    );

    // Daemon and hub each found both, at exactly those samples, and nothing outside them.
    let findings = hub.quality_findings(faulty).unwrap();
    for source in ["daemon", "hub"] {
        let of = |check: &str| -> Vec<(u64, u64)> {
            findings
                .iter()
                .filter(|f| f.source == source && f.check == check)
                .map(|f| (f.first_seq, f.last_seq))
                .collect()
        };
        assert_eq!(of("voltage_stuck"), [stuck], "{source}: {findings:#?}");
        assert_eq!(of("current_sign"), [inverted], "{source}: {findings:#?}");
    }
    // Other findings are the faults' consequences, within them: the capacity accounting that
    // integrated an inverted reading (up to the first righted sample, whose interval began
    // with one).
    for f in &findings {
        let inside = |(a, b): (u64, u64)| f.first_seq >= a && f.last_seq <= b;
        assert!(!f.open, "{f:?}");
        assert!(
            inside(stuck) || inside((inverted.0, inverted.1 + 1)),
            "a finding outside the faults: {f:?}"
        );
    }
    assert!(hub.quality_findings(clean).unwrap().is_empty());
    let (bad, good) = (
        test.grade.unwrap(),
        hub.test(clean).unwrap().unwrap().grade.unwrap(),
    );
    assert_eq!((good.letter, good.score), ('A', 100), "{good:?}");
    assert!(bad.score < good.score, "{bad:?}");
}

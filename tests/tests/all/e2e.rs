//! End to end: simulated EA PSB supplies (real Modbus TCP on loopback) -> daemon (engine,
//! stepped runners, SQLite outbox, uploader) -> real gRPC -> hub (SQLite), on a scaled clock.

use cyclerd_cli::lab::SimLab;
use cyclerhub::HubStore;
use std::collections::HashMap;
use std::time::Duration;

const CCCV: &str = include_str!("../../../deploy/protocols/cccv-3-cycles.yaml");
const SPEED: f64 = 2000.0;
const CHANNELS: usize = 4;

/// The protocol's steps, by description (as the engine names them).
const CC_CHARGE: &str = "Charge at C/2 until 4.2 V";
const CV_HOLD: &str = "Hold at 4.2 V until C/20";
const DISCHARGE: &str = "Discharge at 1C until 3.0 V";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_channels_cycle_cccv_and_every_sample_reaches_the_hub_exactly_once() {
    let lab = SimLab::start(CHANNELS, 2.5, SPEED, None).await.unwrap();
    let tests = lab
        .start_everywhere(CCCV, "deploy/protocols/cccv-3-cycles.yaml")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(600), lab.daemon.wait_all_done())
        .await
        .expect("the protocols finish");
    let finished: Vec<_> = lab
        .daemon
        .snapshots()
        .into_iter()
        .map(|s| (s.state, s.reason))
        .collect();
    let (summary, data_dir, _keep) = lab.stop(Duration::from_secs(60)).await.unwrap();
    for (state, reason) in &finished {
        assert_eq!(state, "finished", "a channel did not finish: {reason}");
    }
    assert_eq!(summary.lost(), 0, "{summary:?}");
    assert!(summary.samples_acquired > 0);

    let hub = HubStore::open(data_dir.join("hub.sqlite")).unwrap();
    let mut total = 0;
    for test_id in &tests {
        let row = hub
            .test(test_id)
            .unwrap()
            .expect("the hub knows every test");
        assert_eq!(row.outcome.as_deref(), Some("finished"));
        let samples = hub.samples(test_id).unwrap();
        // Exactly once, contiguous from 0.
        assert_eq!(Some(samples.len() as u64), row.expected_samples);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(
                s.seq, i as u64,
                "sequence numbers of {test_id} are contiguous"
            );
        }
        total += samples.len() as u64;

        let steps: HashMap<u32, String> = hub
            .events(test_id)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "step")
            .map(|e| (e.step, e.message))
            .collect();
        assert_eq!(
            samples.iter().map(|s| s.cycle).max(),
            Some(3),
            "three cycles"
        );
        check_cutoffs(test_id, &samples, &steps);

        let mut csv = Vec::new();
        cyclerhub::export::write_bdf_csv(&hub, test_id, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("Test Time / s,Voltage / V,Current / A")
        );
        let rows: Vec<&str> = lines.collect();
        assert_eq!(
            rows.len(),
            samples.len(),
            "BDF export has one row per sample"
        );
        // Every step is typed, from the plan step it ran: the demo charges and discharges.
        let types: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.split(',').nth(6).unwrap()).collect();
        assert!(
            types.contains("CC_DCH") && types.iter().any(|t| t.ends_with("_CHG")),
            "{types:?}"
        );
    }
    assert_eq!(
        total, summary.samples_acquired,
        "the hub holds every acquired sample"
    );
}

/// Groups samples by step and checks where each step ended.
fn check_cutoffs(test_id: &str, samples: &[cyclerhub::SampleRow], steps: &HashMap<u32, String>) {
    let mut i = 0;
    let mut seen = HashMap::<&str, usize>::new();
    while i < samples.len() {
        let step = samples[i].step;
        let end = samples[i..]
            .iter()
            .position(|s| s.step != step)
            .map_or(samples.len(), |n| i + n);
        let run = &samples[i..end];
        let description = steps.get(&step).map(String::as_str).unwrap_or("?");
        let last = run.last().unwrap();
        let before_last = &run[..run.len() - 1];
        match description {
            CC_CHARGE => {
                // Terminates on the first poll at or above 4.2 V, and overshoots by no more
                // than that poll's own rise.
                assert!(
                    last.voltage_v >= 4.2,
                    "{test_id} step {step}: CC ended below 4.2 V"
                );
                let prev = before_last.last().map_or(last.voltage_v, |s| s.voltage_v);
                assert!(
                    before_last.iter().all(|s| s.voltage_v < 4.2),
                    "{test_id} step {step}: CC passed 4.2 V without ending"
                );
                assert!(last.voltage_v - 4.2 <= (last.voltage_v - prev).max(0.0) + 1e-9);
                assert!(run.iter().all(|s| s.current_a >= 0.0));
            }
            CV_HOLD => {
                assert!(
                    last.current_a.abs() <= 0.125 + 1e-9,
                    "{test_id} step {step}: CV ended at {} A",
                    last.current_a
                );
                assert!(
                    before_last
                        .iter()
                        .skip(1)
                        .all(|s| s.current_a.abs() > 0.125)
                );
            }
            DISCHARGE => {
                assert!(
                    last.voltage_v <= 3.0,
                    "{test_id} step {step}: discharge ended at {} V",
                    last.voltage_v
                );
                assert!(before_last.iter().all(|s| s.voltage_v > 3.0));
                assert!(run.iter().skip(1).all(|s| s.current_a < 0.0));
            }
            other => panic!("{test_id}: unexpected step {other:?}"),
        }
        *seen.entry(description).or_default() += 1;
        i = end;
    }
    for d in [CC_CHARGE, CV_HOLD, DISCHARGE] {
        assert_eq!(seen.get(d), Some(&3), "{test_id}: {d} ran three times");
    }
}

/// The same data path over the other stepped families: SCPI over TCP and a Riden over Modbus
/// RTU on a pseudo-terminal (charge-only, so it gets a charge-only protocol and refuses one
/// that discharges).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scpi_and_riden_channels_carry_every_sample_to_the_hub() {
    use cyclerd_cli::lab::{DEMO_CHARGE_PROTOCOL, DemoDevice, LabOptions};
    for device in [DemoDevice::Scpi, DemoDevice::Riden] {
        let lab = SimLab::start_with(LabOptions {
            channels: 2,
            speed: 2000.0,
            device,
            ..LabOptions::default()
        })
        .await
        .unwrap();
        if device == DemoDevice::Riden {
            let refused = lab.start_everywhere(CCCV, "cccv.yaml").await.unwrap_err();
            assert!(refused.to_string().contains("charge-only"), "{refused}");
        }
        let tests = lab
            .start_everywhere(DEMO_CHARGE_PROTOCOL, "demo-charge.yaml")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(300), lab.daemon.wait_all_done())
            .await
            .expect("the protocols finish");
        let states: Vec<String> = lab
            .daemon
            .snapshots()
            .into_iter()
            .map(|s| s.state)
            .collect();
        let (summary, dir, _keep) = lab.stop(Duration::from_secs(60)).await.unwrap();
        assert_eq!(states, ["finished", "finished"], "{device:?}");
        assert_eq!(summary.lost(), 0);
        let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
        for test_id in &tests {
            let samples = hub.samples(test_id).unwrap();
            assert!(samples.iter().enumerate().all(|(i, s)| s.seq == i as u64));
            assert_eq!(
                Some(samples.len() as u64),
                hub.test(test_id).unwrap().unwrap().expected_samples
            );
            // The CC phase ended at the cutoff and the hold tapered to C/20.
            assert!(
                samples.iter().any(|s| s.voltage_v >= 4.19),
                "{device:?} reached 4.2 V"
            );
        }
    }
}

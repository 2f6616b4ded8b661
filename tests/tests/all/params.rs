//! Parameters per start: C-rates resolve against the cell's nominal capacity (its metadata), or
//! a capacity given at start, rather than the protocol file's; the start says which it used,
//! and a test resumed after a restart keeps them.

use super::harness::WAIT;
use cyclerd_cli::lab::{LabOptions, SimLab};
use cyclerhub::HubStore;
use std::collections::BTreeMap;

const PROTOCOL: &str = r#"
protocol: Half-C charge
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 5 A
steps:
  - "Charge at C/2 for 10 minutes"
"#;

/// Waits until channel `k` of `lab` has at least `n` samples.
async fn samples_at_least(lab: &SimLab, k: usize, n: u64) {
    let mut live = lab.daemon.watchers().remove(k);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples >= n))
        .await
        .expect("the test records samples")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_rates_use_the_cells_nominal_capacity_or_the_one_given_at_start_also_after_a_restart() {
    let mut lab = SimLab::start_with(LabOptions {
        channels: 2,
        capacity_ah: 5.0,
        speed: 200.0,
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let by_cell = lab
        .start_on_with(0, PROTOCOL, "half-c.yaml", &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(
        by_cell.notes,
        [
            "C-rates use 5 Ah (the cell's nominal_capacity_ah), not the protocol's capacity of 2.5 Ah"
        ]
    );
    let given = BTreeMap::from([("capacity".to_string(), "4 Ah".to_string())]);
    let by_start = lab
        .start_on_with(1, PROTOCOL, "half-c.yaml", &given)
        .await
        .unwrap();
    assert_eq!(
        by_start.notes,
        ["C-rates use 4 Ah (given at start), not the protocol's capacity of 2.5 Ah"]
    );

    // Both tests are interrupted by a restart and resume from their checkpoints.
    samples_at_least(&lab, 0, 20).await;
    samples_at_least(&lab, 1, 20).await;
    lab.restart_daemon(WAIT).await.unwrap();
    for mut live in lab.daemon.watchers() {
        tokio::time::timeout(WAIT, live.wait_for(|s| s.state == "finished"))
            .await
            .expect("the resumed test finishes")
            .unwrap();
    }
    let (summary, dir, _keep) = lab.stop(WAIT).await.unwrap();
    assert_eq!(summary.lost(), 0);

    let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
    for (started, amps) in [(&by_cell, 2.5), (&by_start, 2.0)] {
        let test = &started.test_id;
        let events = hub.events(test).unwrap();
        assert!(
            events.iter().any(|e| e.kind == "interruption"),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| e.message == started.notes[0]),
            "the note is an event of the test: {events:?}"
        );
        let charging: Vec<f64> = hub
            .samples(test)
            .unwrap()
            .iter()
            .map(|s| s.current_a)
            .filter(|i| *i > 0.1)
            .collect();
        assert!(charging.len() > 20, "{charging:?}");
        assert!(
            charging.iter().all(|i| (i - amps).abs() < 0.02 * amps),
            "C/2 is {amps} A before and after the restart: {charging:?}"
        );
    }
}

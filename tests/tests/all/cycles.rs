//! Per-cycle results: the daemon turns every test's samples into cycle rows as they are taken,
//! the same way for a channel it steps and for a cycler that runs the test itself, and the hub
//! keeps them.

use super::harness::WAIT;
use cyclerd_cli::lab::DemoDevice;
use cyclerhub::HubStore;

const PROTOCOL: &str = r#"
protocol: Three cycles
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Rest for 1 minute"
  - repeat: 3
    cycle: true
    steps:
      - "Charge at 2C until 4.1 V"
      - "Rest for 2 minutes"
      - "Discharge at 2C until 3.3 V"
      - "Rest for 2 minutes"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cycle_of_a_stepped_or_native_test_reaches_the_hub_as_a_row_that_adds_up() {
    for device in [DemoDevice::EaPsb, DemoDevice::Neware] {
        let (lab, test) = super::harness::ran_to_end(device, PROTOCOL, "three.yaml").await;
        let (summary, dir, _keep) = lab.stop(WAIT).await.unwrap();
        assert_eq!(summary.lost(), 0);
        let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
        let rows = hub.cycles(&test).unwrap();
        let samples = hub.samples(&test).unwrap();
        let last = samples.last().unwrap();

        assert!(rows.iter().all(|r| r.complete), "{device:?}: {rows:#?}");
        let full: Vec<_> = rows.iter().filter(|r| r.is_full()).collect();
        assert!(full.len() >= 3, "{device:?}: {rows:#?}");
        let charged: f64 = rows.iter().map(|r| r.charge_capacity_ah).sum();
        let discharged: f64 = rows.iter().map(|r| r.discharge_capacity_ah).sum();
        assert!(
            (charged - last.charge_capacity_ah).abs() < 1e-6,
            "{device:?}: cycles {charged} Ah, test {}",
            last.charge_capacity_ah
        );
        assert!((discharged - last.discharge_capacity_ah).abs() < 1e-6);
        // The cell starts half charged, so the first cycle's charge is short of its discharge;
        // from the second on a cycle starts where the last one ended.
        for r in &full[1..] {
            let ce = r.coulombic_efficiency().unwrap();
            assert!((0.9..1.05).contains(&ce), "{device:?}: {r:?}");
            assert!(r.mean_charge_voltage_v().unwrap() > r.mean_discharge_voltage_v().unwrap());
            assert!(r.duration_s() > 0.0);
        }
        // Rows follow the samples' cycle numbers.
        let mut numbers: Vec<u32> = samples.iter().map(|s| s.cycle).collect();
        numbers.dedup();
        assert_eq!(
            rows.iter().map(|r| r.cycle).collect::<Vec<_>>(),
            numbers,
            "{device:?}"
        );
    }
}

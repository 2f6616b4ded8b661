//! Outputs watched every poll: a change of a stepped channel's output or setpoints that the
//! daemon did not make (another client on the device) faults the test, with an event naming
//! what changed, and leaves the output off.

use super::harness::WAIT;
use cyclerd_cli::lab::{DemoDevice, LabOptions, SimLab};
use cyclerhub::HubStore;
use std::time::Duration;

/// A charge, then a long rest during which the foreign write comes.
const CHARGE_THEN_REST: &str = r#"
protocol: Foreign write test
version: 1
params:
  capacity: 2.5 Ah
safety:
  voltage: [2.5 V, 4.25 V]
  current: 7 A
steps:
  - "Charge at 1 A for 1 minute"
  - "Rest for 5 minutes"
  - "Rest for 5 minutes"
"#;

const REST: &str = "Rest for 5 minutes";

async fn lab(device: DemoDevice) -> SimLab {
    SimLab::start_with(LabOptions {
        channels: 1,
        speed: 20.0,
        device,
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

/// Starts the protocol and waits until the channel rests (the rest applied: two polls into
/// it, since the step shows before its setpoints are written).
async fn resting(lab: &SimLab) -> String {
    let test = lab
        .start_everywhere(CHARGE_THEN_REST, "foreign.yaml")
        .await
        .unwrap()
        .remove(0);
    let mut live = lab.daemon.watchers().remove(0);
    let samples = tokio::time::timeout(WAIT, live.wait_for(|s| s.step_description == REST))
        .await
        .expect("the rest begins")
        .unwrap()
        .samples;
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples >= samples + 2))
        .await
        .expect("the rest goes on")
        .unwrap();
    test
}

/// Waits for the fault; returns the test's events from the hub after the lab stopped.
async fn faulted(lab: SimLab, test: &str) -> Vec<String> {
    let mut live = lab.daemon.watchers().remove(0);
    let snap = tokio::time::timeout(WAIT, live.wait_for(|s| s.state != "running"))
        .await
        .expect("the test ends")
        .unwrap()
        .clone();
    assert_eq!(snap.state, "faulted", "{snap:?}");
    let (_, dir, _keep) = lab.stop(Duration::from_secs(60)).await.unwrap();
    let hub = HubStore::open(dir.join("hub.sqlite")).unwrap();
    hub.events(test)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

fn assert_named(events: &[String], what: &str) {
    assert!(
        events.iter().any(|m| m.contains(what)),
        "an event names {what:?}: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_switched_on_by_another_client_during_rest_faults_the_test_and_switches_it_off() {
    use cyclerd_drivers::ea_psb::wire::coil;
    use tokio_modbus::Request;
    let lab = lab(DemoDevice::EaPsb).await;
    let test = resting(&lab).await;
    let sim = &lab.sims[0];
    assert_eq!(sim.setpoints(), [0; 5], "a resting PSB holds no setpoints");
    sim.request_from_another_client(Request::WriteSingleCoil(coil::OUTPUT, true))
        .unwrap();
    let events = faulted_keeping(&lab, &test).await;
    assert!(!lab.sims[0].snapshot().output_on, "the output is off again");
    let events = events.finish(lab).await;
    assert_named(&events, "the output was switched on by another client");
    assert_named(&events, REST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psb_setpoint_changed_by_another_client_during_rest_faults_the_test_naming_it() {
    use cyclerd_drivers::ea_psb::wire::{self, reg};
    use tokio_modbus::Request;
    let lab = lab(DemoDevice::EaPsb).await;
    let test = resting(&lab).await;
    // 1 A of the 60 A nominal, as the incident's foreign write left loaded.
    let one_amp = wire::to_raw(1.0, 60.0, wire::Round::Nearest);
    lab.sims[0]
        .request_from_another_client(Request::WriteSingleRegister(reg::SET_CURRENT, one_amp))
        .unwrap();
    let events = faulted_keeping(&lab, &test).await;
    assert!(!lab.sims[0].snapshot().output_on);
    let events = events.finish(lab).await;
    assert_named(&events, "the setpoints were changed by another client");
    assert_named(&events, "current setpoint 0.000 A -> 1.000 A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_scpi_output_switched_on_by_another_client_during_rest_faults_the_test_and_switches_it_off()
 {
    use cyclerd_drivers::scpi::SimHandle;
    use cyclerd_drivers::scpi::wire::parse_number;
    let lab = lab(DemoDevice::Scpi).await;
    let test = resting(&lab).await;
    let sim = lab.sim::<SimHandle>(0).expect("the SCPI simulator");
    for query in ["CURR?", "SINK:CURR?", "VOLT?"] {
        let held = sim.line_from_another_client(query).unwrap_or_default();
        assert_eq!(parse_number(&held), Some(0.0), "{query} at rest: {held}");
    }
    sim.line_from_another_client("OUTP ON");
    let events = faulted_keeping(&lab, &test).await;
    assert!(!lab.sim::<SimHandle>(0).unwrap().snapshot().output_on);
    let events = events.finish(lab).await;
    assert_named(&events, "the output was switched on by another client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_scpi_setpoint_changed_by_another_client_during_rest_faults_the_test_naming_it() {
    use cyclerd_drivers::scpi::SimHandle;
    let lab = lab(DemoDevice::Scpi).await;
    let test = resting(&lab).await;
    let sim = lab.sim::<SimHandle>(0).expect("the SCPI simulator");
    sim.line_from_another_client("CURR 1");
    let events = faulted(lab, &test).await;
    assert_named(&events, "current setpoint");
    assert_named(&events, REST);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_riden_output_switched_on_by_another_client_during_rest_faults_the_test_and_switches_it_off()
 {
    use cyclerd_drivers::riden::{SimHandle, wire::reg};
    use tokio_modbus::Request;
    let lab = lab(DemoDevice::Riden).await;
    let test = resting(&lab).await;
    let sim = lab.sim::<SimHandle>(0).expect("the Riden simulator");
    assert_eq!(
        sim.setpoints(),
        (0, 0),
        "a resting Riden holds no setpoints"
    );
    sim.request_from_another_client(Request::WriteSingleRegister(reg::OUTPUT, 1))
        .unwrap();
    let events = faulted_keeping(&lab, &test).await;
    assert!(!lab.sim::<SimHandle>(0).unwrap().snapshot().output_on);
    let events = events.finish(lab).await;
    assert_named(&events, "the output was switched on by another client");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_riden_voltage_setpoint_changed_by_another_client_faults_the_test_naming_it() {
    use cyclerd_drivers::riden::{SimHandle, wire::reg};
    use tokio_modbus::Request;
    let lab = lab(DemoDevice::Riden).await;
    let test = resting(&lab).await;
    let sim = lab.sim::<SimHandle>(0).expect("the Riden simulator");
    // 5.00 V on an RD6006 (0.01 V per count).
    sim.request_from_another_client(Request::WriteSingleRegister(reg::SET_VOLTAGE, 500))
        .unwrap();
    let events = faulted_keeping(&lab, &test).await;
    let events = events.finish(lab).await;
    assert_named(&events, "voltage setpoint 0.000 V -> 5.000 V");
}

/// The fault seen on the live channel; the hub's events are read once the lab stopped.
struct Faulted(String);

impl Faulted {
    async fn finish(self, lab: SimLab) -> Vec<String> {
        faulted(lab, &self.0).await
    }
}

async fn faulted_keeping(lab: &SimLab, test: &str) -> Faulted {
    let mut live = lab.daemon.watchers().remove(0);
    tokio::time::timeout(WAIT, live.wait_for(|s| s.state != "running"))
        .await
        .expect("the test ends")
        .unwrap();
    Faulted(test.to_string())
}

/// A Maccor channel in direct mode (stepped by the daemon) that another MacNet client sets to
/// charge during a rest: the daemon's next poll sees it, faults the test and rests the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maccor_direct_output_set_to_charge_by_another_client_during_rest_faults_the_test() {
    use cyclerd_drivers::Clock;
    use cyclerd_drivers::maccor::wire;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let mut hub = super::harness::Hub::start(&dir.path().join("hub.sqlite")).await;
    let clock = Clock::scaled(20.0);
    let (sim, daemon) = super::harness::maccor_direct(dir.path(), hub.addr, &clock, None).await;
    let test = daemon
        .start_test(
            "mdirect/2",
            CHARGE_THEN_REST,
            "foreign.yaml",
            super::harness::metadata("direct"),
        )
        .await
        .unwrap();
    let mut live = daemon.watchers().remove(0);
    let samples = tokio::time::timeout(WAIT, live.wait_for(|s| s.step_description == REST))
        .await
        .expect("the rest begins")
        .unwrap()
        .samples;
    tokio::time::timeout(WAIT, live.wait_for(|s| s.samples >= samples + 2))
        .await
        .expect("the rest goes on")
        .unwrap();

    // Another client on the tester's binary port: (6,8) charge at 1 A on the same channel
    // (MacNet counts channels from 0).
    let charge = wire::Output {
        current_a: 1.0,
        voltage_v: 4.2,
        power_w: wire::IGNORE,
        resistance_ohm: 0.0,
        range: 4,
        mode: wire::Mode::Charge,
    };
    let mut other = tokio::net::TcpStream::connect(sim.binary_addr())
        .await
        .unwrap();
    let mut taken = false;
    for _ in 0..20 {
        other.write_all(&charge.to_frame(1).encode()).await.unwrap();
        let mut buf = Vec::new();
        let reply = loop {
            if let Some((frame, _)) = wire::split_frame(&buf, wire::Direction::Reply) {
                break frame;
            }
            let mut chunk = [0u8; 64];
            let n = other.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the tester answers the other client");
            buf.extend_from_slice(&chunk[..n]);
        };
        match wire::decode_result(&reply).unwrap() {
            wire::direct_result::OK => {
                taken = true;
                break;
            }
            // The daemon's own output was less than 100 ms ago (tester time): the spacing
            // the tester asks of every client.
            wire::direct_result::TOO_FAST => clock.sleep(0.15).await,
            other => panic!("the tester refused the other client's output: {other}"),
        }
    }
    assert!(taken, "the tester took the other client's output");

    let snap = tokio::time::timeout(WAIT, live.wait_for(|s| s.state != "running"))
        .await
        .expect("the test ends")
        .unwrap()
        .clone();
    assert_eq!(snap.state, "faulted", "{snap:?}");
    assert!(
        snap.reason.contains("another client"),
        "the fault says what happened: {snap:?}"
    );
    let summary = daemon.shutdown(WAIT).await;
    assert_eq!(summary.lost(), 0);
    let channel = sim.snapshot(1);
    assert!(
        !matches!(channel.rf1, wire::rf1::CHARGE | wire::rf1::DISCHARGE),
        "the channel rests again: {channel:?}"
    );
    hub.stop().await;
    let events: Vec<String> = HubStore::open(dir.path().join("hub.sqlite"))
        .unwrap()
        .events(&test)
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert_named(&events, "the output was switched on by another client");
}

//! The Riden driver against the Riden simulator, through a real pseudo-terminal.

use super::{TIMEOUT, cell, within};
use cyclerd_drivers::Clock;
use cyclerd_drivers::DriverError;
use cyclerd_drivers::riden::sim::SimConfig;
use cyclerd_drivers::riden::{RidenClient, RidenSim, SimHandle, wire};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_drivers::transport::pty::Pty;
use cyclerd_protocols::Command;
use std::time::Duration;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer, rtu};
use tokio_modbus::slave::Slave;

/// For tests that wait for a silent device: short, so the test is quick.
const SHORT: Duration = Duration::from_millis(300);

fn sim(clock: &Clock, model: u16, soc: f64) -> SimHandle {
    RidenSim::spawn(
        Pty::open().unwrap(),
        SimConfig::rd60xx(model, 4242, cell(soc)),
        clock.clone(),
    )
    .unwrap()
}

async fn connect(sim: &SimHandle, timeout: Duration) -> RidenClient {
    within(
        "connecting",
        RidenClient::connect(sim.path(), 1, timeout, None),
    )
    .await
    .unwrap()
}

fn charge(amps: f64) -> Command {
    Command::Current {
        amps,
        voltage_max: 4.2,
        voltage_min: 2.5,
    }
}

#[tokio::test]
async fn identification_picks_the_models_scaling() {
    let clock = Clock::manual();
    for (number, per_a) in [(6006, 1000.0), (6012, 100.0), (6018, 100.0)] {
        let sim = sim(&clock, number, 0.5);
        let mut client = connect(&sim, TIMEOUT).await;
        assert_eq!(client.model().number, number);
        assert_eq!(client.model().current_per_a, per_a);
        assert_eq!(client.identity().serial, 4242);
        assert!(sim.snapshot().keypad_locked, "the keypad is locked");
        within("charging", client.apply(&charge(1.234)))
            .await
            .unwrap();
        let r = within("reading", client.read()).await.unwrap();
        let step = 1.0 / per_a;
        assert!(
            (r.current_a - 1.234).abs() <= step + 1e-9,
            "RD{number}: {r:?}"
        );
        assert!((r.current_a - sim.snapshot().current_a).abs() <= step);
    }
}

#[tokio::test]
async fn a_cccv_charge_crosses_over_at_the_voltage_setpoint() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6012, 0.5);
    let mut client = connect(&sim, TIMEOUT).await;
    client
        .apply(&Command::Current {
            amps: 2.5,
            voltage_max: 4.1,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on);
    assert!((r.current_a - 2.5).abs() < 0.011, "CC phase: {r:?}");
    assert!(r.voltage_v < 4.1, "{r:?}");
    assert!(client.status().await.unwrap().constant_current);
    // Half an hour later the supply holds the setpoint with a tapering current.
    clock.advance(1800.0);
    let r = client.read().await.unwrap();
    assert!((r.voltage_v - 4.1).abs() < 0.011, "CV phase: {r:?}");
    assert!(r.current_a > 0.01 && r.current_a < 2.4, "tapers: {r:?}");
    assert!(!client.status().await.unwrap().constant_current);
    // A cell above the setpoint is not discharged: the supply cannot sink.
    client
        .apply(&Command::Voltage {
            volts: 3.5,
            current_max: 2.5,
        })
        .await
        .unwrap();
    assert_eq!(client.read().await.unwrap().current_a, 0.0);
    assert_eq!(sim.snapshot().current_a, 0.0);
}

#[tokio::test]
async fn a_discharge_command_is_refused_as_charge_only() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6006, 0.8);
    let mut client = connect(&sim, TIMEOUT).await;
    assert!(!client.capabilities().can_discharge);
    let before = sim.snapshot().transactions;
    for command in [
        charge(-1.0),
        Command::Power {
            watts: -3.0,
            voltage_max: 4.2,
            voltage_min: 2.5,
        },
    ] {
        let err = client.apply(&command).await.unwrap_err();
        assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("charge-only"), "{err}");
        assert!(!err.is_link_lost());
    }
    assert_eq!(sim.snapshot().transactions, before, "nothing was written");
    assert!(!sim.snapshot().output_on);
}

#[tokio::test]
async fn out_of_range_setpoints_are_refused_with_an_exception() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6006, 0.5);
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(
        sim.path().to_string_lossy(),
        wire::BAUD_RATE,
    ))
    .unwrap();
    let mut raw = rtu::attach_slave(port, Slave(1));
    let too_much = within(
        "writing",
        raw.write_single_register(wire::reg::SET_CURRENT, 6001),
    )
    .await
    .unwrap();
    assert_eq!(too_much, Err(ExceptionCode::IllegalDataValue));
    let read_only = within(
        "writing",
        raw.write_single_register(wire::reg::OUT_VOLTAGE, 1),
    )
    .await
    .unwrap();
    assert_eq!(read_only, Err(ExceptionCode::IllegalDataAddress));
    let id = within(
        "reading",
        raw.read_holding_registers(wire::reg::MODEL_ID, 1),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(id, vec![60062]);
}

#[tokio::test]
async fn output_off_stops_the_current_and_a_protection_trip_is_an_alarm() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6018, 0.5);
    let mut client = connect(&sim, TIMEOUT).await;
    client.apply(&charge(1.0)).await.unwrap();
    client.output_off().await.unwrap();
    let r = client.read().await.unwrap();
    assert!(!r.output_on && !r.alarm, "{r:?}");
    assert_eq!(r.current_a, 0.0);
    assert_eq!(r.temperature_c, Some(25.0));
    client.apply(&charge(1.0)).await.unwrap();
    sim.set_alarm(true);
    let r = client.read().await.unwrap();
    assert!(r.alarm && !r.output_on, "{r:?}");
}

#[tokio::test]
async fn a_cut_link_is_a_lost_link_and_reconnect_works_after_restore() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6012, 0.5);
    let mut client = connect(&sim, SHORT).await;
    client.apply(&charge(2.5)).await.unwrap();
    let soc_before = sim.snapshot().soc;

    sim.cut_link();
    let err = within("a read on a cut link", client.read())
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    assert!(err.is_link_lost());
    let err = within("reconnecting to a cut link", client.reconnect())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");

    // The supply keeps charging while it is off the line.
    clock.advance(600.0);
    let during = sim.snapshot();
    assert!(during.output_on);
    let expected = 2.5 * 600.0 / 3600.0 / sim.capacity_ah();
    assert!((during.soc - soc_before - expected).abs() < 0.01);

    sim.restore_link();
    within("reconnecting after the restore", client.reconnect())
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on, "{r:?}");
    assert!((r.current_a - 2.5).abs() < 0.011, "{r:?}");
}

#[tokio::test]
async fn delayed_replies_time_out_as_lost_links() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6012, 0.5);
    let mut client = connect(&sim, SHORT).await;
    sim.set_reply_delay(Duration::from_secs(30));
    let err = within("a delayed read", client.read()).await.unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    sim.set_reply_delay(Duration::ZERO);
    within("reconnecting", client.reconnect()).await.unwrap();
    client.read().await.unwrap();
}

#[tokio::test]
async fn a_reply_with_a_broken_crc_is_discarded_and_the_link_recovers() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6012, 0.5);
    let mut client = connect(&sim, SHORT).await;
    sim.corrupt_next(1);
    let err = within("a corrupted read", client.read()).await.unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    within("reconnecting", client.reconnect()).await.unwrap();
    client.read().await.unwrap();
}

#[tokio::test]
async fn an_injected_exception_is_reported_and_the_link_survives() {
    let clock = Clock::manual();
    let sim = sim(&clock, 6006, 0.5);
    let mut client = connect(&sim, TIMEOUT).await;
    sim.fail_next(2, ExceptionCode::ServerDeviceBusy);
    for _ in 0..2 {
        let err = within("a failing read", client.read()).await.unwrap_err();
        assert!(
            matches!(&err, DriverError::Exception { code, .. } if code.contains("ServerDeviceBusy")),
            "{err}"
        );
        assert!(!err.is_link_lost());
    }
    let r = within("a read", client.read()).await.unwrap();
    assert!(!r.output_on && !r.alarm, "{r:?}");
}

#[tokio::test]
async fn a_missing_port_is_a_port_error_naming_the_path() {
    let err = RidenClient::connect("/dev/nonexistent-riden", 1, TIMEOUT, None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DriverError::Port { .. }), "{err}");
    assert!(err.to_string().contains("/dev/nonexistent-riden"));
    assert!(err.is_link_lost());
}

//! The PSB driver against the PSB simulator, through a real Modbus TCP socket on loopback.

use super::{TIMEOUT, cell, within};
use cyclerd_drivers::Clock;
use cyclerd_drivers::DriverError;
use cyclerd_drivers::ea_psb::sim::SimConfig;
use cyclerd_drivers::ea_psb::{PsbClient, PsbSim, SimHandle, wire};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_protocols::Command;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer, tcp};
use tokio_modbus::slave::Slave;

async fn sim(clock: &Clock, soc: f64) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    PsbSim::spawn(
        listener,
        SimConfig::psb_10060_60("T1", cell(soc)),
        clock.clone(),
    )
    .unwrap()
}

/// A simulated PSB with its cell at `soc`, and the driver connected to it as unit 1.
async fn connected(clock: &Clock, soc: f64) -> (SimHandle, PsbClient) {
    let sim = sim(clock, soc).await;
    let client = PsbClient::connect(sim.endpoint(), 1, TIMEOUT, None)
        .await
        .unwrap();
    (sim, client)
}

#[tokio::test]
async fn client_identifies_the_device_and_takes_remote_control() {
    let clock = Clock::real();
    let sim = sim(&clock, 0.5).await;
    let client = PsbClient::connect(sim.endpoint(), 1, TIMEOUT, None)
        .await
        .unwrap();
    assert_eq!(client.identity().device_type, "PSB 10060-60");
    assert_eq!(client.identity().serial, "T1");
    assert_eq!(client.nominal().voltage_v, 60.0);
    assert_eq!(client.nominal().current_a, 60.0);
    assert!(sim.snapshot().remote);
}

#[tokio::test]
async fn setpoint_writes_without_remote_control_are_refused() {
    let clock = Clock::real();
    let sim = sim(&clock, 0.5).await;
    let mut raw = tcp::connect_slave(sim.endpoint().tcp_addr().unwrap(), Slave(1))
        .await
        .unwrap();
    let reply = raw
        .write_multiple_registers(wire::reg::SET_VOLTAGE, &[1000])
        .await
        .unwrap();
    assert!(
        reply.is_err(),
        "a PSB in local mode refuses remote setpoints"
    );
    raw.write_single_coil(wire::coil::REMOTE, true)
        .await
        .unwrap()
        .unwrap();
    let too_high = raw
        .write_multiple_registers(wire::reg::SET_VOLTAGE, &[wire::MAX_SETPOINT + 1])
        .await
        .unwrap();
    assert!(too_high.is_err(), "setpoints above 102 % are refused");
    let unknown = raw.read_holding_registers(9999, 1).await.unwrap();
    assert!(
        unknown.is_err(),
        "unknown registers answer with an exception"
    );
}

#[tokio::test]
async fn charging_crosses_over_from_constant_current_to_constant_voltage() {
    let clock = Clock::manual();
    let (_sim, mut client) = connected(&clock, 0.5).await;
    client
        .apply(&Command::Voltage {
            volts: 4.1,
            current_max: 2.5,
        })
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on);
    assert!(
        (r.current_a - 2.5).abs() < 0.01,
        "CC phase at the current limit: {r:?}"
    );
    // Half an hour later the cell sits at the voltage setpoint with a tapering current.
    clock.advance(1800.0);
    let r = client.read().await.unwrap();
    assert!(
        (r.voltage_v - 4.1).abs() < 0.003,
        "CV phase holds the setpoint: {r:?}"
    );
    assert!(
        r.current_a > 0.01 && r.current_a < 2.4,
        "current tapers: {r:?}"
    );
}

#[tokio::test]
async fn discharge_current_reads_back_negative() {
    let clock = Clock::manual();
    let (sim, mut client) = connected(&clock, 0.8).await;
    client
        .apply(&Command::Current {
            amps: -1.25,
            voltage_max: 4.25,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    clock.advance(60.0);
    let r = client.read().await.unwrap();
    assert!((r.current_a + 1.25).abs() < 0.01, "{r:?}");
    assert!(sim.snapshot().current_a < 0.0);
}

#[tokio::test]
async fn output_off_stops_the_current_and_an_alarm_is_reported() {
    let clock = Clock::real();
    let (sim, mut client) = connected(&clock, 0.5).await;
    client
        .apply(&Command::Current {
            amps: 1.0,
            voltage_max: 4.2,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    client.output_off().await.unwrap();
    let r = client.read().await.unwrap();
    assert!(!r.output_on);
    assert_eq!(r.current_a, 0.0);
    sim.set_alarm(true);
    assert!(client.read().await.unwrap().alarm);
}

#[tokio::test]
async fn an_unreachable_device_is_a_connect_error_naming_the_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = PsbClient::connect(addr, 1, TIMEOUT, None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DriverError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()));
    assert!(err.is_link_lost());
}

#[tokio::test]
async fn a_cut_link_drops_connections_and_refuses_new_ones_until_restored() {
    let clock = Clock::manual();
    let (sim, mut client) = connected(&clock, 0.5).await;
    client
        .apply(&Command::Current {
            amps: 2.5,
            voltage_max: 4.2,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    let soc_before = sim.snapshot().soc;

    sim.cut_link();
    // Closed by the device, not merely unanswered: a link error, well before the timeout.
    let err = within("a read on a cut link", client.read())
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Link { .. }), "{err}");
    assert!(err.is_link_lost());
    let err = within("reconnecting to a cut link", client.reconnect())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");

    // The supply keeps charging while it is off the network.
    clock.advance(600.0);
    let during = sim.snapshot();
    assert!(during.output_on);
    let expected = 2.5 * 600.0 / 3600.0 / sim.capacity_ah();
    assert!(
        (during.soc - soc_before - expected).abs() < 0.01,
        "SOC went from {soc_before} to {} while cut",
        during.soc
    );

    sim.restore_link();
    within("reconnecting after the restore", client.reconnect())
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on, "{r:?}");
    assert!((r.current_a - 2.5).abs() < 0.01, "{r:?}");
    assert_eq!(sim.snapshot().soc, during.soc);
}

#[tokio::test]
async fn delayed_replies_time_out_as_lost_links() {
    let clock = Clock::manual();
    let sim = sim(&clock, 0.5).await;
    let timeout = Duration::from_millis(500);
    let mut client = PsbClient::connect(sim.endpoint(), 1, timeout, None)
        .await
        .unwrap();

    sim.set_reply_delay(Duration::from_secs(30));
    let err = within("a delayed read", client.read()).await.unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    assert!(err.is_link_lost());

    sim.set_reply_delay(Duration::ZERO);
    within("reconnecting", client.reconnect()).await.unwrap();
    client.read().await.unwrap();
}

#[tokio::test]
async fn injected_exceptions_are_reported_and_do_not_break_the_link() {
    let clock = Clock::manual();
    let (sim, mut client) = connected(&clock, 0.5).await;

    sim.fail_next(2, ExceptionCode::ServerDeviceBusy);
    for _ in 0..2 {
        let err = client.read().await.unwrap_err();
        assert!(
            matches!(&err, DriverError::Exception { code, .. } if code.contains("ServerDeviceBusy")),
            "{err}"
        );
        assert!(!err.is_link_lost());
    }
    let r = client.read().await.unwrap();
    assert!(!r.output_on && !r.alarm, "{r:?}");
}

#[tokio::test]
async fn a_poll_is_one_modbus_transaction_when_the_device_maps_the_whole_span() {
    let clock = Clock::manual();
    let (sim, mut client) = connected(&clock, 0.5).await;
    client
        .apply(&Command::Current {
            amps: 1.0,
            voltage_max: 4.2,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    clock.advance(1.0);
    let before = sim.snapshot().transactions;
    let r = client.read().await.unwrap();
    assert_eq!(sim.snapshot().transactions - before, 1);
    assert!(r.output_on, "{r:?}");
    let set = r.setpoints.unwrap();
    assert!((set.current_a.unwrap() - 1.0).abs() < 0.01, "{set:?}");
    assert!((set.voltage_v.unwrap() - 4.2).abs() < 0.01, "{set:?}");
}

#[tokio::test]
async fn firmware_that_does_not_map_503_and_504_is_read_in_two_blocks_with_the_same_values() {
    let clock = Clock::manual();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = PsbSim::spawn(
        listener,
        SimConfig {
            gap_mapped: false,
            ..SimConfig::psb_10060_60("T1", cell(0.5))
        },
        clock.clone(),
    )
    .unwrap();
    let mut client = PsbClient::connect(sim.endpoint(), 1, TIMEOUT, None)
        .await
        .unwrap();
    client
        .apply(&Command::Current {
            amps: -2.0,
            voltage_max: 4.2,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    for _ in 0..3 {
        clock.advance(1.0);
        let r = client.read().await.unwrap();
        assert!((r.current_a + 2.0).abs() < 0.01, "{r:?}");
        let sink = r.setpoints.unwrap().sink_current_a.unwrap();
        assert!((sink - 2.0).abs() < 0.01, "{r:?}");
    }
    let before = sim.snapshot().transactions;
    client.read().await.unwrap();
    assert_eq!(sim.snapshot().transactions - before, 2);
}

/// A PSB on its USB port, a virtual serial port speaking Modbus RTU.
#[cfg(unix)]
fn serial_sim(clock: &Clock, soc: f64) -> SimHandle {
    PsbSim::spawn_serial(
        cyclerd_drivers::transport::pty::Pty::open().unwrap(),
        SimConfig::psb_10060_60("U1", cell(soc)),
        clock.clone(),
    )
    .unwrap()
}

#[cfg(unix)]
#[tokio::test]
async fn over_modbus_rtu_the_psb_is_identified_and_crosses_over_to_constant_voltage() {
    let clock = Clock::manual();
    let sim = serial_sim(&clock, 0.5);
    let mut client = within(
        "connecting over RTU",
        PsbClient::connect(sim.endpoint(), 1, TIMEOUT, None),
    )
    .await
    .unwrap();
    assert_eq!(client.identity().serial, "U1");
    assert!(sim.snapshot().remote);
    within(
        "charging",
        client.apply(&Command::Voltage {
            volts: 4.1,
            current_max: 2.5,
        }),
    )
    .await
    .unwrap();
    let r = within("reading", client.read()).await.unwrap();
    assert!((r.current_a - 2.5).abs() < 0.01, "CC phase: {r:?}");
    clock.advance(1800.0);
    let r = within("reading", client.read()).await.unwrap();
    assert!((r.voltage_v - 4.1).abs() < 0.003, "CV phase: {r:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn over_modbus_rtu_a_pulled_cable_times_out_and_the_other_units_stay_silent() {
    let clock = Clock::manual();
    let sim = serial_sim(&clock, 0.5);
    let short = Duration::from_millis(300);
    let err = within(
        "connecting to another unit",
        PsbClient::connect(sim.endpoint(), 7, short, None),
    )
    .await
    .err()
    .expect("unit 7 is not on the line");
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");

    let mut client = within(
        "connecting",
        PsbClient::connect(sim.endpoint(), 1, short, None),
    )
    .await
    .unwrap();
    client.apply(&Command::Off).await.unwrap();
    sim.cut_link();
    let err = within("a read on a pulled cable", client.read())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    sim.restore_link();
    within("reconnecting", client.reconnect()).await.unwrap();
    within("reading", client.read()).await.unwrap();
}

#[tokio::test]
async fn setpoints_read_back_as_written_within_the_scaling_and_zero_at_rest() {
    let clock = Clock::real();
    let (sim, mut client) = connected(&clock, 0.5).await;
    // Values that do not fall on a register step.
    client
        .apply(&Command::Current {
            amps: 1.2345,
            voltage_max: 4.2031,
            voltage_min: 2.5,
        })
        .await
        .unwrap();
    let read = client.read().await.unwrap().setpoints.unwrap();
    assert_eq!(
        client.written().unwrap().changes(&read),
        Vec::<String>::new()
    );
    assert!((read.current_a.unwrap() - 1.2345).abs() < 60.0 / f64::from(wire::FULL_SCALE));
    client.apply(&Command::Off).await.unwrap();
    assert_eq!(sim.setpoints(), [0; 5], "nothing stays loaded at rest");
    let r = client.read().await.unwrap();
    assert!(!r.output_on);
    assert_eq!(
        client.written().unwrap().changes(&r.setpoints.unwrap()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_second_modbus_client_switching_the_output_and_a_setpoint_is_seen_in_the_reading() {
    let clock = Clock::real();
    let (sim, mut client) = connected(&clock, 0.5).await;
    client.apply(&Command::Off).await.unwrap();
    let mut other = tcp::connect_slave(sim.endpoint().tcp_addr().unwrap(), Slave(1))
        .await
        .unwrap();
    let one_amp = wire::to_raw(1.0, 60.0, wire::Round::Nearest);
    other
        .write_single_register(wire::reg::SET_CURRENT, one_amp)
        .await
        .unwrap()
        .unwrap();
    other
        .write_single_coil(wire::coil::OUTPUT, true)
        .await
        .unwrap()
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on, "the output the other client switched on");
    assert_eq!(
        client.written().unwrap().changes(&r.setpoints.unwrap()),
        ["current setpoint 0.000 A -> 1.000 A"]
    );
}

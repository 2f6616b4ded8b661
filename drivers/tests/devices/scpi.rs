//! The SCPI driver against the SCPI simulator, through real TCP sockets on loopback.

use super::{cell, within};
use cyclerd_drivers::Clock;
use cyclerd_drivers::DriverError;
use cyclerd_drivers::scpi::wire::{self, Role};
use cyclerd_drivers::scpi::{
    Dialect, LineTransport, PairStage, ScpiClient, ScpiOptions, ScpiSim, SimConfig, SimDialect,
    SimHandle,
};
use cyclerd_drivers::stage::PowerStage;
use cyclerd_protocols::Command;
use proptest::prelude::*;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn sim(dialect: SimDialect, clock: &Clock, soc: f64) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    ScpiSim::spawn(
        listener,
        SimConfig::new(dialect, "T1"),
        cell(soc),
        clock.clone(),
    )
    .unwrap()
}

async fn connect(sim: &SimHandle) -> ScpiClient {
    within(
        "connecting",
        ScpiClient::connect(sim.endpoint(), ScpiOptions::default()),
    )
    .await
    .unwrap()
}

fn charge(amps: f64, voltage_max: f64) -> Command {
    Command::Current {
        amps,
        voltage_max,
        voltage_min: 2.5,
    }
}

#[tokio::test]
async fn the_dialect_is_chosen_from_the_identity() {
    let clock = Clock::manual();
    let cases = [
        (SimDialect::EaPsb, Dialect::EaPsb, "PSB 10060-60", 60.0),
        (
            SimDialect::Keithley2450,
            Dialect::Keithley24xx,
            "MODEL 2450",
            200.0,
        ),
        (
            SimDialect::KeysightB2901,
            Dialect::KeysightB2900,
            "B2901A",
            210.0,
        ),
        (SimDialect::Bk8600, Dialect::Bk8600, "8600", 150.0),
        (
            SimDialect::ItechIt6000,
            Dialect::ItechIt6000,
            "IT6012C-80-300",
            80.0,
        ),
    ];
    for (sim_dialect, dialect, model, volts) in cases {
        let sim = sim(sim_dialect, &clock, 0.5).await;
        let client = connect(&sim).await;
        assert_eq!(client.dialect(), dialect);
        assert_eq!(client.identity().model, model);
        assert_eq!(client.identity().serial, "T1");
        assert_eq!(client.ratings().voltage_v, volts, "{dialect:?}");
        let role = if dialect == Dialect::Bk8600 {
            Role::SinkOnly
        } else {
            Role::Bidirectional
        };
        assert_eq!(client.role(), role);
    }
}

#[tokio::test]
async fn the_ea_supply_is_locked_for_remote_control_on_connect() {
    let clock = Clock::manual();
    let sim = sim(SimDialect::EaPsb, &clock, 0.5).await;
    assert!(!sim.snapshot().remote);
    let _client = connect(&sim).await;
    assert!(sim.snapshot().remote);
}

#[tokio::test]
async fn an_unlocked_ea_supply_refuses_setpoints_and_unknown_headers_into_the_error_queue() {
    let clock = Clock::manual();
    let sim = sim(SimDialect::EaPsb, &clock, 0.5).await;
    // The transport is generic over the stream: here a bare socket, later a serial port.
    let stream = TcpStream::connect(sim.endpoint().tcp_addr().unwrap())
        .await
        .unwrap();
    let mut link = LineTransport::new(stream, "\n", Duration::from_secs(2));
    let err = within(
        "an unlocked write",
        link.write_checked(&["VOLT 4".into()], "writing a setpoint"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, DriverError::Refused { message, .. } if message.contains("-203")),
        "{err}"
    );
    assert!(!err.is_link_lost());
    let errors = within("an unknown header", async {
        link.write("FROB 1", "sending nonsense").await.unwrap();
        link.drain_errors("reading the queue").await.unwrap()
    })
    .await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, -113);
    link.write_checked(&["SYST:LOCK ON".into(), "VOLT 4".into()], "locking")
        .await
        .unwrap();
    assert_eq!(link.query("VOLT?", "reading back").await.unwrap(), "4.00 V");
}

async fn cccv_crosses_over(dialect: SimDialect) {
    let clock = Clock::manual();
    let sim = sim(dialect, &clock, 0.8).await;
    let mut client = connect(&sim).await;
    within("applying a charge", client.apply(&charge(1.0, 4.1)))
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on, "{dialect:?}: {r:?}");
    assert!(
        (r.current_a - 1.0).abs() < 0.002 && r.voltage_v < 4.1,
        "{dialect:?}: CC phase at the set current: {r:?}"
    );
    // A quarter of an hour later the cell sits at the voltage limit with a tapering current
    // (the crossover comes after about 11 minutes).
    clock.advance(900.0);
    let r = client.read().await.unwrap();
    assert!(
        (r.voltage_v - 4.1).abs() < 0.003,
        "{dialect:?}: CV phase holds the limit: {r:?}"
    );
    assert!(
        r.current_a > 0.01 && r.current_a < 0.95,
        "{dialect:?}: current tapers: {r:?}"
    );
}

#[tokio::test]
async fn a_cccv_charge_crosses_over_at_the_voltage_limit_on_an_ea_supply() {
    cccv_crosses_over(SimDialect::EaPsb).await;
}

#[tokio::test]
async fn a_cccv_charge_crosses_over_at_the_voltage_limit_on_a_keithley_2450() {
    cccv_crosses_over(SimDialect::Keithley2450).await;
}

#[tokio::test]
async fn a_cccv_charge_crosses_over_at_the_voltage_limit_on_a_keysight_b2901() {
    cccv_crosses_over(SimDialect::KeysightB2901).await;
}

#[tokio::test]
async fn a_cccv_charge_crosses_over_at_the_voltage_limit_on_an_itech_it6000() {
    cccv_crosses_over(SimDialect::ItechIt6000).await;
}

#[tokio::test]
async fn discharge_reads_back_negative_and_an_smu_stops_at_the_lower_cutoff() {
    let clock = Clock::manual();
    for dialect in [
        SimDialect::EaPsb,
        SimDialect::Keithley2450,
        SimDialect::KeysightB2901,
        SimDialect::ItechIt6000,
    ] {
        let sim = sim(dialect, &clock, 0.2).await;
        let mut client = connect(&sim).await;
        client
            .apply(&Command::Current {
                amps: -1.0,
                voltage_max: 4.2,
                voltage_min: 3.4,
            })
            .await
            .unwrap();
        let r = client.read().await.unwrap();
        assert!((r.current_a + 1.0).abs() < 0.002, "{dialect:?}: {r:?}");
        clock.advance(3600.0);
        let r = client.read().await.unwrap();
        assert!(
            (r.voltage_v - 3.4).abs() < 0.003 && r.current_a > -0.95,
            "{dialect:?}: holds the cutoff: {r:?}"
        );
    }
}

#[tokio::test]
async fn an_out_of_range_setpoint_is_reported_from_the_error_queue() {
    let clock = Clock::manual();
    for dialect in [SimDialect::EaPsb, SimDialect::Keithley2450] {
        let sim = sim(dialect, &clock, 0.5).await;
        let mut client = connect(&sim).await;
        // 100 A is beyond both a 60 A PSB (102 %) and a 1.05 A SMU.
        let err = within("an out-of-range apply", client.apply(&charge(100.0, 4.2)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DriverError::Refused { message, .. }
            if message.contains("-222") && message.contains("Data out of range")),
            "{dialect:?}: {err}"
        );
        assert!(!err.is_link_lost());
        // A refused setpoint never runs: the output stays off, and the link keeps working.
        assert!(!sim.snapshot().output_on);
        let r = client.read().await.unwrap();
        assert!(!r.output_on, "{r:?}");
        client.apply(&charge(0.5, 4.2)).await.unwrap();
        assert!(sim.snapshot().output_on);
    }
}

#[tokio::test]
async fn an_injected_device_error_is_reported_after_the_next_write() {
    let clock = Clock::manual();
    let sim = sim(SimDialect::Keithley2450, &clock, 0.5).await;
    let mut client = connect(&sim).await;
    sim.push_error(-310, "System error");
    let err = client.output_off().await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Refused { message, .. } if message.contains("System error")),
        "{err}"
    );
    client.output_off().await.unwrap();
}

#[tokio::test]
async fn constant_power_on_an_smu_and_charging_on_a_load_are_unsupported() {
    let clock = Clock::manual();
    let smu = sim(SimDialect::Keithley2450, &clock, 0.5).await;
    let mut client = connect(&smu).await;
    let err = client
        .apply(&Command::Power {
            watts: 1.0,
            voltage_max: 4.2,
            voltage_min: 3.0,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
    let load = sim(SimDialect::Bk8600, &clock, 0.5).await;
    let mut client = connect(&load).await;
    let err = client.apply(&charge(1.0, 4.2)).await.unwrap_err();
    assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
    assert!(!load.snapshot().output_on);
}

async fn pair(clock: &Clock, soc: f64) -> (SimHandle, SimHandle) {
    let supply = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let load = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut handles = ScpiSim::spawn_bench(
        vec![
            (supply.into(), SimConfig::new(SimDialect::EaPsb, "S1")),
            (load.into(), SimConfig::new(SimDialect::Bk8600, "L1")),
        ],
        cell(soc),
        clock.clone(),
    )
    .unwrap();
    let load = handles.pop().unwrap();
    (handles.pop().unwrap(), load)
}

#[tokio::test]
async fn a_supply_and_load_pair_discharges_through_the_load_with_the_supply_off() {
    let clock = Clock::manual();
    let (supply_sim, load_sim) = pair(&clock, 0.6).await;
    let mut stage = PairStage::new(connect(&supply_sim).await, connect(&load_sim).await);

    stage.apply(&charge(1.0, 4.2)).await.unwrap();
    let r = stage.read().await.unwrap();
    assert!((r.current_a - 1.0).abs() < 0.002 && !r.alarm, "{r:?}");
    assert!(supply_sim.snapshot().output_on && !load_sim.snapshot().output_on);

    stage
        .apply(&Command::Current {
            amps: -2.0,
            voltage_max: 4.2,
            voltage_min: 3.0,
        })
        .await
        .unwrap();
    let (s, l) = (supply_sim.snapshot(), load_sim.snapshot());
    assert!(!s.output_on && l.output_on, "supply {s:?}, load {l:?}");
    let r = stage.read().await.unwrap();
    assert!(
        (r.current_a + 2.0).abs() < 0.002 && r.output_on && !r.alarm,
        "{r:?}"
    );
    let soc = load_sim.snapshot().soc;
    clock.advance(900.0);
    let after = load_sim.snapshot();
    let expected = 2.0 * 900.0 / 3600.0 / load_sim.capacity_ah();
    assert!((soc - after.soc - expected).abs() < 0.005, "{after:?}");
    assert_eq!(supply_sim.snapshot().current_a, 0.0);

    stage.apply(&Command::Off).await.unwrap();
    assert!(!supply_sim.snapshot().output_on && !load_sim.snapshot().output_on);
    assert!(!stage.read().await.unwrap().output_on);
}

#[tokio::test]
async fn a_pair_does_not_switch_the_load_on_while_the_supply_cannot_be_switched_off() {
    let clock = Clock::manual();
    let (supply_sim, load_sim) = pair(&clock, 0.6).await;
    let mut stage = PairStage::new(connect(&supply_sim).await, connect(&load_sim).await);
    stage.apply(&charge(1.0, 4.2)).await.unwrap();
    supply_sim.cut_link();
    let err = within(
        "a discharge with the supply unreachable",
        stage.apply(&charge(-1.0, 4.2)),
    )
    .await
    .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    assert!(!load_sim.snapshot().output_on);
    assert!(supply_sim.snapshot().output_on);
}

#[tokio::test]
async fn a_cut_link_is_a_lost_link_and_reconnect_works() {
    let clock = Clock::manual();
    let sim = sim(SimDialect::EaPsb, &clock, 0.5).await;
    let mut client = connect(&sim).await;
    client.apply(&charge(2.5, 4.2)).await.unwrap();
    let soc_before = sim.snapshot().soc;

    sim.cut_link();
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
    assert!((during.soc - soc_before - expected).abs() < 0.01);

    sim.restore_link();
    within("reconnecting after the restore", client.reconnect())
        .await
        .unwrap();
    let r = client.read().await.unwrap();
    assert!(r.output_on && (r.current_a - 2.5).abs() < 0.002, "{r:?}");
    assert!(sim.snapshot().remote);
}

#[tokio::test]
async fn a_delayed_reply_times_out_as_a_lost_link_until_reconnected() {
    let clock = Clock::manual();
    let sim = sim(SimDialect::Keithley2450, &clock, 0.5).await;
    let options = ScpiOptions {
        timeout: Duration::from_millis(300),
        ..ScpiOptions::default()
    };
    let mut client = within("connecting", ScpiClient::connect(sim.endpoint(), options))
        .await
        .unwrap();
    sim.set_reply_delay(Duration::from_secs(30));
    let err = within("a delayed read", client.read()).await.unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    // The late reply would desynchronise the link: it stays lost until reconnected.
    sim.set_reply_delay(Duration::ZERO);
    let err = client.read().await.unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    within("reconnecting", client.reconnect()).await.unwrap();
    client.read().await.unwrap();
}

#[tokio::test]
async fn an_alarm_is_reported_and_stops_the_output_stage() {
    let clock = Clock::manual();
    let sim = sim(SimDialect::EaPsb, &clock, 0.5).await;
    let mut client = connect(&sim).await;
    client.apply(&charge(1.0, 4.2)).await.unwrap();
    sim.set_alarm(true);
    let r = client.read().await.unwrap();
    assert!(r.alarm, "{r:?}");
    assert_eq!(sim.snapshot().current_a, 0.0);
}

#[tokio::test]
async fn an_unknown_identity_is_refused_unless_the_dialect_is_configured() {
    let clock = Clock::manual();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        idn: "ACME Power,SMU-9,42,0.1".into(),
        ..SimConfig::new(SimDialect::Keithley2450, "42")
    };
    let sim = ScpiSim::spawn(listener, config, cell(0.5), clock.clone()).unwrap();
    let err = within(
        "connecting",
        ScpiClient::connect(sim.endpoint(), ScpiOptions::default()),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, DriverError::Identity(_)), "{err}");
    let options = ScpiOptions {
        dialect: Some(Dialect::Keithley24xx),
        ratings: Some(wire::Ratings {
            voltage_v: 200.0,
            current_a: 1.05,
            power_w: 22.0,
        }),
        ..ScpiOptions::default()
    };
    let client = ScpiClient::connect(sim.endpoint(), options).await.unwrap();
    assert_eq!(client.dialect(), Dialect::Keithley24xx);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever a device answers, parsing it and the transport's handling of it never panic.
    #[test]
    fn reply_parsing_of_arbitrary_text_never_panics(reply in "\\PC{0,60}", crlf in any::<bool>()) {
        let _ = wire::parse_idn(&reply);
        let _ = wire::dialect_for(&wire::parse_idn(&reply));
        let _ = wire::parse_error(&reply);
        let _ = wire::parse_numbers(&reply, 3);
        let _ = wire::parse_bool(&reply);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (host, device) = tokio::io::duplex(4096);
            let reply = reply.replace('\n', " ");
            tokio::spawn(async move {
                let (rd, mut wr) = tokio::io::split(device);
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    let end = if crlf { "\r\n" } else { "\n" };
                    if wr.write_all(format!("{reply}{end}").as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
            let mut link = LineTransport::new(host, "\n", Duration::from_secs(1));
            let _ = link.identify().await;
            let _ = link.drain_errors("draining").await;
            let _ = link.write_checked(&["OUTP OFF".into()], "writing").await;
        });
    }
}

/// A serial instrument on a pseudo-terminal; the client opens it at the ITECH default line
/// speed, as a lab configures an RS-232 adapter.
#[cfg(unix)]
fn serial_sim(dialect: SimDialect, clock: &Clock, soc: f64) -> SimHandle {
    ScpiSim::spawn(
        cyclerd_drivers::transport::pty::Pty::open().unwrap(),
        SimConfig::new(dialect, "T1"),
        cell(soc),
        clock.clone(),
    )
    .unwrap()
}

#[cfg(unix)]
#[tokio::test]
async fn an_itech_supply_on_a_serial_line_is_identified_and_charges_through_cccv() {
    let clock = Clock::manual();
    let sim = serial_sim(SimDialect::ItechIt6000, &clock, 0.8);
    assert!(sim.endpoint().tcp_addr().is_none(), "{}", sim.endpoint());
    let mut client = connect(&sim).await;
    assert_eq!(client.dialect(), Dialect::ItechIt6000);
    within("charging", client.apply(&charge(1.0, 4.1)))
        .await
        .unwrap();
    let r = within("reading", client.read()).await.unwrap();
    assert!(
        (r.current_a - 1.0).abs() < 0.002 && r.voltage_v < 4.1,
        "{r:?}"
    );
    clock.advance(900.0);
    let r = within("reading", client.read()).await.unwrap();
    assert!(
        (r.voltage_v - 4.1).abs() < 0.003,
        "CV holds the limit: {r:?}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_pulled_serial_cable_and_a_broken_reply_are_lost_links_until_reconnected() {
    let clock = Clock::manual();
    let sim = serial_sim(SimDialect::Keithley2450, &clock, 0.5);
    let options = ScpiOptions {
        timeout: Duration::from_millis(300),
        ..ScpiOptions::default()
    };
    let mut client = within("connecting", ScpiClient::connect(sim.endpoint(), options))
        .await
        .unwrap();
    client.apply(&charge(1.0, 4.2)).await.unwrap();

    sim.cut_link();
    let err = within("a read on a pulled cable", client.read())
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    sim.restore_link();
    within("reconnecting", client.reconnect()).await.unwrap();
    let r = within("reading", client.read()).await.unwrap();
    assert!(r.output_on && (r.current_a - 1.0).abs() < 0.002, "{r:?}");

    sim.corrupt_next(1);
    let err = within("a read with a broken reply", client.read())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    within("reconnecting", client.reconnect()).await.unwrap();
    let r = within("reading", client.read()).await.unwrap();
    assert!(
        r.output_on,
        "the output ran on through the line faults: {r:?}"
    );
}

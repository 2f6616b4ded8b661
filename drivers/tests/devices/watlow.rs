//! The F4T driver against the F4T simulator, through real Modbus TCP sockets.

use super::chamber::{
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on,
    a_runaway_drives_the_air_whatever_the_set_point,
    a_set_point_of_45_c_is_reached_following_the_ramp, an_alarm_is_reported_until_it_clears,
};
use super::{TIMEOUT, within};
use cyclerd_drivers::chamber::Chamber;
use cyclerd_drivers::chamber::thermal::{Air, ROOM_C};
use cyclerd_drivers::watlow::wire::{self, alarm, mode, reg};
use cyclerd_drivers::watlow::{SimConfig, SimHandle, WatlowClient, WatlowOptions, WatlowSim};
use cyclerd_drivers::{Clock, DriverError};
use tokio::net::TcpListener;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer, tcp};
use tokio_modbus::slave::Slave;

async fn sim_with(clock: &Clock, config: SimConfig) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    WatlowSim::spawn(listener, config, clock.clone()).unwrap()
}

async fn sim(clock: &Clock) -> SimHandle {
    sim_with(clock, SimConfig::new(Air::new(ROOM_C))).await
}

fn options() -> WatlowOptions {
    WatlowOptions {
        timeout: TIMEOUT,
        ..WatlowOptions::default()
    }
}

async fn connect(sim: &SimHandle) -> WatlowClient {
    within("connecting", WatlowClient::connect(sim.addr(), options()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_poll_reads_the_air_set_point_and_mode_in_one_block_and_one_alarm_read() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    let before = sim.transactions();
    let r = client.read().await.unwrap();
    assert_eq!(sim.transactions() - before, 2);
    assert!((r.temperature_c - ROOM_C).abs() < 1e-4, "{r:?}");
    assert_eq!(r.set_point_c, 25.0);
    assert_eq!(r.humidity_pct, None);
    assert!(!r.running);
    assert!(r.alarms.is_empty());
    let status = client.status().await.unwrap();
    assert_eq!(status.range_c, (-40.0, 150.0));
    assert_eq!(status.mode, mode::OFF);
}

#[tokio::test]
async fn a_set_point_of_45_is_reached_by_the_air_no_faster_than_the_ramp_limit() {
    let clock = Clock::scaled(500.0);
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    a_set_point_of_45_c_is_reached_following_the_ramp(&mut client, &sim, &clock, 3.0).await;
}

#[tokio::test]
async fn start_and_stop_switch_the_loop_between_auto_and_off() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    client.start().await.unwrap();
    assert!(sim.running());
    assert_eq!(client.status().await.unwrap().mode, mode::AUTO);
    assert!(client.read().await.unwrap().running);
    client.stop().await.unwrap();
    assert!(!sim.running());
    assert_eq!(client.status().await.unwrap().mode, mode::OFF);
    // A mode value the controller does not have is refused.
    let mut raw = tcp::connect_slave(sim.addr(), Slave(1)).await.unwrap();
    let refused = raw.write_single_register(reg::MODE, 11).await.unwrap();
    assert_eq!(refused, Err(ExceptionCode::IllegalDataValue));
}

#[tokio::test]
async fn floats_go_low_word_first_both_ways() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut raw = tcp::connect_slave(sim.addr(), Slave(1)).await.unwrap();
    let pv = raw
        .read_holding_registers(reg::PROCESS_VALUE, 2)
        .await
        .unwrap()
        .unwrap();
    let swapped = f64::from(f32::from_bits(u32::from(pv[1]) << 16 | u32::from(pv[0])));
    assert!((swapped - sim.temperature_c()).abs() < 1e-4, "{pv:x?}");
    // 37.5 is 0x42160000: low word first on the wire.
    raw.write_multiple_registers(reg::SET_POINT, &[0x0000, 0x4216])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim.set_point_c(), 37.5);
    let mut client = connect(&sim).await;
    client.set_temperature(-12.25).await.unwrap();
    let words = raw
        .read_holding_registers(reg::SET_POINT, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(words, wire::encode_float(-12.25));
    assert_eq!(words[1], 0xC144, "-12.25 is 0xC1440000");
}

#[tokio::test]
async fn a_non_finite_or_out_of_range_set_point_is_refused_before_it_is_written() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    let before = sim.transactions();
    for bad in [f64::NAN, f64::INFINITY] {
        let err = client.set_temperature(bad).await.unwrap_err();
        assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
    }
    assert_eq!(sim.transactions(), before, "nothing reached the controller");
    let err = client.set_temperature(200.0).await.unwrap_err();
    assert!(err.to_string().contains("-40 to 150"), "{err}");
    assert_eq!(sim.transactions(), before + 1, "only the range was read");
    assert_eq!(sim.set_point_c(), 25.0);
    // The controller refuses it too.
    let mut raw = tcp::connect_slave(sim.addr(), Slave(1)).await.unwrap();
    let refused = raw
        .write_multiple_registers(reg::SET_POINT, &wire::encode_float(200.0))
        .await
        .unwrap();
    assert_eq!(refused, Err(ExceptionCode::IllegalDataValue));
}

#[tokio::test]
async fn an_alarm_is_reported_by_its_state_until_it_clears() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = within(
        "connecting",
        WatlowClient::connect(
            sim.addr(),
            WatlowOptions {
                alarms: alarm::COUNT,
                ..options()
            },
        ),
    )
    .await
    .unwrap();
    // The wire carries a state, not text: a name it does not know is `high`.
    let alarms = [("low", "alarm 1: low"), ("door open", "alarm 1: high")];
    an_alarm_is_reported_until_it_clears(&mut client, &sim, &alarms).await;
}

#[tokio::test]
async fn a_runaway_drives_the_air_past_the_set_point() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    a_runaway_drives_the_air_whatever_the_set_point(&mut client, &sim, &clock, 10.0, 120.0).await;
}

#[tokio::test]
async fn a_cut_link_is_a_lost_link_until_reconnected() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on(&mut client, &sim, &clock)
        .await;
}

#[tokio::test]
async fn an_exception_reply_is_a_clear_error_and_the_link_stays() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    sim.fail_next(1, ExceptionCode::ServerDeviceBusy);
    let err = client.read().await.unwrap_err();
    assert!(matches!(err, DriverError::Exception { .. }), "{err}");
    assert!(!err.is_link_lost());
    let message = err.to_string();
    assert!(
        message.contains("reading the control loop") && message.contains("Busy"),
        "{message}"
    );
    client.read().await.unwrap();
}

#[tokio::test]
async fn loop_two_is_addressed_160_registers_above_loop_one() {
    let clock = Clock::manual();
    let sim = sim_with(
        &clock,
        SimConfig {
            loop_n: 2,
            ..SimConfig::new(Air::new(ROOM_C))
        },
    )
    .await;
    let err = WatlowClient::connect(sim.addr(), options())
        .await
        .err()
        .expect("loop 1 is not the chamber's");
    assert!(matches!(err, DriverError::Exception { .. }), "{err}");
    let mut client = WatlowClient::connect(
        sim.addr(),
        WatlowOptions {
            loop_n: 2,
            ..options()
        },
    )
    .await
    .unwrap();
    client.set_temperature(40.0).await.unwrap();
    client.start().await.unwrap();
    assert_eq!(sim.set_point_c(), 40.0);
    assert!(sim.running());
    let mut raw = tcp::connect_slave(sim.addr(), Slave(1)).await.unwrap();
    let words = raw
        .read_holding_registers(reg::SET_POINT + wire::LOOP_STRIDE, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wire::decode_float([words[0], words[1]]), 40.0);
}

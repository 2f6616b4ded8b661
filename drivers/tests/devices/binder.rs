//! The Binder driver against the Binder simulator, through a real pseudo-terminal and through
//! a simulated serial-to-TCP bridge.

use super::chamber::{
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on,
    a_runaway_drives_the_air_whatever_the_set_point,
    a_set_point_of_45_c_is_reached_following_the_ramp, an_alarm_is_reported_until_it_clears,
};
use super::{TIMEOUT, within};
use cyclerd_drivers::binder::wire::{self, Exception, function, mode, reg};
use cyclerd_drivers::binder::{BinderClient, BinderOptions, BinderSim, SimConfig, SimHandle};
use cyclerd_drivers::chamber::Chamber;
use cyclerd_drivers::chamber::thermal::{Air, ROOM_C};
use cyclerd_drivers::transport::pty::Pty;
use cyclerd_drivers::transport::{Endpoint, SimPort};
use cyclerd_drivers::{Clock, DriverError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Reader, Writer, rtu};
use tokio_modbus::slave::Slave;

/// For tests that wait for a silent device: short, so the test is quick.
const SHORT: Duration = Duration::from_millis(300);

fn on_pty(clock: &Clock, config: SimConfig) -> SimHandle {
    BinderSim::spawn(Pty::open().unwrap(), config, clock.clone()).unwrap()
}

async fn on_bridge(clock: &Clock) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    BinderSim::spawn(
        SimPort::Tcp(listener),
        SimConfig::new(Air::new(ROOM_C)),
        clock.clone(),
    )
    .unwrap()
}

fn sim(clock: &Clock) -> SimHandle {
    on_pty(clock, SimConfig::new(Air::new(ROOM_C)))
}

async fn connect_with(sim: &SimHandle, timeout: Duration) -> BinderClient {
    let options = BinderOptions {
        timeout,
        ..BinderOptions::default()
    };
    within("connecting", BinderClient::connect(sim.endpoint(), options))
        .await
        .unwrap()
}

async fn connect(sim: &SimHandle) -> BinderClient {
    connect_with(sim, TIMEOUT).await
}

/// tokio-modbus's RTU client on the simulator's serial port: an independent implementation
/// of the framing. The port opens exclusively, so no driver may hold it meanwhile.
fn raw(sim: &SimHandle) -> tokio_modbus::client::Context {
    let Endpoint::Serial { path, baud } = sim.endpoint() else {
        panic!("not on a serial port");
    };
    let port = tokio_serial::SerialStream::open(&tokio_serial::new(path, baud)).unwrap();
    rtu::attach_slave(port, Slave(wire::DEFAULT_UNIT))
}

fn low_word_first(words: &[u16]) -> f64 {
    f64::from(f32::from_bits(
        u32::from(words[1]) << 16 | u32::from(words[0]),
    ))
}

#[tokio::test]
async fn a_poll_reads_temperature_humidity_set_point_and_mode_over_the_serial_line() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    let before = sim.transactions();
    let r = client.read().await.unwrap();
    assert_eq!(sim.transactions() - before, 5);
    assert!((r.temperature_c - ROOM_C).abs() < 1e-4, "{r:?}");
    assert_eq!(r.set_point_c, 25.0, "the basic set point");
    assert_eq!(r.humidity_pct, Some(50.0));
    assert!(!r.running, "basic mode is idle");
    assert!(r.alarms.is_empty());
    assert_eq!(client.mode().await.unwrap(), mode::BASIC);
}

#[tokio::test]
async fn a_set_point_of_45_is_reached_by_the_air_no_faster_than_the_ramp_limit() {
    let clock = Clock::scaled(500.0);
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    a_set_point_of_45_c_is_reached_following_the_ramp(&mut client, &sim, &clock, 3.0).await;
}

#[tokio::test]
async fn start_runs_manual_mode_at_the_manual_set_point_and_stop_returns_to_basic() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    client.set_temperature(60.0).await.unwrap();
    // Written, but the chamber holds its basic set point until started.
    assert_eq!(sim.set_point_c(), 25.0);
    assert!(!sim.running());
    client.start().await.unwrap();
    assert!(sim.running());
    assert_eq!(sim.set_point_c(), 60.0);
    let r = client.read().await.unwrap();
    assert!(r.running && r.set_point_c == 60.0, "{r:?}");
    assert_eq!(client.mode().await.unwrap(), mode::MANUAL);
    client.stop().await.unwrap();
    assert!(!sim.running());
    assert_eq!(client.read().await.unwrap().set_point_c, 25.0);
}

#[tokio::test]
async fn function_6_is_refused_by_the_device_and_the_driver_writes_only_with_function_16() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    {
        let mut raw = raw(&sim);
        let refused = within(
            "a function 6 write",
            raw.write_single_register(reg::MODE, mode::MANUAL),
        )
        .await
        .unwrap();
        assert_eq!(refused, Err(ExceptionCode::IllegalFunction));
    }
    assert_eq!(sim.requests(function::WRITE_SINGLE), 1);
    assert!(!sim.running(), "the refused write changed nothing");

    let mut client = connect(&sim).await;
    client.set_temperature(40.0).await.unwrap();
    client.start().await.unwrap();
    client.stop().await.unwrap();
    client.read().await.unwrap();
    assert_eq!(
        sim.requests(function::WRITE_SINGLE),
        1,
        "none from the driver"
    );
    assert_eq!(sim.requests(function::WRITE), 3);
    assert_eq!(sim.transactions(), 1 + 3 + sim.requests(function::READ));
}

#[tokio::test]
async fn floats_are_word_swapped_both_ways() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    client.set_temperature(-12.25).await.unwrap();
    drop(client);
    let mut raw = raw(&sim);
    let words = within(
        "reading the manual set point",
        raw.read_holding_registers(reg::MANUAL_SET_POINT, 2),
    )
    .await
    .unwrap()
    .unwrap();
    // -12.25 is 0xC1440000: the low word comes first.
    assert_eq!(words, [0x0000, 0xC144]);
    let t = raw
        .read_holding_registers(reg::TEMPERATURE, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(
        (low_word_first(&t) - sim.temperature_c()).abs() < 1e-4,
        "{t:x?}"
    );
    // 37.5 is 0x42160000, written low word first.
    raw.write_multiple_registers(reg::MANUAL_SET_POINT, &[0x0000, 0x4216])
        .await
        .unwrap()
        .unwrap();
    raw.write_multiple_registers(reg::MODE, &[mode::MANUAL])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sim.set_point_c(), 37.5);
    drop(raw);
    let mut client = connect(&sim).await;
    assert_eq!(client.read().await.unwrap().set_point_c, 37.5);
}

#[tokio::test]
async fn measured_values_are_write_denied_with_exception_8() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut raw = raw(&sim);
    let denied = within(
        "writing the measured temperature",
        raw.write_multiple_registers(reg::TEMPERATURE, &wire::encode_float(30.0)),
    )
    .await
    .unwrap();
    // tokio-modbus knows code 8 by its Modbus name only.
    assert_eq!(denied, Err(ExceptionCode::MemoryParityError));
    let unknown = raw.read_holding_registers(0x0001, 1).await.unwrap();
    assert_eq!(unknown, Err(ExceptionCode::IllegalDataAddress));
}

#[tokio::test]
async fn an_exception_reply_becomes_a_clear_error_and_the_link_stays() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    sim.fail_next(1, Exception::WriteDenied);
    let err = client.set_temperature(30.0).await.unwrap_err();
    assert!(matches!(err, DriverError::Exception { .. }), "{err}");
    assert!(!err.is_link_lost());
    let message = err.to_string();
    assert!(
        message.contains("writing the manual set point") && message.contains("8 (write denied)"),
        "{message}"
    );
    let err = client.set_temperature(500.0).await.unwrap_err();
    assert!(err.to_string().contains("3 (illegal data value)"), "{err}");
    let err = client.set_temperature(f64::NAN).await.unwrap_err();
    assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
    client.set_temperature(30.0).await.unwrap();
}

#[tokio::test]
async fn an_alarm_is_reported_from_the_alarm_word_until_it_clears() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    let alarm = ("temperature limit", "alarm word 0x0001");
    an_alarm_is_reported_until_it_clears(&mut client, &sim, &[alarm]).await;
}

#[tokio::test]
async fn a_chamber_without_humidity_reports_none_and_is_not_asked_again() {
    let clock = Clock::manual();
    let sim = on_pty(
        &clock,
        SimConfig {
            humidity_pct: None,
            ..SimConfig::new(Air::new(ROOM_C))
        },
    );
    let mut client = connect(&sim).await;
    assert_eq!(client.read().await.unwrap().humidity_pct, None);
    let before = sim.transactions();
    assert_eq!(client.read().await.unwrap().humidity_pct, None);
    assert_eq!(sim.transactions() - before, 4);
}

#[tokio::test]
async fn a_corrupted_reply_is_a_bad_reply_and_the_next_one_is_read_cleanly() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    sim.corrupt_next(1);
    let err = client.read().await.unwrap_err();
    assert!(matches!(err, DriverError::BadReply { .. }), "{err}");
    assert!(err.to_string().contains("CRC"), "{err}");
    client.read().await.unwrap();
}

#[tokio::test]
async fn a_runaway_drives_the_air_past_the_set_point() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect(&sim).await;
    a_runaway_drives_the_air_whatever_the_set_point(&mut client, &sim, &clock, 2.0, 600.0).await;
}

#[tokio::test]
async fn a_cut_serial_line_is_a_lost_link_until_reconnected() {
    let clock = Clock::manual();
    let sim = sim(&clock);
    let mut client = connect_with(&sim, SHORT).await;
    sim.cut_link();
    let err = within("a read on a cut line", client.read())
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    assert!(err.is_link_lost());
    let err = within("reconnecting to a cut line", client.reconnect())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    sim.restore_link();
    within("reconnecting", client.reconnect()).await.unwrap();
    client.read().await.unwrap();
}

#[tokio::test]
async fn through_the_bridge_the_same_frames_work_and_a_cut_is_a_lost_link_until_reconnected() {
    let clock = Clock::manual();
    let sim = on_bridge(&clock).await;
    let mut client = connect(&sim).await;
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on(&mut client, &sim, &clock)
        .await;
}

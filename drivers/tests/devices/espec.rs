//! The Espec driver against the Espec simulator, through real TCP sockets on loopback and a
//! pseudo-terminal.

use super::chamber::{
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on,
    a_runaway_drives_the_air_whatever_the_set_point,
    a_set_point_of_45_c_is_reached_following_the_ramp, a_set_point_outside_the_range_is_refused,
    an_alarm_is_reported_until_it_clears,
};
use super::{TIMEOUT, within};
use cyclerd_drivers::chamber::Chamber;
use cyclerd_drivers::espec::wire::Na;
use cyclerd_drivers::espec::{EspecClient, EspecOptions, EspecSim, SimConfig, SimHandle};
use cyclerd_drivers::{Clock, DriverError};
use std::time::Duration;
use tokio::net::TcpListener;

async fn sim(config: SimConfig, clock: &Clock) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    EspecSim::spawn(listener, config, clock.clone()).unwrap()
}

async fn connect(sim: &SimHandle, options: EspecOptions) -> EspecClient {
    within("connecting", EspecClient::connect(sim.endpoint(), options))
        .await
        .unwrap()
}

fn options() -> EspecOptions {
    EspecOptions {
        timeout: TIMEOUT,
        address: None,
    }
}

#[tokio::test]
async fn the_controller_is_identified_by_its_rom_and_type() {
    let sim = sim(SimConfig::standalone(), &Clock::manual()).await;
    let client = connect(&sim, options()).await;
    let id = client.identity();
    assert!(id.rom.starts_with("P300"), "{id:?}");
    assert_eq!(id.kind.controller, "P300");
    assert_eq!(id.kind.max_c, 150.0);
    assert_eq!(id.kind.wet_sensor, None);
}

#[tokio::test]
async fn a_set_point_of_45_c_is_reached_by_the_air_following_the_ramp_limit() {
    let clock = Clock::scaled(500.0);
    let sim = sim(SimConfig::standalone(), &clock).await;
    let mut client = connect(&sim, options()).await;
    a_set_point_of_45_c_is_reached_following_the_ramp(&mut client, &sim, &clock, 3.0).await;
}

#[tokio::test]
async fn an_alarm_is_read_by_its_code_while_raised_and_humidity_where_the_chamber_has_it() {
    let clock = Clock::manual();
    let config = SimConfig {
        humidity_pct: Some(45.0),
        ..SimConfig::standalone()
    };
    let sim = sim(config, &clock).await;
    let mut client = connect(&sim, options()).await;
    assert!(client.identity().kind.wet_sensor.is_some());
    assert_eq!(client.read().await.unwrap().humidity_pct, Some(45.0));
    an_alarm_is_reported_until_it_clears(&mut client, &sim, &[("21", "21")]).await;
}

#[tokio::test]
async fn a_cut_link_is_a_lost_link_until_reconnected_while_the_chamber_keeps_regulating() {
    let clock = Clock::manual();
    let sim = sim(SimConfig::standalone(), &clock).await;
    let mut client = connect(&sim, options()).await;
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on(&mut client, &sim, &clock)
        .await;
}

#[tokio::test]
async fn a_set_point_outside_the_range_is_refused_with_the_controllers_reason() {
    let sim = sim(SimConfig::standalone(), &Clock::manual()).await;
    let mut client = connect(&sim, options()).await;
    let reason = ["NA:DATA OUT OF RANGE", "TEMP, S200.0"];
    a_set_point_outside_the_range_is_refused(&mut client, &sim, 200.0, &reason).await;
}

#[tokio::test]
async fn refused_requests_are_errors_that_leave_the_link_up() {
    let sim = sim(SimConfig::standalone(), &Clock::manual()).await;
    let mut client = connect(&sim, options()).await;
    sim.fail_next(1, Na::ProtectOn);
    let err = client.start().await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Refused { message, .. } if message.contains("PROTECT ON")),
        "{err}"
    );
    assert!(!sim.running());
    client.start().await.unwrap();
    assert!(sim.running());
}

#[tokio::test]
async fn a_runaway_heater_drives_the_air_past_its_set_point() {
    let clock = Clock::manual();
    let sim = sim(SimConfig::standalone(), &clock).await;
    let mut client = connect(&sim, options()).await;
    a_runaway_drives_the_air_whatever_the_set_point(&mut client, &sim, &clock, 2.0, 600.0).await;
}

#[cfg(unix)]
mod serial {
    use super::*;
    use cyclerd_drivers::transport::pty::Pty;

    /// For tests that wait for a silent controller: short, so the test is quick.
    const SHORT: Duration = Duration::from_millis(300);

    fn serial_sim(address: Option<u8>, clock: &Clock) -> SimHandle {
        let config = SimConfig {
            address,
            ..SimConfig::standalone()
        };
        EspecSim::spawn(Pty::open().unwrap(), config, clock.clone()).unwrap()
    }

    #[tokio::test]
    async fn on_an_rs485_line_the_controller_answers_requests_with_its_address() {
        let clock = Clock::manual();
        let sim = serial_sim(Some(3), &clock);
        assert!(sim.endpoint().tcp_addr().is_none(), "{}", sim.endpoint());
        let addressed = EspecOptions {
            address: Some(3),
            ..options()
        };
        let mut client = connect(&sim, addressed).await;
        client.set_temperature(-10.0).await.unwrap();
        let r = within("reading", client.read()).await.unwrap();
        assert_eq!(r.set_point_c, -10.0);
        assert!((r.temperature_c - 23.0).abs() < 0.1, "{r:?}");
        drop(client);
        // Without the address the controller refuses; with another it keeps silent.
        let err = within(
            "connecting without an address",
            EspecClient::connect(sim.endpoint(), options()),
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(&err, DriverError::Refused { message, .. } if message.contains("ADDR ERR")),
            "{err}"
        );
        let other = EspecOptions {
            timeout: SHORT,
            address: Some(4),
        };
        let err = within(
            "connecting to another address",
            EspecClient::connect(sim.endpoint(), other),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_cut_serial_line_is_a_lost_link_until_reconnected() {
        let clock = Clock::manual();
        let sim = serial_sim(None, &clock);
        let short = EspecOptions {
            timeout: SHORT,
            ..options()
        };
        let mut client = connect(&sim, short).await;
        a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on(
            &mut client,
            &sim,
            &clock,
        )
        .await;
    }
}

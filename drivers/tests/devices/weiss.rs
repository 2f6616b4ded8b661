//! The Weiss SimServ driver against the Weiss simulator, through real TCP sockets on loopback.

use super::chamber::{
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on,
    a_runaway_drives_the_air_whatever_the_set_point,
    a_set_point_of_45_c_is_reached_following_the_ramp, a_set_point_outside_the_range_is_refused,
    an_alarm_is_reported_until_it_clears,
};
use super::{TIMEOUT, within};
use cyclerd_drivers::chamber::Chamber;
use cyclerd_drivers::weiss::wire::Refusal;
use cyclerd_drivers::weiss::{SimConfig, SimHandle, WeissClient, WeissSim};
use cyclerd_drivers::{Clock, DriverError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn sim(clock: &Clock) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    WeissSim::spawn(listener, SimConfig::standalone(), clock.clone()).unwrap()
}

async fn connect(sim: &SimHandle) -> WeissClient {
    within("connecting", WeissClient::connect(sim.addr(), TIMEOUT))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_controller_is_identified_by_its_info_over_frames_separated_by_0xb6() {
    let sim = sim(&Clock::manual()).await;
    let client = connect(&sim).await;
    assert!(client.info().contains("SimServ"), "{}", client.info());
    // On the wire: bytes, not UTF-8.
    let mut raw = TcpStream::connect(sim.addr()).await.unwrap();
    raw.write_all(b"11004\xb61\xb61\r").await.unwrap();
    let mut reply = [0u8; 8];
    within("a raw reply", raw.read_exact(&mut reply))
        .await
        .unwrap();
    assert_eq!(&reply, b"1\xb623.0\r\n");
}

#[tokio::test]
async fn a_set_point_of_45_c_is_reached_by_the_air_following_the_ramp_limit() {
    let clock = Clock::scaled(500.0);
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    a_set_point_of_45_c_is_reached_following_the_ramp(&mut client, &sim, &clock, 3.0).await;
}

#[tokio::test]
async fn an_alarm_is_reported_from_the_status_word() {
    let sim = sim(&Clock::manual()).await;
    let mut client = connect(&sim).await;
    client.start().await.unwrap();
    let r = client.read().await.unwrap();
    assert!(r.running, "{r:?}");
    assert_eq!(r.humidity_pct, None);
    // Running is status 3; the alarm adds 8.
    let alarm = ("Temperature limiter tripped", "alarm (SimServ status 11)");
    an_alarm_is_reported_until_it_clears(&mut client, &sim, &[alarm]).await;
}

#[tokio::test]
async fn a_cut_link_is_a_lost_link_until_reconnected_while_the_chamber_keeps_regulating() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on(&mut client, &sim, &clock)
        .await;
}

#[tokio::test]
async fn a_set_point_outside_the_range_is_refused_with_code_minus_6() {
    let sim = sim(&Clock::manual()).await;
    let mut client = connect(&sim).await;
    let reason = ["-6 (bad parameters)", "11001¶1¶1¶-80.0"];
    a_set_point_outside_the_range_is_refused(&mut client, &sim, -80.0, &reason).await;
}

#[tokio::test]
async fn a_failed_read_is_refused_with_code_minus_8_and_leaves_the_link_up() {
    let sim = sim(&Clock::manual()).await;
    let mut client = connect(&sim).await;
    sim.fail_next(1, Refusal::ReadFailed);
    let err = client.read().await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Refused { message, .. } if message.contains("-8 (read failed)")),
        "{err}"
    );
    assert!(!err.is_link_lost());
    client.read().await.unwrap();
}

#[tokio::test]
async fn a_runaway_cooler_drives_the_air_below_its_set_point() {
    let clock = Clock::manual();
    let sim = sim(&clock).await;
    let mut client = connect(&sim).await;
    a_runaway_drives_the_air_whatever_the_set_point(&mut client, &sim, &clock, -1.0, 1200.0).await;
}

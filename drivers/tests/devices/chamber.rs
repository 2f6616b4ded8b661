//! What the tests of the thermal chambers share: scenarios every family must pass the same way
//! through its own client (on the [`Chamber`] trait alone) and simulator.

use super::within;
use cyclerd_drivers::chamber::Chamber;
use cyclerd_drivers::chamber::thermal::{Air, ROOM_C};
use cyclerd_drivers::{Clock, DriverError, binder, espec, watlow, weiss};

/// Simulated seconds between reads while following the air.
const POLL_S: f64 = 60.0;

/// What the shared scenarios see and do of a simulated chamber from outside.
pub trait ChamberSim {
    fn running(&self) -> bool;
    fn set_point_c(&self) -> f64;
    fn temperature_c(&self) -> f64;
    fn air(&self) -> Air;
    fn cut_link(&self);
    fn restore_link(&self);
    fn set_alarm(&self, alarm: Option<&str>);
    fn set_runaway(&self, c_per_min: Option<f64>);
}

macro_rules! chamber_sim {
    ($($handle:ty),*) => {
        $(impl ChamberSim for $handle {
            fn running(&self) -> bool {
                <$handle>::running(self)
            }
            fn set_point_c(&self) -> f64 {
                <$handle>::set_point_c(self)
            }
            fn temperature_c(&self) -> f64 {
                <$handle>::temperature_c(self)
            }
            fn air(&self) -> Air {
                <$handle>::air(self)
            }
            fn cut_link(&self) {
                <$handle>::cut_link(self)
            }
            fn restore_link(&self) {
                <$handle>::restore_link(self)
            }
            fn set_alarm(&self, alarm: Option<&str>) {
                <$handle>::set_alarm(self, alarm)
            }
            fn set_runaway(&self, c_per_min: Option<f64>) {
                <$handle>::set_runaway(self, c_per_min)
            }
        })*
    };
}

chamber_sim!(
    espec::SimHandle,
    weiss::SimHandle,
    watlow::SimHandle,
    binder::SimHandle
);

/// On a stopped chamber at room temperature whose ramp limit is `ramp_c_per_min`: a set point
/// of 45 degC, then a start, brings the air there, never faster than the ramp (readings have
/// 0.1 degC resolution), at the ramp while far from the set point, and without overshoot; a
/// stop then ends the regulation. `clock` must run by itself (scaled).
pub async fn a_set_point_of_45_c_is_reached_following_the_ramp(
    chamber: &mut impl Chamber,
    sim: &impl ChamberSim,
    clock: &Clock,
    ramp_c_per_min: f64,
) {
    let ramp = ramp_c_per_min / 60.0;
    let mut before = clock.now();
    let first = chamber.read().await.unwrap();
    assert!(!first.running, "{first:?}");
    assert!(first.temperature_c < 30.0, "{first:?}");
    chamber.set_temperature(45.0).await.unwrap();
    chamber.start().await.unwrap();
    let start = before;
    let follow = async {
        let mut last = first.temperature_c;
        let mut fastest: f64 = 0.0;
        loop {
            clock.sleep(POLL_S).await;
            let now = clock.now();
            let r = chamber.read().await.unwrap();
            let after = clock.now();
            assert!(r.running, "{r:?}");
            assert_eq!(r.set_point_c, 45.0);
            let rise = r.temperature_c - last;
            // The two readings were sampled at most `after - before` apart.
            assert!(
                rise <= ramp * (after - before) + 0.1,
                "{rise} degC in {} s: faster than the ramp",
                after - before
            );
            fastest = fastest.max((rise - 0.1) / (after - before));
            assert!(r.temperature_c <= 45.0 + 0.1, "overshoot: {r:?}");
            if (r.temperature_c - 45.0).abs() <= 0.1 {
                return (now, fastest);
            }
            (before, last) = (now, r.temperature_c);
        }
    };
    let (reached, fastest) = within("the air to reach 45 degC", follow).await;
    assert!(
        reached - start >= (45.0 - 0.2 - first.temperature_c) / ramp,
        "reached 45 degC after {} s from {} degC: faster than the ramp allows",
        reached - start,
        first.temperature_c
    );
    assert!(
        fastest >= 0.6 * ramp,
        "the air never moved near the ramp rate: at most {fastest} degC/s"
    );
    assert!(sim.running());
    assert_eq!(sim.set_point_c(), 45.0);
    assert!((sim.temperature_c() - 45.0).abs() < 0.2);
    // A stopped chamber no longer regulates; the air drifts back towards the room.
    chamber.stop().await.unwrap();
    assert!(!chamber.read().await.unwrap().running);
    assert!(!sim.running());
}

/// On a chamber regulating to 30 degC, with a manual `clock`: with the link cut reads are a
/// lost link, a reconnect fails too; once restored the client stays failed until it
/// reconnects, then reads again, and the chamber has regulated on meanwhile.
pub async fn a_cut_link_is_lost_until_reconnected_and_the_chamber_regulates_on(
    chamber: &mut impl Chamber,
    sim: &impl ChamberSim,
    clock: &Clock,
) {
    chamber.set_temperature(30.0).await.unwrap();
    chamber.start().await.unwrap();
    chamber.read().await.unwrap();
    sim.cut_link();
    let err = within("a read on a cut link", chamber.read())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    let err = within("reconnecting to a cut link", chamber.reconnect())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    clock.advance(600.0);
    sim.restore_link();
    let err = within("a read before reconnecting", chamber.read())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    within("reconnecting", chamber.reconnect()).await.unwrap();
    let r = within("a read after reconnecting", chamber.read())
        .await
        .unwrap();
    assert!(r.running && r.set_point_c == 30.0, "{r:?}");
    assert!(r.temperature_c > 25.0, "{r:?}");
}

/// On a chamber started at room temperature with a manual `clock`: a heater (positive
/// `c_per_min`) or cooler (negative) stuck on for `for_s` drives the air at that rate whatever
/// the set point, and the simulated cells' air with it.
pub async fn a_runaway_drives_the_air_whatever_the_set_point(
    chamber: &mut impl Chamber,
    sim: &impl ChamberSim,
    clock: &Clock,
    c_per_min: f64,
    for_s: f64,
) {
    chamber.start().await.unwrap();
    sim.set_runaway(Some(c_per_min));
    clock.advance(for_s);
    let r = chamber.read().await.unwrap();
    let expected = ROOM_C + c_per_min * for_s / 60.0;
    assert!((r.temperature_c - expected).abs() < 0.2, "{r:?}");
    assert!((r.temperature_c - r.set_point_c).abs() > 15.0, "{r:?}");
    assert!((sim.temperature_c() - r.temperature_c).abs() < 0.1);
    assert_eq!(sim.air().temperature_c(), sim.temperature_c());
}

/// A set point outside the chamber's range is refused by the controller, with a message
/// carrying each of `reason`; the link stays up and the set point as it was. A set point that
/// is not a number is refused before it is sent.
pub async fn a_set_point_outside_the_range_is_refused(
    chamber: &mut impl Chamber,
    sim: &impl ChamberSim,
    outside_c: f64,
    reason: &[&str],
) {
    chamber.set_temperature(45.0).await.unwrap();
    let err = chamber.set_temperature(outside_c).await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Refused { message, .. }
            if reason.iter().all(|r| message.contains(r))),
        "{err}"
    );
    assert!(!err.is_link_lost());
    assert_eq!(chamber.read().await.unwrap().set_point_c, 45.0);
    for not_a_number in [f64::NAN, f64::INFINITY] {
        let err = chamber.set_temperature(not_a_number).await.unwrap_err();
        assert!(matches!(err, DriverError::Unsupported(_)), "{err}");
    }
    assert_eq!(sim.set_point_c(), 45.0);
}

/// Each alarm raised through the handle is read, alone, as the family reports it, until the
/// handle clears it: `alarms` pairs the words raised with the report expected.
pub async fn an_alarm_is_reported_until_it_clears(
    chamber: &mut impl Chamber,
    sim: &impl ChamberSim,
    alarms: &[(&str, &str)],
) {
    assert!(chamber.read().await.unwrap().alarms.is_empty());
    for &(raised, reported) in alarms {
        sim.set_alarm(Some(raised));
        assert_eq!(chamber.read().await.unwrap().alarms, [reported]);
    }
    sim.set_alarm(None);
    assert!(chamber.read().await.unwrap().alarms.is_empty());
}

//! What the tests of the thermal chambers share: scenarios every family must pass the same way
//! through its own client and simulator, on the [`Chamber`] trait alone.

use super::within;
use cyclerd_drivers::Clock;
use cyclerd_drivers::chamber::Chamber;

/// Simulated seconds between reads while following the air.
const POLL_S: f64 = 60.0;

/// On a stopped chamber at room temperature whose ramp limit is `ramp_c_per_min`: a set point
/// of 45 degC, then a start, brings the air there, never faster than the ramp (readings have
/// 0.1 degC resolution), at the ramp while far from the set point, and without overshoot.
/// `clock` must run by itself (scaled).
pub async fn a_set_point_of_45_c_is_reached_following_the_ramp(
    chamber: &mut impl Chamber,
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
}

/// With the link cut (by `cut`): reads are a lost link, a reconnect fails too; once `restore`d
/// the client stays failed until it reconnects, then reads again.
pub async fn a_cut_link_is_a_lost_link_until_reconnected(
    chamber: &mut impl Chamber,
    cut: impl Fn(),
    restore: impl Fn(),
) {
    chamber.read().await.unwrap();
    cut();
    let err = within("a read on a cut link", chamber.read())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    let err = within("reconnecting to a cut link", chamber.reconnect())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    restore();
    let err = within("a read before reconnecting", chamber.read())
        .await
        .unwrap_err();
    assert!(err.is_link_lost(), "{err}");
    within("reconnecting", chamber.reconnect()).await.unwrap();
    within("a read after reconnecting", chamber.read())
        .await
        .unwrap();
}

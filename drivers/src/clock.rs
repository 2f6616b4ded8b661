//! The clock every part of cyclerd reads time from.
//!
//! A scaled clock runs `speed` simulated seconds per wall second, so the daemon, the simulators
//! and the engine all see the same accelerated time while talking over real sockets. It is built
//! on `tokio::time::Instant`, so tests can pause and advance it. A manual clock moves only when
//! told to, for tests that talk over real sockets (where paused tokio time would fire I/O
//! timeouts) yet need exact simulated time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Shared, cheap to clone.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Wall instant at which simulated time was 0.
    origin: Instant,
    /// Unix time at `origin`, read once so that unix timestamps advance at the scaled rate.
    origin_unix_s: f64,
    /// Simulated seconds per wall second (1.0 for the real clock).
    speed: f64,
    /// Set for a manual clock: its current time, moved only by [`Clock::advance`].
    manual: Option<watch::Sender<f64>>,
}

impl Clock {
    /// Wall time, one second per second.
    pub fn real() -> Clock {
        Clock::scaled(1.0)
    }

    /// A clock running `speed` times faster than wall time; `speed` must be positive and finite
    /// (anything else is treated as 1).
    pub fn scaled(speed: f64) -> Clock {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let origin_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Clock {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                origin_unix_s,
                speed,
                manual: None,
            }),
        }
    }

    /// A scaled clock whose unix time is `anchor + (wall unix time - anchor) * speed`: every
    /// process started with the same anchor and speed agrees on the time, so a daemon restarted
    /// in a simulation continues its tests' time lines where they were.
    pub fn anchored(speed: f64, anchor_unix_s: f64) -> Clock {
        let clock = Clock::scaled(speed);
        let wall_unix = clock.inner.origin_unix_s;
        let speed = clock.inner.speed;
        Clock {
            inner: Arc::new(Inner {
                origin: clock.inner.origin,
                origin_unix_s: anchor_unix_s + (wall_unix - anchor_unix_s) * speed,
                speed,
                manual: None,
            }),
        }
    }

    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Clock {
        let real = Clock::real();
        Clock {
            inner: Arc::new(Inner {
                origin: real.inner.origin,
                origin_unix_s: real.inner.origin_unix_s,
                speed: 1.0,
                manual: Some(watch::channel(0.0).0),
            }),
        }
    }

    /// Moves a manual clock forward by `sim_seconds`; does nothing to other clocks.
    pub fn advance(&self, sim_seconds: f64) {
        if let Some(now) = &self.inner.manual {
            now.send_modify(|t| *t += sim_seconds.max(0.0));
        }
    }

    pub fn speed(&self) -> f64 {
        self.inner.speed
    }

    /// Simulated seconds since the clock was created; monotonic.
    pub fn now(&self) -> f64 {
        match &self.inner.manual {
            Some(now) => *now.borrow(),
            None => self.inner.origin.elapsed().as_secs_f64() * self.inner.speed,
        }
    }

    /// Unix time in seconds, advancing at the clock's speed.
    pub fn unix_time_s(&self) -> f64 {
        self.inner.origin_unix_s + self.now()
    }

    /// The wall duration that `sim_seconds` of this clock's time takes.
    pub fn wall(&self, sim_seconds: f64) -> Duration {
        Duration::from_secs_f64((sim_seconds / self.inner.speed).max(0.0))
    }

    /// Sleeps for `sim_seconds` of this clock's time, counted from this call (not from the
    /// first poll of the returned future).
    pub fn sleep(&self, sim_seconds: f64) -> impl Future<Output = ()> + Send + 'static {
        let manual = self
            .inner
            .manual
            .as_ref()
            .map(|now| (now.subscribe(), *now.borrow() + sim_seconds));
        let wall = tokio::time::Instant::now() + self.wall(sim_seconds);
        async move {
            match manual {
                Some((mut now, until)) => {
                    let _ = now.wait_for(|t| *t >= until).await;
                }
                None => tokio::time::sleep_until(wall).await,
            }
        }
    }

    /// Ticks every `sim_seconds` of this clock's time: what paces a channel's polls. Ticks
    /// of equal periods fall on the same instants (multiples of the period since the clock's
    /// origin), so a daemon's channels wake together, once per period, not each on its own
    /// phase.
    pub fn pacer(&self, sim_seconds: f64) -> Interval {
        pacer(self.wall(sim_seconds), self.inner.origin)
    }

    /// Ticks every `sim_seconds` of this clock's time, but never more often than every
    /// `min_wall`: a device that logs on its own gains nothing from faster polls on a fast
    /// simulated clock.
    pub fn pacer_at_most_every(&self, sim_seconds: f64, min_wall: Duration) -> Interval {
        pacer(self.wall(sim_seconds).max(min_wall), self.inner.origin)
    }
}

/// Periods from which ticks are aligned (every real-time poll interval; a fast simulated
/// clock's periods are shorter).
const ALIGNED_FROM: Duration = Duration::from_millis(20);

/// Ticks every `period` of wall time, on multiples of `period` since `origin` (from
/// [`ALIGNED_FROM`]; shorter periods tick from now).
///
/// On a fast simulated clock the period can be shorter than the timer's 1 ms resolution; then
/// missed ticks are made up in bursts, so the average rate still matches the configured one
/// (and when the link cannot keep up, polls simply run back to back); up to 20 ms a late tick
/// delays the next. At real speed a late tick is skipped, not bunched, and the ticks stay on
/// their instants.
fn pacer(period: Duration, origin: Instant) -> Interval {
    let period = period.max(Duration::from_micros(1));
    if period < ALIGNED_FROM {
        // A fast simulated clock: polls run as fast as they can; skipping to the next aligned
        // instant after a late one would only leave the channel idle.
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(if period < Duration::from_millis(1) {
            MissedTickBehavior::Burst
        } else {
            MissedTickBehavior::Delay
        });
        return ticks;
    }
    let now = Instant::now();
    let since = now.saturating_duration_since(origin).as_nanos();
    let step = period.as_nanos();
    let next = since.div_ceil(step) * step;
    let first = origin + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX));
    let mut ticks = tokio::time::interval_at(first.max(now), period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scaled_clock_runs_speed_times_faster_than_wall_time() {
        let clock = Clock::scaled(1000.0);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!((clock.now() - 10.0).abs() < 1e-6, "now = {}", clock.now());
        let before = clock.unix_time_s();
        clock.sleep(5.0).await;
        assert!((clock.unix_time_s() - before - 5.0).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn pacers_of_one_period_tick_on_the_same_instants_whenever_they_were_made() {
        let clock = Clock::scaled(1.0);
        tokio::time::advance(Duration::from_millis(37)).await;
        let mut a = clock.pacer(0.1);
        tokio::time::advance(Duration::from_millis(41)).await;
        let mut b = clock.pacer(0.1);
        let origin = clock.inner.origin;
        for _ in 0..5 {
            let (ta, tb) = (a.tick().await, b.tick().await);
            assert_eq!(ta, tb);
            assert_eq!((ta - origin).as_millis() % 100, 0, "{:?}", ta - origin);
        }
    }

    #[tokio::test]
    async fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual();
        assert_eq!(clock.now(), 0.0);
        let sleeper = tokio::spawn(clock.sleep(10.0));
        clock.advance(4.0);
        assert_eq!(clock.now(), 4.0);
        assert!(!sleeper.is_finished());
        clock.advance(6.0);
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper wakes once the clock passes its deadline")
            .unwrap();
    }

    #[test]
    fn anchored_clocks_agree_on_unix_time() {
        let anchor = Clock::real().unix_time_s() - 10.0;
        let a = Clock::anchored(100.0, anchor);
        let b = Clock::anchored(100.0, anchor);
        // Ten wall seconds after the anchor are a thousand simulated ones, for both.
        assert!((a.unix_time_s() - (anchor + 1000.0)).abs() < 5.0);
        assert!((a.unix_time_s() - b.unix_time_s()).abs() < 1.0);
    }

    #[test]
    fn nonsense_speed_falls_back_to_real_time() {
        assert_eq!(Clock::scaled(f64::NAN).speed(), 1.0);
        assert_eq!(Clock::scaled(-3.0).speed(), 1.0);
    }
}

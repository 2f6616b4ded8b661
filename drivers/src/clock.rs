//! The clock every part of cyclerd reads time from.
//!
//! A scaled clock runs `speed` simulated seconds per wall second, so the daemon, the simulators
//! and the engine all see the same accelerated time while talking over real sockets. It is built
//! on `tokio::time::Instant`, so tests can pause and advance it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

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
            }),
        }
    }

    pub fn speed(&self) -> f64 {
        self.inner.speed
    }

    /// Simulated seconds since the clock was created; monotonic.
    pub fn now(&self) -> f64 {
        self.inner.origin.elapsed().as_secs_f64() * self.inner.speed
    }

    /// Unix time in seconds, advancing at the clock's speed.
    pub fn unix_time_s(&self) -> f64 {
        self.inner.origin_unix_s + self.now()
    }

    /// The wall duration that `sim_seconds` of this clock's time takes.
    pub fn wall(&self, sim_seconds: f64) -> Duration {
        Duration::from_secs_f64((sim_seconds / self.inner.speed).max(0.0))
    }

    /// Sleeps for `sim_seconds` of this clock's time.
    pub async fn sleep(&self, sim_seconds: f64) {
        tokio::time::sleep(self.wall(sim_seconds)).await;
    }
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

    #[test]
    fn nonsense_speed_falls_back_to_real_time() {
        assert_eq!(Clock::scaled(f64::NAN).speed(), 1.0);
        assert_eq!(Clock::scaled(-3.0).speed(), 1.0);
    }
}

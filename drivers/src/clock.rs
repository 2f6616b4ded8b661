//! The clock every part of cyclerd reads time from.
//!
//! A scaled clock runs `speed` simulated seconds per wall second, so the daemon, the simulators
//! and the engine all see the same accelerated time while talking over real sockets. It is built
//! on `tokio::time::Instant`, so tests can pause and advance it. A manual clock moves only when
//! told to, for tests that talk over real sockets (where paused tokio time would fire I/O
//! timeouts) yet need exact simulated time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
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
    /// The shared tick of each aligned period, so that a daemon's channels wait on one timer
    /// instead of one each (see [`Pacer`]).
    tickers: Mutex<HashMap<Duration, Ticker>>,
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
                tickers: Mutex::default(),
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
                tickers: Mutex::default(),
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
                tickers: Mutex::default(),
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
    /// phase; and they share one timer.
    pub fn pacer(&self, sim_seconds: f64) -> Pacer {
        self.pacer_of(self.wall(sim_seconds))
    }

    /// Ticks every `sim_seconds` of this clock's time, but never more often than every
    /// `min_wall`: a device that logs on its own gains nothing from faster polls on a fast
    /// simulated clock.
    pub fn pacer_at_most_every(&self, sim_seconds: f64, min_wall: Duration) -> Pacer {
        self.pacer_of(self.wall(sim_seconds).max(min_wall))
    }

    fn pacer_of(&self, period: Duration) -> Pacer {
        let origin = self.inner.origin;
        let own = || Pacer {
            kind: PacerKind::Own(pacer(period, origin)),
            period,
            origin,
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return own();
        };
        if period < ALIGNED_FROM {
            return own();
        }
        let mut tickers = self.inner.tickers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tickers.get(&period)
            && let Some(alive) = t.alive.upgrade()
            && t.ticks.has_changed().is_ok()
        {
            let mut ticks = t.ticks.clone();
            ticks.mark_unchanged();
            return Pacer {
                kind: PacerKind::Shared {
                    ticks,
                    _alive: alive,
                },
                period,
                origin,
            };
        }
        tickers.retain(|_, t| t.alive.strong_count() > 0);
        let alive = Arc::new(());
        let (tx, ticks) = watch::channel(Instant::now());
        tickers.insert(
            period,
            Ticker {
                alive: Arc::downgrade(&alive),
                ticks: ticks.clone(),
            },
        );
        let weak = Arc::downgrade(&alive);
        // Ends once no pacer of the period is left; dropping `tx` tells the pacers of another
        // runtime, should this one shut down first, to make a timer of their own.
        runtime.spawn(async move {
            let mut ticks = SharedTicks::new(period, origin);
            loop {
                let at = ticks.next().await;
                if weak.strong_count() == 0 {
                    break;
                }
                tx.send_replace(at);
            }
        });
        Pacer {
            kind: PacerKind::Shared {
                ticks,
                _alive: alive,
            },
            period,
            origin,
        }
    }
}

/// The ticks of a shared pacer: on multiples of `period` since `origin`, a late one skipped.
///
/// Two timers a period apart take turns, so that when one fires the next tick is already
/// armed: tokio wakes its I/O driver (a system call) whenever a timer is armed earlier than
/// the earliest one it knows of, which after a lone timer fired is every timer armed until it
/// next sleeps, such as the timeouts of the polls this tick starts.
struct SharedTicks {
    period: Duration,
    origin: Instant,
    /// The instant `sooner` fires at; `later` fires a period after.
    next: Instant,
    sooner: std::pin::Pin<Box<tokio::time::Sleep>>,
    later: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl SharedTicks {
    fn new(period: Duration, origin: Instant) -> SharedTicks {
        let next = aligned_after(Instant::now(), period, origin);
        SharedTicks {
            period,
            origin,
            next,
            sooner: Box::pin(tokio::time::sleep_until(next)),
            later: Box::pin(tokio::time::sleep_until(next + period)),
        }
    }

    async fn next(&mut self) -> Instant {
        std::future::poll_fn(|cx| {
            // Polled to be armed; its own firing is awaited at the next turn.
            let _ = self.later.as_mut().poll(cx);
            self.sooner.as_mut().poll(cx)
        })
        .await;
        let at = self.next;
        let now = Instant::now();
        if now >= at + self.period {
            // Late by a whole period or more: skip to the next instant, as Skip does.
            self.next = aligned_after(now, self.period, self.origin);
            self.sooner.as_mut().reset(self.next);
            self.later.as_mut().reset(self.next + self.period);
        } else {
            self.next = at + self.period;
            self.sooner.as_mut().reset(self.next + self.period);
            std::mem::swap(&mut self.sooner, &mut self.later);
        }
        at
    }
}

/// The first multiple of `period` since `origin` at or after `now`.
fn aligned_after(now: Instant, period: Duration, origin: Instant) -> Instant {
    let since = now.saturating_duration_since(origin).as_nanos();
    let step = period.as_nanos().max(1);
    let next = since.div_ceil(step) * step;
    origin + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

/// The shared tick of one period: what a new pacer of it subscribes to.
#[derive(Debug)]
struct Ticker {
    /// Held by every pacer of the period; the tick's task ends when none is left.
    alive: Weak<()>,
    /// The instant of the latest tick.
    ticks: watch::Receiver<Instant>,
}

/// Paces a loop: [`Pacer::tick`] waits for the next tick. The pacers of one aligned period on
/// one clock share a timer: with a timer each, every channel re-armed its own after each tick,
/// and tokio wakes its I/O driver for every timer armed earlier than the one it sleeps for (a
/// system call per channel and poll, a fifth of an idle daemon's wake-ups).
#[derive(Debug)]
pub struct Pacer {
    kind: PacerKind,
    /// The period, for a timer of its own should the shared one go away.
    period: Duration,
    origin: Instant,
}

#[derive(Debug)]
enum PacerKind {
    /// A timer of its own: periods too short to align, or no runtime to share one on.
    Own(Interval),
    /// The period's shared tick.
    Shared {
        ticks: watch::Receiver<Instant>,
        /// Keeps the shared tick going.
        _alive: Arc<()>,
    },
}

impl Pacer {
    /// Waits for the next tick and returns its instant. A tick missed while the caller was
    /// busy is skipped, not made up (below [`ALIGNED_FROM`], as the period's interval says).
    /// Cancel-safe.
    pub async fn tick(&mut self) -> Instant {
        loop {
            match &mut self.kind {
                PacerKind::Own(interval) => return interval.tick().await,
                PacerKind::Shared { ticks, .. } => {
                    if ticks.changed().await.is_ok() {
                        return *ticks.borrow_and_update();
                    }
                    // The runtime that ran the shared tick has shut down.
                    self.kind = PacerKind::Own(pacer(self.period, self.origin));
                }
            }
        }
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
    let first = aligned_after(now, period, origin);
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

    #[test]
    fn a_pacer_keeps_ticking_after_the_runtime_that_ran_its_shared_tick_shut_down() {
        let clock = Clock::real();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut a = first.block_on(async { clock.pacer(0.02) });
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut b = second.block_on(async { clock.pacer(0.02) });
        assert!(matches!(b.kind, PacerKind::Shared { .. }), "{b:?}");
        first.block_on(async { a.tick().await });
        drop(first);
        second.block_on(async {
            for _ in 0..3 {
                tokio::time::timeout(Duration::from_secs(5), b.tick())
                    .await
                    .expect("the pacer ticks on a timer of its own");
            }
        });
        assert!(matches!(b.kind, PacerKind::Own(_)), "{b:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_shared_tick_of_a_period_ends_with_its_last_pacer_and_a_new_pacer_starts_another() {
        let clock = Clock::scaled(1.0);
        let mut a = clock.pacer(0.1);
        let mut b = clock.pacer(0.1);
        let (ta, tb) = (a.tick().await, b.tick().await);
        assert_eq!(ta, tb);
        drop((a, b));
        // The tick's task sees no pacer left at its next tick and ends, dropping its sender.
        tokio::time::advance(Duration::from_millis(250)).await;
        tokio::task::yield_now().await;
        let ended = clock.inner.tickers.lock().unwrap()[&Duration::from_millis(100)]
            .ticks
            .has_changed()
            .is_err();
        assert!(ended, "the tick's task still runs with no pacer left");
        let mut c = clock.pacer(0.1);
        let tc = tokio::time::timeout(Duration::from_secs(1), c.tick())
            .await
            .expect("a new shared tick");
        assert_eq!((tc - clock.inner.origin).as_millis() % 100, 0);
        let live = clock.inner.tickers.lock().unwrap().len();
        assert_eq!(live, 1, "the ended tick's entry was replaced");
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

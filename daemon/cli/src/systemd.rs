//! systemd's `Type=notify` protocol for `cyclerd run`: READY=1 once every device was tried and
//! the control port listens, WATCHDOG=1 while every channel loop answers, STOPPING=1 at a stop.
//!
//! All of it is a no-op without `NOTIFY_SOCKET` (a run by hand, or not under systemd) and on
//! other systems than unix.

use cyclerd::Daemon;
use std::time::Duration;

/// Tells the service manager the daemon is up (the unit's start succeeds only now).
pub fn ready(status: &str) {
    #[cfg(unix)]
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
    #[cfg(not(unix))]
    let _ = status;
}

/// Tells the service manager the daemon is stopping (outputs going off, outbox flushing).
pub fn stopping() {
    #[cfg(unix)]
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: switching outputs off"),
    ]);
}

#[cfg(unix)]
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// The unit's `WatchdogSec` (from `WATCHDOG_USEC`), when the service manager watches us.
pub fn watchdog_interval() -> Option<Duration> {
    #[cfg(unix)]
    {
        sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Feeds the watchdog for as long as every channel loop of `daemon` answers a ping: four
/// rounds per `interval`, each waiting at most a quarter of it for the answers. A loop stuck
/// in a device call (or ended) stops the pings: systemd then sends `WatchdogSignal` (SIGTERM
/// in our unit: outputs off as at every stop) and restarts the daemon, whose start switches a
/// stuck channel's output off if the stop could not.
pub async fn feed_watchdog(daemon: Daemon, interval: Duration) {
    let round = interval / 4;
    let mut ticks = tokio::time::interval(round);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Logged once per stuck spell, not every round.
    let mut reported: Vec<String> = Vec::new();
    loop {
        ticks.tick().await;
        let stuck = daemon.stuck_channels(round).await;
        if stuck.is_empty() {
            #[cfg(unix)]
            notify(&[sd_notify::NotifyState::Watchdog]);
        } else if stuck != reported {
            tracing::error!(
                "channel loops not answering within {} ms: {}; the watchdog is no longer fed, \
                 so the service manager restarts the daemon if they stay stuck",
                round.as_millis(),
                stuck.join(", ")
            );
        }
        reported = stuck;
    }
}

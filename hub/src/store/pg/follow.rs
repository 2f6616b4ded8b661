//! Hearing of commits that other hub processes make on the same database, so that a live Tail
//! served here wakes as soon as any process applied new samples.
//!
//! On the primary every batch's transaction sends `NOTIFY cyclerd_applied` (delivered at its
//! commit) and a thread of each process `LISTEN`s on a connection of its own. A standby
//! delivers no notifications: there the thread watches the replay position instead.

use std::time::Duration;

use tokio::sync::watch;

use super::tls::Target;

/// The channel every batch's transaction notifies.
pub(super) const CHANNEL: &str = "cyclerd_applied";
/// How often the thread checks that someone still listens (and, on a standby, the replay
/// position).
const TICK: Duration = Duration::from_millis(200);
/// Wait before reconnecting after the listening connection failed.
const RECONNECT: Duration = Duration::from_secs(1);

/// Runs until nobody holds a receiver of `applied`: bumps it after each commit heard of, and
/// once after every reconnect (commits made meanwhile were not heard).
pub(super) fn follow(target: Target, standby: bool, applied: watch::Sender<u64>) {
    let bump = |applied: &watch::Sender<u64>| applied.send_modify(|n| *n = n.wrapping_add(1));
    while !applied.is_closed() {
        match target.connect() {
            Ok(mut client) => {
                bump(&applied);
                let result = if standby {
                    watch_replay(&mut client, &applied, bump)
                } else {
                    listen(&mut client, &applied, bump)
                };
                if let Err(e) = result {
                    tracing::warn!("hearing of other hub processes' commits: {e}; reconnecting");
                }
            }
            Err(e) => tracing::warn!("hearing of other hub processes' commits: {e}"),
        }
        std::thread::sleep(RECONNECT);
    }
}

fn listen(
    client: &mut postgres::Client,
    applied: &watch::Sender<u64>,
    bump: impl Fn(&watch::Sender<u64>),
) -> Result<(), postgres::Error> {
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    while !applied.is_closed() {
        // A fresh iterator per tick: its timer restarts only on a notification, so one that
        // timed out answers `None` at once from then on. Every notification bumps at once
        // (the watch coalesces): commits every few milliseconds never starve the tails.
        let mut notifications = client.notifications();
        let mut it = notifications.timeout_iter(TICK);
        while fallible_next(&mut it)?.is_some() {
            bump(applied);
            if applied.is_closed() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The next notification within the tick, `None` when none came.
fn fallible_next(
    it: &mut postgres::notifications::TimeoutIter<'_>,
) -> Result<Option<postgres::Notification>, postgres::Error> {
    use postgres::fallible_iterator::FallibleIterator;
    it.next()
}

fn watch_replay(
    client: &mut postgres::Client,
    applied: &watch::Sender<u64>,
    bump: impl Fn(&watch::Sender<u64>),
) -> Result<(), postgres::Error> {
    let mut last: Option<String> = None;
    while !applied.is_closed() {
        // NULL on a primary (then the reader is not a standby after all: the text stays NULL
        // and Tail still wakes on its own process's commits and on its recheck).
        let row = client.query_one("SELECT pg_last_wal_replay_lsn()::text", &[])?;
        let lsn: Option<String> = row.try_get(0)?;
        if lsn.is_some() && lsn != last {
            if last.is_some() {
                bump(applied);
            }
            last = lsn;
        }
        std::thread::sleep(TICK);
    }
    Ok(())
}

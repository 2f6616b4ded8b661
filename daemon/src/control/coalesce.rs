//! A channel's live state as a stream that is never late and never floods: each change goes
//! out at once, unless the last one went out less than a gap ago; then the newest state goes
//! out when the gap has passed (states in between are coalesced, the last is never lost).
//! Unlike a fixed-rate throttle, a change is not held for a phase of the throttle's clock: at
//! the daemon's 10 Hz acquisition every state goes out as it is made.

use futures::Stream;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The states of `rx`, the current one first, changes at most one per `gap`.
pub fn coalesced<T: Clone + Send + Sync + 'static>(
    rx: watch::Receiver<T>,
    gap: Duration,
) -> impl Stream<Item = T> + Send {
    futures::stream::unfold((rx, None::<Instant>), move |(mut rx, last)| async move {
        if last.is_some() {
            rx.changed().await.ok()?;
        }
        if let Some(sent) = last
            && sent.elapsed() < gap
        {
            tokio::time::sleep_until(sent + gap).await;
        }
        let state = rx.borrow_and_update().clone();
        Some((state, (rx, Some(Instant::now()))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn states_made_about_every_100_ms_go_out_at_once_without_waiting_for_a_tick() {
        let (tx, rx) = watch::channel(0u32);
        let mut states = Box::pin(coalesced(rx, Duration::from_millis(20)));
        assert_eq!(states.next().await, Some(0));
        // A poll loop's real rhythm: 100 ms on average, some early, some late.
        for n in 1..=20u32 {
            let every = if n % 2 == 0 { 130 } else { 70 };
            tokio::time::sleep(Duration::from_millis(every)).await;
            let made = Instant::now();
            tx.send(n).unwrap();
            assert_eq!(states.next().await, Some(n));
            assert_eq!(made.elapsed(), Duration::ZERO, "state {n} was held");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn states_faster_than_the_gap_are_coalesced_and_the_newest_is_never_lost() {
        let (tx, rx) = watch::channel(0u32);
        let mut states = Box::pin(coalesced(rx, Duration::from_millis(20)));
        assert_eq!(states.next().await, Some(0));
        let start = Instant::now();
        let producer = tokio::spawn(async move {
            for n in 1..=100u32 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                tx.send(n).unwrap();
            }
            tx
        });
        let mut got = Vec::new();
        while let Some(n) = states.next().await {
            got.push((n, start.elapsed()));
            if n == 100 {
                break;
            }
        }
        let _tx = producer.await.unwrap();
        assert!(got.len() <= 100 / 20 + 2, "coalesced: {got:?}");
        for w in got.windows(2) {
            assert!(w[1].1 - w[0].1 >= Duration::from_millis(20), "{got:?}");
        }
        assert_eq!(got.last().unwrap().0, 100, "the newest state arrives");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_ends_when_the_channel_is_gone() {
        let (tx, rx) = watch::channel(0u32);
        let mut states = Box::pin(coalesced(rx, Duration::from_millis(20)));
        assert_eq!(states.next().await, Some(0));
        drop(tx);
        assert_eq!(states.next().await, None);
    }
}

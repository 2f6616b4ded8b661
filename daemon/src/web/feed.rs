//! The overview's event stream, made once for all its pages: every open overview shows every
//! channel, so serialising each change per page (and writing each on its own) would cost the
//! daemon a JSON encoding and a socket write per channel, per sample, per page (50 pages
//! watching 64 channels at 10 Hz: 32 000 of each a second). Instead one task, running only
//! while a page is open, waits for a change, gathers the others of the same acquisition tick for
//! [`GATHER`], encodes the changed channels' `channel` events (and the `status` event, every
//! [`STATUS_EVERY`]) once into one block of server-sent-event text, and hands the block to every
//! page. A page starts from the whole current state and gets it whole again if it fell behind.

use super::templates::{ChannelView, STATUS_EVERY, StatusView};
use crate::proto::control::ChannelSnapshot;
use axum::body::Bytes;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};

/// How long after a change the task waits for the other channels of the same tick.
pub const GATHER: Duration = Duration::from_millis(10);

/// Blocks a page may fall behind before it is sent the whole state again.
const BACKLOG: usize = 64;

/// The daemon-wide part of the events, as the feed asks for it.
pub type StatusFn = dyn Fn() -> StatusView + Send + Sync;

/// The shared stream of event blocks; cheap to clone.
#[derive(Clone)]
pub struct Feed(Arc<Inner>);

struct Inner {
    /// Every channel's live snapshot, in the overview's order.
    channels: Vec<watch::Receiver<ChannelSnapshot>>,
    /// The alarms and hub line.
    status: Box<StatusFn>,
    /// Where the blocks go; its receivers are the open pages.
    blocks: broadcast::Sender<Bytes>,
    /// Wakes the task when a page opens while none was.
    opened: Notify,
}

impl Feed {
    /// The feed of `channels`, its task running until `stopping` turns true.
    pub fn start(
        channels: Vec<watch::Receiver<ChannelSnapshot>>,
        status: Box<StatusFn>,
        stopping: watch::Receiver<bool>,
    ) -> Feed {
        let (blocks, _) = broadcast::channel(BACKLOG);
        let feed = Feed(Arc::new(Inner {
            channels,
            status,
            blocks,
            opened: Notify::new(),
        }));
        tokio::spawn(feed.clone().run(stopping));
        feed
    }

    /// A page's blocks: the whole current state first, then each block as it is made.
    pub fn subscribe(&self) -> Page {
        // Subscribed before the state is read: a change in between comes twice, never not at all.
        let rx = self.0.blocks.subscribe();
        self.0.opened.notify_one();
        Page {
            feed: self.clone(),
            rx,
            first: Some(self.whole()),
        }
    }

    /// Every channel's current state and the status, as one block.
    fn whole(&self) -> Bytes {
        let mut text = String::new();
        for rx in &self.0.channels {
            push_event(&mut text, "channel", &ChannelView::of(&rx.borrow()));
        }
        push_event(&mut text, "status", &(self.0.status)());
        Bytes::from(text)
    }

    async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut channels = self.0.channels.clone();
        // A channel whose runner is gone (the daemon stopping) has nothing more to say.
        let mut open = vec![true; channels.len()];
        let mut status_due = tokio::time::interval(STATUS_EVERY);
        status_due.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.0.blocks.receiver_count() == 0 {
                // Nobody watches: no wake-up per sample. A page that opens gets the whole
                // state itself, so what changed meanwhile is marked seen.
                tokio::select! {
                    _ = self.0.opened.notified() => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                for rx in &mut channels {
                    rx.borrow_and_update();
                }
                continue;
            }
            let (mut status, mut woke) = (false, None);
            tokio::select! {
                changed = any_changed(&mut channels, &mut open) => woke = changed,
                _ = status_due.tick() => status = true,
                _ = stopping.wait_for(|s| *s) => return,
                // A page left or came: look at the count again.
                _ = self.0.opened.notified() => continue,
            }
            if !status {
                tokio::time::sleep(GATHER).await;
            }
            let mut text = String::new();
            for (k, rx) in channels.iter_mut().enumerate() {
                // The channel that woke the task was marked seen by `changed()`.
                if woke == Some(k) || rx.has_changed().unwrap_or(false) {
                    let view = ChannelView::of(&rx.borrow_and_update());
                    push_event(&mut text, "channel", &view);
                }
            }
            if status {
                push_event(&mut text, "status", &(self.0.status)());
            }
            if !text.is_empty() {
                // No receiver left: the next turn waits for one.
                let _ = self.0.blocks.send(Bytes::from(text));
            }
        }
    }
}

/// Resolves with the index of a channel of `channels` that changed (never, while none is
/// open); a channel found closed is marked so in `open` and resolves with `None`.
async fn any_changed(
    channels: &mut [watch::Receiver<ChannelSnapshot>],
    open: &mut [bool],
) -> Option<usize> {
    let changes: Vec<_> = channels
        .iter_mut()
        .enumerate()
        .filter(|(k, _)| open[*k])
        .map(|(k, rx)| Box::pin(async move { (k, rx.changed().await.is_ok()) }))
        .collect();
    if changes.is_empty() {
        return std::future::pending().await;
    }
    let ((k, ok), _, _) = futures::future::select_all(changes).await;
    if !ok {
        open[k] = false;
        return None;
    }
    Some(k)
}

/// Appends one server-sent event: `event: NAME`, then `data:` with the value as JSON (one line).
fn push_event(text: &mut String, name: &str, value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => {
            let _ = write!(text, "event: {name}\ndata: {json}\n\n");
        }
        Err(e) => tracing::warn!("web monitor: a {name} event cannot be encoded: {e}"),
    }
}

/// One page's side of the feed.
pub struct Page {
    /// To send the whole state again after falling behind.
    feed: Feed,
    /// The blocks as they are made.
    rx: broadcast::Receiver<Bytes>,
    /// The whole state, before the first block.
    first: Option<Bytes>,
}

impl Page {
    /// The next block; `None` once the feed has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        match self.rx.recv().await {
            Ok(block) => Some(block),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(self.feed.whole()),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // The task counts receivers only when woken: the last page leaving lets it rest.
        self.feed.0.opened.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: &str, voltage_v: f64) -> ChannelSnapshot {
        ChannelSnapshot {
            channel_id: id.into(),
            voltage_v,
            ..Default::default()
        }
    }

    fn events(block: &Bytes) -> Vec<String> {
        std::str::from_utf8(block)
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn status() -> Box<StatusFn> {
        Box::new(|| StatusView {
            alarms: Vec::new(),
            alerts: Vec::new(),
            hub: "connected".into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_channels_changed_in_one_tick_reach_every_page_as_one_block() {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|k| watch::channel(snapshot(&format!("psb{k}/1"), 3.0)))
            .unzip();
        let (_stop, stopping) = watch::channel(false);
        let feed = Feed::start(rxs, status(), stopping);
        let mut pages = [feed.subscribe(), feed.subscribe()];
        for page in &mut pages {
            let whole = events(&page.next().await.unwrap());
            assert_eq!(whole.len(), 4, "three channels and the status: {whole:?}");
        }
        // Two of the three channels take a sample in the same tick.
        txs[0].send(snapshot("psb0/1", 3.5)).unwrap();
        txs[2].send(snapshot("psb2/1", 3.7)).unwrap();
        let mut blocks = Vec::new();
        for page in &mut pages {
            // A status-only block may come first: skip it.
            let block = loop {
                let b = page.next().await.unwrap();
                if events(&b).iter().any(|e| e.starts_with("event: channel")) {
                    break b;
                }
            };
            blocks.push(block);
        }
        assert_eq!(blocks[0], blocks[1], "one encoding for every page");
        let channel_events: Vec<String> = events(&blocks[0])
            .into_iter()
            .filter(|e| e.starts_with("event: channel"))
            .collect();
        assert_eq!(channel_events.len(), 2, "{channel_events:?}");
        assert!(channel_events[0].contains("psb0/1") && channel_events[0].contains("3.5"));
        assert!(channel_events[1].contains("psb2/1") && channel_events[1].contains("3.7"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_channels_sample_reaches_the_page_within_the_gather_time() {
        let (tx, rx) = watch::channel(snapshot("psb1/1", 3.0));
        let (_stop, stopping) = watch::channel(false);
        let feed = Feed::start(vec![rx], status(), stopping);
        let mut page = feed.subscribe();
        page.next().await.unwrap();
        for k in 1..=3 {
            // One channel, one sample: the change that wakes the feed is the one it must send.
            let volts = 3.0 + f64::from(k) / 10.0;
            tx.send(snapshot("psb1/1", volts)).unwrap();
            let sent = tokio::time::timeout(GATHER * 5, async {
                loop {
                    let block = events(&page.next().await.unwrap());
                    if let Some(e) = block.iter().find(|e| e.starts_with("event: channel")) {
                        return e.clone();
                    }
                }
            })
            .await
            .expect("the sample is pushed within a few gather periods");
            assert!(sent.contains(&format!("{volts:.3} V")), "{sent}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_that_fell_behind_gets_the_whole_state_again() {
        let (tx, rx) = watch::channel(snapshot("psb1/1", 3.0));
        let (_stop, stopping) = watch::channel(false);
        let feed = Feed::start(vec![rx], status(), stopping);
        let mut slow = feed.subscribe();
        let mut fast = feed.subscribe();
        slow.next().await.unwrap();
        fast.next().await.unwrap();
        for k in 1..=(BACKLOG * 2) {
            tx.send(snapshot("psb1/1", 3.0 + k as f64 * 1e-3)).unwrap();
            // The fast page reads every block as it comes.
            fast.next().await.unwrap();
        }
        let last = format!("{}", 3.0 + (BACKLOG * 2) as f64 * 1e-3);
        let block = events(&slow.next().await.unwrap());
        assert!(block.iter().any(|e| e.contains(&last)), "{block:?}");
        assert!(block.iter().any(|e| e.starts_with("event: status")));
    }
}

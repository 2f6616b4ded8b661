//! The event stream (`GET /events`, server-sent events) the pages update from.
//!
//! The overview's stream (every channel) is the shared [`Feed`]'s blocks. A channel page's
//! (`?channel=`) is its own: its snapshots come through the gRPC Watch's coalescing
//! ([`crate::control::coalesce`]): a new sample goes out at once, at most one per channel per
//! [`WATCH_GAP`], the newest never lost. Events:
//! - `channel`: a [`ChannelView`] as JSON, one per change (the current state first);
//! - `status`: the daemon's alarms and hub connection, every [`STATUS_EVERY`].
//!
//! Every stream ends when the monitor shuts down, or when its caller's token is revoked.

use super::feed::Feed;
use super::templates::{ChannelView, STATUS_EVERY, StatusView};
use crate::control::coalesce::coalesced;
use crate::daemon::Daemon;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;

/// Shortest gap between two of one channel's events (as the gRPC Watch's).
pub const WATCH_GAP: Duration = Duration::from_millis(20);

/// An open stream checks its caller's token again this often, so a revocation ends it.
pub const RECHECK_PERIOD: Duration = Duration::from_secs(1);

type Events = Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// The events of every channel, or of `only` that one, until `stopping` turns true or, checked
/// every [`RECHECK_PERIOD`], `allowed` says the caller's token was revoked.
pub fn events(
    daemon: &Daemon,
    only: Option<&str>,
    stopping: watch::Receiver<bool>,
    allowed: impl Fn() -> bool + Send + 'static,
) -> impl axum::response::IntoResponse {
    let channels = daemon
        .watchers()
        .into_iter()
        .filter(|rx| only.is_none_or(|id| rx.borrow().channel_id == id))
        .map(|rx| {
            coalesced(rx, WATCH_GAP)
                .map(|s| {
                    Ok(Event::default()
                        .event("channel")
                        .json_data(ChannelView::of(&s))
                        .unwrap_or_else(|_| Event::default().comment("unserialisable")))
                })
                .boxed()
        });
    let daemon = daemon.clone();
    let status = futures::stream::unfold(tokio::time::interval(STATUS_EVERY), move |mut every| {
        let daemon = daemon.clone();
        async move {
            every.tick().await;
            let event = Event::default()
                .event("status")
                .json_data(StatusView::of(&daemon))
                .unwrap_or_else(|_| Event::default().comment("unserialisable"));
            Some((Ok(event), every))
        }
    })
    .boxed();
    let all = futures::stream::select_all(channels.chain(std::iter::once(status)));
    let stream: Events = Box::pin(all.take_until(stopped(stopping, allowed)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Every channel's events from the shared [`Feed`] (the overview's stream), ending as
/// [`events`] does.
pub fn overview(
    feed: &Feed,
    stopping: watch::Receiver<bool>,
    allowed: impl Fn() -> bool + Send + 'static,
) -> impl axum::response::IntoResponse {
    let blocks = futures::stream::unfold(feed.subscribe(), |mut page| async move {
        let block = page.next().await?;
        Some((Ok::<_, Infallible>(block), page))
    });
    let body = axum::body::Body::from_stream(blocks.take_until(stopped(stopping, allowed)));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// Resolves when the monitor shuts down or, checked every [`RECHECK_PERIOD`], `allowed` says
/// the caller's token was revoked.
async fn stopped(mut stopping: watch::Receiver<bool>, allowed: impl Fn() -> bool) {
    let mut every = tokio::time::interval(RECHECK_PERIOD);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            _ = every.tick() => if !allowed() {
                return;
            },
        }
    }
}

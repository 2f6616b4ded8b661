//! The daemon's `/metrics` (Prometheus, in the OpenMetrics text format), served by the web
//! monitor with the same credential rule as its pages: open on loopback, a reader token beyond.
//!
//! Every number is read at scrape time from the counters the daemon keeps anyway (the ones
//! `cyclerctl status` shows), so nothing is counted twice.
//!
//! | series | type | what |
//! |---|---|---|
//! | `cyclerd_samples_acquired_total` | counter | samples read from devices (over the store's life) |
//! | `cyclerd_samples_acknowledged_total` | counter | samples the hub acknowledged (over the store's life) |
//! | `cyclerd_device_errors_total` | counter | failed reads of a device (each failed poll), since the daemon started |
//! | `cyclerd_device_reconnects_total` | counter | links to a device made again after it was lost, since the daemon started |
//! | `cyclerd_outbox_entries` | gauge | outbox entries the hub has not acknowledged |
//! | `cyclerd_outbox_bytes` | gauge | their size (what `store.max_bytes` limits) |
//! | `cyclerd_outbox_oldest_unacknowledged_age_seconds` | gauge | age of the oldest of them (0: none): the upload lag |
//! | `cyclerd_outbox_dead_letters` | gauge | entries parked as dead letters |
//! | `cyclerd_outbox_commit_failing` | gauge | 1 while the outbox cannot commit (disk full, I/O error) |
//! | `cyclerd_hub_connected` | gauge | 1 while an upload stream to the hub is open |
//! | `cyclerd_channels{state}` | gauge | channels in each state (`running`, `offline`, ...) |
//! | `cyclerd_channel_test_samples{channel}` | gauge | samples of the channel's current (or last) test |

use crate::daemon::Daemon;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// The media type of the OpenMetrics text format, which Prometheus asks for and reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every state a channel reports, so that each `cyclerd_channels{state}` series exists (at 0)
/// before a channel first enters it: a rate or an alert over it then sees no gap.
const STATES: [&str; 8] = [
    "idle",
    "running",
    "paused",
    "finished",
    "stopped",
    "faulted",
    "interrupted",
    "offline",
];

/// The daemon's numbers at one instant, as one scrape encodes them.
#[derive(Debug, Default)]
struct Reading {
    acquired: u64,
    acknowledged: u64,
    /// Failed device reads and reconnections, since the daemon started.
    device_errors: u64,
    reconnects: u64,
    pending_entries: u64,
    pending_bytes: u64,
    /// Seconds; 0 when nothing waits.
    oldest_pending_age_s: f64,
    dead_letters: u64,
    commit_failing: bool,
    hub_connected: bool,
    /// Channels per state (every state of [`STATES`], and any other seen).
    states: BTreeMap<String, i64>,
    /// Each channel's id and the samples of its test.
    channels: Vec<(String, u64)>,
}

/// The daemon's `/metrics` text now. Reads the outbox's oldest entry from its file (on a
/// blocking thread).
pub async fn render(daemon: &Daemon) -> String {
    let outbox = daemon.outbox().clone();
    let stats = outbox.stats().clone();
    let oldest = tokio::task::spawn_blocking(move || {
        outbox
            .reader()
            .and_then(|r| r.oldest_pending_age_s())
            .map_err(|e| tracing::debug!("metrics: the outbox's oldest entry: {e}"))
            .unwrap_or(0.0)
    })
    .await
    .unwrap_or(0.0);
    let mut states: BTreeMap<String, i64> = STATES.iter().map(|s| (s.to_string(), 0)).collect();
    let snapshots = daemon.snapshots();
    for s in &snapshots {
        *states.entry(s.state.clone()).or_default() += 1;
    }
    let (device_errors, reconnects) = daemon.device_link_counts();
    let reading = Reading {
        device_errors,
        reconnects,
        acquired: daemon.samples_acquired(),
        acknowledged: stats.samples_acked.load(Ordering::Acquire),
        pending_entries: stats.backlog(),
        pending_bytes: stats.pending_bytes.load(Ordering::Acquire),
        oldest_pending_age_s: oldest,
        dead_letters: stats.dead_letters.load(Ordering::Acquire),
        commit_failing: stats.failing.load(Ordering::Acquire),
        hub_connected: daemon.hub_connected(),
        states,
        channels: snapshots
            .into_iter()
            .map(|s| (s.channel_id, s.samples))
            .collect(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(reading));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// A number as a gauge value.
fn gauge(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for Reading {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "cyclerd_samples_acquired",
                "Samples read from devices, over the life of the daemon's store.",
                self.acquired,
            ),
            (
                "cyclerd_samples_acknowledged",
                "Samples the hub acknowledged, over the life of the daemon's store.",
                self.acknowledged,
            ),
            (
                "cyclerd_device_errors",
                "Failed reads of a device (each failed poll), since the daemon started.",
                self.device_errors,
            ),
            (
                "cyclerd_device_reconnects",
                "Links to a device made again after it was lost, since the daemon started.",
                self.reconnects,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "cyclerd_outbox_entries",
                "Outbox entries the hub has not acknowledged.",
                self.pending_entries,
            ),
            (
                "cyclerd_outbox_bytes",
                "Bytes of the outbox entries the hub has not acknowledged.",
                self.pending_bytes,
            ),
            (
                "cyclerd_outbox_dead_letters",
                "Outbox entries parked as dead letters.",
                self.dead_letters,
            ),
            (
                "cyclerd_outbox_commit_failing",
                "1 while the outbox cannot commit (disk full, I/O error).",
                u64::from(self.commit_failing),
            ),
            (
                "cyclerd_hub_connected",
                "1 while an upload stream to the hub is open.",
                u64::from(self.hub_connected),
            ),
        ] {
            let g = gauge(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let age = ConstGauge::new(self.oldest_pending_age_s);
        age.encode(encoder.encode_descriptor(
            "cyclerd_outbox_oldest_unacknowledged_age",
            "Age of the oldest outbox entry the hub has not acknowledged (0: none): the upload \
             lag.",
            Some(&Unit::Seconds),
            age.metric_type(),
        )?)?;
        let mut states = encoder.encode_descriptor(
            "cyclerd_channels",
            "Channels in each state.",
            None,
            gauge(0).metric_type(),
        )?;
        for (state, n) in &self.states {
            ConstGauge::new(*n).encode(states.encode_family(&[("state", state.as_str())])?)?;
        }
        let mut samples = encoder.encode_descriptor(
            "cyclerd_channel_test_samples",
            "Samples of the channel's current (or last) test.",
            None,
            gauge(0).metric_type(),
        )?;
        for (channel, n) in &self.channels {
            gauge(*n).encode(samples.encode_family(&[("channel", channel.as_str())])?)?;
        }
        Ok(())
    }
}

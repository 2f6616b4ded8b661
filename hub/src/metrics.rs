//! The hub's `/metrics` (Prometheus, in the OpenMetrics text format), served on its HTTP
//! listener with the same credential rule as the HTTP API's reads.
//!
//! | series | type | what |
//! |---|---|---|
//! | `cyclerhub_ingest_samples_total` | counter | sample rows stored (re-sent ones not counted) |
//! | `cyclerhub_ingest_entries_total{outcome}` | counter | outbox entries `applied`, `duplicate` (held already) or `rejected` |
//! | `cyclerhub_ingest_batch_duration_seconds` | histogram | time to store one batch of entries |
//! | `cyclerhub_upload_streams` | gauge | upload streams open now |
//! | `cyclerhub_upload_streams_max` | gauge | upload streams served at once (`--max-upload-streams`) |
//! | `cyclerhub_query_duration_seconds{api,method}` | histogram | time to answer a query (`grpc` method, or `http` route) |
//!
//! Labels never carry lab data (no test, cell or daemon ids): one reader of any lab may scrape.
//! A streamed answer (samples, a tail, a download) is timed to its first response, not its end.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// The media type of the OpenMetrics text format, which Prometheus asks for and reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a query's duration: which API and which of its methods (a route template, never a
/// path with ids in it).
type QueryLabels = [(&'static str, String); 2];

/// The hub's counters; cheap to clone (every service and the HTTP state hold one).
#[derive(Clone)]
pub struct HubMetrics(Arc<Inner>);

struct Inner {
    /// Every series, for the scrape.
    registry: Registry,
    /// Sample rows inserted.
    samples: Counter,
    /// Entries by outcome.
    entries: Family<[(&'static str, &'static str); 1], Counter>,
    /// Time to store a batch.
    batch: Histogram,
    /// Time to answer a query, by API and method.
    queries: Family<QueryLabels, Histogram, fn() -> Histogram>,
}

/// Upload streams open, read from the semaphore that limits them (not counted twice).
#[derive(Debug)]
struct Streams {
    /// One permit per stream that may still open.
    permits: Arc<Semaphore>,
    /// All of them.
    max: usize,
}

impl Collector for Streams {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let open = self.max.saturating_sub(self.permits.available_permits());
        for (name, help, value) in [
            ("cyclerhub_upload_streams", "Upload streams open now.", open),
            (
                "cyclerhub_upload_streams_max",
                "Upload streams served at once (--max-upload-streams).",
                self.max,
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Query durations from 1 ms to about 16 s.
fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl HubMetrics {
    /// Counters at zero; `streams` (of `max` permits) is the upload streams' limit.
    pub fn new(streams: Arc<Semaphore>, max: usize) -> HubMetrics {
        let mut registry = Registry::default();
        let samples = Counter::default();
        registry.register(
            "cyclerhub_ingest_samples",
            "Sample rows stored from upload streams (re-sent samples not counted).",
            samples.clone(),
        );
        let entries = Family::default();
        registry.register(
            "cyclerhub_ingest_entries",
            "Outbox entries received: applied, duplicate (held already) or rejected.",
            entries.clone(),
        );
        let batch = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "cyclerhub_ingest_batch_duration",
            "Time to store one batch of entries.",
            Unit::Seconds,
            batch.clone(),
        );
        let queries: Family<QueryLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(query_histogram);
        registry.register_with_unit(
            "cyclerhub_query_duration",
            "Time to answer a query (to the first response of a streamed one), by API (grpc, \
             http) and method (gRPC method or HTTP route).",
            Unit::Seconds,
            queries.clone(),
        );
        registry.register_collector(Box::new(Streams {
            permits: streams,
            max,
        }));
        HubMetrics(Arc::new(Inner {
            registry,
            samples,
            entries,
            batch,
            queries,
        }))
    }

    /// Counts a stored batch: `samples` rows inserted, entries by outcome, how long it took.
    pub fn batch(&self, outcome: &crate::store::BatchOutcome, took: std::time::Duration) {
        let i = &self.0;
        i.samples.inc_by(outcome.samples_inserted);
        for (name, n) in [
            ("applied", outcome.applied),
            ("duplicate", outcome.duplicates),
            ("rejected", outcome.rejections.len()),
        ] {
            i.entries
                .get_or_create(&[("outcome", name)])
                .inc_by(n as u64);
        }
        i.batch.observe(took.as_secs_f64());
    }

    /// Records a query's duration when the returned guard drops.
    pub fn query(&self, api: &'static str, method: impl Into<String>) -> QueryTimer {
        QueryTimer {
            metrics: self.clone(),
            labels: [("api", api.to_owned()), ("method", method.into())],
            started: Instant::now(),
        }
    }

    /// Every series as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a collector that fails leaves what it wrote.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// Times a query from its creation to its drop.
pub struct QueryTimer {
    /// Where the duration goes.
    metrics: HubMetrics,
    /// Its API and method.
    labels: QueryLabels,
    /// When the query came in.
    started: Instant,
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        self.metrics
            .0
            .queries
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

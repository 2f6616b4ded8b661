//! `cyclerhub`: the lab hub that cyclerd daemons stream their outboxes to.
//!
//! A daemon opens one bidirectional `cyclerd.ingest.v1.Ingest/Upload` stream, says Hello with its
//! `(daemon_id, store_epoch)`, learns from the hub's ResumePoint how far the hub has durably
//! applied its log, and pipelines entries from there. The hub applies entries in batches, one
//! database transaction per batch, and answers each batch with one cumulative Ack after the commit.
//! Entries it cannot apply are answered with a Rejection, recorded, and covered by the Ack, so a
//! poison entry never blocks the entries behind it. Applying is idempotent (primary keys, and
//! inserts that ignore conflicts), so a daemon re-sending after a lost Ack changes nothing:
//! at-least-once sending + idempotent apply = exactly-once effect.
//!
//! # Layout
//!
//! - [`store`]: [`HubStore`], the database, SQLite (a file) or PostgreSQL (a `postgres://`
//!   URL, optionally over TLS), behind one narrow trait per concern:
//!   - `store/mod.rs`: the facade ([`HubStore`]: open/connect and the public methods), which
//!     holds its backend behind the `Backend` trait (queries, tokens, labs, schemas, Hello);
//!   - `store/ingest.rs`: what every ingest entry means (validation, ownership, rejections,
//!     the resume point, and the labs' teams, instruments, cells and metadata that breaks a
//!     lab's JSON Schemas), written once against `BatchWrites`, the statements of a batch;
//!   - `store/samples.rs`: how samples are kept, written once: a batch becomes a chunk row
//!     (only the seqs not held yet, so re-applying stays exact; a small batch continuing a
//!     small chunk is merged into it), chunks are read back a page at a time, and a hub made
//!     before chunks (one row per sample) is converted on open, a transaction per test;
//!     `store/chunk.rs`: chunks as rows of samples, through the chunk codec
//!     (`cyclerd_proto::chunk`, shared with the daemon's outbox: each column delta or
//!     delta-of-delta varints of its smallest exact form, snappy when it pays; bit-exact, and
//!     any bytes decode to samples or an error);
//!   - `store/rows.rs`: the row types the reads return ([`TestRow`], [`SampleRow`], ...) and a
//!     macro per row type from a result row; `store/error.rs`: [`StoreError`];
//!     `store/sql.rs`: the statements both backends run as they are;
//!   - `store/sqlite/` and `store/pg/`: each backend as `mod.rs` (its connections), `schema.rs`
//!     (migrations), `writes.rs` (`BatchWrites`, the hot path: a chunk row per batch) and
//!     `queries.rs` (`Backend`); `pg/tls.rs`: TLS to the server, as with libpq.
//! - [`server`]: [`server::run`], the gRPC server: the ingest stream (one task per stream, batching
//!   what is ready and handing it to the store's single writer off the async executor), plus gRPC
//!   health and reflection.
//! - [`query`]: `cyclerd.hub.v1.Query`: list and get tests, read samples (columns, time range),
//!   tail a running test (woken by each commit, not by polling), list its cycles; with tokens,
//!   a lab's only. `query/mod.rs` is the service, `query/samples.rs` the sample reads,
//!   `query/catalog.rs` the test and cell lists.
//! - [`http`]: the HTTP side beside gRPC (`--http`): the `/api/v1` API (JSON, samples
//!   streamed as CSV or Parquet, plots reduced per pixel, an OpenAPI document) and the web app
//!   (sessions, pages, plots), through the same query functions as gRPC.
//! - [`cycles`]: a test's per-cycle results with their derived values (efficiency, mean
//!   voltages, retention), as `ListCycles`, `cyclerhub cycles` and the exports give them: the
//!   daemon's summaries, or computed from the samples for a test stored before it sent any.
//! - [`export`]: a test as Battery Data Format CSV or Parquet, or as Battery Archive CSV, each
//!   with a metadata JSON beside it, optionally anonymised ([`export::export_files`]).
//! - [`share`]: sharing between hubs (`cyclerhub share`): a share's log of entries with ids
//!   fixed once (`share/fill.rs`), each turned into the entry sent, anonymised by the lab's
//!   pseudonyms when asked (`share/entries.rs`), and the streams `serve` runs to the receiving
//!   hubs' ingest service (`share/send.rs`); the tables are in `store/shares.rs`, which also
//!   keeps, on the receiving side, where each share stream comes from.
//! - [`token`]: tokens as text and as stored (`cyh_<id>_<secret>`, kept as a hash), their
//!   roles (daemon or reader) and the rule for lab and token names; no storage.
//! - [`metrics`]: `/metrics` for Prometheus on the HTTP listener: ingest, upload streams,
//!   query durations.
//! - [`alerts`]: lab-wide alert rules (`--alerts FILE`: tests ending or faulting on any lab
//!   PC, capacity retention, a daemon gone silent) over the store and the upload streams,
//!   delivered by `cyclerd_alerts` as the daemon's are.
//! - [`auth`]: the one check of a request's token, against the store, that ingest and
//!   queries share.
//! - [`setup`]: `cyclerhub setup`, a lab's hub secure in one command (lab CA, the hub's
//!   certificate, the first tokens, private files, nothing overwritten).
//! - [`cli`]: the `cyclerhub` command line, the only place that turns errors into `anyhow`
//!   messages for people; `src/main.rs` just calls it. `cli/mod.rs` holds the commands and
//!   their arguments, `cli/serve.rs` runs `serve`, `cli/admin.rs` `setup`, `token`, `schema`
//!   and `labs`, `cli/share.rs` `share`, `cli/read.rs` `tests`, `show`, `cells`, `samples`
//!   and `export` (from the database, or through `remote`, the `--hub URL` client of the
//!   query service).
//! - `testing` (feature `testing`): a throwaway PostgreSQL cluster for tests and benches.

pub mod alerts;
pub mod auth;
pub mod cli;
pub mod cycles;
pub mod export;
pub mod http;
pub mod metrics;
pub mod query;
mod remote;
pub mod server;
pub mod setup;
pub mod share;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
mod utc;

pub use store::{CellRow, EventRow, HubStore, RejectionRow, SampleRow, StoreError, TestRow};

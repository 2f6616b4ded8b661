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
//!   URL, optionally over TLS): schema and migrations, the batched apply of ingest entries
//!   (which also records labs' teams, instruments, and metadata that breaks a lab's JSON
//!   Schemas), the labs' schemas, and the queries (tests, samples, events, rejections).
//! - [`server`]: [`server::run`], the gRPC server: the ingest stream (one task per stream, batching
//!   what is ready and handing it to the store's single writer off the async executor), plus gRPC
//!   health and reflection.
//! - [`query`]: `cyclerd.hub.v1.Query`: list and get tests, read samples (columns, time range),
//!   tail a running test (woken by each commit, not by polling); with tokens, a lab's only.
//! - [`export`]: a test as Battery Data Format CSV or Parquet, or as Battery Archive CSV, each
//!   with a metadata JSON beside it, optionally anonymised ([`export::export_files`]).
//! - [`auth`]: tokens (`cyh_<id>_<secret>`, stored as a hash), their labs and roles (daemon or
//!   reader), and the one check of a request's token that ingest and queries share.
//! - [`cli`]: the `cyclerhub` command line (`serve`, `token`, `schema`, `labs`, `tests`,
//!   `show`, `samples`, `cells`, `export`),
//!   the only place that turns errors into `anyhow` messages for people; `src/main.rs` just
//!   calls it. `remote`: its `--hub URL` reads, over the query service.
//! - `testing` (feature `testing`): a throwaway PostgreSQL cluster for tests and benches.

pub mod auth;
pub mod cli;
pub mod export;
pub mod query;
mod remote;
pub mod server;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod utc;

pub use store::{CellRow, EventRow, HubStore, RejectionRow, SampleRow, StoreError, TestRow};

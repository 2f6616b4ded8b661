//! cyclerd: the acquisition daemon that runs next to the cyclers.
//!
//! # Layout
//! - [`config`]: the lab configuration (TOML via `config`, `CYCLERD_*` overrides).
//! - [`chamber`]: one task per thermal chamber: readings shared with the channels inside, set
//!   point ownership, and the verdict that stops those channels when the chamber is unsafe.
//! - [`outbox`]: the SQLite outbox; one writer thread, one commit per batch, acked entries deleted.
//! - [`devices`]: `[[device]]` entries to connected power stages (EA PSB, SCPI, Riden, Maccor
//!   direct mode) and cyclers (Neware, Maccor, Arbin).
//! - [`offline`]: devices that do not answer at start: their channels wait, offline, while the
//!   daemon retries.
//! - [`runner`]: the stepped channel runner (engine + power stage + safety + sample batches).
//! - [`metadata`]: a test's primary metadata (required) and its secondary and tertiary tiers.
//! - [`lab_schemas`]: the lab's JSON Schemas for those tiers, from the hub (a copy kept in the
//!   outbox), checked before a test starts.
//! - [`native`]: the native channel runner (compile, deliver, start, follow and backfill a
//!   dedicated cycler's channels; re-attach after a restart).
//! - [`uploader`]: the gRPC stream from the outbox to the hub (resume, pipelining, acks, backoff).
//! - [`daemon`]: wires the above into a running daemon and its handle.
//! - [`control`]: the `cyclerd.daemon.v1.Control` gRPC service used by `cyclerctl`.
//! - [`simulate`]: a protocol against the cell model with no device (`cyclerctl protocol simulate`).
//! - [`demo`]: `cyclerd demo`: simulators, the daemon and an embedded hub in one process.
//!
//! - [`cli`]: the `cyclerd` command line (`run`, `demo`, `sim FAMILY`: one simulated device
//!   standalone); `src/bin/cyclerd.rs` just calls it.
//!
//! The binaries `cyclerd` and `cyclerctl` are thin command-line shells over these modules.

pub mod chamber;
pub mod channel;
pub mod config;
pub mod control;
pub mod daemon;
pub mod devices;
pub mod lab_schemas;
pub mod metadata;
pub mod outbox;
pub mod retry;
pub mod simulate;
pub mod uploader;

pub use cyclerd_proto as proto;
pub use daemon::{Daemon, Summary};

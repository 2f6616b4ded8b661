//! cyclerd: the acquisition daemon that runs next to the cyclers, as a library.
//!
//! The binaries (`cyclerd`, `cyclerctl`), the command line, the demo and its embedded hub live in
//! `daemon/cli` (crate `cyclerd-cli`): this library does not depend on the hub, its peer.
//!
//! # Layout
//!
//! Lower modules first; a module uses only those above it in this list (or its own parent),
//! never a sibling that uses it back (`tests/tests/all/layout.rs` checks).
//!
//! - [`outbox`]: the SQLite outbox; one writer thread, one commit per batch, acked entries deleted.
//! - [`config`]: the lab configuration (TOML via `config`, `CYCLERD__*` overrides).
//! - [`retry`]: waiting for a device that does not answer (1 s doubling to 10 s), for whoever
//!   implements [`retry::Waiting`]; knows nothing of channels.
//! - [`chamber`]: one task per thermal chamber: readings shared with the channels inside, set
//!   point ownership, and the verdict that stops those channels when the chamber is unsafe.
//! - [`channel`]: a channel's shared vocabulary (spec, commands, start errors, how a test ends)
//!   and its children: [`channel::journal`] (the one writer of a test's outbox entries and
//!   checkpoints), [`channel::stepped`] (engine + power stage + safety), [`channel::native`]
//!   (compile, deliver, start, follow and backfill a dedicated cycler's channels; re-attach after
//!   a restart), [`channel::offline`] (the channels of a device that does not answer yet).
//! - [`params`]: the plan a test runs: its protocol resolved with the parameters given at start
//!   and the cell's nominal capacity (and again when it resumes).
//! - [`metadata`]: a test's primary metadata (required) and its secondary and tertiary tiers.
//! - [`lab_schemas`]: the lab's JSON Schemas for those tiers, from the hub (a copy kept in the
//!   outbox), checked before a test starts.
//! - [`devices`]: `[[device]]` and `[[chamber]]` entries to connected power stages (EA PSB,
//!   SCPI, Riden, Maccor direct mode), cyclers (Neware, Maccor, Arbin) and chambers, and their
//!   channels' tasks: the one place that knows every device family.
//! - [`failsafe`]: a start that fails after the configuration was read switches every reachable
//!   stepped output off before the process exits.
//! - [`uploader`]: the gRPC stream from the outbox to the hub (resume, pipelining, acks, backoff).
//! - [`alerts`]: rules over what the daemon sees (tests ending or faulting, channels and the
//!   hub lost, the outbox filling, chamber alarms, capacity fading), kept in a small SQLite file
//!   and delivered by webhook and e-mail, retried, once.
//! - [`daemon`]: wires the above into a running daemon and its handle.
//! - [`metrics`]: `/metrics` for Prometheus, read from the daemon's own counters.
//! - [`control`]: the `cyclerd.daemon.v1.Control` gRPC service used by `cyclerctl`.
//! - [`web`]: the web monitor: the same live state, start and stop, in a browser.
//! - [`simulate`]: a protocol against the cell model with no device (`cyclerctl protocol simulate`).

pub mod alerts;
pub mod chamber;
pub mod channel;
pub mod config;
pub mod control;
pub mod daemon;
pub mod devices;
pub mod failsafe;
pub mod lab_schemas;
pub mod metadata;
pub mod metrics;
pub mod outbox;
pub mod params;
pub mod retry;
pub mod simulate;
pub mod uploader;
pub mod web;

pub use cyclerd_proto as proto;
pub use daemon::{Daemon, HubSettings, Summary};

//! The `cyclerd` and `cyclerctl` command lines, and what joins the daemon and the hub.
//!
//! The daemon (`cyclerd`, the library) and the hub (`cyclerhub`) are peers: neither depends on
//! the other. What needs both sits here, above them: the demo's embedded hub and the pipeline
//! benchmark; and so do the binaries, thin shells over the daemon's library.
//!
//! # Layout
//!
//! - [`cyclerd`]: the `cyclerd` command line (`run`, `demo`, `sim FAMILY`, `token`); `src/bin/cyclerd.rs`
//!   just calls [`cyclerd::main`]. `run` listens for the stop signal before anything can resume
//!   a test, so a SIGTERM at any point of a start still switches every output off.
//! - [`run`]: `cyclerd run` itself, from the start to the stop; the command line and the Windows
//!   service both call it.
//! - [`sim`](crate::sim): `cyclerd sim FAMILY`, one simulated device standalone on its real
//!   wire protocol (TCP, or a pseudo-terminal linked from a path).
//! - [`lab`]: a simulated lab (simulators of one family, optionally a chamber, the daemon and an
//!   embedded hub on one scaled clock), for the demo, the end-to-end tests and the benchmark.
//! - [`demo`]: `cyclerd demo`: a simulated lab run live, with progress lines and a summary.
//! - [`signal`]: Ctrl-C and SIGTERM, listened for from the moment they are asked for.
//! - [`check_config`]: `cyclerd check-config [FILE]`, a configuration checked as `run` would,
//!   without reaching devices, the outbox or the hub.
//! - [`systemd`]: `Type=notify` for `cyclerd run`: READY=1, and WATCHDOG=1 while every channel
//!   loop answers (no-ops outside systemd and off unix).
//! - `windows` (Windows only): `cyclerd service run`, the daemon as a Windows service.
//! - [`token`]: `cyclerd token issue|list|revoke`, the control API's tokens.
//! - [`view`]: the channels' live view (natural order, at most 80 columns), as `cyclerctl
//!   status`, `cyclerctl watch` and the demo print it.
//! - `src/bin/cyclerctl.rs`: `cyclerctl`, the daemon's control client (status, watch, start,
//!   stop, outbox) and the protocol tools (check, compile, import, simulate).
//! - `benches/pipeline.rs`: outbox, uploader and hub rates against baselines in the same run.

pub mod check_config;
pub mod cyclerd;
pub mod demo;
pub mod lab;
pub mod protocol_check;
pub mod run;
pub mod signal;
mod sim;
pub mod systemd;
pub mod token;
pub mod view;
#[cfg(windows)]
pub mod windows;

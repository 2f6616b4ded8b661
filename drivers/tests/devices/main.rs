//! The drivers against their simulators, through real sockets and pseudo-terminals: one module
//! per device family, named after it, so `cargo test -p cyclerd-drivers riden` selects a
//! family's tests along with its unit tests; `common` holds what the cycler families share,
//! `chamber` what the thermal chambers share.

mod arbin;
#[cfg(unix)]
mod binder;
mod chamber;
mod common;
mod ea_psb;
mod espec;
mod maccor;
mod neware;
#[cfg(unix)]
mod riden;
mod scpi;
mod watlow;
mod weiss;

use cyclerd_drivers::cell::{CellParams, Chemistry};
use std::future::Future;
use std::time::Duration;

/// How long a client waits for a reply where a test does not want it to time out.
const TIMEOUT: Duration = Duration::from_secs(2);

/// An 18650-like NMC cell of 2.5 Ah at state of charge `soc`, on every simulated channel.
fn cell(soc: f64) -> CellParams {
    CellParams {
        initial_soc: soc,
        ..CellParams::new(Chemistry::Nmc, 2.5)
    }
}

/// Bounds a wait, so a broken fault turns into a failed test rather than a hung one.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

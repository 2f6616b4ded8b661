//! The drivers against their simulators, through real sockets and pseudo-terminals: one module
//! per device family, named after it, so `cargo test -p cyclerd-drivers riden` selects a
//! family's tests along with its unit tests.

mod arbin;
mod ea_psb;
mod maccor;
mod neware;
#[cfg(unix)]
mod riden;
mod scpi;

use std::future::Future;
use std::time::Duration;

/// Bounds a wait, so a broken fault turns into a failed test rather than a hung one.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

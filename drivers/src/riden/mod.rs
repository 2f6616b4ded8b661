//! Riden RD6006 / RD6012 / RD6018 (/ RD6024) DC supplies over Modbus RTU on a serial line
//! (facts: `shared/devices/riden.md`). Charge-only: they source current and cannot sink it.
//!
//! - [`wire`]: register table, model identification and scaling: the device facts, no I/O.
//! - [`client`]: the driver, a tokio-modbus RTU client implementing
//!   [`crate::stage::PowerStage`].
//! - [`sim`] (unix): a tokio-modbus RTU server on a pseudo-terminal that behaves like a Riden
//!   with one cell on its terminals.

pub mod client;
#[cfg(unix)]
pub mod sim;
pub mod wire;

pub use client::RidenClient;
#[cfg(unix)]
pub use sim::{RidenSim, SimHandle};

//! Elektro-Automatik PSB/PSI bidirectional supplies over Modbus TCP
//! (facts: `shared/devices/ea-psb.md`).
//!
//! - [`wire`]: register table, scaling and state bits: the device facts, no I/O.
//! - [`client`]: the driver, a tokio-modbus client implementing [`crate::stage::PowerStage`].
//! - [`sim`]: a tokio-modbus server that behaves like a PSB with one cell on its terminals.

pub mod client;
pub mod sim;
pub mod wire;

pub use client::PsbClient;
pub use sim::{PsbSim, SimHandle};

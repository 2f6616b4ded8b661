//! Neware BTS cyclers through the BTS API, XML over TCP (facts: `shared/devices/neware-bts.md`).
//!
//! - [`wire`]: framing, one builder and parser per message, status and step-type tables, record
//!   units and the step-file path mapping: the device facts, no I/O.
//! - [`client`]: the driver, a tokio TCP client that logs in and implements
//!   [`crate::cycler::Cycler`].
//! - [`sim`]: a BTS API server that runs the step files it is sent on simulated cells.

pub mod client;
pub mod sim;
pub mod wire;

pub use client::{NewareClient, NewareConfig};
pub use sim::{NewareSim, SimConfig, SimHandle};

//! Arbin cyclers through CTI, the Console TCP Interface of MITS Pro (facts:
//! `shared/devices/arbin-cti.md`).
//!
//! - [`wire`]: frames, one encoder and decoder per message, status and result-code tables:
//!   the device facts, no I/O.
//! - [`client`]: [`ArbinClient`], the driver: logs in, reads channel info matched by channel
//!   index, uploads compiled schedules on the file port, assigns and starts them, stops, and
//!   implements [`crate::cycler::Cycler`].
//! - [`sim`]: [`ArbinSim`], a MITS console with many channels serving CTI on two sockets,
//!   running the schedules it is sent (imported back into a plan) on one cell per channel.
pub mod client;
pub mod sim;
pub mod wire;

pub use client::{ArbinClient, ArbinConfig};
pub use sim::{ArbinSim, RecordLog, SimConfig, SimFault, SimHandle};

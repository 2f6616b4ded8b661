//! Watlow F4T controllers over Modbus TCP (facts: `shared/devices/chambers.md`).
//!
//! - [`wire`]: the loop's register table, float layout, mode values and alarm states: the
//!   device facts, no I/O.
//! - [`client`]: the driver, a tokio-modbus client implementing [`crate::chamber::Chamber`].
//! - [`sim`]: a tokio-modbus server whose control loop runs a simulated chamber's air.
//!
//! # Facts used
//! Modbus TCP on port 502; 32-bit floats low word first. Loop n's registers sit
//! 160 x (n - 1) above loop 1's: set point 2782, current set point 2810, process value 2820,
//! range 2774 (low) / 2776 (high), mode 2730.
//!
//! # Interpretations where the facts are silent
//! - The loop offset applies to every loop register listed, not only the set point (the
//!   register numbers are those of loop 1).
//! - Mode is one register holding Watlow's enumeration: 10 auto (regulating: `start`),
//!   62 off (`stop`), 54 manual (fixed output power; reported as not running). These values
//!   are what open-source F4T clients write; the facts give the register only.
//! - The reading's set point is the current set point (2810, what the loop regulates to now);
//!   `set_temperature` writes 2782, after checking the value against the range the loop
//!   reports.
//! - One poll reads 2730..=2821 in one transaction, assuming the controller answers the
//!   undocumented registers in between (they hold the loop's other parameters).
//! - Temperatures are degC: the controller is assumed to be set to Celsius (an F4T can show
//!   Fahrenheit; nothing on the wire says which).
//! - No humidity: which loop carries it (if any) is chamber-specific.
//! - **Alarms (assumption, not in the facts):** alarm n's state is read from register
//!   1356 + 100 x (n - 1), one transaction per alarm, for as many alarms as
//!   [`WatlowOptions::alarms`] asks (default: alarm 1). States 88 (startup), 61 (none) and 12
//!   (blocked) are no alarm; 7 (high), 8 (low), 28 (error) and any unknown value are reported
//!   as `alarm N: STATE`. The address is that of open-source F4T clients and the states are
//!   Watlow's EZ-ZONE enumeration. If the controller refuses an alarm's address (exception 2)
//!   the driver warns once and reads no alarms from that one on.

pub mod client;
pub mod sim;
pub mod wire;

pub use client::{WatlowClient, WatlowOptions};
pub use sim::{SimConfig, SimHandle, WatlowSim};

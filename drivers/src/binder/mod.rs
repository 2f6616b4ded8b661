//! Binder chambers with MB1 controllers, over Binder's Modbus-like RTU protocol on a serial
//! line or through the serial-to-TCP bridge of Ethernet models (facts:
//! `shared/devices/chambers.md`).
//!
//! - [`wire`]: the RTU frame codec (CRC, frames, exception codes) and the controller's facts
//!   (word-swapped floats, register table, mode values), no I/O.
//! - [`client`]: the driver implementing [`crate::chamber::Chamber`], on an
//!   [`crate::transport::Endpoint`]: a serial port, or the bridge's TCP address (RTU frames
//!   over TCP, not Modbus TCP).
//! - [`sim`]: the controller side, serving the same frames on a pseudo-terminal or a TCP
//!   listener, its chamber's air a [`crate::chamber::thermal::ThermalModel`].
//!
//! # Why a codec of its own rather than tokio-modbus RTU
//! The frames are standard RTU, but the rest is not quite Modbus: writes go only with function
//! 0x10 (the device refuses 6), exception 8 means "write denied" (tokio-modbus names it a
//! memory parity error), and the same frames must run over a serial port and over a bridge's
//! TCP connection, on both sides (tokio-modbus's RTU server takes a serial port only). The
//! codec is small, both sides share it, and the driver has no way to send function 6 at all.
//! The device tests talk to the simulator with tokio-modbus's RTU client as an independent
//! check of the framing.
//!
//! # Facts used
//! RTU framing with the Modbus CRC (polynomial 0xA001), RS-422 at 9600 baud, bridge port
//! likely 10001. Reads with function 3, writes only with 0x10; floats word-swapped (low word
//! first); exception codes 1-5, and 8 = write denied. MB1 registers: actual temperature
//! 0x11A9, humidity 0x11CD, set points 0x1077 / 0x1079, manual set point 0x156F, basic set
//! point 0x1581, mode 0x1A22 (0x1000 basic, 0x0800 manual, 0x0400 program).
//!
//! # Interpretations where the facts are silent
//! - 0x1077 and 0x1079 are the temperature and humidity set points in force (whatever the
//!   mode); the reading reports 0x1077 as its set point. The simulator denies writes to them
//!   (exception 8), as to the measured values.
//! - `set_temperature` writes the manual set point; `start` switches to manual mode, so the
//!   chamber follows it; `stop` switches to basic mode, where the chamber holds the basic set
//!   point configured at it (its idle temperature). A reading is `running` in manual or
//!   program mode. The mode values are single bits and are read as such.
//! - A poll reads only documented addresses, one transaction each (set point in force,
//!   temperature, humidity, mode, alarm word): whether the controller answers reads across
//!   the undocumented registers between them is not known.
//! - Humidity is optional: a controller that refuses its address (exception 2) reports none
//!   from then on.
//! - **Alarms (assumption, not in the facts):** the facts give no alarm register for MB1. The
//!   driver reads a 16-bit alarm word at 0x1A23 ([`wire::reg::ALARM`], next to the mode;
//!   0 = no alarm, anything else reported as `alarm word 0x....`), by default; a controller
//!   that refuses the address reports no alarms from then on, and
//!   [`BinderOptions::alarm_register`] moves or disables it for a chamber where it means
//!   something else.
//! - The unit address defaults to 1.

pub mod client;
pub mod sim;
pub mod wire;

pub use client::{BinderClient, BinderOptions};
pub use sim::{BinderSim, SimConfig, SimHandle};

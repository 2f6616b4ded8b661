//! Transports shared by several device families.
//!
//! - `modbus`: the timed, checked transaction helpers every Modbus client uses.
//! - [`pty`] (unix): pseudo-terminal pairs, so a simulator can serve a serial protocol on the
//!   master while a driver opens the slave path as if it were a USB-serial adapter.

pub(crate) mod modbus;
#[cfg(unix)]
pub mod pty;

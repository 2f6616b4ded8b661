//! Transports shared by several device families.
//!
//! - [`pty`] (unix): pseudo-terminal pairs, so a simulator can serve a serial protocol on the
//!   master while a driver opens the slave path as if it were a USB-serial adapter.

#[cfg(unix)]
pub mod pty;

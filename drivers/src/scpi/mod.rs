//! SCPI source-measure units, bidirectional supplies and electronic loads over raw TCP
//! (port 5025) or a serial port (ITECH RS-232 at 9600 8N1, USB virtual ports) (facts: `shared/devices/scpi.md`, the SCPI
//! part of `shared/devices/ea-psb.md`).
//!
//! - [`wire`]: the dialect table (EA PSB, Keithley 24xx, Keysight B2900, ITECH IT6000,
//!   BK 8600), `*IDN?` recognition, command programs and reply parsing: the device facts,
//!   no I/O.
//! - [`client`]: a line transport over any `AsyncRead + AsyncWrite` (timeouts, `SYST:ERR?`
//!   after writes), [`ScpiClient`] implementing [`crate::stage::PowerStage`], and
//!   [`PairStage`], a supply plus a load on one cell as one bidirectional channel.
//! - [`sim`]: simulated instruments of each dialect on TCP listeners or pseudo-terminals,
//!   backed by one cell.

pub mod client;
pub mod sim;
pub mod wire;

pub use client::{LineTransport, PairStage, ScpiClient, ScpiOptions};
pub use sim::{ScpiSim, SimConfig, SimDialect, SimHandle, SimPort};
pub use wire::Dialect;

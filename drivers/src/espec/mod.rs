//! Espec chambers with P300 or SCP-220 controllers: ASCII lines over TCP (port 10001) or a
//! serial port (9600 8N1, RS-232 or RS-485) (facts: `shared/devices/chambers.md`).
//!
//! Facts used: CR LF ends every request and reply, both ways; on RS-485 a request starts with
//! `ADDR,`; the queries `ROM?`, `TYPE?`, `MODE?` (`MODE?,DETAIL`), `MON?` (temperature,
//! humidity, mode, alarm count), `TEMP?` (process value, set point, upper, lower), `HUMI?`,
//! `ALARM?`; the commands `MODE,OFF|STANDBY|CONSTANT`, `TEMP, S25.0` (with optional `H`/`L`
//! limits) and `POWER,ON`; refusals `NA:` + `CMD ERR`, `ADDR ERR`, `PARA ERR`,
//! `DATA OUT OF RANGE`, `CONT NOT READY-n` or `PROTECT ON`; `CONSTANT SET?,TEMP` -> `25.0,ON`
//! (and `,HUMI`, `,REF`, `,RELAY`, `,PTC`), as Espec's own Python library (the reference
//! client) reads the constant set point; the simulator answers every query that library sends
//! for a temperature-only chamber.
//!
//! Interpretations where the facts are silent:
//! - A successful command's reply is unconfirmed: the driver accepts `OK:...`, a bare `OK` and
//!   the command echoed; the simulator answers `OK:` + the command as received.
//! - Replies carry no address on RS-485 (the facts give the prefix for requests only; a
//!   prefix would make `ALARM?`'s `1,5` ambiguous).
//! - Field layouts the facts only name: `MON?` is `temperature,humidity,mode,alarms` with an
//!   empty humidity field on temperature-only chambers; `TEMP?` and `HUMI?` are
//!   `process,set point,upper,lower`; `ALARM?` is the count followed by that many codes;
//!   `TYPE?` is `dry sensor,[wet sensor,]controller,highest temperature`. The mode words of
//!   `MODE?,DETAIL` (`RUN PAUSE`, `RMT RUN`, ...) come from third-party drivers.
//! - Set points go out with the controller's 0.1 degC resolution.
//! - `stop` puts the chamber in standby, not off: the controller stays on and answering.
//! - Programs (`MODE,RUN n`, `PRGM,...`) are not driven, and the simulator holds none.
//!
//! - [`wire`]: framing, one encoder and one decoder per message, the mode and `NA:` reason
//!   tables: the device facts, no I/O.
//! - [`client`]: [`EspecClient`], the [`crate::chamber::Chamber`] driver over an
//!   [`crate::transport::Endpoint`].
//! - [`sim`]: a simulated controller on a TCP listener or a pseudo-terminal, moving the
//!   chamber's air with [`crate::chamber::thermal::ThermalModel`].

pub mod client;
pub mod sim;
pub mod wire;

pub use client::{EspecClient, EspecOptions, Identity};
pub use sim::{EspecSim, SimConfig, SimHandle, SimPort};

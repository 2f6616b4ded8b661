//! Weiss Technik / Vötsch chambers (WKL, LabEvent) through SimServ on TCP port 2049 (facts:
//! `shared/devices/chambers.md`).
//!
//! Facts used: fields separated by the byte 0xB6, a request `cmd¶1¶args` ended by CR, `1¶value`
//! on success and negative codes on failure (-5 unknown command, -6 bad parameters, -8 read
//! failed); 11001 set set point, 11002 get set point, 11004 actual value, 10012 status (1 idle,
//! 3 running, +4 warnings, +8 alarms), 14001 manual mode start/stop, 19014/19015 program
//! start/stop, 99997 info. Frames are bytes (0xB6 is not UTF-8 on its own), fields latin-1.
//!
//! Interpretations where the facts are silent:
//! - The arguments after the chamber follow the vendor's example: 11001/11002/11004 take the
//!   variable first (1 = temperature), 14001 takes 1 then 1 to start or 0 to stop.
//! - Replies may end in CR, LF or CR LF (the facts give the request's CR only); the simulator
//!   ends them with CR LF. A command's success reply is a bare `1`.
//! - A refusal is read from the first field alone; anything after the code is ignored.
//! - Warnings (+4) are not alarms: an alarm (+8) is reported as the status word, since the
//!   facts name no command that reads alarm texts.
//! - Humidity is not read (its variable number is not in the facts): readings carry none.
//! - Only SimServ is implemented: ASCII-2 (`$01I`, `$01E`, `$01?`), the other protocol on the
//!   same port, is optional and left out; a chamber that speaks only ASCII-2 is not driven.
//!
//! - [`wire`]: framing, one encoder and one decoder per message, command and code tables: the
//!   device facts, no I/O.
//! - [`client`]: [`WeissClient`], the [`crate::chamber::Chamber`] driver.
//! - [`sim`]: a simulated controller on a TCP listener, moving the chamber's air with
//!   [`crate::chamber::thermal::ThermalModel`].

pub mod client;
pub mod sim;
pub mod wire;

pub use client::WeissClient;
pub use sim::{SimConfig, SimHandle, WeissSim};

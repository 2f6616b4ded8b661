//! Arbin cyclers through CTI, the Console TCP Interface of MITS Pro (facts:
//! `shared/devices/arbin-cti.md`).
//!
//! - [`wire`]: frames, one encoder and decoder per message, status and result-code tables:
//!   the device facts, no I/O.
//! - [`client`]: [`ArbinClient`], the driver: logs in, reads channel info matched by channel
//!   index, uploads compiled schedules on the file port, assigns and starts them, stops, and
//!   implements [`crate::cycler::Cycler`]; over `link` (one exchange on the control
//!   connection under the timeout) and `convert` (what feedbacks mean in cyclerd's terms:
//!   errors, channel states, records).
//! - [`sim`]: [`ArbinSim`], a MITS console with many channels serving CTI on two sockets,
//!   running the schedules it is sent (imported back into a plan) on one cell per channel.
//!
//! # Starting a test
//!
//! [`crate::cycler::Cycler::start`] uploads the schedule text (latin-1) with UPLOAD on the
//! file port under `TEST_FILE` (the test name first, so two tests never share a file), then
//! ASSIGN_SCHEDULE names that file for the channel, and START runs it as a test named after
//! the cyclerd test, fitted to CTI's 72-character field ([`wire::test_name`]). Each connection,
//! control or file, logs in first.
//!
//! # Downloading records: what CTI documents, and what cyclerd does
//!
//! The public CTI material (Arbin's CTI protocol and instruction documents as published with
//! the open Python client `pyctiarbin`, that client and its fork, and the `ctitoolbox` wrapper
//! around Arbin's own CTI library with its list of every command and feedback) documents no
//! way to read logged data records from an index. GET_CHANNELS_INFO gives the present values
//! (test time, V, I, the test's capacity and energy counters, aux readings) with no record
//! counter; newer CTI versions add push subscriptions of present values and a DownloadFile of
//! arbitrary files, but MITS logs test data to its own database, whose layout is not public.
//!
//! A native channel must nevertheless fill any gap from the device (issue 6), so cyclerd adds
//! one command, [`wire::cmd::GET_RECORDS`] ([`wire::RecordsRequest`], [`wire::RecordsFeedback`]):
//! up to n records of the channel's test from an index, and the newest index. **This is a
//! cyclerd extension**, in a command group Arbin does not use: the simulator serves it; a real
//! console does not. Against a console that answers it with anything else (an unknown-command
//! feedback) or not at all (silence, while a fresh login still works), [`ArbinClient`] falls
//! back to what CTI documents: each [`crate::cycler::Cycler::records`] call returns the present
//! values as one record when the test time has moved since the last one, numbered from the
//! index asked for, and [`crate::cycler::ChannelStatus::last_record`] counts those polls. The
//! data between polls then stays in MITS's own log (export it there); the client warns once.
//! A fallback record's capacity and energy are the test's counters (charge plus discharge),
//! where an extension record carries the step's, as the other families do.
//!
//! # Interpretations where the material is silent or thin
//!
//! - Result codes differ per command (0x12 is "channel running or unsafe" for START, "schedule
//!   name empty" for ASSIGN_SCHEDULE); the codes the facts list as common (0x10 bad channel,
//!   0x11 monitor window busy, 0x12 channel running, 0x13 not connected, 0x15 no schedule) are
//!   START's table, and the others come from the open client ([`wire::result`]).
//! - A stopped test: MITS reports the channel Idle; one whose test name is still reported is
//!   taken as [`crate::cycler::ChannelState::Stopped`], one without as Idle.
//! - UPLOAD: the MD5 travels as 32 hex characters, the data is the rest of the frame, the time
//!   field is sent as 0, packages are at most [`client::DEFAULT_UPLOAD_PACKAGE_LEN`] bytes; the
//!   feedback layout (result, time, package count and index) is inferred from the field names
//!   of Arbin's library.
//! - GET_CHANNELS_INFO is always asked for all channels with aux values; BMS and SMB values
//!   (never asked for) are refused, their layout not being public.

pub mod client;
mod convert;
mod link;
pub mod sim;
pub mod wire;

pub use client::{ArbinClient, ArbinConfig};
pub use sim::{ArbinSim, RecordLog, SimConfig, SimFault, SimHandle};

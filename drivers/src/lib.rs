//! cyclerd's hardware side: the clock, the cell model, the power-stage trait and one folder per
//! device family. Knows nothing about SQLite, gRPC or the hub.
//!
//! # Layout
//! - [`clock`]: the only source of time; real, or scaled by a speed factor so a 20-hour protocol
//!   runs in seconds through real sockets; its pacer ticks a poll loop at an interval of clock
//!   time.
//! - [`cell`]: an equivalent-circuit cell (OCV(SOC), series resistance, one RC pair, coulomb
//!   counting, lumped thermal model) that backs every simulator.
//! - [`chamber`]: the [`chamber::Chamber`] trait of a thermal chamber's controller, and the
//!   simulated air ([`chamber::thermal`]) that chamber simulators and the cells inside share.
//! - [`cycler`]: the [`cycler::Cycler`] trait a native channel follows on a dedicated cycler
//!   that runs schedules itself, with its record and status types.
//! - `cycler_sim` (internal): what the Neware, Arbin and Maccor simulators share: loading the
//!   schedule they were sent, a channel's cell running its plan, the device-side record log.
//! - [`stage`]: the [`stage::PowerStage`] trait a stepped channel drives, and its reading type.
//! - [`ea_psb`]: Elektro-Automatik PSB bidirectional supplies over Modbus TCP: `wire` (register
//!   table and scaling), `client` (the driver) and `sim` (a Modbus TCP server backed by a cell).
//! - [`riden`]: Riden RD60xx charge-only supplies over Modbus RTU on a serial line, in the same
//!   three parts (the simulator serves a pseudo-terminal).
//! - [`neware`]: Neware BTS cyclers through the BTS API (XML over TCP): `wire` (a folder:
//!   framing, the message envelope over [`cyclerd_protocols::xml`], one file per message
//!   group, device tables), `client` (the [`cycler::Cycler`] driver: login, status, start with a
//!   step file delivered to a folder the BTS PC reads, paged record download) and `sim` (a BTS
//!   server running the step files it is sent on simulated cells).
//! - [`arbin`]: Arbin cyclers through CTI (binary frames over TCP): `wire/` (framing, field
//!   encoding, one file per message group, the status and result tables), `link` (one exchange
//!   under the timeout), `convert` (what feedbacks mean: errors, states, records), `client` (the
//!   [`cycler::Cycler`] driver: login, channel info matched by index, schedule upload, assign
//!   and start, record download) and `sim/` (a MITS console serving CTI, running the schedules
//!   it is sent on simulated cells: channel, console state, serving).
//! - [`transport`]: transports shared by families: the connect with a timeout every network
//!   client uses, the link a simulator's handle cuts and the reply faults it injects,
//!   pseudo-terminals and serial lines for serial simulators.
//! - `civil` (internal): UTC calendar dates from days since the epoch and back, for the wire
//!   formats that write dates.
//! - `codec` (internal): what the little-endian binary codecs (Arbin, Maccor) share: a byte
//!   cursor that fails on short input instead of panicking, and fixed-width text fields.
//! - [`scpi`]: SCPI SMUs, supplies and loads over raw TCP (dialect table chosen by `*IDN?`),
//!   with a supply + load pair stage and a multi-dialect simulator.
//! - [`maccor`]: Maccor testers over MacNet (JSON and binary TCP): `wire/` (binary frames, one
//!   file per function group, JSON-RPC lines, code tables), `link` (the JSON and binary
//!   connections), `convert` (what replies mean), `client` (the [`cycler::Cycler`] driver),
//!   `direct` (direct mode as a [`stage::PowerStage`]) and `sim/` (a many-channel tester running
//!   the procedures it is sent: channel, tester state, one file per encoding, serving).
//! - [`espec`]: Espec chambers (P300 / SCP-220 controllers), ASCII lines over TCP or serial:
//!   `wire` (framing, one codec per message, mode and refusal tables), `client` (the
//!   [`chamber::Chamber`] driver) and `sim` (a controller on a socket or pseudo-terminal moving
//!   a chamber's air).
//! - [`weiss`]: Weiss / Vötsch chambers through SimServ (0xB6-separated byte frames over TCP),
//!   in the same three parts.
//! - [`watlow`]: Watlow F4T chamber controllers over Modbus TCP: `wire` (the control loop's
//!   registers, float layout, mode values, assumed alarm states), `client` (the
//!   [`chamber::Chamber`] driver for one loop) and `sim` (a Modbus TCP server whose loop runs
//!   a simulated chamber's air).
//! - [`binder`]: Binder chambers (MB1 controllers) over their Modbus-like RTU protocol, on a
//!   serial line or a serial-to-TCP bridge: `wire` (the RTU frame codec with its CRC,
//!   word-swapped floats, register and mode tables), `client` (the [`chamber::Chamber`]
//!   driver, writing only with function 0x10) and `sim` (the controller on a pseudo-terminal
//!   or behind a simulated bridge, refusing function 6 as the device does).
//! - [`error`]: [`DriverError`], what a device or its link can do wrong.

pub mod arbin;
pub mod binder;
pub mod cell;
pub mod chamber;
mod civil;
pub mod clock;
mod codec;
pub mod cycler;
mod cycler_sim;
pub mod ea_psb;
pub mod error;
pub mod espec;
pub mod maccor;
pub mod neware;
pub mod riden;
pub mod scpi;
pub mod stage;
pub mod transport;
pub mod watlow;
pub mod weiss;

pub use clock::Clock;
pub use error::DriverError;

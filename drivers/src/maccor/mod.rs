//! Maccor testers over MacNet (facts: `shared/devices/maccor-macnet.md`).
//!
//! - [`wire`]: binary frames and JSON-RPC objects (framed by object, not line), one encoder
//!   and decoder per function, the status, RF1/RF2 and result-code tables. No I/O.
//! - `link`: the JSON and the binary connection, each exchange under the timeout; a failed one
//!   poisons its connection until the client reconnects.
//! - [`client`]: [`MaccorClient`], the driver, implementing [`crate::cycler::Cycler`] (native
//!   mode: procedures compiled by cyclerd run on the tester), with `convert` (what replies
//!   mean in cyclerd's terms: refusals, records, procedure names) and `auxiliary` (the
//!   (4,4) aux values and the cell temperature read from them).
//! - [`direct`]: [`MaccorDirect`], one channel in MacNet direct mode as a
//!   [`crate::stage::PowerStage`] (stepped mode: cyclerd's engine drives the channel).
//! - [`sim`]: [`MaccorSim`], a tester with many channels serving both protocols on real
//!   sockets, running the procedures it receives (imported back into a plan) against one cell
//!   per channel.
//!
//! # Which function does what
//!
//! The client speaks JSON for everything the JSON protocol carries (system info, status,
//! readings, reset, direct start) and binary where MacNet needs it: the (1,6) file transfer
//! (binary only), select + start (the JSON start selects by itself, the binary one needs (6,1)
//! first, which is how the facts describe it), and (6,8) direct output (the JSON form cannot
//! set rest).
//!
//! # Downloading records: what MacNet documents, and what cyclerd does
//!
//! The public MacNet material (Maccor's MacNet help as published with the open Python client
//! `pymacnet` by the Battery Data Alliance, that client's message definitions, and the open
//! `MacNet.py` client) documents no function that reads logged data records from a record
//! index. It documents the record *counter*: `LastRec` (JSON `LastRecNum`) in the (4,7)
//! reading; the (4,2)/(4,3) bulk readings of the present values; (4,6) the data file name of a
//! channel; and the (1,6) file transfer *to* the tester (TFTP-like: WRQ 2, DATA 3, ACK 4,
//! ERROR 5, 500-byte blocks). The records themselves live in the test's data file on the
//! tester PC.
//!
//! A native channel must nevertheless be able to fill any gap from the device (cyclerd's
//! issue 6), so the closest documented mechanism is used in its other direction: a (1,6)
//! transfer opened with TFTP's read request (opcode 1, [`wire::opcode::RRQ`], which MacNet does
//! not list) for file type [`wire::FILE_TYPE_RECORD_LOG`] on the channel, from a record index,
//! answered with DATA blocks carrying records in the (4,7) binary layout. **This is a cyclerd
//! extension**: the simulator serves it; whether a real tester does is unknown. Against a
//! tester that refuses it (ERROR packet or empty reply) or ignores it (no reply while its JSON
//! port still answers), [`MaccorClient`] falls back to what
//! MacNet does document: the (4,7) reading, returned as the record at index `LastRec`. Records
//! between the last one stored and `LastRec` are then not downloadable over MacNet (they stay in
//! the tester's data file); the client warns, and the jump in [`crate::cycler::Record::index`]
//! shows the gap.
//!
//! # Direct mode and its watchdog
//!
//! (6,7) starts a direct-mode test and (6,8) sets the output; outputs must be at least 100 ms
//! apart (result 3 otherwise), which [`MaccorDirect`] guarantees by waiting on the
//! [`crate::Clock`]. The help documents a watchdog: `MacNetDirectModeWD` (System.ini,
//! `Misc_Options`), when above 0, suspends a direct-mode channel that has not been updated for
//! that many seconds. "Updated" is read as "sent a (6,8) output", so [`MaccorDirect`] re-sends
//! its last output whenever a read finds it older than its keep-alive interval. The simulator
//! models the watchdog the same way.
//!
//! # Not done
//!
//! (8,1) login: its fields are not public, and MacNet works without it unless the tester's
//! configuration requires it; the client does not log in.

mod auxiliary;
pub mod client;
mod convert;
pub mod direct;
mod link;
pub mod sim;
pub mod wire;

pub use client::{MaccorClient, MaccorConfig};
pub use direct::{DirectConfig, MaccorDirect};
pub use sim::{MaccorSim, RecordLog, SimConfig, SimHandle};

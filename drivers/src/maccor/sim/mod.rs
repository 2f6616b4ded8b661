//! A simulated Maccor tester: MacNet's binary and JSON protocols on two TCP listeners, many
//! channels, one cell per channel.
//!
//! Procedures arrive by (1,6) file transfer and are kept by name; a start imports the procedure
//! back into a plan (`import(.., SourceKind::Maccor, ..)`) and runs cyclerd's engine against
//! the channel's cell. Time is the [`Clock`](crate::Clock)'s: every request first integrates every channel up
//! to `clock.now()` in sub-steps, logging a record every `record_interval_s` of test time and at
//! every step change, numbered from 1 without gaps (`LastRec`), in a device-side log that the
//! record-log read request (see the `maccor` module doc) downloads from any index.
//!
//! It keeps what a client depends on: status and RF1/RF2 codes, (4,4) aux values (the cell's
//! temperature first), result codes (19/20 name not unique, 23 channel in use, 24 no channel
//! selected), JSON-RPC errors with MacNet's texts, binary start only after a select, direct
//! mode with outputs refused when less than 100 ms of clock time apart (result 3), the JSON
//! (6,8) unable to set rest ("Illegal value"), and the `MacNetDirectModeWD` watchdog
//! suspending an unfed direct-mode channel.
//!
//! Where the real tester's answer is not public, the simulator's choice is documented at the
//! item: a refused binary request gets an empty reply (Len 0), a start naming a missing
//! procedure gets [`super::wire::result::SIM_PROCEDURE_UNUSABLE`], suspend/resume of a channel that
//! is not active/suspended gets result 2.
//!
//! Faults are injected through the [`SimHandle`]: a cut link (connections drop, new ones are
//! closed on arrival, the channels keep running), delayed replies, an error reply for the next
//! requests, a reading answered for the wrong channel, and a problem state on a channel.
//!
//! # Layout
//! - `channel`: one channel, its cell and what drives it; `tester`: the tester's state and its
//!   answer to each request (pure, no I/O).
//! - `json`, `binary`: each encoding's requests and replies (and the binary file transfer).
//! - `serve`: the sockets and connection loops, and the [`SimHandle`].

mod binary;
mod channel;
mod json;
mod serve;
mod tester;
#[cfg(test)]
mod tests;

use binary::*;
use channel::*;
use json::*;
pub use serve::*;
use tester::*;

use crate::cell::CellParams;
use cyclerd_protocols::Safety;

/// Longest simulated interval integrated in one piece; keeps cutoffs and the CV law sharp.
const MAX_SUBSTEP_S: f64 = 0.5;
/// Largest file the simulated tester accepts.
const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Tolerance on record times, against floating-point drift in the sub-steps.
const TIME_EPS_S: f64 = 1e-9;

/// What the simulated tester is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One cell per channel; the tester has as many channels.
    pub cells: Vec<CellParams>,
    /// Simulated seconds between logged records of a procedure test (a record is also logged
    /// at every step change and at the start).
    pub record_interval_s: f64,
    /// The limits procedures run under: a Maccor procedure carries none of its own, the
    /// tester's channel safety limits play that part.
    pub limits: Safety,
    /// Channel current rating, A: a direct-mode current outside 0..=rating means "no limit".
    pub max_current_a: f64,
    /// Channel voltage rating, V: likewise for direct-mode voltages (power: the product).
    pub max_voltage_v: f64,
    /// `MacNetDirectModeWD`: clock seconds without a (6,8) after which a direct-mode channel
    /// suspends; `None` (the tester's 0) disables it.
    pub direct_watchdog_s: Option<f64>,
    /// How the record-log read request is answered (served, or as a tester that knows only
    /// MacNet's documented write direction might).
    pub record_log: RecordLog,
    /// Reported by (1,2).
    pub system_id: String,
    /// Auxiliary inputs wired to each channel, by channel (channels past the list have none).
    /// (4,4) answers one value per input: the first the cell's temperature, any further ones
    /// the air around the cell (the chamber's, or the cell's ambient). A channel with none
    /// answers Len 0 and an empty list.
    pub aux_inputs: Vec<u16>,
}

impl SimConfig {
    /// `channels` channels, each with a copy of `cell`; records every 10 s; limits 2.0-4.4 V,
    /// 10 A, 80 degC; channels rated 10 A and 5 V; no watchdog; the record log served; one
    /// aux input per channel (its cell's temperature).
    pub fn new(channels: usize, cell: CellParams) -> SimConfig {
        SimConfig {
            cells: vec![cell; channels],
            record_interval_s: 10.0,
            limits: Safety {
                voltage_min: Some(2.0),
                voltage_max: Some(4.4),
                current_max: Some(10.0),
                temperature_max: Some(80.0),
                capacity_max: None,
            },
            max_current_a: 10.0,
            max_voltage_v: 5.0,
            direct_watchdog_s: None,
            record_log: RecordLog::Served,
            system_id: "MacTest sim".into(),
            aux_inputs: vec![1; channels],
        }
    }
}

/// How the simulated tester answers cyclerd's record-log read request, which MacNet does not
/// document (see the `maccor` module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLog {
    /// Records are served from any index.
    Served,
    /// Answered with an ERROR packet ("unknown opcode").
    Refused,
    /// Not answered at all.
    Ignored,
}

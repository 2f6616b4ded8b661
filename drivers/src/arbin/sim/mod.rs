//! A simulated MITS Pro console serving CTI: many channels, one cell each, on two listeners
//! (control and file operations).
//!
//! It speaks the protocol as the facts and the open clients describe it: every frame's token,
//! length and checksum are checked; each connection must log in before anything else; the
//! control port answers channel info, assign, start and stop, the file port answers uploads.
//! Uploaded schedules are kept by file name; START imports the assigned schedule back into a
//! plan (`import(.., SourceKind::Arbin, ..)`) and runs cyclerd's engine against the channel's
//! cell. Time is the [`Clock`](crate::Clock)'s, integrated lazily on every request and handle call in
//! sub-steps; a record is logged every `record_interval_s` of test time, at every step change
//! and when a test ends, numbered from 1 without gaps, in a device-side log that the cyclerd
//! extension GET_RECORDS reads from any index (see the `arbin` module doc).
//!
//! Where the real console's behaviour is not public, the simulator's choice:
//! - a frame with a bad checksum is dropped without a reply (the stream stays in step, since
//!   the length is known); a bad token or an impossible length closes the connection;
//! - any request before a successful login closes the connection;
//! - a command it does not serve (or one sent to the wrong port) is answered with a 128-byte
//!   frame of code [`UNKNOWN_COMMAND_FEEDBACK`] (Arbin's library has an "unknown command"
//!   feedback whose code is not public);
//! - a stopped test leaves the channel Idle with the test's name still reported, a schedule
//!   whose own safety trips leaves it Unsafe with the reason as exit condition;
//! - an upload over an existing file of the same name but other content is refused (result 5).
//!
//! GET_CHANNELS_INFO for one channel is answered with every channel by default, as a MITS 10
//! server was seen to do ([`SimConfig::info_lists_every_channel`]), and
//! [`SimConfig::reverse_info`] lists the channels in reverse order: a client that takes a
//! block by position fails here. Faults are injected through the [`SimHandle`]: a cut link
//! (the channels keep running), reply delays, refused commands, and unsafe, error or paused
//! channels.
//!
//! # Layout
//! - `channel`: one channel and the test on it; `console`: the console's state and its answer
//!   to each frame (pure, no I/O).
//! - `serve`: the sockets and the connection loop, and the [`SimHandle`].

mod channel;
mod console;
mod serve;

use channel::*;
use console::*;
pub use serve::*;

use crate::cell::CellParams;

/// Largest file the console accepts.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Most records one GET_RECORDS feedback carries.
pub const MAX_RECORDS_PER_FEEDBACK: usize = 2000;
/// The simulator's answer to a command it does not serve (see the module doc).
pub const UNKNOWN_COMMAND_FEEDBACK: u32 = 0xEEBA_FFFF;

/// What the simulated console is.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One cell per channel; channels are numbered from 0 in this order.
    pub cells: Vec<CellParams>,
    /// The only login accepted.
    pub username: String,
    pub password: String,
    /// Reported in the login feedback.
    pub serial: String,
    /// Test time between logged records, s (records are also logged at every step change and
    /// when a test ends).
    pub record_interval_s: f64,
    /// How the cyclerd GET_RECORDS extension is answered.
    pub record_log: RecordLog,
    /// Answer a one-channel GET_CHANNELS_INFO with every channel, as a MITS 10 server did.
    pub info_lists_every_channel: bool,
    /// List channel blocks from the highest index down.
    pub reverse_info: bool,
}

impl SimConfig {
    /// `channels` channels with a copy of `cell` each, login `admin`/`arbin`, a record every
    /// 10 s, GET_RECORDS served, one-channel info requests answered with every channel, in
    /// index order.
    pub fn new(channels: usize, cell: CellParams) -> SimConfig {
        SimConfig {
            cells: vec![cell; channels],
            username: "admin".into(),
            password: "arbin".into(),
            serial: "SIM-CTI".into(),
            record_interval_s: 10.0,
            record_log: RecordLog::Served,
            info_lists_every_channel: true,
            reverse_info: false,
        }
    }
}

/// How the console answers the cyclerd GET_RECORDS extension, which CTI does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLog {
    /// Records are served from any index.
    Served,
    /// Answered as an unknown command, as a real console presumably does.
    Refused,
    /// Not answered at all.
    Ignored,
}

/// A fault a handle can put a channel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFault {
    /// A safety limit tripped (status 0x08).
    Unsafe,
    /// A hardware or software error (status 0x0E).
    Error,
}

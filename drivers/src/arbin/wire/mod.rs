//! CTI frames and messages, no I/O (facts: `shared/devices/arbin-cti.md`).
//!
//! A frame is, little-endian: the u64 token [`TOKEN`], a u32 length, the u32 command, a u32
//! extension (0), the command's arguments and a u16 checksum, the sum of every byte before it
//! mod 2^16. The length differs by direction: a request counts everything after the length
//! field (checksum included), a feedback counts the whole frame. The captured stop request
//! (128 bytes, length 0x74) is checked in the tests below.
//!
//! Every message has one encoder (`to_frame`) and one decoder (`from_frame`). Layouts, by
//! source (the open Python client `pyctiarbin` by the Battery Data Alliance and its fork with
//! the all-channels reply, and the enum tables of the `ctitoolbox` wrapper around Arbin's own
//! CTI library):
//!
//! | message | arguments | source |
//! |---|---|---|
//! | LOGIN | 32-byte user, 32-byte password (ASCII, zero-padded) | facts, pyctiarbin |
//! | LOGIN feedback | u32 result, 4-byte IP, 16-byte serial, ... u32 channel count at 8664 (8678 bytes) | pyctiarbin |
//! | GET_CHANNELS_INFO | i16 channel (-1 all), i16 selection, u32 need flags, 32 reserved | facts, pyctiarbin, ctitoolbox |
//! | its feedback | u32 count, then per channel a 1753-byte block and its aux values | pyctiarbin (fork), issue 24 |
//! | ASSIGN_SCHEDULE | i32 channel, u8 all, schedule w200, f32 capacity, barcode w72, 16 f32 user variables, 32 reserved | pyctiarbin |
//! | START | test name w72, u32 channel count, u16 per channel | pyctiarbin |
//! | STOP | u32 channel, u8 all, 101 reserved | facts, pyctiarbin |
//! | common feedback | i32 channel, u8 result, 101 reserved (128 bytes) | facts, pyctiarbin |
//! | UPLOAD | path w1024, u64 file length, u32 package count, u32 index, f64 time, MD5, data | facts; MD5 as 32 hex characters *inferred* |
//! | UPLOAD feedback | u32 result, f64 time, u32 package count, u32 index | field names from ctitoolbox, layout *inferred* |
//! | GET_RECORDS | **cyclerd extension**, see [`RecordsRequest`] | cyclerd |
//!
//! `wN` is a UTF-16LE array of N code units. Result codes differ per command; the tables are
//! in [`result`]. Every decoder answers malformed input with a [`WireError`], never a panic.
//!
//! # Layout
//! - `frame`: the frame, its checksum and its split off a stream; `fields`: the argument
//!   cursor and builder, wide and ASCII text.
//! - `login`, `channels`, `schedule`, `upload`, `records`: one file per group of messages.
//! - `tables`: command codes and every result, status and selection table.
//!
//! This file holds what they all share: sizes and ports, and [`WireError`].

mod channels;
mod fields;
mod frame;
mod login;
mod records;
mod schedule;
mod tables;
mod upload;

pub use channels::*;
pub use fields::*;
pub use frame::*;
pub use login::*;
pub use records::*;
pub use schedule::*;
pub use tables::*;
pub use upload::*;

use crate::codec::Short;

/// The first 8 bytes of every frame (on the wire: `DD` x7 then `11`).
pub const TOKEN: u64 = 0x11DD_DDDD_DDDD_DDDD;
/// Token, length, command and extension.
pub const HEADER_LEN: usize = 20;
pub const CHECKSUM_LEN: usize = 2;
/// Token and length: what a request's length does not count.
const LENGTH_BASE: usize = 12;
/// Largest frame accepted: a 256-channel info reply with aux values is under 1 MB.
pub const MAX_FRAME_LEN: usize = 8 * 1024 * 1024;
/// Control port of the CTI server in MITS Pro's console.
pub const DEFAULT_CONTROL_PORT: u16 = 9031;
/// File-operation port.
pub const DEFAULT_FILE_PORT: u16 = 9032;

/// Fixed string widths, in UTF-16 code units (wide strings) or bytes (ASCII).
pub const CREDENTIAL_LEN: usize = 32;
pub const SCHEDULE_CHARS: usize = 200;
pub const TEST_NAME_CHARS: usize = 72;
pub const PATH_CHARS: usize = 1024;
const EXIT_CONDITION_LEN: usize = 100;
const STEP_AND_CYCLE_LEN: usize = 64;
const RESERVED_LEN: usize = 101;
/// Every command feedback with a result (assign, start, stop, ...) is this long.
pub const COMMON_FEEDBACK_LEN: usize = 128;
/// The login feedback without a picture.
pub const LOGIN_FEEDBACK_LEN: usize = 8678;
/// One channel's block in the channel-info feedback, before its aux values.
pub const CHANNEL_INFO_LEN: usize = 1753;
/// Each aux value: f32 value and f32 dx/dt.
const AUX_VALUE_LEN: usize = 8;
/// The MD5 of an upload, as lower-case hex text.
const MD5_HEX_LEN: usize = 32;
/// What was wrong with bytes from the other side.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("{what} needs {need} bytes, got {got}")]
    Length {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("the frame does not start with the CTI token (got 0x{found:016X})")]
    Token { found: u64 },
    #[error("a frame length of {length} bytes is impossible")]
    FrameLength { length: u64 },
    /// The frame is complete but corrupt; `frame_len` bytes may be skipped to the next one.
    #[error("checksum 0x{found:04X} where the bytes sum to 0x{expected:04X}")]
    Checksum {
        expected: u16,
        found: u16,
        frame_len: usize,
    },
    #[error("expected command 0x{expected:08X}, got 0x{got:08X}")]
    Command { expected: u32, got: u32 },
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
}

fn field(field: &'static str, problem: impl Into<String>) -> WireError {
    WireError::Field {
        field,
        problem: problem.into(),
    }
}

/// Input that ended too soon, in this family's error.
impl From<Short> for WireError {
    fn from(s: Short) -> WireError {
        WireError::Length {
            what: s.what,
            need: s.need,
            got: s.got,
        }
    }
}

#[cfg(test)]
mod tests;

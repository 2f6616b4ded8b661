//! MacNet frames and messages, both encodings, no I/O (facts: `shared/devices/maccor-macnet.md`).
//!
//! **Binary** (TCP 57560): a little-endian header of u16 FClass, FNum, Chan (0-based) and Len,
//! then data. In requests Len counts channels, except for the functions that carry data
//! ([`carries_data`]), whose Len counts the data bytes (as the (6,8) frame `<HHHHffffBB`, Len
//! 18, shows); in replies Len always counts bytes.
//!
//! **JSON** (TCP 57570): JSON-RPC 2.0 framed by complete object, not by line (`split`): a
//! peer may pretty-print over several lines and end with `\r\n`, `\n` or nothing; we send
//! compact objects ended by `\r\n`. Method `MacNet`, `params` holding FClass, FNum, Chan and the
//! function's fields; results echo FClass, FNum and Chan, and every reply the request's `id`.
//!
//! Every function has one encoder and one decoder per encoding. Where the public material gives
//! a layout, it is followed exactly; where it gives only the JSON fields, the binary layout is
//! the JSON fields in order and marked *inferred* below (the client then uses JSON for that
//! function, so an inferred layout never reaches a real tester):
//!
//! | function | binary layout | source |
//! |---|---|---|
//! | (0,x) echo | header only | facts |
//! | (1,1) version | u16 API, u16 x3 exe, u16 x3 DLL | inferred |
//! | (1,2) system info | u16 type, boards, channels, aux boards, aux channels; 16-byte id | inferred |
//! | (1,6) file transfer | TFTP-like packets, 500-byte blocks ([`Packet`]) | facts + inferred packet fields |
//! | (4,1) status | per channel RF1 u8, RF2 u8, Stat u16 | facts |
//! | (4,4) aux values | [`AuxValues`]: f32 per aux input, Len 4 x inputs | inferred (JSON: open client) |
//! | (4,7) reading | [`Reading`], 46 bytes | facts |
//! | (6,1) (6,3) (6,4) (6,5) | header only; reply: result code | facts |
//! | (6,2) start | [`StartTest`], Len 186 | facts + 51 reserved bytes |
//! | (6,7) direct start | test name 25, [`Output`] 18 bytes, f32 x3 record rules | inferred |
//! | (6,8) direct output | [`Output`] `ffffBB`, Len 18 | facts |
//!
//! Command replies carry a result code: binary as an unsigned little-endian integer of 1, 2 or
//! 4 bytes (its width is not public, so decoders take any of them), JSON as `"Result": "OK"` or
//! a code (a number, or text that a tester may send instead).
//!
//! Every decoder answers malformed input with a [`WireError`], never a panic.
//!
//! # Layout
//! - `frame`: the binary frame and its split off a stream, fixed-width text, result codes.
//! - `system`, `readings`, `auxiliary`, `control`, `transfer`: one file per group of
//!   functions, (1,x) system, (4,x) readings ((4,4) auxiliary inputs apart, with its facts),
//!   (6,x) control, (1,6) file transfer.
//! - `json`: JSON-RPC messages; `split`: complete objects off a stream; `names`: test names and the tester's times.
//! - `tables`: the state, RF1/RF2, result and JSON error code tables.
//!
//! # Facts beyond `maccor-macnet.md`
//!
//! - (4,4) read auxiliary values (from the open client `pymacnet`): request
//!   `{"FClass":4,"FNum":4,"Chan":1}`, result `{"FClass":4,"FNum":4,"Chan":93,"Len":1,
//!   "AuxValues":[24.7545490264893]}`, one number per auxiliary input of the channel (details
//!   and what is inferred: `auxiliary`).
//!
//! This file holds what they all share: ports and field widths, the functions, [`WireError`].

mod auxiliary;
mod control;
mod frame;
mod json;
mod names;
mod readings;
mod split;
mod system;
mod tables;
mod transfer;

pub use auxiliary::*;
pub use control::*;
pub use frame::*;
pub use json::*;
pub use names::*;
pub use readings::*;
pub use split::*;
pub use system::*;
pub use tables::*;
pub use transfer::*;

use crate::codec::Short;
use serde_json::{Map, Value};
use std::fmt;

/// Default TCP port of the binary protocol (System.ini).
pub const DEFAULT_BINARY_PORT: u16 = 57560;
/// Default TCP port of the JSON protocol (System.ini).
pub const DEFAULT_JSON_PORT: u16 = 57570;
/// Ends every JSON message we send (peers may send `\n` or nothing instead).
pub const JSON_TERMINATOR: &str = "\r\n";
/// Longest JSON object accepted; a peer that never closes its object is malformed, not an
/// out-of-memory.
pub const MAX_JSON_OBJECT: usize = 256 * 1024;
/// Binary header: FClass, FNum, Chan, Len, each u16 LE.
pub const HEADER_LEN: usize = 8;
/// Channels one (4,1) request may cover.
pub const MAX_STATUS_CHANNELS: u16 = 128;
/// Width of the test and procedure name fields of (6,2) and (6,7), space-padded.
pub const NAME_LEN: usize = 25;
/// Width of the comment field of (6,2).
pub const COMMENT_LEN: usize = 80;
/// (6,2) data length in the binary form.
pub const START_LEN: usize = 186;
/// (6,8) data length: four f32 and two u8.
pub const OUTPUT_LEN: usize = 18;
/// (4,7) data length: RF1, RF2, Stat, LastRec, Cycle, Step, six f32, u64 tester time.
pub const READING_LEN: usize = 46;
/// (6,7) data length in the inferred binary form.
pub const DIRECT_START_LEN: usize = NAME_LEN + OUTPUT_LEN + 12;
/// A setpoint beyond any channel's range, which (6,7)/(6,8) read as "no limit" (the value the
/// open client uses; "set outside range to ignore").
pub const IGNORE: f32 = 65536.0;

/// A MacNet function: (FClass, FNum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Function {
    /// FClass: the function group (1 system, 4 readings, 6 control, 8 login; 0 echo).
    pub class: u16,
    /// FNum: the function within its group.
    pub num: u16,
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.class, self.num)
    }
}

const fn function(class: u16, num: u16) -> Function {
    Function { class, num }
}

/// FClass 0 echoes the frame (any FNum; this is the one to send).
pub const ECHO: Function = function(0, 0);
pub const VERSION: Function = function(1, 1);
pub const SYSTEM_INFO: Function = function(1, 2);
/// Binary protocol only.
pub const FILE_TRANSFER: Function = function(1, 6);
pub const STATUS: Function = function(4, 1);
/// Read auxiliary values: one channel's aux inputs (temperatures, voltages).
pub const AUX_VALUES: Function = function(4, 4);
pub const READING: Function = function(4, 7);
pub const SELECT: Function = function(6, 1);
pub const START: Function = function(6, 2);
pub const SUSPEND: Function = function(6, 3);
pub const RESUME: Function = function(6, 4);
/// Reset is MacNet's stop: it ends the test and frees the channel.
pub const RESET: Function = function(6, 5);
pub const DIRECT_START: Function = function(6, 7);
pub const DIRECT_OUTPUT: Function = function(6, 8);

/// Functions whose binary request Len counts data bytes rather than channels.
pub fn carries_data(f: Function) -> bool {
    matches!(f, FILE_TRANSFER | START | DIRECT_START | DIRECT_OUTPUT)
}

/// What was wrong with bytes or a line from the other side.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("{what} needs {need} bytes, got {got}")]
    Length {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("expected a reply to {expected}, got {got}")]
    Function { expected: Function, got: Function },
    #[error("not valid JSON-RPC: {0}")]
    Json(String),
    #[error("field {field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("file transfer: {0}")]
    Transfer(String),
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

fn required<'a>(m: &'a Map<String, Value>, k: &'static str) -> Result<&'a Value, WireError> {
    m.get(k).ok_or_else(|| field(k, "missing"))
}

fn as_u64(v: &Value, k: &'static str) -> Result<u64, WireError> {
    // Some firmware writes integers as floats (12.0); accept exact ones.
    match v.as_u64() {
        Some(n) => Ok(n),
        None => match v.as_f64() {
            Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 1.8e19 => Ok(x as u64),
            _ => Err(field(k, format!("{v} is not a whole number"))),
        },
    }
}

fn as_u32(v: &Value, k: &'static str) -> Result<u32, WireError> {
    u32::try_from(as_u64(v, k)?).map_err(|_| field(k, format!("{v} is out of range")))
}

fn as_u16(v: &Value, k: &'static str) -> Result<u16, WireError> {
    u16::try_from(as_u64(v, k)?).map_err(|_| field(k, format!("{v} is out of range")))
}

fn as_u8(v: &Value, k: &'static str) -> Result<u8, WireError> {
    u8::try_from(as_u64(v, k)?).map_err(|_| field(k, format!("{v} is out of range")))
}

fn as_f32(v: &Value, k: &'static str) -> Result<f32, WireError> {
    v.as_f64()
        .map(|x| x as f32)
        .ok_or_else(|| field(k, format!("{v} is not a number")))
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

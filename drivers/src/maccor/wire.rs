//! MacNet frames and messages, both encodings, no I/O (facts: `shared/devices/maccor-macnet.md`).
//!
//! **Binary** (TCP 57560): a little-endian header of u16 FClass, FNum, Chan (0-based) and Len,
//! then data. In requests Len counts channels, except for the functions that carry data
//! ([`carries_data`]), whose Len counts the data bytes (as the (6,8) frame `<HHHHffffBB`, Len
//! 18, shows); in replies Len always counts bytes.
//!
//! **JSON** (TCP 57570): JSON-RPC 2.0, one object per `\r\n`-terminated line, method `MacNet`,
//! `params` holding FClass, FNum, Chan and the function's fields; results echo FClass, FNum and
//! Chan.
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

use serde_json::{Map, Value, json};
use std::fmt;

/// Default TCP port of the binary protocol (System.ini).
pub const DEFAULT_BINARY_PORT: u16 = 57560;
/// Default TCP port of the JSON protocol (System.ini).
pub const DEFAULT_JSON_PORT: u16 = 57570;
/// Every JSON message ends with CR LF.
pub const JSON_TERMINATOR: &str = "\r\n";
/// Longest JSON line accepted; a peer that streams without a terminator is malformed, not an
/// out-of-memory.
pub const MAX_JSON_LINE: usize = 256 * 1024;
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

/// Channel state `Stat` of (4,1) and (4,7).
pub mod stat {
    pub const AVAILABLE: u16 = 0;
    pub const SELECTED: u16 = 1;
    pub const ACTIVE: u16 = 2;
    pub const SUSPENDED: u16 = 3;
    pub const COMPLETED: u16 = 4;
    pub const PROBLEM: u16 = 5;
    /// 6 to 16 are maintenance states.
    pub const MAINTENANCE_LAST: u16 = 16;
}

/// `RF1`: what the channel is doing (the open clients' tables).
pub mod rf1 {
    pub const AVAILABLE: u8 = 0;
    pub const CHARGE: u8 = 1;
    pub const DISCHARGE: u8 = 2;
    pub const REST: u8 = 4;
    pub const PROBLEM: u8 = 29;
    pub const SUSPENDED: u8 = 30;
    pub const COMPLETE: u8 = 31;

    pub const NAMES: &[(u8, &str)] = &[
        (0, "available"),
        (1, "charge"),
        (2, "discharge"),
        (3, "advance cycle"),
        (4, "rest"),
        (5, "pause"),
        (7, "end"),
        (8, "external charge"),
        (9, "external discharge"),
        (19, "pulse charge"),
        (20, "pulse discharge"),
        (21, "I/O output"),
        (22, "chamber/FRA"),
        (23, "scan"),
        (26, "subroutine"),
        (29, "problem"),
        (30, "suspended"),
        (31, "complete"),
    ];
}

/// `RF2`: why the last step ended, or what stopped the channel (the open clients' table).
pub mod rf2 {
    pub const NORMAL_END: u8 = 193;
    pub const VOLTAGE_SAFETY: u8 = 197;
    pub const ABSOLUTE_SAFETY: u8 = 253;
    pub const SUSPEND_OR_PAUSE: u8 = 192;

    pub const NAMES: &[(u8, &str)] = &[
        (0, "start of step"),
        (1, "step time"),
        (4, "current increment"),
        (5, "voltage increment"),
        (8, "amp-hours"),
        (9, "watt-hours"),
        (17, "pause step"),
        (18, "auxiliary input"),
        (128, "none"),
        (129, "step time"),
        (130, "test time"),
        (131, "cycle number"),
        (132, "current"),
        (133, "voltage"),
        (134, "power"),
        (135, "resistance"),
        (136, "amp-hours"),
        (137, "watt-hours"),
        (146, "external"),
        (147, "loop count"),
        (157, "auxiliary voltage"),
        (158, "thermocouple"),
        (159, "thermistor"),
        (160, "pressure"),
        (163, "SMBus alarm"),
        (189, "capacity safety limit"),
        (190, "voltage safety limit"),
        (191, "overcharge safety limit"),
        (192, "suspended or paused"),
        (193, "normal end"),
        (194, "timeout fault"),
        (195, "timeout fault"),
        (196, "overcharge safety"),
        (197, "voltage safety"),
        (198, "slave error"),
        (199, "operator forced step"),
        (252, "slave current control error"),
        (253, "absolute safety limit"),
        (254, "lost current control"),
        (255, "buffer full"),
    ];
}

/// A code's name from one of the tables, or "code N".
pub fn name_of(table: &[(u8, &str)], code: u8) -> String {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("code {code}"), |(_, n)| (*n).to_string())
}

/// Result codes of commands. The facts give them for (6,2); the same table serves (6,1),
/// (6,3)-(6,5) and (6,7) here.
pub mod result {
    pub const OK: u32 = 0;
    /// Two codes for a test name already in use (the open material does not tell them apart).
    pub const NAME_NOT_UNIQUE: u32 = 19;
    pub const NAME_NOT_UNIQUE_2: u32 = 20;
    pub const CHANNEL_IN_USE: u32 = 23;
    pub const NO_CHANNEL_SELECTED: u32 = 24;
    /// The simulator's code for a start naming a procedure it does not have or cannot run; a
    /// real tester's code for this is not in the public material.
    pub const SIM_PROCEDURE_UNUSABLE: u32 = 255;
}

/// Result codes of (6,8) set direct output.
pub mod direct_result {
    pub const OK: u32 = 0;
    pub const WRONG_SYSTEM_TYPE: u32 = 1;
    pub const NOT_ACTIVE: u32 = 2;
    /// Outputs must be at least 100 ms (10 ticks) apart.
    pub const TOO_FAST: u32 = 3;
    pub const NOT_DIRECT: u32 = 4;
    pub const NOT_READY: u32 = 5;
}

/// Shortest time between two direct-mode commands, s.
pub const MIN_OUTPUT_INTERVAL_S: f64 = 0.1;

/// Which result table a code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// Select, start, suspend, resume, reset, direct start.
    Command,
    /// (6,8) set direct output.
    DirectOutput,
}

/// What a non-zero result code means, in words a lab understands.
pub fn describe_result(kind: ResultKind, code: u32) -> String {
    match (kind, code) {
        (ResultKind::Command, result::NAME_NOT_UNIQUE | result::NAME_NOT_UNIQUE_2) => format!(
            "the test name is not unique on this tester (MacNet result {code}); every test \
             needs a name no earlier test or data file on the tester has"
        ),
        (ResultKind::Command, result::CHANNEL_IN_USE) => format!(
            "the channel is in use (MacNet result {code}): a test is active, suspended, \
             completed or in a problem state there; stop or reset it first"
        ),
        (ResultKind::Command, result::NO_CHANNEL_SELECTED) => format!(
            "no channel is selected (MacNet result {code}); select the channel before starting"
        ),
        (ResultKind::Command, result::SIM_PROCEDURE_UNUSABLE) => {
            format!("the tester has no usable procedure of that name (result {code})")
        }
        (ResultKind::DirectOutput, direct_result::WRONG_SYSTEM_TYPE) => {
            format!("direct mode works only on testers of system type 0 (MacNet result {code})")
        }
        (ResultKind::DirectOutput, direct_result::NOT_ACTIVE) => {
            format!(
                "the channel is not active (MacNet result {code}); it may have been suspended or reset"
            )
        }
        (ResultKind::DirectOutput, direct_result::TOO_FAST) => {
            format!("outputs were sent less than 100 ms apart (MacNet result {code})")
        }
        (ResultKind::DirectOutput, direct_result::NOT_DIRECT) => {
            format!("the channel is not in direct mode (MacNet result {code})")
        }
        (ResultKind::DirectOutput, direct_result::NOT_READY) => {
            format!("direct mode is not ready yet (MacNet result {code})")
        }
        _ => format!("MacNet result code {code}"),
    }
}

/// JSON-RPC error objects a MacNet server answers with. The texts are MacNet's; the numeric
/// codes are not in the public material, so clients match on the text.
pub mod json_error {
    pub const PARSE_ERROR: (i64, &str) = (-32700, "Parse error");
    pub const INVALID_PARAMS: (i64, &str) = (-32602, "Invalid params");
    pub const INVALID_FCLASS: (i64, &str) = (-32001, "Invalid FClass");
    pub const INVALID_FNUM: (i64, &str) = (-32002, "Invalid FNum");
    pub const MACNET_ERROR: (i64, &str) = (-32000, "MacNet error");
    pub const ILLEGAL_VALUE: (i64, &str) = (-32003, "Illegal value");
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

// ---------------------------------------------------------------------------------------------
// Binary frames
// ---------------------------------------------------------------------------------------------

/// A binary frame: header fields plus data. For requests without data, `len` is the channel
/// count; otherwise it equals `data.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FClass and FNum.
    pub function: Function,
    /// The channel (0-based) the frame is about; replies carry their own, to be checked.
    pub chan: u16,
    /// Len as sent: a channel count or a byte count (see the module doc).
    pub len: u16,
    /// The bytes after the header.
    pub data: Vec<u8>,
}

/// Which side sent a frame: it decides what Len counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Reply,
}

impl Frame {
    /// A request that carries no data: `count` channels from `chan`.
    pub fn request(function: Function, chan: u16, count: u16) -> Frame {
        Frame {
            function,
            chan,
            len: count,
            data: Vec::new(),
        }
    }

    /// A frame whose Len counts its data bytes (data-carrying requests and every reply).
    /// MacNet data is never longer than a u16 can count; longer data is cut there.
    pub fn with_data(function: Function, chan: u16, mut data: Vec<u8>) -> Frame {
        data.truncate(usize::from(u16::MAX));
        Frame {
            function,
            chan,
            len: data.len() as u16,
            data,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        for v in [self.function.class, self.function.num, self.chan, self.len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }

    /// Checks that this is a reply to `expected`.
    pub fn expect(&self, expected: Function) -> Result<(), WireError> {
        if self.function == expected {
            Ok(())
        } else {
            Err(WireError::Function {
                expected,
                got: self.function,
            })
        }
    }
}

/// How many data bytes follow a header.
fn data_len(function: Function, len: u16, dir: Direction) -> usize {
    match dir {
        Direction::Reply => usize::from(len),
        Direction::Request if carries_data(function) => usize::from(len),
        Direction::Request => 0,
    }
}

/// Splits one frame off the front of `buf`: `None` until it is complete, else the frame and the
/// number of bytes it took. Any header is acceptable (unknown functions are the handler's
/// business), so this never fails.
pub fn split_frame(buf: &[u8], dir: Direction) -> Option<(Frame, usize)> {
    let header: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    let word = |i: usize| u16::from_le_bytes([header[2 * i], header[2 * i + 1]]);
    let function = Function {
        class: word(0),
        num: word(1),
    };
    let len = word(3);
    let total = HEADER_LEN + data_len(function, len, dir);
    let data = buf.get(HEADER_LEN..total)?.to_vec();
    Some((
        Frame {
            function,
            chan: word(2),
            len,
            data,
        },
        total,
    ))
}

/// Reads little-endian values off a byte slice, failing with the message's name.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8], need: usize) -> Result<Reader<'a>, WireError> {
        if bytes.len() < need {
            return Err(WireError::Length {
                what,
                need,
                got: bytes.len(),
            });
        }
        Ok(Reader { what, bytes, at: 0 })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let out = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or(WireError::Length {
                what: self.what,
                need: self.at + n,
                got: self.bytes.len(),
            })?;
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, WireError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    fn text(&mut self, n: usize) -> Result<String, WireError> {
        Ok(decode_text(self.take(n)?))
    }
}

/// A fixed-width text field: ASCII, padded with spaces (what the tester expects), cut to
/// `width`. Non-ASCII characters become `?`.
pub fn encode_text(s: &str, width: usize) -> Vec<u8> {
    let mut out: Vec<u8> = s
        .chars()
        .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
        .take(width)
        .collect();
    out.resize(width, b' ');
    out
}

/// The inverse of [`encode_text`]: padding (spaces or NULs) removed.
pub fn decode_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
        .trim_end_matches(' ')
        .to_string()
}

/// A command reply's result code, as a little-endian integer of 1, 2 or 4 bytes.
pub fn result_frame(function: Function, chan: u16, code: u32) -> Frame {
    Frame::with_data(function, chan, (code as u16).to_le_bytes().to_vec())
}

/// Reads a command reply's result code.
pub fn decode_result(frame: &Frame) -> Result<u32, WireError> {
    match frame.data.as_slice() {
        [a] => Ok(u32::from(*a)),
        [a, b] => Ok(u32::from(u16::from_le_bytes([*a, *b]))),
        [a, b, c, d] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
        other => Err(WireError::Length {
            what: "a result code",
            need: 2,
            got: other.len(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// (1,1): the tester software's versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// MacNet API version.
    pub api: u16,
    /// MacTest32.exe major, minor, build.
    pub exe: [u16; 3],
    /// MacTest32.dll major, minor, build.
    pub dll: [u16; 3],
}

const VERSION_KEYS: [[&str; 3]; 2] = [
    [
        "MacTest32EXEversionMajor",
        "MacTest32EXEversionMinor",
        "MacTest32EXEversionBuild",
    ],
    [
        "MacTest32DLLversionMajor",
        "MacTest32DLLversionMinor",
        "MacTest32DLLversionBuild",
    ],
];

impl Version {
    pub const LEN: usize = 14;

    pub fn to_bytes(&self) -> Vec<u8> {
        std::iter::once(self.api)
            .chain(self.exe)
            .chain(self.dll)
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Version, WireError> {
        let mut r = Reader::new("a (1,1) version reply", bytes, Self::LEN)?;
        let api = r.u16()?;
        let exe = [r.u16()?, r.u16()?, r.u16()?];
        let dll = [r.u16()?, r.u16()?, r.u16()?];
        Ok(Version { api, exe, dll })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("APIVersion".into(), self.api.into());
        for (keys, values) in VERSION_KEYS.iter().zip([self.exe, self.dll]) {
            for (k, v) in keys.iter().zip(values) {
                m.insert((*k).into(), v.into());
            }
        }
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<Version, WireError> {
        // The public example spells one key "MacTest32DLLversionMsinor"; take either spelling.
        let get = |k: &'static str| -> Result<u16, WireError> {
            let alt = k.replace("Minor", "Msinor");
            match m.get(k).or_else(|| m.get(alt.as_str())) {
                Some(v) => as_u16(v, k),
                None => Err(field(k, "missing")),
            }
        };
        let three = |keys: [&'static str; 3]| -> Result<[u16; 3], WireError> {
            Ok([get(keys[0])?, get(keys[1])?, get(keys[2])?])
        };
        Ok(Version {
            api: get("APIVersion")?,
            exe: three(VERSION_KEYS[0])?,
            dll: three(VERSION_KEYS[1])?,
        })
    }
}

/// (1,2): what the tester has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The tester's name for itself.
    pub system_id: String,
    /// Direct mode works only on type 0.
    pub system_type: u16,
    /// Hardware counts, for the operator's overview.
    pub controller_boards: u16,
    /// Number of test channels: channels are 0 to `test_channels - 1`.
    pub test_channels: u16,
    /// Auxiliary (temperature, voltage) boards and inputs.
    pub aux_boards: u16,
    pub aux_channels: u16,
}

impl SystemInfo {
    const ID_LEN: usize = 16;
    pub const LEN: usize = 10 + Self::ID_LEN;

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = [
            self.system_type,
            self.controller_boards,
            self.test_channels,
            self.aux_boards,
            self.aux_channels,
        ]
        .into_iter()
        .flat_map(u16::to_le_bytes)
        .collect();
        out.extend(encode_text(&self.system_id, Self::ID_LEN));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SystemInfo, WireError> {
        let mut r = Reader::new("a (1,2) system info reply", bytes, Self::LEN)?;
        Ok(SystemInfo {
            system_type: r.u16()?,
            controller_boards: r.u16()?,
            test_channels: r.u16()?,
            aux_boards: r.u16()?,
            aux_channels: r.u16()?,
            system_id: r.text(Self::ID_LEN)?,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("SystemID".into(), self.system_id.clone().into());
        m.insert("SystemType".into(), self.system_type.into());
        m.insert("ControllerBoards".into(), self.controller_boards.into());
        m.insert("TestChannels".into(), self.test_channels.into());
        m.insert("AuxBoards".into(), self.aux_boards.into());
        m.insert("AuxChannels".into(), self.aux_channels.into());
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<SystemInfo, WireError> {
        // Only the channel count is needed; the rest defaults when a firmware leaves it out.
        let opt = |k: &'static str| m.get(k).map_or(Ok(0), |v| as_u16(v, k));
        Ok(SystemInfo {
            system_id: m
                .get("SystemID")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            system_type: opt("SystemType")?,
            controller_boards: opt("ControllerBoards")?,
            test_channels: as_u16(
                m.get("TestChannels")
                    .ok_or_else(|| field("TestChannels", "missing"))?,
                "TestChannels",
            )?,
            aux_boards: opt("AuxBoards")?,
            aux_channels: opt("AuxChannels")?,
        })
    }
}

/// One channel's entry in (4,1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStat {
    /// What the channel does ([`rf1`]), why its last step ended ([`rf2`]), its state ([`stat`]).
    pub rf1: u8,
    pub rf2: u8,
    pub stat: u16,
}

/// (4,1): the status of `entries.len()` channels from `first`, as the reply numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBlock {
    /// The channel of the first entry, as the reply states it (entries follow in order).
    pub first: u16,
    /// One entry per channel from `first`.
    pub entries: Vec<ChannelStat>,
}

impl StatusBlock {
    pub fn request(first: u16, count: u16) -> Frame {
        Frame::request(STATUS, first, count)
    }

    pub fn to_frame(&self) -> Frame {
        let data = self
            .entries
            .iter()
            .flat_map(|e| {
                let [a, b] = e.stat.to_le_bytes();
                [e.rf1, e.rf2, a, b]
            })
            .collect();
        Frame::with_data(STATUS, self.first, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<StatusBlock, WireError> {
        frame.expect(STATUS)?;
        if !frame.data.len().is_multiple_of(4) {
            return Err(WireError::Length {
                what: "a (4,1) status reply (4 bytes per channel)",
                need: frame.data.len().next_multiple_of(4),
                got: frame.data.len(),
            });
        }
        let entries = frame
            .data
            .chunks_exact(4)
            .map(|c| ChannelStat {
                rf1: c[0],
                rf2: c[1],
                stat: u16::from_le_bytes([c[2], c[3]]),
            })
            .collect();
        Ok(StatusBlock {
            first: frame.chan,
            entries,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Chan".into(), self.first.into());
        m.insert("Len".into(), self.entries.len().into());
        let list: Vec<Value> = self
            .entries
            .iter()
            .map(|e| json!({"RF1": e.rf1, "RF2": e.rf2, "Stat": e.stat}))
            .collect();
        m.insert("Status".into(), Value::Array(list));
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<StatusBlock, WireError> {
        let first = as_u16(
            m.get("Chan").ok_or_else(|| field("Chan", "missing"))?,
            "Chan",
        )?;
        let list = m
            .get("Status")
            .and_then(Value::as_array)
            .ok_or_else(|| field("Status", "missing or not a list"))?;
        let entries = list
            .iter()
            .map(|e| {
                let e = e
                    .as_object()
                    .ok_or_else(|| field("Status", "an entry is not an object"))?;
                Ok(ChannelStat {
                    rf1: as_u8(required(e, "RF1")?, "RF1")?,
                    rf2: as_u8(required(e, "RF2")?, "RF2")?,
                    stat: as_u16(required(e, "Stat")?, "Stat")?,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        if let Some(len) = m.get("Len") {
            let len = as_u16(len, "Len")?;
            if usize::from(len) != entries.len() {
                return Err(field(
                    "Len",
                    format!("says {len} channels, the list has {}", entries.len()),
                ));
            }
        }
        Ok(StatusBlock { first, entries })
    }
}

/// (4,7): one channel's status and reading. Also the layout of one logged record in the
/// record-log transfer (see [`Packet::Read`]), where `last_rec` is the record's own index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The channel's codes, as in [`ChannelStat`].
    pub rf1: u8,
    pub rf2: u8,
    pub stat: u16,
    /// Index of the newest logged record of the test (from 1; 0 before the first).
    pub last_rec: u32,
    /// MacNet counts cycles from 0 (the public example shows Cycle 0 at step 5).
    pub cycle: u32,
    /// The procedure step (from 1).
    pub step: u16,
    /// Seconds since the test and the step started.
    pub test_time_s: f32,
    pub step_time_s: f32,
    /// Charge and energy counters as the tester keeps them (the step's).
    pub capacity_ah: f32,
    pub energy_wh: f32,
    /// As the tester reports it: a magnitude whose direction is RF1 on some firmware, signed on
    /// others; [`Reading::signed_current`] reads both.
    pub current_a: f32,
    /// Terminal voltage, V.
    pub voltage_v: f32,
    /// Tester clock, ms since the Unix epoch; `None` when a JSON reply's text is unreadable.
    pub tester_time_ms: Option<u64>,
}

impl Reading {
    /// Current in cyclerd's sign (positive charges the cell).
    pub fn signed_current(&self) -> f64 {
        let i = f64::from(self.current_a);
        match self.rf1 {
            rf1::DISCHARGE => -i.abs(),
            rf1::CHARGE => i.abs(),
            _ => i,
        }
    }

    pub fn request(chan: u16) -> Frame {
        Frame::request(READING, chan, 1)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(READING_LEN);
        out.push(self.rf1);
        out.push(self.rf2);
        out.extend(self.stat.to_le_bytes());
        out.extend(self.last_rec.to_le_bytes());
        out.extend(self.cycle.to_le_bytes());
        out.extend(self.step.to_le_bytes());
        for v in [
            self.test_time_s,
            self.step_time_s,
            self.capacity_ah,
            self.energy_wh,
            self.current_a,
            self.voltage_v,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(self.tester_time_ms.unwrap_or(0).to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Reading, WireError> {
        let mut r = Reader::new("a (4,7) reading", bytes, READING_LEN)?;
        Ok(Reading {
            rf1: r.u8()?,
            rf2: r.u8()?,
            stat: r.u16()?,
            last_rec: r.u32()?,
            cycle: r.u32()?,
            step: r.u16()?,
            test_time_s: r.f32()?,
            step_time_s: r.f32()?,
            capacity_ah: r.f32()?,
            energy_wh: r.f32()?,
            current_a: r.f32()?,
            voltage_v: r.f32()?,
            tester_time_ms: Some(r.u64()?),
        })
    }

    pub fn to_frame(&self, chan: u16) -> Frame {
        Frame::with_data(READING, chan, self.to_bytes())
    }

    pub fn from_frame(frame: &Frame) -> Result<Reading, WireError> {
        frame.expect(READING)?;
        Reading::from_bytes(&frame.data)
    }

    pub fn to_json(&self, chan: u16) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Chan".into(), chan.into());
        m.insert("RF1".into(), self.rf1.into());
        m.insert("RF2".into(), self.rf2.into());
        m.insert("Stat".into(), self.stat.into());
        // The public example's spelling; decoders also take "LastRec".
        m.insert("LastRecNum".into(), self.last_rec.into());
        m.insert("Cycle".into(), self.cycle.into());
        m.insert("Step".into(), self.step.into());
        for (k, v) in [
            ("TestTime", self.test_time_s),
            ("StepTime", self.step_time_s),
            ("Capacity", self.capacity_ah),
            ("Energy", self.energy_wh),
            ("Current", self.current_a),
            ("Voltage", self.voltage_v),
        ] {
            m.insert(k.into(), f64::from(v).into());
        }
        m.insert(
            "TesterTime".into(),
            iso8601_from_ms(self.tester_time_ms.unwrap_or(0)).into(),
        );
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<Reading, WireError> {
        let last_rec = match m.get("LastRecNum").or_else(|| m.get("LastRec")) {
            Some(v) => as_u32(v, "LastRecNum")?,
            None => return Err(field("LastRecNum", "missing")),
        };
        let f = |k: &'static str| as_f32(required(m, k)?, k);
        Ok(Reading {
            rf1: as_u8(required(m, "RF1")?, "RF1")?,
            rf2: as_u8(required(m, "RF2")?, "RF2")?,
            stat: as_u16(required(m, "Stat")?, "Stat")?,
            last_rec,
            cycle: as_u32(required(m, "Cycle")?, "Cycle")?,
            step: as_u16(required(m, "Step")?, "Step")?,
            test_time_s: f("TestTime")?,
            step_time_s: f("StepTime")?,
            capacity_ah: f("Capacity")?,
            energy_wh: f("Energy")?,
            current_a: f("Current")?,
            voltage_v: f("Voltage")?,
            tester_time_ms: m
                .get("TesterTime")
                .and_then(Value::as_str)
                .and_then(ms_from_iso8601),
        })
    }
}

/// (6,2): start a test with a procedure already on the tester.
#[derive(Debug, Clone, PartialEq)]
pub struct StartTest {
    /// The data file name: at most 25 ASCII characters, unique on the tester.
    pub test_name: String,
    /// Procedure name without `.000`, at most 25 characters.
    pub procedure: String,
    /// At most 80 characters.
    pub comment: String,
    /// Capacity that C-rate values in the procedure refer to; 1 when not used.
    pub c_rate: f32,
    /// Environmental chamber number; 0 for none.
    pub chamber: u8,
}

impl StartTest {
    /// Offset of the bytes after the known fields, zero-filled: the binary form is 186 bytes
    /// long but only its first 135 are public (the JSON form's further start options default).
    const KNOWN_LEN: usize = 2 * NAME_LEN + COMMENT_LEN + 5;

    pub fn to_frame(&self, chan: u16) -> Frame {
        let mut data = encode_text(&self.test_name, NAME_LEN);
        data.extend(encode_text(&self.procedure, NAME_LEN));
        data.extend(encode_text(&self.comment, COMMENT_LEN));
        data.extend(self.c_rate.to_le_bytes());
        data.push(self.chamber);
        data.resize(START_LEN, 0);
        Frame::with_data(START, chan, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<StartTest, WireError> {
        frame.expect(START)?;
        if frame.data.len() != START_LEN {
            return Err(WireError::Length {
                what: "a (6,2) start request",
                need: START_LEN,
                got: frame.data.len(),
            });
        }
        let mut r = Reader::new("a (6,2) start request", &frame.data, Self::KNOWN_LEN)?;
        Ok(StartTest {
            test_name: r.text(NAME_LEN)?,
            procedure: r.text(NAME_LEN)?,
            comment: r.text(COMMENT_LEN)?,
            c_rate: r.f32()?,
            chamber: r.u8()?,
        })
    }

    /// The JSON params, with the further start options at their documented defaults.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("TestName".into(), self.test_name.clone().into());
        m.insert("ProcName".into(), self.procedure.clone().into());
        m.insert("Comment".into(), self.comment.clone().into());
        m.insert("Crate".into(), f64::from(self.c_rate).into());
        m.insert("ChamberNum".into(), self.chamber.into());
        for (k, v) in [
            ("StartCycle", json!(0)),
            ("TotCycles", json!(0)),
            ("Mass", json!(1)),
            ("VGain", json!(0)),
            ("AbsTRepAlign", json!(0)),
            ("ParallelR", json!(0)),
            ("VDivHiR", json!(0)),
            ("VDivLoR", json!(0)),
            ("CANpos", json!(-1)),
            ("CANprof", json!("")),
            ("RegimeName", json!("")),
        ] {
            m.insert(k.into(), v);
        }
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<StartTest, WireError> {
        let text = |k: &'static str| -> Result<String, WireError> {
            required(m, k)?
                .as_str()
                .map(|s| s.trim_end().to_string())
                .ok_or_else(|| field(k, "not text"))
        };
        Ok(StartTest {
            test_name: text("TestName")?,
            procedure: text("ProcName")?,
            comment: m
                .get("Comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim_end()
                .to_string(),
            c_rate: m.get("Crate").map_or(Ok(1.0), |v| as_f32(v, "Crate"))?,
            chamber: m
                .get("ChamberNum")
                .map_or(Ok(0), |v| as_u8(v, "ChamberNum"))?,
        })
    }
}

/// Direct-mode channel mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Charge,
    Discharge,
    /// Output off. The JSON form of (6,8) cannot set it; the binary form can.
    Rest,
}

impl Mode {
    pub fn byte(self) -> u8 {
        match self {
            Mode::Charge => b'C',
            Mode::Discharge => b'D',
            Mode::Rest => b'R',
        }
    }

    pub fn from_byte(b: u8) -> Option<Mode> {
        match b {
            b'C' => Some(Mode::Charge),
            b'D' => Some(Mode::Discharge),
            b'R' => Some(Mode::Rest),
            _ => None,
        }
    }
}

/// A direct-mode output: current, voltage, power and resistance are mutually limiting; a value
/// outside the channel's range (such as [`IGNORE`]) means no limit, resistance 0 means none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output {
    /// Current magnitude, A (the direction is `mode`).
    pub current_a: f32,
    /// Voltage limit, V: the CV level of a charge, the floor of a discharge.
    pub voltage_v: f32,
    /// Power limit, W.
    pub power_w: f32,
    /// Resistance, ohm (0: none).
    pub resistance_ohm: f32,
    /// Current range 1 to 4.
    pub range: u8,
    /// Charge, discharge or rest.
    pub mode: Mode,
}

impl Output {
    /// Rest, with every limit neutral.
    pub fn rest(range: u8) -> Output {
        Output {
            current_a: 0.0,
            voltage_v: IGNORE,
            power_w: IGNORE,
            resistance_ohm: 0.0,
            range,
            mode: Mode::Rest,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OUTPUT_LEN);
        for v in [
            self.current_a,
            self.voltage_v,
            self.power_w,
            self.resistance_ohm,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.push(self.range);
        out.push(self.mode.byte());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Output, WireError> {
        let mut r = Reader::new("a direct-mode output", bytes, OUTPUT_LEN)?;
        let (current_a, voltage_v, power_w, resistance_ohm) =
            (r.f32()?, r.f32()?, r.f32()?, r.f32()?);
        let range = r.u8()?;
        let mode = r.u8()?;
        let mode = Mode::from_byte(mode)
            .ok_or_else(|| field("ChMode", format!("{mode} is not 'C', 'D' or 'R'")))?;
        Ok(Output {
            current_a,
            voltage_v,
            power_w,
            resistance_ohm,
            range,
            mode,
        })
    }

    /// The (6,8) request: `<HHHHffffBB`, Len 18.
    pub fn to_frame(&self, chan: u16) -> Frame {
        Frame::with_data(DIRECT_OUTPUT, chan, self.to_bytes())
    }

    pub fn from_frame(frame: &Frame) -> Result<Output, WireError> {
        frame.expect(DIRECT_OUTPUT)?;
        if frame.data.len() != OUTPUT_LEN {
            return Err(WireError::Length {
                what: "a (6,8) output request",
                need: OUTPUT_LEN,
                got: frame.data.len(),
            });
        }
        Output::from_bytes(&frame.data)
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Current".into(), f64::from(self.current_a).into());
        m.insert("Voltage".into(), f64::from(self.voltage_v).into());
        m.insert("Power".into(), f64::from(self.power_w).into());
        m.insert("Resistance".into(), f64::from(self.resistance_ohm).into());
        m.insert("CurrentRange".into(), self.range.into());
        m.insert(
            "ChMode".into(),
            char::from(self.mode.byte()).to_string().into(),
        );
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<Output, WireError> {
        let f = |k: &'static str| as_f32(required(m, k)?, k);
        // The mode comes as a letter or as its character code (67, 68, 82).
        let mode = match required(m, "ChMode")? {
            Value::String(s) if s.len() == 1 => s.as_bytes()[0],
            v => as_u8(v, "ChMode")?,
        };
        let mode = Mode::from_byte(mode)
            .ok_or_else(|| field("ChMode", format!("{mode} is not 'C', 'D' or 'R'")))?;
        Ok(Output {
            current_a: f("Current")?,
            voltage_v: f("Voltage")?,
            power_w: f("Power")?,
            resistance_ohm: m
                .get("Resistance")
                .map_or(Ok(0.0), |v| as_f32(v, "Resistance"))?,
            range: m
                .get("CurrentRange")
                .map_or(Ok(4), |v| as_u8(v, "CurrentRange"))?,
            mode,
        })
    }
}

/// (6,7): start a direct-mode test with an initial output and the record rules of its data
/// file (0 disables a rule).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectStart {
    /// The data file name, as for (6,2).
    pub test_name: String,
    /// The output from the start on.
    pub output: Output,
    /// Time between data records, s.
    pub record_every_s: f32,
    /// Voltage change that writes a record, V.
    pub record_dv: f32,
    /// Current change that writes a record, A.
    pub record_di: f32,
}

impl DirectStart {
    pub fn to_frame(&self, chan: u16) -> Frame {
        let mut data = encode_text(&self.test_name, NAME_LEN);
        data.extend(self.output.to_bytes());
        for v in [self.record_every_s, self.record_dv, self.record_di] {
            data.extend(v.to_le_bytes());
        }
        Frame::with_data(DIRECT_START, chan, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<DirectStart, WireError> {
        frame.expect(DIRECT_START)?;
        let mut r = Reader::new("a (6,7) direct start", &frame.data, DIRECT_START_LEN)?;
        let test_name = r.text(NAME_LEN)?;
        let output = Output::from_bytes(r.take(OUTPUT_LEN)?)?;
        Ok(DirectStart {
            test_name,
            output,
            record_every_s: r.f32()?,
            record_dv: r.f32()?,
            record_di: r.f32()?,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.output.to_json();
        m.insert("TestName".into(), self.test_name.clone().into());
        m.insert("DataTime".into(), f64::from(self.record_every_s).into());
        m.insert("DataV".into(), f64::from(self.record_dv).into());
        m.insert("DataI".into(), f64::from(self.record_di).into());
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<DirectStart, WireError> {
        let opt = |k: &'static str| m.get(k).map_or(Ok(0.0), |v| as_f32(v, k));
        Ok(DirectStart {
            test_name: required(m, "TestName")?
                .as_str()
                .ok_or_else(|| field("TestName", "not text"))?
                .trim_end()
                .to_string(),
            output: Output::from_json(m)?,
            record_every_s: opt("DataTime")?,
            record_dv: opt("DataV")?,
            record_di: opt("DataI")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// (1,6) file transfer
// ---------------------------------------------------------------------------------------------

/// TFTP-like opcodes of (1,6).
pub mod opcode {
    /// Read request: TFTP's opcode for the direction MacNet does not document. cyclerd uses it
    /// to download a channel's record log (see the module doc of `maccor`); a tester that does
    /// not know it answers with an ERROR packet or an empty reply.
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
}

/// Bytes of file data per DATA block; a shorter block (possibly empty) ends the transfer.
pub const BLOCK_SIZE: usize = 500;
/// File type of a test procedure (`.000`).
pub const FILE_TYPE_PROCEDURE: u16 = 3;
/// File type cyclerd asks for in a read request: the channel's record log of its current (or
/// last) test. Not a MacNet value; chosen outside the small numbers MacNet's types use.
pub const FILE_TYPE_RECORD_LOG: u16 = 0x0100;

/// Error codes of ERROR packets (TFTP's; MacNet's own are not public).
pub mod transfer_error {
    pub const NOT_DEFINED: u16 = 0;
    pub const NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const ILLEGAL_OPERATION: u16 = 4;
}

/// One (1,6) packet, carried in a frame's data (Len = byte count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read `max` records of the channel (frame Chan) from record index `from`.
    Read {
        file_type: u16,
        from: u32,
        max: u32,
    },
    /// Write the file `name` (e.g. `CCCV.000`) of `file_type`.
    Write {
        file_type: u16,
        name: String,
    },
    /// Block `block` (from 1) of the file.
    Data {
        block: u16,
        bytes: Vec<u8>,
    },
    /// Block `block` arrived (0 acknowledges a write request).
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
}

impl Packet {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Packet::Read {
                file_type,
                from,
                max,
            } => {
                out.extend(opcode::RRQ.to_le_bytes());
                out.extend(file_type.to_le_bytes());
                out.extend(from.to_le_bytes());
                out.extend(max.to_le_bytes());
            }
            Packet::Write { file_type, name } => {
                out.extend(opcode::WRQ.to_le_bytes());
                out.extend(file_type.to_le_bytes());
                out.extend(name.as_bytes());
                out.push(0);
            }
            Packet::Data { block, bytes } => {
                out.extend(opcode::DATA.to_le_bytes());
                out.extend(block.to_le_bytes());
                out.extend(bytes);
            }
            Packet::Ack { block } => {
                out.extend(opcode::ACK.to_le_bytes());
                out.extend(block.to_le_bytes());
            }
            Packet::Error { code, message } => {
                out.extend(opcode::ERROR.to_le_bytes());
                out.extend(code.to_le_bytes());
                out.extend(message.as_bytes());
                out.push(0);
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Packet, WireError> {
        let mut r = Reader::new("a file-transfer packet", bytes, 4)?;
        let op = r.u16()?;
        let word = r.u16()?;
        let rest = &bytes[4..];
        let nul_text = |what: &str| -> Result<String, WireError> {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| WireError::Transfer(format!("{what} is not NUL-terminated")))?;
            std::str::from_utf8(&rest[..end])
                .map(str::to_string)
                .map_err(|_| WireError::Transfer(format!("{what} is not text")))
        };
        match op {
            opcode::RRQ => {
                let mut r = Reader::new("a read request", rest, 8)?;
                Ok(Packet::Read {
                    file_type: word,
                    from: r.u32()?,
                    max: r.u32()?,
                })
            }
            opcode::WRQ => Ok(Packet::Write {
                file_type: word,
                name: nul_text("the file name")?,
            }),
            opcode::DATA => {
                if rest.len() > BLOCK_SIZE {
                    return Err(WireError::Transfer(format!(
                        "block {word} holds {} bytes, more than {BLOCK_SIZE}",
                        rest.len()
                    )));
                }
                Ok(Packet::Data {
                    block: word,
                    bytes: rest.to_vec(),
                })
            }
            opcode::ACK => Ok(Packet::Ack { block: word }),
            opcode::ERROR => Ok(Packet::Error {
                code: word,
                message: nul_text("the error message")?,
            }),
            other => Err(WireError::Transfer(format!("unknown opcode {other}"))),
        }
    }

    pub fn to_frame(&self, chan: u16) -> Frame {
        Frame::with_data(FILE_TRANSFER, chan, self.to_bytes())
    }

    pub fn from_frame(frame: &Frame) -> Result<Packet, WireError> {
        frame.expect(FILE_TRANSFER)?;
        Packet::from_bytes(&frame.data)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON-RPC
// ---------------------------------------------------------------------------------------------

/// A JSON request line (with its terminator) for `function` on `chan` with `params`.
pub fn json_request(
    id: u64,
    function: Function,
    chan: Option<u16>,
    params: Map<String, Value>,
) -> String {
    let mut p = Map::new();
    p.insert("FClass".into(), function.class.into());
    p.insert("FNum".into(), function.num.into());
    if let Some(c) = chan {
        p.insert("Chan".into(), c.into());
    }
    p.extend(params);
    let v = json!({"jsonrpc": "2.0", "method": "MacNet", "params": p, "id": id});
    format!("{v}{JSON_TERMINATOR}")
}

/// A request as a server reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRequest {
    /// Echoed in the reply (any JSON value; null when absent).
    pub id: Value,
    /// FClass and FNum from `params`.
    pub function: Function,
    /// Chan from `params`, when given.
    pub chan: Option<u16>,
    /// Everything in `params`, FClass/FNum/Chan included.
    pub params: Map<String, Value>,
}

/// A JSON-RPC error to answer with: the code and MacNet's text.
pub type JsonRpcError = (i64, &'static str);

/// Reads a request line; the error carries the id to answer with (null when unreadable).
pub fn parse_json_request(line: &str) -> Result<JsonRequest, (Value, JsonRpcError)> {
    let v: Value = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
        .map_err(|_| (Value::Null, json_error::PARSE_ERROR))?;
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let bad = |e| (id.clone(), e);
    let obj = v.as_object().ok_or_else(|| bad(json_error::PARSE_ERROR))?;
    if obj.get("method").and_then(Value::as_str) != Some("MacNet") {
        return Err(bad(json_error::INVALID_PARAMS));
    }
    let params = obj
        .get("params")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(json_error::INVALID_PARAMS))?;
    let num = |k: &str| {
        params
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    let class = num("FClass").ok_or_else(|| bad(json_error::INVALID_PARAMS))?;
    let fnum = num("FNum").ok_or_else(|| bad(json_error::INVALID_PARAMS))?;
    let chan = match params.get("Chan") {
        None => None,
        Some(c) => Some(
            c.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| bad(json_error::INVALID_PARAMS))?,
        ),
    };
    Ok(JsonRequest {
        id,
        function: Function { class, num: fnum },
        chan,
        params: params.clone(),
    })
}

/// A result line: FClass, FNum (and Chan when given) first, then `fields`.
pub fn json_result(
    id: &Value,
    function: Function,
    chan: Option<u16>,
    fields: Map<String, Value>,
) -> String {
    let mut r = Map::new();
    r.insert("FClass".into(), function.class.into());
    r.insert("FNum".into(), function.num.into());
    if let Some(c) = chan {
        r.insert("Chan".into(), c.into());
    }
    r.extend(fields);
    let v = json!({"jsonrpc": "2.0", "result": r, "id": id});
    format!("{v}{JSON_TERMINATOR}")
}

/// An error line.
pub fn json_error_line(id: &Value, (code, message): JsonRpcError) -> String {
    let v = json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id});
    format!("{v}{JSON_TERMINATOR}")
}

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonReply {
    Result {
        /// The request's id, to match reply and request (`None` when not a number).
        id: Option<u64>,
        /// FClass and FNum the result says it answers.
        function: Function,
        /// The result's own Chan, to check against the request.
        chan: Option<u16>,
        /// The whole result object.
        fields: Map<String, Value>,
    },
    Error {
        /// As for results.
        id: Option<u64>,
        /// JSON-RPC error code and MacNet's text ("Invalid FClass", ...).
        code: i64,
        message: String,
    },
}

impl JsonReply {
    pub fn id(&self) -> Option<u64> {
        match self {
            JsonReply::Result { id, .. } | JsonReply::Error { id, .. } => *id,
        }
    }
}

/// Reads a reply line.
pub fn parse_json_reply(line: &str) -> Result<JsonReply, WireError> {
    let v: Value = serde_json::from_str(line.trim_end_matches(['\r', '\n']))
        .map_err(|e| WireError::Json(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| WireError::Json("the reply is not an object".into()))?;
    let id = obj.get("id").and_then(Value::as_u64);
    if let Some(e) = obj.get("error") {
        let e = e
            .as_object()
            .ok_or_else(|| WireError::Json("\"error\" is not an object".into()))?;
        return Ok(JsonReply::Error {
            id,
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .to_string(),
        });
    }
    let r = obj
        .get("result")
        .and_then(Value::as_object)
        .ok_or_else(|| WireError::Json("neither \"result\" nor \"error\"".into()))?;
    let class = as_u16(required(r, "FClass")?, "FClass")?;
    let num = as_u16(required(r, "FNum")?, "FNum")?;
    let chan = r.get("Chan").map(|c| as_u16(c, "Chan")).transpose()?;
    Ok(JsonReply::Result {
        id,
        function: Function { class, num },
        chan,
        fields: r.clone(),
    })
}

/// The `Result` of a command reply as a code ("OK" is 0).
pub fn json_result_code(fields: &Map<String, Value>) -> Result<u32, WireError> {
    match required(fields, "Result")? {
        Value::String(s) if s.trim().eq_ignore_ascii_case("OK") => Ok(result::OK),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| field("Result", format!("{s:?} is neither OK nor a code"))),
        v => as_u32(v, "Result"),
    }
}

/// The `Result` field for a code.
pub fn json_result_field(code: u32) -> Map<String, Value> {
    let mut m = Map::new();
    if code == result::OK {
        m.insert("Result".into(), "OK".into());
    } else {
        m.insert("Result".into(), code.into());
    }
    m
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

// ---------------------------------------------------------------------------------------------
// Names and times
// ---------------------------------------------------------------------------------------------

/// A name that fits a 25-byte MacNet field and a Windows file name, and stays unique: kept as
/// it is when it already fits (ASCII letters, digits, `-`, `_`; at most 25 bytes; not MacNet's
/// reserved `Random`), otherwise the first 16 safe characters, `-` and 8 hex digits of a hash
/// of the whole name. Deterministic, so a restarted daemon derives the same name.
pub fn short_name(name: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !name.is_empty()
        && name.len() <= NAME_LEN
        && name.chars().all(safe)
        && !name.eq_ignore_ascii_case("Random")
    {
        return name.to_string();
    }
    let prefix: String = name
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(NAME_LEN - 9)
        .collect();
    format!("{prefix}-{:08x}", fnv1a32(name.as_bytes()))
}

/// FNV-1a, 32 bits: small, stable across builds and platforms.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for ms since the epoch, as the tester writes TesterTime.
pub fn iso8601_from_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fff][Z]` (UTC assumed) back to ms since the epoch.
pub fn ms_from_iso8601(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms_frac: u64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        let v: u64 = digits.parse().ok()?;
        v * 10u64.pow(3 - digits.len() as u32)
    };
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms_frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Reading {
        Reading {
            rf1: rf1::DISCHARGE,
            rf2: 132,
            stat: stat::ACTIVE,
            last_rec: 4225,
            cycle: 2,
            step: 5,
            test_time_s: 212.25,
            step_time_s: 209.5,
            capacity_ah: 0.75,
            energy_wh: 2.5,
            current_a: 1.25,
            voltage_v: 3.859375,
            tester_time_ms: Some(1_665_664_376_000),
        }
    }

    #[test]
    fn the_direct_output_frame_is_hhhhffffbb_with_len_18() {
        let out = Output {
            current_a: 1.5,
            voltage_v: 4.2,
            power_w: IGNORE,
            resistance_ohm: 0.0,
            range: 4,
            mode: Mode::Rest,
        };
        let bytes = out.to_frame(3).encode();
        assert_eq!(bytes.len(), 8 + 18);
        assert_eq!(&bytes[..8], &[6, 0, 8, 0, 3, 0, 18, 0]);
        assert_eq!(&bytes[8..12], &1.5f32.to_le_bytes());
        assert_eq!(&bytes[12..16], &4.2f32.to_le_bytes());
        assert_eq!(bytes[24], 4);
        assert_eq!(bytes[25], b'R');
        let (frame, used) = split_frame(&bytes, Direction::Request).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(Output::from_frame(&frame).unwrap(), out);
    }

    #[test]
    fn the_start_frame_is_186_bytes_with_space_padded_names() {
        let start = StartTest {
            test_name: "cell-42".into(),
            procedure: "CCCV".into(),
            comment: "cyclerd".into(),
            c_rate: 1.0,
            chamber: 0,
        };
        let frame = start.to_frame(5);
        assert_eq!(frame.len, 186);
        assert_eq!(&frame.data[..25], b"cell-42                  ");
        assert_eq!(&frame.data[25..29], b"CCCV");
        assert_eq!(&frame.data[130..134], &1.0f32.to_le_bytes());
        assert_eq!(StartTest::from_frame(&frame).unwrap(), start);
        assert_eq!(StartTest::from_json(&start.to_json()).unwrap(), start);
    }

    #[test]
    fn a_reading_is_46_bytes_in_the_documented_order() {
        let r = reading();
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), READING_LEN);
        assert_eq!(bytes[0], rf1::DISCHARGE);
        assert_eq!(&bytes[2..4], &stat::ACTIVE.to_le_bytes());
        assert_eq!(&bytes[4..8], &4225u32.to_le_bytes());
        assert_eq!(&bytes[12..14], &5u16.to_le_bytes());
        assert_eq!(&bytes[34..38], &3.859375f32.to_le_bytes());
        assert_eq!(Reading::from_bytes(&bytes).unwrap(), r);
        assert_eq!(Reading::from_json(&r.to_json(3)).unwrap(), r);
    }

    #[test]
    fn a_discharge_magnitude_reads_back_negative() {
        let r = reading();
        assert_eq!(r.signed_current(), -1.25);
        let signed = Reading {
            current_a: -1.25,
            ..r
        };
        assert_eq!(signed.signed_current(), -1.25);
        let charge = Reading {
            rf1: rf1::CHARGE,
            ..r
        };
        assert_eq!(charge.signed_current(), 1.25);
    }

    #[test]
    fn the_public_json_reading_example_decodes() {
        let line = r#"{"jsonrpc":"2.0","result":{"FClass":4,"FNum":7,"Chan":93,"RF1":0,"RF2":192,"Stat":0,"LastRecNum":4225,"Cycle":0,"Step":5,"TestTime":212.199996948242,"StepTime":209.889999389648,"Capacity":0,"Energy":0,"Current":0,"Voltage":3.85938811302185,"TesterTime":"2022-10-13T12:32:56"},"id":1987}"#;
        let JsonReply::Result {
            id,
            function,
            chan,
            fields,
        } = parse_json_reply(line).unwrap()
        else {
            panic!("not a result")
        };
        assert_eq!((id, function, chan), (Some(1987), READING, Some(93)));
        let r = Reading::from_json(&fields).unwrap();
        assert_eq!(r.last_rec, 4225);
        assert_eq!(r.step, 5);
        assert_eq!(
            r.tester_time_ms.map(iso8601_from_ms).as_deref(),
            Some("2022-10-13T12:32:56")
        );
    }

    #[test]
    fn status_blocks_round_trip_in_both_encodings() {
        let block = StatusBlock {
            first: 4,
            entries: vec![
                ChannelStat {
                    rf1: 1,
                    rf2: 0,
                    stat: stat::ACTIVE,
                },
                ChannelStat {
                    rf1: rf1::PROBLEM,
                    rf2: rf2::VOLTAGE_SAFETY,
                    stat: stat::PROBLEM,
                },
            ],
        };
        let frame = block.to_frame();
        assert_eq!(frame.len, 8);
        assert_eq!(StatusBlock::from_frame(&frame).unwrap(), block);
        assert_eq!(StatusBlock::from_json(&block.to_json()).unwrap(), block);
    }

    #[test]
    fn version_system_info_and_direct_start_round_trip() {
        let v = Version {
            api: 1,
            exe: [3, 2, 18],
            dll: [3, 2, 18],
        };
        assert_eq!(Version::from_bytes(&v.to_bytes()).unwrap(), v);
        assert_eq!(Version::from_json(&v.to_json()).unwrap(), v);
        let info = SystemInfo {
            system_id: "Win10".into(),
            system_type: 0,
            controller_boards: 3,
            test_channels: 12,
            aux_boards: 1,
            aux_channels: 128,
        };
        assert_eq!(SystemInfo::from_bytes(&info.to_bytes()).unwrap(), info);
        assert_eq!(SystemInfo::from_json(&info.to_json()).unwrap(), info);
        let d = DirectStart {
            test_name: "direct-1".into(),
            output: Output::rest(4),
            record_every_s: 1.0,
            record_dv: 0.0,
            record_di: 0.0,
        };
        assert_eq!(DirectStart::from_frame(&d.to_frame(2)).unwrap(), d);
        assert_eq!(DirectStart::from_json(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn transfer_packets_round_trip() {
        for p in [
            Packet::Read {
                file_type: FILE_TYPE_RECORD_LOG,
                from: 7,
                max: 100,
            },
            Packet::Write {
                file_type: FILE_TYPE_PROCEDURE,
                name: "CCCV.000".into(),
            },
            Packet::Data {
                block: 2,
                bytes: vec![1; BLOCK_SIZE],
            },
            Packet::Ack { block: 0 },
            Packet::Error {
                code: transfer_error::ILLEGAL_OPERATION,
                message: "no".into(),
            },
        ] {
            assert_eq!(Packet::from_frame(&p.to_frame(0)).unwrap(), p);
        }
        let too_big = Packet::Data {
            block: 1,
            bytes: vec![0; BLOCK_SIZE + 1],
        };
        assert!(Packet::from_bytes(&too_big.to_bytes()).is_err());
    }

    #[test]
    fn result_codes_read_in_any_width_and_as_json_text() {
        for data in [vec![23], vec![23, 0], vec![23, 0, 0, 0]] {
            let f = Frame::with_data(SELECT, 1, data);
            assert_eq!(decode_result(&f).unwrap(), 23);
        }
        assert!(decode_result(&Frame::with_data(SELECT, 1, vec![])).is_err());
        let ok = json_result_field(0);
        assert_eq!(json_result_code(&ok).unwrap(), 0);
        let mut text = Map::new();
        text.insert("Result".into(), "19".into());
        assert_eq!(json_result_code(&text).unwrap(), 19);
        assert!(describe_result(ResultKind::Command, 19).contains("not unique"));
    }

    #[test]
    fn json_requests_name_their_function_and_bad_ones_get_macnet_errors() {
        let line = json_request(7, READING, Some(3), Map::new());
        assert!(line.ends_with("\r\n"));
        let req = parse_json_request(&line).unwrap();
        assert_eq!(
            (req.function, req.chan, req.id),
            (READING, Some(3), json!(7))
        );
        assert_eq!(
            parse_json_request("{nope").unwrap_err().1,
            json_error::PARSE_ERROR
        );
        let no_class = r#"{"jsonrpc":"2.0","method":"MacNet","params":{"FNum":1},"id":1}"#;
        assert_eq!(
            parse_json_request(no_class).unwrap_err(),
            (json!(1), json_error::INVALID_PARAMS)
        );
        let err =
            parse_json_reply(&json_error_line(&json!(5), json_error::INVALID_FCLASS)).unwrap();
        assert_eq!(
            err,
            JsonReply::Error {
                id: Some(5),
                code: -32001,
                message: "Invalid FClass".into()
            }
        );
    }

    #[test]
    fn short_names_fit_25_bytes_and_stay_unique() {
        assert_eq!(short_name("cell-42_a"), "cell-42_a");
        let a = short_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f");
        let b = short_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e80");
        assert!(a.len() <= NAME_LEN && b.len() <= NAME_LEN);
        assert_ne!(a, b);
        assert_eq!(a, short_name("0190d2c4-5b7a-7cc3-9e1f-2a3b4c5d6e7f"));
        // Sanitising alone would make these equal; the hash keeps them apart.
        assert_ne!(short_name("a b"), short_name("a/b"));
        assert_ne!(short_name("Random"), "Random");
        assert!(short_name("").len() <= NAME_LEN);
    }

    #[test]
    fn tester_times_convert_both_ways() {
        assert_eq!(iso8601_from_ms(0), "1970-01-01T00:00:00");
        assert_eq!(
            ms_from_iso8601("2022-10-13T12:32:56"),
            Some(1_665_664_376_000)
        );
        assert_eq!(
            ms_from_iso8601("2024-02-29T23:59:59.5Z"),
            Some(1_709_251_199_500)
        );
        assert_eq!(iso8601_from_ms(1_709_251_199_500), "2024-02-29T23:59:59");
        assert_eq!(ms_from_iso8601("yesterday"), None);
        assert_eq!(ms_from_iso8601("2022-13-01T00:00:00"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Runs every binary decoder on a frame built from arbitrary bytes.
    fn decode_all_binary(frame: &Frame) {
        let _ = decode_result(frame);
        let _ = StatusBlock::from_frame(frame);
        let _ = Reading::from_frame(frame);
        let _ = StartTest::from_frame(frame);
        let _ = Output::from_frame(frame);
        let _ = DirectStart::from_frame(frame);
        let _ = Packet::from_frame(frame);
        let _ = Version::from_bytes(&frame.data);
        let _ = SystemInfo::from_bytes(&frame.data);
        let _ = Reading::from_bytes(&frame.data);
        let _ = Output::from_bytes(&frame.data);
        let _ = Packet::from_bytes(&frame.data);
    }

    /// Runs every JSON decoder on a result map.
    fn decode_all_json(m: &Map<String, Value>) {
        let _ = Version::from_json(m);
        let _ = SystemInfo::from_json(m);
        let _ = StatusBlock::from_json(m);
        let _ = Reading::from_json(m);
        let _ = StartTest::from_json(m);
        let _ = Output::from_json(m);
        let _ = DirectStart::from_json(m);
        let _ = json_result_code(m);
    }

    const KEYS: &[&str] = &[
        "FClass",
        "FNum",
        "Chan",
        "Len",
        "Status",
        "RF1",
        "RF2",
        "Stat",
        "LastRecNum",
        "LastRec",
        "Cycle",
        "Step",
        "TestTime",
        "StepTime",
        "Capacity",
        "Energy",
        "Current",
        "Voltage",
        "TesterTime",
        "Result",
        "TestName",
        "ProcName",
        "Comment",
        "Crate",
        "ChamberNum",
        "ChMode",
        "Power",
        "Resistance",
        "CurrentRange",
        "DataTime",
        "TestChannels",
        "APIVersion",
        "SystemID",
    ];

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
            "\\PC{0,30}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(proptest::sample::select(KEYS), inner, 0..4)
                    .prop_map(|m| Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                    )),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_binary_input_gives_errors_not_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
        ) {
            for dir in [Direction::Request, Direction::Reply] {
                if let Some((frame, used)) = split_frame(&bytes, dir) {
                    prop_assert!(used <= bytes.len());
                    decode_all_binary(&frame);
                }
            }
            for function in [STATUS, READING, START, DIRECT_OUTPUT, DIRECT_START, FILE_TRANSFER, SELECT] {
                decode_all_binary(&Frame::with_data(function, 0, bytes.clone()));
            }
        }

        #[test]
        fn arbitrary_json_lines_give_errors_not_panics(line in "\\PC{0,200}") {
            let _ = parse_json_request(&line);
            if let Ok(JsonReply::Result { fields, .. }) = parse_json_reply(&line) {
                decode_all_json(&fields);
            }
            let _ = ms_from_iso8601(&line);
            prop_assert!(short_name(&line).len() <= NAME_LEN);
        }

        #[test]
        fn arbitrary_json_objects_give_errors_not_panics(
            fields in proptest::collection::btree_map(proptest::sample::select(KEYS), any_value(), 0..20),
        ) {
            let m: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            decode_all_json(&m);
            let line = json!({"jsonrpc": "2.0", "result": m.clone(), "id": 1}).to_string();
            if let Ok(JsonReply::Result { fields, .. }) = parse_json_reply(&line) {
                decode_all_json(&fields);
            }
            let request = json!({"jsonrpc": "2.0", "method": "MacNet", "params": m, "id": 1}).to_string();
            let _ = parse_json_request(&request);
        }
    }
}

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

use std::fmt;

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

/// Command codes (requests). A feedback's code is [`feedback_code`] of its request's.
pub mod cmd {
    pub const LOGIN: u32 = 0xEEAB_0001;
    pub const CONNECT: u32 = 0xEEAB_0002;
    pub const GET_CHANNELS_INFO: u32 = 0xEEAB_0003;
    pub const ASSIGN_SCHEDULE: u32 = 0xBB21_0001;
    pub const START: u32 = 0xBB32_0004;
    pub const STOP: u32 = 0xBB31_0001;
    pub const RESUME: u32 = 0xBB31_0002;
    pub const CONTINUE: u32 = 0xBB32_0006;
    pub const JUMP: u32 = 0xBB32_0005;
    pub const SET_MV: u32 = 0xBB15_0001;
    pub const UPLOAD: u32 = 0xCC13_0003;
    /// **cyclerd extension** (not Arbin's): read logged records from an index. The group
    /// byte 0xCD is one Arbin does not use, so no real command can be mistaken for it.
    pub const GET_RECORDS: u32 = 0xCD5A_0001;
}

/// The feedback code of a request: the nibbles of the second byte swapped
/// (0xEEAB0001 -> 0xEEBA0001).
pub const fn feedback_code(command: u32) -> u32 {
    let b = (command >> 16) & 0xFF;
    let swapped = ((b & 0x0F) << 4) | (b >> 4);
    (command & !0x00FF_0000) | (swapped << 16)
}

/// LOGIN feedback results.
pub mod login_result {
    pub const SUCCESS: u32 = 1;
    pub const FAIL: u32 = 2;
    pub const ALREADY_LOGGED_IN: u32 = 3;
}

/// GET_CHANNELS_INFO selection (which channels an all-channels request lists).
pub mod selection {
    pub const ALL: i16 = 1;
    pub const RUNNING: i16 = 2;
    pub const UNSAFE: i16 = 3;
}

/// GET_CHANNELS_INFO need flags: what the feedback adds to each channel.
pub mod need {
    pub const BMS: u32 = 0x100;
    pub const SMB: u32 = 0x200;
    pub const AUX: u32 = 0x400;
}

/// The aux kinds in the order their counts and values appear in a channel block.
pub mod aux {
    pub const KINDS: usize = 12;
    pub const TEMPERATURE: usize = 1;
    pub const NAMES: [&str; KINDS] = [
        "voltage",
        "temperature",
        "pressure",
        "external",
        "flow",
        "analog out",
        "digital in",
        "digital out",
        "humidity",
        "safety",
        "pH",
        "density",
    ];
}

/// Channel status codes (i16 in the channel block) and what each means for a test.
pub mod status {
    pub const IDLE: i16 = 0x00;
    pub const CHARGE: i16 = 0x02;
    pub const DISCHARGE: i16 = 0x03;
    pub const REST: i16 = 0x04;
    pub const UNSAFE: i16 = 0x08;
    pub const ERROR: i16 = 0x0E;
    pub const FINISHED: i16 = 0x0F;
    pub const PAUSE: i16 = 0x12;
    pub const RUNNING: i16 = 0x16;

    /// What a status says about the test on the channel.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Class {
        /// No test runs (idle, calibration, a voltmeter): the channel is free.
        Free,
        Running,
        Paused,
        Finished,
        /// The channel's safety tripped.
        Unsafe,
        Error,
    }

    /// Every documented code with its name and class.
    pub const TABLE: &[(i16, &str, Class)] = &[
        (0, "Idle", Class::Free),
        (1, "Transition", Class::Running),
        (2, "Charge", Class::Running),
        (3, "Discharge", Class::Running),
        (4, "Rest", Class::Running),
        (5, "Wait", Class::Running),
        (6, "External Charge", Class::Running),
        (7, "Calibration", Class::Free),
        (8, "Unsafe", Class::Unsafe),
        (9, "Pulse", Class::Running),
        (10, "Internal Resistance", Class::Running),
        (11, "AC Impedance", Class::Running),
        (12, "ACI Cell", Class::Running),
        (13, "Test Settings", Class::Free),
        (14, "Error", Class::Error),
        (15, "Finished", Class::Finished),
        (16, "Volt Meter", Class::Free),
        (17, "Waiting for ACS", Class::Running),
        (18, "Pause", Class::Paused),
        (19, "Empty", Class::Free),
        (20, "Idle from MCU", Class::Free),
        (21, "Start", Class::Running),
        (22, "Running", Class::Running),
        (23, "Step Transfer", Class::Running),
        (24, "Resume", Class::Running),
        (25, "Go Pause", Class::Paused),
        // Still logging until the stop takes effect.
        (26, "Go Stop", Class::Running),
        (27, "Go Next Step", Class::Running),
        (28, "Online Update", Class::Running),
        (29, "DAQ Memory Unsafe", Class::Unsafe),
        (30, "ACR", Class::Running),
        (31, "Suspended", Class::Paused),
    ];

    /// The name and class of `code`, or `None` for a code not in the table.
    pub fn lookup(code: i16) -> Option<(&'static str, Class)> {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|&(_, name, class)| (name, class))
    }
}

/// Result codes of command feedbacks, per command (they differ: 0x12 is "channel running" for
/// START but "schedule name empty" for ASSIGN_SCHEDULE).
pub mod result {
    pub const OK: u8 = 0;
    /// The same in every table: the channel index does not exist.
    pub const BAD_CHANNEL: u8 = 0x10;
    /// The same in every table: someone has the Monitor & Control window's dialog open.
    pub const MONITOR_BUSY: u8 = 0x11;
    pub const START_CHANNEL_RUNNING: u8 = 0x12;
    pub const START_NOT_CONNECTED: u8 = 0x13;
    pub const START_INCOMPATIBLE: u8 = 0x14;
    pub const START_NO_SCHEDULE: u8 = 0x15;
    pub const START_NO_CHANNEL_SELECTED: u8 = 0x1F;
    pub const START_NO_TEST_NAME: u8 = 0x23;
    pub const START_SAFETY_PRECHECK: u8 = 0x26;
    pub const ASSIGN_NAME_EMPTY: u8 = 0x12;
    pub const ASSIGN_NOT_FOUND: u8 = 0x13;
    pub const ASSIGN_CHANNEL_RUNNING: u8 = 0x14;
    /// Answer to a GET_RECORDS request that names a channel with no test (cyclerd extension).
    pub const RECORDS_NO_TEST: u8 = 0x12;

    pub const START: &[(u8, &str)] = &[
        (0x10, "invalid channel index"),
        (
            0x11,
            "a user has the Monitor & Control window's start/resume dialog open",
        ),
        (0x12, "the channel is running or unsafe"),
        (0x13, "the channel is not connected to its DAQ"),
        (
            0x14,
            "the schedule is not compatible with the system configuration",
        ),
        (0x15, "no schedule is assigned to the channel"),
        (0x16, "the schedule version does not match MITS"),
        (0x19, "invalid step number"),
        (0x1B, "invalid auxiliary count in the schedule"),
        (0x1C, "invalid built-in auxiliary count"),
        (0x1E, "check the Aux Test Setting tab"),
        (0x1F, "no channel selected"),
        (0x21, "the DAQ is still downloading the schedule"),
        (0x22, "database query failed"),
        (0x23, "the test name cannot be empty"),
        (0x24, "invalid step number"),
        (0x25, "invalid parallel channel number"),
        (0x26, "the schedule's safety pre-check failed"),
        (0x28, "battery simulation error"),
    ];

    pub const ASSIGN: &[(u8, &str)] = &[
        (0x10, "the channel does not exist"),
        (0x11, "the Monitor & Control window is in use"),
        (0x12, "the schedule name is empty"),
        (0x13, "no schedule of that name was found"),
        (0x14, "the channel is running"),
        (0x15, "the channel is downloading another schedule"),
        (0x16, "a batch file is open"),
        (0x17, "assign failed"),
    ];

    pub const STOP: &[(u8, &str)] = &[
        (0x10, "the channel does not exist"),
        (
            0x11,
            "someone else is controlling the Monitor & Control window",
        ),
    ];

    pub const RECORDS: &[(u8, &str)] = &[
        (0x10, "the channel does not exist"),
        (0x12, "no test has run on the channel"),
    ];

    /// The result table of `command` (empty for a command without one here).
    pub fn table(command: u32) -> &'static [(u8, &'static str)] {
        match command {
            super::cmd::START => START,
            super::cmd::ASSIGN_SCHEDULE => ASSIGN,
            super::cmd::STOP => STOP,
            super::cmd::GET_RECORDS => RECORDS,
            _ => &[],
        }
    }

    /// The feedback `code` of `command` in words, with the code itself.
    pub fn describe(command: u32, code: u8) -> String {
        match table(command).iter().find(|(c, _)| *c == code) {
            Some((_, text)) => format!("{text} (result 0x{code:02X})"),
            None => format!("result 0x{code:02X}"),
        }
    }
}

/// UPLOAD feedback results.
pub mod upload_result {
    pub const SUCCESS: u32 = 1;
    pub const FAILED: u32 = 2;
    pub const MD5_ERROR: u32 = 3;
    pub const TEST_RUNNING: u32 = 4;
    pub const EXISTS_DIFFERENT_MD5: u32 = 5;
    pub const EXISTS_SAME_MD5: u32 = 6;
    pub const EXISTS_NOT_OVERRIDDEN: u32 = 7;
    pub const USER_CANCEL: u32 = 8;
    pub const TIMEOUT: u32 = 9;
    pub const CHECK_FILE_TIMEOUT: u32 = 10;
    pub const IN_PROGRESS: u32 = 11;

    pub const TABLE: &[(u32, &str)] = &[
        (SUCCESS, "success"),
        (FAILED, "failed"),
        (MD5_ERROR, "MD5 mismatch"),
        (TEST_RUNNING, "a test is running"),
        (EXISTS_DIFFERENT_MD5, "a different file of that name exists"),
        (EXISTS_SAME_MD5, "the same file exists"),
        (
            EXISTS_NOT_OVERRIDDEN,
            "the file exists and was not overwritten",
        ),
        (USER_CANCEL, "cancelled"),
        (TIMEOUT, "timed out"),
        (CHECK_FILE_TIMEOUT, "checking the file timed out"),
        (IN_PROGRESS, "in progress"),
    ];

    pub fn describe(code: u32) -> String {
        match TABLE.iter().find(|(c, _)| *c == code) {
            Some((_, text)) => format!("{text} (result {code})"),
            None => format!("result {code}"),
        }
    }
}

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

/// Which side sent a frame: it decides what the length counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Feedback,
}

/// One frame: its command, extension and arguments (header and checksum are added and
/// checked by [`Frame::encode`] and [`split_frame`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: u32,
    /// Always 0 in the documented commands; kept so a decoder sees what came.
    pub extension: u32,
    pub args: Vec<u8>,
}

impl Frame {
    pub fn new(command: u32, args: Vec<u8>) -> Frame {
        Frame {
            command,
            extension: 0,
            args,
        }
    }

    /// The whole frame as sent in direction `dir`.
    pub fn encode(&self, dir: Direction) -> Vec<u8> {
        let total = HEADER_LEN + self.args.len() + CHECKSUM_LEN;
        let length = match dir {
            Direction::Request => total - LENGTH_BASE,
            Direction::Feedback => total,
        };
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&TOKEN.to_le_bytes());
        // Frames are bounded far below 4 GiB by what builds them.
        out.extend_from_slice(&(length as u32).to_le_bytes());
        out.extend_from_slice(&self.command.to_le_bytes());
        out.extend_from_slice(&self.extension.to_le_bytes());
        out.extend_from_slice(&self.args);
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Checks that this frame carries `command`.
    pub fn expect(&self, command: u32) -> Result<(), WireError> {
        if self.command == command {
            Ok(())
        } else {
            Err(WireError::Command {
                expected: command,
                got: self.command,
            })
        }
    }
}

/// The sum of `bytes`, mod 2^16.
pub fn checksum(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)))
}

/// Splits one frame sent in direction `dir` off the front of `buf`: `Ok(None)` until it is
/// complete, then the frame and the bytes it took. A bad token or impossible length means the
/// stream is out of step (drop the connection); a bad checksum names the frame's length so the
/// caller may skip it.
pub fn split_frame(buf: &[u8], dir: Direction) -> Result<Option<(Frame, usize)>, WireError> {
    if let Some(token) = buf.get(..8) {
        let found = u64::from_le_bytes(token.try_into().unwrap_or_default());
        if found != TOKEN {
            return Err(WireError::Token { found });
        }
    }
    let Some(length) = buf.get(8..12) else {
        return Ok(None);
    };
    let length = u64::from(u32::from_le_bytes(length.try_into().unwrap_or_default()));
    let total = match dir {
        Direction::Request => length + LENGTH_BASE as u64,
        Direction::Feedback => length,
    };
    if total < (HEADER_LEN + CHECKSUM_LEN) as u64 || total > MAX_FRAME_LEN as u64 {
        return Err(WireError::FrameLength { length: total });
    }
    let total = total as usize;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let (body, sum) = frame.split_at(total - CHECKSUM_LEN);
    let found = u16::from_le_bytes([sum[0], sum[1]]);
    let expected = checksum(body);
    if found != expected {
        return Err(WireError::Checksum {
            expected,
            found,
            frame_len: total,
        });
    }
    let word = |i: usize| u32::from_le_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    Ok(Some((
        Frame {
            command: word(12),
            extension: word(16),
            args: body[HEADER_LEN..].to_vec(),
        },
        total,
    )))
}

// ---------------------------------------------------------------------------------------------
// Field encoding
// ---------------------------------------------------------------------------------------------

/// Reads little-endian values off a frame's arguments, failing with the message's name.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `frame`'s arguments, after checking its command and that at least `need`
    /// bytes of arguments are there.
    fn new(
        what: &'static str,
        frame: &'a Frame,
        command: u32,
        need: usize,
    ) -> Result<Reader<'a>, WireError> {
        frame.expect(command)?;
        if frame.args.len() < need {
            return Err(WireError::Length {
                what,
                need: need + HEADER_LEN + CHECKSUM_LEN,
                got: frame.args.len() + HEADER_LEN + CHECKSUM_LEN,
            });
        }
        Ok(Reader {
            what,
            bytes: &frame.args,
            at: 0,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.saturating_add(n);
        let out = self.bytes.get(self.at..end).ok_or(WireError::Length {
            what: self.what,
            need: end + HEADER_LEN + CHECKSUM_LEN,
            got: self.bytes.len() + HEADER_LEN + CHECKSUM_LEN,
        })?;
        self.at = end;
        Ok(out)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
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

    fn i16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, WireError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, WireError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    fn wide(&mut self, chars: usize) -> Result<String, WireError> {
        Ok(decode_wide(self.take(2 * chars)?))
    }

    fn ascii(&mut self, len: usize) -> Result<String, WireError> {
        Ok(decode_ascii(self.take(len)?))
    }

    fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.take(n).map(|_| ())
    }
}

/// Builds a frame's arguments.
#[derive(Default)]
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn bytes(mut self, b: &[u8]) -> Writer {
        self.out.extend_from_slice(b);
        self
    }
    fn zeros(mut self, n: usize) -> Writer {
        self.out.resize(self.out.len() + n, 0);
        self
    }
    fn wide(self, s: &str, chars: usize) -> Writer {
        let b = encode_wide(s, chars);
        self.bytes(&b)
    }
    fn ascii(self, s: &str, len: usize) -> Writer {
        let b = encode_ascii(s, len);
        self.bytes(&b)
    }
    fn frame(self, command: u32) -> Frame {
        Frame::new(command, self.out)
    }
}

/// `s` as a UTF-16LE array of `chars` code units, cut so that a terminating NUL always fits
/// and no surrogate pair is split, then zero-padded.
pub fn encode_wide(s: &str, chars: usize) -> Vec<u8> {
    let mut units: Vec<u16> = Vec::with_capacity(chars);
    for c in s.chars() {
        let mut buf = [0u16; 2];
        let encoded = c.encode_utf16(&mut buf);
        if units.len() + encoded.len() >= chars {
            break;
        }
        units.extend_from_slice(encoded);
    }
    units.resize(chars, 0);
    units.iter().flat_map(|u| u.to_le_bytes()).collect()
}

/// The text of a UTF-16LE array up to its first NUL; unpaired surrogates become U+FFFD.
pub fn decode_wide(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .take_while(|&u| u != 0);
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// `s` as `len` zero-padded bytes. Callers check [`fits_ascii`] first where it matters (a
/// user name); here non-ASCII characters become `?` and long text is cut.
pub fn encode_ascii(s: &str, len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = s
        .chars()
        .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
        .take(len)
        .collect();
    out.resize(len, 0);
    out
}

/// Whether `s` is ASCII and at most `len` bytes, so [`encode_ascii`] keeps it as it is.
pub fn fits_ascii(s: &str, len: usize) -> bool {
    s.is_ascii() && s.len() <= len && !s.contains('\0')
}

/// The text of a zero-padded byte field up to its first NUL.
pub fn decode_ascii(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `name` fitted to a wide field of `chars` units (one kept for the NUL): unchanged when it
/// fits, else its head and a hash of the whole, so two long names that share a head stay
/// different.
pub fn fit(name: &str, chars: usize) -> String {
    let room = chars.saturating_sub(1);
    if name.encode_utf16().count() <= room {
        return name.to_string();
    }
    let tag = format!("~{:08x}", fnv1a(name.as_bytes()));
    let mut head = String::new();
    let mut used = 0;
    for c in name.chars() {
        if used + c.len_utf16() + tag.len() > room {
            break;
        }
        used += c.len_utf16();
        head.push(c);
    }
    head + &tag
}

/// The test name as a cycler stores and reports it: [`fit`] to the START field.
pub fn test_name(test: &str) -> String {
    fit(test, TEST_NAME_CHARS)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------

/// LOGIN: a pre-registered MITS user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl Login {
    const LEN: usize = 2 * CREDENTIAL_LEN;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .ascii(&self.username, CREDENTIAL_LEN)
            .ascii(&self.password, CREDENTIAL_LEN)
            .frame(cmd::LOGIN)
    }

    pub fn from_frame(frame: &Frame) -> Result<Login, WireError> {
        let mut r = Reader::new("LOGIN", frame, cmd::LOGIN, Self::LEN)?;
        Ok(Login {
            username: r.ascii(CREDENTIAL_LEN)?,
            password: r.ascii(CREDENTIAL_LEN)?,
        })
    }
}

/// LOGIN feedback: the result and what the server says about itself. The contact and note
/// fields between the serial number and the version are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFeedback {
    /// See [`login_result`].
    pub result: u32,
    /// The cycler's serial number.
    pub serial: String,
    /// CTI version of the server.
    pub version: u32,
    /// Whether this user may control channels (not only read them).
    pub allow_control: u32,
    /// How many channels the cycler has.
    pub channels: u32,
}

impl LoginFeedback {
    /// Argument offsets (frame offset - 20).
    const SERIAL_AT: usize = 8;
    const VERSION_AT: usize = 8636;
    const ARGS: usize = LOGIN_FEEDBACK_LEN - HEADER_LEN - CHECKSUM_LEN;

    pub fn to_frame(&self) -> Frame {
        let mut args = vec![0u8; Self::ARGS];
        args[..4].copy_from_slice(&self.result.to_le_bytes());
        args[Self::SERIAL_AT..Self::SERIAL_AT + 16]
            .copy_from_slice(&encode_ascii(&self.serial, 16));
        let tail = [self.version, self.allow_control, self.channels];
        for (k, v) in tail.into_iter().enumerate() {
            let at = Self::VERSION_AT + 4 * k;
            args[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        Frame::new(feedback_code(cmd::LOGIN), args)
    }

    /// Reads the fixed part; a picture that may follow it is ignored.
    pub fn from_frame(frame: &Frame) -> Result<LoginFeedback, WireError> {
        let mut r = Reader::new(
            "LOGIN feedback",
            frame,
            feedback_code(cmd::LOGIN),
            Self::ARGS,
        )?;
        let result = r.u32()?;
        r.skip(Self::SERIAL_AT - 4)?;
        let serial = r.ascii(16)?;
        r.skip(Self::VERSION_AT - Self::SERIAL_AT - 16)?;
        Ok(LoginFeedback {
            result,
            serial,
            version: r.u32()?,
            allow_control: r.u32()?,
            channels: r.u32()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Channel info
// ---------------------------------------------------------------------------------------------

/// GET_CHANNELS_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelsInfoRequest {
    /// The channel (from 0), or -1 for all. Real servers have been seen to answer every
    /// channel even when one is asked for, so replies are matched by their own index.
    pub channel: i16,
    /// Which channels an all-channels request lists ([`selection`]).
    pub selection: i16,
    /// What each channel block adds ([`need`]).
    pub need: u32,
}

impl ChannelsInfoRequest {
    const LEN: usize = 40;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&self.selection.to_le_bytes())
            .bytes(&self.need.to_le_bytes())
            .zeros(32)
            .frame(cmd::GET_CHANNELS_INFO)
    }

    pub fn from_frame(frame: &Frame) -> Result<ChannelsInfoRequest, WireError> {
        let mut r = Reader::new(
            "GET_CHANNELS_INFO",
            frame,
            cmd::GET_CHANNELS_INFO,
            Self::LEN,
        )?;
        Ok(ChannelsInfoRequest {
            channel: r.i16()?,
            selection: r.i16()?,
            need: r.u32()?,
        })
    }
}

/// One aux reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuxValue {
    pub value: f32,
    /// Its rate of change, per second.
    pub dxdt: f32,
}

/// One channel's block in the GET_CHANNELS_INFO feedback.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelInfo {
    /// The channel's own index, from 0: what a reply is matched by.
    pub channel: u32,
    /// See [`status`].
    pub status: i16,
    /// MITS lost contact with the channel's unit; the other fields are the last known.
    pub comm_failure: bool,
    /// The assigned schedule's name.
    pub schedule: String,
    /// The test on the channel (or the last one); empty when none ran since MITS started.
    pub test_name: String,
    /// Why the test left its last step or ended, as MITS words it.
    pub exit_condition: String,
    /// Step and cycle as MITS formats them for display (see [`ChannelInfo::step_and_cycle`]).
    pub step_and_cycle_text: String,
    pub barcode: String,
    /// CAN and SMBus configuration names.
    pub can_config: String,
    pub smb_config: String,
    /// The master of a parallel group.
    pub master_channel: u16,
    /// Since the test started and since the step started, s.
    pub test_time_s: f64,
    pub step_time_s: f64,
    /// V, A (positive = charge), W.
    pub voltage_v: f32,
    pub current_a: f32,
    pub power_w: f32,
    /// The test's counters, Ah and Wh.
    pub charge_capacity_ah: f32,
    pub discharge_capacity_ah: f32,
    pub charge_energy_wh: f32,
    pub discharge_energy_wh: f32,
    /// Ohm, V/s, ohm, ohm, degrees.
    pub internal_resistance_ohm: f32,
    pub dvdt_v_per_s: f32,
    pub acr_ohm: f32,
    pub aci_ohm: f32,
    pub aci_phase_deg: f32,
    /// Aux readings by kind ([`aux`]); empty unless asked for with [`need::AUX`].
    pub aux: [Vec<AuxValue>; aux::KINDS],
}

impl ChannelInfo {
    fn write(&self, w: Writer) -> Writer {
        let mut w = w
            .bytes(&self.channel.to_le_bytes())
            .bytes(&self.status.to_le_bytes())
            .bytes(&[u8::from(self.comm_failure)])
            .wide(&self.schedule, SCHEDULE_CHARS)
            .wide(&self.test_name, TEST_NAME_CHARS)
            .ascii(&self.exit_condition, EXIT_CONDITION_LEN)
            .ascii(&self.step_and_cycle_text, STEP_AND_CYCLE_LEN)
            .wide(&self.barcode, TEST_NAME_CHARS)
            .wide(&self.can_config, SCHEDULE_CHARS)
            .wide(&self.smb_config, SCHEDULE_CHARS)
            .bytes(&self.master_channel.to_le_bytes())
            .bytes(&self.test_time_s.to_le_bytes())
            .bytes(&self.step_time_s.to_le_bytes());
        for v in [
            self.voltage_v,
            self.current_a,
            self.power_w,
            self.charge_capacity_ah,
            self.discharge_capacity_ah,
            self.charge_energy_wh,
            self.discharge_energy_wh,
            self.internal_resistance_ohm,
            self.dvdt_v_per_s,
            self.acr_ohm,
            self.aci_ohm,
            self.aci_phase_deg,
        ] {
            w = w.bytes(&v.to_le_bytes());
        }
        for values in &self.aux {
            // A count past u16 cannot be sent; no channel has that many inputs.
            w = w.bytes(&(values.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        }
        // BMS and SMB counts: their values' layout is not public, so none are sent.
        w = w.zeros(4);
        for values in &self.aux {
            for v in values.iter().take(usize::from(u16::MAX)) {
                w = w.bytes(&v.value.to_le_bytes()).bytes(&v.dxdt.to_le_bytes());
            }
        }
        w
    }

    fn read(r: &mut Reader<'_>) -> Result<ChannelInfo, WireError> {
        let mut c = ChannelInfo {
            channel: r.u32()?,
            status: r.i16()?,
            comm_failure: r.u8()? != 0,
            schedule: r.wide(SCHEDULE_CHARS)?,
            test_name: r.wide(TEST_NAME_CHARS)?,
            exit_condition: r.ascii(EXIT_CONDITION_LEN)?,
            step_and_cycle_text: r.ascii(STEP_AND_CYCLE_LEN)?,
            barcode: r.wide(TEST_NAME_CHARS)?,
            can_config: r.wide(SCHEDULE_CHARS)?,
            smb_config: r.wide(SCHEDULE_CHARS)?,
            master_channel: r.u16()?,
            test_time_s: r.f64()?,
            step_time_s: r.f64()?,
            ..ChannelInfo::default()
        };
        for v in [
            &mut c.voltage_v,
            &mut c.current_a,
            &mut c.power_w,
            &mut c.charge_capacity_ah,
            &mut c.discharge_capacity_ah,
            &mut c.charge_energy_wh,
            &mut c.discharge_energy_wh,
            &mut c.internal_resistance_ohm,
            &mut c.dvdt_v_per_s,
            &mut c.acr_ohm,
            &mut c.aci_ohm,
            &mut c.aci_phase_deg,
        ] {
            *v = r.f32()?;
        }
        let mut counts = [0usize; aux::KINDS];
        for n in &mut counts {
            *n = usize::from(r.u16()?);
        }
        let (bms, smb) = (r.u16()?, r.u16()?);
        if bms != 0 || smb != 0 {
            return Err(field(
                "bms_count/smb_count",
                format!(
                    "channel {} reports {bms} BMS and {smb} SMB values, whose layout is not \
                     public (they are only sent when asked for)",
                    c.channel
                ),
            ));
        }
        for (kind, &n) in counts.iter().enumerate() {
            // Checked against what is there before allocating for a count off the wire.
            if n * AUX_VALUE_LEN > r.remaining() {
                return Err(WireError::Length {
                    what: "channel info aux values",
                    need: r.at + n * AUX_VALUE_LEN + HEADER_LEN + CHECKSUM_LEN,
                    got: r.bytes.len() + HEADER_LEN + CHECKSUM_LEN,
                });
            }
            c.aux[kind] = (0..n)
                .map(|_| {
                    Ok(AuxValue {
                        value: r.f32()?,
                        dxdt: r.f32()?,
                    })
                })
                .collect::<Result<_, WireError>>()?;
        }
        Ok(c)
    }

    /// Step and cycle read from [`ChannelInfo::step_and_cycle_text`]: its first two unsigned
    /// integers (the field's format is not public; MITS shows both numbers in it, step
    /// first). 0 for what is missing.
    pub fn step_and_cycle(&self) -> (u32, u32) {
        let mut numbers = self
            .step_and_cycle_text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(u32::MAX));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    }

    /// The first temperature aux reading, °C.
    pub fn temperature_c(&self) -> Option<f64> {
        self.aux[aux::TEMPERATURE]
            .first()
            .map(|v| f64::from(v.value))
            .filter(|t| t.is_finite())
    }
}

/// The GET_CHANNELS_INFO feedback: one frame listing channels in the server's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelsInfo {
    pub channels: Vec<ChannelInfo>,
}

impl ChannelsInfo {
    pub fn to_frame(&self) -> Frame {
        let mut w = Writer::default().bytes(&(self.channels.len() as u32).to_le_bytes());
        for c in &self.channels {
            w = c.write(w);
        }
        w.frame(feedback_code(cmd::GET_CHANNELS_INFO))
    }

    pub fn from_frame(frame: &Frame) -> Result<ChannelsInfo, WireError> {
        let what = "GET_CHANNELS_INFO feedback";
        let mut r = Reader::new(what, frame, feedback_code(cmd::GET_CHANNELS_INFO), 4)?;
        let count = r.u32()? as usize;
        if count.saturating_mul(CHANNEL_INFO_LEN) > r.remaining() {
            return Err(field(
                "number_of_channels",
                format!("{count} channels do not fit in {} bytes", frame.args.len()),
            ));
        }
        let channels = (0..count)
            .map(|_| ChannelInfo::read(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        if r.remaining() != 0 {
            return Err(field(
                "number_of_channels",
                format!(
                    "{} bytes follow the {count} channels it announces",
                    r.remaining()
                ),
            ));
        }
        Ok(ChannelsInfo { channels })
    }
}

// ---------------------------------------------------------------------------------------------
// Schedules and tests
// ---------------------------------------------------------------------------------------------

/// ASSIGN_SCHEDULE: gives a channel the schedule its next START runs.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignSchedule {
    /// From 0.
    pub channel: i32,
    /// Assign to every channel.
    pub all: bool,
    /// The schedule's file name as MITS knows it.
    pub schedule: String,
    /// The cell's capacity, for C-rate steps (cyclerd's schedules hold absolute currents).
    pub test_capacity_ah: f32,
    pub barcode: String,
    /// MV_UD1..16 at the start.
    pub user_variables: [f32; 16],
}

impl AssignSchedule {
    const LEN: usize = 4 + 1 + 2 * SCHEDULE_CHARS + 4 + 2 * TEST_NAME_CHARS + 64 + 32;

    pub fn to_frame(&self) -> Frame {
        let mut w = Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&[u8::from(self.all)])
            .wide(&self.schedule, SCHEDULE_CHARS)
            .bytes(&self.test_capacity_ah.to_le_bytes())
            .wide(&self.barcode, TEST_NAME_CHARS);
        for v in self.user_variables {
            w = w.bytes(&v.to_le_bytes());
        }
        w.zeros(32).frame(cmd::ASSIGN_SCHEDULE)
    }

    pub fn from_frame(frame: &Frame) -> Result<AssignSchedule, WireError> {
        let mut r = Reader::new("ASSIGN_SCHEDULE", frame, cmd::ASSIGN_SCHEDULE, Self::LEN)?;
        let channel = r.i32()?;
        let all = r.u8()? != 0;
        let schedule = r.wide(SCHEDULE_CHARS)?;
        let test_capacity_ah = r.f32()?;
        let barcode = r.wide(TEST_NAME_CHARS)?;
        let mut user_variables = [0.0; 16];
        for v in &mut user_variables {
            *v = r.f32()?;
        }
        Ok(AssignSchedule {
            channel,
            all,
            schedule,
            test_capacity_ah,
            barcode,
            user_variables,
        })
    }
}

/// START: runs the assigned schedule as a test named `test_name` on `channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartTest {
    pub test_name: String,
    /// From 0.
    pub channels: Vec<u16>,
}

impl StartTest {
    const MIN_LEN: usize = 2 * TEST_NAME_CHARS + 4;

    pub fn to_frame(&self) -> Frame {
        let mut w = Writer::default()
            .wide(&self.test_name, TEST_NAME_CHARS)
            .bytes(&(self.channels.len() as u32).to_le_bytes());
        for c in &self.channels {
            w = w.bytes(&c.to_le_bytes());
        }
        w.frame(cmd::START)
    }

    pub fn from_frame(frame: &Frame) -> Result<StartTest, WireError> {
        let mut r = Reader::new("START", frame, cmd::START, Self::MIN_LEN)?;
        let test_name = r.wide(TEST_NAME_CHARS)?;
        let count = r.u32()? as usize;
        if count.saturating_mul(2) != r.remaining() {
            return Err(field(
                "num_channels",
                format!("{count} channels, {} bytes of them", r.remaining()),
            ));
        }
        let channels = (0..count).map(|_| r.u16()).collect::<Result<_, _>>()?;
        Ok(StartTest {
            test_name,
            channels,
        })
    }
}

/// STOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopTest {
    /// From 0.
    pub channel: u32,
    /// Stop every channel.
    pub all: bool,
}

impl StopTest {
    const LEN: usize = 4 + 1 + RESERVED_LEN;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&[u8::from(self.all)])
            .zeros(RESERVED_LEN)
            .frame(cmd::STOP)
    }

    pub fn from_frame(frame: &Frame) -> Result<StopTest, WireError> {
        let mut r = Reader::new("STOP", frame, cmd::STOP, Self::LEN)?;
        Ok(StopTest {
            channel: r.u32()?,
            all: r.u8()? != 0,
        })
    }
}

/// The feedback of ASSIGN_SCHEDULE, START, STOP and the other channel commands: 128 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonFeedback {
    /// The request's command (the frame carries its [`feedback_code`]).
    pub command: u32,
    /// The channel the result is for.
    pub channel: i32,
    /// See [`result`].
    pub result: u8,
}

impl CommonFeedback {
    const LEN: usize = COMMON_FEEDBACK_LEN - HEADER_LEN - CHECKSUM_LEN;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&[self.result])
            .zeros(RESERVED_LEN)
            .frame(feedback_code(self.command))
    }

    /// Decodes the feedback to `command`.
    pub fn from_frame(frame: &Frame, command: u32) -> Result<CommonFeedback, WireError> {
        let mut r = Reader::new("command feedback", frame, feedback_code(command), Self::LEN)?;
        Ok(CommonFeedback {
            command,
            channel: r.i32()?,
            result: r.u8()?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// File upload
// ---------------------------------------------------------------------------------------------

/// UPLOAD (file port): one package of a file; a file of n packages is sent as n frames with
/// indices 0..n, each with the whole file's length and MD5.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// Where MITS stores the file; a bare name lands in its schedule folder.
    pub path: String,
    /// The whole file's length.
    pub file_len: u64,
    pub package_count: u32,
    /// From 0.
    pub package_index: u32,
    /// Echoed in the feedback; its meaning is not public (cyclerd sends 0).
    pub time: f64,
    /// The whole file's MD5, as 32 lower-case hex characters.
    pub md5: String,
    /// This package's bytes.
    pub data: Vec<u8>,
}

impl Upload {
    const FIXED: usize = 2 * PATH_CHARS + 8 + 4 + 4 + 8 + MD5_HEX_LEN;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .wide(&self.path, PATH_CHARS)
            .bytes(&self.file_len.to_le_bytes())
            .bytes(&self.package_count.to_le_bytes())
            .bytes(&self.package_index.to_le_bytes())
            .bytes(&self.time.to_le_bytes())
            .ascii(&self.md5, MD5_HEX_LEN)
            .bytes(&self.data)
            .frame(cmd::UPLOAD)
    }

    pub fn from_frame(frame: &Frame) -> Result<Upload, WireError> {
        let mut r = Reader::new("UPLOAD", frame, cmd::UPLOAD, Self::FIXED)?;
        let path = r.wide(PATH_CHARS)?;
        let file_len = r.u64()?;
        let package_count = r.u32()?;
        let package_index = r.u32()?;
        let time = r.f64()?;
        let md5 = r.ascii(MD5_HEX_LEN)?;
        let data = r.take(r.remaining())?.to_vec();
        Ok(Upload {
            path,
            file_len,
            package_count,
            package_index,
            time,
            md5,
            data,
        })
    }

    /// `data` cut into UPLOAD frames of at most `package_len` bytes each (one empty package
    /// for an empty file).
    pub fn packages(path: &str, data: &[u8], package_len: usize) -> Vec<Upload> {
        let md5 = md5_hex(data);
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(package_len.max(1)).collect()
        };
        let count = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| Upload {
                path: path.to_string(),
                file_len: data.len() as u64,
                package_count: count,
                package_index: i as u32,
                time: 0.0,
                md5: md5.clone(),
                data: chunk.to_vec(),
            })
            .collect()
    }
}

/// The UPLOAD feedback, one per package.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UploadFeedback {
    /// See [`upload_result`].
    pub result: u32,
    pub time: f64,
    pub package_count: u32,
    pub package_index: u32,
}

impl UploadFeedback {
    const LEN: usize = 20;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.result.to_le_bytes())
            .bytes(&self.time.to_le_bytes())
            .bytes(&self.package_count.to_le_bytes())
            .bytes(&self.package_index.to_le_bytes())
            .frame(feedback_code(cmd::UPLOAD))
    }

    pub fn from_frame(frame: &Frame) -> Result<UploadFeedback, WireError> {
        let mut r = Reader::new(
            "UPLOAD feedback",
            frame,
            feedback_code(cmd::UPLOAD),
            Self::LEN,
        )?;
        Ok(UploadFeedback {
            result: r.u32()?,
            time: r.f64()?,
            package_count: r.u32()?,
            package_index: r.u32()?,
        })
    }
}

/// MD5 (RFC 1321) of `data`, the integrity check of an upload.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(2^32 * |sin(i + 1)|), as the RFC tabulates it.
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32);
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 16];
    for (i, word) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// [`md5`] as lower-case hex.
pub fn md5_hex(data: &[u8]) -> String {
    md5(data).iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// cyclerd extension: logged records
// ---------------------------------------------------------------------------------------------

/// **cyclerd extension** ([`cmd::GET_RECORDS`], not part of CTI): up to `max` records of the
/// current (or last) test on `channel` from record index `from` (records count from 1). With
/// `max` 0 it only reads the newest index. See the `arbin` module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordsRequest {
    pub channel: i32,
    pub from: u64,
    pub max: u32,
}

impl RecordsRequest {
    const LEN: usize = 16;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&self.from.to_le_bytes())
            .bytes(&self.max.to_le_bytes())
            .frame(cmd::GET_RECORDS)
    }

    pub fn from_frame(frame: &Frame) -> Result<RecordsRequest, WireError> {
        let mut r = Reader::new("GET_RECORDS", frame, cmd::GET_RECORDS, Self::LEN)?;
        Ok(RecordsRequest {
            channel: r.i32()?,
            from: r.u64()?,
            max: r.u32()?,
        })
    }
}

/// One logged record in the extension's layout (52 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataRecord {
    /// From 1, without gaps, per test.
    pub index: u64,
    pub test_time_s: f64,
    pub step_time_s: f64,
    pub voltage_v: f32,
    /// A, positive = charge.
    pub current_a: f32,
    /// Charge and energy moved in the step so far (charge plus discharge), Ah and Wh.
    pub step_capacity_ah: f32,
    pub step_energy_wh: f32,
    /// °C, NaN when no temperature input is mapped to the channel.
    pub temperature_c: f32,
    /// The schedule's step (from 1) and the cycle (from 1).
    pub step: u32,
    pub cycle: u32,
}

impl DataRecord {
    pub const LEN: usize = 52;

    fn write(&self, w: Writer) -> Writer {
        w.bytes(&self.index.to_le_bytes())
            .bytes(&self.test_time_s.to_le_bytes())
            .bytes(&self.step_time_s.to_le_bytes())
            .bytes(&self.voltage_v.to_le_bytes())
            .bytes(&self.current_a.to_le_bytes())
            .bytes(&self.step_capacity_ah.to_le_bytes())
            .bytes(&self.step_energy_wh.to_le_bytes())
            .bytes(&self.temperature_c.to_le_bytes())
            .bytes(&self.step.to_le_bytes())
            .bytes(&self.cycle.to_le_bytes())
    }

    fn read(r: &mut Reader<'_>) -> Result<DataRecord, WireError> {
        Ok(DataRecord {
            index: r.u64()?,
            test_time_s: r.f64()?,
            step_time_s: r.f64()?,
            voltage_v: r.f32()?,
            current_a: r.f32()?,
            step_capacity_ah: r.f32()?,
            step_energy_wh: r.f32()?,
            temperature_c: r.f32()?,
            step: r.u32()?,
            cycle: r.u32()?,
        })
    }
}

/// The GET_RECORDS feedback (cyclerd extension).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsFeedback {
    pub channel: i32,
    /// See [`result::RECORDS`].
    pub result: u8,
    /// The newest record index of the test (0: none yet).
    pub last: u64,
    pub records: Vec<DataRecord>,
}

impl RecordsFeedback {
    const FIXED: usize = 4 + 1 + 8 + 4;

    pub fn to_frame(&self) -> Frame {
        let mut w = Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&[self.result])
            .bytes(&self.last.to_le_bytes())
            .bytes(&(self.records.len() as u32).to_le_bytes());
        for rec in &self.records {
            w = rec.write(w);
        }
        w.frame(feedback_code(cmd::GET_RECORDS))
    }

    pub fn from_frame(frame: &Frame) -> Result<RecordsFeedback, WireError> {
        let mut r = Reader::new(
            "GET_RECORDS feedback",
            frame,
            feedback_code(cmd::GET_RECORDS),
            Self::FIXED,
        )?;
        let channel = r.i32()?;
        let result = r.u8()?;
        let last = r.u64()?;
        let count = r.u32()? as usize;
        if count.saturating_mul(DataRecord::LEN) != r.remaining() {
            return Err(field(
                "count",
                format!("{count} records, {} bytes of them", r.remaining()),
            ));
        }
        let records = (0..count)
            .map(|_| DataRecord::read(&mut r))
            .collect::<Result<_, _>>()?;
        Ok(RecordsFeedback {
            channel,
            result,
            last,
            records,
        })
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command 0x{:08X} with {} bytes of arguments",
            self.command,
            self.args.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: &Frame, dir: Direction) -> Frame {
        let bytes = frame.encode(dir);
        let (back, used) = split_frame(&bytes, dir).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        back
    }

    #[test]
    fn the_stop_request_matches_the_captured_frame() {
        let bytes = StopTest {
            channel: 13,
            all: false,
        }
        .to_frame()
        .encode(Direction::Request);
        assert_eq!(bytes.len(), 128);
        assert_eq!(
            &bytes[..8],
            &[0xDD, 0xDD, 0xDD, 0xDD, 0xDD, 0xDD, 0xDD, 0x11]
        );
        assert_eq!(&bytes[8..12], &0x74u32.to_le_bytes());
        assert_eq!(&bytes[12..16], &[0x01, 0x00, 0x31, 0xBB]);
        assert_eq!(&bytes[16..20], &[0; 4]);
        assert_eq!(&bytes[20..24], &13u32.to_le_bytes());
        // 7 x 0xDD + 0x11 + 0x74 + 0x01 + 0x31 + 0xBB + 13.
        assert_eq!(&bytes[126..], &0x078Au16.to_le_bytes());
    }

    #[test]
    fn request_lengths_match_the_open_clients_templates() {
        let login = Login {
            username: "u".into(),
            password: "p".into(),
        };
        let info = ChannelsInfoRequest {
            channel: 5,
            selection: selection::ALL,
            need: 0,
        };
        let assign = AssignSchedule {
            channel: 0,
            all: false,
            schedule: "a.sdu".into(),
            test_capacity_ah: 1.0,
            barcode: String::new(),
            user_variables: [0.0; 16],
        };
        let start = StartTest {
            test_name: "t".into(),
            channels: vec![3],
        };
        for (frame, length) in [
            (login.to_frame(), 74),
            (info.to_frame(), 50),
            (assign.to_frame(), 659),
            (start.to_frame(), 160),
        ] {
            let bytes = frame.encode(Direction::Request);
            assert_eq!(bytes.len(), length + 12, "{frame}");
            assert_eq!(&bytes[8..12], &(length as u32).to_le_bytes(), "{frame}");
        }
    }

    #[test]
    fn feedback_lengths_count_the_whole_frame() {
        let common = CommonFeedback {
            command: cmd::STOP,
            channel: 2,
            result: 0,
        }
        .to_frame()
        .encode(Direction::Feedback);
        assert_eq!(common.len(), COMMON_FEEDBACK_LEN);
        assert_eq!(&common[8..12], &128u32.to_le_bytes());
        assert_eq!(&common[12..16], &0xBB13_0001u32.to_le_bytes());
        let login = LoginFeedback {
            result: 1,
            serial: "SN1".into(),
            version: 1,
            allow_control: 1,
            channels: 16,
        }
        .to_frame()
        .encode(Direction::Feedback);
        assert_eq!(login.len(), LOGIN_FEEDBACK_LEN);
        // The channel count sits at byte 8664, as the open client reads it.
        assert_eq!(&login[8664..8668], &16u32.to_le_bytes());
        let one = ChannelsInfo {
            channels: vec![ChannelInfo::default()],
        }
        .to_frame()
        .encode(Direction::Feedback);
        assert_eq!(one.len(), 1779);
        // Sixteen channels, as a MITS 10 server answered a one-channel request.
        let sixteen = ChannelsInfo {
            channels: vec![ChannelInfo::default(); 16],
        }
        .to_frame()
        .encode(Direction::Feedback);
        assert_eq!(sixteen.len(), 28074);
    }

    #[test]
    fn feedback_codes_swap_the_nibbles_of_the_second_byte() {
        assert_eq!(feedback_code(0xEEAB_0001), 0xEEBA_0001);
        assert_eq!(feedback_code(0xBB31_0001), 0xBB13_0001);
        assert_eq!(feedback_code(cmd::ASSIGN_SCHEDULE), 0xBB12_0001);
        assert_eq!(feedback_code(cmd::START), 0xBB23_0004);
        assert_eq!(feedback_code(cmd::UPLOAD), 0xCC31_0003);
        assert_eq!(
            feedback_code(feedback_code(cmd::GET_RECORDS)),
            cmd::GET_RECORDS
        );
    }

    #[test]
    fn channel_blocks_sit_at_the_open_clients_offsets() {
        let info = ChannelInfo {
            channel: 6,
            status: status::CHARGE,
            test_name: "cell".into(),
            test_time_s: 12.5,
            voltage_v: 3.7,
            aux: std::array::from_fn(|k| {
                if k == aux::TEMPERATURE {
                    vec![AuxValue {
                        value: 25.0,
                        dxdt: 0.0,
                    }]
                } else {
                    Vec::new()
                }
            }),
            ..ChannelInfo::default()
        };
        let bytes = ChannelsInfo {
            channels: vec![info.clone()],
        }
        .to_frame()
        .encode(Direction::Feedback);
        assert_eq!(&bytes[20..24], &1u32.to_le_bytes());
        assert_eq!(&bytes[24..28], &6u32.to_le_bytes());
        assert_eq!(&bytes[28..30], &2i16.to_le_bytes());
        assert_eq!(&bytes[431..439], b"c\0e\0l\0l\0");
        assert_eq!(&bytes[1685..1693], &12.5f64.to_le_bytes());
        assert_eq!(&bytes[1701..1705], &3.7f32.to_le_bytes());
        assert_eq!(&bytes[1751..1753], &1u16.to_le_bytes());
        assert_eq!(&bytes[1777..1781], &25.0f32.to_le_bytes());
        assert_eq!(bytes.len(), 1779 + 8);
        let back = ChannelsInfo::from_frame(&roundtrip(
            &ChannelsInfo {
                channels: vec![info.clone()],
            }
            .to_frame(),
            Direction::Feedback,
        ))
        .unwrap();
        assert_eq!(back.channels, vec![info.clone()]);
        assert_eq!(back.channels[0].temperature_c(), Some(25.0));
    }

    #[test]
    fn every_message_survives_its_encoder_and_decoder() {
        let login = Login {
            username: "admin".into(),
            password: "secret".into(),
        };
        assert_eq!(
            Login::from_frame(&roundtrip(&login.to_frame(), Direction::Request)).unwrap(),
            login
        );
        let fb = LoginFeedback {
            result: login_result::SUCCESS,
            serial: "ARBIN-42".into(),
            version: 3,
            allow_control: 1,
            channels: 16,
        };
        assert_eq!(
            LoginFeedback::from_frame(&roundtrip(&fb.to_frame(), Direction::Feedback)).unwrap(),
            fb
        );
        let info = ChannelsInfoRequest {
            channel: -1,
            selection: selection::ALL,
            need: need::AUX,
        };
        assert_eq!(
            ChannelsInfoRequest::from_frame(&roundtrip(&info.to_frame(), Direction::Request))
                .unwrap(),
            info
        );
        let assign = AssignSchedule {
            channel: 7,
            all: false,
            schedule: "cell-1_cccv.sdu".into(),
            test_capacity_ah: 2.5,
            barcode: "B1".into(),
            user_variables: std::array::from_fn(|i| i as f32),
        };
        assert_eq!(
            AssignSchedule::from_frame(&roundtrip(&assign.to_frame(), Direction::Request)).unwrap(),
            assign
        );
        let start = StartTest {
            test_name: "ünïcode 电池".into(),
            channels: vec![1, 15],
        };
        assert_eq!(
            StartTest::from_frame(&roundtrip(&start.to_frame(), Direction::Request)).unwrap(),
            start
        );
        let common = CommonFeedback {
            command: cmd::START,
            channel: 4,
            result: result::START_NO_SCHEDULE,
        };
        let back = roundtrip(&common.to_frame(), Direction::Feedback);
        assert_eq!(
            CommonFeedback::from_frame(&back, cmd::START).unwrap(),
            common
        );
        assert!(CommonFeedback::from_frame(&back, cmd::STOP).is_err());
        for upload in Upload::packages("x.sdu", b"0123456789", 4) {
            assert_eq!(
                Upload::from_frame(&roundtrip(&upload.to_frame(), Direction::Request)).unwrap(),
                upload
            );
        }
        let ufb = UploadFeedback {
            result: upload_result::SUCCESS,
            time: 0.0,
            package_count: 3,
            package_index: 2,
        };
        assert_eq!(
            UploadFeedback::from_frame(&roundtrip(&ufb.to_frame(), Direction::Feedback)).unwrap(),
            ufb
        );
        let req = RecordsRequest {
            channel: 3,
            from: 17,
            max: 100,
        };
        assert_eq!(
            RecordsRequest::from_frame(&roundtrip(&req.to_frame(), Direction::Request)).unwrap(),
            req
        );
        let rec = DataRecord {
            index: 17,
            test_time_s: 170.0,
            step_time_s: 10.0,
            voltage_v: 3.9,
            current_a: -1.25,
            step_capacity_ah: 0.1,
            step_energy_wh: 0.4,
            temperature_c: 25.5,
            step: 3,
            cycle: 2,
        };
        let rfb = RecordsFeedback {
            channel: 3,
            result: result::OK,
            last: 40,
            records: vec![rec; 3],
        };
        assert_eq!(
            RecordsFeedback::from_frame(&roundtrip(&rfb.to_frame(), Direction::Feedback)).unwrap(),
            rfb
        );
    }

    #[test]
    fn uploads_are_cut_into_packages_that_carry_the_whole_files_md5() {
        let data: Vec<u8> = (0..10u8).collect();
        let packages = Upload::packages("dir\\a.sdu", &data, 4);
        assert_eq!(packages.len(), 3);
        assert!(
            packages
                .iter()
                .all(|p| p.package_count == 3 && p.file_len == 10)
        );
        assert_eq!(
            packages.iter().map(|p| p.package_index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let joined: Vec<u8> = packages.iter().flat_map(|p| p.data.clone()).collect();
        assert_eq!(joined, data);
        assert_eq!(packages[0].md5, md5_hex(&data));
        assert_eq!(Upload::packages("e", b"", 4).len(), 1);
    }

    #[test]
    fn md5_matches_the_rfc_test_suite() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        assert_eq!(
            md5_hex(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn strings_are_fixed_width_and_always_terminated() {
        let wide = encode_wide("abc", 3);
        assert_eq!(wide, [b'a', 0, b'b', 0, 0, 0]);
        assert_eq!(decode_wide(&wide), "ab");
        // A surrogate pair is never split.
        assert_eq!(decode_wide(&encode_wide("a😀", 4)), "a😀");
        assert_eq!(decode_wide(&encode_wide("a😀", 3)), "a");
        assert_eq!(decode_wide(&[0x3D, 0xD8, 0x41, 0x00]), "\u{FFFD}A");
        assert_eq!(encode_ascii("admin", 8), b"admin\0\0\0");
        assert_eq!(decode_ascii(b"admin\0xx"), "admin");
        assert!(fits_ascii(&"a".repeat(32), 32));
        assert!(!fits_ascii(&"a".repeat(33), 32));
        assert!(!fits_ascii("pässword", 32));
    }

    #[test]
    fn long_test_names_are_fitted_and_stay_distinct() {
        assert_eq!(test_name("cell-1"), "cell-1");
        let a = "x".repeat(100) + "a";
        let b = "x".repeat(100) + "b";
        let (fa, fb) = (test_name(&a), test_name(&b));
        assert_eq!(fa.encode_utf16().count(), TEST_NAME_CHARS - 1);
        assert_ne!(fa, fb);
        assert_eq!(decode_wide(&encode_wide(&fa, TEST_NAME_CHARS)), fa);
    }

    #[test]
    fn step_and_cycle_are_read_from_the_display_text() {
        let info = |text: &str| ChannelInfo {
            step_and_cycle_text: text.into(),
            ..ChannelInfo::default()
        };
        assert_eq!(info("Step 3, Cycle 2").step_and_cycle(), (3, 2));
        assert_eq!(info("7/12").step_and_cycle(), (7, 12));
        assert_eq!(info("").step_and_cycle(), (0, 0));
    }

    #[test]
    fn broken_frames_are_named_errors() {
        let good = StopTest {
            channel: 1,
            all: false,
        }
        .to_frame()
        .encode(Direction::Request);
        assert_eq!(split_frame(&good[..50], Direction::Request), Ok(None));
        let mut bad = good.clone();
        bad[30] ^= 1;
        assert!(matches!(
            split_frame(&bad, Direction::Request),
            Err(WireError::Checksum { frame_len: 128, .. })
        ));
        let mut token = good.clone();
        token[0] = 0;
        assert!(matches!(
            split_frame(&token, Direction::Request),
            Err(WireError::Token { .. })
        ));
        // The same bytes read as a feedback announce 116 bytes, too short for what follows.
        assert!(split_frame(&good, Direction::Feedback).is_err());
        let mut huge = good;
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            split_frame(&huge, Direction::Request),
            Err(WireError::FrameLength { .. })
        ));
    }

    #[test]
    fn a_channel_count_larger_than_the_frame_is_refused_before_allocating() {
        let frame = Frame::new(
            feedback_code(cmd::GET_CHANNELS_INFO),
            u32::MAX.to_le_bytes().to_vec(),
        );
        assert!(ChannelsInfo::from_frame(&frame).is_err());
        let mut args = vec![0u8; 17];
        args[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        let frame = Frame::new(feedback_code(cmd::GET_RECORDS), args);
        assert!(RecordsFeedback::from_frame(&frame).is_err());
    }

    /// Runs every decoder on `frame`.
    fn decode_all(frame: &Frame) {
        let _ = Login::from_frame(frame);
        let _ = LoginFeedback::from_frame(frame);
        let _ = ChannelsInfoRequest::from_frame(frame);
        let _ = ChannelsInfo::from_frame(frame);
        let _ = AssignSchedule::from_frame(frame);
        let _ = StartTest::from_frame(frame);
        let _ = StopTest::from_frame(frame);
        for command in [cmd::ASSIGN_SCHEDULE, cmd::START, cmd::STOP] {
            let _ = CommonFeedback::from_frame(frame, command);
        }
        let _ = Upload::from_frame(frame);
        let _ = UploadFeedback::from_frame(frame);
        let _ = RecordsRequest::from_frame(frame);
        let _ = RecordsFeedback::from_frame(frame);
    }

    const COMMANDS: [u32; 9] = [
        cmd::LOGIN,
        cmd::GET_CHANNELS_INFO,
        cmd::ASSIGN_SCHEDULE,
        cmd::START,
        cmd::STOP,
        cmd::UPLOAD,
        cmd::GET_RECORDS,
        feedback_code(cmd::GET_CHANNELS_INFO),
        feedback_code(cmd::GET_RECORDS),
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_give_errors_not_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..4000),
        ) {
            for dir in [Direction::Request, Direction::Feedback] {
                if let Ok(Some((frame, used))) = split_frame(&bytes, dir) {
                    prop_assert!(used <= bytes.len());
                    decode_all(&frame);
                }
            }
            for command in COMMANDS {
                decode_all(&Frame::new(command, bytes.clone()));
                decode_all(&Frame::new(feedback_code(command), bytes.clone()));
            }
            let _ = decode_wide(&bytes);
            let _ = decode_ascii(&bytes);
        }

        #[test]
        fn arbitrary_bodies_behind_a_valid_header_give_errors_not_panics(
            command in proptest::sample::select(COMMANDS.to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..2500),
        ) {
            for dir in [Direction::Request, Direction::Feedback] {
                let bytes = Frame::new(command, body.clone()).encode(dir);
                let (frame, used) = split_frame(&bytes, dir).unwrap().unwrap();
                prop_assert_eq!(used, bytes.len());
                decode_all(&frame);
                decode_all(&Frame::new(feedback_code(command), body.clone()));
            }
        }

        #[test]
        fn fitted_names_always_fit(name in "\\PC{0,120}") {
            let fitted = fit(&name, TEST_NAME_CHARS);
            prop_assert!(fitted.encode_utf16().count() < TEST_NAME_CHARS);
            // Text after a NUL cannot travel in a C string.
            let sent = fitted.split('\0').next().unwrap_or_default();
            prop_assert_eq!(decode_wide(&encode_wide(&fitted, TEST_NAME_CHARS)), sent);
        }
    }
}

//! The binary frame (header, data, what Len counts), its split off a byte stream, the fixed-width
//! text fields and the result code of a command reply.

use super::{Function, HEADER_LEN, WireError, carries_data};
use crate::codec::{self, Cursor};

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

/// A fixed-width text field: ASCII, padded with spaces (what the tester expects), cut to
/// `width`. Non-ASCII characters become `?`.
pub fn encode_text(s: &str, width: usize) -> Vec<u8> {
    codec::encode_ascii_padded(s, width, b' ')
}

/// The inverse of [`encode_text`]: padding (spaces or NULs) removed.
pub fn decode_text(bytes: &[u8]) -> String {
    codec::decode_ascii(bytes).trim_end_matches(' ').to_string()
}

/// A cursor over a message's `bytes`, once the `need` bytes of its fixed part are known to be
/// there.
pub(crate) fn reader<'a>(
    what: &'static str,
    bytes: &'a [u8],
    need: usize,
) -> Result<Cursor<'a>, WireError> {
    Ok(Cursor::new(what, bytes).require(need)?)
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

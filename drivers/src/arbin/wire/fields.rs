//! Field encoding: the cursor over a frame's arguments, the argument builder, and the wide
//! (UTF-16LE) and ASCII text fields, with names fitted to them.

use super::{CHECKSUM_LEN, Frame, HEADER_LEN, TEST_NAME_CHARS, WireError};
use crate::codec::{self, Cursor};

pub use crate::codec::{decode_ascii, decode_wide};

/// A cursor over `frame`'s arguments, once it is known to carry `command` and at least the
/// `need` bytes of its fixed part; sizes in its errors count the whole frame.
pub(crate) fn reader<'a>(
    what: &'static str,
    frame: &'a Frame,
    command: u32,
    need: usize,
) -> Result<Cursor<'a>, WireError> {
    frame.expect(command)?;
    Ok(Cursor::new(what, &frame.args)
        .counting(HEADER_LEN + CHECKSUM_LEN)
        .require(need)?)
}

/// Builds a frame's arguments.
#[derive(Default)]
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub(crate) fn bytes(mut self, b: &[u8]) -> Writer {
        self.out.extend_from_slice(b);
        self
    }
    pub(crate) fn zeros(mut self, n: usize) -> Writer {
        self.out.resize(self.out.len() + n, 0);
        self
    }
    pub(crate) fn wide(self, s: &str, chars: usize) -> Writer {
        let b = encode_wide(s, chars);
        self.bytes(&b)
    }
    pub(crate) fn ascii(self, s: &str, len: usize) -> Writer {
        let b = encode_ascii(s, len);
        self.bytes(&b)
    }
    pub(crate) fn frame(self, command: u32) -> Frame {
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

/// `s` as `len` zero-padded bytes. Callers check [`fits_ascii`] first where it matters (a
/// user name); here non-ASCII characters become `?` and long text is cut.
pub fn encode_ascii(s: &str, len: usize) -> Vec<u8> {
    codec::encode_ascii_padded(s, len, 0)
}

/// Whether `s` is ASCII and at most `len` bytes, so [`encode_ascii`] keeps it as it is.
pub fn fits_ascii(s: &str, len: usize) -> bool {
    s.is_ascii() && s.len() <= len && !s.contains('\0')
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

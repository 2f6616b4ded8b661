//! What the little-endian binary codecs (Arbin CTI, Maccor MacNet) share: a [`Cursor`] that
//! reads values off a message's bytes and fails with [`Short`], never a panic, on input that
//! ends too soon; and the fixed-width text fields both put in their messages.

/// Input that ended before a message did: `what` needs `need` bytes, `got` came. Each family
/// turns it into its own wire error, with the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short {
    pub what: &'static str,
    pub need: usize,
    pub got: usize,
}

/// Reads little-endian values off a byte slice, in order, naming the message in its errors.
pub(crate) struct Cursor<'a> {
    what: &'static str,
    bytes: &'a [u8],
    at: usize,
    /// Bytes before the slice that the sizes in errors count too (a frame's header and
    /// checksum, when the slice is its arguments), so errors speak of whole frames.
    base: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`, the body of `what`.
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Cursor<'a> {
        Cursor {
            what,
            bytes,
            at: 0,
            base: 0,
        }
    }

    /// Sizes in errors count `base` more bytes than the slice holds.
    pub(crate) fn counting(mut self, base: usize) -> Cursor<'a> {
        self.base = base;
        self
    }

    /// Fails at once unless at least `need` bytes are there (a message's fixed part).
    pub(crate) fn require(self, need: usize) -> Result<Cursor<'a>, Short> {
        if self.bytes.len() < need {
            return Err(self.short(need));
        }
        Ok(self)
    }

    fn short(&self, need: usize) -> Short {
        Short {
            what: self.what,
            need: need.saturating_add(self.base),
            got: self.bytes.len() + self.base,
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.at.saturating_add(n);
        let out = self.bytes.get(self.at..end).ok_or(self.short(end))?;
        self.at = end;
        Ok(out)
    }

    /// Passes over `n` bytes (reserved or unused fields).
    pub(crate) fn skip(&mut self, n: usize) -> Result<(), Short> {
        self.take(n).map(|_| ())
    }

    /// The error for `what`, of which `n` bytes would follow from here, when they are not all
    /// there (checked before allocating for a count read off the wire).
    pub(crate) fn lacks(&self, what: &'static str, n: usize) -> Short {
        Short {
            what,
            need: self.at.saturating_add(n).saturating_add(self.base),
            got: self.bytes.len() + self.base,
        }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn i16(&mut self) -> Result<i16, Short> {
        Ok(i16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Short> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn f32(&mut self) -> Result<f32, Short> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, Short> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A zero-padded byte text field of `len` bytes ([`decode_ascii`]).
    pub(crate) fn ascii(&mut self, len: usize) -> Result<String, Short> {
        Ok(decode_ascii(self.take(len)?))
    }

    /// A UTF-16LE text field of `chars` code units ([`decode_wide`]).
    pub(crate) fn wide(&mut self, chars: usize) -> Result<String, Short> {
        Ok(decode_wide(self.take(2 * chars)?))
    }
}

/// `s` as a byte field of `width`, padded with `pad`; non-ASCII characters become `?` and long
/// text is cut (callers that must refuse such text check it first).
pub(crate) fn encode_ascii_padded(s: &str, width: usize, pad: u8) -> Vec<u8> {
    let mut out: Vec<u8> = s
        .chars()
        .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
        .take(width)
        .collect();
    out.resize(width, pad);
    out
}

/// The text of a byte field up to its first NUL (all of it when there is none).
pub fn decode_ascii(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_values_in_order() {
        let mut bytes = vec![0x34, 0x12];
        bytes.extend(0xDEAD_BEEFu32.to_le_bytes());
        bytes.extend((-2i32).to_le_bytes());
        bytes.extend(1.5f32.to_le_bytes());
        bytes.extend(2.25f64.to_le_bytes());
        bytes.extend(7u64.to_le_bytes());
        bytes.extend(b"ab\0c");
        let mut c = Cursor::new("a test", &bytes);
        assert_eq!(c.u16(), Ok(0x1234));
        assert_eq!(c.u32(), Ok(0xDEAD_BEEF));
        assert_eq!(c.i32(), Ok(-2));
        assert_eq!(c.f32(), Ok(1.5));
        assert_eq!(c.f64(), Ok(2.25));
        assert_eq!(c.u64(), Ok(7));
        assert_eq!(c.ascii(4).as_deref(), Ok("ab"));
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn short_input_is_an_error_counting_the_base() {
        let short = Cursor::new("a test", &[1, 2, 3]).counting(10).require(4);
        assert_eq!(
            short.err(),
            Some(Short {
                what: "a test",
                need: 14,
                got: 13
            })
        );
        let mut c = Cursor::new("a test", &[1, 2, 3]);
        assert_eq!(c.u16(), Ok(0x0201));
        assert_eq!(
            c.u32(),
            Err(Short {
                what: "a test",
                need: 6,
                got: 3
            })
        );
        assert!(c.take(usize::MAX).is_err());
    }

    #[test]
    fn text_fields() {
        assert_eq!(encode_ascii_padded("añb", 5, b' '), b"a?b  ");
        assert_eq!(encode_ascii_padded("abcdef", 3, 0), b"abc");
        let wide: Vec<u8> = "hé".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode_wide(&[wide, vec![0, 0, b'x', 0]].concat()), "hé");
    }
}

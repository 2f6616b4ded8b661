//! Binder MB1 facts and the RTU frame codec both sides share: CRC, frames, exception codes,
//! word-swapped floats, the register table and mode values.
//!
//! Everything about the controller's register map lives here, so another controller (MB2)
//! or firmware changes one table. The entry marked "assumption" is not in `chambers.md`;
//! [`super`] says why it is there.
//!
//! Only what a Binder speaks is encoded: reads (function 3) and multiple-register writes
//! (0x10). There is deliberately no encoder for function 6, which a Binder refuses; the
//! device side still decodes it (and every other function whose frame length it can tell),
//! so that it can answer with an exception.

pub use crate::transport::modbus::{
    f32_from_low_first as decode_float, f32_to_low_first as encode_float,
};

/// Serial speed of the RS-422 line (8N1).
pub const BAUD_RATE: u32 = 9600;
/// TCP port of the serial-to-TCP bridge in Ethernet models (the facts say "likely").
pub const BRIDGE_PORT: u16 = 10001;
pub const DEFAULT_UNIT: u8 = 1;
/// Longest RTU frame, bytes.
pub const MAX_FRAME: usize = 256;
/// Most registers one read may ask for (the Modbus limit).
pub const MAX_READ: u16 = 125;

/// Function codes.
pub mod function {
    /// Read holding registers: the only read.
    pub const READ: u8 = 0x03;
    /// Write single register: refused by a Binder (exception 1); never sent by the driver.
    pub const WRITE_SINGLE: u8 = 0x06;
    /// Write multiple registers: the only write.
    pub const WRITE: u8 = 0x10;
}

/// MB1 holding registers. Floats take two registers, low word first.
pub mod reg {
    /// Actual (measured) temperature, float, read-only.
    pub const TEMPERATURE: u16 = 0x11A9;
    /// Actual relative humidity, float, read-only.
    pub const HUMIDITY: u16 = 0x11CD;
    /// Temperature set point in force, float (the controller derives it from the mode).
    pub const SET_POINT: u16 = 0x1077;
    /// Humidity set point in force, float.
    pub const HUMIDITY_SET_POINT: u16 = 0x1079;
    /// Temperature set point of manual mode, float.
    pub const MANUAL_SET_POINT: u16 = 0x156F;
    /// Temperature set point of basic mode, float.
    pub const BASIC_SET_POINT: u16 = 0x1581;
    /// Operating mode, one register: see [`super::mode`].
    pub const MODE: u16 = 0x1A22;
    /// Alarm word, one register, 0 = no alarm (**assumption**: the facts give no alarm
    /// register for MB1; see [`super`]). Read-only.
    pub const ALARM: u16 = 0x1A23;
}

/// Values of the mode register; each is one bit.
pub mod mode {
    /// Regulating to the basic set point.
    pub const BASIC: u16 = 0x1000;
    /// Regulating to the manual set point.
    pub const MANUAL: u16 = 0x0800;
    /// Running a program stored in the controller.
    pub const PROGRAM: u16 = 0x0400;

    /// Whether a mode word means the chamber follows a set point given from outside (manual)
    /// or a program, rather than idling at its basic set point. Bits not listed are ignored.
    pub fn running(word: u16) -> bool {
        word & (MANUAL | PROGRAM) != 0
    }
}

/// An exception a Binder answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    IllegalFunction,
    IllegalDataAddress,
    IllegalDataValue,
    DeviceFailure,
    Acknowledge,
    /// Code 8, Binder's own: the register may not be written (now).
    WriteDenied,
    /// A code outside Binder's list.
    Other(u8),
}

impl Exception {
    pub fn code(self) -> u8 {
        match self {
            Exception::IllegalFunction => 1,
            Exception::IllegalDataAddress => 2,
            Exception::IllegalDataValue => 3,
            Exception::DeviceFailure => 4,
            Exception::Acknowledge => 5,
            Exception::WriteDenied => 8,
            Exception::Other(code) => code,
        }
    }

    pub fn from_code(code: u8) -> Exception {
        match code {
            1 => Exception::IllegalFunction,
            2 => Exception::IllegalDataAddress,
            3 => Exception::IllegalDataValue,
            4 => Exception::DeviceFailure,
            5 => Exception::Acknowledge,
            8 => Exception::WriteDenied,
            other => Exception::Other(other),
        }
    }
}

impl std::fmt::Display for Exception {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meaning = match self {
            Exception::IllegalFunction => "illegal function",
            Exception::IllegalDataAddress => "illegal data address",
            Exception::IllegalDataValue => "illegal data value",
            Exception::DeviceFailure => "device failure",
            Exception::Acknowledge => "acknowledge: busy with an earlier request",
            Exception::WriteDenied => "write denied",
            Exception::Other(_) => "not a Binder exception code",
        };
        write!(f, "{} ({meaning})", self.code())
    }
}

/// A byte sequence that is not a frame this codec accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

/// The Modbus CRC-16 (polynomial 0xA001, reflected, initial value 0xFFFF).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// `unit` and `pdu` framed: the CRC goes low byte first.
fn frame(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 3);
    out.push(unit);
    out.extend_from_slice(pdu);
    out.extend_from_slice(&crc16(&out).to_le_bytes());
    out
}

/// Whether `frame` ends in the CRC of what precedes it.
fn crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(n) if n > 0 => crc16(&frame[..n]).to_le_bytes() == frame[n..],
        _ => false,
    }
}

fn u16_at(bytes: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([bytes[i], bytes[i + 1]])
}

/// A read request for `count` registers from `start`.
pub fn encode_read(unit: u8, start: u16, count: u16) -> Vec<u8> {
    let mut pdu = vec![function::READ];
    pdu.extend_from_slice(&start.to_be_bytes());
    pdu.extend_from_slice(&count.to_be_bytes());
    frame(unit, &pdu)
}

/// A write request for `words` from `start` (function 0x10), the only write a Binder takes.
/// At most 123 words fit a frame; the caller writes a float or a mode word.
pub fn encode_write(unit: u8, start: u16, words: &[u16]) -> Vec<u8> {
    let mut pdu = vec![function::WRITE];
    pdu.extend_from_slice(&start.to_be_bytes());
    pdu.extend_from_slice(&(words.len() as u16).to_be_bytes());
    pdu.push((words.len() * 2) as u8);
    for w in words {
        pdu.extend_from_slice(&w.to_be_bytes());
    }
    frame(unit, &pdu)
}

/// A request as the device side decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Function 3: `count` registers from `start`.
    Read { start: u16, count: u16 },
    /// Function 0x10: `words` from `start`.
    Write { start: u16, words: Vec<u16> },
    /// A well-formed frame of another function (function 6 among them): a Binder refuses it.
    Other { function: u8 },
    /// A write whose register count disagrees with its byte count.
    Invalid { function: u8 },
}

impl Request {
    pub fn function(&self) -> u8 {
        match self {
            Request::Read { .. } => function::READ,
            Request::Write { .. } => function::WRITE,
            Request::Other { function } | Request::Invalid { function } => *function,
        }
    }
}

/// Decodes the request at the start of `buf` (the device side): `Ok(None)` while it is
/// incomplete, else its length, unit and request. `Err` when `buf` cannot start a frame (a
/// function whose length is unknown, a bad CRC): the caller drops a byte and looks again,
/// which finds the next frame after line noise.
pub fn decode_request(buf: &[u8]) -> Result<Option<(usize, u8, Request)>, FrameError> {
    let Some(&function) = buf.get(1) else {
        return Ok(None);
    };
    let len = match function {
        // Reads and single writes: address, value or count, CRC.
        0x01..=0x06 => 8,
        0x0F | 0x10 => match buf.get(6) {
            Some(&bytes) => 9 + usize::from(bytes),
            None => return Ok(None),
        },
        _ => {
            return Err(FrameError(format!(
                "function {function:#04x} is not one a Binder frame can carry"
            )));
        }
    };
    let Some(frame) = buf.get(..len) else {
        return Ok(None);
    };
    if !crc_ok(frame) {
        return Err(FrameError("CRC mismatch".into()));
    }
    let unit = frame[0];
    let request = match function {
        function::READ => Request::Read {
            start: u16_at(frame, 2),
            count: u16_at(frame, 4),
        },
        function::WRITE => {
            let count = u16_at(frame, 4);
            let data = &frame[7..len - 2];
            if usize::from(count) * 2 != data.len() || count == 0 {
                Request::Invalid { function }
            } else {
                Request::Write {
                    start: u16_at(frame, 2),
                    words: data.chunks(2).map(|w| u16_at(w, 0)).collect(),
                }
            }
        }
        _ => Request::Other { function },
    };
    Ok(Some((len, unit, request)))
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// To a read: the registers.
    Registers(Vec<u16>),
    /// To a write: where and how many.
    Written { start: u16, count: u16 },
    /// A refusal of a request of `function`.
    Exception { function: u8, exception: Exception },
}

impl Reply {
    /// The reply framed for `unit` (the device side).
    pub fn encode(&self, unit: u8) -> Vec<u8> {
        let mut pdu = Vec::new();
        match self {
            Reply::Registers(words) => {
                pdu.push(function::READ);
                pdu.push((words.len() * 2) as u8);
                for w in words {
                    pdu.extend_from_slice(&w.to_be_bytes());
                }
            }
            Reply::Written { start, count } => {
                pdu.push(function::WRITE);
                pdu.extend_from_slice(&start.to_be_bytes());
                pdu.extend_from_slice(&count.to_be_bytes());
            }
            Reply::Exception {
                function,
                exception,
            } => {
                pdu.push(function | 0x80);
                pdu.push(exception.code());
            }
        }
        frame(unit, &pdu)
    }
}

/// The whole length of a reply from its first three bytes (the host side reads those, then
/// the rest).
pub fn reply_len(head: &[u8; 3]) -> Result<usize, FrameError> {
    match head[1] {
        f if f & 0x80 != 0 => Ok(5),
        function::READ => Ok(5 + usize::from(head[2])),
        function::WRITE => Ok(8),
        f => Err(FrameError(format!(
            "a reply with function {f:#04x}, which the driver never asks for"
        ))),
    }
}

/// Decodes one whole reply frame (the host side): its unit and reply.
pub fn decode_reply(frame: &[u8]) -> Result<(u8, Reply), FrameError> {
    let head: &[u8; 3] = frame
        .get(..3)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| FrameError(format!("a reply of {} bytes", frame.len())))?;
    let len = reply_len(head)?;
    if frame.len() != len {
        return Err(FrameError(format!(
            "a reply of {} bytes where its header says {len}",
            frame.len()
        )));
    }
    if !crc_ok(frame) {
        return Err(FrameError("CRC mismatch".into()));
    }
    let reply = match frame[1] {
        f if f & 0x80 != 0 => Reply::Exception {
            function: f & 0x7F,
            exception: Exception::from_code(frame[2]),
        },
        function::READ => {
            let data = &frame[3..len - 2];
            if !data.len().is_multiple_of(2) {
                return Err(FrameError(format!(
                    "{} data bytes: registers come in pairs",
                    data.len()
                )));
            }
            Reply::Registers(data.chunks(2).map(|w| u16_at(w, 0)).collect())
        }
        _ => Reply::Written {
            start: u16_at(frame, 2),
            count: u16_at(frame, 4),
        },
    };
    Ok((frame[0], reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_standard_modbus_crc_low_byte_first() {
        // The textbook example: read 10 registers from 0 on unit 1.
        assert_eq!(
            encode_read(1, 0, 10),
            [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]
        );
        assert_eq!(crc16(b"123456789"), 0x4B37);
    }

    #[test]
    fn a_float_write_is_one_function_16_frame_with_the_low_word_first() {
        let frame = encode_write(1, reg::MANUAL_SET_POINT, &encode_float(45.0));
        // 45.0 is 0x42340000.
        assert_eq!(
            frame[..11],
            [
                0x01, 0x10, 0x15, 0x6F, 0x00, 0x02, 0x04, 0x00, 0x00, 0x42, 0x34
            ]
        );
        let (len, unit, request) = decode_request(&frame).unwrap().unwrap();
        assert_eq!((len, unit), (frame.len(), 1));
        assert_eq!(
            request,
            Request::Write {
                start: reg::MANUAL_SET_POINT,
                words: vec![0x0000, 0x4234]
            }
        );
    }

    #[test]
    fn the_device_side_waits_for_whole_frames_and_skips_noise() {
        let read = encode_read(7, reg::TEMPERATURE, 2);
        assert_eq!(decode_request(&read[..5]), Ok(None));
        assert_eq!(
            decode_request(&read).unwrap().unwrap().2,
            Request::Read {
                start: reg::TEMPERATURE,
                count: 2
            }
        );
        let mut broken = read.clone();
        broken[7] ^= 1;
        assert!(decode_request(&broken).is_err());
        assert!(decode_request(&[0x01, 0x42, 0, 0]).is_err());
        // Function 6 decodes, to be refused.
        let mut single = vec![0x01, 0x06, 0x1A, 0x22, 0x08, 0x00];
        single.extend_from_slice(&crc16(&single).to_le_bytes());
        assert_eq!(
            decode_request(&single).unwrap().unwrap().2,
            Request::Other {
                function: function::WRITE_SINGLE
            }
        );
    }

    #[test]
    fn replies_round_trip_and_exceptions_keep_their_codes() {
        for reply in [
            Reply::Registers(vec![0x0000, 0x4234]),
            Reply::Written {
                start: reg::MODE,
                count: 1,
            },
            Reply::Exception {
                function: function::WRITE,
                exception: Exception::WriteDenied,
            },
            Reply::Exception {
                function: function::READ,
                exception: Exception::Other(0x0B),
            },
        ] {
            let frame = reply.encode(3);
            let head: [u8; 3] = frame[..3].try_into().unwrap();
            assert_eq!(reply_len(&head), Ok(frame.len()));
            assert_eq!(decode_reply(&frame), Ok((3, reply)));
        }
        assert_eq!(Exception::WriteDenied.to_string(), "8 (write denied)");
        for code in 0..=255 {
            assert_eq!(Exception::from_code(code).code(), code);
        }
    }

    #[test]
    fn the_mode_word_is_read_as_bits() {
        assert!(mode::running(mode::MANUAL));
        assert!(mode::running(mode::PROGRAM | 0x0001));
        assert!(!mode::running(mode::BASIC));
        assert!(!mode::running(0));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
            if let Some(head) = bytes.get(..3) {
                let _ = reply_len(head.try_into().unwrap());
            }
            // Skipping a byte at a time, as the device side does, always ends.
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                match decode_request(rest) {
                    Ok(Some((len, _, _))) => rest = &rest[len..],
                    Ok(None) => break,
                    Err(_) => rest = &rest[1..],
                }
            }
        }

        #[test]
        fn requests_round_trip(unit in any::<u8>(), start in any::<u16>(), count in 1u16..=125,
                               words in proptest::collection::vec(any::<u16>(), 1..=123)) {
            let read = encode_read(unit, start, count);
            prop_assert_eq!(decode_request(&read).unwrap(), Some((8, unit, Request::Read { start, count })));
            let write = encode_write(unit, start, &words);
            prop_assert_eq!(
                decode_request(&write).unwrap(),
                Some((write.len(), unit, Request::Write { start, words: words.clone() }))
            );
        }

        #[test]
        fn a_flipped_bit_never_passes_the_crc(words in proptest::collection::vec(any::<u16>(), 1..=20),
                                               bit in any::<prop::sample::Index>()) {
            let mut frame = Reply::Registers(words).encode(1);
            let bit = bit.index(frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_reply(&frame).is_err());
        }
    }
}

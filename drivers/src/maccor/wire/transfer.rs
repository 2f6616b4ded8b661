//! (1,6) file transfer: TFTP-like packets in 500-byte blocks, binary only.

use super::{FILE_TRANSFER, Frame, WireError, reader};

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
        let mut r = reader("a file-transfer packet", bytes, 4)?;
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
                let mut r = reader("a read request", rest, 8)?;
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

//! The CTI frame: token, length (counted differently by direction), command, arguments and
//! checksum, and its split off a byte stream.

use super::{CHECKSUM_LEN, HEADER_LEN, LENGTH_BASE, MAX_FRAME_LEN, TOKEN, WireError};
use std::fmt;

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

//! LOGIN and its feedback.

use super::{
    CHECKSUM_LEN, CREDENTIAL_LEN, Frame, HEADER_LEN, LOGIN_FEEDBACK_LEN, WireError, Writer, cmd,
    encode_ascii, feedback_code, reader,
};

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
        let mut r = reader("LOGIN", frame, cmd::LOGIN, Self::LEN)?;
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
    /// See [`login_result`](super::login_result).
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
        let mut r = reader(
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

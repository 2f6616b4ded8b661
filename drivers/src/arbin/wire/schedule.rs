//! Schedules and tests: ASSIGN_SCHEDULE, START, STOP and the common feedback with a result.

use super::{
    CHECKSUM_LEN, COMMON_FEEDBACK_LEN, Frame, HEADER_LEN, RESERVED_LEN, SCHEDULE_CHARS,
    TEST_NAME_CHARS, WireError, Writer, cmd, feedback_code, field, reader,
};

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
        let mut r = reader("ASSIGN_SCHEDULE", frame, cmd::ASSIGN_SCHEDULE, Self::LEN)?;
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
        let mut r = reader("START", frame, cmd::START, Self::MIN_LEN)?;
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
        let mut r = reader("STOP", frame, cmd::STOP, Self::LEN)?;
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
    /// See [`result`](super::result).
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
        let mut r = reader("command feedback", frame, feedback_code(command), Self::LEN)?;
        Ok(CommonFeedback {
            command,
            channel: r.i32()?,
            result: r.u8()?,
        })
    }
}

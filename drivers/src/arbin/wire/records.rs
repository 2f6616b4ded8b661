//! **cyclerd extension**: GET_RECORDS, logged records read from an index.

use super::{Frame, WireError, Writer, cmd, feedback_code, field, reader};
use crate::codec::Cursor;

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
        let mut r = reader("GET_RECORDS", frame, cmd::GET_RECORDS, Self::LEN)?;
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

    fn read(r: &mut Cursor<'_>) -> Result<DataRecord, WireError> {
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
    /// See [`result::RECORDS`](super::result::RECORDS).
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
        let mut r = reader(
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

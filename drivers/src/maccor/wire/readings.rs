//! (4,1) status of a block of channels and (4,7) one channel's reading, binary and JSON.

use super::{
    Frame, READING, READING_LEN, STATUS, WireError, as_f32, as_u8, as_u16, as_u32, field,
    iso8601_from_ms, ms_from_iso8601, reader, required, rf1,
};
use serde_json::{Map, Value, json};

/// One channel's entry in (4,1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStat {
    /// What the channel does ([`rf1`]), why its last step ended ([`rf2`](super::rf2)), its state ([`stat`](super::stat)).
    pub rf1: u8,
    pub rf2: u8,
    pub stat: u16,
}

/// (4,1): the status of `entries.len()` channels from `first`, as the reply numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBlock {
    /// The channel of the first entry, as the reply states it (entries follow in order).
    pub first: u16,
    /// One entry per channel from `first`.
    pub entries: Vec<ChannelStat>,
}

impl StatusBlock {
    pub fn request(first: u16, count: u16) -> Frame {
        Frame::request(STATUS, first, count)
    }

    pub fn to_frame(&self) -> Frame {
        let data = self
            .entries
            .iter()
            .flat_map(|e| {
                let [a, b] = e.stat.to_le_bytes();
                [e.rf1, e.rf2, a, b]
            })
            .collect();
        Frame::with_data(STATUS, self.first, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<StatusBlock, WireError> {
        frame.expect(STATUS)?;
        if !frame.data.len().is_multiple_of(4) {
            return Err(WireError::Length {
                what: "a (4,1) status reply (4 bytes per channel)",
                need: frame.data.len().next_multiple_of(4),
                got: frame.data.len(),
            });
        }
        let entries = frame
            .data
            .chunks_exact(4)
            .map(|c| ChannelStat {
                rf1: c[0],
                rf2: c[1],
                stat: u16::from_le_bytes([c[2], c[3]]),
            })
            .collect();
        Ok(StatusBlock {
            first: frame.chan,
            entries,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Chan".into(), self.first.into());
        m.insert("Len".into(), self.entries.len().into());
        let list: Vec<Value> = self
            .entries
            .iter()
            .map(|e| json!({"RF1": e.rf1, "RF2": e.rf2, "Stat": e.stat}))
            .collect();
        m.insert("Status".into(), Value::Array(list));
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<StatusBlock, WireError> {
        let first = as_u16(
            m.get("Chan").ok_or_else(|| field("Chan", "missing"))?,
            "Chan",
        )?;
        let list = m
            .get("Status")
            .and_then(Value::as_array)
            .ok_or_else(|| field("Status", "missing or not a list"))?;
        let entries = list
            .iter()
            .map(|e| {
                let e = e
                    .as_object()
                    .ok_or_else(|| field("Status", "an entry is not an object"))?;
                Ok(ChannelStat {
                    rf1: as_u8(required(e, "RF1")?, "RF1")?,
                    rf2: as_u8(required(e, "RF2")?, "RF2")?,
                    stat: as_u16(required(e, "Stat")?, "Stat")?,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        if let Some(len) = m.get("Len") {
            let len = as_u16(len, "Len")?;
            if usize::from(len) != entries.len() {
                return Err(field(
                    "Len",
                    format!("says {len} channels, the list has {}", entries.len()),
                ));
            }
        }
        Ok(StatusBlock { first, entries })
    }
}

/// (4,7): one channel's status and reading. Also the layout of one logged record in the
/// record-log transfer (see [`Packet::Read`](super::Packet::Read)), where `last_rec` is the record's own index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The channel's codes, as in [`ChannelStat`].
    pub rf1: u8,
    pub rf2: u8,
    pub stat: u16,
    /// Index of the newest logged record of the test (from 1; 0 before the first).
    pub last_rec: u32,
    /// MacNet counts cycles from 0 (the public example shows Cycle 0 at step 5).
    pub cycle: u32,
    /// The procedure step (from 1).
    pub step: u16,
    /// Seconds since the test and the step started.
    pub test_time_s: f32,
    pub step_time_s: f32,
    /// Charge and energy counters as the tester keeps them (the step's).
    pub capacity_ah: f32,
    pub energy_wh: f32,
    /// As the tester reports it: a magnitude whose direction is RF1 on some firmware, signed on
    /// others; [`Reading::signed_current`] reads both.
    pub current_a: f32,
    /// Terminal voltage, V.
    pub voltage_v: f32,
    /// Tester clock, ms since the Unix epoch; `None` when a JSON reply's text is unreadable.
    pub tester_time_ms: Option<u64>,
}

impl Reading {
    /// Current in cyclerd's sign (positive charges the cell).
    pub fn signed_current(&self) -> f64 {
        let i = f64::from(self.current_a);
        match self.rf1 {
            rf1::DISCHARGE => -i.abs(),
            rf1::CHARGE => i.abs(),
            _ => i,
        }
    }

    pub fn request(chan: u16) -> Frame {
        Frame::request(READING, chan, 1)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(READING_LEN);
        out.push(self.rf1);
        out.push(self.rf2);
        out.extend(self.stat.to_le_bytes());
        out.extend(self.last_rec.to_le_bytes());
        out.extend(self.cycle.to_le_bytes());
        out.extend(self.step.to_le_bytes());
        for v in [
            self.test_time_s,
            self.step_time_s,
            self.capacity_ah,
            self.energy_wh,
            self.current_a,
            self.voltage_v,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(self.tester_time_ms.unwrap_or(0).to_le_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Reading, WireError> {
        let mut r = reader("a (4,7) reading", bytes, READING_LEN)?;
        Ok(Reading {
            rf1: r.u8()?,
            rf2: r.u8()?,
            stat: r.u16()?,
            last_rec: r.u32()?,
            cycle: r.u32()?,
            step: r.u16()?,
            test_time_s: r.f32()?,
            step_time_s: r.f32()?,
            capacity_ah: r.f32()?,
            energy_wh: r.f32()?,
            current_a: r.f32()?,
            voltage_v: r.f32()?,
            tester_time_ms: Some(r.u64()?),
        })
    }

    pub fn to_frame(&self, chan: u16) -> Frame {
        Frame::with_data(READING, chan, self.to_bytes())
    }

    pub fn from_frame(frame: &Frame) -> Result<Reading, WireError> {
        frame.expect(READING)?;
        Reading::from_bytes(&frame.data)
    }

    pub fn to_json(&self, chan: u16) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Chan".into(), chan.into());
        m.insert("RF1".into(), self.rf1.into());
        m.insert("RF2".into(), self.rf2.into());
        m.insert("Stat".into(), self.stat.into());
        // The public example's spelling; decoders also take "LastRec".
        m.insert("LastRecNum".into(), self.last_rec.into());
        m.insert("Cycle".into(), self.cycle.into());
        m.insert("Step".into(), self.step.into());
        for (k, v) in [
            ("TestTime", self.test_time_s),
            ("StepTime", self.step_time_s),
            ("Capacity", self.capacity_ah),
            ("Energy", self.energy_wh),
            ("Current", self.current_a),
            ("Voltage", self.voltage_v),
        ] {
            m.insert(k.into(), f64::from(v).into());
        }
        m.insert(
            "TesterTime".into(),
            iso8601_from_ms(self.tester_time_ms.unwrap_or(0)).into(),
        );
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<Reading, WireError> {
        let last_rec = match m.get("LastRecNum").or_else(|| m.get("LastRec")) {
            Some(v) => as_u32(v, "LastRecNum")?,
            None => return Err(field("LastRecNum", "missing")),
        };
        let f = |k: &'static str| as_f32(required(m, k)?, k);
        Ok(Reading {
            rf1: as_u8(required(m, "RF1")?, "RF1")?,
            rf2: as_u8(required(m, "RF2")?, "RF2")?,
            stat: as_u16(required(m, "Stat")?, "Stat")?,
            last_rec,
            cycle: as_u32(required(m, "Cycle")?, "Cycle")?,
            step: as_u16(required(m, "Step")?, "Step")?,
            test_time_s: f("TestTime")?,
            step_time_s: f("StepTime")?,
            capacity_ah: f("Capacity")?,
            energy_wh: f("Energy")?,
            current_a: f("Current")?,
            voltage_v: f("Voltage")?,
            tester_time_ms: m
                .get("TesterTime")
                .and_then(Value::as_str)
                .and_then(ms_from_iso8601),
        })
    }
}

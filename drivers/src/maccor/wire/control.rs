//! (6,x) control: (6,2) start a test, (6,7) start direct mode and (6,8) set its output.

use super::{
    COMMENT_LEN, DIRECT_OUTPUT, DIRECT_START, DIRECT_START_LEN, Frame, IGNORE, NAME_LEN,
    OUTPUT_LEN, START, START_LEN, WireError, as_f32, as_u8, decode_text, encode_text, field,
    reader, required,
};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct StartTest {
    /// The data file name: at most 25 ASCII characters, unique on the tester.
    pub test_name: String,
    /// Procedure name without `.000`, at most 25 characters.
    pub procedure: String,
    /// At most 80 characters.
    pub comment: String,
    /// Capacity that C-rate values in the procedure refer to; 1 when not used.
    pub c_rate: f32,
    /// Environmental chamber number; 0 for none.
    pub chamber: u8,
}

impl StartTest {
    /// Offset of the bytes after the known fields, zero-filled: the binary form is 186 bytes
    /// long but only its first 135 are public (the JSON form's further start options default).
    const KNOWN_LEN: usize = 2 * NAME_LEN + COMMENT_LEN + 5;

    pub fn to_frame(&self, chan: u16) -> Frame {
        let mut data = encode_text(&self.test_name, NAME_LEN);
        data.extend(encode_text(&self.procedure, NAME_LEN));
        data.extend(encode_text(&self.comment, COMMENT_LEN));
        data.extend(self.c_rate.to_le_bytes());
        data.push(self.chamber);
        data.resize(START_LEN, 0);
        Frame::with_data(START, chan, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<StartTest, WireError> {
        frame.expect(START)?;
        if frame.data.len() != START_LEN {
            return Err(WireError::Length {
                what: "a (6,2) start request",
                need: START_LEN,
                got: frame.data.len(),
            });
        }
        let mut r = reader("a (6,2) start request", &frame.data, Self::KNOWN_LEN)?;
        Ok(StartTest {
            test_name: decode_text(r.take(NAME_LEN)?),
            procedure: decode_text(r.take(NAME_LEN)?),
            comment: decode_text(r.take(COMMENT_LEN)?),
            c_rate: r.f32()?,
            chamber: r.u8()?,
        })
    }

    /// The JSON params, with the further start options at their documented defaults.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("TestName".into(), self.test_name.clone().into());
        m.insert("ProcName".into(), self.procedure.clone().into());
        m.insert("Comment".into(), self.comment.clone().into());
        m.insert("Crate".into(), f64::from(self.c_rate).into());
        m.insert("ChamberNum".into(), self.chamber.into());
        for (k, v) in [
            ("StartCycle", json!(0)),
            ("TotCycles", json!(0)),
            ("Mass", json!(1)),
            ("VGain", json!(0)),
            ("AbsTRepAlign", json!(0)),
            ("ParallelR", json!(0)),
            ("VDivHiR", json!(0)),
            ("VDivLoR", json!(0)),
            ("CANpos", json!(-1)),
            ("CANprof", json!("")),
            ("RegimeName", json!("")),
        ] {
            m.insert(k.into(), v);
        }
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<StartTest, WireError> {
        let text = |k: &'static str| -> Result<String, WireError> {
            required(m, k)?
                .as_str()
                .map(|s| s.trim_end().to_string())
                .ok_or_else(|| field(k, "not text"))
        };
        Ok(StartTest {
            test_name: text("TestName")?,
            procedure: text("ProcName")?,
            comment: m
                .get("Comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim_end()
                .to_string(),
            c_rate: m.get("Crate").map_or(Ok(1.0), |v| as_f32(v, "Crate"))?,
            chamber: m
                .get("ChamberNum")
                .map_or(Ok(0), |v| as_u8(v, "ChamberNum"))?,
        })
    }
}

/// Direct-mode channel mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Charge,
    Discharge,
    /// Output off. The JSON form of (6,8) cannot set it; the binary form can.
    Rest,
}

impl Mode {
    pub fn byte(self) -> u8 {
        match self {
            Mode::Charge => b'C',
            Mode::Discharge => b'D',
            Mode::Rest => b'R',
        }
    }

    pub fn from_byte(b: u8) -> Option<Mode> {
        match b {
            b'C' => Some(Mode::Charge),
            b'D' => Some(Mode::Discharge),
            b'R' => Some(Mode::Rest),
            _ => None,
        }
    }
}

/// A direct-mode output: current, voltage, power and resistance are mutually limiting; a value
/// outside the channel's range (such as [`IGNORE`]) means no limit, resistance 0 means none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output {
    /// Current magnitude, A (the direction is `mode`).
    pub current_a: f32,
    /// Voltage limit, V: the CV level of a charge, the floor of a discharge.
    pub voltage_v: f32,
    /// Power limit, W.
    pub power_w: f32,
    /// Resistance, ohm (0: none).
    pub resistance_ohm: f32,
    /// Current range 1 to 4.
    pub range: u8,
    /// Charge, discharge or rest.
    pub mode: Mode,
}

impl Output {
    /// Rest, with every limit neutral.
    pub fn rest(range: u8) -> Output {
        Output {
            current_a: 0.0,
            voltage_v: IGNORE,
            power_w: IGNORE,
            resistance_ohm: 0.0,
            range,
            mode: Mode::Rest,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(OUTPUT_LEN);
        for v in [
            self.current_a,
            self.voltage_v,
            self.power_w,
            self.resistance_ohm,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.push(self.range);
        out.push(self.mode.byte());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Output, WireError> {
        let mut r = reader("a direct-mode output", bytes, OUTPUT_LEN)?;
        let (current_a, voltage_v, power_w, resistance_ohm) =
            (r.f32()?, r.f32()?, r.f32()?, r.f32()?);
        let range = r.u8()?;
        let mode = r.u8()?;
        let mode = Mode::from_byte(mode)
            .ok_or_else(|| field("ChMode", format!("{mode} is not 'C', 'D' or 'R'")))?;
        Ok(Output {
            current_a,
            voltage_v,
            power_w,
            resistance_ohm,
            range,
            mode,
        })
    }

    /// The (6,8) request: `<HHHHffffBB`, Len 18.
    pub fn to_frame(&self, chan: u16) -> Frame {
        Frame::with_data(DIRECT_OUTPUT, chan, self.to_bytes())
    }

    pub fn from_frame(frame: &Frame) -> Result<Output, WireError> {
        frame.expect(DIRECT_OUTPUT)?;
        if frame.data.len() != OUTPUT_LEN {
            return Err(WireError::Length {
                what: "a (6,8) output request",
                need: OUTPUT_LEN,
                got: frame.data.len(),
            });
        }
        Output::from_bytes(&frame.data)
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("Current".into(), f64::from(self.current_a).into());
        m.insert("Voltage".into(), f64::from(self.voltage_v).into());
        m.insert("Power".into(), f64::from(self.power_w).into());
        m.insert("Resistance".into(), f64::from(self.resistance_ohm).into());
        m.insert("CurrentRange".into(), self.range.into());
        m.insert(
            "ChMode".into(),
            char::from(self.mode.byte()).to_string().into(),
        );
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<Output, WireError> {
        let f = |k: &'static str| as_f32(required(m, k)?, k);
        // The mode comes as a letter or as its character code (67, 68, 82).
        let mode = match required(m, "ChMode")? {
            Value::String(s) if s.len() == 1 => s.as_bytes()[0],
            v => as_u8(v, "ChMode")?,
        };
        let mode = Mode::from_byte(mode)
            .ok_or_else(|| field("ChMode", format!("{mode} is not 'C', 'D' or 'R'")))?;
        Ok(Output {
            current_a: f("Current")?,
            voltage_v: f("Voltage")?,
            power_w: f("Power")?,
            resistance_ohm: m
                .get("Resistance")
                .map_or(Ok(0.0), |v| as_f32(v, "Resistance"))?,
            range: m
                .get("CurrentRange")
                .map_or(Ok(4), |v| as_u8(v, "CurrentRange"))?,
            mode,
        })
    }
}

/// (6,7): start a direct-mode test with an initial output and the record rules of its data
/// file (0 disables a rule).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectStart {
    /// The data file name, as for (6,2).
    pub test_name: String,
    /// The output from the start on.
    pub output: Output,
    /// Time between data records, s.
    pub record_every_s: f32,
    /// Voltage change that writes a record, V.
    pub record_dv: f32,
    /// Current change that writes a record, A.
    pub record_di: f32,
}

impl DirectStart {
    pub fn to_frame(&self, chan: u16) -> Frame {
        let mut data = encode_text(&self.test_name, NAME_LEN);
        data.extend(self.output.to_bytes());
        for v in [self.record_every_s, self.record_dv, self.record_di] {
            data.extend(v.to_le_bytes());
        }
        Frame::with_data(DIRECT_START, chan, data)
    }

    pub fn from_frame(frame: &Frame) -> Result<DirectStart, WireError> {
        frame.expect(DIRECT_START)?;
        let mut r = reader("a (6,7) direct start", &frame.data, DIRECT_START_LEN)?;
        let test_name = decode_text(r.take(NAME_LEN)?);
        let output = Output::from_bytes(r.take(OUTPUT_LEN)?)?;
        Ok(DirectStart {
            test_name,
            output,
            record_every_s: r.f32()?,
            record_dv: r.f32()?,
            record_di: r.f32()?,
        })
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = self.output.to_json();
        m.insert("TestName".into(), self.test_name.clone().into());
        m.insert("DataTime".into(), f64::from(self.record_every_s).into());
        m.insert("DataV".into(), f64::from(self.record_dv).into());
        m.insert("DataI".into(), f64::from(self.record_di).into());
        m
    }

    pub fn from_json(m: &Map<String, Value>) -> Result<DirectStart, WireError> {
        let opt = |k: &'static str| m.get(k).map_or(Ok(0.0), |v| as_f32(v, k));
        Ok(DirectStart {
            test_name: required(m, "TestName")?
                .as_str()
                .ok_or_else(|| field("TestName", "not text"))?
                .trim_end()
                .to_string(),
            output: Output::from_json(m)?,
            record_every_s: opt("DataTime")?,
            record_dv: opt("DataV")?,
            record_di: opt("DataI")?,
        })
    }
}

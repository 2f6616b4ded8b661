//! SCPI facts: the dialect table, `*IDN?` recognition, what each command becomes on the wire
//! and reply parsing. No I/O.
//!
//! Every model's command set is one [`DialectTable`] row, so a firmware that spells something
//! differently changes one table entry. Facts marked "uncertain" come from third-party drivers
//! or are not stated in `shared/devices/scpi.md`; parsing is tolerant around them.

mod program;
pub use program::*;

/// Raw SCPI socket port of most instruments.
pub const DEFAULT_PORT: u16 = 5025;
/// ITECH's default raw socket port.
pub const ITECH_PORT: u16 = 30000;

/// The query that reads (and removes) the oldest entry of the error queue.
pub const ERROR_QUERY: &str = "SYST:ERR?";
/// The identification query.
pub const IDN_QUERY: &str = "*IDN?";

/// The command sets cyclerd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Elektro-Automatik PSB/PSI over SCPI (bidirectional supply).
    EaPsb,
    /// Keithley 2450/2460/2461 SMU in its SCPI command set (four-quadrant).
    Keithley24xx,
    /// Keysight (Agilent) B2900 SMU (four-quadrant).
    KeysightB2900,
    /// ITECH IT6000B/C bidirectional supply. Its command spellings are not in the shared
    /// facts beyond "replies are bare numbers": uncertain, from ITECH's IT6000C guide as
    /// remembered (CV priority, `CURR:LIM` / `CURR:LIM:NEG` as the source and sink limits).
    ItechIt6000,
    /// B&K Precision 8600 electronic load (sink only).
    Bk8600,
}

/// Which way a device can move current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sources and sinks (bidirectional supply, SMU).
    Bidirectional,
    /// Only sinks current (electronic load): pair it with a supply, see `PairStage`.
    SinkOnly,
}

/// How a dialect's measurement replies are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureForm {
    /// One query answering "V, A, W" (with or without unit suffixes): EA `MEAS:ARR?`, Keysight
    /// `:MEAS? (@1)` after `:FORM:ELEM:SENS VOLT,CURR`.
    Array(&'static str),
    /// One query for the voltage and one for the current.
    Separate {
        voltage: &'static str,
        current: &'static str,
    },
}

/// One dialect's command set. `{}` in a template is replaced by the formatted value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DialectTable {
    pub dialect: Dialect,
    /// How a lab's configuration names it (`[[device]] dialect`).
    pub name: &'static str,
    pub role: Role,
    /// Sent once per session after `*CLS` (remote lock, reply format), each checked.
    pub session: &'static [&'static str],
    pub output_on: &'static str,
    pub output_off: &'static str,
    /// Answers `1`/`0` or `ON`/`OFF`.
    pub output_query: &'static str,
    pub measure: MeasureForm,
    /// Whether the current reads back as a magnitude (loads) instead of signed.
    pub current_is_magnitude: bool,
    /// Query answering a status word that is non-zero while the device is in alarm (uncertain
    /// bit meaning for every dialect: any set bit counts), or none.
    pub alarm_query: Option<&'static str>,
    /// Whether the ratings are asked from the device (`SYST:NOM:VOLT?` etc.).
    pub nominal_queries: Option<[&'static str; 3]>,
    /// Outputs cyclerd drives in this dialect: channel `DEVICE/1` up to this. Every dialect
    /// here addresses one (a two-channel B2902 is driven on its channel 1 only).
    pub outputs: u32,
}

/// The dialect table.
pub const DIALECTS: [DialectTable; 5] = [
    DialectTable {
        dialect: Dialect::EaPsb,
        name: "ea-psb",
        role: Role::Bidirectional,
        session: &["SYST:LOCK ON"],
        output_on: "OUTP ON",
        output_off: "OUTP OFF",
        output_query: "OUTP?",
        measure: MeasureForm::Array("MEAS:ARR?"),
        current_is_magnitude: false,
        // Uncertain: EA reports protection alarms in the questionable status register.
        alarm_query: Some("STAT:QUES:COND?"),
        nominal_queries: Some(["SYST:NOM:VOLT?", "SYST:NOM:CURR?", "SYST:NOM:POW?"]),
        outputs: 1,
    },
    DialectTable {
        dialect: Dialect::Keithley24xx,
        name: "keithley-24xx",
        role: Role::Bidirectional,
        session: &[],
        output_on: ":OUTP ON",
        output_off: ":OUTP OFF",
        output_query: ":OUTP?",
        measure: MeasureForm::Separate {
            voltage: ":MEAS:VOLT?",
            current: ":MEAS:CURR?",
        },
        current_is_magnitude: false,
        alarm_query: None,
        nominal_queries: None,
        outputs: 1,
    },
    DialectTable {
        dialect: Dialect::KeysightB2900,
        name: "keysight-b2900",
        role: Role::Bidirectional,
        session: &[":FORM:ELEM:SENS VOLT,CURR"],
        output_on: ":OUTP ON",
        output_off: ":OUTP OFF",
        output_query: ":OUTP?",
        measure: MeasureForm::Array(":MEAS? (@1)"),
        current_is_magnitude: false,
        alarm_query: None,
        nominal_queries: None,
        outputs: 1,
    },
    DialectTable {
        dialect: Dialect::ItechIt6000,
        name: "itech-it6000",
        role: Role::Bidirectional,
        // CV priority: the voltage setpoint with source and sink current limits, like EA.
        session: &["SYST:REM", "SOUR:FUNC VOLT"],
        output_on: "OUTP ON",
        output_off: "OUTP OFF",
        output_query: "OUTP?",
        measure: MeasureForm::Separate {
            voltage: "MEAS:VOLT?",
            current: "MEAS:CURR?",
        },
        current_is_magnitude: false,
        alarm_query: None,
        nominal_queries: None,
        outputs: 1,
    },
    DialectTable {
        dialect: Dialect::Bk8600,
        name: "bk-8600",
        role: Role::SinkOnly,
        session: &["SYST:REM"],
        output_on: "INP ON",
        output_off: "INP OFF",
        output_query: "INP?",
        measure: MeasureForm::Separate {
            voltage: "MEAS:VOLT?",
            current: "MEAS:CURR?",
        },
        current_is_magnitude: true,
        alarm_query: None,
        nominal_queries: None,
        outputs: 1,
    },
];

impl Dialect {
    /// The dialect a configuration names, if it is one.
    pub fn from_name(name: &str) -> Option<Dialect> {
        DIALECTS.iter().find(|t| t.name == name).map(|t| t.dialect)
    }

    /// Every name [`Dialect::from_name`] knows, in table order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        DIALECTS.iter().map(|t| t.name)
    }

    pub fn table(self) -> &'static DialectTable {
        DIALECTS
            .iter()
            .find(|t| t.dialect == self)
            .unwrap_or(&DIALECTS[0])
    }

    /// The most outputs any dialect drives: what a channel of a device whose dialect comes
    /// from `*IDN?` at connect may use.
    pub fn most_outputs() -> u32 {
        DIALECTS.iter().map(|t| t.outputs).max().unwrap_or(1)
    }

    /// Whether cyclerd can drive this dialect yet (all table rows can; kept so a recognised
    /// but undriven dialect is refused with a clear error rather than driven wrongly).
    pub fn implemented(self) -> bool {
        true
    }
}

/// A device's ratings: setpoints above them are out of range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratings {
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
}

/// The ratings of models whose ratings are not asked from the device, by the model field of
/// `*IDN?` (substring, checked in order).
pub const MODEL_RATINGS: [(&str, Ratings); 7] = [
    (
        "2450",
        Ratings {
            voltage_v: 200.0,
            current_a: 1.05,
            power_w: 22.0,
        },
    ),
    (
        "2460",
        Ratings {
            voltage_v: 100.0,
            current_a: 7.35,
            power_w: 100.0,
        },
    ),
    (
        "2461",
        Ratings {
            voltage_v: 100.0,
            current_a: 7.35,
            power_w: 100.0,
        },
    ),
    (
        "B290",
        Ratings {
            voltage_v: 210.0,
            current_a: 3.03,
            power_w: 31.8,
        },
    ),
    (
        "8601",
        Ratings {
            voltage_v: 120.0,
            current_a: 60.0,
            power_w: 250.0,
        },
    ),
    (
        "8602",
        Ratings {
            voltage_v: 500.0,
            current_a: 15.0,
            power_w: 200.0,
        },
    ),
    (
        "8600",
        Ratings {
            voltage_v: 150.0,
            current_a: 30.0,
            power_w: 150.0,
        },
    ),
];

/// Ratings from the model table, or from an ITECH designation (`IT6012C-80-300`: 12 kW,
/// 80 V, 300 A).
pub fn ratings_for_model(model: &str) -> Option<Ratings> {
    MODEL_RATINGS
        .iter()
        .find(|(m, _)| model.contains(m))
        .map(|&(_, r)| r)
        .or_else(|| itech_ratings(model))
}

fn itech_ratings(model: &str) -> Option<Ratings> {
    let mut parts = model.trim().split('-');
    let family = parts.next()?.strip_prefix("IT60")?;
    let kw: f64 = family
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .ok()?;
    let volts: f64 = parts.next()?.parse().ok()?;
    let amps: f64 = parts.next()?.parse().ok()?;
    (kw > 0.0 && volts > 0.0 && amps > 0.0).then_some(Ratings {
        voltage_v: volts,
        current_a: amps,
        power_w: kw * 1000.0,
    })
}

/// The four fields of an `*IDN?` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
}

/// Splits an `*IDN?` reply; missing fields are empty. Tolerates spaces around commas and
/// commas inside the firmware field.
pub fn parse_idn(reply: &str) -> Identity {
    let mut parts = reply.trim().splitn(4, ',').map(|s| s.trim().to_string());
    Identity {
        manufacturer: parts.next().unwrap_or_default(),
        model: parts.next().unwrap_or_default(),
        serial: parts.next().unwrap_or_default(),
        firmware: parts.next().unwrap_or_default(),
    }
}

/// The dialect an identity belongs to, if cyclerd knows it.
pub fn dialect_for(id: &Identity) -> Option<Dialect> {
    let maker = id.manufacturer.to_ascii_uppercase();
    let model = id.model.to_ascii_uppercase();
    if maker.contains("ELEKTRO-AUTOMATIK") || maker.starts_with("EA ") || maker == "EA" {
        return (model.starts_with("PS")).then_some(Dialect::EaPsb);
    }
    if maker.contains("KEITHLEY") {
        return ["2450", "2460", "2461"]
            .iter()
            .any(|m| model.contains(m))
            .then_some(Dialect::Keithley24xx);
    }
    if maker.contains("KEYSIGHT") || maker.contains("AGILENT") {
        return model.starts_with("B29").then_some(Dialect::KeysightB2900);
    }
    if maker.contains("ITECH") {
        return model.starts_with("IT6").then_some(Dialect::ItechIt6000);
    }
    if maker.contains("B&K") || maker.starts_with("BK ") {
        return model.starts_with("86").then_some(Dialect::Bk8600);
    }
    None
}

/// One entry of the error queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpiError {
    pub code: i32,
    pub message: String,
}

impl ScpiError {
    pub fn is_error(&self) -> bool {
        self.code != 0
    }
}

impl std::fmt::Display for ScpiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},\"{}\"", self.code, self.message)
    }
}

/// Parses a `SYST:ERR?` reply: `0,"No error"`, `+0,"No error"`, `-222,"Data out of range"`,
/// Keithley's `-113,"Undefined header;1;2014/05/22 13:37:07.523"` (the message is cut at `;`).
/// `None` when there is no leading integer.
pub fn parse_error(reply: &str) -> Option<ScpiError> {
    let reply = reply.trim();
    let (code, rest) = match reply.split_once(',') {
        Some((c, r)) => (c, r),
        None => (reply, ""),
    };
    let code: i32 = code.trim().trim_start_matches('+').parse().ok()?;
    let message = rest.trim().trim_matches('"');
    let message = message.split(';').next().unwrap_or("").trim().to_string();
    Some(ScpiError { code, message })
}

/// A number with an optional unit suffix and SCPI exponent: `48.01 V`, `+4.200000E+00`,
/// `2.00A`, `-1.5e-3`. `None` for anything else, including NaN and infinity (SCPI's 9.9E37
/// "not a number" is rejected too).
pub fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E')))
        .map_or(s.len(), |(i, _)| i);
    let (number, unit) = s.split_at(end);
    // "1.0E" followed by a unit is not a number; a trailing 'E' belongs to neither.
    let unit = unit.trim();
    if !unit.is_empty() && !unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let v: f64 = number.parse().ok()?;
    (v.is_finite() && v.abs() < 9.9e37).then_some(v)
}

/// The first `n` comma-separated numbers of a reply (`48.01 V, 2.00 A, 96.0 W`).
pub fn parse_numbers(reply: &str, n: usize) -> Option<Vec<f64>> {
    let values: Vec<f64> = reply
        .split(',')
        .take(n)
        .map(parse_number)
        .collect::<Option<_>>()?;
    (values.len() == n).then_some(values)
}

/// `1`/`0`/`ON`/`OFF` (any case, with whitespace).
pub fn parse_bool(reply: &str) -> Option<bool> {
    match reply.trim().to_ascii_uppercase().as_str() {
        "1" | "ON" | "+1" => Some(true),
        "0" | "OFF" | "+0" => Some(false),
        _ => None,
    }
}

/// A setpoint as it goes on the wire: plain decimal, at most six decimals, no exponent.
pub fn num(x: f64) -> String {
    let x = if x.is_finite() { x } else { 0.0 };
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" || s.is_empty() {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Normalises a command header the way an instrument matches it: upper case, no leading
/// colon, long keywords shortened (`SOURce` -> `SOUR`, `VOLTage` -> `VOLT`), optional nodes
/// (`LEVel`, `IMMediate`, `AMPLitude`, `POSitive`, `NEXT`) dropped. Used by the simulator.
pub fn normalize_header(header: &str) -> String {
    header
        .trim()
        .trim_start_matches(':')
        .split(':')
        .map(|kw| {
            let (kw, query) = match kw.strip_suffix('?') {
                Some(k) => (k, "?"),
                None => (kw, ""),
            };
            (short_form(&kw.to_ascii_uppercase()), query)
        })
        .filter(|(kw, q)| !(q.is_empty() && matches!(kw.as_str(), "LEV" | "IMM" | "AMPL" | "POS")))
        .map(|(kw, q)| format!("{kw}{q}"))
        .collect::<Vec<_>>()
        .join(":")
        .replace(":NEXT?", "?")
}

/// SCPI's short form of a keyword: the first four letters, or three when the fourth is a
/// vowel. Keywords starting with `*` and short keywords are kept.
fn short_form(kw: &str) -> String {
    if kw.starts_with('*') || kw.chars().count() <= 4 {
        return kw.to_string();
    }
    let chars: Vec<char> = kw.chars().collect();
    if matches!(chars[3], 'A' | 'E' | 'I' | 'O' | 'U') {
        chars[..3].iter().collect()
    } else {
        chars[..4].iter().collect()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;

//! SCPI facts: the dialect table, `*IDN?` recognition, what each command becomes on the wire
//! and reply parsing. No I/O.
//!
//! Every model's command set is one [`DialectTable`] row, so a firmware that spells something
//! differently changes one table entry. Facts marked "uncertain" come from third-party drivers
//! or are not stated in `shared/devices/scpi.md`; parsing is tolerant around them.

use crate::stage::Setpoints;
use cyclerd_protocols::Command;

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

/// The setpoint queries a dialect answers, in [`Setpoints`] order (voltage, current, power,
/// sink current, sink power), asked with the output query in one line every poll so a change
/// made by another client is seen; empty where the dialect's are not read back (the SMUs and
/// loads keep one level per source function, which the output query already covers).
pub fn setpoint_queries(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::EaPsb => &["VOLT?", "CURR?", "POW?", "SINK:CURR?", "SINK:POW?"],
        _ => &[],
    }
}

/// How finely the read-back answers: EA gives volts and amps with two decimals, watts with one.
pub const READBACK_RESOLUTION: Setpoints = Setpoints {
    voltage_v: Some(0.01),
    current_a: Some(0.01),
    power_w: Some(0.1),
    sink_current_a: Some(0.01),
    sink_power_w: Some(0.1),
};

/// The setpoints the lines of a [`Program`] leave on the device, as [`setpoint_queries`]
/// reports them; a field no line sets is `None`.
pub fn written_setpoints(lines: &[String]) -> Setpoints {
    let mut s = Setpoints::default();
    for line in lines {
        let Some((header, value)) = line.split_once(' ') else {
            continue;
        };
        let value = parse_number(value);
        match header {
            "VOLT" => s.voltage_v = value,
            "CURR" => s.current_a = value,
            "POW" => s.power_w = value,
            "SINK:CURR" => s.sink_current_a = value,
            "SINK:POW" => s.sink_power_w = value,
            _ => {}
        }
    }
    s
}

/// The setpoints in the replies to [`setpoint_queries`]; `None` when one does not parse.
pub fn read_setpoints(replies: &[&str]) -> Option<Setpoints> {
    let v: Vec<f64> = replies
        .iter()
        .map(|r| parse_number(r))
        .collect::<Option<_>>()?;
    match v[..] {
        [voltage, current, power, sink_current, sink_power] => Some(Setpoints {
            voltage_v: Some(voltage),
            current_a: Some(current),
            power_w: Some(power),
            sink_current_a: Some(sink_current),
            sink_power_w: Some(sink_power),
        }),
        _ => None,
    }
}

/// What [`program`] asks of the device for one command.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// Setpoint commands, sent (and checked) before the output is switched on; when it goes
    /// off, after it (the setpoints a rest zeroes).
    pub setpoints: Vec<String>,
    /// Whether the output goes on afterwards (else off, before anything else).
    pub output: bool,
    /// Whether the current can only flow out of the cell under this program (used to give a
    /// magnitude reading its sign when a device reports magnitudes).
    pub sinking: bool,
}

/// Why a command cannot be expressed in a dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// The setpoint commands for `command` in `dialect` with the device's `ratings`.
pub fn program(
    dialect: Dialect,
    ratings: Ratings,
    command: &Command,
) -> Result<Program, Unsupported> {
    let off = Program {
        setpoints: Vec::new(),
        output: false,
        sinking: false,
    };
    let on = |setpoints: Vec<String>, sinking: bool| Program {
        setpoints,
        output: true,
        sinking,
    };
    let unsupported = |what: &str| {
        Err(Unsupported(format!(
            "{what} is not available in the {dialect:?} dialect"
        )))
    };
    if !command.output_on() {
        // A rest leaves nothing loaded that a foreign "output on" could drive into the cell:
        // every level the dialect has goes to zero (limits an instrument cannot set to zero,
        // like an SMU's compliance, stay; with the levels at zero they drive nothing).
        let zero = |headers: &[&str]| headers.iter().map(|h| format!("{h} 0")).collect();
        let setpoints = match dialect {
            Dialect::EaPsb => zero(&["CURR", "POW", "SINK:CURR", "SINK:POW", "VOLT"]),
            Dialect::Keithley24xx | Dialect::KeysightB2900 => zero(&[":SOUR:CURR", ":SOUR:VOLT"]),
            Dialect::ItechIt6000 => {
                zero(&["CURR:LIM", "CURR:LIM:NEG", "POW:LIM", "POW:LIM:NEG", "VOLT"])
            }
            Dialect::Bk8600 => zero(&["CURR", "POW"]),
        };
        return Ok(Program { setpoints, ..off });
    }
    let r = ratings;
    match dialect {
        Dialect::EaPsb => Ok(match *command {
            Command::Current {
                amps, voltage_max, ..
            } if amps >= 0.0 => on(
                ea(&[
                    ("SINK:CURR", 0.0),
                    ("SINK:POW", 0.0),
                    ("VOLT", voltage_max),
                    ("CURR", amps),
                    ("POW", r.power_w),
                ]),
                false,
            ),
            Command::Current {
                amps, voltage_min, ..
            } => on(
                ea(&[
                    ("CURR", 0.0),
                    ("POW", 0.0),
                    ("VOLT", voltage_min),
                    ("SINK:CURR", -amps),
                    ("SINK:POW", r.power_w),
                ]),
                true,
            ),
            Command::Voltage { volts, current_max } => on(
                ea(&[
                    ("VOLT", volts),
                    ("CURR", current_max),
                    ("POW", r.power_w),
                    ("SINK:CURR", current_max),
                    ("SINK:POW", r.power_w),
                ]),
                false,
            ),
            Command::Power {
                watts, voltage_max, ..
            } if watts >= 0.0 => on(
                ea(&[
                    ("SINK:CURR", 0.0),
                    ("SINK:POW", 0.0),
                    ("VOLT", voltage_max),
                    ("CURR", r.current_a),
                    ("POW", watts),
                ]),
                false,
            ),
            Command::Power {
                watts, voltage_min, ..
            } => on(
                ea(&[
                    ("CURR", 0.0),
                    ("POW", 0.0),
                    ("VOLT", voltage_min),
                    ("SINK:CURR", r.current_a),
                    ("SINK:POW", -watts),
                ]),
                true,
            ),
            _ => off,
        }),
        Dialect::Keithley24xx | Dialect::KeysightB2900 => {
            let keysight = dialect == Dialect::KeysightB2900;
            let func = if keysight {
                ":SOUR:FUNC:MODE"
            } else {
                ":SOUR:FUNC"
            };
            // Compliance commands differ: Keithley puts them under the source, Keysight under
            // the sense subsystem.
            let vlim = if keysight {
                ":SENS:VOLT:PROT"
            } else {
                ":SOUR:CURR:VLIM"
            };
            let ilim = if keysight {
                ":SENS:CURR:PROT"
            } else {
                ":SOUR:VOLT:ILIM"
            };
            let current_mode = |amps: f64, limit: f64| {
                vec![
                    format!("{func} CURR"),
                    format!("{vlim} {}", num(limit)),
                    format!(":SOUR:CURR {}", num(amps)),
                ]
            };
            let voltage_mode = |volts: f64, limit: f64| {
                vec![
                    format!("{func} VOLT"),
                    format!("{ilim} {}", num(limit)),
                    format!(":SOUR:VOLT {}", num(volts)),
                ]
            };
            match *command {
                // Charge: a current source whose voltage compliance is the CC/CV crossover.
                Command::Current {
                    amps, voltage_max, ..
                } if amps >= 0.0 => Ok(on(current_mode(amps, voltage_max), false)),
                // Discharge: the compliance voltage of an SMU is a magnitude and cannot stop a
                // discharge at the lower cutoff, so a voltage source at the cutoff with the
                // current as its limit gives the same CC phase and then holds the cutoff.
                Command::Current {
                    amps, voltage_min, ..
                } => Ok(on(voltage_mode(voltage_min, -amps), true)),
                Command::Voltage { volts, current_max } => {
                    Ok(on(voltage_mode(volts, current_max), false))
                }
                Command::Power { .. } => unsupported("constant power"),
                _ => Ok(off),
            }
        }
        Dialect::Bk8600 => match *command {
            Command::Current { amps, .. } if amps < 0.0 => Ok(on(
                vec!["FUNC CURR".into(), format!("CURR {}", num(-amps))],
                true,
            )),
            Command::Power { watts, .. } if watts < 0.0 => Ok(on(
                vec!["FUNC POW".into(), format!("POW {}", num(-watts))],
                true,
            )),
            Command::Current { .. } | Command::Power { .. } => {
                unsupported("charging (a load only sinks)")
            }
            Command::Voltage { .. } => unsupported("constant voltage with a current limit"),
            _ => Ok(off),
        },
        Dialect::ItechIt6000 => {
            // Sink limits are written as negative values (uncertain; the simulator accepts
            // either sign).
            let limits = |volts: f64, source: f64, sink: f64, power: f64, sink_power: f64| {
                ea(&[
                    ("CURR:LIM", source),
                    ("CURR:LIM:NEG", -sink),
                    ("POW:LIM", power),
                    ("POW:LIM:NEG", -sink_power),
                    ("VOLT", volts),
                ])
            };
            let (p, i) = (r.power_w, r.current_a);
            Ok(match *command {
                Command::Current {
                    amps, voltage_max, ..
                } if amps >= 0.0 => on(limits(voltage_max, amps, 0.0, p, 0.0), false),
                Command::Current {
                    amps, voltage_min, ..
                } => on(limits(voltage_min, 0.0, -amps, 0.0, p), true),
                Command::Voltage { volts, current_max } => {
                    on(limits(volts, current_max, current_max, p, p), false)
                }
                Command::Power {
                    watts, voltage_max, ..
                } if watts >= 0.0 => on(limits(voltage_max, i, 0.0, watts, 0.0), false),
                Command::Power {
                    watts, voltage_min, ..
                } => on(limits(voltage_min, 0.0, i, 0.0, -watts), true),
                _ => off,
            })
        }
    }
}

fn ea(pairs: &[(&str, f64)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(cmd, v)| format!("{cmd} {}", num(*v)))
        .collect()
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
mod tests {
    use super::*;

    const EA: Ratings = Ratings {
        voltage_v: 60.0,
        current_a: 60.0,
        power_w: 1500.0,
    };

    #[test]
    fn identities_select_their_dialects() {
        let cases = [
            (
                "EA Elektro-Automatik GmbH, PSB 10060-60, 2100330001, V2.10",
                Some(Dialect::EaPsb),
            ),
            (
                "KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b",
                Some(Dialect::Keithley24xx),
            ),
            (
                "Keysight Technologies,B2901A,MY51141234,5.0.1982.7300",
                Some(Dialect::KeysightB2900),
            ),
            (
                "ITECH Ltd., IT6012C-80-300, 8006000117, 1.09-1.08",
                Some(Dialect::ItechIt6000),
            ),
            (
                "B&K Precision, 8600, 800600011797, 1.37-1.42",
                Some(Dialect::Bk8600),
            ),
            ("KEITHLEY INSTRUMENTS INC.,MODEL 2000,1,A", None),
            ("", None),
        ];
        for (idn, dialect) in cases {
            assert_eq!(dialect_for(&parse_idn(idn)), dialect, "{idn}");
        }
    }

    #[test]
    fn numbers_are_read_with_or_without_units() {
        assert_eq!(parse_number("48.01 V"), Some(48.01));
        assert_eq!(parse_number("+4.200000E+00"), Some(4.2));
        assert_eq!(parse_number("2.00A"), Some(2.0));
        assert_eq!(parse_number(" -1.5e-3 "), Some(-1.5e-3));
        assert_eq!(parse_number("9.91E37"), None);
        assert_eq!(parse_number("V"), None);
        assert_eq!(parse_number("1.0 V!"), None);
        assert_eq!(
            parse_numbers("48.01 V, 2.00 A, 96.0 W", 3),
            Some(vec![48.01, 2.0, 96.0])
        );
        assert_eq!(parse_numbers("48.01 V, 2.00 A", 3), None);
    }

    #[test]
    fn error_queue_replies_of_both_styles_parse() {
        assert_eq!(
            parse_error("0,\"No error\""),
            Some(ScpiError {
                code: 0,
                message: "No error".into()
            })
        );
        assert!(!parse_error("+0,\"No error\"").unwrap().is_error());
        let e = parse_error("-222,\"Data out of range\"").unwrap();
        assert_eq!((e.code, e.message.as_str()), (-222, "Data out of range"));
        let k = parse_error("-113,\"Undefined header;1;2014/05/22 13:37:07.523\"").unwrap();
        assert_eq!(k.message, "Undefined header");
        assert_eq!(parse_error("garbage"), None);
    }

    #[test]
    fn setpoints_are_plain_decimals() {
        assert_eq!(num(4.2), "4.2");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(1e-7), "0");
        assert_eq!(num(f64::NAN), "0");
    }

    #[test]
    fn headers_normalise_to_short_forms() {
        assert_eq!(normalize_header(":SOURce:CURRent:LEVel"), "SOUR:CURR");
        assert_eq!(normalize_header("syst:err:next?"), "SYST:ERR?");
        assert_eq!(normalize_header("MEASure:ARRay?"), "MEAS:ARR?");
        assert_eq!(normalize_header("*IDN?"), "*IDN?");
        assert_eq!(normalize_header("SYSTem:LOCK"), "SYST:LOCK");
        assert_eq!(
            normalize_header("CURRent:LIMit:POSitive"),
            normalize_header("CURR:LIM")
        );
        assert_eq!(normalize_header("curr:limit:negative"), "CURR:LIM:NEG");
    }

    #[test]
    fn itech_ratings_come_from_the_designation() {
        assert_eq!(
            ratings_for_model("IT6012C-80-300"),
            Some(Ratings {
                voltage_v: 80.0,
                current_a: 300.0,
                power_w: 12000.0
            })
        );
        assert_eq!(ratings_for_model("IT60C-x-1"), None);
    }

    #[test]
    fn an_ea_charge_sets_the_crossover_voltage_and_no_sink() {
        let p = program(
            Dialect::EaPsb,
            EA,
            &Command::Current {
                amps: 2.5,
                voltage_max: 4.2,
                voltage_min: 2.5,
            },
        )
        .unwrap();
        assert!(p.output && !p.sinking);
        assert_eq!(
            p.setpoints,
            [
                "SINK:CURR 0",
                "SINK:POW 0",
                "VOLT 4.2",
                "CURR 2.5",
                "POW 1500"
            ]
        );
    }

    #[test]
    fn an_smu_discharges_as_a_voltage_source_at_the_cutoff() {
        let p = program(
            Dialect::Keithley24xx,
            EA,
            &Command::Current {
                amps: -1.0,
                voltage_max: 4.2,
                voltage_min: 3.0,
            },
        )
        .unwrap();
        assert_eq!(
            p.setpoints,
            [":SOUR:FUNC VOLT", ":SOUR:VOLT:ILIM 1", ":SOUR:VOLT 3"]
        );
    }

    #[test]
    fn a_load_refuses_to_charge_and_power_on_an_smu_is_unsupported() {
        let charge = Command::Current {
            amps: 1.0,
            voltage_max: 4.2,
            voltage_min: 3.0,
        };
        assert!(program(Dialect::Bk8600, EA, &charge).is_err());
        let power = Command::Power {
            watts: 1.0,
            voltage_max: 4.2,
            voltage_min: 3.0,
        };
        assert!(program(Dialect::Keithley24xx, EA, &power).is_err());
        assert!(!program(Dialect::Bk8600, EA, &Command::Off).unwrap().output);
    }

    #[test]
    fn an_ea_program_reads_back_as_the_setpoints_it_wrote() {
        let p = program(
            Dialect::EaPsb,
            EA,
            &Command::Current {
                amps: 2.5,
                voltage_max: 4.2,
                voltage_min: 2.5,
            },
        )
        .unwrap();
        let written = written_setpoints(&p.setpoints);
        let replies = ["4.20 V", "2.50 A", "1500.0 W", "0.00 A", "0.0 W"];
        assert_eq!(read_setpoints(&replies), Some(written));
        assert_eq!(read_setpoints(&replies[..4]), None);
        assert_eq!(read_setpoints(&["4.20 V", "x", "1", "2", "3"]), None);
        assert!(setpoint_queries(Dialect::Keithley24xx).is_empty());
    }

    #[test]
    fn at_rest_every_dialect_zeroes_every_level_its_programs_set() {
        let (v, i) = (4.2, 2.0);
        let commands = [
            Command::Current {
                amps: i,
                voltage_max: v,
                voltage_min: 2.5,
            },
            Command::Current {
                amps: -i,
                voltage_max: v,
                voltage_min: 2.5,
            },
            Command::Voltage {
                volts: v,
                current_max: i,
            },
            Command::Power {
                watts: 5.0,
                voltage_max: v,
                voltage_min: 2.5,
            },
            Command::Power {
                watts: -5.0,
                voltage_max: v,
                voltage_min: 2.5,
            },
        ];
        let header = |line: &String| line.split(' ').next().unwrap_or_default().to_string();
        for dialect in [
            Dialect::EaPsb,
            Dialect::Keithley24xx,
            Dialect::KeysightB2900,
            Dialect::ItechIt6000,
            Dialect::Bk8600,
        ] {
            let rest = program(dialect, EA, &Command::Off).unwrap();
            assert!(!rest.output);
            assert!(rest.setpoints.iter().all(|l| l.ends_with(" 0")), "{rest:?}");
            let zeroed: Vec<String> = rest.setpoints.iter().map(header).collect();
            // Every level a program drives; the source function and an SMU's compliance (which
            // cannot be zero) are not levels.
            for command in &commands {
                let Ok(p) = program(dialect, EA, command) else {
                    continue;
                };
                for level in p.setpoints.iter().map(header).filter(|h| {
                    !h.contains("FUNC")
                        && !h.contains("LIM:")
                        && !h.ends_with("PROT")
                        && !h.ends_with("VLIM")
                        && !h.ends_with("ILIM")
                }) {
                    assert!(
                        zeroed.contains(&level),
                        "{dialect:?} rest leaves {level} set"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsing_arbitrary_replies_never_panics(s in "\\PC{0,80}") {
            let _ = parse_idn(&s);
            let _ = dialect_for(&parse_idn(&s));
            let _ = parse_error(&s);
            if let Some(v) = parse_number(&s) {
                prop_assert!(v.is_finite());
            }
            let _ = parse_numbers(&s, 3);
            let _ = parse_bool(&s);
            let _ = normalize_header(&s);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse_error(&s);
            let _ = parse_numbers(&s, 2);
            let _ = normalize_header(&s);
        }

        #[test]
        fn formatted_setpoints_parse_back(x in -1000.0f64..1000.0) {
            let v = parse_number(&num(x)).unwrap();
            prop_assert!((v - x).abs() <= 1e-6);
        }
    }
}

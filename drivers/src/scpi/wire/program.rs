//! What a command becomes on a SCPI device: the setpoint lines of each dialect ([`program`]),
//! and the setpoints a dialect reads back, to see a change another client made.

use super::{Dialect, Ratings, num, parse_number};
use crate::stage::Setpoints;
use cyclerd_protocols::Command;

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

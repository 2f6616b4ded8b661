//! The texts inside values, parsed without the YAML around them: termination conditions,
//! loop conditions, CSV profiles, `${name}` substitution.

use crate::plan::{Condition, LoopCondition};
use crate::pybamm::Params;
use crate::units::{self, Unit};

/// Replaces every `${name}` and `{name}` by the parameter's text.
pub(super) fn substitute(raw: &str, params: &Params) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(open) = rest.find('{') {
        let dollar = open > 0 && rest.as_bytes()[open - 1] == b'$';
        out.push_str(&rest[..if dollar { open - 1 } else { open }]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!(
                "unclosed parameter reference in \"{raw}\": expected \"}}\""
            ));
        };
        let name = after[..close].trim();
        match params.get(name) {
            Some(v) => out.push_str(v.trim()),
            None => {
                return Err(format!(
                    "unknown parameter \"{name}\"; define it under params"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn to_amps(q: units::Quantity, params: &Params) -> Result<f64, String> {
    match q.unit {
        Unit::Ampere => Ok(q.value),
        Unit::CRate => {
            let cap = params
                .get("capacity")
                .and_then(|c| units::parse_quantity(c).ok())
                .filter(|c| c.unit == Unit::AmpHour)
                .ok_or_else(|| {
                    "a C-rate needs params.capacity in Ah (e.g. \"capacity: 2.5 Ah\")".to_owned()
                })?;
            Ok(q.value * cap.value)
        }
        other => Err(format!(
            "expected a current (A or C-rate), found a value in {other}"
        )),
    }
}

/// `80%` -> 0.8, `0.8` -> 0.8.
pub(super) fn parse_fraction(text: &str) -> Option<f64> {
    let t = text.trim();
    let f = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => t.parse::<f64>().ok()?,
    };
    f.is_finite().then_some(f)
}

/// One termination of a structured step: `V >= 4.2 V`, `I <= C/20`, `t >= 2 h`, `T >= 10 h`,
/// `Ah >= 1 Ah`, `Wh >= 3 Wh`, `Temp >= 45 degC`, `dV/dt <= 1 mV/min`, or a bare PyBaMM value
/// (`4.2 V`: direction from the step's `sign`; `C/20`: |I| <=).
pub(super) fn parse_condition(text: &str, sign: f64, params: &Params) -> Result<Condition, String> {
    let text = substitute(text, params)?;
    let t = text.trim();
    const VARS: &[&str] = &["dV/dt", "Temp", "Ah", "Wh", "V", "I", "t", "T"];
    let var = VARS.iter().find(|v| {
        t.strip_prefix(**v)
            .is_some_and(|r| r.trim_start().starts_with(['<', '>']))
    });
    let Some(var) = var else {
        // Bare value, PyBaMM style.
        let q = units::parse_quantity(t).map_err(|e| {
            format!("expected a condition such as \"V >= 4.2 V\", \"I <= C/20\", \"t >= 1 h\", \"Ah >= 2 Ah\", \"Temp >= 45 degC\" or \"dV/dt <= 1 mV/min\": {}", e.message)
        })?;
        return match q.unit {
            Unit::Volt if sign > 0.0 => Ok(Condition::VoltageAtLeast(q.value)),
            Unit::Volt if sign < 0.0 => Ok(Condition::VoltageAtMost(q.value)),
            Unit::Volt => {
                Err("a bare voltage needs a direction here: write \"V >= x\" or \"V <= x\"".into())
            }
            _ => Ok(Condition::CurrentMagnitudeAtMost(to_amps(q, params)?.abs())),
        };
    };
    let r = t[var.len()..].trim_start();
    let (at_least, r) = if let Some(r) = r.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = r.strip_prefix("<=") {
        (false, r)
    } else if let Some(r) = r.strip_prefix('>') {
        (true, r)
    } else {
        (false, &r[1..])
    };
    let r = r.trim();
    let quantity = |unit: Unit, what: &str| -> Result<f64, String> {
        match units::parse_quantity(r) {
            Ok(q) if q.unit == unit => Ok(q.value),
            Ok(q) => Err(format!(
                "expected {what} after the operator, found \"{r}\" ({})",
                q.unit
            )),
            Err(e) => Err(format!("expected {what} after the operator: {}", e.message)),
        }
    };
    let only = |ok: bool, c: Condition| {
        if ok {
            Ok(c)
        } else {
            Err(format!(
                "\"{var}\" only takes {}",
                if at_least { "<=" } else { ">=" }
            ))
        }
    };
    match *var {
        "V" => {
            let v = quantity(Unit::Volt, "a voltage such as \"4.2 V\"")?;
            Ok(if at_least {
                Condition::VoltageAtLeast(v)
            } else {
                Condition::VoltageAtMost(v)
            })
        }
        "I" => {
            let q = units::parse_quantity(r)
                .map_err(|e| format!("expected a current after the operator: {}", e.message))?;
            only(
                !at_least,
                Condition::CurrentMagnitudeAtMost(to_amps(q, params)?.abs()),
            )
        }
        "t" | "T" => {
            let d = units::parse_duration(r)
                .map_err(|e| format!("expected a duration such as \"2 h\": {}", e.message))?;
            only(
                at_least,
                if *var == "t" {
                    Condition::StepTime(d)
                } else {
                    Condition::TestTime(d)
                },
            )
        }
        "Ah" => only(
            at_least,
            Condition::StepCapacity(quantity(Unit::AmpHour, "a capacity such as \"1 Ah\"")?),
        ),
        "Wh" => only(
            at_least,
            Condition::StepEnergy(quantity(Unit::WattHour, "an energy such as \"3 Wh\"")?),
        ),
        "Temp" => {
            let v = quantity(Unit::Celsius, "a temperature such as \"45 degC\"")?;
            Ok(if at_least {
                Condition::TemperatureAtLeast(v)
            } else {
                Condition::TemperatureAtMost(v)
            })
        }
        _ => {
            // dV/dt: a voltage per time unit, "1 mV/min", "0.1 mV/s".
            let (v, per) = r
                .split_once('/')
                .ok_or_else(|| format!("expected a rate such as \"1 mV/min\", found \"{r}\""))?;
            let volts = match units::parse_quantity(v) {
                Ok(q) if q.unit == Unit::Volt => q.value,
                _ => {
                    return Err(format!(
                        "expected a rate such as \"1 mV/min\", found \"{r}\""
                    ));
                }
            };
            let seconds = units::seconds_per(per.trim()).ok_or_else(|| {
                format!("expected a time unit (s, min, h) after \"/\" in \"{r}\"")
            })?;
            let rate = volts / seconds;
            Ok(if at_least {
                Condition::VoltageRateMagnitudeAtLeast(rate)
            } else {
                Condition::VoltageRateMagnitudeAtMost(rate)
            })
        }
    }
}

/// One exit condition of a loop: `discharge_capacity < 80% first`,
/// `discharge_capacity < 2 Ah`, `cycle >= 100`.
pub(super) fn parse_loop_condition(text: &str) -> Result<LoopCondition, String> {
    let t = text.trim();
    let expected = "expected a loop exit such as \"discharge_capacity < 80% first\", \"discharge_capacity < 2 Ah\" or \"cycle >= 100\"";
    if let Some(r) = t.strip_prefix("discharge_capacity") {
        let r = r.trim_start();
        let r = r
            .strip_prefix("<=")
            .or_else(|| r.strip_prefix('<'))
            .ok_or_else(|| format!("{expected}; found \"{t}\""))?
            .trim();
        if let Some(f) = r.strip_suffix("first") {
            return match parse_fraction(f) {
                Some(f) if f > 0.0 => Ok(LoopCondition::DischargeCapacityBelowFractionOfFirst(f)),
                _ => Err(format!(
                    "{expected}; \"{}\" is not a fraction such as 80%",
                    f.trim()
                )),
            };
        }
        return match units::parse_quantity(r) {
            Ok(q) if q.unit == Unit::AmpHour => Ok(LoopCondition::DischargeCapacityBelow(q.value)),
            _ => Err(format!("{expected}; found \"{t}\"")),
        };
    }
    if let Some(r) = t.strip_prefix("cycle") {
        let r = r.trim_start();
        let r = r
            .strip_prefix(">=")
            .ok_or_else(|| format!("{expected}; found \"{t}\""))?
            .trim();
        return match r.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(LoopCondition::CycleAtLeast(n)),
            _ => Err(format!("{expected}; \"{r}\" is not a cycle number")),
        };
    }
    Err(format!("{expected}; found \"{t}\""))
}

/// `time_s, value` rows; an optional header line; blank lines and `#` comments skipped;
/// comma, semicolon or tab separated. Times must start at 0 and increase.
pub(super) fn parse_profile_csv(text: &str, sign: f64) -> Result<Vec<(f64, f64)>, String> {
    let mut points: Vec<(f64, f64)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split([',', ';', '\t']).map(str::trim).collect();
        let nums: Option<Vec<f64>> = cols
            .iter()
            .take(2)
            .map(|c| c.parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect();
        match nums {
            Some(v) if v.len() == 2 => {
                if let Some((last, _)) = points.last()
                    && v[0] <= *last
                {
                    return Err(format!("line {}: time {} s does not increase", n + 1, v[0]));
                }
                if points.is_empty() && v[0] != 0.0 {
                    return Err(format!(
                        "line {}: the first time must be 0 s, found {}",
                        n + 1,
                        v[0]
                    ));
                }
                points.push((v[0], sign * v[1]));
            }
            // One header line before the data.
            _ if points.is_empty() && cols.len() >= 2 && cols[0].parse::<f64>().is_err() => {}
            _ => {
                return Err(format!(
                    "line {}: expected two numbers \"time_s,value\", found \"{line}\"",
                    n + 1
                ));
            }
        }
    }
    if points.is_empty() {
        return Err("no data rows (expected \"time_s,value\" lines)".into());
    }
    Ok(points)
}

/// `${name}` or `{name}` as the whole value -> `name`.
pub(super) fn reference_name(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t
        .strip_prefix("${")
        .or_else(|| t.strip_prefix('{'))?
        .strip_suffix('}')?;
    Some(inner.trim())
}

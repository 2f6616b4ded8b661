//! PyBaMM experiment step strings ("Charge at C/2 until 4.2 V", "Rest for 1 hour").
//!
//! ```text
//! step  := instr [" for " DUR] [" or"] [" until " TERM] [" at " TEMP] [" (" DUR " period)"] [" [" tags "]"]
//! instr := "Rest" | ("Charge" | "Discharge" | "Hold") " at " VAL | "Run " NAME " (" ("A"|"W"|"V") ")"
//! TERM  := ["<" | ">"] VAL
//! ```
//!
//! Legacy forms: `at 25oC` (a chamber temperature for the step), a trailing `[tag1,tag2]`,
//! and `Run US06 (A)` (a drive cycle; `NAME` is a parameter holding a CSV file name, or the
//! file name itself; PyBaMM's sign, positive = discharge, is flipped to ours).
//!
//! Values and durations may be parameter references (`${v_max}` or `{v_max}`). Errors carry
//! the 1-based character column in the step string and say what was expected there.

use std::collections::BTreeMap;

use crate::plan::{Condition, Control, Goto, ProfileKind, Termination};
use crate::units::{self, LexError, Quantity, Unit};

/// Protocol parameters by name, as their source text ("2.5 Ah"), parsed where they are used so
/// the same parameter can be a value in one place and a duration in another.
pub type Params = BTreeMap<String, String>;

/// A step string resolved to what the channel does and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStep {
    /// The control mode and setpoint (signed, SI).
    pub control: Control,
    /// Terminations in source order (`for` first, then `until`), all jumping to the next step.
    /// Empty only for a `Run` step, which ends with its profile.
    pub terminations: Vec<Termination>,
    /// Legacy `at 25oC`: the chamber temperature for the step, in degC.
    pub temperature_c: Option<f64>,
    /// Legacy trailing `[tag1,tag2]`.
    pub tags: Vec<String>,
    /// `(1 minute period)`: PyBaMM's sampling period in s, a recording rule.
    pub period_s: Option<f64>,
    /// `Run NAME (A)`: the drive cycle to load. `control` is then [`Control::Profile`].
    pub run: Option<RunProfile>,
    /// How the string wrote what `control` and `terminations` resolve, for targets that must
    /// say it the same way (PyBaMM: a C-rate is not the same step as its amps on a model of
    /// another capacity).
    pub written: Written,
}

/// What a step string said that its resolved form no longer shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Written {
    /// The setpoint was a C-rate (`1C`, `C/3`): its magnitude as written.
    pub c_rate: Option<f64>,
    /// The `until` current was a C-rate (`C/20`): its magnitude as written.
    pub until_c_rate: Option<f64>,
    /// The `until` carried an explicit `<` or `>`.
    pub until_operator: bool,
}

/// A drive-cycle reference from a `Run` step; the caller loads the file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunProfile {
    /// The CSV file name (the parameter's value when NAME is a parameter).
    pub file: String,
    /// What the values are: `(A)`, `(W)` or `(V)`.
    pub kind: ProfileKind,
    /// 1-based column of NAME in the step string, for errors about the file.
    pub column: usize,
}

/// Why a step string does not parse.
#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    /// 1-based character column in the step string.
    pub column: usize,
    /// What was expected there.
    pub message: String,
}

/// The verb that starts a step; it decides the sign of the setpoint and the default direction
/// of a voltage termination.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verb {
    Rest,
    Run,
    Charge,
    Discharge,
    Hold,
}

/// Parses one step string. C-rates are resolved from `params["capacity"]`.
pub fn parse_step(text: &str, params: &Params) -> Result<ParsedStep, StepError> {
    Parser {
        text,
        pos: 0,
        params,
        written: Written::default(),
    }
    .step()
}

struct Parser<'a> {
    text: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
    params: &'a Params,
    /// Filled in while parsing; returned in [`ParsedStep::written`].
    written: Written,
}

/// A value with the column it was written at, so later checks can point at it.
struct Located {
    q: Quantity,
    column: usize,
    /// How it was written, quoted back in messages.
    source: String,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn column_at(&self, byte: usize) -> usize {
        self.text[..byte].chars().count() + 1
    }

    fn err<T>(&self, byte: usize, message: impl Into<String>) -> Result<T, StepError> {
        Err(StepError {
            column: self.column_at(byte),
            message: message.into(),
        })
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    /// Reads the next word (letters only) after whitespace, without consuming it.
    fn peek_word(&mut self) -> &'a str {
        self.skip_ws();
        let r = self.rest();
        let end = r
            .char_indices()
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map_or(r.len(), |(i, _)| i);
        &r[..end]
    }

    fn expect_word(&mut self, word: &str) -> Result<(), StepError> {
        let found = self.peek_word();
        if found.eq_ignore_ascii_case(word) {
            self.pos += found.len();
            Ok(())
        } else {
            self.err(
                self.pos,
                format!("expected \"{word}\", found {}", units::found(self.rest())),
            )
        }
    }

    fn step(&mut self) -> Result<ParsedStep, StepError> {
        let word = self.peek_word();
        let verb = match word.to_ascii_lowercase().as_str() {
            "rest" => Verb::Rest,
            "charge" => Verb::Charge,
            "discharge" => Verb::Discharge,
            "hold" => Verb::Hold,
            "run" => Verb::Run,
            _ => {
                return self.err(
                    self.pos,
                    format!(
                        "expected \"Rest\", \"Charge\", \"Discharge\" or \"Hold\", found {}",
                        units::found(self.rest())
                    ),
                );
            }
        };
        self.pos += word.len();
        let mut run = None;
        let control = match verb {
            Verb::Rest => Control::Rest,
            Verb::Run => {
                let (profile, control) = self.run_instr()?;
                run = Some(profile);
                control
            }
            _ => {
                self.expect_word("at")?;
                self.skip_ws();
                let v = self.value()?;
                if v.q.unit == Unit::CRate {
                    self.written.c_rate = Some(v.q.value);
                }
                self.control(verb, &v)?
            }
        };

        let mut terminations = Vec::new();
        let mut temperature_c = None;
        let mut period_s = None;
        let mut tags = Vec::new();
        let mut seen_for = false;
        let mut seen_until = false;
        loop {
            self.skip_ws();
            if self.rest().is_empty() {
                break;
            }
            let at = self.pos;
            let word = self.peek_word().to_ascii_lowercase();
            match word.as_str() {
                "for" if !seen_for && !seen_until => {
                    self.pos += 3;
                    self.skip_ws();
                    let seconds = self.duration()?;
                    terminations.push(next(Condition::StepTime(seconds)));
                    seen_for = true;
                }
                // "or" only joins a duration to a termination: "for 1 h or until 4.1 V".
                "or" if seen_for && !seen_until => {
                    self.pos += 2;
                    if !self.peek_word().eq_ignore_ascii_case("until") {
                        return self.err(
                            self.pos,
                            format!(
                                "expected \"until\" after \"or\", found {}",
                                units::found(self.rest())
                            ),
                        );
                    }
                }
                "until" if !seen_until => {
                    self.pos += 5;
                    self.skip_ws();
                    terminations.push(next(self.termination(verb)?));
                    seen_until = true;
                }
                "at" if temperature_c.is_none() => {
                    self.pos += 2;
                    self.skip_ws();
                    let v = self.value()?;
                    if v.q.unit != Unit::Celsius {
                        return self.err(
                            at,
                            format!(
                                "expected a temperature after \"at\" (e.g. \"at 25oC\"), found \"{}\" ({})",
                                v.source, v.q.unit
                            ),
                        );
                    }
                    temperature_c = Some(v.q.value);
                }
                _ if self.rest().starts_with('(') && period_s.is_none() => {
                    period_s = Some(self.period()?);
                }
                _ if self.rest().starts_with('[') => {
                    tags = self.tags()?;
                    self.skip_ws();
                    if !self.rest().is_empty() {
                        return self.err(
                            self.pos,
                            format!(
                                "expected the end of the step after the tags, found {}",
                                units::found(self.rest())
                            ),
                        );
                    }
                }
                _ => {
                    let expected = match (seen_for, seen_until) {
                        (false, false) => "\"for\" or \"until\"",
                        (true, false) => "\"until\", \"or until\" or the end of the step",
                        _ => "the end of the step",
                    };
                    return self.err(
                        at,
                        format!("expected {expected}, found {}", units::found(self.rest())),
                    );
                }
            }
        }
        if terminations.is_empty() && run.is_none() {
            return self.err(
                self.pos,
                "the step never ends: add a duration (\"for 1 hour\") or a termination (\"until 4.2 V\")",
            );
        }
        Ok(ParsedStep {
            control,
            terminations,
            temperature_c,
            tags,
            period_s,
            run,
            written: self.written,
        })
    }

    /// `Run NAME (A)` after the word `Run`: the file and the kind of values.
    fn run_instr(&mut self) -> Result<(RunProfile, Control), StepError> {
        self.skip_ws();
        let start = self.pos;
        let r = self.rest();
        let len = r
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || *c == '(')
            .map_or(r.len(), |(i, _)| i);
        if len == 0 {
            return self.err(
                start,
                "expected a drive-cycle name or CSV file after \"Run\" (e.g. \"Run US06 (A)\")",
            );
        }
        let name = &r[..len];
        self.pos += len;
        let bare = name
            .strip_prefix("${")
            .or_else(|| name.strip_prefix('{'))
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(name);
        // Drive cycles are named in capitals in the wild ("US06") and params in lower case.
        let file = self
            .params
            .get(bare)
            .or_else(|| {
                self.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(bare))
                    .map(|(_, v)| v)
            })
            .map_or_else(|| bare.to_owned(), |v| v.trim().to_owned());
        self.skip_ws();
        let kind_at = self.pos;
        let r = self.rest();
        let kind = if r.starts_with("(A)") {
            ProfileKind::Current
        } else if r.starts_with("(W)") {
            ProfileKind::Power
        } else if r.starts_with("(V)") {
            ProfileKind::Voltage
        } else {
            return self.err(
                kind_at,
                format!(
                    "expected \"(A)\", \"(W)\" or \"(V)\" (what the drive cycle's values are) after \"{name}\", found {}",
                    units::found(r)
                ),
            );
        };
        self.pos += 3;
        let profile = RunProfile {
            file,
            kind,
            column: self.column_at(start),
        };
        Ok((profile, Control::Profile { kind }))
    }

    /// `[tag1, tag2]` at the current position.
    fn tags(&mut self) -> Result<Vec<String>, StepError> {
        let open = self.pos;
        let r = self.rest();
        let Some(close) = r.find(']') else {
            return self.err(open, "unclosed tag list: expected \"]\"");
        };
        let tags = r[1..close]
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        self.pos += close + 1;
        Ok(tags)
    }

    /// `(1 minute period)`: PyBaMM's sampling period in s (a recording rule).
    fn period(&mut self) -> Result<f64, StepError> {
        self.pos += 1;
        self.skip_ws();
        let seconds = self.duration()?;
        self.expect_word("period")?;
        self.skip_ws();
        if !self.rest().starts_with(')') {
            return self.err(
                self.pos,
                format!("expected \")\", found {}", units::found(self.rest())),
            );
        }
        self.pos += 1;
        Ok(seconds)
    }

    /// If a parameter reference starts here, consumes it and returns (name, its text).
    fn reference(&mut self) -> Result<Option<(String, &'a str)>, StepError> {
        let r = self.rest();
        let open = if r.starts_with("${") {
            2
        } else if r.starts_with('{') {
            1
        } else {
            return Ok(None);
        };
        let Some(close) = r.find('}') else {
            return self.err(self.pos, "unclosed parameter reference: expected \"}\"");
        };
        let name = r[open..close].trim();
        let Some(value) = self.params.get(name) else {
            return self.err(
                self.pos,
                format!("unknown parameter \"{name}\"; define it under params"),
            );
        };
        self.pos += close + 1;
        Ok(Some((name.to_owned(), value.as_str())))
    }

    /// A value (`1.5 A`, `C/2`, `${v_max}`) at the current position.
    fn value(&mut self) -> Result<Located, StepError> {
        let start = self.pos;
        let column = self.column_at(start);
        if let Some((name, text)) = self.reference()? {
            let q =
                units::parse_quantity(text).map_err(|e| self.param_error(start, &name, text, e))?;
            return Ok(Located {
                q,
                column,
                source: format!("{name} = {}", text.trim()),
            });
        }
        let (q, len) = units::lex_quantity(self.rest()).map_err(|e| StepError {
            column: self.column_at(start + e.offset),
            message: e.message,
        })?;
        self.pos += len;
        Ok(Located {
            q,
            column,
            source: self.text[start..self.pos].to_owned(),
        })
    }

    /// A duration (`30 minutes`, `${rest_time}`) at the current position, in seconds.
    fn duration(&mut self) -> Result<f64, StepError> {
        let start = self.pos;
        let seconds = if let Some((name, text)) = self.reference()? {
            units::parse_duration(text).map_err(|e| self.param_error(start, &name, text, e))?
        } else {
            let (s, len) = units::lex_duration(self.rest()).map_err(|e| StepError {
                column: self.column_at(start + e.offset),
                message: e.message,
            })?;
            self.pos += len;
            s
        };
        if seconds <= 0.0 {
            return self.err(start, "a duration must be longer than zero");
        }
        Ok(seconds)
    }

    fn param_error(&self, at: usize, name: &str, text: &str, e: LexError) -> StepError {
        StepError {
            column: self.column_at(at),
            message: format!("in parameter {name} (\"{}\"): {}", text.trim(), e.message),
        }
    }

    /// Turns a C-rate into amps with the nominal capacity, or reports that there is none.
    fn amps(&self, v: &Located) -> Result<f64, StepError> {
        match v.q.unit {
            Unit::Ampere => Ok(v.q.value),
            Unit::CRate => {
                let capacity = self.params.get("capacity").ok_or_else(|| StepError {
                    column: v.column,
                    message: format!(
                        "the C-rate \"{}\" needs the nominal capacity: add e.g. \"capacity: 2.5 Ah\" under params",
                        v.source
                    ),
                })?;
                match units::parse_quantity(capacity) {
                    Ok(Quantity {
                        value,
                        unit: Unit::AmpHour,
                    }) if (v.q.value * value).is_finite() => Ok(v.q.value * value),
                    _ => Err(StepError {
                        column: v.column,
                        message: format!(
                            "the C-rate \"{}\" needs params.capacity in Ah (e.g. \"2.5 Ah\"), found \"{}\"",
                            v.source,
                            capacity.trim()
                        ),
                    }),
                }
            }
            other => Err(StepError {
                column: v.column,
                message: format!(
                    "expected a current (A or C-rate), found \"{}\" ({other})",
                    v.source
                ),
            }),
        }
    }

    fn control(&self, verb: Verb, v: &Located) -> Result<Control, StepError> {
        let sign = if verb == Verb::Discharge { -1.0 } else { 1.0 };
        match (verb, v.q.unit) {
            (_, Unit::Volt) => Ok(Control::Voltage { volts: v.q.value }),
            (Verb::Hold, _) => Err(StepError {
                column: v.column,
                message: format!(
                    "Hold needs a voltage (e.g. \"Hold at 4.2 V\"), found \"{}\"",
                    v.source
                ),
            }),
            (_, Unit::Ampere | Unit::CRate) => Ok(Control::Current {
                amps: sign * self.amps(v)?,
            }),
            (_, Unit::Watt) => Ok(Control::Power {
                watts: sign * v.q.value,
            }),
            (Verb::Discharge, Unit::Ohm) if v.q.value > 0.0 => {
                Ok(Control::Resistance { ohms: v.q.value })
            }
            (_, Unit::Ohm) => Err(StepError {
                column: v.column,
                message: format!(
                    "a resistance step discharges through a resistance above zero: write \"Discharge at {}\"",
                    v.source
                ),
            }),
            (_, other) => Err(StepError {
                column: v.column,
                message: format!(
                    "expected a current (A, C), voltage (V) or power (W) to {} at, found \"{}\" ({other})",
                    if verb == Verb::Charge {
                        "charge"
                    } else {
                        "discharge"
                    },
                    v.source
                ),
            }),
        }
    }

    fn termination(&mut self, verb: Verb) -> Result<Condition, StepError> {
        let op_at = self.pos;
        let op = match self.rest().chars().next() {
            Some(c @ ('<' | '>')) => {
                self.pos += 1;
                // "<=" and ">=" mean the same as "<" and ">" for a sampled signal.
                if self.rest().starts_with('=') {
                    self.pos += 1;
                }
                self.skip_ws();
                self.written.until_operator = true;
                Some(c)
            }
            _ => None,
        };
        let v = self.value()?;
        if v.q.unit == Unit::CRate {
            self.written.until_c_rate = Some(v.q.value);
        }
        match v.q.unit {
            Unit::Volt => match (op, verb) {
                (Some('>'), _) | (None, Verb::Charge) => Ok(Condition::VoltageAtLeast(v.q.value)),
                (Some(_), _) | (None, Verb::Discharge) => Ok(Condition::VoltageAtMost(v.q.value)),
                (None, _) => self.err(
                    op_at,
                    format!(
                        "a voltage termination on a {} step needs a direction: write \"until > {s}\" or \"until < {s}\"",
                        match verb {
                            Verb::Rest => "Rest",
                            Verb::Run => "Run",
                            _ => "Hold",
                        },
                        s = v.source
                    ),
                ),
            },
            Unit::Ampere | Unit::CRate => {
                if op == Some('>') {
                    return self.err(
                        op_at,
                        "\"until > current\" is not supported; a current termination means |I| <= value",
                    );
                }
                Ok(Condition::CurrentMagnitudeAtMost(self.amps(&v)?.abs()))
            }
            other => Err(StepError {
                column: v.column,
                message: format!(
                    "expected a voltage (V) or current (A, C) to stop at, found \"{}\" ({other})",
                    v.source
                ),
            }),
        }
    }
}

fn next(condition: Condition) -> Termination {
    Termination {
        condition,
        goto: Goto::Next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cap() -> Params {
        params(&[
            ("capacity", "2.5 Ah"),
            ("v_max", "4.2 V"),
            ("rest", "10 min"),
        ])
    }

    fn conditions(s: &ParsedStep) -> Vec<Condition> {
        s.terminations.iter().map(|t| t.condition).collect()
    }

    #[test]
    fn c_rate_resolves_from_capacity_param() {
        let s = parse_step("Charge at C/2 until 4.2 V", &cap()).unwrap();
        assert_eq!(s.control, Control::Current { amps: 1.25 });
        let s = parse_step("Discharge at 1C until 3.0 V", &cap()).unwrap();
        assert_eq!(s.control, Control::Current { amps: -2.5 });
    }

    #[test]
    fn c_rate_without_capacity_is_an_error() {
        let e = parse_step("Charge at C/2 until 4.2 V", &Params::new()).unwrap_err();
        assert_eq!(e.column, 11);
        assert!(e.message.contains("capacity"), "{}", e.message);
    }

    #[test]
    fn voltage_termination_direction_follows_step() {
        let c = parse_step("Charge at 1 A until 4.2 V", &cap()).unwrap();
        assert_eq!(conditions(&c), [Condition::VoltageAtLeast(4.2)]);
        let d = parse_step("Discharge at 1 A until 3 V", &cap()).unwrap();
        assert_eq!(conditions(&d), [Condition::VoltageAtMost(3.0)]);
        let explicit = parse_step("Discharge at 1 A until > 3 V", &cap()).unwrap();
        assert_eq!(conditions(&explicit), [Condition::VoltageAtLeast(3.0)]);
        assert!(parse_step("Rest until 3.5 V", &cap()).is_err());
        let r = parse_step("Rest until < 3.5 V", &cap()).unwrap();
        assert_eq!(conditions(&r), [Condition::VoltageAtMost(3.5)]);
    }

    #[test]
    fn hold_until_current_is_a_magnitude_limit() {
        let s = parse_step("Hold at 4.2 V until C/20", &cap()).unwrap();
        assert_eq!(s.control, Control::Voltage { volts: 4.2 });
        assert_eq!(conditions(&s), [Condition::CurrentMagnitudeAtMost(0.125)]);
        let s = parse_step("Hold at 4.2V until 50mA", &cap()).unwrap();
        assert!(
            matches!(conditions(&s)[0], Condition::CurrentMagnitudeAtMost(x) if (x - 0.05).abs() < 1e-12)
        );
    }

    #[test]
    fn duration_or_termination_gives_two_terminations() {
        let s = parse_step("Charge at 1.5 A for 30 minutes or until 4.1 V", &cap()).unwrap();
        assert_eq!(s.control, Control::Current { amps: 1.5 });
        assert_eq!(
            conditions(&s),
            [Condition::StepTime(1800.0), Condition::VoltageAtLeast(4.1)]
        );
    }

    #[test]
    fn every_documented_form_parses() {
        for text in [
            "Charge at C/2 until 4.2 V",
            "Hold at 4.2 V until C/20",
            "Discharge at 1C until 3.0 V",
            "Rest for 1 hour",
            "Charge at 1.5 A for 30 minutes or until 4.1 V",
            "Discharge at 500mA until 2.5V",
            "Discharge at 5 W until 3 V",
            "Charge at 2 W for 10 s",
            "Rest for 10 minutes (1 minute period)",
            "rest for 5 sec",
            "Charge at 1 A for 2 hr",
            "Charge at 1 A for 90 s",
            "Charge at C/3 until ${v_max}",
            "Hold at {v_max} until C/50",
            "Rest for ${rest}",
        ] {
            parse_step(text, &cap()).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        }
    }

    #[test]
    fn power_steps_are_signed_by_direction() {
        let s = parse_step("Discharge at 5 W until 3 V", &cap()).unwrap();
        assert_eq!(s.control, Control::Power { watts: -5.0 });
    }

    #[test]
    fn error_names_step_and_column() {
        let e = parse_step("Charge at 1.5 for 1 hour", &cap()).unwrap_err();
        assert_eq!(e.column, 15);
        assert_eq!(e.message, "expected a unit (A, V, W, Ohm, C) after \"1.5\"");
    }

    #[test]
    fn step_without_duration_or_termination_is_an_error() {
        let e = parse_step("Charge at 1 A", &cap()).unwrap_err();
        assert!(e.message.contains("never ends"), "{}", e.message);
    }

    #[test]
    fn unknown_parameter_is_named() {
        let e = parse_step("Charge at 1 A until ${v_top}", &cap()).unwrap_err();
        assert_eq!(e.column, 21);
        assert!(e.message.contains("v_top"), "{}", e.message);
    }

    #[test]
    fn legacy_temperature_tags_and_period_parse() {
        let s = parse_step("Charge at 1 A until 4.1 V at 25oC", &cap()).unwrap();
        assert_eq!(s.temperature_c, Some(25.0));
        assert_eq!(conditions(&s), [Condition::VoltageAtLeast(4.1)]);
        let s = parse_step("Rest for 1 h [ocv, relax]", &cap()).unwrap();
        assert_eq!(s.tags, ["ocv", "relax"]);
        let s = parse_step("Discharge at C/2 for 2 h (1 minute period) [cap]", &cap()).unwrap();
        assert_eq!(s.period_s, Some(60.0));
        assert_eq!(s.tags, ["cap"]);
        let e = parse_step("Rest for 1 h at 4.2 V", &cap()).unwrap_err();
        assert!(
            e.message.contains("expected a temperature"),
            "{}",
            e.message
        );
        let e = parse_step("Rest for 1 h [a] for 2 h", &cap()).unwrap_err();
        assert!(e.message.contains("after the tags"), "{}", e.message);
    }

    #[test]
    fn run_binds_a_drive_cycle_file_from_params_or_the_step() {
        let mut p = cap();
        p.insert("US06".into(), "drive/us06.csv".into());
        let s = parse_step("Run US06 (A)", &p).unwrap();
        assert_eq!(
            s.control,
            Control::Profile {
                kind: ProfileKind::Current
            }
        );
        let run = s.run.unwrap();
        assert_eq!(run.file, "drive/us06.csv");
        assert_eq!(run.column, 5);
        assert!(s.terminations.is_empty());
        let s = parse_step("Run wltp.csv (W) until < 3 V", &p).unwrap();
        assert_eq!(s.run.as_ref().map(|r| r.file.as_str()), Some("wltp.csv"));
        assert_eq!(conditions(&s), [Condition::VoltageAtMost(3.0)]);
        let e = parse_step("Run US06", &p).unwrap_err();
        assert!(e.message.contains("(A)"), "{}", e.message);
    }

    #[test]
    fn resistance_steps_discharge_only() {
        let s = parse_step("Discharge at 2 Ohm until 3 V", &cap()).unwrap();
        assert_eq!(s.control, Control::Resistance { ohms: 2.0 });
        assert!(parse_step("Charge at 2 Ohm until 4 V", &cap()).is_err());
    }

    #[test]
    fn cc_then_cv_pairing_is_two_steps() {
        let cc = parse_step("Charge at 1C until 4.2 V", &cap()).unwrap();
        let cv = parse_step("Hold at 4.2 V until C/50", &cap()).unwrap();
        assert_eq!(cc.control, Control::Current { amps: 2.5 });
        assert_eq!(cv.control, Control::Voltage { volts: 4.2 });
    }

    proptest! {
        #[test]
        fn arbitrary_step_strings_never_panic(s in ".*") {
            let _ = parse_step(&s, &cap());
        }

        #[test]
        fn step_like_strings_never_panic(parts in proptest::collection::vec(
            prop_oneof![
                Just("Charge"), Just("Discharge"), Just("Hold"), Just("Rest"), Just("at"),
                Just("for"), Just("or"), Just("until"), Just("C/"), Just("C/0"), Just("1.5"),
                Just("1e400"), Just(".5"), Just("mA"), Just("V"), Just("W"), Just("h"), Just("<"),
                Just(">="), Just("${capacity}"), Just("{v_max}"), Just("${"), Just("{"), Just("}"),
                Just("("), Just(")"), Just("period"), Just("é"), Just("Ω"), Just("°C"), Just(" "),
                Just("Run"), Just("US06"), Just("(A)"), Just("(W)"), Just("[a,b]"), Just("["),
                Just("]"), Just("25oC"), Just("2 Ohm"),
            ],
            0..12,
        )) {
            let _ = parse_step(&parts.concat(), &cap());
            let _ = parse_step(&parts.join(" "), &cap());
        }
    }
}

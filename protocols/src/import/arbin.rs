//! Arbin schedule (.sdu) -> plan.
//!
//! Reads what [`crate::compile::arbin`] writes, and the same subset of hand-made schedules:
//! rest, current and voltage steps whose step limits compare voltage, |current| (as the pair
//! `I <= x AND I >= -x`), step time or test time, with gotos to `Next Step`, `End Test` or a
//! label; and loops written as a `Set Variable(s)` step resetting `TC_Counter{k}` before the
//! body and one incrementing it after, jumping back while `TC_Counter{k} < N`. Log-only
//! limits (`m_bStepLimit=0`) are recording rules, which the plan does not carry, and are
//! skipped. Everything else (C-rate steps, which need a capacity the file does not hold,
//! CCCV, internal resistance, formulas) is an [`ImportError`] naming the section.
//!
//! The caller decodes the file (latin-1) into `text`; both CRLF and LF line ends are read.

use std::collections::HashMap;

use super::{ImportError, SourceKind};
use crate::compile::arbin::{
    AUX_TEMP_SCOPE, CAPACITY_SCOPE, CHECK_CURRENT, CHECK_VOLTAGE, CTRL_CCCV, CTRL_CURRENT,
    CTRL_REST, CTRL_SET_VARIABLES, CTRL_VOLTAGE, CURRENT_SCOPE, DV_CURRENT, DV_TIME, DV_VOLTAGE,
    EQUATIONS_PER_LIMIT, GOTO_END, GOTO_NEXT, INCREMENT_CYCLE_INDEX, PV_CURRENT, PV_STEP_TIME,
    PV_TEST_TIME, PV_VOLTAGE, TC_COUNTERS, VOLTAGE_SCOPE, increment_mask, reset_mask,
};
use crate::plan::{
    ActionStep, Condition, Control, Goto, Plan, PlanStep, Record, Safety, Termination,
};

/// One `[Section]` with its `key=value` entries and the 1-based line of its header.
struct Section<'a> {
    name: &'a str,
    line: usize,
    entries: HashMap<&'a str, &'a str>,
}

struct Reader<'a> {
    origin: &'a str,
    sections: Vec<Section<'a>>,
    by_name: HashMap<&'a str, usize>,
}

/// A step limit before its goto is resolved to a plan index.
struct RawLimit<'a> {
    condition: Condition,
    goto: &'a str,
    section: String,
}

enum RawStep<'a> {
    Action {
        control: Control,
        limits: Vec<RawLimit<'a>>,
        record: Record,
        description: String,
    },
    /// Resets `TC_Counter{counter}` (1-based) before a loop body.
    LoopReset { counter: u32 },
    /// Ends a pass: increments the counter and jumps back to `back` while it is below `count`.
    LoopIncrement {
        counter: u32,
        cycle: bool,
        count: u32,
        back: &'a str,
        section: String,
    },
}

/// Reads an Arbin schedule into a plan.
pub fn import(text: &str, origin: &str) -> Result<Plan, ImportError> {
    let r = Reader::parse(text, origin)?;
    let schedule = r.section("Schedule")?;
    let safety = r.safety(schedule)?;
    let raw = r.steps()?;
    let steps = r.build(&raw)?;
    let name = schedule
        .entries
        .get("m_szComments")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .unwrap_or(origin)
        .to_owned();
    let plan = super::imported(name, text, safety, steps);
    plan.validate().map_err(|e| {
        r.error(
            None,
            format!("the schedule does not form a valid plan: {e}"),
        )
    })?;
    Ok(plan)
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A `Set Variable(s)` mask: empty means no bits.
fn mask(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        Some(0)
    } else {
        s.parse().ok()
    }
}

impl<'a> Reader<'a> {
    fn parse(text: &'a str, origin: &'a str) -> Result<Reader<'a>, ImportError> {
        let mut r = Reader {
            origin,
            sections: Vec::new(),
            by_name: HashMap::new(),
        };
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let at = n + 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let Some(name) = name.trim_end().strip_suffix(']') else {
                    return Err(r.error(
                        Some(format!("line {at}")),
                        "expected \"]\" closing the section name",
                    ));
                };
                if r.by_name.insert(name, r.sections.len()).is_some() {
                    return Err(r.error(
                        Some(format!("line {at}")),
                        format!("section [{name}] appears twice"),
                    ));
                }
                r.sections.push(Section {
                    name,
                    line: at,
                    entries: HashMap::new(),
                });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(r.error(
                    Some(format!("line {at}")),
                    "expected \"key=value\" or a [section] header",
                ));
            };
            let Some(section) = r.sections.last_mut() else {
                return Err(r.error(
                    Some(format!("line {at}")),
                    "expected a [section] header before the first key",
                ));
            };
            section.entries.insert(key.trim(), value);
        }
        Ok(r)
    }

    fn error(&self, location: Option<String>, message: impl Into<String>) -> ImportError {
        ImportError {
            kind: SourceKind::Arbin,
            origin: self.origin.into(),
            location,
            message: message.into(),
        }
    }

    fn at(s: &Section<'_>, key: &str) -> Option<String> {
        Some(format!("[{}] {key} (section at line {})", s.name, s.line))
    }

    fn section(&self, name: &str) -> Result<&Section<'a>, ImportError> {
        self.by_name
            .get(name)
            .map(|&i| &self.sections[i])
            .ok_or_else(|| self.error(None, format!("expected a [{name}] section")))
    }

    fn get(&self, s: &Section<'a>, key: &str) -> Result<&'a str, ImportError> {
        s.entries
            .get(key)
            .copied()
            .ok_or_else(|| self.error(Self::at(s, key), format!("expected the key {key}")))
    }

    fn num(&self, s: &Section<'a>, key: &str) -> Result<f64, ImportError> {
        let v = self.get(s, key)?;
        number(v).ok_or_else(|| {
            self.error(
                Self::at(s, key),
                format!("expected a finite number, found \"{}\"", v.trim()),
            )
        })
    }

    /// A `min^max` scope, or `None` when its check flag is off or it is `0^0` (unset).
    fn scope(
        &self,
        s: &Section<'a>,
        key: &str,
        check: Option<&str>,
    ) -> Result<Option<(f64, f64)>, ImportError> {
        if let Some(flag) = check
            && s.entries.get(flag).map(|v| v.trim()) == Some("0")
        {
            return Ok(None);
        }
        let Some(v) = s.entries.get(key) else {
            return Ok(None);
        };
        let pair = v
            .split_once('^')
            .and_then(|(a, b)| Some((number(a)?, number(b)?)));
        match pair {
            Some((lo, hi)) if lo > hi => Err(self.error(
                Self::at(s, key),
                format!("expected min^max with min <= max, found \"{}\"", v.trim()),
            )),
            Some((0.0, 0.0)) => Ok(None),
            Some(p) => Ok(Some(p)),
            None => Err(self.error(
                Self::at(s, key),
                format!("expected \"min^max\" (two numbers), found \"{}\"", v.trim()),
            )),
        }
    }

    fn safety(&self, s: &Section<'a>) -> Result<Safety, ImportError> {
        let voltage = self.scope(s, VOLTAGE_SCOPE, Some(CHECK_VOLTAGE))?;
        // The plan holds one |I| limit; an asymmetric scope keeps its stricter side.
        let current = self
            .scope(s, CURRENT_SCOPE, Some(CHECK_CURRENT))?
            .map(|(lo, hi)| lo.abs().min(hi.abs()));
        Ok(Safety {
            voltage_min: voltage.map(|v| v.0),
            voltage_max: voltage.map(|v| v.1),
            current_max: current,
            capacity_max: self.scope(s, CAPACITY_SCOPE, None)?.map(|c| c.1),
            temperature_max: self.scope(s, AUX_TEMP_SCOPE, None)?.map(|t| t.1),
        })
    }

    fn steps(&self) -> Result<Vec<RawStep<'a>>, ImportError> {
        let schedule = self.section("Schedule")?;
        let declared = schedule.entries.get("m_uStepNum").map(|v| {
            v.trim().parse::<usize>().map_err(|_| {
                self.error(
                    Self::at(schedule, "m_uStepNum"),
                    format!("expected a step count, found \"{}\"", v.trim()),
                )
            })
        });
        let mut steps = Vec::new();
        while let Some(&i) = self
            .by_name
            .get(format!("Schedule_Step{}", steps.len()).as_str())
        {
            steps.push(self.step(&self.sections[i])?);
        }
        if let Some(declared) = declared {
            let declared = declared?;
            if declared != steps.len() {
                return Err(self.error(
                    Self::at(schedule, "m_uStepNum"),
                    format!(
                        "m_uStepNum says {declared} steps but sections [Schedule_Step0] .. are {} consecutive",
                        steps.len()
                    ),
                ));
            }
        }
        if steps.is_empty() {
            return Err(self.error(None, "expected at least one [Schedule_Step0] section"));
        }
        Ok(steps)
    }

    fn step(&self, s: &Section<'a>) -> Result<RawStep<'a>, ImportError> {
        let kind = self.get(s, "m_szStepCtrlType")?.trim();
        let label = s.entries.get("m_szLabel").map_or("", |l| l.trim());
        let limits = self.limits(s)?;
        let control = match kind {
            CTRL_REST => Control::Rest,
            CTRL_CURRENT => Control::Current {
                amps: self.num(s, "m_szCtrlValue")?,
            },
            CTRL_VOLTAGE => Control::Voltage {
                volts: self.num(s, "m_szCtrlValue")?,
            },
            CTRL_CCCV => Control::Cccv {
                amps: self.num(s, "m_szCtrlValue")?,
                volts: self.num(s, "m_szExtCtrlValue1")?,
            },
            CTRL_SET_VARIABLES => return self.set_variables(s, limits),
            other => {
                return Err(self.error(
                    Self::at(s, "m_szStepCtrlType"),
                    format!(
                        "expected {CTRL_REST}, {CTRL_CURRENT}, {CTRL_VOLTAGE}, {CTRL_CCCV} or {CTRL_SET_VARIABLES}, found \"{other}\" (C-rate steps need a capacity the schedule does not hold; the others have no confirmed plan form)"
                    ),
                ));
            }
        };
        let value = s.entries.get("m_szCtrlValue").map_or("", |v| v.trim());
        let mut record = Record::default();
        let mut step_limits = Vec::new();
        for l in limits {
            match l {
                Limit::Step(l) => step_limits.push(l),
                Limit::Log(DV_TIME, x) => record.every_s = Some(x),
                Limit::Log(DV_VOLTAGE, x) => record.dv_v = Some(x),
                Limit::Log(_, x) => record.di_a = Some(x),
                Limit::Counter { section, .. } => {
                    return Err(self.error(
                        Some(section),
                        "expected a voltage, current or time limit; test counters are only read on loop steps",
                    ));
                }
            }
        }
        Ok(RawStep::Action {
            control,
            limits: step_limits,
            record,
            description: format!("{label}: {kind} {value}").trim_end().to_owned(),
        })
    }

    fn set_variables(
        &self,
        s: &Section<'a>,
        limits: Vec<Limit<'a>>,
    ) -> Result<RawStep<'a>, ImportError> {
        let read = |key: &str| -> Result<u64, ImportError> {
            let v = s.entries.get(key).copied().unwrap_or("");
            mask(v).ok_or_else(|| {
                self.error(
                    Self::at(s, key),
                    format!("expected a bit mask (integer), found \"{}\"", v.trim()),
                )
            })
        };
        let (reset, inc, dec) = (
            read("m_szCtrlValue")?,
            read("m_szExtCtrlValue1")?,
            read("m_szExtCtrlValue2")?,
        );
        let unsupported = || {
            self.error(
                Self::at(s, "m_szStepCtrlType"),
                "Set Variable(s) steps are read only as loop counters: reset TC_Counter{k} alone (no step limits) before a loop body, or increment it (and optionally the cycle index) with the limits \"TC_Counter{k} < N -> body label\" and \"TC_Counter{k} >= N -> Next Step\"",
            )
        };
        let counters = 1..=TC_COUNTERS.len() as u32;
        if inc == 0
            && dec == 0
            && limits.is_empty()
            && let Some(counter) = counters.clone().find(|&k| reset == reset_mask(k))
        {
            return Ok(RawStep::LoopReset { counter });
        }
        let cycle_bit = u64::from(INCREMENT_CYCLE_INDEX);
        let Some(counter) = counters
            .clone()
            .find(|&k| reset == 0 && dec == 0 && inc & !cycle_bit == increment_mask(k))
        else {
            return Err(unsupported());
        };
        let [
            Limit::Counter {
                counter: c1,
                less: true,
                count,
                goto: back,
                section,
            },
            Limit::Counter {
                counter: c2,
                less: false,
                count: count2,
                goto: GOTO_NEXT,
                ..
            },
        ] = limits.as_slice()
        else {
            return Err(unsupported());
        };
        if *c1 != counter || *c2 != counter || count != count2 {
            return Err(unsupported());
        }
        Ok(RawStep::LoopIncrement {
            counter,
            cycle: inc & cycle_bit != 0,
            count: *count,
            back,
            section: section.clone(),
        })
    }

    fn limits(&self, s: &Section<'a>) -> Result<Vec<Limit<'a>>, ImportError> {
        let declared = match s.entries.get("m_uLimitNum") {
            Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                self.error(
                    Self::at(s, "m_uLimitNum"),
                    format!("expected a limit count, found \"{}\"", v.trim()),
                )
            })?),
            None => None,
        };
        let mut limits = Vec::new();
        let mut m = 0;
        while let Some(&i) = self.by_name.get(format!("{}_Limit{m}", s.name).as_str()) {
            if let Some(l) = self.limit(&self.sections[i])? {
                limits.push(l);
            }
            m += 1;
        }
        if let Some(d) = declared
            && d != m
        {
            return Err(self.error(
                Self::at(s, "m_uLimitNum"),
                format!(
                    "m_uLimitNum says {d} limits but {m} consecutive [{}_LimitM] sections follow",
                    s.name
                ),
            ));
        }
        Ok(limits)
    }

    /// One limit section; `None` for a log-only limit the plan has no recording rule for.
    fn limit(&self, s: &Section<'a>) -> Result<Option<Limit<'a>>, ImportError> {
        match self.get(s, "m_bStepLimit")?.trim() {
            "0" => return Ok(self.log_limit(s)),
            "1" => {}
            other => {
                return Err(self.error(
                    Self::at(s, "m_bStepLimit"),
                    format!("expected 0 or 1, found \"{other}\""),
                ));
            }
        }
        let goto = self.get(s, "m_szGotoStep")?.trim();
        let mut eqs = Vec::new();
        for e in 0..EQUATIONS_PER_LIMIT {
            let key = |part: &str| format!("Equation{e}_sz{part}");
            let left = s.entries.get(key("Left").as_str()).map_or("", |v| v.trim());
            if left.is_empty() {
                continue;
            }
            let sign = self.get(s, &key("CompareSign"))?.trim();
            let right_key = key("Right");
            let right = self.num(s, &right_key)?;
            eqs.push((left, sign, right, right_key));
        }
        let section = format!("[{}] (line {})", s.name, s.line);
        let bad = || {
            self.error(
                Some(section.clone()),
                format!(
                    "expected one of: {PV_VOLTAGE} >= x or <= x; {PV_CURRENT} <= x AND {PV_CURRENT} >= -x (|I| <= x); {PV_STEP_TIME} >= s; {PV_TEST_TIME} >= s; TC_Counter1-4 < N or >= N on loop steps"
                ),
            )
        };
        let at_least = |sign: &str| matches!(sign, ">=" | ">");
        let at_most = |sign: &str| matches!(sign, "<=" | "<");
        let condition = match eqs.as_slice() {
            [(PV_VOLTAGE, sign, v, _)] if at_least(sign) => Condition::VoltageAtLeast(*v),
            [(PV_VOLTAGE, sign, v, _)] if at_most(sign) => Condition::VoltageAtMost(*v),
            [(PV_STEP_TIME, sign, t, _)] if at_least(sign) => Condition::StepTime(*t),
            [(PV_TEST_TIME, sign, t, _)] if at_least(sign) => Condition::TestTime(*t),
            [(PV_CURRENT, s1, a, _), (PV_CURRENT, s2, b, _)] => {
                let (hi, lo) = if at_most(s1) && at_least(s2) {
                    (*a, *b)
                } else if at_least(s1) && at_most(s2) {
                    (*b, *a)
                } else {
                    return Err(bad());
                };
                if hi < 0.0 || (hi + lo).abs() > 1e-9 * hi.max(1.0) {
                    return Err(self.error(
                        Some(section),
                        format!("a current limit must be the symmetric pair I <= x AND I >= -x (|I| <= x), found I <= {hi} AND I >= {lo}"),
                    ));
                }
                Condition::CurrentMagnitudeAtMost(hi)
            }
            [(left, sign, n, key)] if left.starts_with("TC_Counter") => {
                let Some(k) = TC_COUNTERS.iter().position(|c| c == left) else {
                    return Err(bad());
                };
                let less = match *sign {
                    "<" => true,
                    ">=" => false,
                    _ => return Err(bad()),
                };
                if n.fract() != 0.0 || *n < 1.0 || *n > f64::from(u32::MAX) {
                    return Err(self.error(
                        Self::at(s, key),
                        format!("expected a loop count (a whole number >= 1), found {n}"),
                    ));
                }
                return Ok(Some(Limit::Counter {
                    counter: k as u32 + 1,
                    less,
                    count: *n as u32,
                    goto,
                    section,
                }));
            }
            _ => return Err(bad()),
        };
        Ok(Some(Limit::Step(RawLimit {
            condition,
            goto,
            section,
        })))
    }

    /// A log-only limit `DV_Time|DV_Voltage|DV_Current > x` as a recording rule; other log
    /// limits (compound ones, or on other variables) have no plan form and are skipped.
    fn log_limit(&self, s: &Section<'a>) -> Option<Limit<'a>> {
        let get = |k: &str| s.entries.get(k).map_or("", |v| v.trim());
        if get("m_bLogDataLimit") != "1" || !get("Equation1_szLeft").is_empty() {
            return None;
        }
        let left = [DV_TIME, DV_VOLTAGE, DV_CURRENT]
            .into_iter()
            .find(|v| *v == get("Equation0_szLeft"))?;
        let value = number(get("Equation0_szRight")).filter(|x| *x > 0.0)?;
        matches!(get("Equation0_szCompareSign"), ">" | ">=").then_some(Limit::Log(left, value))
    }

    /// Turns the Arbin steps into plan steps, pairing loop markers and resolving labels.
    fn build(&self, raw: &[RawStep<'a>]) -> Result<Vec<PlanStep>, ImportError> {
        // Plan index where execution lands when it reaches each Arbin step.
        let mut entry = Vec::with_capacity(raw.len());
        let mut steps: Vec<PlanStep> = Vec::new();
        // Open loops: (counter, plan index of LoopStart, Arbin index of the reset step).
        let mut open: Vec<(u32, usize, usize)> = Vec::new();
        for (n, step) in raw.iter().enumerate() {
            entry.push(steps.len());
            match step {
                RawStep::Action {
                    control,
                    description,
                    record,
                    ..
                } => {
                    steps.push(PlanStep::Action(ActionStep {
                        path: format!("Schedule_Step{n}"),
                        description: description.clone(),
                        control: *control,
                        record: *record,
                        ..ActionStep::default()
                    }));
                }
                RawStep::LoopReset { counter } => {
                    open.push((*counter, steps.len(), n));
                    steps.push(PlanStep::LoopStart {
                        count: 1,
                        cycle: false,
                        end: 0,
                        until: Vec::new(),
                    });
                }
                RawStep::LoopIncrement {
                    counter,
                    cycle,
                    count,
                    back,
                    section,
                } => {
                    let Some((c, start, reset)) = open.pop() else {
                        return Err(self.error(Some(section.clone()), "this loop end has no Set Variable(s) step resetting its counter before it"));
                    };
                    let body = self.label_index(back);
                    if c != *counter || body != Some(reset + 1) {
                        return Err(self.error(
                            Some(section.clone()),
                            format!(
                                "expected this loop to count with {} and jump back to the step right after the reset at [Schedule_Step{reset}]",
                                TC_COUNTERS[c as usize - 1]
                            ),
                        ));
                    }
                    let end = steps.len();
                    steps[start] = PlanStep::LoopStart {
                        count: *count,
                        cycle: *cycle,
                        end,
                        until: Vec::new(),
                    };
                    steps.push(PlanStep::LoopEnd { start });
                }
            }
        }
        if let Some((_, _, reset)) = open.last() {
            return Err(self.error(
                Some(format!("[Schedule_Step{reset}]")),
                "this loop counter is reset but no step after it increments it and jumps back",
            ));
        }
        steps.push(PlanStep::End);
        for (n, step) in raw.iter().enumerate() {
            let RawStep::Action { limits, .. } = step else {
                continue;
            };
            let mut terminations = Vec::new();
            for l in limits {
                let goto = match l.goto {
                    GOTO_NEXT => Goto::Next,
                    GOTO_END => Goto::End,
                    label => match self.label_index(label) {
                        Some(t) if matches!(raw[t], RawStep::LoopIncrement { .. }) => {
                            return Err(self.error(
                                Some(l.section.clone()),
                                format!("jumps to \"{label}\", a loop's closing step, which the plan cannot express"),
                            ));
                        }
                        Some(t) => Goto::Step(entry[t]),
                        None => {
                            return Err(self.error(
                                Some(l.section.clone()),
                                format!("m_szGotoStep: expected \"{GOTO_NEXT}\", \"{GOTO_END}\" or a step label, found \"{label}\""),
                            ));
                        }
                    },
                };
                terminations.push(Termination {
                    condition: l.condition,
                    goto,
                });
            }
            if let PlanStep::Action(a) = &mut steps[entry[n]] {
                a.terminations = terminations;
            }
        }
        Ok(steps)
    }

    /// The Arbin step index of the first step labelled `label`.
    fn label_index(&self, label: &str) -> Option<usize> {
        if label.is_empty() {
            return None;
        }
        (0..)
            .map_while(|n| self.by_name.get(format!("Schedule_Step{n}").as_str()))
            .position(|&i| {
                self.sections[i].entries.get("m_szLabel").map(|l| l.trim()) == Some(label)
            })
    }
}

/// A step limit, a log limit (variable, threshold), or a loop counter limit (only valid on a
/// loop's closing step).
enum Limit<'a> {
    Step(RawLimit<'a>),
    Log(&'static str, f64),
    Counter {
        counter: u32,
        less: bool,
        count: u32,
        goto: &'a str,
        section: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::plan_compare::{cc_cv_loop, damaged};
    use proptest::prelude::*;

    fn valid() -> String {
        crate::compile::arbin::compile(&cc_cv_loop()).unwrap()
    }

    fn message(text: &str) -> String {
        import(text, "t.sdu").unwrap_err().to_string()
    }

    #[test]
    fn a_file_without_a_schedule_section_is_an_error() {
        assert_eq!(
            message("[Version Section]\r\nCurrent_Version=7\r\n"),
            "t.sdu: arbin schedule: expected a [Schedule] section"
        );
    }

    #[test]
    fn a_line_that_is_neither_section_nor_key_names_its_line() {
        let text = valid().replacen("m_szLabel=Step 1", "m_szLabel Step 1", 1);
        let m = message(&text);
        assert!(
            m.contains("(line ") && m.contains("expected \"key=value\""),
            "{m}"
        );
    }

    #[test]
    fn an_unknown_control_type_names_the_section_and_what_is_expected() {
        let text = valid().replacen("Current(A)", "C-Rate", 1);
        let m = message(&text);
        assert!(
            m.contains("[Schedule_Step1] m_szStepCtrlType")
                && m.contains("C-rate steps need a capacity"),
            "{m}"
        );
    }

    #[test]
    fn an_unknown_goto_label_is_an_error() {
        let text = valid().replacen("m_szGotoStep=Loop 0 start", "m_szGotoStep=Nowhere", 1);
        assert!(message(&text).contains("found \"Nowhere\""));
    }

    #[test]
    fn a_one_sided_current_limit_is_refused_as_not_a_magnitude() {
        let text = valid().replacen("Equation1_szRight=-0.05", "Equation1_szRight=-1", 1);
        assert!(message(&text).contains("symmetric pair"));
    }

    #[test]
    fn log_only_limits_become_the_steps_record_rule() {
        // The compiled file logs step 2 by DV_Time and DV_Voltage (the native default); a
        // log-only DV_Current limit added by hand joins them.
        let valid = valid();
        let head = "[Schedule_Step2]\r\nm_uLimitNum=";
        let at = valid.find(head).unwrap() + head.len();
        let n: usize = valid[at..].split('\r').next().unwrap().parse().unwrap();
        let text = valid.replacen(&format!("{head}{n}"), &format!("{head}{}", n + 1), 1)
            + &format!(
                "[Schedule_Step2_Limit{n}]\r\nm_bStepLimit=0\r\nm_bLogDataLimit=1\r\nm_szGotoStep=Next Step\r\nEquation0_szLeft=DV_Current\r\nEquation0_szCompareSign=>\r\nEquation0_szRight=0.5\r\n"
            );
        let p = import(&text, "t.sdu").unwrap();
        let PlanStep::Action(a) = &p.steps[2] else {
            panic!()
        };
        assert_eq!(
            a.record,
            Record {
                di_a: Some(0.5),
                ..Record::NATIVE_DEFAULT
            }
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = import(&s, "t.sdu");
        }

        #[test]
        fn mutated_valid_files_never_panic(cuts in proptest::collection::vec((any::<prop::sample::Index>(), "\\PC{0,8}"), 1..6)) {
            let _ = import(&damaged(&valid(), cuts), "t.sdu");
        }

        #[test]
        fn schedule_like_lines_never_panic(lines in proptest::collection::vec(prop_oneof![
            Just("[Schedule]".to_owned()), Just("[Schedule_Step0]".to_owned()), Just("[Schedule_Step0_Limit0]".to_owned()),
            Just("[Schedule_Step1]".to_owned()), Just("m_uStepNum=2".to_owned()), Just("m_uLimitNum=1".to_owned()),
            Just("m_szStepCtrlType=Set Variable(s)".to_owned()), Just("m_szCtrlValue=131072".to_owned()),
            Just("m_szExtCtrlValue1=3".to_owned()), Just("m_bStepLimit=1".to_owned()), Just("m_szGotoStep=Step 0".to_owned()),
            Just("m_szLabel=Step 0".to_owned()), Just("Equation0_szLeft=TC_Counter1".to_owned()),
            Just("Equation0_szCompareSign=<".to_owned()), Just("Equation0_szRight=1e30".to_owned()),
            Just("m_szStepCtrlType=Current(A)".to_owned()), Just("m_VoltageSafetyScope=4^2".to_owned()),
            "[a-zA-Z_0-9=^.-]{0,20}",
        ], 0..40)) {
            let _ = import(&lines.join("\r\n"), "t.sdu");
        }
    }
}

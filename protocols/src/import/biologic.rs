//! BioLogic Modulo Bat settings (.mps) -> plan.
//!
//! Reads a single-technique `Modulo Bat` file: the `Safety Limits` and `Comments` header lines
//! and the transposed sequence table (20-character columns). Rest, CC (`Apply I/C` = `I`) and
//! CV sequences become action steps, `Loop` sequences become loop markers around the sequences
//! they go back to, and limits on Time, Ecell and |I| become terminations. A CCCV written as
//! a CC and a CV sequence reads back as those two steps, which run the same. A goto to the
//! first sequence of a loop body reads as a jump to the loop's start. Decimal commas (set by
//! some Windows locales) are accepted.
//!
//! Everything the plan cannot hold (C-rate sequences, which need a capacity the file does not
//! carry, other techniques or control types, `I` limits on signed current, crossing loops) is
//! an [`ImportError`] naming the line, row or sequence.

use std::collections::HashMap;

use super::{ImportError, SourceKind};
use crate::compile::biologic::{
    CC, CHARGE, COLUMN, CV, DISCHARGE, GOTO, HEADER, LIM_ABS_I, LIM_ECELL, LIM_TIME, LOOP, NEXT,
    REC_ECELL, REC_I, REC_TIME, REST, STOP, TECHNIQUE,
};
use crate::plan::{
    ActionStep, Condition, Control, Goto, Plan, PlanStep, Record, Safety, Termination,
};

/// The other header line BioLogic software writes (EC-Lab rather than BT-Lab).
const EC_LAB_HEADER: &str = "EC-LAB SETTING FILE";
/// `limN_type` that Aurora and EC-Lab write for the working electrode voltage.
const LIM_EWE: &str = "Ewe";

/// A sequence before gotos are resolved to plan indices.
enum Seq {
    Action {
        control: Control,
        /// (condition, action, target sequence, limit number for messages)
        limits: Vec<(Condition, String, usize, usize)>,
        record: Record,
        description: String,
    },
    Loop {
        back: usize,
        repeat: u32,
    },
}

struct Table<'a> {
    origin: &'a str,
    /// Row name -> (line number, cells).
    rows: HashMap<String, (usize, Vec<String>)>,
}

fn error(origin: &str, location: impl Into<String>, message: impl Into<String>) -> ImportError {
    ImportError {
        kind: SourceKind::Biologic,
        origin: origin.into(),
        location: Some(location.into()),
        message: message.into(),
    }
}

/// A number as BioLogic writes it, with a decimal point or comma.
fn number(s: &str) -> Option<f64> {
    s.trim()
        .replace(',', ".")
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
}

/// Splits `line` into the row name and its 20-character cells.
fn split_row(line: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let mut chunks = chars
        .chunks(COLUMN)
        .map(|c| c.iter().collect::<String>().trim().to_owned());
    let name = chunks.next().unwrap_or_default();
    (name, chunks.collect())
}

/// Reads a Modulo Bat settings file into a plan.
pub fn import(text: &str, origin: &str) -> Result<Plan, ImportError> {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let first = lines.iter().position(|l| !l.trim().is_empty());
    match first.map(|i| lines[i].trim()) {
        Some(HEADER | EC_LAB_HEADER) => {}
        found => {
            return Err(error(
                origin,
                "line 1",
                format!(
                    "expected \"{HEADER}\", found {:?}",
                    found.unwrap_or("an empty file")
                ),
            ));
        }
    }
    let mut safety = Safety::default();
    let mut name = None;
    let mut technique = None;
    let mut in_safety = false;
    for (n, line) in lines.iter().enumerate() {
        let at = format!("line {}", n + 1);
        if in_safety && (line.starts_with('\t') || line.starts_with(' ')) {
            safety_line(origin, &at, line.trim(), &mut safety)?;
            continue;
        }
        in_safety = line.trim_end() == "Safety Limits :";
        let Some((key, value)) = line.split_once(" : ") else {
            continue;
        };
        match key.trim() {
            "Number of linked techniques" if value.trim() != "1" => {
                return Err(error(
                    origin,
                    at,
                    format!(
                        "expected a single technique (Modulo Bat), found {} linked techniques",
                        value.trim()
                    ),
                ));
            }
            "Comments" if !value.trim().is_empty() => name = Some(value.trim().to_owned()),
            "Technique" => {
                technique = Some(n);
                break;
            }
            _ => {}
        }
    }
    let Some(t) = technique else {
        return Err(error(
            origin,
            "end of file",
            "expected a \"Technique : 1\" line",
        ));
    };
    match lines.get(t + 1).map(|l| l.trim()) {
        Some(TECHNIQUE) => {}
        found => {
            return Err(error(
                origin,
                format!("line {}", t + 2),
                format!(
                    "expected the technique \"{TECHNIQUE}\", found {:?}",
                    found.unwrap_or("the end of the file")
                ),
            ));
        }
    }
    let mut rows = HashMap::new();
    for (n, line) in lines.iter().enumerate().skip(t + 2) {
        if line.trim().is_empty() || line.starts_with("Technique") {
            break;
        }
        let (row, cells) = split_row(line);
        if rows.insert(row.clone(), (n + 1, cells)).is_some() {
            return Err(error(
                origin,
                format!("line {}", n + 1),
                format!("row \"{row}\" appears twice"),
            ));
        }
    }
    let columns = rows
        .get("Ns")
        .map_or(0, |(_, c)| c.iter().filter(|c| !c.is_empty()).count());
    if columns == 0 {
        return Err(error(
            origin,
            format!("line {}", t + 3),
            "expected an \"Ns\" row numbering at least one sequence",
        ));
    }
    let table = Table { origin, rows };
    let seqs = (0..columns)
        .map(|j| table.sequence(j))
        .collect::<Result<Vec<_>, _>>()?;
    let steps = build(origin, &seqs)?;
    let plan = super::imported(
        name.unwrap_or_else(|| origin.to_owned()),
        text,
        safety,
        steps,
    );
    plan.validate().map_err(|e| {
        error(
            origin,
            "sequences",
            format!("the sequences do not form a valid plan: {e}"),
        )
    })?;
    Ok(plan)
}

/// One `Safety Limits` line (`Ecell min = 2.5 V`, `|I| = 5000 mA`, `Temperature max = 60 °C`);
/// lines the plan has no limit for (`for t > 100 ms`) are skipped.
fn safety_line(origin: &str, at: &str, line: &str, s: &mut Safety) -> Result<(), ImportError> {
    let Some((key, value)) = line.split_once(" = ") else {
        return Ok(());
    };
    let mut parts = value.split_whitespace();
    let (Some(v), unit) = (parts.next(), parts.next().unwrap_or("")) else {
        return Ok(());
    };
    let bad = || {
        error(
            origin,
            at,
            format!(
                "Safety Limits: expected a number and a unit after \"{key} =\", found \"{value}\""
            ),
        )
    };
    let v = number(v).ok_or_else(bad)?;
    match (key.trim(), unit) {
        ("Ecell min", "V") => s.voltage_min = Some(v),
        ("Ecell max", "V") => s.voltage_max = Some(v),
        ("Ecell min", "mV") => s.voltage_min = Some(v / 1000.0),
        ("Ecell max", "mV") => s.voltage_max = Some(v / 1000.0),
        ("|I|", "A") => s.current_max = Some(v),
        ("|I|", "mA") => s.current_max = Some(v / 1000.0),
        ("Temperature max", _) => s.temperature_max = Some(v),
        ("Ecell min" | "Ecell max" | "|I|", _) => return Err(bad()),
        _ => {}
    }
    Ok(())
}

/// A current in A from a value and its unit.
fn amps(v: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "A" => v,
        "mA" => v / 1e3,
        "µA" | "uA" => v / 1e6,
        "nA" => v / 1e9,
        _ => return None,
    })
}

fn volts(v: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "V" => v,
        "mV" => v / 1e3,
        _ => return None,
    })
}

fn seconds(v: f64, unit: &str) -> Option<f64> {
    Some(match unit {
        "ms" => v / 1e3,
        "s" => v,
        "mn" | "min" => v * 60.0,
        "h" => v * 3600.0,
        "d" => v * 86400.0,
        _ => return None,
    })
}

impl Table<'_> {
    fn cell(&self, row: &str, j: usize) -> Result<&str, ImportError> {
        let (_, cells) = self.rows.get(row).ok_or_else(|| {
            error(
                self.origin,
                "sequence table",
                format!("expected a row \"{row}\""),
            )
        })?;
        Ok(cells.get(j).map_or("", String::as_str))
    }

    fn at(&self, row: &str, j: usize) -> String {
        let line = self.rows.get(row).map_or(0, |(l, _)| *l);
        format!("line {line}, row {row}, sequence {j}")
    }

    fn num(&self, row: &str, j: usize) -> Result<f64, ImportError> {
        let v = self.cell(row, j)?;
        number(v).ok_or_else(|| {
            error(
                self.origin,
                self.at(row, j),
                format!("expected a number, found \"{v}\""),
            )
        })
    }

    fn count(&self, row: &str, j: usize, max: u32) -> Result<u32, ImportError> {
        let v = self.cell(row, j)?;
        v.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(|| {
            error(
                self.origin,
                self.at(row, j),
                format!("expected a whole number from 0 to {max}, found \"{v}\""),
            )
        })
    }

    fn sequence(&self, j: usize) -> Result<Seq, ImportError> {
        let ns = self.cell("Ns", j)?;
        if ns.parse::<usize>() != Ok(j) {
            return Err(error(
                self.origin,
                self.at("Ns", j),
                format!("expected sequence number {j}, found \"{ns}\""),
            ));
        }
        let kind = self.cell("ctrl_type", j)?;
        let control = match kind {
            REST => Control::Rest,
            CC => {
                let apply = self.cell("Apply I/C", j)?;
                if apply != "I" {
                    return Err(error(
                        self.origin,
                        self.at("Apply I/C", j),
                        format!(
                            "expected \"I\" (a current), found \"{apply}\": C-rates need a capacity the file does not carry"
                        ),
                    ));
                }
                let unit = self.cell("ctrl1_val_unit", j)?;
                let a = amps(self.num("ctrl1_val", j)?, unit).ok_or_else(|| {
                    error(
                        self.origin,
                        self.at("ctrl1_val_unit", j),
                        format!("expected A, mA, µA or nA, found \"{unit}\""),
                    )
                })?;
                let sign = match self.cell("charge/discharge", j)? {
                    CHARGE => 1.0,
                    DISCHARGE => -1.0,
                    other => {
                        return Err(error(
                            self.origin,
                            self.at("charge/discharge", j),
                            format!("expected \"{CHARGE}\" or \"{DISCHARGE}\", found \"{other}\""),
                        ));
                    }
                };
                Control::Current {
                    amps: if sign < 0.0 { -a.abs() } else { a },
                }
            }
            CV => {
                let vs = self.cell("ctrl1_val_vs", j)?;
                if !matches!(vs, "Ref" | "<None>" | "") {
                    return Err(error(
                        self.origin,
                        self.at("ctrl1_val_vs", j),
                        format!(
                            "expected an absolute voltage (\"Ref\"), found one relative to \"{vs}\""
                        ),
                    ));
                }
                let unit = self.cell("ctrl1_val_unit", j)?;
                Control::Voltage {
                    volts: volts(self.num("ctrl1_val", j)?, unit).ok_or_else(|| {
                        error(
                            self.origin,
                            self.at("ctrl1_val_unit", j),
                            format!("expected V or mV, found \"{unit}\""),
                        )
                    })?,
                }
            }
            LOOP => {
                let back = self.count("ctrl_seq", j, u32::MAX)? as usize;
                if back >= j {
                    return Err(error(
                        self.origin,
                        self.at("ctrl_seq", j),
                        format!("a Loop must go back to an earlier sequence, found {back}"),
                    ));
                }
                return Ok(Seq::Loop {
                    back,
                    repeat: self.count("ctrl_repeat", j, u32::MAX - 1)?,
                });
            }
            other => {
                return Err(error(
                    self.origin,
                    self.at("ctrl_type", j),
                    format!("expected {REST}, {CC}, {CV} or {LOOP}, found \"{other}\""),
                ));
            }
        };
        let mut limits = Vec::new();
        for k in 1..=self.count("lim_nb", j, 9)? as usize {
            let row = |f: &str| format!("lim{k}_{f}");
            let (kind, comp) = (self.cell(&row("type"), j)?, self.cell(&row("comp"), j)?);
            let value = self.num(&row("value"), j)?;
            let unit_row = row("value_unit");
            let unit = self.cell(&unit_row, j)?;
            let bad_unit = || {
                error(
                    self.origin,
                    self.at(&unit_row, j),
                    format!("unit \"{unit}\" does not fit a {kind} limit"),
                )
            };
            let condition = match (kind, comp) {
                (LIM_ECELL | LIM_EWE, ">") => {
                    Condition::VoltageAtLeast(volts(value, unit).ok_or_else(bad_unit)?)
                }
                (LIM_ECELL | LIM_EWE, "<") => {
                    Condition::VoltageAtMost(volts(value, unit).ok_or_else(bad_unit)?)
                }
                (LIM_ABS_I, "<") => {
                    Condition::CurrentMagnitudeAtMost(amps(value, unit).ok_or_else(bad_unit)?)
                }
                (LIM_TIME, ">") => Condition::StepTime(seconds(value, unit).ok_or_else(bad_unit)?),
                _ => {
                    return Err(error(
                        self.origin,
                        self.at(&row("type"), j),
                        format!(
                            "expected Ecell > or <, |I| < or Time >, found \"{kind} {comp}\" (signed-current and other limits have no plan form)"
                        ),
                    ));
                }
            };
            let action = self.cell(&row("action"), j)?.to_owned();
            let seq_row = row("seq");
            let target = match action.as_str() {
                GOTO => self.count(&seq_row, j, u32::MAX)? as usize,
                _ => 0,
            };
            limits.push((condition, action, target, k));
        }
        let mut record = Record::default();
        for k in 1..=self.count("rec_nb", j, 9)? as usize {
            let row = |f: &str| format!("rec{k}_{f}");
            let (kind, unit) = (
                self.cell(&row("type"), j)?,
                self.cell(&row("value_unit"), j)?,
            );
            let v = self.num(&row("value"), j)?;
            let bad = || {
                error(
                    self.origin,
                    self.at(&row("value_unit"), j),
                    format!("unit \"{unit}\" does not fit a {kind} record rule"),
                )
            };
            match kind {
                REC_TIME => record.every_s = Some(seconds(v, unit).ok_or_else(bad)?),
                REC_ECELL => record.dv_v = Some(volts(v, unit).ok_or_else(bad)?),
                REC_I => record.di_a = Some(amps(v, unit).ok_or_else(bad)?),
                // Other record rules (power, charge) have no plan form; they only log.
                _ => {}
            }
        }
        Ok(Seq::Action {
            control,
            limits,
            record,
            description: format!(
                "sequence {j}: {kind} {} {}",
                self.cell("ctrl1_val", j)?,
                self.cell("ctrl1_val_unit", j)?
            )
            .trim_end()
            .to_owned(),
        })
    }
}

/// Turns sequences into plan steps: loop markers around the sequences each Loop goes back to,
/// then gotos resolved to plan indices.
fn build(origin: &str, seqs: &[Seq]) -> Result<Vec<PlanStep>, ImportError> {
    // Loops starting at each sequence, outermost (latest Loop sequence) first.
    let mut starting: Vec<Vec<usize>> = vec![Vec::new(); seqs.len()];
    for (j, s) in seqs.iter().enumerate() {
        if let Seq::Loop { back, .. } = s {
            starting[*back].insert(0, j);
        }
    }
    let mut steps = Vec::new();
    // Plan index of each sequence's entry (for gotos), and of each sequence's action.
    let mut entry = Vec::with_capacity(seqs.len());
    let mut action_at = vec![usize::MAX; seqs.len()];
    // Open loops: (Loop sequence index, plan index of LoopStart).
    let mut open: Vec<(usize, usize)> = Vec::new();
    for (j, s) in seqs.iter().enumerate() {
        entry.push(steps.len());
        for &l in &starting[j] {
            open.push((l, steps.len()));
            steps.push(PlanStep::LoopStart {
                count: 1,
                cycle: true,
                end: 0,
                until: Vec::new(),
            });
        }
        match s {
            Seq::Action {
                control,
                record,
                description,
                ..
            } => {
                action_at[j] = steps.len();
                steps.push(PlanStep::Action(ActionStep {
                    path: format!("sequence {j}"),
                    description: description.clone(),
                    control: *control,
                    record: *record,
                    ..ActionStep::default()
                }));
            }
            Seq::Loop { back, repeat } => {
                let Some((_, start)) = open.pop().filter(|(l, _)| *l == j) else {
                    return Err(error(
                        origin,
                        format!("sequence {j}"),
                        format!(
                            "this Loop (back to sequence {back}) crosses another loop; loops must nest"
                        ),
                    ));
                };
                let end = steps.len();
                steps[start] = PlanStep::LoopStart {
                    count: repeat + 1,
                    cycle: true,
                    end,
                    until: Vec::new(),
                };
                steps.push(PlanStep::LoopEnd { start });
            }
        }
    }
    steps.push(PlanStep::End);
    for (j, s) in seqs.iter().enumerate() {
        let Seq::Action { limits, .. } = s else {
            continue;
        };
        let mut terminations = Vec::new();
        for (condition, action, target, k) in limits {
            let goto = match action.as_str() {
                NEXT => Goto::Next,
                STOP => Goto::End,
                GOTO => match seqs.get(*target) {
                    Some(Seq::Action { .. }) => Goto::Step(entry[*target]),
                    _ => {
                        return Err(error(
                            origin,
                            format!("sequence {j}, lim{k}_seq"),
                            format!(
                                "expected the number of a Rest, CC or CV sequence to go to, found {target}"
                            ),
                        ));
                    }
                },
                other => {
                    return Err(error(
                        origin,
                        format!("sequence {j}, lim{k}_action"),
                        format!("expected \"{NEXT}\", \"{GOTO}\" or \"{STOP}\", found \"{other}\""),
                    ));
                }
            };
            terminations.push(Termination {
                condition: *condition,
                goto,
            });
        }
        if let Some(PlanStep::Action(a)) = steps.get_mut(action_at[j]) {
            a.terminations = terminations;
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::plan_compare::{cc_cv_loop, damaged};
    use proptest::prelude::*;

    fn valid() -> String {
        crate::compile::biologic::compile(&cc_cv_loop()).unwrap()
    }

    fn message(text: &str) -> String {
        import(text, "t.mps").unwrap_err().to_string()
    }

    #[test]
    fn a_file_without_the_header_line_is_an_error_at_line_one() {
        assert_eq!(
            message("hello\n"),
            "t.mps: biologic schedule (line 1): expected \"BT-LAB SETTING FILE\", found \"hello\""
        );
    }

    #[test]
    fn another_technique_is_an_error_naming_its_line() {
        let m = message(&valid().replace(
            "Modulo Bat",
            "Galvanostatic Cycling with Potential Limitation",
        ));
        assert!(m.contains("expected the technique \"Modulo Bat\""), "{m}");
    }

    #[test]
    fn a_c_rate_sequence_is_an_error_naming_row_and_sequence() {
        let text = valid().replacen(
            "Apply I/C           I                   I",
            "Apply I/C           C / N               I",
            1,
        );
        let m = message(&text);
        assert!(
            m.contains("row Apply I/C, sequence 0") && m.contains("C-rates need a capacity"),
            "{m}"
        );
    }

    #[test]
    fn decimal_commas_are_read() {
        let text = valid().replace("1000.000", "1000,000");
        let p = import(&text, "t.mps").unwrap();
        let PlanStep::Action(a) = &p.steps[1] else {
            panic!()
        };
        assert_eq!(a.control, Control::Current { amps: 1.0 });
    }

    #[test]
    fn a_goto_to_a_loop_body_start_reads_as_a_jump_to_the_loop() {
        let p = import(&valid(), "t.mps").unwrap();
        let PlanStep::Action(a) = &p.steps[2] else {
            panic!()
        };
        assert_eq!(a.terminations[0].goto, Goto::Step(0));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC*") {
            let _ = import(&s, "t.mps");
        }

        #[test]
        fn mutated_valid_files_never_panic(cuts in proptest::collection::vec((any::<prop::sample::Index>(), "\\PC{0,8}"), 1..6)) {
            let _ = import(&damaged(&valid(), cuts), "t.mps");
        }

        #[test]
        fn cell_mutations_never_panic(row in 0usize..80, col in 0usize..5, cell in prop_oneof![
            Just("Loop".to_owned()), Just("CC".to_owned()), Just("CV".to_owned()), Just("9".to_owned()),
            Just("0".to_owned()), Just("-1".to_owned()), Just("1e400".to_owned()), Just("Goto sequence".to_owned()),
            Just("|I|".to_owned()), Just("µA".to_owned()), "\\PC{0,19}",
        ]) {
            let text = valid();
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let start = lines.iter().position(|l| l.starts_with("Ns")).unwrap_or(0);
            if let Some(line) = lines.get_mut(start + row) {
                let mut chars: Vec<char> = line.chars().collect();
                let at = (COLUMN * (col + 1)).min(chars.len());
                let end = (at + COLUMN).min(chars.len());
                chars.splice(at..end, format!("{cell:<20}").chars());
                *line = chars.into_iter().collect();
            }
            let _ = import(&lines.join("\r\n"), "t.mps");
        }
    }
}

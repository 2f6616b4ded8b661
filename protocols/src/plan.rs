//! The plan: the intermediate representation every protocol becomes.
//!
//! A plan is a flat list of resolved steps in SI units (signed current, positive = charge),
//! with C-rates already turned into amps, explicit terminations with resolved jump targets, and
//! loop begin/end markers. The engine executes it; compilers and importers read and write it.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// A compiled protocol, ready to execute or to compile for a native cycler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The protocol's name (`protocol:` in the document), shown to operators and stored with
    /// the test.
    pub name: String,
    /// Lowercase hex SHA-256 of the source text, so a stored test names exactly the protocol
    /// that ran and a checkpoint can refuse a different plan.
    pub source_sha256: String,
    /// Nominal capacity (`params.capacity`) in Ah, kept because compilers for cyclers that take
    /// C-rates natively and capacity-based loop exits need it.
    pub capacity_ah: Option<f64>,
    /// The protocol's own safety limits (combined with the lab's by [`Safety::stricter`]).
    pub safety: Safety,
    /// The flat step list; always ends with [`PlanStep::End`].
    pub steps: Vec<PlanStep>,
}

/// Safety limits. `None` means "this source sets no limit"; the engine requires the voltage
/// window and the current limit to be known once lab and protocol limits are combined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Safety {
    /// Lowest allowed cell voltage in V: below it the channel faults (over-discharge).
    pub voltage_min: Option<f64>,
    /// Highest allowed cell voltage in V: above it the channel faults (over-charge). Also the
    /// compliance voltage handed to the device for current and power steps.
    pub voltage_max: Option<f64>,
    /// Highest allowed current magnitude in A; also the compliance current for voltage steps.
    pub current_max: Option<f64>,
    /// Highest allowed cell temperature in degC (thermal runaway guard).
    pub temperature_max: Option<f64>,
    /// Highest charge or discharge throughput of a single step in Ah: catches a step whose
    /// termination never fires (wrong cell, broken sense lead).
    pub capacity_max: Option<f64>,
}

impl Safety {
    /// Per field, the stricter of the two limits; a limit set on only one side is kept.
    pub fn stricter(&self, other: &Safety) -> Safety {
        fn pick(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(f(a, b)),
                (a, b) => a.or(b),
            }
        }
        Safety {
            voltage_min: pick(self.voltage_min, other.voltage_min, f64::max),
            voltage_max: pick(self.voltage_max, other.voltage_max, f64::min),
            current_max: pick(self.current_max, other.current_max, f64::min),
            temperature_max: pick(self.temperature_max, other.temperature_max, f64::min),
            capacity_max: pick(self.capacity_max, other.capacity_max, f64::min),
        }
    }
}

/// One entry of the flat step list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlanStep {
    /// A step that drives the cell.
    Action(ActionStep),
    /// Start of a loop body that runs `count` times.
    LoopStart {
        /// How many times the body runs (at least 1).
        count: u32,
        /// Whether each pass after the first starts a new cycle (cycle numbering for data).
        cycle: bool,
        /// Index of the matching [`PlanStep::LoopEnd`], so a loop can be skipped or exited
        /// without scanning.
        end: usize,
    },
    /// End of a loop body.
    LoopEnd {
        /// Index of the matching [`PlanStep::LoopStart`], where the next pass begins.
        start: usize,
    },
    /// The test ends here normally.
    End,
}

/// A step that drives the cell until one of its terminations holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionStep {
    /// Where the step came from in the document (`steps[2].steps[0]`), for messages and logs.
    pub path: String,
    /// The step as written (the source string), shown to operators.
    pub description: String,
    /// What the channel does during the step.
    pub control: Control,
    /// Checked in order on every measurement; the first that holds ends the step.
    pub terminations: Vec<Termination>,
}

/// What a step asks the channel to do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// Output off (open circuit rest).
    Rest,
    /// Constant current.
    Current {
        /// Signed current in A; positive = charge.
        amps: f64,
    },
    /// Constant voltage; the current follows.
    Voltage {
        /// Target voltage in V.
        volts: f64,
    },
    /// Constant power.
    Power {
        /// Signed power in W; positive = charge.
        watts: f64,
    },
}

/// A condition that ends a step, and where to go when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Termination {
    /// When the step ends.
    pub condition: Condition,
    /// Where execution continues.
    pub goto: Goto,
}

/// Step-ending conditions (all values SI; thresholds inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    /// Cell voltage >= value (V).
    VoltageAtLeast(f64),
    /// Cell voltage <= value (V).
    VoltageAtMost(f64),
    /// |current| <= value (A): the end of a constant-voltage hold.
    CurrentMagnitudeAtMost(f64),
    /// Time in the step >= value (s).
    StepTime(f64),
    /// Time since the test started >= value (s).
    TestTime(f64),
    /// Charge or discharge throughput of the step (whichever is larger) >= value (Ah).
    StepCapacity(f64),
    /// Energy throughput of the step >= value (Wh).
    StepEnergy(f64),
}

/// Where execution continues after a termination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goto {
    /// The next step in order (leaving or repeating loops as their counts say).
    Next,
    /// End the test normally.
    End,
    /// Jump to this plan index.
    Step(usize),
}

impl Plan {
    /// Parses a YAML protocol document; `origin` (usually the file name) prefixes error messages.
    pub fn from_yaml(source: &str, origin: &str) -> Result<Plan, ProtocolError> {
        crate::document::compile(source, origin)
    }

    /// The plan as JSON (the form stored with a test and sent between processes).
    pub fn to_json(&self) -> String {
        // A plan holds only strings, finite numbers and enums, which JSON always represents;
        // a failure here would be a bug in this crate, not bad input.
        serde_json::to_string_pretty(self).expect("a plan always serialises to JSON")
    }

    /// Reads a plan from JSON and checks its structure (see [`Plan::validate`]).
    pub fn from_json(s: &str) -> Result<Plan, ProtocolError> {
        let plan: Plan = serde_json::from_str(s).map_err(|e| ProtocolError::Json(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Checks what the engine relies on: the list ends with `End`, loop markers pair up and
    /// nest, every loop body has an action step, every action step has a termination, jump
    /// targets exist, and every number is finite.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::InvalidPlan(m));
        if self.steps.last() != Some(&PlanStep::End) {
            return bad("the step list must end with End".into());
        }
        let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
        let s = &self.safety;
        if ![
            self.capacity_ah,
            s.voltage_min,
            s.voltage_max,
            s.current_max,
            s.temperature_max,
            s.capacity_max,
        ]
        .into_iter()
        .all(finite)
        {
            return bad("capacity and safety limits must be finite numbers".into());
        }
        let mut open: Vec<usize> = Vec::new();
        // Per open loop: whether its body has an action yet, so empty bodies are caught.
        let mut has_action: Vec<bool> = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PlanStep::LoopStart { count, end, .. } => {
                    if *count == 0 {
                        return bad(format!("loop at index {i} has count 0"));
                    }
                    if self.steps.get(*end) != Some(&PlanStep::LoopEnd { start: i }) {
                        return bad(format!(
                            "loop at index {i} names end {end}, which is not its LoopEnd"
                        ));
                    }
                    open.push(i);
                    has_action.push(false);
                }
                PlanStep::LoopEnd { start } => {
                    if open.pop() != Some(*start) {
                        return bad(format!("LoopEnd at index {i} does not close loop {start}"));
                    }
                    if has_action.pop() != Some(true) {
                        return bad(format!("loop at index {start} has no action step"));
                    }
                }
                PlanStep::Action(a) => {
                    // Every enclosing loop counts: an outer body may hold only an inner loop.
                    has_action.iter_mut().for_each(|h| *h = true);
                    self.validate_action(i, a)?;
                }
                PlanStep::End => {}
            }
        }
        if !open.is_empty() {
            return bad("a loop is never closed".into());
        }
        if !self.steps.iter().any(|s| matches!(s, PlanStep::Action(_))) {
            return bad("the plan has no action step".into());
        }
        Ok(())
    }

    fn validate_action(&self, i: usize, a: &ActionStep) -> Result<(), ProtocolError> {
        let bad = |m: String| {
            Err(ProtocolError::InvalidPlan(format!(
                "{} (index {i}): {m}",
                a.path
            )))
        };
        let control_ok = match a.control {
            Control::Rest => true,
            Control::Current { amps: x }
            | Control::Voltage { volts: x }
            | Control::Power { watts: x } => x.is_finite(),
        };
        if !control_ok {
            return bad("setpoint is not a finite number".into());
        }
        if a.terminations.is_empty() {
            return bad("step has no termination and would never end".into());
        }
        for t in &a.terminations {
            let v = match t.condition {
                Condition::VoltageAtLeast(v)
                | Condition::VoltageAtMost(v)
                | Condition::CurrentMagnitudeAtMost(v)
                | Condition::StepTime(v)
                | Condition::TestTime(v)
                | Condition::StepCapacity(v)
                | Condition::StepEnergy(v) => v,
            };
            if !v.is_finite() {
                return bad("termination value is not a finite number".into());
            }
            if let Goto::Step(target) = t.goto
                && !matches!(
                    self.steps.get(target),
                    Some(PlanStep::Action(_) | PlanStep::LoopStart { .. } | PlanStep::End)
                )
            {
                return bad(format!(
                    "jump target {target} is not an action, loop start or End"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stricter_safety_takes_the_narrower_window_per_field() {
        let plan = Safety {
            voltage_min: Some(2.5),
            voltage_max: Some(4.25),
            current_max: Some(7.5),
            temperature_max: None,
            capacity_max: Some(3.0),
        };
        let lab = Safety {
            voltage_min: Some(2.0),
            voltage_max: Some(4.2),
            current_max: Some(10.0),
            temperature_max: Some(55.0),
            capacity_max: None,
        };
        let s = plan.stricter(&lab);
        assert_eq!(s.voltage_min, Some(2.5));
        assert_eq!(s.voltage_max, Some(4.2));
        assert_eq!(s.current_max, Some(7.5));
        assert_eq!(s.temperature_max, Some(55.0));
        assert_eq!(s.capacity_max, Some(3.0));
        assert_eq!(s, lab.stricter(&plan));
    }

    #[test]
    fn plan_without_end_is_rejected() {
        let plan = Plan {
            name: "x".into(),
            source_sha256: String::new(),
            capacity_ah: None,
            safety: Safety::default(),
            steps: vec![],
        };
        assert!(matches!(
            plan.validate(),
            Err(ProtocolError::InvalidPlan(_))
        ));
    }
}

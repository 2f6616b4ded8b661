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
    /// The parameters the plan was resolved with (`params` of the document, with the values
    /// given at start over them), as text with units, so a stored test says what its C-rates
    /// and thresholds meant.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
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
// `Action` is much larger than the markers, but boxing it would change the variant every
// compiler and importer matches on; plans are small, so the wasted space does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlanStep {
    /// A step that drives the cell.
    Action(ActionStep),
    /// Start of a loop body that runs `count` times.
    LoopStart {
        /// How many times the body runs at most (at least 1).
        count: u32,
        /// Whether each pass is one cycle (cycle numbering for data); of nested cycling loops
        /// only the innermost counts. The full rule is the engine's (`docs/protocols.md`).
        cycle: bool,
        /// Index of the matching [`PlanStep::LoopEnd`], so a loop can be skipped or exited
        /// without scanning.
        end: usize,
        /// Early exits, checked at the end of every pass (`until:` in the document): when one
        /// holds the loop is left even if passes remain. Empty = run `count` passes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        until: Vec<LoopCondition>,
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
///
/// Derives `Default` (a rest step with no termination, which [`Plan::validate`] rejects) so
/// importers can write `ActionStep { control, terminations, ..Default::default() }` and keep
/// compiling when fields are added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionStep {
    /// Where the step came from in the document (`steps[2].steps[0]`), for messages and logs.
    pub path: String,
    /// The step as written (the source string), shown to operators.
    pub description: String,
    /// What the channel does during the step.
    pub control: Control,
    /// Checked in order on every measurement; the first that holds ends the step.
    pub terminations: Vec<Termination>,
    /// The label of the block this step starts (`label: capacity`), so compilers can name the
    /// native step that gotos jump to and operators see where a block begins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The recording rule in force for this step: the document's `record`, overridden field
    /// by field by the step's own (or by a PyBaMM `(1 minute period)`). Resolved here so
    /// stores and compilers never merge rules themselves.
    #[serde(default, skip_serializing_if = "Record::is_empty")]
    pub record: Record,
    /// Tags written on a legacy PyBaMM string (`"Rest for 1 h [ocv,relax]"`), kept for the
    /// data record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The data of a [`Control::Profile`] step (held here rather than in the control so
    /// [`Control`] stays `Copy`); `None` for every other control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

/// When the store keeps a sample (it always keeps a step's first and last sample and every
/// sample at which something fired). `None` fields set no rule of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Keep a sample when this many seconds passed since the last kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_s: Option<f64>,
    /// Keep a sample when |V| changed by this many volts since the last kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dv_v: Option<f64>,
    /// Keep a sample when |I| changed by this many amps since the last kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub di_a: Option<f64>,
}

impl Record {
    /// True when no rule is set (only first/last/event samples are kept).
    pub fn is_empty(&self) -> bool {
        *self == Record::default()
    }

    /// What a dedicated cycler logs by on a step whose `record` sets no rule: a point every
    /// 10 s and at every 10 mV change. A native schedule always holds a periodic rule (a
    /// procedure with no reports logs no data between step changes), and these two fields are
    /// ones every native target writes (docs/protocols.md, "Recording").
    pub const NATIVE_DEFAULT: Record = Record {
        every_s: Some(10.0),
        dv_v: Some(0.01),
        di_a: None,
    };

    /// The rule a native schedule writes for a step with this `record`: the rule itself, or
    /// [`Record::NATIVE_DEFAULT`] when it sets none.
    pub fn or_native_default(&self) -> Record {
        if self.is_empty() {
            Record::NATIVE_DEFAULT
        } else {
            *self
        }
    }

    /// Field by field, `over` where it sets a rule, else `self`: how a step's `record`
    /// overrides the document's.
    pub fn overridden_by(&self, over: &Record) -> Record {
        Record {
            every_s: over.every_s.or(self.every_s),
            dv_v: over.dv_v.or(self.dv_v),
            di_a: over.di_a.or(self.di_a),
        }
    }
}

/// A time series driven by a [`Control::Profile`] step (a drive cycle such as US06).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// `(time in s from the start of one pass, setpoint)` pairs with strictly increasing
    /// times starting at 0; the setpoint is A, W or V (see [`ProfileKind`]), signed with
    /// positive = charge. Each value holds until the next time (zero-order hold).
    pub points: Vec<(f64, f64)>,
    /// How many times the profile is played back to back (at least 1).
    pub repeat: u32,
}

impl Profile {
    /// Length of one pass in s: the last time stamp plus the last sampling interval, so a
    /// 1 Hz profile of 600 rows lasts 600 s (the last value is held for one interval too).
    pub fn pass_duration_s(&self) -> f64 {
        match self.points.as_slice() {
            [] => 0.0,
            [(t, _)] => t + 1.0,
            [.., (a, _), (b, _)] => b + (b - a),
        }
    }

    /// The setpoint at time `t` s into the step (zero-order hold, repeating passes); the last
    /// value after the final pass.
    pub fn value_at(&self, t: f64) -> f64 {
        let pass = self.pass_duration_s();
        if self.points.is_empty() || pass <= 0.0 {
            return 0.0;
        }
        let total = pass * f64::from(self.repeat.max(1));
        let local = if t >= total { pass } else { t.max(0.0) % pass };
        let i = self.points.partition_point(|(pt, _)| *pt <= local);
        self.points[i.saturating_sub(1)].1
    }
}

/// What the values of a [`Profile`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileKind {
    /// Signed current in A.
    Current,
    /// Signed power in W.
    Power,
    /// Voltage in V (the current follows, within the current limit).
    Voltage,
}

/// A condition checked at the end of every pass of a loop; when one holds the loop is left.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LoopCondition {
    /// The discharge capacity of this pass is below this fraction of the first pass's
    /// (`discharge_capacity < 80% first` = 0.8): the classic end-of-life criterion.
    DischargeCapacityBelowFractionOfFirst(f64),
    /// The discharge capacity of this pass is below this value in Ah.
    DischargeCapacityBelow(f64),
    /// The test's cycle number is at least this (`cycle >= 100`).
    CycleAtLeast(u32),
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
    /// Constant current until the voltage reaches `volts`, then constant voltage there (one
    /// step, as Maccor, Neware and Arbin run it). Ends on its terminations, usually
    /// `CurrentMagnitudeAtMost(cutoff)`. Kept as one control, not a current step with a
    /// voltage limit, so a compiler that does not know it refuses it instead of silently
    /// running plain constant current; targets without CCCV compile it to CC + CV.
    Cccv {
        /// Signed current of the CC phase in A; positive = charge.
        amps: f64,
        /// The CV voltage in V (reached from below when charging, from above discharging).
        volts: f64,
    },
    /// Discharge through a fixed resistance: the stepped engine sets I = -V/R every poll, so
    /// any power stage can run it.
    Resistance {
        /// Load resistance in ohm (> 0).
        ohms: f64,
    },
    /// Play the [`ActionStep::profile`] time series (drive cycle); the step's terminations
    /// include the profile's total duration.
    Profile {
        /// Whether the values are amps, watts or volts.
        kind: ProfileKind,
    },
    /// Set the thermal chamber and wait until the measured temperature has stayed within
    /// `within_c` of the setpoint for `hold_s` (output off meanwhile). The step ends by
    /// itself when settled; its terminations (if any) apply too.
    Chamber {
        /// Chamber setpoint in degC.
        temperature_c: f64,
        /// Settled band half-width in degC (infinite = do not wait).
        within_c: f64,
        /// How long the temperature must stay in the band, in s (0 = do not wait).
        hold_s: f64,
        /// Faults the test if not settled after this many s; `None` = wait indefinitely.
        timeout_s: Option<f64>,
    },
}

impl Default for Control {
    /// Rest: the harmless control, for `ActionStep::default()`.
    fn default() -> Control {
        Control::Rest
    }
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
    /// Cell temperature >= value (degC); never holds without a temperature reading.
    TemperatureAtLeast(f64),
    /// Cell temperature <= value (degC); never holds without a temperature reading.
    TemperatureAtMost(f64),
    /// |dV/dt| <= value (V/s) between two polls of the step: the end of a relaxation.
    VoltageRateMagnitudeAtMost(f64),
    /// |dV/dt| >= value (V/s) between two polls of the step: a knee or a sudden drop.
    VoltageRateMagnitudeAtLeast(f64),
}

impl Condition {
    /// The threshold in SI, for validation and for compilers that write it out.
    pub fn value(&self) -> f64 {
        match *self {
            Condition::VoltageAtLeast(v)
            | Condition::VoltageAtMost(v)
            | Condition::CurrentMagnitudeAtMost(v)
            | Condition::StepTime(v)
            | Condition::TestTime(v)
            | Condition::StepCapacity(v)
            | Condition::StepEnergy(v)
            | Condition::TemperatureAtLeast(v)
            | Condition::TemperatureAtMost(v)
            | Condition::VoltageRateMagnitudeAtMost(v)
            | Condition::VoltageRateMagnitudeAtLeast(v) => v,
        }
    }
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

/// Lowercase hex SHA-256 of a source text: what [`Plan::source_sha256`] holds, for parsed and
/// imported plans alike.
pub(crate) fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plan {
    /// The sign of the current each step commands, indexed like [`Plan::steps`] (a sample's
    /// plan step): 1 a charge, -1 a discharge, 0 when the step does not say (rest, constant
    /// voltage, a profile, a chamber step, loop markers). The quality checks compare a
    /// sample's current with it.
    pub fn commanded_signs(&self) -> Vec<i8> {
        let sign = |v: f64| {
            if v > 0.0 {
                1
            } else if v < 0.0 {
                -1
            } else {
                0
            }
        };
        self.steps
            .iter()
            .map(|step| match step {
                PlanStep::Action(a) => match a.control {
                    Control::Current { amps } | Control::Cccv { amps, .. } => sign(amps),
                    Control::Power { watts } => sign(watts),
                    Control::Resistance { .. } => -1,
                    Control::Rest
                    | Control::Voltage { .. }
                    | Control::Profile { .. }
                    | Control::Chamber { .. } => 0,
                },
                _ => 0,
            })
            .collect()
    }

    /// Whether each step holds the voltage, indexed like [`Plan::steps`]: a constant-voltage
    /// step, the CV phase of a CCCV step, a voltage profile. There a voltage that does not move
    /// while current flows is the control working, not a frozen reading.
    pub fn holds_voltage(&self) -> Vec<bool> {
        self.steps
            .iter()
            .map(|step| match step {
                PlanStep::Action(a) => matches!(
                    a.control,
                    Control::Voltage { .. }
                        | Control::Cccv { .. }
                        | Control::Profile {
                            kind: ProfileKind::Voltage
                        }
                ),
                _ => false,
            })
            .collect()
    }

    /// The constant current each step commands, A (positive charging), indexed like
    /// [`Plan::steps`]: a constant-current step's; none for every other step (CCCV, whose CV
    /// phase lets the current fall, included).
    pub fn commanded_amps(&self) -> Vec<Option<f64>> {
        self.steps
            .iter()
            .map(|step| match step {
                PlanStep::Action(a) => match a.control {
                    Control::Current { amps } => Some(amps),
                    _ => None,
                },
                _ => None,
            })
            .collect()
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
                PlanStep::LoopStart {
                    count, end, until, ..
                } => {
                    if *count == 0 {
                        return bad(format!("loop at index {i} has count 0"));
                    }
                    let finite_exit = until.iter().all(|c| match *c {
                        LoopCondition::DischargeCapacityBelowFractionOfFirst(x)
                        | LoopCondition::DischargeCapacityBelow(x) => x.is_finite(),
                        LoopCondition::CycleAtLeast(_) => true,
                    });
                    if !finite_exit {
                        return bad(format!("loop at index {i} has a non-finite exit condition"));
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
            Control::Cccv { amps, volts } => amps.is_finite() && volts.is_finite(),
            Control::Resistance { ohms } => ohms.is_finite() && ohms > 0.0,
            Control::Profile { .. } => a.profile.as_ref().is_some_and(|p| {
                p.repeat >= 1
                    && !p.points.is_empty()
                    && p.points.first().is_some_and(|(t, _)| *t == 0.0)
                    && p.points.iter().all(|(t, v)| t.is_finite() && v.is_finite())
                    && p.points.windows(2).all(|w| w[0].0 < w[1].0)
            }),
            Control::Chamber {
                temperature_c,
                within_c,
                hold_s,
                timeout_s,
            } => {
                temperature_c.is_finite()
                    && within_c >= 0.0
                    && hold_s.is_finite()
                    && hold_s >= 0.0
                    && timeout_s.is_none_or(f64::is_finite)
            }
        };
        if !control_ok {
            return bad(
                "setpoint is not valid (not finite, a resistance <= 0, a negative chamber band or hold, or profile data missing, not starting at 0 s or not increasing in time)"
                    .into(),
            );
        }
        // A chamber step ends by itself once settled; every other step needs a termination.
        if a.terminations.is_empty() && !matches!(a.control, Control::Chamber { .. }) {
            return bad("step has no termination and would never end".into());
        }
        for t in &a.terminations {
            let v = t.condition.value();
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
            params: Default::default(),
            safety: Safety::default(),
            steps: vec![],
        };
        assert!(matches!(
            plan.validate(),
            Err(ProtocolError::InvalidPlan(_))
        ));
    }

    #[test]
    fn profile_holds_each_value_until_the_next_time_and_repeats() {
        let p = Profile {
            points: vec![(0.0, 1.0), (10.0, -2.0), (20.0, 0.5)],
            repeat: 2,
        };
        assert_eq!(p.pass_duration_s(), 30.0);
        assert_eq!(p.value_at(0.0), 1.0);
        assert_eq!(p.value_at(9.9), 1.0);
        assert_eq!(p.value_at(10.0), -2.0);
        assert_eq!(p.value_at(29.0), 0.5);
        assert_eq!(p.value_at(31.0), 1.0);
        assert_eq!(p.value_at(1e9), 0.5);
    }

    #[test]
    fn record_override_replaces_only_the_fields_it_sets() {
        let base = Record {
            every_s: Some(10.0),
            dv_v: Some(0.005),
            di_a: None,
        };
        let over = Record {
            every_s: Some(1.0),
            ..Record::default()
        };
        assert_eq!(
            base.overridden_by(&over),
            Record {
                every_s: Some(1.0),
                dv_v: Some(0.005),
                di_a: None
            }
        );
    }

    #[test]
    fn each_step_says_the_direction_it_commands_and_whether_it_holds_the_voltage() {
        let plan = Plan::from_yaml(
            "protocol: p\nversion: 1\nparams: {capacity: 2 Ah}\n\
             safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\n\
             steps: [\"Charge at 1 A until 4.1 V\", \"Hold at 4.1 V until 50 mA\", \
             \"Rest for 1 minute\", \"Discharge at 1 A until 3.0 V\"]\n",
            "p.yaml",
        )
        .unwrap();
        // The four actions, then the end.
        assert_eq!(plan.commanded_signs(), [1, 0, 0, -1, 0]);
        assert_eq!(plan.holds_voltage(), [false, true, false, false, false]);
        assert_eq!(
            plan.commanded_amps(),
            [Some(1.0), None, None, Some(-1.0), None]
        );
    }
}

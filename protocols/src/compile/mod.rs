//! Compilers: a plan -> a cycler's native schedule (facts: `shared/protocols.md`).
//!
//! What a target cannot express is a [`CompileError`] naming the step and the target, never a
//! silently different protocol. One module per target; each keeps its format's facts (codes,
//! units, spellings) in tables at its top.

use crate::plan::{Plan, PlanStep};
use serde::{Deserialize, Serialize};
use std::fmt;

pub(crate) mod arbin;
pub(crate) mod biologic;
pub(crate) mod maccor;
pub(crate) mod native;
pub(crate) mod neware;
#[cfg(test)]
pub(crate) mod plan_compare;
pub mod pybamm;
#[cfg(test)]
mod record_rules;
#[cfg(test)]
mod roundtrip;

/// A native schedule format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Maccor procedure (.000, XML).
    Maccor,
    /// Neware BTS step file (XML).
    Neware,
    /// Arbin schedule (.sdu, INI-style).
    Arbin,
    /// BioLogic Modulo Bat settings (.mps, text).
    Biologic,
    /// PyBaMM experiment: a list of step strings (Python list literal).
    Pybamm,
    /// PyBaMM's JSON experiment configuration.
    PybammJson,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Maccor,
        Target::Neware,
        Target::Arbin,
        Target::Biologic,
        Target::Pybamm,
        Target::PybammJson,
    ];

    /// The name used on the command line (`--target`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Maccor => "maccor",
            Target::Neware => "neware",
            Target::Arbin => "arbin",
            Target::Biologic => "biologic",
            Target::Pybamm => "pybamm",
            Target::PybammJson => "pybamm-json",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The usual file extension of the format.
    pub fn extension(self) -> &'static str {
        match self {
            Target::Maccor => "000",
            Target::Neware => "xml",
            Target::Arbin => "sdu",
            Target::Biologic => "mps",
            Target::Pybamm => "py",
            Target::PybammJson => "json",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a plan cannot be compiled for a target.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{target} cannot express {step} ({description}): {message}")]
pub struct CompileError {
    pub target: Target,
    /// The step's path in the protocol (`steps[3].steps[1]`), or "the protocol" for whole-plan
    /// problems.
    pub step: String,
    /// The step as written.
    pub description: String,
    /// What the target lacks, and what to do instead where there is an alternative.
    pub message: String,
}

/// Which plan step each of a native schedule's own step numbers runs, as the compiler laid
/// the schedule out: a cycler logs its own step number with every record, and this map turns
/// it back into the plan step (the same index on every target).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMap {
    /// Per native step number from 1 (`plan_steps[n - 1]` for step `n`): the plan index of
    /// the action step it runs; `None` for the schedule's own control steps (loop, cycle,
    /// counter and end steps), which run no plan action.
    pub plan_steps: Vec<Option<usize>>,
}

impl StepMap {
    /// The plan index that native step `native` (from 1) runs, if it runs an action step.
    pub fn plan_step(&self, native: u32) -> Option<usize> {
        let n = usize::try_from(native).ok()?.checked_sub(1)?;
        self.plan_steps.get(n).copied().flatten()
    }

    /// The native step numbers (from 1) of plan index `i` (usually one).
    pub fn native_steps(&self, i: usize) -> Vec<u32> {
        (1u32..)
            .zip(&self.plan_steps)
            .filter(|(_, p)| **p == Some(i))
            .map(|(n, _)| n)
            .collect()
    }

    /// Checks the map against the plan it was made for: every entry names an action step.
    fn names_actions_of(&self, plan: &Plan) -> bool {
        self.plan_steps
            .iter()
            .flatten()
            .all(|&i| matches!(plan.steps.get(i), Some(PlanStep::Action(_))))
    }
}

/// A schedule in a target's native format, with the map from its step numbers to plan steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// The schedule file's text.
    pub text: String,
    /// Native step number -> plan step; empty for targets whose runs cyclerd does not follow
    /// (BioLogic, PyBaMM).
    pub step_map: StepMap,
}

/// Compiles `plan` to `target`'s native format.
pub fn compile(plan: &Plan, target: Target) -> Result<String, CompileError> {
    compile_mapped(plan, target).map(|c| c.text)
}

/// Compiles `plan` to `target`'s native format, with the map from the schedule's step numbers
/// back to plan steps.
pub fn compile_mapped(plan: &Plan, target: Target) -> Result<Compiled, CompileError> {
    let (text, step_map) = match target {
        Target::Maccor => maccor::compile(plan)?,
        Target::Neware => neware::compile(plan)?,
        Target::Arbin => arbin::compile_mapped(plan)?,
        Target::Biologic => (biologic::compile(plan)?, StepMap::default()),
        Target::Pybamm => (pybamm::compile(plan)?, StepMap::default()),
        Target::PybammJson => (pybamm::compile_json(plan)?, StepMap::default()),
    };
    debug_assert!(step_map.names_actions_of(plan));
    Ok(Compiled { text, step_map })
}

#[cfg(test)]
mod step_map_tests {
    use super::*;

    /// A charging preamble, a cycling loop of two steps, a step after it.
    const PROTOCOL: &str = "protocol: map\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n  - \"Charge at C/2 until 4.1 V\"\n  - repeat: 2\n    cycle: true\n    steps:\n      - \"Discharge at C/2 until 3.3 V\"\n      - \"Charge at C/2 until 4.1 V\"\n  - \"Rest for 10 minutes\"\n";

    fn plan() -> Plan {
        // Plan: 0 charge, 1 LoopStart, 2 discharge, 3 charge, 4 LoopEnd, 5 rest, 6 End.
        Plan::from_yaml(PROTOCOL, "map.yaml").unwrap()
    }

    fn map(target: Target) -> Vec<Option<usize>> {
        compile_mapped(&plan(), target).unwrap().step_map.plan_steps
    }

    #[test]
    fn maccor_step_numbers_map_to_plan_steps_past_do_advcycle_loop_and_end() {
        // 1 Charge, 2 Do 1, 3 Dischrge, 4 Charge, 5 AdvCycle, 6 Loop 1, 7 Rest, 8 End.
        assert_eq!(
            map(Target::Maccor),
            [Some(0), None, Some(2), Some(3), None, None, Some(5), None]
        );
    }

    #[test]
    fn neware_step_ids_map_to_plan_steps_past_the_cycle_and_end_steps() {
        // 1 CC charge, 2 CC discharge, 3 CC charge, 4 cycle, 5 rest, 6 end.
        assert_eq!(
            map(Target::Neware),
            [Some(0), Some(2), Some(3), None, Some(5), None]
        );
    }

    #[test]
    fn arbin_step_numbers_map_to_plan_steps_past_the_counter_steps() {
        // Schedule_Step0..5: charge, reset counter, discharge, charge, increment, rest.
        assert_eq!(
            map(Target::Arbin),
            [Some(0), None, Some(2), Some(3), None, Some(5)]
        );
    }

    #[test]
    fn a_step_map_answers_for_native_numbers_from_one_and_nothing_for_control_steps() {
        let m = compile_mapped(&plan(), Target::Maccor).unwrap().step_map;
        assert_eq!(m.plan_step(0), None);
        assert_eq!(m.plan_step(1), Some(0));
        assert_eq!(m.plan_step(5), None);
        assert_eq!(m.plan_step(7), Some(5));
        assert_eq!(m.plan_step(99), None);
        assert_eq!(m.native_steps(3), vec![4]);
    }

    #[test]
    fn the_step_map_survives_import_the_way_each_simulator_reads_its_schedule() {
        // The simulators log the native step number of the imported action's path; the map
        // must send it back to the plan index of the same step in the original plan.
        for target in [Target::Maccor, Target::Neware, Target::Arbin] {
            let original = plan();
            let compiled = compile_mapped(&original, target).unwrap();
            let kind = match target {
                Target::Maccor => crate::import::SourceKind::Maccor,
                Target::Neware => crate::import::SourceKind::Neware,
                _ => crate::import::SourceKind::Arbin,
            };
            let imported = crate::import::import(&compiled.text, kind, "x").unwrap();
            let described = |p: &Plan, i: usize| match &p.steps[i] {
                PlanStep::Action(a) => a.control,
                s => panic!("{s:?}"),
            };
            for (j, step) in imported.steps.iter().enumerate() {
                let PlanStep::Action(a) = step else { continue };
                let number: u32 = a
                    .path
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap();
                let native = if target == Target::Arbin {
                    number + 1
                } else {
                    number
                };
                let i = compiled.step_map.plan_step(native).expect("an action");
                assert_eq!(
                    described(&original, i),
                    described(&imported, j),
                    "{target}: native step {native}"
                );
            }
        }
    }
}

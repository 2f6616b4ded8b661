//! The document compiler's tests: errors that name file, line, column and path, the top
//! level, and (in `steps`) what each kind of step compiles to; `properties`: no input panics.

use super::text::{parse_condition, parse_loop_condition, parse_profile_csv, substitute};
use super::*;
use crate::plan::sha256_hex;
use crate::plan::{
    ActionStep, Condition, Control, Goto, LoopCondition, ProfileKind, Record, Safety, Termination,
};
use proptest::prelude::*;

mod properties;
mod steps;

const HEAD: &str = "protocol: Test\nversion: 1\nparams:\n  capacity: 2.5 Ah\n  v_max: 4.2 V\nsafety:\n  voltage: [2.5 V, 4.25 V]\n  current: 5 A\n";

fn plan(steps: &str) -> Result<Plan, ProtocolError> {
    Plan::from_yaml(&format!("{HEAD}steps:\n{steps}"), "test.yaml")
}

fn message(r: Result<Plan, ProtocolError>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let top = message(Plan::from_yaml(&format!("{HEAD}stepz: []\n"), "t.yaml"));
    assert!(
        top.starts_with("t.yaml:9:1: stepz: unknown key `stepz`"),
        "{top}"
    );
    let nested = message(plan(
        "  - repeat: 2\n    cycles: true\n    steps: [\"Rest for 1 s\"]\n",
    ));
    assert!(
        nested.contains("test.yaml:11:5: steps[0].cycles: unknown key `cycles`"),
        "{nested}"
    );
    let safety = message(Plan::from_yaml(
        "protocol: x\nversion: 1\nsafety:\n  power: 5 W\nsteps: [\"Rest for 1 s\"]\n",
        "s.yaml",
    ));
    assert!(
        safety.contains("s.yaml:4:3: safety.power: unknown key `power`"),
        "{safety}"
    );
}

#[test]
fn error_names_step_and_column() {
    let m = message(plan(
        "  - \"Rest for 1 s\"\n  - repeat: 2\n    steps:\n      - \"Charge at 1.5 for 1 hour\"\n",
    ));
    assert_eq!(
        m,
        "test.yaml:13:9: steps[1].steps[0], column 15: expected a unit (A, V, W, Ohm, C) after \"1.5\""
    );
}

#[test]
fn c_rate_without_capacity_param_is_an_error() {
    let m = message(Plan::from_yaml(
        "protocol: x\nversion: 1\nsteps: [\"Charge at 1C until 4.2 V\"]\n",
        "t.yaml",
    ));
    assert!(
        m.contains("steps[0], column 11") && m.contains("capacity"),
        "{m}"
    );
}

#[test]
fn missing_name_or_version_is_an_error() {
    let m = message(Plan::from_yaml(
        "version: 1\nsteps: [\"Rest for 1 s\"]\n",
        "t.yaml",
    ));
    assert!(m.contains("missing required key `protocol`"), "{m}");
    let m = message(Plan::from_yaml(
        "protocol: x\nsteps: [\"Rest for 1 s\"]\n",
        "t.yaml",
    ));
    assert!(m.contains("missing required key `version`"), "{m}");
    let m = message(Plan::from_yaml(
        "protocol: x\nversion: 2\nsteps: [\"Rest for 1 s\"]\n",
        "t.yaml",
    ));
    assert!(
        m.contains("t.yaml:2:10: version: unsupported language version 2"),
        "{m}"
    );
}

#[test]
fn invalid_yaml_reports_line_and_column() {
    let e = Plan::from_yaml("protocol: x\nsteps: [\n", "bad.yaml").unwrap_err();
    let ProtocolError::Yaml { at, .. } = &e else {
        panic!("expected a YAML error, got {e}");
    };
    assert_eq!(at.origin, "bad.yaml");
    assert!(at.line.is_some() && at.column.is_some(), "{e}");
    assert!(e.to_string().starts_with("bad.yaml:"), "{e}");
}

#[test]
fn repeat_compiles_to_loop_markers_with_matching_indices() {
    let p = plan("  - \"Rest for 1 s\"\n  - repeat: 3\n    cycle: true\n    steps:\n      - \"Charge at 1 A for 1 s\"\n      - repeat: 2\n        steps: [\"Rest for 2 s\"]\n").unwrap();
    assert_eq!(p.steps.len(), 8);
    assert_eq!(
        p.steps[1],
        PlanStep::LoopStart {
            count: 3,
            cycle: true,
            end: 6,
            until: vec![],
        }
    );
    assert_eq!(
        p.steps[3],
        PlanStep::LoopStart {
            count: 2,
            cycle: false,
            end: 5,
            until: vec![],
        }
    );
    assert_eq!(p.steps[5], PlanStep::LoopEnd { start: 3 });
    assert_eq!(p.steps[6], PlanStep::LoopEnd { start: 1 });
    assert_eq!(p.steps[7], PlanStep::End);
    let PlanStep::Action(a) = &p.steps[4] else {
        panic!("not an action")
    };
    assert_eq!(a.path, "steps[1].steps[1].steps[0]");
    assert_eq!(a.terminations[0].condition, Condition::StepTime(2.0));
}

#[test]
fn label_blocks_flatten_and_duplicate_labels_are_errors() {
    let p = plan(
        "  - label: capacity\n    steps: [\"Rest for 1 s\", \"Charge at C/3 until ${v_max}\"]\n",
    )
    .unwrap();
    assert_eq!(p.steps.len(), 3);
    let PlanStep::Action(a) = &p.steps[1] else {
        panic!("not an action")
    };
    assert_eq!(a.path, "steps[0].steps[1]");
    assert!(matches!(a.control, Control::Current { amps } if (amps - 2.5 / 3.0).abs() < 1e-12));
    let m = message(plan(
        "  - label: a\n    steps: [\"Rest for 1 s\"]\n  - label: a\n    steps: [\"Rest for 1 s\"]\n",
    ));
    assert!(
        m.contains("steps[1].label: the label `a` is used twice"),
        "{m}"
    );
}

#[test]
fn safety_and_capacity_are_read_in_si() {
    let p = Plan::from_yaml(
        "protocol: x\nversion: 1\nparams: {capacity: 2500 mAh, lo: 2400 mV}\nsafety:\n  voltage: [\"${lo}\", 4.25 V]\n  current: 7500 mA\n  temperature: 60 degC\n  capacity: 3.0 Ah\nsteps: [\"Rest for 1 s\"]\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(p.capacity_ah, Some(2.5));
    assert_eq!(
        p.safety,
        Safety {
            voltage_min: Some(2.4),
            voltage_max: Some(4.25),
            current_max: Some(7.5),
            temperature_max: Some(60.0),
            capacity_max: Some(3.0),
        }
    );
}

#[test]
fn wrong_unit_in_safety_is_an_error_at_the_value() {
    let m = message(Plan::from_yaml(
        "protocol: x\nversion: 1\nsafety:\n  current: 5 V\nsteps: [\"Rest for 1 s\"]\n",
        "t.yaml",
    ));
    assert_eq!(
        m,
        "t.yaml:4:12: safety.current: expected a current such as \"7.5 A\", found \"5 V\" (V)"
    );
}

#[test]
fn empty_or_malformed_step_lists_are_errors() {
    assert!(message(plan("  []\n")).contains("at least one step"));
    assert!(message(plan("  - repeat: 0\n    steps: [\"Rest for 1 s\"]\n")).contains("1 or more"));
    assert!(message(plan("  - repeat: 2\n")).contains("missing `steps`"));
    assert!(message(plan("  - 42\n")).contains("expected a step string"));
    assert!(message(Plan::from_yaml("", "t.yaml")).contains("empty"));
}

#[test]
fn plan_round_trips_through_json() {
    let p = plan("  - \"Rest for 1 s\"\n  - repeat: 2\n    cycle: true\n    steps: [\"Charge at C/2 for 10 min or until 4.2 V\", \"Hold at 4.2 V until C/20\", \"Discharge at 5 W until 3 V\"]\n").unwrap();
    let back = Plan::from_json(&p.to_json()).unwrap();
    assert_eq!(back, p);
    assert!(matches!(Plan::from_json("{"), Err(ProtocolError::Json(_))));
}

#[test]
fn source_hash_is_sha256_of_the_text() {
    let source = format!("{HEAD}steps: [\"Rest for 1 s\"]\n");
    let p = Plan::from_yaml(&source, "t.yaml").unwrap();
    assert_eq!(p.source_sha256.len(), 64);
    assert_eq!(p.source_sha256, sha256_hex(&source));
    assert_eq!(
        sha256_hex(""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

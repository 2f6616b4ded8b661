//! What each kind of step compiles to: structured steps, terminations, loops, records,
//! profiles, macros and parameters.

use super::*;
use crate::compile::plan_compare::without_names;

fn action(p: &Plan, i: usize) -> &ActionStep {
    match &p.steps[i] {
        PlanStep::Action(a) => a,
        other => panic!("index {i} is not an action: {other:?}"),
    }
}

fn conditions(a: &ActionStep) -> Vec<Condition> {
    a.terminations.iter().map(|t| t.condition).collect()
}

#[test]
fn structured_steps_compile_to_resolved_controls() {
    let p = plan(concat!(
        "  - rest: 10 min\n",
        "  - cc: 1C\n    direction: charge\n    until: \"V >= ${v_max}\"\n",
        "  - cv: \"{v_max}\"\n    until: [\"I <= C/20\", \"t >= 1 h\"]\n",
        "  - cccv: C/2\n    voltage: 4.2 V\n    cutoff: 50 mA\n",
        "  - cp: 5 W\n    direction: discharge\n    until: [\"V <= 3 V\"]\n",
        "  - cr: 4 Ohm\n    for: 30 min\n",
        "  - chamber: 25 degC\n    wait: {within: 0.5 degC, for: 30 min}\n    timeout: 4 h\n",
    ))
    .unwrap();
    assert_eq!(action(&p, 0).control, Control::Rest);
    assert_eq!(conditions(action(&p, 0)), [Condition::StepTime(600.0)]);
    assert_eq!(action(&p, 1).control, Control::Current { amps: 2.5 });
    assert_eq!(conditions(action(&p, 1)), [Condition::VoltageAtLeast(4.2)]);
    assert_eq!(action(&p, 2).control, Control::Voltage { volts: 4.2 });
    assert_eq!(
        conditions(action(&p, 2)),
        [
            Condition::CurrentMagnitudeAtMost(0.125),
            Condition::StepTime(3600.0)
        ]
    );
    assert_eq!(
        action(&p, 3).control,
        Control::Cccv {
            amps: 1.25,
            volts: 4.2
        }
    );
    assert!(
        matches!(conditions(action(&p, 3))[..], [Condition::CurrentMagnitudeAtMost(x)] if (x - 0.05).abs() < 1e-12)
    );
    assert_eq!(action(&p, 4).control, Control::Power { watts: -5.0 });
    assert_eq!(action(&p, 5).control, Control::Resistance { ohms: 4.0 });
    assert_eq!(
        action(&p, 6).control,
        Control::Chamber {
            temperature_c: 25.0,
            within_c: 0.5,
            hold_s: 1800.0,
            timeout_s: Some(14400.0)
        }
    );
    assert!(action(&p, 6).terminations.is_empty());
}

#[test]
fn every_termination_kind_parses_with_its_goto() {
    let p = plan(concat!(
        "  - label: top\n    steps:\n",
        "      - rest: true\n        until:\n",
        "          - \"V >= 4.1 V\"\n          - \"V <= 3 V -> end\"\n          - \"I <= 100 mA -> next\"\n",
        "          - \"t >= 2 h -> top\"\n          - \"T >= 10 h -> later\"\n          - \"Ah >= 1.5 Ah\"\n",
        "          - \"Wh >= 5 Wh\"\n          - \"Temp >= 45 degC\"\n          - \"Temp < 10 degC\"\n",
        "          - \"dV/dt <= 1 mV/min\"\n          - \"dV/dt >= 0.5 mV/s\"\n",
        "  - label: later\n    steps: [\"Rest for 1 s\"]\n",
    ))
    .unwrap();
    let a = action(&p, 0);
    assert_eq!(a.label.as_deref(), Some("top"));
    assert_eq!(action(&p, 1).label.as_deref(), Some("later"));
    let got: Vec<(Condition, Goto)> = a
        .terminations
        .iter()
        .map(|t| (t.condition, t.goto))
        .collect();
    assert_eq!(got[0], (Condition::VoltageAtLeast(4.1), Goto::Next));
    assert_eq!(got[1], (Condition::VoltageAtMost(3.0), Goto::End));
    assert_eq!(got[2], (Condition::CurrentMagnitudeAtMost(0.1), Goto::Next));
    assert_eq!(got[3], (Condition::StepTime(7200.0), Goto::Step(0)));
    assert_eq!(got[4], (Condition::TestTime(36000.0), Goto::Step(1)));
    assert_eq!(got[5].0, Condition::StepCapacity(1.5));
    assert_eq!(got[6].0, Condition::StepEnergy(5.0));
    assert_eq!(got[7].0, Condition::TemperatureAtLeast(45.0));
    assert_eq!(got[8].0, Condition::TemperatureAtMost(10.0));
    assert!(
        matches!(got[9].0, Condition::VoltageRateMagnitudeAtMost(x) if (x - 1e-3 / 60.0).abs() < 1e-15)
    );
    assert!(
        matches!(got[10].0, Condition::VoltageRateMagnitudeAtLeast(x) if (x - 5e-4).abs() < 1e-15)
    );
}

#[test]
fn bad_termination_names_file_line_column_and_path() {
    let m = message(plan(
        "  - cc: 1 A\n    direction: charge\n    until: [\"t >= 1 h\", \"X >= 3\"]\n",
    ));
    assert!(
        m.starts_with("test.yaml:12:25: steps[0].until[1]: in \"X >= 3\": expected a condition"),
        "{m}"
    );
    let m = message(plan("  - rest: 1 h\n    until: \"V >= 4 V -> nowhere\"\n"));
    assert!(m.contains("steps[0].until: unknown label `nowhere`"), "{m}");
    let m = message(plan("  - cc: 1 A\n    until: \"V >= 4 V\"\n"));
    assert!(
        m.contains("steps[0].direction: a `cc` step needs `direction: charge`"),
        "{m}"
    );
    let m = message(plan("  - cc: 1 A\n    direction: charge\n"));
    assert!(m.contains("never ends"), "{m}");
    let m = message(plan("  - cv: 4.2 A\n    for: 1 h\n"));
    assert!(
        m.contains("test.yaml:10:9: steps[0].cv: expected a voltage"),
        "{m}"
    );
    let m = message(plan("  - rest: 1 h\n    until: \"t <= 1 h\"\n"));
    assert!(m.contains("only takes >="), "{m}");
    let m = message(plan("  - bogus: 1\n"));
    assert!(m.contains("steps[0].bogus: unknown key `bogus`"), "{m}");
}

#[test]
fn repeat_until_compiles_loop_exits() {
    let p = plan(concat!(
        "  - repeat: 500\n    until: [discharge_capacity < 80% first, \"cycle >= 300\", discharge_capacity < 1.5 Ah]\n",
        "    cycle: true\n    steps: [\"Rest for 1 s\"]\n",
    ))
    .unwrap();
    let PlanStep::LoopStart { until, count, .. } = &p.steps[0] else {
        panic!()
    };
    assert_eq!(*count, 500);
    assert_eq!(
        until[..],
        [
            LoopCondition::DischargeCapacityBelowFractionOfFirst(0.8),
            LoopCondition::CycleAtLeast(300),
            LoopCondition::DischargeCapacityBelow(1.5)
        ]
    );
    let m = message(plan(
        "  - repeat: 5\n    until: capacity < 80%\n    steps: [\"Rest for 1 s\"]\n",
    ));
    assert!(m.contains("steps[0].until: expected a loop exit"), "{m}");
}

#[test]
fn record_rules_default_from_the_document_and_override_per_step() {
    let source = format!(
        "{HEAD}record: {{every: 10 s, dv: 5 mV, di: 50 mA}}\nsteps:\n  - \"Rest for 1 h\"\n  - \"Rest for 1 h (1 minute period)\"\n  - rest: 1 h\n    record: {{dv: 1 mV}}\n  - rest: 1 h\n    ocv: true\n"
    );
    let p = Plan::from_yaml(&source, "t.yaml").unwrap();
    let base = Record {
        every_s: Some(10.0),
        dv_v: Some(0.005),
        di_a: Some(0.05),
    };
    assert_eq!(action(&p, 0).record, base);
    assert_eq!(
        action(&p, 1).record,
        Record {
            every_s: Some(60.0),
            ..base
        }
    );
    assert_eq!(
        action(&p, 2).record,
        Record {
            dv_v: Some(0.001),
            ..base
        }
    );
    assert_eq!(
        action(&p, 3).record,
        Record {
            every_s: Some(1.0),
            dv_v: Some(0.001),
            ..base
        }
    );
}

#[test]
fn profiles_load_csv_through_the_resolver() {
    let csv = |name: &str| -> Result<String, String> {
        match name {
            "us06.csv" => Ok("time_s,current_a\n0,1.0\n1,-2.0\n2,0.5\n".into()),
            "bad.csv" => Ok("0,1\n0,2\n".into()),
            _ => Err("no such file".into()),
        }
    };
    let source = HEAD.replace("  v_max: 4.2 V\n", "  v_max: 4.2 V\n  US06: us06.csv\n")
        + "steps:\n  - profile: us06.csv\n    repeat: 2\n  - \"Run US06 (A)\"\n";
    let p = Plan::from_yaml_with(&source, "t.yaml", &csv).unwrap();
    let a = action(&p, 0);
    assert_eq!(
        a.control,
        Control::Profile {
            kind: ProfileKind::Current
        }
    );
    assert_eq!(
        a.profile.as_ref().map(|p| p.points.clone()),
        Some(vec![(0.0, 1.0), (1.0, -2.0), (2.0, 0.5)])
    );
    assert_eq!(conditions(a), [Condition::StepTime(6.0)]);
    // PyBaMM's sign (positive = discharge) is flipped.
    let b = action(&p, 1);
    assert_eq!(b.profile.as_ref().map(|p| p.points[0]), Some((0.0, -1.0)));
    assert_eq!(conditions(b), [Condition::StepTime(3.0)]);
    let m = message(Plan::from_yaml(&source, "t.yaml"));
    assert!(
        m.contains("steps[0].profile: profile \"us06.csv\": cannot read"),
        "{m}"
    );
    let m = message(plan_with("  - profile: bad.csv\n", &csv));
    assert!(m.contains("line 2: time 0 s does not increase"), "{m}");
    let m = message(plan_with("  - \"Run nope.csv (A)\"\n", &csv));
    assert!(
        m.contains("steps[0], column 5: profile \"nope.csv\": no such file"),
        "{m}"
    );
}

fn plan_with(
    steps: &str,
    resolver: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Plan, ProtocolError> {
    Plan::from_yaml_with(&format!("{HEAD}steps:\n{steps}"), "test.yaml", resolver)
}

#[test]
fn profiles_and_tags_can_be_written_inline() {
    let p = plan("  - profile: [[0, 1.5], [10, -2]]\n    kind: power\n    tags: [drive, us06]\n")
        .unwrap();
    let a = action(&p, 0);
    assert_eq!(
        a.control,
        Control::Profile {
            kind: ProfileKind::Power
        }
    );
    assert_eq!(
        a.profile.as_ref().map(|p| p.points.clone()),
        Some(vec![(0.0, 1.5), (10.0, -2.0)])
    );
    assert_eq!(a.tags, ["drive", "us06"]);
    let m = message(plan("  - profile: [[0, 1.5], [10]]\n"));
    assert!(m.contains("steps[0].profile[1]: expected a pair"), "{m}");
    let m = message(plan("  - profile: [[5, 1.5]]\n"));
    assert!(
        m.contains("inline profile: line 1: the first time must be 0 s"),
        "{m}"
    );
}

#[test]
fn every_new_feature_survives_writing_back_to_yaml() {
    let p = plan(concat!(
        "  - chamber: 30 degC\n    wait: {within: 0.5 degC, for: 1 min}\n    timeout: 2 h\n",
        "  - \"Rest for 1 h at 25oC [a, b]\"\n",
        "  - label: main\n    steps:\n      - repeat: 10\n        cycle: true\n",
        "        until: [discharge_capacity < 80% first, \"cycle >= 5\", discharge_capacity < 1 Ah]\n",
        "        steps:\n          - cccv: 1C\n            voltage: 4.2 V\n            cutoff: C/20\n            record: {every: 5 s}\n",
        "          - cr: 4 Ohm\n            until: [\"V <= 3 V -> main\", \"Temp >= 45 degC -> end\", \"dV/dt >= 1 mV/s\"]\n",
        "          - profile: [[0, 1.5], [10, -2]]\n            repeat: 3\n            until: \"Temp <= 10 degC\"\n",
        "          - rest: 1 h\n            ocv: true\n            until: \"dV/dt <= 1 mV/min\"\n",
        "  - pulse: 1C\n    count: 2\n    v_min: 2.6 V\n    v_max: 4.2 V\n",
        "  - end\n",
        "  - gitt: C/20\n    pulse: 10 min\n    rest: 1 h\n    until: 3 V\n",
    ))
    .unwrap();
    let yaml = p.to_yaml();
    let back = Plan::from_yaml(&yaml, "back.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(without_names(&back), without_names(&p), "{yaml}");
}

#[test]
fn legacy_temperature_becomes_a_chamber_step_before_the_action() {
    let p = plan("  - \"Discharge at 1C until 3 V at 25oC [cap]\"\n").unwrap();
    assert!(
        matches!(action(&p, 0).control, Control::Chamber { temperature_c, .. } if temperature_c == 25.0)
    );
    assert_eq!(action(&p, 0).path, "steps[0].at");
    assert_eq!(action(&p, 1).control, Control::Current { amps: -2.5 });
    assert_eq!(action(&p, 1).tags, ["cap"]);
}

#[test]
fn pulse_and_gitt_macros_expand_to_loops_with_an_exit_rest() {
    let p = plan("  - pulse: 1C\n    soc_step: 10%\n    count: 9\n    v_min: 2.5 V\n").unwrap();
    // LoopStart, 6 body steps, LoopEnd, final rest, End.
    assert_eq!(p.steps.len(), 10);
    assert!(matches!(
        p.steps[0],
        PlanStep::LoopStart {
            count: 9,
            end: 7,
            ..
        }
    ));
    assert_eq!(action(&p, 1).control, Control::Current { amps: -2.5 });
    assert_eq!(action(&p, 1).terminations[1].goto, Goto::Step(8));
    assert_eq!(action(&p, 3).control, Control::Current { amps: 1.875 });
    assert_eq!(
        action(&p, 3).terminations.len(),
        1,
        "no v_max given: the charge pulse is timed only"
    );
    let soc = action(&p, 5);
    assert!(matches!(soc.control, Control::Current { amps } if (amps + 2.5 / 3.0).abs() < 1e-12));
    assert!(
        matches!(soc.terminations[0].condition, Condition::StepTime(t) if (t - 1080.0).abs() < 1e-9)
    );
    let g = plan("  - gitt: C/20\n    pulse: 10 min\n    rest: 1 h\n    until: 3 V\n").unwrap();
    assert!(matches!(
        g.steps[0],
        PlanStep::LoopStart {
            count: 125,
            end: 3,
            ..
        }
    ));
    assert_eq!(
        action(&g, 1).terminations[1],
        Termination {
            condition: Condition::VoltageAtMost(3.0),
            goto: Goto::Step(4)
        }
    );
    let m = message(plan("  - gitt: C/20\n    pulse: 10 min\n    rest: 1 h\n"));
    assert!(
        m.contains("steps[0].until: the gitt step needs `until`"),
        "{m}"
    );
}

#[test]
fn end_steps_end_the_test_early() {
    let p = plan("  - \"Rest for 1 s\"\n  - end: true\n  - \"Rest for 2 s\"\n  - end\n").unwrap();
    assert_eq!(p.steps[1], PlanStep::End);
    assert_eq!(p.steps[3], PlanStep::End);
}

#[test]
fn params_substitute_in_every_structured_field() {
    let source = HEAD.replace(
        "  v_max: 4.2 V\n",
        "  v_max: 4.2 V\n  passes: 3\n  i: 500 mA\n  dur: 20 min\n",
    ) + "steps:\n  - repeat: ${passes}\n    steps:\n      - cc: \"{i}\"\n        direction: discharge\n        for: ${dur}\n";
    let p = Plan::from_yaml(&source, "t.yaml").unwrap();
    assert!(matches!(p.steps[0], PlanStep::LoopStart { count: 3, .. }));
    assert_eq!(action(&p, 1).control, Control::Current { amps: -0.5 });
    assert_eq!(conditions(action(&p, 1)), [Condition::StepTime(1200.0)]);
    let m = message(plan("  - rest: ${nope}\n"));
    assert!(
        m.contains("steps[0].rest: unknown parameter \"nope\""),
        "{m}"
    );
}

fn with_params(steps: &str, given: &[(&str, &str)]) -> Result<Plan, ProtocolError> {
    let given = given
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let none = |_: &str| Err("no files".to_string());
    Plan::from_yaml_with_params(&format!("{HEAD}steps:\n{steps}"), "t.yaml", &none, &given)
}

#[test]
fn a_capacity_given_at_start_resolves_c_rates_instead_of_the_protocols() {
    let steps = "  - \"Charge at C/4 for 1 hour\"\n";
    let own = with_params(steps, &[]).unwrap();
    assert_eq!(action(&own, 0).control, Control::Current { amps: 0.625 });
    assert_eq!(own.params["capacity"], "2.5 Ah");
    let given = with_params(steps, &[("capacity", "5 Ah")]).unwrap();
    assert_eq!(action(&given, 0).control, Control::Current { amps: 1.25 });
    assert_eq!(given.capacity_ah, Some(5.0));
    assert_eq!(
        given.params["capacity"], "5 Ah",
        "the plan says what it used"
    );
    assert_eq!(given.params["v_max"], "4.2 V");
}

#[test]
fn a_parameter_given_at_start_replaces_the_documents_everywhere_it_is_used() {
    let p = with_params(
        "  - \"Charge at 1 A until {v_max}\"\n",
        &[("v_max", "4.1 V")],
    )
    .unwrap();
    assert_eq!(conditions(action(&p, 0)), [Condition::VoltageAtLeast(4.1)]);
    assert_eq!(p.params["v_max"], "4.1 V");
}

#[test]
fn a_parameter_given_at_start_that_the_protocol_does_not_define_is_refused_naming_those_it_does() {
    let m = message(with_params("  - \"Rest for 1 s\"\n", &[("vmax", "4.1 V")]));
    assert!(m.contains("params.vmax"), "{m}");
    assert!(m.contains("unknown parameter \"vmax\""), "{m}");
    assert!(m.contains("v_max"), "{m}");
    let m = message(with_params("  - \"Rest for 1 s\"\n", &[("capacity", "5")]));
    assert!(m.contains("such as \"5 Ah\""), "{m}");
}

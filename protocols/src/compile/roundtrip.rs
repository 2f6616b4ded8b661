//! compile -> import round trips for the XML targets (Maccor, Neware), and the importers'
//! never-panic properties.

use super::{Target, compile};
use crate::import::{SourceKind, import};
use crate::plan::{
    ActionStep, Condition, Control, Goto, LoopCondition, Plan, PlanStep, Safety, Termination,
};
use proptest::prelude::*;

const TOLERANCE: f64 = 1e-9;

/// Where a goto really leads, so equivalent spellings compare equal: `Step(i + 1)` is `Next`,
/// a jump to any `End` is `End`, and a jump to the start of a loop the step is not inside is
/// a jump to the loop's first step (the engine enters a loop at pass 1 either way).
fn canonical(plan: &Plan, i: usize, goto: Goto) -> Goto {
    let mut t = match goto {
        Goto::End => return Goto::End,
        Goto::Next => match plan.steps.get(i + 1) {
            Some(PlanStep::LoopEnd { .. }) => return Goto::Next,
            _ => i + 1,
        },
        Goto::Step(t) => t,
    };
    while let Some(&PlanStep::LoopStart { end, .. }) = plan.steps.get(t) {
        if t < i && i < end {
            break;
        }
        t += 1;
    }
    match plan.steps.get(t) {
        Some(PlanStep::End) | None => Goto::End,
        _ if t == i + 1 => Goto::Next,
        _ => Goto::Step(t),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

fn same_control(a: &Control, b: &Control) -> bool {
    match (a, b) {
        (Control::Rest, Control::Rest) => true,
        (Control::Current { amps: x }, Control::Current { amps: y })
        | (Control::Voltage { volts: x }, Control::Voltage { volts: y })
        | (Control::Power { watts: x }, Control::Power { watts: y }) => close(*x, *y),
        (
            Control::Cccv {
                amps: a1,
                volts: v1,
            },
            Control::Cccv {
                amps: a2,
                volts: v2,
            },
        ) => close(*a1, *a2) && close(*v1, *v2),
        _ => false,
    }
}

fn same_condition(a: &Condition, b: &Condition) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b) && close(a.value(), b.value())
}

/// Asserts that `back` (imported) is `plan` up to what a native format carries: controls,
/// terminations (values within tolerance, gotos by where they lead), loops. Descriptions,
/// paths, the name and the hash are not compared. When all of a step's terminations lead to
/// the same place, their order cannot matter (the first that holds and any other that holds
/// at the same sample go to the same step), so they are compared as sets: Neware keeps its
/// stop fields in a fixed order.
fn assert_same_plan(plan: &Plan, back: &Plan, target: Target) {
    let ctx = || {
        format!(
            "{target}: {}\noriginal {plan:#?}\nimported {back:#?}",
            plan.name
        )
    };
    assert_eq!(plan.steps.len(), back.steps.len(), "step count; {}", ctx());
    for (i, (a, b)) in plan.steps.iter().zip(&back.steps).enumerate() {
        match (a, b) {
            (PlanStep::Action(x), PlanStep::Action(y)) => {
                assert!(
                    same_control(&x.control, &y.control),
                    "step {i} control; {}",
                    ctx()
                );
                let ends = |p: &Plan, s: &ActionStep| -> Vec<(Condition, Goto)> {
                    s.terminations
                        .iter()
                        .map(|t| (t.condition, canonical(p, i, t.goto)))
                        .collect()
                };
                let (mut ex, mut ey) = (ends(plan, x), ends(back, y));
                assert_eq!(ex.len(), ey.len(), "step {i} termination count; {}", ctx());
                if ex.iter().all(|e| e.1 == ex[0].1) {
                    let key = |e: &(Condition, Goto)| {
                        format!("{:?}", std::mem::discriminant(&e.0))
                            + &format!("{:e}", e.0.value())
                    };
                    ex.sort_by_key(key);
                    ey.sort_by_key(key);
                }
                for (p, q) in ex.iter().zip(&ey) {
                    assert!(
                        same_condition(&p.0, &q.0) && p.1 == q.1,
                        "step {i}: {p:?} vs {q:?}; {}",
                        ctx()
                    );
                }
                // Maccor logs per step: the rule written (the native default for a step
                // without one) reads back. Neware's one file-wide rule is checked in
                // `record_rules`.
                if target == Target::Maccor {
                    assert_eq!(
                        x.record.or_native_default(),
                        y.record,
                        "step {i} record; {}",
                        ctx()
                    );
                }
            }
            (
                PlanStep::LoopStart {
                    count: c1,
                    cycle: y1,
                    end: e1,
                    ..
                },
                PlanStep::LoopStart {
                    count: c2,
                    cycle: y2,
                    end: e2,
                    ..
                },
            ) => {
                // Neware has one loop step, the cycle step, which counts a cycle on every
                // pass: a `cycle: false` loop is written as one and reads back `cycle: true`
                // (cyclerd numbers its record's cycles from the original plan, not the file).
                let cycle_ok = if target == Target::Neware {
                    *y2
                } else {
                    y1 == y2
                };
                assert!(c1 == c2 && cycle_ok && e1 == e2, "step {i} loop; {}", ctx())
            }
            _ => assert_eq!(a, b, "step {i}; {}", ctx()),
        }
    }
}

fn round_trip(plan: &Plan, target: Target) -> Plan {
    let kind = match target {
        Target::Maccor => SourceKind::Maccor,
        _ => SourceKind::Neware,
    };
    let text = compile(plan, target).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(SourceKind::detect(&text), Some(kind));
    let back = import(&text, kind, "roundtrip").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_same_plan(plan, &back, target);
    back
}

fn deploy_plans() -> Vec<Plan> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/protocols");
    let mut plans = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy/protocols exists") {
        let path = entry.expect("readable directory").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable protocol");
            if let Ok(plan) = Plan::from_yaml(&text, &path.display().to_string()) {
                plans.push(plan);
            }
        }
    }
    assert!(!plans.is_empty(), "no deploy protocol parsed");
    plans
}

fn t(condition: Condition, goto: Goto) -> Termination {
    Termination { condition, goto }
}

fn action(control: Control, terminations: Vec<Termination>) -> PlanStep {
    PlanStep::Action(ActionStep {
        path: "steps[0]".into(),
        description: "test step".into(),
        control,
        terminations,
        ..ActionStep::default()
    })
}

fn plan(steps: Vec<PlanStep>) -> Plan {
    let plan = Plan {
        name: "test".into(),
        source_sha256: String::new(),
        capacity_ah: Some(2.5),
        params: Default::default(),
        safety: Safety {
            voltage_min: Some(2.5),
            voltage_max: Some(4.25),
            current_max: Some(5.0),
            ..Safety::default()
        },
        steps,
    };
    plan.validate().expect("test plan is valid");
    plan
}

/// Nested cycling loops, a CCCV step, jumps forward, to a loop start from outside, to the end,
/// and a rest ending on voltage.
fn rich_plan() -> Plan {
    use Condition::*;
    plan(vec![
        action(
            Control::Rest,
            vec![
                t(StepTime(300.0), Goto::Next),
                t(VoltageAtMost(2.0), Goto::End),
            ],
        ),
        PlanStep::LoopStart {
            count: 3,
            cycle: true,
            end: 8,
            until: vec![],
        },
        action(
            Control::Cccv {
                amps: 1.25,
                volts: 4.2,
            },
            vec![t(CurrentMagnitudeAtMost(0.125), Goto::Next)],
        ),
        PlanStep::LoopStart {
            count: 2,
            cycle: true,
            end: 6,
            until: vec![],
        },
        action(
            Control::Current { amps: -2.5 },
            vec![
                t(VoltageAtMost(3.0), Goto::Next),
                t(StepTime(7200.5), Goto::Step(7)),
            ],
        ),
        action(
            Control::Voltage { volts: 3.0 },
            vec![t(CurrentMagnitudeAtMost(0.05), Goto::Next)],
        ),
        PlanStep::LoopEnd { start: 3 },
        action(
            Control::Rest,
            vec![
                t(StepTime(600.0), Goto::Next),
                t(VoltageAtLeast(4.3), Goto::Step(2)),
            ],
        ),
        PlanStep::LoopEnd { start: 1 },
        action(
            Control::Current { amps: 0.5 },
            vec![t(VoltageAtLeast(4.1), Goto::Step(1))],
        ),
        PlanStep::End,
    ])
}

/// Every deploy protocol either survives compile -> import on `target`, or is refused with an
/// error naming the step and the target; returns the plans that survived, imported back.
fn deploy_round_trips(target: Target) -> Vec<(Plan, Plan)> {
    let mut survived = Vec::new();
    for p in deploy_plans() {
        match compile(&p, target) {
            Ok(_) => survived.push((p.clone(), round_trip(&p, target))),
            Err(e) => {
                assert_eq!(e.target, target);
                assert!(!e.step.is_empty() && !e.message.is_empty(), "{e:?}");
            }
        }
    }
    assert!(
        !survived.is_empty(),
        "no deploy protocol compiles for {target}"
    );
    survived
}

#[test]
fn every_deploy_protocol_survives_maccor_compile_and_import_or_is_refused_by_step() {
    deploy_round_trips(Target::Maccor);
}

#[test]
fn every_deploy_protocol_survives_neware_compile_and_import_or_is_refused_by_step() {
    for (p, back) in deploy_round_trips(Target::Neware) {
        // The voltage window and current limit travel in Whole_Prt/Protect.
        assert_eq!(back.safety.voltage_max, p.safety.voltage_max);
        assert_eq!(back.safety.voltage_min, p.safety.voltage_min);
        assert_eq!(back.safety.current_max, p.safety.current_max);
    }
}

#[test]
fn nested_loops_cccv_and_jumps_survive_both_targets() {
    let p = rich_plan();
    round_trip(&p, Target::Maccor);
    round_trip(&p, Target::Neware);
}

#[test]
fn power_steps_survive_maccor_but_are_refused_by_neware() {
    let p = plan(vec![
        action(
            Control::Power { watts: -5.0 },
            vec![t(Condition::VoltageAtMost(3.0), Goto::Next)],
        ),
        PlanStep::End,
    ]);
    round_trip(&p, Target::Maccor);
    let e = compile(&p, Target::Neware).unwrap_err();
    assert_eq!((e.target, e.step.as_str()), (Target::Neware, "steps[0]"));
    assert!(e.message.contains("constant power"), "{e}");
}

#[test]
fn conditions_neither_format_has_are_compile_errors_naming_the_step() {
    for c in [
        Condition::TestTime(60.0),
        Condition::StepCapacity(1.0),
        Condition::StepEnergy(1.0),
        Condition::TemperatureAtLeast(45.0),
        Condition::VoltageRateMagnitudeAtMost(1e-6),
    ] {
        let p = plan(vec![
            action(Control::Rest, vec![t(c, Goto::Next)]),
            PlanStep::End,
        ]);
        for target in [Target::Maccor, Target::Neware] {
            let e = compile(&p, target).unwrap_err();
            assert_eq!((e.target, e.step.as_str()), (target, "steps[0]"), "{c:?}");
        }
    }
}

#[test]
fn loop_exits_are_compile_errors_on_both_targets() {
    let p = plan(vec![
        PlanStep::LoopStart {
            count: 5,
            cycle: true,
            end: 2,
            until: vec![LoopCondition::CycleAtLeast(3)],
        },
        action(Control::Rest, vec![t(Condition::StepTime(1.0), Goto::Next)]),
        PlanStep::LoopEnd { start: 0 },
        PlanStep::End,
    ]);
    for target in [Target::Maccor, Target::Neware] {
        let e = compile(&p, target).unwrap_err();
        assert!(e.message.contains("until"), "{e}");
    }
}

#[test]
fn neware_writes_a_loop_that_does_not_count_cycles_as_a_cycle_step_that_reads_back_counting() {
    let p = plan(vec![
        PlanStep::LoopStart {
            count: 2,
            cycle: false,
            end: 2,
            until: vec![],
        },
        action(Control::Rest, vec![t(Condition::StepTime(1.0), Goto::Next)]),
        PlanStep::LoopEnd { start: 0 },
        PlanStep::End,
    ]);
    let text = compile(&p, Target::Neware).expect("a non-cycle loop compiles");
    assert!(text.contains(r#"Step_Type="5""#), "{text}");
    let back = round_trip(&p, Target::Neware);
    assert!(matches!(
        back.steps[0],
        PlanStep::LoopStart {
            count: 2,
            cycle: true,
            ..
        }
    ));
    round_trip(&p, Target::Maccor);
}

#[test]
fn neware_nests_loops_that_do_not_count_cycles_inside_and_around_cycling_loops() {
    // rich_plan: an outer cycling loop (index 1) around an inner one (index 3).
    for (outer, inner) in [(true, false), (false, true), (false, false)] {
        let mut p = rich_plan();
        for (at, cycle) in [(1, outer), (3, inner)] {
            if let PlanStep::LoopStart { cycle: c, .. } = &mut p.steps[at] {
                *c = cycle;
            }
        }
        let back = round_trip(&p, Target::Neware);
        assert!(matches!(
            back.steps[1],
            PlanStep::LoopStart {
                count: 3,
                end: 8,
                ..
            }
        ));
        assert!(matches!(
            back.steps[3],
            PlanStep::LoopStart {
                count: 2,
                end: 6,
                ..
            }
        ));
    }
}

#[test]
fn neware_refuses_restarting_a_loop_from_inside() {
    let p = plan(vec![
        PlanStep::LoopStart {
            count: 2,
            cycle: true,
            end: 2,
            until: vec![],
        },
        action(
            Control::Rest,
            vec![t(Condition::VoltageAtLeast(4.0), Goto::Step(0))],
        ),
        PlanStep::LoopEnd { start: 0 },
        PlanStep::End,
    ]);
    assert!(
        compile(&p, Target::Neware)
            .unwrap_err()
            .message
            .contains("restarts")
    );
    round_trip(&p, Target::Maccor);
}

/// GITT, HPPC and the RPT (without its chamber step and its dV/dt rest end, which no Neware
/// step field holds and the daemon supervises) compile for Neware and read back the same.
#[test]
fn gitt_hppc_and_rpt_compile_for_neware_and_import_back() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/protocols/");
    let read = |name: &str| std::fs::read_to_string(format!("{dir}{name}")).expect(name);
    let rpt = read("rpt.yaml");
    let chamber =
        "  - chamber: 25 degC\n    wait: {within: 1 degC, for: 30 min}\n    timeout: 4 h\n";
    let dvdt = "        until: [\"dV/dt <= 0.1 mV/min\"]\n";
    assert!(
        rpt.contains(chamber) && rpt.contains(dvdt),
        "rpt.yaml changed"
    );
    let rpt = rpt.replace(chamber, "").replace(dvdt, "");
    for (name, text) in [
        ("gitt.yaml", read("gitt.yaml")),
        ("hppc.yaml", read("hppc.yaml")),
        ("rpt.yaml", rpt),
    ] {
        let p = Plan::from_yaml(&text, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, PlanStep::LoopStart { cycle: false, .. })),
            "{name} has a loop that does not count cycles"
        );
        round_trip(&p, Target::Neware);
    }
}

#[test]
fn neware_refuses_a_voltage_finer_than_a_tenth_of_a_millivolt() {
    let p = plan(vec![
        action(
            Control::Voltage { volts: 4.200_01 },
            vec![t(Condition::StepTime(1.0), Goto::Next)],
        ),
        PlanStep::End,
    ]);
    assert!(
        compile(&p, Target::Neware)
            .unwrap_err()
            .message
            .contains("whole number")
    );
}

/// A valid file of each format, to mutate.
fn valid_files() -> [(SourceKind, String); 2] {
    let p = rich_plan();
    [
        (
            SourceKind::Maccor,
            compile(&p, Target::Maccor).expect("compiles"),
        ),
        (
            SourceKind::Neware,
            compile(&p, Target::Neware).expect("compiles"),
        ),
    ]
}

/// Imports and, when it succeeds, checks the plan is valid: an importer never panics and never
/// returns a plan the engine would refuse.
fn import_checked(text: &str, kind: SourceKind) {
    match import(text, kind, "fuzz") {
        Ok(plan) => plan.validate().expect("imported plans are valid"),
        Err(e) => {
            assert_eq!(e.kind, kind);
            assert!(!e.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn importers_never_panic_on_arbitrary_text(text in "\\PC{0,400}") {
        import_checked(&text, SourceKind::Maccor);
        import_checked(&text, SourceKind::Neware);
    }

    #[test]
    fn importers_never_panic_on_xml_shaped_text(
        text in "(<[A-Za-z_]{1,10}( [A-Za-z_]{1,6}=\"[0-9a-z.: -]{0,6}\")?/?>|</[A-Za-z_]{1,10}>|[0-9 .:=<>-]{0,8}){0,40}"
    ) {
        import_checked(&text, SourceKind::Maccor);
        import_checked(&text, SourceKind::Neware);
    }

    #[test]
    fn importers_never_panic_on_mutated_valid_files(
        which in 0usize..2,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, "[0-9A-Za-z<>/=\" .:-]{0,6}"), 1..6)
    ) {
        let (kind, mut text) = valid_files()[which].clone();
        for (at, op, s) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            match op {
                0 => text.insert_str(i, &s),
                1 => {
                    let mut j = (i + s.len() + 1).min(text.len());
                    while !text.is_char_boundary(j) {
                        j -= 1;
                    }
                    text.replace_range(i..j, "");
                }
                2 => text.truncate(i),
                _ => {
                    // Replace a number-ish run: the likeliest way to reach deep checks.
                    let end = text[i..].find(|c: char| !c.is_ascii_digit()).map_or(text.len(), |n| i + n);
                    text.replace_range(i..end, &s);
                }
            }
        }
        import_checked(&text, kind);
    }
}

//! Test helpers for round trips (compile -> import, plan -> YAML -> plan): the protocols to
//! try, small plans, and comparisons of what runs (controls, terminations, loops, gotos, record
//! rules) that ignore names, paths, descriptions and hashes.

use crate::plan::{ActionStep, Condition, Control, Goto, Plan, PlanStep, Safety, Termination};

/// Every protocol in `deploy/protocols/*.yaml` that parses, with its file name.
pub(crate) fn deploy_plans() -> Vec<(String, Plan)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/protocols");
    let mut plans = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/protocols exists") {
        let path = entry.expect("readable directory").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable protocol");
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Ok(plan) = Plan::from_yaml(&text, &name) {
            plans.push((name, plan));
        }
    }
    assert!(!plans.is_empty(), "no deploy protocol parsed");
    plans
}

/// A plan from a list of steps (safety and name left empty), checked.
pub(crate) fn plan(steps: Vec<PlanStep>) -> Plan {
    let plan = Plan {
        name: "test".into(),
        source_sha256: String::new(),
        capacity_ah: None,
        params: Default::default(),
        safety: Default::default(),
        steps,
    };
    plan.validate().expect("test plan is valid");
    plan
}

pub(crate) fn act(control: Control, terminations: &[(Condition, Goto)]) -> PlanStep {
    PlanStep::Action(ActionStep {
        path: "steps[x]".into(),
        description: "test step".into(),
        control,
        terminations: terminations
            .iter()
            .map(|&(condition, goto)| Termination { condition, goto })
            .collect(),
        ..ActionStep::default()
    })
}

pub(crate) fn looped(count: u32, cycle: bool, end: usize) -> PlanStep {
    PlanStep::LoopStart {
        count,
        cycle,
        end,
        until: Vec::new(),
    }
}

/// What to compare beyond controls, terminations, loop counts and gotos.
#[derive(Clone, Copy)]
pub(crate) struct Compare {
    /// Loops' `cycle` flags (BioLogic numbers cycles by charge/discharge alternance instead).
    pub cycle: bool,
    /// Record rules and safety limits (PyBaMM carries neither).
    pub record_and_safety: bool,
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn close_opt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => close(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

fn same_control(a: Control, b: Control) -> bool {
    match (a, b) {
        (Control::Rest, Control::Rest) => true,
        (Control::Current { amps: x }, Control::Current { amps: y })
        | (Control::Voltage { volts: x }, Control::Voltage { volts: y })
        | (Control::Power { watts: x }, Control::Power { watts: y })
        | (Control::Resistance { ohms: x }, Control::Resistance { ohms: y }) => close(x, y),
        (Control::Cccv { amps: a, volts: v }, Control::Cccv { amps: b, volts: w }) => {
            close(a, b) && close(v, w)
        }
        _ => false,
    }
}

fn same_condition(a: Condition, b: Condition) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b) && close(a.value(), b.value())
}

/// `Goto::Step` to the final `End` is the same as `Goto::End`.
fn normal(plan: &Plan, g: Goto) -> Goto {
    match g {
        Goto::Step(t) if t + 1 == plan.steps.len() => Goto::End,
        g => g,
    }
}

/// Panics with the first difference between `a` (expected) and `b` (read back).
pub(crate) fn assert_same(a: &Plan, b: &Plan, how: Compare) {
    assert_eq!(
        a.steps.len(),
        b.steps.len(),
        "step counts differ:\n{:#?}\n{:#?}",
        a.steps,
        b.steps
    );
    if how.record_and_safety {
        let (s, t) = (&a.safety, &b.safety);
        for (x, y, what) in [
            (s.voltage_min, t.voltage_min, "voltage_min"),
            (s.voltage_max, t.voltage_max, "voltage_max"),
            (s.current_max, t.current_max, "current_max"),
            (s.temperature_max, t.temperature_max, "temperature_max"),
            (s.capacity_max, t.capacity_max, "capacity_max"),
        ] {
            assert!(close_opt(x, y), "safety {what}: {x:?} != {y:?}");
        }
    }
    for (i, (x, y)) in a.steps.iter().zip(&b.steps).enumerate() {
        match (x, y) {
            (PlanStep::Action(p), PlanStep::Action(q)) => {
                assert!(
                    same_control(p.control, q.control),
                    "step {i}: {:?} != {:?}",
                    p.control,
                    q.control
                );
                assert_eq!(
                    p.terminations.len(),
                    q.terminations.len(),
                    "step {i}: {:?} != {:?}",
                    p.terminations,
                    q.terminations
                );
                // Order matters only between terminations that jump differently.
                for t in &p.terminations {
                    assert!(
                        q.terminations
                            .iter()
                            .any(|u| same_condition(t.condition, u.condition)
                                && normal(a, t.goto) == normal(b, u.goto)),
                        "step {i}: {t:?} not in {:?}",
                        q.terminations
                    );
                }
                if how.record_and_safety {
                    // What the cycler logs by: a step without a rule is written (and so
                    // reads back) as the native default.
                    let (r, s) = (p.record.or_native_default(), q.record.or_native_default());
                    assert!(
                        close_opt(r.every_s, s.every_s)
                            && close_opt(r.dv_v, s.dv_v)
                            && close_opt(r.di_a, s.di_a),
                        "step {i}: record {r:?} != {s:?}"
                    );
                }
            }
            (
                PlanStep::LoopStart {
                    count: c,
                    cycle: y1,
                    end: e,
                    ..
                },
                PlanStep::LoopStart {
                    count: d,
                    cycle: y2,
                    end: f,
                    ..
                },
            ) => {
                assert_eq!((c, e), (d, f), "loop at {i}");
                if how.cycle {
                    assert_eq!(y1, y2, "loop at {i}: cycle flag");
                }
            }
            (x, y) => assert_eq!(x, y, "step {i}"),
        }
    }
}

/// `plan` with every CCCV step split into a CC step (until the CV voltage) and a CV step with
/// the CCCV's terminations, gotos and loop indices renumbered: how targets without a one-step
/// CCCV write it, and so what their importers read back.
pub(crate) fn split_cccv(plan: &Plan) -> Plan {
    let mut map = Vec::with_capacity(plan.steps.len());
    let mut n = 0;
    for s in &plan.steps {
        map.push(n);
        n += match s {
            PlanStep::Action(a) if matches!(a.control, Control::Cccv { .. }) => 2,
            _ => 1,
        };
    }
    let remap = |g: Goto| match g {
        Goto::Step(t) => Goto::Step(map[t]),
        g => g,
    };
    let mut steps = Vec::with_capacity(n);
    for s in &plan.steps {
        match s {
            PlanStep::Action(a) => {
                let terminations: Vec<Termination> = a
                    .terminations
                    .iter()
                    .map(|t| Termination {
                        condition: t.condition,
                        goto: remap(t.goto),
                    })
                    .collect();
                if let Control::Cccv { amps, volts } = a.control {
                    let stop = if amps < 0.0 {
                        Condition::VoltageAtMost(volts)
                    } else {
                        Condition::VoltageAtLeast(volts)
                    };
                    steps.push(PlanStep::Action(ActionStep {
                        control: Control::Current { amps },
                        terminations: vec![Termination {
                            condition: stop,
                            goto: Goto::Next,
                        }],
                        ..a.clone()
                    }));
                    steps.push(PlanStep::Action(ActionStep {
                        control: Control::Voltage { volts },
                        terminations,
                        ..a.clone()
                    }));
                } else {
                    steps.push(PlanStep::Action(ActionStep {
                        terminations,
                        ..a.clone()
                    }));
                }
            }
            PlanStep::LoopStart {
                count,
                cycle,
                end,
                until,
            } => steps.push(PlanStep::LoopStart {
                count: *count,
                cycle: *cycle,
                end: map[*end],
                until: until.clone(),
            }),
            PlanStep::LoopEnd { start } => steps.push(PlanStep::LoopEnd { start: map[*start] }),
            other => steps.push(other.clone()),
        }
    }
    Plan {
        steps,
        ..plan.clone()
    }
}

/// The action steps in execution order with every loop unrolled (what a PyBaMM experiment
/// runs when every termination continues with the next step).
pub(crate) fn unrolled_actions(plan: &Plan, from: usize, to: usize) -> Vec<ActionStep> {
    let mut out = Vec::new();
    let mut i = from;
    while i < to {
        match &plan.steps[i] {
            PlanStep::Action(a) => {
                out.push(a.clone());
                i += 1;
            }
            PlanStep::LoopStart { count, end, .. } => {
                let body = unrolled_actions(plan, i + 1, *end);
                for _ in 0..*count {
                    out.extend(body.iter().cloned());
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// Rest, CC charge to 4.2 V, CV hold to C/20 (or 2 h, then the end): the golden-file plan.
pub fn three_steps() -> Plan {
    let mut p = plan(vec![
        act(Control::Rest, &[(Condition::StepTime(600.0), Goto::Next)]),
        act(
            Control::Current { amps: 1.25 },
            &[(Condition::VoltageAtLeast(4.2), Goto::Next)],
        ),
        act(
            Control::Voltage { volts: 4.2 },
            &[
                (Condition::CurrentMagnitudeAtMost(0.125), Goto::Next),
                (Condition::StepTime(7200.0), Goto::End),
            ],
        ),
        PlanStep::End,
    ]);
    p.name = "Three steps".into();
    p.safety = Safety {
        voltage_min: Some(2.5),
        voltage_max: Some(4.25),
        current_max: Some(5.0),
        ..Safety::default()
    };
    p
}

/// A two-pass loop of a CC charge to 4.2 V and a CV hold whose cutoff jumps back to the loop's
/// start: the valid schedule the text importers' tests compile and then damage.
pub(crate) fn cc_cv_loop() -> Plan {
    plan(vec![
        looped(2, true, 3),
        act(
            Control::Current { amps: 1.0 },
            &[(Condition::VoltageAtLeast(4.2), Goto::Next)],
        ),
        act(
            Control::Voltage { volts: 4.2 },
            &[(Condition::CurrentMagnitudeAtMost(0.05), Goto::Step(0))],
        ),
        PlanStep::LoopEnd { start: 0 },
        PlanStep::End,
    ])
}

/// `text` with each cut applied in turn: at the place, up to four characters replaced by the
/// insert (the damage of the importers' never-panic properties).
pub(crate) fn damaged(text: &str, cuts: Vec<(proptest::sample::Index, String)>) -> String {
    let mut text: Vec<char> = text.chars().collect();
    for (at, insert) in cuts {
        let i = at.index(text.len() + 1);
        let end = (i + insert.chars().count() % 5).min(text.len());
        text.splice(i..end, insert.chars());
    }
    text.into_iter().collect()
}

/// `p` without what names it rather than what it runs: the source hash, and the steps' paths,
/// descriptions and labels (labels are names; jumps are compared by their resolved indices).
pub(crate) fn without_names(p: &Plan) -> Plan {
    let mut p = p.clone();
    p.source_sha256.clear();
    for s in &mut p.steps {
        if let PlanStep::Action(a) = s {
            a.path.clear();
            a.description.clear();
            a.label = None;
        }
    }
    p
}

use super::watch::Reading;
use super::*;
use crate::plan::LoopCondition;

fn library(name: &str) -> Plan {
    let text = match name {
        "cycle-life-1c" => include_str!("../../../deploy/protocols/cycle-life-1c.yaml"),
        "rpt" => include_str!("../../../deploy/protocols/rpt.yaml"),
        "chamber" => include_str!("../../../deploy/protocols/chamber-25-45-25.yaml"),
        "demo" => include_str!("../../../deploy/protocols/demo.yaml"),
        _ => unreachable!(),
    };
    Plan::from_yaml(text, name).unwrap()
}

fn reading(t: f64, v: f64, i: f64, temperature: Option<f64>) -> Reading {
    Reading {
        test_time_s: t,
        voltage_v: v,
        current_a: i,
        temperature_c: temperature,
        chamber_c: None,
    }
}

#[test]
fn a_plan_a_cycler_can_say_whole_is_one_segment_identical_to_the_plain_schedule() {
    let plan = library("demo");
    for target in [Target::Maccor, Target::Neware, Target::Arbin] {
        let sup = Supervision::new(&plan, target).unwrap();
        assert!(!sup.needs_supervision(), "{target}");
        let first = Walker::default().walk(&sup, &plan, 0, 0.0, 1);
        let Next::Segment(from) = first else {
            panic!("{first:?}")
        };
        let seg = sup.segment(&plan, from).unwrap();
        assert_eq!(
            seg.to,
            plan.steps.len() - 1,
            "{target}: every step but the end"
        );
        let whole = compile::compile_mapped(&plan, target).unwrap();
        assert_eq!(seg.compiled, whole, "{target}");
    }
}

#[test]
fn cycle_life_runs_on_every_followed_cycler_with_the_loop_exit_and_temperature_ends_supervised() {
    let plan = library("cycle-life-1c");
    for target in [Target::Maccor, Target::Neware, Target::Arbin] {
        let sup = Supervision::new(&plan, target).unwrap();
        let findings = sup.findings(&plan);
        let supervised: Vec<&Finding> = findings
            .iter()
            .filter(|f| matches!(f.how, How::Supervised(_)))
            .collect();
        // The loop, the CCCV charge and the discharge (their "Temp >= 55 degC -> end").
        assert_eq!(supervised.len(), 3, "{target}: {findings:#?}");
        assert!(
            supervised
                .iter()
                .any(|f| matches!(&f.how, How::Supervised(s) if s.contains("80% of the first"))),
            "{target}: {supervised:#?}"
        );
        assert!(
            supervised
                .iter()
                .any(|f| matches!(&f.how, How::Supervised(s) if s.contains("T >= 55 degC"))),
            "{target}: {supervised:#?}"
        );
        // Every segment compiles, and the watched steps end theirs.
        let mut w = Walker::default();
        let mut next = w.walk(&sup, &plan, 0, 0.0, 1);
        let mut segments = Vec::new();
        while let Next::Segment(from) = next {
            let seg = sup.segment(&plan, from).unwrap();
            segments.push((seg.from, seg.to, seg.watched));
            if segments.len() > 6 {
                break;
            }
            next = w.follow(
                &sup,
                &plan,
                Goto::Next,
                seg.to,
                2.5 * segments.len() as f64,
                1,
            );
        }
        // 0 rest | LoopStart 1 | 2 cccv (watched) | 3 rest, 4 discharge (watched) | 5 rest |
        // LoopEnd 6, then the next pass.
        assert_eq!(
            segments[..4],
            [(0, 1, None), (2, 3, Some(2)), (3, 5, Some(4)), (5, 6, None)],
            "{target}"
        );
        assert_eq!(segments[4], (2, 3, Some(2)), "{target}: the next pass");
    }
}

#[test]
fn a_watched_step_is_compiled_without_the_daemons_conditions_and_keeps_its_native_ends() {
    let plan = library("cycle-life-1c");
    let sup = Supervision::new(&plan, Target::Maccor).unwrap();
    let seg = sup.segment(&plan, 4 - 1).unwrap();
    let text = &seg.compiled.text;
    assert!(text.contains("Dischrge"), "{text}");
    assert!(
        !text.contains("<Value>55"),
        "the temperature end is the daemon's: {text}"
    );
    assert!(
        text.contains("02:00:00"),
        "the native 2 h end stays: {text}"
    );
    // Native step 1 is the rest (plan index 3), native step 2 the discharge (index 4).
    assert_eq!(seg.compiled.step_map.plan_step(1), Some(3));
    assert_eq!(seg.compiled.step_map.plan_step(2), Some(4));
}

#[test]
fn the_loop_ends_when_a_pass_discharges_less_than_80_percent_of_the_first() {
    let plan = library("cycle-life-1c");
    let sup = Supervision::new(&plan, Target::Neware).unwrap();
    let mut w = Walker::default();
    assert_eq!(w.walk(&sup, &plan, 1, 0.0, 1), Next::Segment(2));
    let loop_end = 6;
    assert!(matches!(plan.steps[loop_end], PlanStep::LoopEnd { .. }));
    // Pass 1 discharges 2.5 Ah, pass 2 2.1 Ah (84 %), pass 3 1.9 Ah (76 %).
    assert_eq!(w.walk(&sup, &plan, loop_end, 2.5, 1), Next::Segment(2));
    assert_eq!(w.pass(), Some((1, 2)));
    assert_eq!(w.walk(&sup, &plan, loop_end, 4.6, 2), Next::Segment(2));
    assert_eq!(w.walk(&sup, &plan, loop_end, 6.5, 3), Next::End);
}

#[test]
fn a_cycle_count_exit_ends_the_loop_at_that_cycle() {
    let mut plan = library("cycle-life-1c");
    let PlanStep::LoopStart { until, .. } = &mut plan.steps[1] else {
        panic!()
    };
    *until = vec![LoopCondition::CycleAtLeast(2)];
    let sup = Supervision::new(&plan, Target::Arbin).unwrap();
    let mut w = Walker::default();
    w.walk(&sup, &plan, 1, 0.0, 1);
    assert_eq!(w.walk(&sup, &plan, 6, 2.5, 1), Next::Segment(2));
    assert_eq!(w.walk(&sup, &plan, 6, 5.0, 2), Next::End);
}

#[test]
fn a_temperature_end_the_cycler_cannot_say_is_decided_from_the_records_and_jumps_to_the_end() {
    let plan = library("cycle-life-1c");
    let sup = Supervision::new(&plan, Target::Maccor).unwrap();
    let mut watch = StepWatch::default();
    assert_eq!(
        watch.record(&sup, &plan, 4, reading(0.0, 4.0, -2.5, Some(30.0))),
        None
    );
    assert_eq!(
        watch.record(&sup, &plan, 4, reading(60.0, 3.9, -2.5, Some(54.9))),
        None
    );
    let v = watch.record(&sup, &plan, 4, reading(120.0, 3.8, -2.5, Some(55.0)));
    assert!(
        matches!(v, Some(Verdict::Go(Goto::End, ref why)) if why.contains("T >= 55")),
        "{v:?}"
    );
    // A native step is not watched.
    assert_eq!(
        watch.record(&sup, &plan, 3, reading(130.0, 3.8, 0.0, Some(80.0))),
        None
    );
}

#[test]
fn a_relaxation_end_on_dv_dt_holds_once_the_voltage_settles_between_two_records() {
    let plan = library("rpt");
    let sup = Supervision::new(&plan, Target::Maccor).unwrap();
    let (i, _) = plan
        .steps
        .iter()
        .enumerate()
        .find(|(_, s)| matches!(s, PlanStep::Action(a) if a.terminations.iter().any(|t| matches!(t.condition, Condition::VoltageRateMagnitudeAtMost(_)))))
        .unwrap();
    assert!(matches!(sup.role(i), Role::Watched { chamber: false, .. }));
    let mut watch = StepWatch::default();
    assert_eq!(
        watch.record(&sup, &plan, i, reading(0.0, 3.60, 0.0, None)),
        None
    );
    assert_eq!(
        watch.record(&sup, &plan, i, reading(30.0, 3.62, 0.0, None)),
        None
    );
    let v = watch.record(&sup, &plan, i, reading(60.0, 3.620_000_5, 0.0, None));
    assert!(matches!(v, Some(Verdict::Go(Goto::Next, _))), "{v:?}");
}

#[test]
fn a_chamber_step_is_a_rest_on_the_cycler_that_ends_when_the_air_has_settled_or_faults_on_timeout()
{
    let plan = library("chamber");
    let sup = Supervision::new(&plan, Target::Neware).unwrap();
    let i = 1;
    assert!(
        matches!(sup.role(i), Role::Watched { chamber: true, .. }),
        "{:?}",
        sup.role(i)
    );
    let seg = sup.segment(&plan, i).unwrap();
    assert_eq!(
        (seg.from, seg.to, seg.watched),
        (1, 2, Some(1)),
        "alone in its segment"
    );
    let air = |t: f64, c: f64| Reading {
        chamber_c: Some(c),
        ..reading(t, 3.7, 0.0, None)
    };
    let mut watch = StepWatch::default();
    assert_eq!(watch.record(&sup, &plan, i, air(0.0, 20.0)), None);
    assert_eq!(watch.record(&sup, &plan, i, air(300.0, 24.8)), None);
    assert_eq!(watch.record(&sup, &plan, i, air(600.0, 25.1)), None);
    let v = watch.record(&sup, &plan, i, air(900.0, 24.9));
    assert!(matches!(v, Some(Verdict::Go(Goto::Next, _))), "{v:?}");

    let mut watch = StepWatch::default();
    assert_eq!(watch.record(&sup, &plan, i, air(0.0, 20.0)), None);
    let v = watch.record(&sup, &plan, i, air(7200.0, 21.0));
    assert!(
        matches!(v, Some(Verdict::Fault(ref why)) if why.contains("did not settle")),
        "{v:?}"
    );
}

#[test]
fn every_cycling_loop_around_a_chamber_step_is_counted_by_the_daemon() {
    let plan = library("chamber");
    for target in [Target::Maccor, Target::Neware, Target::Arbin] {
        let sup = Supervision::new(&plan, target).unwrap();
        let loops = sup
            .findings(&plan)
            .into_iter()
            .filter(|f| matches!(&f.how, How::Supervised(s) if s.contains("chamber step")))
            .count();
        assert_eq!(loops, 3, "{target}");
    }
}

#[test]
fn a_target_without_a_driver_lists_every_supervised_part_as_impossible_at_once() {
    let plan = library("cycle-life-1c");
    let errors = Supervision::new(&plan, Target::Biologic).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].message.contains("safety.capacity"),
        "said once: {errors:#?}"
    );
    let mut plan = plan;
    plan.safety.capacity_max = None;
    let errors = Supervision::new(&plan, Target::Biologic).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|e| e.message.contains("no biologic driver")),
        "{errors:#?}"
    );
}

#[test]
fn a_segment_that_the_cycler_ended_on_a_jump_out_leads_where_the_jump_goes() {
    let plan = library("rpt");
    let sup = Supervision::new(&plan, Target::Maccor).unwrap();
    // The soc50 discharge: "t >= 90 min", "V <= v_min -> end".
    let (i, _) = plan
        .steps
        .iter()
        .enumerate()
        .find(|(_, s)| matches!(s, PlanStep::Action(a) if a.terminations.iter().any(|t| t.goto == Goto::End)))
        .unwrap();
    let mut from = i;
    while from > 0
        && matches!(plan.steps[from - 1], PlanStep::Action(_))
        && sup.role(from - 1) == &Role::Native
    {
        from -= 1;
    }
    let seg = sup.segment(&plan, from).unwrap();
    assert!(seg.to > i + 1, "the step is inside its segment: {seg:?}");
    let last = |v: f64, t: f64| LastRecord {
        plan_step: i,
        voltage_v: v,
        current_a: -0.83,
        step_time_s: t,
    };
    assert_eq!(sup.exit(&plan, &seg, last(2.5, 3000.0)), Goto::End);
    let on = sup.exit(&plan, &seg, last(3.6, 5400.0));
    assert_eq!(on, Goto::End, "ended mid-segment: only the jump does that");
    let end_of_segment = LastRecord {
        plan_step: seg.to - 1,
        voltage_v: 3.6,
        current_a: 0.0,
        step_time_s: 3600.0,
    };
    assert_eq!(sup.exit(&plan, &seg, end_of_segment), Goto::Next);
}

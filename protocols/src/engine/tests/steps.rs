//! Each kind of step and the plan's flow: gotos, CCCV, resistance, profiles, chamber waits,
//! rate terminations and loop exits.

use super::*;

fn action(path: &str, terminations: Vec<Termination>) -> PlanStep {
    PlanStep::Action(ActionStep {
        path: path.into(),
        description: path.into(),
        control: Control::Rest,
        terminations,
        ..ActionStep::default()
    })
}

#[test]
fn gotos_jump_to_steps_and_out_of_loops() {
    let t = |condition, goto| Termination { condition, goto };
    // 0 A; 1 loop x2 { 2 B: V<=3 -> end of test, else after 1 s -> step 4 (C) }; 4 C; 5 End.
    let plan = Plan {
        name: "g".into(),
        source_sha256: "x".into(),
        capacity_ah: None,
        params: Default::default(),
        safety: Safety {
            voltage_min: Some(2.0),
            voltage_max: Some(4.5),
            current_max: Some(1.0),
            ..Safety::default()
        },
        steps: vec![
            action("A", vec![t(Condition::StepTime(1.0), Goto::Next)]),
            PlanStep::LoopStart {
                count: 2,
                cycle: false,
                end: 3,
                until: vec![],
            },
            action(
                "B",
                vec![
                    t(Condition::VoltageAtMost(3.0), Goto::End),
                    t(Condition::StepTime(1.0), Goto::Step(4)),
                ],
            ),
            PlanStep::LoopEnd { start: 1 },
            action("C", vec![t(Condition::StepTime(1.0), Goto::Step(2))]),
            PlanStep::End,
        ],
    };
    let mut e = Engine::new(plan, &Safety::default()).unwrap();
    e.start(0.0);
    let mut seen = vec![e.status().description.clone()];
    for n in 1..=4 {
        e.update(&at(f64::from(n), 3.7, 0.0));
        seen.push(e.status().description.clone());
    }
    assert_eq!(seen, ["A", "B", "C", "B", "C"]);
    assert_eq!(
        e.update(&at(4.5, 2.9, 0.0)).outcome,
        None,
        "C has no voltage termination"
    );
    e.update(&at(5.0, 3.7, 0.0));
    assert_eq!(e.status().description, "B");
    assert_eq!(
        e.update(&at(5.5, 2.9, 0.0)).outcome,
        Some(Outcome::Finished)
    );
}

fn cell() -> Cell {
    Cell {
        capacity_ah: 2.5,
        soc: 0.5,
        r: 0.05,
    }
}

#[test]
fn cccv_step_runs_cc_then_cv_by_compliance_and_ends_at_the_cutoff() {
    let mut e = engine("  - cccv: 1C\n    voltage: 4.1 V\n    cutoff: C/20\n");
    assert_eq!(
        e.start(0.0),
        Command::Current {
            amps: 2.5,
            voltage_max: 4.1,
            voltage_min: 2.5
        }
    );
    let mut c = cell();
    let (u, _) = run(&mut e, &mut c, 20_000);
    assert_eq!(u.outcome, Some(Outcome::Finished));
    // The cell ends near 4.1 V open circuit, charged past what CC alone would reach.
    assert!((c.ocv() - 4.1).abs() < 0.01, "ocv {}", c.ocv());
}

#[test]
fn resistance_step_recomputes_the_current_from_each_voltage() {
    let mut e = engine("  - cr: 2 Ohm\n    until: \"V <= 3.2 V\"\n");
    assert_eq!(e.start(0.0), Command::Off, "no voltage known yet");
    let u = e.update(&at(1.0, 4.0, 0.0));
    assert_eq!(
        u.command,
        Command::Current {
            amps: -2.0,
            voltage_max: 4.25,
            voltage_min: 2.5
        }
    );
    let u = e.update(&at(2.0, 3.6, -2.0));
    assert!(matches!(u.command, Command::Current { amps, .. } if (amps + 1.8).abs() < 1e-12));
    assert_eq!(
        e.update(&at(3.0, 3.2, -1.8)).outcome,
        Some(Outcome::Finished)
    );
}

#[test]
fn resistance_that_would_exceed_the_current_limit_is_rejected() {
    let e = Engine::new(
        yaml_plan("  - cr: 0.5 Ohm\n    for: 1 h\n"),
        &Safety::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("above the current limit"), "{e}");
}

#[test]
fn profile_step_holds_each_value_and_ends_after_its_duration() {
    let csv = |_: &str| -> Result<String, String> { Ok("t,i\n0,1\n10,-2\n20,0.5\n".into()) };
    let source =
        format!("protocol: t\nversion: 1\n{SAFE}steps:\n  - profile: p.csv\n    repeat: 2\n");
    let plan = Plan::from_yaml_with(&source, "t.yaml", &csv).unwrap();
    let mut e = Engine::new(plan, &Safety::default()).unwrap();
    let amps = |c: Command| match c {
        Command::Current { amps, .. } => amps,
        other => panic!("not a current: {other:?}"),
    };
    assert_eq!(amps(e.start(0.0)), 1.0);
    let mut seen = Vec::new();
    for t in [5.0, 10.0, 25.0, 31.0, 59.0] {
        seen.push(amps(e.update(&at(t, 3.7, 0.0)).command));
    }
    assert_eq!(seen, [1.0, -2.0, 0.5, 1.0, 0.5]);
    assert_eq!(
        e.update(&at(60.0, 3.7, 0.0)).outcome,
        Some(Outcome::Finished)
    );
}

#[test]
fn chamber_step_waits_for_the_temperature_to_settle() {
    let mut e = engine(
        "  - chamber: 30 degC\n    wait: {within: 0.5 degC, for: 10 s}\n    timeout: 1 h\n  - \"Rest for 1 s\"\n",
    );
    let first = e.start(0.0);
    assert_eq!(
        first,
        Command::Chamber {
            temperature_c: 30.0
        }
    );
    assert!(
        !first.output_on(),
        "the cell rests while the chamber settles"
    );
    let steps = [
        (1.0, Some(25.0)),
        (2.0, Some(29.6)),
        (5.0, None),
        (6.0, Some(29.8)),
        (15.0, Some(30.2)),
    ];
    for (t, temp) in steps {
        let u = e.update(&with_temp(at(t, 3.7, 0.0), temp));
        assert!(!u.step_changed, "ended early at {t}");
        assert_eq!(
            u.command,
            Command::Chamber {
                temperature_c: 30.0
            }
        );
    }
    // In the band since 6 s: settled at 16 s.
    let u = e.update(&with_temp(at(16.0, 3.7, 0.0), Some(30.1)));
    assert!(u.step_changed);
    assert_eq!(u.command, Command::Off);
}

#[test]
fn a_chamber_step_waits_on_the_chamber_air_when_the_chamber_reports_it() {
    let mut e = engine(
        "  - chamber: 45 degC\n    wait: {within: 0.5 degC, for: 10 s}\n  - \"Rest for 1 s\"\n",
    );
    e.start(0.0);
    let in_chamber = |t: f64, air: f64| Measurement {
        chamber_c: Some(air),
        ..at(t, 3.7, 0.0)
    };
    // The cell (25 degC) lags the air; the step settles on the air.
    assert!(!e.update(&in_chamber(1.0, 44.8)).step_changed);
    assert!(!e.update(&in_chamber(10.0, 45.2)).step_changed);
    assert!(e.update(&in_chamber(11.5, 45.1)).step_changed);
}

#[test]
fn chamber_that_never_settles_faults_at_its_timeout() {
    let mut e = engine(
        "  - chamber: 30 degC\n    wait: {within: 0.5 degC, for: 10 s}\n    timeout: 1 min\n",
    );
    e.start(0.0);
    assert_eq!(e.update(&at(59.0, 3.7, 0.0)).outcome, None);
    let Some(Outcome::Faulted(reason)) = e.update(&at(60.0, 3.7, 0.0)).outcome else {
        panic!("no timeout fault")
    };
    assert!(
        reason.contains("did not settle at 30 degC") && reason.contains("25 degC"),
        "{reason}"
    );
}

#[test]
fn chamber_step_above_the_temperature_limit_is_rejected() {
    let e = Engine::new(yaml_plan("  - chamber: 70 degC\n"), &Safety::default()).unwrap_err();
    assert!(e.to_string().contains("above the temperature limit"), "{e}");
}

#[test]
fn temperature_and_voltage_rate_terminations_fire() {
    let mut e =
        engine("  - rest: 1 h\n    until: [\"Temp >= 40 degC -> end\", \"dV/dt <= 1 mV/min\"]\n");
    e.start(0.0);
    assert_eq!(
        e.update(&with_temp(at(10.0, 3.70, 0.0), Some(39.0)))
            .outcome,
        None
    );
    // 10 mV in 60 s is faster than 1 mV/min.
    assert_eq!(e.update(&at(70.0, 3.71, 0.0)).outcome, None);
    assert_eq!(
        e.update(&at(130.0, 3.7105, 0.0)).outcome,
        Some(Outcome::Finished)
    );
    let mut e = engine("  - rest: 1 h\n    until: [\"Temp >= 40 degC -> end\"]\n");
    e.start(0.0);
    assert_eq!(
        e.update(&with_temp(at(10.0, 3.7, 0.0), None)).outcome,
        None,
        "no sensor: never fires"
    );
    assert_eq!(
        e.update(&with_temp(at(11.0, 3.7, 0.0), Some(40.0))).outcome,
        Some(Outcome::Finished)
    );
}

#[test]
fn voltage_rate_is_not_measured_across_a_step_change() {
    let mut e = engine("  - \"Rest for 10 s\"\n  - rest: 1 h\n    until: \"dV/dt >= 1 mV/s\"\n");
    e.start(0.0);
    e.update(&at(10.0, 3.7, 0.0));
    assert_eq!(e.status().step_count, 2);
    // The first poll of the step has no in-step predecessor, however large the jump.
    assert!(!e.update(&at(11.0, 3.0, 0.0)).step_changed);
    assert!(e.update(&at(12.0, 3.1, 0.0)).step_changed);
}

#[test]
fn loop_exits_on_cycle_count() {
    let mut e = engine(
        "  - repeat: 100\n    cycle: true\n    until: \"cycle >= 4\"\n    steps: [\"Rest for 1 s\"]\n  - \"Rest for 1 s\"\n",
    );
    e.start(0.0);
    for n in 1..=4 {
        e.update(&at(f64::from(n), 3.7, 0.0));
    }
    assert_eq!(e.status().cycle, 4);
    assert_eq!(
        e.status().step_count,
        5,
        "4 passes then the step after the loop"
    );
    assert_eq!(e.status().plan_index, 3);
}

#[test]
fn loop_exits_when_discharge_capacity_falls_below_a_fraction_of_the_first() {
    let mut e = engine(
        "  - repeat: 50\n    cycle: true\n    until: discharge_capacity < 80% first\n    steps: [\"Discharge at 1 A for 1 h\"]\n",
    );
    e.start(0.0);
    // Pass k discharges 1 A for an hour, then the measured current fades 5 % per pass.
    let mut t = 0.0;
    let mut passes = 0;
    let mut current: f64 = 1.0;
    loop {
        e.update(&at(t, 3.7, -current));
        t += 3600.0;
        let u = e.update(&at(t, 3.7, -current));
        passes += 1;
        if u.outcome.is_some() {
            break;
        }
        current *= 0.95;
        assert!(passes < 50);
    }
    // 0.95^4 = 0.815, 0.95^5 = 0.774: the fifth pass after the first is below 80 %.
    assert_eq!(passes, 6);
    assert_eq!(e.status().cycle, 6);
}

#[test]
fn checkpoint_restore_keeps_chamber_wait_and_loop_exit_state() {
    let steps = "  - chamber: 30 degC\n    wait: {within: 1 degC, for: 20 s}\n  - repeat: 10\n    cycle: true\n    until: discharge_capacity < 90% first\n    steps: [\"Discharge at 1 A for 10 s\"]\n";
    let mut a = engine(steps);
    a.start(0.0);
    for n in 1..=15 {
        a.update(&with_temp(at(f64::from(n), 3.7, 0.0), Some(30.0)));
    }
    let state: EngineState =
        serde_json::from_str(&serde_json::to_string(&a.checkpoint()).unwrap()).unwrap();
    let mut b = Engine::restore(yaml_plan(steps), &Safety::default(), state).unwrap();
    for n in 16..=200 {
        let i = if n < 60 { -1.0 } else { -0.5 };
        let m = with_temp(at(f64::from(n), 3.7, i), Some(30.0));
        assert_eq!(a.update(&m), b.update(&m), "diverged at {n} s");
    }
    assert_eq!(a.status(), b.status());
    assert!(b.status().finished);
    assert!(
        b.status().cycle < 10,
        "left the loop early: {:?}",
        b.status()
    );
}

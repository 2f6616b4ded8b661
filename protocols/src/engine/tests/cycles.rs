//! The cycle rule: every pass of a counting `cycle: true` loop is exactly one cycle, no cycle
//! spans two loops' passes, and steps outside cycling loops go where `docs/protocols.md` says.

use std::collections::BTreeMap;

use super::*;

/// Charge and discharge steps entered per cycle.
type PerCycle = BTreeMap<u32, (u32, u32)>;

/// The engine's cycle of the step just entered, checked against what a native runner derives
/// from the plan steps alone ([`CycleFollower`]).
fn follow(e: &Engine, f: &mut CycleFollower, previous: &mut Option<usize>) {
    let i = e.status().plan_index;
    if !matches!(e.plan().steps.get(i), Some(PlanStep::Action(_))) {
        return;
    }
    let derived = f.enter(e.plan(), i, *previous, *previous == Some(i));
    assert_eq!(
        derived,
        e.status().cycle,
        "the cycle derived from plan step {i} (after {previous:?}) is the engine's"
    );
    *previous = Some(i);
}

fn note(e: &Engine, out: &mut PerCycle) {
    let PlanStep::Action(a) = &e.plan().steps[e.status().plan_index] else {
        return;
    };
    let entry = out.entry(e.status().cycle).or_insert((0, 0));
    match a.control {
        Control::Current { amps } | Control::Cccv { amps, .. } if amps > 0.0 => entry.0 += 1,
        Control::Current { amps } | Control::Cccv { amps, .. } if amps < 0.0 => entry.1 += 1,
        _ => {}
    }
}

/// Runs `steps` to their end against the linear cell with 1 s polls (the chamber's air at its
/// set point at once) and counts the charge and discharge steps entered in every cycle.
fn per_cycle(steps: &str) -> PerCycle {
    let mut e = engine(steps);
    let mut cell = Cell {
        capacity_ah: 2.5,
        soc: 0.5,
        r: 0.05,
    };
    let mut out = PerCycle::new();
    let (mut follower, mut previous) = (CycleFollower::default(), None);
    let mut cmd = e.start(0.0);
    note(&e, &mut out);
    follow(&e, &mut follower, &mut previous);
    let mut air = 25.0;
    for n in 1..2_000_000 {
        if let Command::Chamber { temperature_c } = cmd {
            air = temperature_c;
        }
        let m = Measurement {
            chamber_c: Some(air),
            ..cell.apply(cmd, f64::from(n), 1.0)
        };
        let u = e.update(&m);
        if u.outcome.is_some() {
            assert_eq!(u.outcome, Some(Outcome::Finished), "{:?}", e.status());
            return out;
        }
        if u.step_changed {
            note(&e, &mut out);
            follow(&e, &mut follower, &mut previous);
        }
        cmd = u.command;
    }
    panic!("the protocol did not end");
}

fn one_charge_one_discharge(n: u32) -> PerCycle {
    (1..=n).map(|c| (c, (1, 1))).collect()
}

fn cycling(n: u32) -> String {
    format!(
        "  - repeat: {n}\n    cycle: true\n    steps:\n      - \"Charge at 1 A for 60 s\"\n      - \"Rest for 10 s\"\n      - \"Discharge at 1 A for 60 s\"\n      - \"Rest for 10 s\"\n"
    )
}

#[test]
fn two_consecutive_cycling_loops_of_two_passes_are_four_cycles_of_one_charge_and_one_discharge() {
    let steps = format!("{}{}", cycling(2), cycling(2));
    assert_eq!(per_cycle(&steps), one_charge_one_discharge(4));
}

#[test]
fn formation_of_three_then_cycle_life_of_five_is_eight_cycles_rests_joining_them() {
    let steps = format!(
        "  - \"Rest for 30 s\"\n{}  - \"Rest for 30 s\"\n{}  - \"Rest for 30 s\"\n",
        cycling(3),
        cycling(5)
    );
    assert_eq!(per_cycle(&steps), one_charge_one_discharge(8));
}

#[test]
fn chamber_steps_and_soaks_before_and_between_cycling_loops_open_no_cycle_of_their_own() {
    let block = |t: u32| {
        format!(
            "  - chamber: {t} degC\n    wait: {{within: 0.5 degC, for: 20 s}}\n  - \"Rest for 30 s\"\n{}",
            cycling(1)
        )
    };
    let steps = format!("{}{}{}", block(25), block(45), block(25));
    assert_eq!(per_cycle(&steps), one_charge_one_discharge(3));
}

#[test]
fn a_capacity_check_before_the_first_cycling_loop_is_cycle_one_and_the_first_pass_cycle_two() {
    let steps = format!(
        "  - \"Rest for 30 s\"\n  - \"Charge at 1 A for 60 s\"\n  - \"Discharge at 1 A for 60 s\"\n  - \"Rest for 30 s\"\n{}",
        cycling(3)
    );
    assert_eq!(per_cycle(&steps), one_charge_one_discharge(4));
}

#[test]
fn a_check_between_and_after_cycling_loops_is_a_cycle_of_its_own() {
    let check = "  - \"Charge at 1 A for 60 s\"\n  - \"Rest for 10 s\"\n  - \"Discharge at 1 A for 60 s\"\n";
    let steps = format!("{}{check}{}{check}", cycling(2), cycling(2));
    assert_eq!(per_cycle(&steps), one_charge_one_discharge(6));
}

#[test]
fn in_nested_cycling_loops_only_the_innermost_counts_and_the_outer_steps_are_their_own_cycle() {
    // Ageing blocks of 3 cycles, each followed by a reference check: 2 x (3 + 1) cycles.
    let steps = "  - repeat: 2
    cycle: true
    steps:
      - repeat: 3
        cycle: true
        steps:
          - \"Charge at 1 A for 60 s\"
          - \"Rest for 10 s\"
          - \"Discharge at 1 A for 60 s\"
      - \"Rest for 10 s\"
      - \"Charge at 1 A for 60 s\"
      - \"Discharge at 1 A for 60 s\"
";
    assert_eq!(per_cycle(steps), one_charge_one_discharge(8));
}

#[test]
fn a_protocol_without_cycling_loops_is_all_cycle_one() {
    let steps = "  - \"Charge at 1 A for 60 s\"\n  - \"Discharge at 1 A for 60 s\"\n  - \"Charge at 1 A for 60 s\"\n";
    assert_eq!(per_cycle(steps), BTreeMap::from([(1, (2, 1))]));
}

#[test]
fn loop_exit_on_a_fraction_of_the_first_compares_with_the_first_pass_of_that_loop() {
    // A preamble and a first loop discharge 1 A for 100 s per pass; the second loop's passes
    // discharge half of that, falling 10 % a pass. Measured against the preamble or the first
    // loop it would leave after its first pass; against its own first pass it leaves when a
    // pass is below 80 % of 0.5 A.
    let steps = "  - \"Discharge at 1 A for 100 s\"\n  - repeat: 2\n    cycle: true\n    steps: [\"Discharge at 1 A for 100 s\"]\n  - repeat: 10\n    cycle: true\n    until: discharge_capacity < 80% first\n    steps: [\"Discharge at 1 A for 100 s\"]\n";
    let mut e = engine(steps);
    e.start(0.0);
    let mut t = 0.0;
    let mut second_loop_passes = 0;
    let mut amps: f64 = 1.0;
    loop {
        e.update(&at(t, 3.7, -amps));
        t += 100.0;
        let u = e.update(&at(t, 3.7, -amps));
        assert!(u.step_changed);
        if amps < 1.0 {
            second_loop_passes += 1;
            amps *= 0.9;
        }
        if u.outcome.is_some() {
            break;
        }
        if e.status().cycle >= 4 && amps == 1.0 {
            amps = 0.5;
        }
        assert!(second_loop_passes < 10, "{:?}", e.status());
    }
    // Passes at 0.5, 0.45, 0.405 (81 %), 0.3645 (72.9 %): the fourth is below 80 % of the first.
    assert_eq!(second_loop_passes, 4);
    assert_eq!(e.status().cycle, 1 + 2 + 4);
}

#[test]
fn the_cycle_a_native_runner_derives_from_plan_steps_is_the_engines_even_for_one_step_loops() {
    // `per_cycle` checks every step entered against `CycleFollower`; a loop of one step enters
    // the same plan step on every pass, after a charging preamble and before a closing step.
    let steps = "  - \"Charge at 1 A for 60 s\"
  - repeat: 3
    cycle: true
    steps:
      - \"Discharge at 1 A for 20 s\"
  - \"Rest for 10 s\"
  - \"Charge at 1 A for 30 s\"
";
    assert_eq!(
        per_cycle(steps),
        BTreeMap::from([
            (1, (1, 0)),
            (2, (0, 1)),
            (3, (0, 1)),
            (4, (0, 1)),
            (5, (1, 0))
        ])
    );
}

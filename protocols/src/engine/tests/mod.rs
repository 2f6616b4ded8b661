//! The engine's tests: whole protocols run against a simulated cell, limits, outcomes,
//! integration and checkpoints; `steps`: each kind of step and plan flow; `properties`:
//! invariants over generated protocols.

use super::*;
use crate::plan::{ActionStep, Condition, Control, Termination};
use proptest::prelude::*;

mod cycles;
mod properties;
mod steps;

const SAFE: &str = "safety:\n  voltage: [2.5 V, 4.25 V]\n  current: 5 A\n  temperature: 60 degC\n";

fn yaml_plan(steps: &str) -> Plan {
    let source =
        format!("protocol: t\nversion: 1\nparams: {{capacity: 2.5 Ah}}\n{SAFE}steps:\n{steps}");
    Plan::from_yaml(&source, "t.yaml").unwrap()
}

fn engine(steps: &str) -> Engine {
    Engine::new(yaml_plan(steps), &Safety::default()).unwrap()
}

fn at(t: f64, v: f64, i: f64) -> Measurement {
    Measurement {
        chamber_c: None,
        test_time_s: t,
        voltage_v: v,
        current_a: i,
        temperature_c: Some(25.0),
    }
}

fn with_temp(m: Measurement, c: Option<f64>) -> Measurement {
    Measurement {
        temperature_c: c,
        ..m
    }
}

/// A linear-OCV cell with series resistance that obeys commands like a real power stage,
/// including voltage compliance on current steps.
struct Cell {
    capacity_ah: f64,
    soc: f64,
    r: f64,
}

impl Cell {
    fn ocv(&self) -> f64 {
        3.0 + 1.2 * self.soc
    }

    fn apply(&mut self, cmd: Command, t: f64, dt: f64) -> Measurement {
        let ocv = self.ocv();
        let i = match cmd {
            Command::Off | Command::Chamber { .. } => 0.0,
            Command::Current {
                amps,
                voltage_max,
                voltage_min,
            } => amps.clamp((voltage_min - ocv) / self.r, (voltage_max - ocv) / self.r),
            Command::Voltage { volts, current_max } => {
                ((volts - ocv) / self.r).clamp(-current_max, current_max)
            }
            Command::Power { watts, .. } => {
                (-ocv + (ocv * ocv + 4.0 * self.r * watts).sqrt()) / (2.0 * self.r)
            }
        };
        self.soc += i * dt / 3600.0 / self.capacity_ah;
        at(t, self.ocv() + i * self.r, i)
    }
}

/// Runs an engine against the cell with 1 s polls; returns the last update and the number
/// of polls.
fn run(engine: &mut Engine, cell: &mut Cell, max_polls: usize) -> (Update, usize) {
    let mut cmd = engine.start(0.0);
    for n in 1..=max_polls {
        let t = n as f64;
        let m = cell.apply(cmd, t, 1.0);
        let u = engine.update(&m);
        if u.outcome.is_some() {
            return (u, n);
        }
        cmd = u.command;
    }
    panic!("the protocol did not end within {max_polls} polls");
}

#[test]
fn demo_protocol_runs_to_completion_with_a_discharge_then_two_full_cycles() {
    let plan = Plan::from_yaml(
        include_str!("../../../../deploy/protocols/demo.yaml"),
        "demo.yaml",
    )
    .unwrap();
    let mut e = Engine::new(plan, &Safety::default()).unwrap();
    let mut cell = Cell {
        capacity_ah: 2.5,
        soc: 0.5,
        r: 0.05,
    };
    let (u, _) = run(&mut e, &mut cell, 100_000);
    assert_eq!(u.outcome, Some(Outcome::Finished));
    assert_eq!(u.command, Command::Off);
    let s = e.status();
    assert!(s.finished);
    // The discharge to 3.0 V is cycle 1; the two CCCV cycles are 2 and 3.
    assert_eq!(s.cycle, 3);
    assert_eq!(s.step_count, 13);
    // A full CCCV charge and CC discharge each move most of the capacity.
    assert!(s.discharge_capacity_ah > 2.0 * 1.5, "{s:?}");
    assert!(s.charge_capacity_ah > 2.0 * 1.5, "{s:?}");
}

#[test]
fn commands_carry_the_effective_limits_as_compliance() {
    let lab = Safety {
        voltage_max: Some(4.22),
        current_max: Some(4.0),
        ..Safety::default()
    };
    let mut e = Engine::new(
        yaml_plan("  - \"Charge at 1C until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n"),
        &lab,
    )
    .unwrap();
    assert_eq!(
        e.start(0.0),
        Command::Current {
            amps: 2.5,
            voltage_max: 4.22,
            voltage_min: 2.5
        }
    );
    let u = e.update(&at(1.0, 4.2, 2.5));
    assert!(u.step_changed);
    assert_eq!(
        u.command,
        Command::Voltage {
            volts: 4.2,
            current_max: 4.0
        }
    );
    assert_eq!(e.status().description, "Hold at 4.2 V until C/20");
}

#[test]
fn a_discharge_to_the_labs_floor_ends_when_the_stage_holds_the_cell_a_setpoint_step_above_it() {
    // An EA PSB sets its floor to the register step nearest 2.5 V: 2.50057 V. The cell is
    // held there, the current collapses, and the reading never goes to 2.5 V.
    let mut e = engine("  - \"Discharge at 1C until 2.5 V\"\n  - \"Rest for 1 minute\"\n");
    e.start(0.0);
    assert!(!e.update(&at(1.0, 2.62, -2.5)).step_changed);
    assert!(
        !e.update(&at(2.0, 2.5006, -2.4)).step_changed,
        "still at full current"
    );
    let u = e.update(&at(3.0, 2.50057, -0.6));
    assert!(
        u.step_changed,
        "held at the floor with the current collapsed"
    );
    assert_eq!(u.command, Command::Off);
}

#[test]
fn a_discharge_to_a_cutoff_well_above_the_floor_does_not_end_when_the_current_dips() {
    let mut e = engine("  - \"Discharge at 1C until 3.0 V\"\n  - \"Rest for 1 minute\"\n");
    e.start(0.0);
    assert!(!e.update(&at(1.0, 3.2, -2.5)).step_changed);
    assert!(!e.update(&at(2.0, 3.1, -0.5)).step_changed);
    assert!(e.update(&at(3.0, 3.0, -2.5)).step_changed);
}

#[test]
fn missing_limits_are_an_error() {
    let plan = Plan::from_yaml(
        "protocol: x\nversion: 1\nsteps: [\"Rest for 1 s\"]\n",
        "t.yaml",
    )
    .unwrap();
    let e = Engine::new(plan.clone(), &Safety::default()).unwrap_err();
    assert!(e.to_string().contains("no minimum voltage"), "{e}");
    let lab = Safety {
        voltage_min: Some(2.5),
        voltage_max: Some(4.2),
        current_max: Some(1.0),
        ..Safety::default()
    };
    assert!(Engine::new(plan, &lab).is_ok());
}

#[test]
fn setpoint_beyond_the_limits_is_rejected_before_running() {
    let plan = yaml_plan("  - \"Charge at 3C until 4.2 V\"\n");
    let e = Engine::new(plan, &Safety::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("asks for 7.5 A, above the current limit of 5 A"),
        "{e}"
    );
    let plan = yaml_plan("  - \"Charge at 1 A until 4.3 V\"\n");
    assert!(Engine::new(plan, &Safety::default()).is_err());
}

#[test]
fn safety_violation_faults_and_turns_output_off() {
    let mut e = engine("  - \"Charge at 1 A until 4.2 V\"\n");
    e.start(0.0);
    assert_eq!(e.update(&at(1.0, 4.0, 1.0)).outcome, None);
    let u = e.update(&at(2.0, 4.3, 1.0));
    assert_eq!(u.command, Command::Off);
    let Some(Outcome::Faulted(reason)) = u.outcome else {
        panic!("no fault: {u:?}")
    };
    assert!(
        reason.contains("4.3 V") && reason.contains("4.25 V") && reason.contains("steps[0]"),
        "{reason}"
    );
    assert_eq!(e.phase(), &Phase::Faulted(reason));
    let again = e.update(&at(3.0, 4.0, 0.0));
    assert_eq!(
        again,
        Update {
            command: Command::Off,
            step_changed: false,
            outcome: None,
            ended_step: None
        }
    );
}

#[test]
fn every_limit_is_checked() {
    let unreadable = Measurement {
        temperature_c: Some(f64::NAN),
        ..at(1.0, 3.7, 0.0)
    };
    let hot = Measurement {
        temperature_c: Some(61.0),
        ..at(1.0, 3.7, 0.0)
    };
    let cases = [
        (at(1.0, 2.4, 0.0), "below the minimum"),
        (at(1.0, 3.7, -5.5), "exceeds the limit"),
        (hot, "temperature 61"),
        (unreadable, "temperature NaN"),
    ];
    for (m, expected) in cases {
        let mut e = engine("  - \"Rest for 1 h\"\n");
        e.start(0.0);
        let Some(Outcome::Faulted(reason)) = e.update(&m).outcome else {
            panic!("no fault for {m:?}")
        };
        assert!(reason.contains(expected), "{reason}");
    }
    let mut e = engine("  - \"Rest for 1 h\"\n");
    e.start(0.0);
    let Some(Outcome::Faulted(reason)) = e.update(&at(f64::NAN, 3.7, 0.0)).outcome else {
        panic!("NaN accepted")
    };
    assert!(reason.contains("finite"), "{reason}");
}

#[test]
fn step_capacity_limit_faults_a_runaway_step() {
    let source = "protocol: t\nversion: 1\nsafety: {voltage: [2.5 V, 4.25 V], current: 5 A, capacity: 1 Ah}\nsteps: [\"Charge at 2 A until 4.2 V\"]\n";
    let mut e = Engine::new(
        Plan::from_yaml(source, "t.yaml").unwrap(),
        &Safety::default(),
    )
    .unwrap();
    e.start(0.0);
    e.update(&at(0.0, 3.7, 2.0));
    assert_eq!(e.update(&at(1800.0, 3.8, 2.0)).outcome, None);
    let u = e.update(&at(1801.0, 3.8, 2.0));
    assert!(
        matches!(u.outcome, Some(Outcome::Faulted(ref r)) if r.contains("step capacity")),
        "{u:?}"
    );
}

#[test]
fn outcome_is_reported_once_after_finishing() {
    let mut e = engine("  - \"Rest for 10 s\"\n");
    assert_eq!(e.start(0.0), Command::Off);
    assert_eq!(e.update(&at(5.0, 3.7, 0.0)).outcome, None);
    let u = e.update(&at(10.0, 3.7, 0.0));
    assert_eq!(u.outcome, Some(Outcome::Finished));
    assert!(u.step_changed);
    assert_eq!(u.ended_step.map(|s| s.duration_s), Some(10.0));
    assert!(e.status().finished);
    assert_eq!(e.update(&at(11.0, 3.7, 0.0)).outcome, None);
}

#[test]
fn capacity_integrates_with_the_trapezoid_rule() {
    let mut e = engine("  - \"Rest for 10 h\"\n");
    e.start(0.0);
    e.update(&at(0.0, 4.0, 1.0));
    e.update(&at(3600.0, 4.0, 1.0));
    assert!((e.status().charge_capacity_ah - 1.0).abs() < 1e-12);
    assert!((e.status().charge_energy_wh - 4.0).abs() < 1e-12);
    // From +1 A to -1 A over 2 h: half an hour's worth each way around the zero crossing.
    e.update(&at(3.0 * 3600.0, 4.0, -1.0));
    let s = e.status();
    assert!((s.charge_capacity_ah - 1.5).abs() < 1e-12, "{s:?}");
    assert!((s.discharge_capacity_ah - 0.5).abs() < 1e-12, "{s:?}");
    assert!((s.step_energy_wh - 8.0).abs() < 1e-12, "{s:?}");
}

#[test]
fn checkpoint_restore_continues_the_same_step() {
    let steps = "  - repeat: 3\n    cycle: true\n    steps: [\"Charge at 1 A for 20 s\", \"Discharge at 1 A for 20 s\"]\n";
    let mut a = engine(steps);
    a.start(0.0);
    for n in 1..=50 {
        a.update(&at(
            f64::from(n),
            3.7,
            if (n / 20) % 2 == 0 { 1.0 } else { -1.0 },
        ));
    }
    let json = serde_json::to_string(&a.checkpoint()).unwrap();
    let state: EngineState = serde_json::from_str(&json).unwrap();
    let mut b = Engine::restore(yaml_plan(steps), &Safety::default(), state).unwrap();
    assert_eq!(a.status(), b.status());
    assert_eq!(b.status().cycle, 2);
    assert_eq!(
        b.start(50.0),
        a.command(),
        "start after restore must not restart the test"
    );
    for n in 51..=200 {
        let m = at(f64::from(n), 3.7, 0.5);
        assert_eq!(a.update(&m), b.update(&m), "diverged at {n} s");
        assert_eq!(a.status(), b.status());
    }
    assert!(b.status().finished);
}

#[test]
fn restore_rejects_a_checkpoint_of_another_protocol() {
    let mut a = engine("  - \"Rest for 10 s\"\n");
    a.start(0.0);
    let other = yaml_plan("  - \"Rest for 20 s\"\n");
    let e = Engine::restore(other, &Safety::default(), a.checkpoint()).unwrap_err();
    assert!(matches!(e, ProtocolError::Checkpoint(_)), "{e}");
}

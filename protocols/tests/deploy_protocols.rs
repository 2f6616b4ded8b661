//! The standard protocol library shipped in `deploy/protocols` must always compile and be
//! runnable with the limits it declares.

mod common;

use cyclerd_protocols::{Command, Engine, Measurement, Outcome, Plan, Safety};

#[test]
fn every_deployed_protocol_parses_and_is_runnable() {
    let dir = common::library_dir();
    let mut checked = 0;
    for (path, source) in common::library() {
        let origin = path.display().to_string();
        let plan = Plan::from_yaml(&source, &origin).unwrap_or_else(|e| panic!("{e}"));
        Engine::new(plan, &Safety::default()).unwrap_or_else(|e| panic!("{origin}: {e}"));
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the demo protocols in {}",
        dir.display()
    );
}

#[test]
fn cccv_library_protocol_has_three_cycles_of_three_steps() {
    let source = include_str!("../../deploy/protocols/cccv-3-cycles.yaml");
    let plan = Plan::from_yaml(source, "cccv-3-cycles.yaml").unwrap();
    assert_eq!(plan.name, "CCCV, 3 cycles");
    assert_eq!(plan.capacity_ah, Some(2.5));
    // LoopStart, three actions, LoopEnd, End.
    assert_eq!(plan.steps.len(), 6);
    assert!(matches!(
        plan.steps[0],
        cyclerd_protocols::PlanStep::LoopStart {
            count: 3,
            cycle: true,
            end: 4,
            ..
        }
    ));
}

/// A linear-OCV cell (2.4 V empty .. 4.2 V full) with series resistance, a temperature that
/// follows the chamber setpoint, and capacity fade proportional to discharge throughput, so
/// every library protocol can run to its end, including capacity-based loop exits.
struct Cell {
    capacity_ah: f64,
    soc: f64,
    r: f64,
    temperature_c: f64,
    chamber_c: f64,
}

impl Cell {
    fn new() -> Cell {
        Cell {
            capacity_ah: 2.5,
            soc: 0.5,
            r: 0.03,
            temperature_c: 23.0,
            chamber_c: 23.0,
        }
    }

    fn ocv(&self) -> f64 {
        2.4 + 1.8 * self.soc
    }

    /// Applies `cmd` for `dt` s like an ideal power stage (voltage compliance included) and
    /// returns the measurement at the end.
    fn apply(&mut self, cmd: Command, t: f64, dt: f64) -> Measurement {
        let ocv = self.ocv();
        let i = match cmd {
            Command::Current {
                amps,
                voltage_max,
                voltage_min,
            } => amps.clamp((voltage_min - ocv) / self.r, (voltage_max - ocv) / self.r),
            Command::Voltage { volts, current_max } => {
                ((volts - ocv) / self.r).clamp(-current_max, current_max)
            }
            Command::Power { watts, .. } => {
                (-ocv + (ocv * ocv + 4.0 * self.r * watts).max(0.0).sqrt()) / (2.0 * self.r)
            }
            Command::Chamber { temperature_c } => {
                self.chamber_c = temperature_c;
                0.0
            }
            _ => 0.0,
        };
        let dq = i * dt / 3600.0;
        self.soc += dq / self.capacity_ah;
        if dq < 0.0 {
            self.capacity_ah += 0.004 * dq;
        }
        self.temperature_c += (self.chamber_c - self.temperature_c) * (dt / 600.0).min(1.0);
        Measurement {
            chamber_c: None,
            test_time_s: t,
            voltage_v: self.ocv() + i * self.r,
            current_a: i,
            temperature_c: Some(self.temperature_c),
        }
    }
}

fn library() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = common::library()
        .into_iter()
        .map(|(p, source)| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, source)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_library_protocol_runs_to_completion_on_a_simple_cell() {
    let expected = [
        "capacity-check.yaml",
        "cccv-3-cycles.yaml",
        "cycle-life-1c.yaml",
        "demo.yaml",
        "formation.yaml",
        "gitt.yaml",
        "hppc.yaml",
        "rate-capability.yaml",
        "rpt.yaml",
    ];
    let protocols = library();
    for name in expected {
        assert!(protocols.iter().any(|(n, _)| n == name), "{name} missing");
    }
    for (name, source) in protocols {
        let plan = Plan::from_yaml(&source, &name).unwrap_or_else(|e| panic!("{e}"));
        let mut engine =
            Engine::new(plan, &Safety::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut cell = Cell::new();
        let dt = 2.0;
        let mut cmd = engine.start(0.0);
        let mut outcome = None;
        let mut polls = 0;
        for n in 1..=3_000_000u32 {
            polls = n;
            let m = cell.apply(cmd, f64::from(n) * dt, dt);
            let u = engine.update(&m);
            cmd = u.command;
            if u.outcome.is_some() {
                outcome = u.outcome;
                break;
            }
        }
        assert_eq!(
            outcome,
            Some(Outcome::Finished),
            "{name}: {:?}",
            engine.status()
        );
        let s = engine.status();
        println!(
            "{name}: {polls} polls, {} steps, cycle {}, {:.3} Ah out",
            s.step_count, s.cycle, s.discharge_capacity_ah
        );
        // Charge went in (and, for all but the charge-only demo, came out again).
        assert!(s.charge_capacity_ah > 0.0, "{name}: {s:?}");
        assert!(
            s.discharge_capacity_ah > 0.0 || name == "demo-charge.yaml",
            "{name}: {s:?}"
        );
        if name == "cycle-life-1c.yaml" {
            // The fading cell reaches 80 % of its first capacity long before 1000 cycles.
            assert!(
                (20..200).contains(&s.cycle),
                "{name}: ended at cycle {}",
                s.cycle
            );
        }
    }
}

/// Runs a library protocol on the simple cell (2 s polls) and counts, per cycle, the charge
/// and discharge steps it entered (CV holds belong to their charge and are not counted).
fn charges_and_discharges_per_cycle(name: &str) -> std::collections::BTreeMap<u32, (u32, u32)> {
    use cyclerd_protocols::{Control, PlanStep};
    let (_, source) = library()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    let plan = Plan::from_yaml(&source, name).unwrap();
    let mut engine = Engine::new(plan, &Safety::default()).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let note = |e: &Engine, out: &mut std::collections::BTreeMap<u32, (u32, u32)>| {
        if let PlanStep::Action(a) = &e.plan().steps[e.status().plan_index] {
            let entry = out.entry(e.status().cycle).or_insert((0, 0));
            match a.control {
                Control::Current { amps } | Control::Cccv { amps, .. } if amps > 0.0 => {
                    entry.0 += 1
                }
                Control::Current { amps } | Control::Cccv { amps, .. } if amps < 0.0 => {
                    entry.1 += 1
                }
                _ => {}
            }
        }
    };
    let mut cell = Cell::new();
    let mut cmd = engine.start(0.0);
    note(&engine, &mut out);
    for n in 1..=3_000_000u32 {
        let u = engine.update(&cell.apply(cmd, f64::from(n) * 2.0, 2.0));
        if u.outcome.is_some() {
            assert_eq!(u.outcome, Some(Outcome::Finished), "{name}");
            return out;
        }
        if u.step_changed {
            note(&engine, &mut out);
        }
        cmd = u.command;
    }
    panic!("{name} did not end");
}

#[test]
fn library_cycling_protocols_have_one_charge_and_one_discharge_in_every_cycle() {
    for (name, cycles) in [
        ("formation.yaml", 4),
        ("chamber-25-45-25.yaml", 3),
        ("cccv-3-cycles.yaml", 3),
    ] {
        let expected = (1..=cycles).map(|c| (c, (1, 1))).collect();
        assert_eq!(charges_and_discharges_per_cycle(name), expected, "{name}");
    }
    // The demo first discharges every cell to the cutoff (a cycle of its own), then cycles.
    let demo = charges_and_discharges_per_cycle("demo.yaml");
    let expected = [(1, (0, 1)), (2, (1, 1)), (3, (1, 1))]
        .into_iter()
        .collect();
    assert_eq!(demo, expected);
    let life = charges_and_discharges_per_cycle("cycle-life-1c.yaml");
    assert!(life.len() > 20, "{life:?}");
    assert!(life.values().all(|&c| c == (1, 1)), "{life:?}");
}

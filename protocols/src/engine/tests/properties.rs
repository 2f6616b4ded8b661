//! Invariants over generated protocols and measurements.

use super::*;

proptest! {
    #[test]
    fn cc_charge_never_passes_its_cutoff_by_more_than_one_polls_rise(
        amps in 0.1f64..5.0,
        dt in 0.5f64..30.0,
        cutoff in 3.7f64..4.2,
        r in 0.0f64..0.1,
        soc in 0.0f64..0.5,
    ) {
        let mut e = engine(&format!("  - \"Charge at {amps} A until {cutoff} V\"\n"));
        let mut c = Cell { capacity_ah: 2.5, soc, r };
        let mut cmd = e.start(0.0);
        let mut prev_v = c.ocv();
        for n in 1..200_000 {
            let m = c.apply(cmd, f64::from(n) * dt, dt);
            let u = e.update(&m);
            if u.outcome.is_some() || u.step_changed {
                prop_assert!(m.voltage_v >= cutoff);
                prop_assert!(m.voltage_v - cutoff <= m.voltage_v - prev_v + 1e-12,
                    "overshoot {} V with a poll rise of {} V", m.voltage_v - cutoff, m.voltage_v - prev_v);
                return Ok(());
            }
            prop_assert!(m.voltage_v < cutoff, "passed the cutoff without ending the step");
            prev_v = m.voltage_v;
            cmd = u.command;
        }
        prop_assert!(false, "the charge never reached its cutoff");
    }

    #[test]
    fn capacity_and_energy_are_conserved_across_new_step_kinds(
        polls in proptest::collection::vec((0.1f64..5.0, -4.0f64..4.0, 3.0f64..4.1, 20.0f64..40.0), 1..200),
    ) {
        let mut e = engine("  - repeat: 3\n    steps:\n      - cccv: 1 A\n        voltage: 4.1 V\n        for: 7 s\n      - cr: 2 Ohm\n        for: 5 s\n      - chamber: 30 degC\n        wait: {within: 5 degC, for: 3 s}\n      - rest: 4 s\n        until: \"dV/dt <= 1 mV/s\"\n");
        e.start(0.0);
        let polls = polls.into_iter().scan(0.0, |t, (dt, i, v, temp)| {
            *t += dt;
            Some(with_temp(at(*t, v, i), Some(temp)))
        });
        summaries_add_up(&mut e, polls)?;
    }
}

/// Feeds `polls` to a started engine until the test ends, and checks that the summaries of
/// the ended steps, plus the open step's counters, add up to the test's totals.
fn summaries_add_up(
    e: &mut Engine,
    polls: impl IntoIterator<Item = Measurement>,
) -> Result<Status, TestCaseError> {
    let (mut q_in, mut q_out, mut energy) = (0.0, 0.0, 0.0);
    for m in polls {
        let u = e.update(&m);
        if let Some(s) = u.ended_step {
            q_in += s.charge_ah;
            q_out += s.discharge_ah;
            energy += s.energy_wh;
        }
        if u.outcome.is_some() {
            break;
        }
    }
    let s = e.status().clone();
    if !s.finished {
        q_in += s.step_charge_ah;
        q_out += s.step_discharge_ah;
        energy += s.step_energy_wh;
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()));
    prop_assert!(
        close(q_in, s.charge_capacity_ah),
        "{} vs {}",
        q_in,
        s.charge_capacity_ah
    );
    prop_assert!(
        close(q_out, s.discharge_capacity_ah),
        "{} vs {}",
        q_out,
        s.discharge_capacity_ah
    );
    prop_assert!(close(energy, s.charge_energy_wh + s.discharge_energy_wh));
    Ok(s)
}

#[derive(Debug, Clone)]
enum Block {
    /// A 1 s step: a charge when true, else a rest.
    Step(bool),
    Repeat(u32, bool, Vec<Block>),
}

fn blocks() -> impl Strategy<Value = Vec<Block>> {
    let block = any::<bool>()
        .prop_map(Block::Step)
        .prop_recursive(3, 24, 3, |inner| {
            (
                1u32..4,
                any::<bool>(),
                proptest::collection::vec(inner, 1..3),
            )
                .prop_map(|(n, cycle, body)| Block::Repeat(n, cycle, body))
        });
    proptest::collection::vec(block, 1..4)
}

/// Writes the blocks as YAML and records, per step path, how often it must run.
fn emit(
    blocks: &[Block],
    path: &str,
    indent: usize,
    passes: u32,
    out: &mut String,
    expected: &mut Vec<(String, u32)>,
) {
    let pad = " ".repeat(indent);
    for (i, b) in blocks.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match b {
            Block::Step(charge) => {
                let step = if *charge { "Charge at 1 A" } else { "Rest" };
                out.push_str(&format!("{pad}- \"{step} for 1 s\"\n"));
                expected.push((p, passes));
            }
            Block::Repeat(n, cycle, body) => {
                out.push_str(&format!(
                    "{pad}- repeat: {n}\n{pad}  cycle: {cycle}\n{pad}  steps:\n"
                ));
                emit(
                    body,
                    &format!("{p}.steps"),
                    indent + 4,
                    passes * n,
                    out,
                    expected,
                );
            }
        }
    }
}

/// The cycle rule of `docs/protocols.md`, written over the block tree: the cycle of every
/// step in the order the steps run. `owner`: 0 nothing has begun a cycle, 1 a counting
/// loop's pass, 2 charging steps outside counting loops.
fn cycle_of_each_step(
    blocks: &[Block],
    inside: bool,
    owner: &mut u8,
    cycle: &mut u32,
    out: &mut Vec<u32>,
) {
    fn has_cycling(blocks: &[Block]) -> bool {
        blocks.iter().any(|b| match b {
            Block::Step(_) => false,
            Block::Repeat(_, cycle, body) => *cycle || has_cycling(body),
        })
    }
    for b in blocks {
        match b {
            Block::Step(charge) => {
                if !inside && *charge {
                    if *owner == 1 {
                        *cycle += 1;
                    }
                    *owner = 2;
                }
                out.push(*cycle);
            }
            Block::Repeat(n, c, body) => {
                let counting = *c && !has_cycling(body);
                for _ in 0..*n {
                    if counting {
                        if *owner != 0 {
                            *cycle += 1;
                        }
                        *owner = 1;
                    }
                    cycle_of_each_step(body, inside || counting, owner, cycle, out);
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn every_step_is_in_the_cycle_the_rule_gives(tree in blocks()) {
        let mut yaml = String::new();
        emit(&tree, "steps", 2, 1, &mut yaml, &mut Vec::new());
        let mut expected = Vec::new();
        cycle_of_each_step(&tree, false, &mut 0, &mut 1, &mut expected);
        let mut e = engine(&yaml);
        e.start(0.0);
        let mut seen = vec![e.status().cycle];
        for n in 1..=expected.len() {
            let u = e.update(&at(f64::from(u32::try_from(n).unwrap()), 3.7, 0.0));
            if u.outcome.is_some() {
                break;
            }
            seen.push(e.status().cycle);
        }
        prop_assert!(e.status().finished);
        prop_assert_eq!(seen, expected, "{}", yaml);
    }

    #[test]
    fn loop_body_runs_exactly_count_times(tree in blocks()) {
        let mut yaml = String::new();
        let mut expected = Vec::new();
        emit(&tree, "steps", 2, 1, &mut yaml, &mut expected);
        let mut e = engine(&yaml);
        e.start(0.0);
        let path = |e: &Engine| match &e.plan().steps[e.status().plan_index] {
            PlanStep::Action(a) => a.path.clone(),
            other => panic!("not on an action: {other:?}"),
        };
        let mut runs = std::collections::BTreeMap::<String, u32>::new();
        *runs.entry(path(&e)).or_default() += 1;
        let total: u32 = expected.iter().map(|(_, n)| n).sum();
        for n in 1..=total {
            let u = e.update(&at(f64::from(n), 3.7, 0.0));
            prop_assert!(u.step_changed);
            if u.outcome.is_some() {
                prop_assert_eq!(n, total);
                break;
            }
            *runs.entry(path(&e)).or_default() += 1;
        }
        prop_assert!(e.status().finished);
        prop_assert_eq!(e.status().step_count, total);
        for (p, n) in expected {
            prop_assert_eq!(runs.get(&p).copied(), Some(n), "{}", p);
        }
    }

    #[test]
    fn capacity_counters_are_conserved_across_steps(
        steps in proptest::collection::vec((0u8..3, 0.1f64..3.0, 1u32..20), 1..6),
        polls in proptest::collection::vec((0.1f64..5.0, -4.0f64..4.0, 3.0f64..4.1), 1..200),
    ) {
        let yaml: String = steps.iter().map(|(kind, amps, secs)| match kind {
            0 => format!("  - \"Charge at {amps} A for {secs} s\"\n"),
            1 => format!("  - \"Discharge at {amps} A for {secs} s\"\n"),
            _ => format!("  - \"Rest for {secs} s\"\n"),
        }).collect();
        let mut e = engine(&format!("  - repeat: 2\n    steps:\n{}", yaml.replace("  - ", "      - ")));
        e.start(0.0);
        let polls = polls.into_iter().scan(0.0, |t, (dt, i, v)| {
            *t += dt;
            Some(at(*t, v, i))
        });
        let s = summaries_add_up(&mut e, polls)?;
        prop_assert!(s.charge_capacity_ah >= 0.0 && s.discharge_capacity_ah >= 0.0);
    }

    #[test]
    fn arbitrary_measurements_never_panic(
        polls in proptest::collection::vec((any::<f64>(), any::<f64>(), any::<f64>(), proptest::option::of(any::<f64>())), 0..50),
    ) {
        let mut e = engine("  - \"Charge at 1 A for 10 s or until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n");
        for (t, v, i, temp) in polls {
            let u = e.update(&Measurement { test_time_s: t, voltage_v: v, current_a: i, temperature_c: temp, chamber_c: None });
            prop_assert!(u.outcome.is_none() || e.phase() != &Phase::Running);
        }
        let _ = serde_json::to_string(&e.checkpoint());
    }
}

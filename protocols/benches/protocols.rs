//! Protocol benchmarks (run in release: `cargo bench -p cyclerd-protocols --bench protocols`).
//!
//! 1. Parse a 1000-step protocol, next to parsing the same YAML into a generic value (the
//!    YAML layer's own cost, measured in the same run): the ratio is our overhead.
//! 2. Compile that plan to every target, next to serialising it as JSON.
//! 3. Engine update cost per sample, and what fraction of a 100 Hz poll it takes.

use cyclerd_protocols::compile::{Target, compile};
use cyclerd_protocols::{Engine, Measurement, Plan, Safety};
use std::hint::black_box;
use std::time::Instant;

#[path = "../../scripts/bench_table.rs"]
mod table;
use table::{Goal, Row, Stats, report};

/// Measurements per side, alternating ours and the baseline.
const ROUNDS: usize = 5;
/// A protocol every target expresses: the fallback for a target the big one is beyond.
const CCCV_3_CYCLES: &str = include_str!("../../deploy/protocols/cccv-3-cycles.yaml");

/// 1000 action steps: 250 passes of a 4-step CCCV cycle, written out flat.
fn big_protocol() -> String {
    let mut yaml = String::from(
        "protocol: Thousand steps\nversion: 1\nparams:\n  capacity: 2.5 Ah\nsafety:\n  voltage: [2.5 V, 4.25 V]\n  current: 10 A\nsteps:\n",
    );
    for i in 0..250 {
        let rate = 1 + i % 3;
        yaml.push_str(&format!(
            "  - \"Charge at {rate}C until 4.2 V\"\n  - \"Hold at 4.2 V until C/20\"\n  - \"Rest for {} minutes\"\n  - \"Discharge at {rate}C until 3.0 V\"\n",
            5 + i % 7
        ));
    }
    yaml
}

fn per_second(n: usize, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let yaml = big_protocol();
    const PARSES: usize = 20;
    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    let mut plan = None;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..PARSES {
            let value: serde_json::Value = serde_saphyr::from_str(black_box(&yaml)).unwrap();
            black_box(value);
        }
        raw.push(per_second(PARSES, started));
        let started = Instant::now();
        for _ in 0..PARSES {
            plan = Some(Plan::from_yaml(black_box(&yaml), "big.yaml").unwrap());
        }
        ours.push(per_second(PARSES, started));
    }
    let plan = plan.unwrap();
    report(Row {
        section: "parse",
        what: "1000-step protocol -> plan",
        unit: "/s",
        measured: Stats::of(&ours),
        baseline: Some(("YAML -> generic value", Stats::of(&raw))),
        goal: Goal::None,
    });

    let small = Plan::from_yaml(CCCV_3_CYCLES, "cccv-3-cycles.yaml").unwrap();
    const COMPILES: usize = 20;
    for target in Target::ALL {
        // The big protocol where the target expresses it, else the library's CCCV cycling.
        let (plan, name) = match compile(&plan, target) {
            Ok(_) => (&plan, "1000-step protocol"),
            Err(_) => (&small, "cccv-3-cycles"),
        };
        let (mut json, mut rate) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            for _ in 0..COMPILES {
                black_box(plan.to_json());
            }
            json.push(per_second(COMPILES, started));
            let started = Instant::now();
            for _ in 0..COMPILES {
                bytes = compile(black_box(plan), target)
                    .expect("the target expresses the protocol")
                    .len();
            }
            rate.push(per_second(COMPILES, started));
        }
        let what = format!("{name} -> {} ({bytes} bytes)", target.name());
        report(Row {
            section: "compile",
            what: &what,
            unit: "/s",
            measured: Stats::of(&rate),
            baseline: Some(("the same plan -> JSON", Stats::of(&json))),
            goal: Goal::None,
        });
    }

    let limits = Safety {
        voltage_min: Some(2.5),
        voltage_max: Some(4.25),
        current_max: Some(10.0),
        temperature_max: None,
        capacity_max: None,
    };
    let mut engine = Engine::new(plan.clone(), &limits).unwrap();
    engine.start(0.0);
    const UPDATES: usize = 400_000;
    let mut ns = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        for i in 0..UPDATES {
            // A charge that never reaches its cutoff: the cost of the common, uneventful poll.
            let m = Measurement {
                chamber_c: None,
                test_time_s: (round * UPDATES + i) as f64 * 1e-3,
                voltage_v: 3.7,
                current_a: 2.5,
                temperature_c: None,
            };
            black_box(engine.update(black_box(&m)));
        }
        ns.push(started.elapsed().as_nanos() as f64 / UPDATES as f64);
    }
    let ns = Stats::of(&ns);
    report(Row {
        section: "engine",
        what: "update per sample (a 100 Hz poll period is 1e7 ns)",
        unit: "ns",
        measured: ns,
        baseline: None,
        goal: Goal::None,
    });
}

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

    let started = Instant::now();
    for _ in 0..PARSES {
        let value: serde_json::Value = serde_saphyr::from_str(black_box(&yaml)).unwrap();
        black_box(value);
    }
    let raw = per_second(PARSES, started);
    let started = Instant::now();
    let mut plan = None;
    for _ in 0..PARSES {
        plan = Some(Plan::from_yaml(black_box(&yaml), "big.yaml").unwrap());
    }
    let ours = per_second(PARSES, started);
    let plan = plan.unwrap();
    println!(
        "parse     1000-step protocol       {:>10.1} /s   baseline YAML -> generic value {:>10.1} /s   ratio {:.2}",
        ours,
        raw,
        ours / raw
    );

    const COMPILES: usize = 20;
    let started = Instant::now();
    for _ in 0..COMPILES {
        black_box(plan.to_json());
    }
    let json = per_second(COMPILES, started);
    for target in Target::ALL {
        let started = Instant::now();
        let mut result = Ok(String::new());
        for _ in 0..COMPILES {
            result = compile(black_box(&plan), target);
        }
        let rate = per_second(COMPILES, started);
        match result {
            Ok(text) => println!(
                "compile   {:<12} {:>10.1} /s   baseline plan -> JSON {:>10.1} /s   ratio {:.2}   ({} bytes)",
                target.name(),
                rate,
                json,
                rate / json,
                text.len()
            ),
            Err(e) => println!("compile   {:<12} not expressible: {e}", target.name()),
        }
    }

    let limits = Safety {
        voltage_min: Some(2.5),
        voltage_max: Some(4.25),
        current_max: Some(10.0),
        temperature_max: None,
        capacity_max: None,
    };
    let mut engine = Engine::new(plan, &limits).unwrap();
    engine.start(0.0);
    const UPDATES: usize = 2_000_000;
    let started = Instant::now();
    for i in 0..UPDATES {
        // A charge that never reaches its cutoff: the cost of the common, uneventful poll.
        let m = Measurement {
            chamber_c: None,
            test_time_s: i as f64 * 1e-3,
            voltage_v: 3.7,
            current_a: 2.5,
            temperature_c: None,
        };
        black_box(engine.update(black_box(&m)));
    }
    let ns = started.elapsed().as_nanos() as f64 / UPDATES as f64;
    println!(
        "engine    update                   {ns:>10.1} ns/sample   {:.6} of a 100 Hz poll period",
        ns / 10_000_000.0
    );
}

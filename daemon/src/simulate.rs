//! `cyclerctl protocol simulate`: a protocol run by the engine against the cell model, with no
//! device and no clock: the fastest way to see what a protocol does before it touches a cell.

use cyclerd_drivers::cell::{Cell, CellParams};
use cyclerd_drivers::stage::ideal_current;
use cyclerd_protocols::{Command, Engine, Measurement, Outcome, Plan, Safety};
use std::io::Write;

/// One simulated sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimSample {
    pub t_s: f64,
    pub voltage_v: f64,
    pub current_a: f64,
    pub temperature_c: f64,
    pub step: u32,
    pub cycle: u32,
    pub charge_ah: f64,
    pub discharge_ah: f64,
}

/// What a simulation found.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub duration_s: f64,
    /// "finished", or the fault that ended it, or "time limit".
    pub outcome: String,
    pub steps: u32,
    pub cycles: u32,
    /// Discharge capacity of each cycle, Ah (cycle 1 first).
    pub discharge_per_cycle_ah: Vec<f64>,
    pub charge_ah: f64,
    pub discharge_ah: f64,
    pub samples: usize,
}

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seconds between measurements.
    pub dt_s: f64,
    /// Give up after this much simulated time.
    pub max_s: f64,
    /// The lab limits the protocol runs under.
    pub limits: Safety,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            dt_s: 1.0,
            max_s: 5.0 * 365.0 * 86400.0,
            limits: Safety {
                voltage_min: Some(2.0),
                voltage_max: Some(4.4),
                current_max: Some(100.0),
                temperature_max: Some(80.0),
                capacity_max: None,
            },
        }
    }
}

/// Runs `plan` on a simulated cell; every sample goes to `sink` (for CSV or plotting).
pub fn simulate(
    plan: Plan,
    cell: CellParams,
    options: &SimOptions,
    mut sink: impl FnMut(&SimSample),
) -> Result<SimReport, cyclerd_protocols::ProtocolError> {
    let mut engine = Engine::new(plan, &options.limits)?;
    let mut cell = Cell::new(cell);
    let mut command = engine.start(0.0);
    let mut t = 0.0;
    let mut per_cycle: Vec<f64> = Vec::new();
    let mut cycle_start_discharge = 0.0;
    let mut samples = 0usize;
    let outcome = loop {
        if t > options.max_s {
            break "time limit".to_string();
        }
        let current = ideal_current(&cell, &command);
        let m = Measurement {
            chamber_c: None,
            test_time_s: t,
            voltage_v: cell.terminal_voltage(current),
            current_a: current,
            temperature_c: Some(cell.temperature_c()),
        };
        let before = engine.status().cycle;
        let update = engine.update(&m);
        let status = engine.status();
        sink(&SimSample {
            t_s: t,
            voltage_v: m.voltage_v,
            current_a: current,
            temperature_c: cell.temperature_c(),
            step: status.step_count,
            cycle: before,
            charge_ah: status.charge_capacity_ah,
            discharge_ah: status.discharge_capacity_ah,
        });
        samples += 1;
        if status.cycle != before {
            per_cycle.push(status.discharge_capacity_ah - cycle_start_discharge);
            cycle_start_discharge = status.discharge_capacity_ah;
        }
        match update.outcome {
            Some(Outcome::Finished) => break "finished".to_string(),
            Some(Outcome::Faulted(reason)) => break format!("faulted: {reason}"),
            None => {}
        }
        command = update.command;
        if command == Command::Off {
            // Rest: nothing flows, but the RC pair relaxes and the cell cools.
            cell.step(0.0, options.dt_s);
        } else {
            cell.step(ideal_current(&cell, &command), options.dt_s);
        }
        t += options.dt_s;
    };
    let status = engine.status();
    per_cycle.push(status.discharge_capacity_ah - cycle_start_discharge);
    Ok(SimReport {
        duration_s: t,
        outcome,
        steps: status.step_count,
        cycles: status.cycle,
        discharge_per_cycle_ah: per_cycle,
        charge_ah: status.charge_capacity_ah,
        discharge_ah: status.discharge_capacity_ah,
        samples,
    })
}

/// Writes the CSV header for [`write_csv_row`].
pub fn write_csv_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Test Time / s,Voltage / V,Current / A,Cycle Count / 1,Step Count / 1,Charging Capacity / Ah,Discharging Capacity / Ah,Temperature T1 / degC"
    )
}

pub fn write_csv_row(out: &mut impl Write, s: &SimSample) -> std::io::Result<()> {
    writeln!(
        out,
        "{},{},{},{},{},{},{},{}",
        s.t_s,
        s.voltage_v,
        s.current_a,
        s.cycle,
        s.step,
        s.charge_ah,
        s.discharge_ah,
        s.temperature_c
    )
}

/// Keeps at most about `max` evenly spaced samples for a plot.
pub struct Decimator {
    every: usize,
    seen: usize,
    pub kept: Vec<SimSample>,
}

impl Decimator {
    pub fn new(max: usize) -> Decimator {
        Decimator {
            every: 1,
            seen: 0,
            kept: Vec::with_capacity(max),
        }
    }

    pub fn push(&mut self, s: &SimSample) {
        if self.seen.is_multiple_of(self.every) {
            if self.kept.len() == self.kept.capacity() {
                // Full: keep every other sample and halve the rate from now on.
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.every *= 2;
            }
            self.kept.push(*s);
        }
        self.seen += 1;
    }
}

/// Voltage and current against time as an SVG document.
pub fn svg(samples: &[SimSample], title: &str) -> String {
    const W: f64 = 1000.0;
    const H: f64 = 500.0;
    const M: f64 = 60.0;
    let t_max = samples.last().map_or(1.0, |s| s.t_s).max(1e-9);
    let (v_lo, v_hi) = range(samples.iter().map(|s| s.voltage_v));
    let (i_lo, i_hi) = range(samples.iter().map(|s| s.current_a));
    let x = |t: f64| M + t / t_max * (W - 2.0 * M);
    let y = |v: f64, lo: f64, hi: f64| H - M - (v - lo) / (hi - lo) * (H - 2.0 * M);
    let line = |f: &dyn Fn(&SimSample) -> (f64, f64)| {
        samples
            .iter()
            .map(|s| {
                let (px, py) = f(s);
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let volts = line(&|s| (x(s.t_s), y(s.voltage_v, v_lo, v_hi)));
    let amps = line(&|s| (x(s.t_s), y(s.current_a, i_lo, i_hi)));
    let hours = t_max / 3600.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{M}" y="20" font-size="14">{title}</text>
<line x1="{M}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{M}" y1="{M}" x2="{M}" y2="{b}" stroke="black"/>
<line x1="{r}" y1="{M}" x2="{r}" y2="{b}" stroke="black"/>
<text x="{M}" y="{bl}">0 h</text><text x="{r}" y="{bl}" text-anchor="end">{hours:.2} h</text>
<text x="5" y="{M}" fill="#1f77b4">{v_hi:.2} V</text><text x="5" y="{b}" fill="#1f77b4">{v_lo:.2} V</text>
<text x="{rl}" y="{M}" fill="#d62728">{i_hi:.2} A</text><text x="{rl}" y="{b}" fill="#d62728">{i_lo:.2} A</text>
<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="{volts}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1" points="{amps}"/>
</svg>
"##,
        b = H - M,
        bl = H - M + 18.0,
        r = W - M,
        rl = W - M + 5.0,
        title = escape(title),
    )
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if (hi - lo).abs() < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cyclerd_drivers::cell::Chemistry;

    #[test]
    fn the_demo_protocol_simulates_to_completion_with_two_cycles() {
        let plan = Plan::from_yaml(
            include_str!("../../deploy/protocols/demo.yaml"),
            "demo.yaml",
        )
        .unwrap();
        let cell = CellParams::new(Chemistry::Nmc, 2.5);
        let mut n = 0;
        let report = simulate(plan, cell, &SimOptions::default(), |_| n += 1).unwrap();
        assert_eq!(report.outcome, "finished");
        assert_eq!(report.cycles, 2);
        assert_eq!(report.samples, n);
        // A full 1C discharge of a 2.5 Ah cell gives most of its capacity.
        let last = *report.discharge_per_cycle_ah.last().unwrap();
        assert!(last > 2.0 && last < 2.6, "{report:?}");
    }

    #[test]
    fn decimation_keeps_a_bounded_evenly_spaced_set() {
        let mut d = Decimator::new(100);
        for i in 0..10_000 {
            d.push(&SimSample {
                t_s: i as f64,
                voltage_v: 3.7,
                current_a: 0.0,
                temperature_c: 25.0,
                step: 1,
                cycle: 1,
                charge_ah: 0.0,
                discharge_ah: 0.0,
            });
        }
        assert!(d.kept.len() <= 100 && d.kept.len() >= 50);
        assert_eq!(d.kept[0].t_s, 0.0);
        let svg = svg(&d.kept, "a <test>");
        assert!(svg.starts_with("<svg") && svg.contains("a &lt;test&gt;"));
    }
}

//! `cyclerctl protocol simulate`: a protocol run by the engine against the cell model, with no
//! device and no clock: the fastest way to see what a protocol does before it touches a cell.

use crate::channel::stepped::Recorder;
use cyclerd_drivers::cell::{Cell, CellParams};
use cyclerd_drivers::stage::ideal_current;
use cyclerd_protocols::bdf::{self, Sequence, StepType};
use cyclerd_protocols::plan::Record;
use cyclerd_protocols::{Command, Engine, Measurement, Outcome, Plan, PlanStep, Safety};
use std::io::Write;

/// One recorded row: a BDF row, the same columns and values the hub's exports write (the
/// cell's temperature is always known; there is no chamber air).
pub type SimSample = bdf::Row;

/// What a simulation found.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub duration_s: f64,
    /// "finished", or the fault that ended it, or "time limit", or "stopped after N cycles".
    pub outcome: String,
    pub steps: u32,
    /// The cycle the simulation ended in (the engine's numbering).
    pub cycles: u32,
    /// Cycles simulated (each distinct cycle number counts once, the last one even if cut).
    pub cycles_simulated: u32,
    /// Discharge capacity of each cycle simulated, Ah (the first first).
    pub discharge_per_cycle_ah: Vec<f64>,
    /// Each cycle's results from the recorded rows, as a daemon computes them for a real test
    /// ([`crate::proto::cycles`]).
    pub per_cycle: Vec<crate::proto::ingest::CycleSummary>,
    pub charge_ah: f64,
    pub discharge_ah: f64,
    /// Measurements simulated (one per `dt_s`).
    pub samples: usize,
    /// Rows recorded (handed to the sink) under the recording rules.
    pub rows: u64,
}

/// Which simulated measurements become rows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Recording {
    /// The protocol's `record` rules, applied as the stepped runner applies them (a step's
    /// first and last sample always; every sample when the protocol has no rule).
    #[default]
    Protocol,
    /// One row every this many seconds (and a step's first and last), replacing the
    /// protocol's rules.
    Every(f64),
    /// Every simulated measurement.
    All,
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
    /// Which measurements are recorded.
    pub recording: Recording,
    /// Stop once this many cycles were simulated (at the end of the last one).
    pub cycles: Option<u32>,
    /// Unix time of test time 0, for the `Unix Time / s` column.
    pub start_unix_s: f64,
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
            recording: Recording::Protocol,
            cycles: None,
            start_unix_s: 0.0,
        }
    }
}

/// Runs `plan` on a simulated cell; every recorded row goes to `sink` (for CSV or plotting).
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
    let mut cycles_done = 0u32;
    let mut tracker = crate::proto::cycles::CycleTracker::default();
    let mut per_cycle = Vec::new();
    let mut samples = 0usize;
    let mut rows = 0u64;
    // Keeps the first sample (nothing kept yet), then as the stepped runner keeps them.
    let mut recorder = Recorder::default();
    let mut sequence = Sequence::default();
    // The step the last measurement belonged to, and its BDF type.
    let mut typed: Option<(u32, StepType)> = None;
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
        let (step_before, cycle_before, action) = {
            let s = engine.status();
            let action = match engine.plan().steps.get(s.plan_index) {
                Some(PlanStep::Action(a)) => Some(a.clone()),
                _ => None,
            };
            (s.step_count, s.cycle, action)
        };
        let rule = match options.recording {
            Recording::Protocol => action.as_ref().map(|a| a.record).unwrap_or_default(),
            Recording::Every(every_s) => Record {
                every_s: Some(every_s),
                ..Record::default()
            },
            Recording::All => Record::default(),
        };
        let step_type = match typed {
            Some((step, step_type)) if step == step_before => step_type,
            _ => {
                let step_type = action.as_ref().map_or(StepType::Rest, |a| {
                    StepType::of_action(a, Some(m.voltage_v))
                });
                typed = Some((step_before, step_type));
                step_type
            }
        };
        let update = engine.update(&m);
        let status = engine.status();
        samples += 1;
        let cycle_ends = status.cycle != cycle_before;
        if cycle_ends {
            cycles_done += 1;
        }
        let stop_here = cycle_ends && options.cycles == Some(cycles_done);
        let fired = update.step_changed || update.outcome.is_some() || stop_here;
        if recorder.keep(&rule, t, m.voltage_v, current, fired) {
            let (record_index, step_time_s) = sequence.next(step_before, t);
            let point = crate::proto::cycles::Point {
                seq: rows,
                test_time_s: t,
                voltage_v: m.voltage_v,
                current_a: current,
                cycle: cycle_before,
                step: step_before,
                charge_capacity_ah: status.charge_capacity_ah,
                discharge_capacity_ah: status.discharge_capacity_ah,
                charge_energy_wh: status.charge_energy_wh,
                discharge_energy_wh: status.discharge_energy_wh,
                temperature_c: m.temperature_c,
            };
            per_cycle.extend(
                tracker
                    .observe("simulation", &point)
                    .into_iter()
                    .filter(|c| c.complete),
            );
            sink(&bdf::Row {
                test_time_s: t,
                unix_time_s: options.start_unix_s + t,
                voltage_v: m.voltage_v,
                current_a: current,
                cycle: cycle_before,
                step: step_before,
                step_type,
                step_time_s,
                record_index,
                charge_ah: status.charge_capacity_ah,
                discharge_ah: status.discharge_capacity_ah,
                charge_wh: status.charge_energy_wh,
                discharge_wh: status.discharge_energy_wh,
                temperature_c: m.temperature_c,
                ambient_c: None,
            });
            rows += 1;
        }
        if update.step_changed {
            recorder.step_began = true;
        }
        match update.outcome {
            Some(Outcome::Finished) => break "finished".to_string(),
            Some(Outcome::Faulted(reason)) => break format!("faulted: {reason}"),
            None => {}
        }
        if stop_here {
            break format!("stopped after {cycles_done} cycles");
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
    per_cycle.extend(tracker.current("simulation", true));
    Ok(SimReport {
        duration_s: t,
        outcome,
        steps: status.step_count,
        cycles: status.cycle,
        cycles_simulated: per_cycle.len() as u32,
        discharge_per_cycle_ah: per_cycle.iter().map(|c| c.discharge_capacity_ah).collect(),
        per_cycle,
        charge_ah: status.charge_capacity_ah,
        discharge_ah: status.discharge_capacity_ah,
        samples,
        rows,
    })
}

/// Writes the CSV header for [`write_csv_row`]: the hub's BDF export columns for a test with a
/// cell temperature and no chamber ([`bdf::csv_header`]).
pub fn write_csv_header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{}", bdf::csv_header(true, false))
}

/// Writes one row as the hub's BDF CSV export writes it.
pub fn write_csv_row(out: &mut impl Write, s: &SimSample) -> std::io::Result<()> {
    s.write_csv(out, true, false)
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
    let t_max = samples.last().map_or(1.0, |s| s.test_time_s).max(1e-9);
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
    let volts = line(&|s| (x(s.test_time_s), y(s.voltage_v, v_lo, v_hi)));
    let amps = line(&|s| (x(s.test_time_s), y(s.current_a, i_lo, i_hi)));
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

    /// `< 99.9% first` is decided by the engine as the test runs; the per-cycle rows are
    /// computed from the recorded samples afterwards. They must agree: the loop ends at the
    /// first cycle whose row says its discharge fell below 99.9 % of the loop's first cycle's.
    #[test]
    fn a_loop_exit_on_a_fraction_of_the_first_agrees_with_the_per_cycle_rows() {
        let plan = Plan::from_yaml(
            "protocol: Fade\nversion: 1\nparams: {capacity: 2.5 Ah}\n\
             safety: {voltage: [2.5 V, 4.25 V], current: 5 A}\nsteps:\n\
             - \"Discharge at 1C until 3.0 V\"\n\
             - repeat: 100\n  cycle: true\n  until: discharge_capacity < 99.9% first\n  steps:\n\
             \x20   - \"Charge at 1C until 4.2 V\"\n\
             \x20   - \"Hold at 4.2 V until C/20\"\n\
             \x20   - \"Discharge at 1C until 3.0 V\"\n",
            "fade.yaml",
        )
        .unwrap();
        let cell = CellParams::new(Chemistry::Nmc, 2.5);
        let options = SimOptions {
            dt_s: 10.0,
            ..SimOptions::default()
        };
        let report = simulate(plan, cell, &options, |_| {}).unwrap();
        assert_eq!(report.outcome, "finished");
        // Cycle 1 is the discharge before the loop; the loop's cycles follow.
        let looped = &report.per_cycle[1..];
        assert!(looped.len() > 2, "{:?}", report.per_cycle);
        let first = looped[0].discharge_capacity_ah;
        let (last, before) = looped.split_last().unwrap();
        assert!(
            last.discharge_capacity_ah < 0.999 * first,
            "the loop ended at a cycle at 99.9 % or more: {last:?} vs {first}"
        );
        for c in before {
            assert!(
                c.discharge_capacity_ah >= 0.999 * first,
                "the loop went on past a cycle below 99.9 %: {c:?} vs {first}"
            );
        }
    }

    #[test]
    fn the_demo_protocol_simulates_to_completion_with_two_full_cycles_after_its_discharge() {
        let plan = Plan::from_yaml(
            include_str!("../../deploy/protocols/demo.yaml"),
            "demo.yaml",
        )
        .unwrap();
        let cell = CellParams::new(Chemistry::Nmc, 2.5);
        let mut n = 0;
        let report = simulate(plan, cell, &SimOptions::default(), |_| n += 1).unwrap();
        assert_eq!(report.outcome, "finished");
        assert_eq!(report.cycles, 3);
        assert!(!report.per_cycle[0].is_full(), "cycle 1 only discharges");
        for cycle in &report.per_cycle[1..] {
            let ce = cycle.coulombic_efficiency().unwrap();
            assert!((0.99..1.0).contains(&ce), "{cycle:?}");
        }
        assert_eq!(report.rows, n);
        // A full 1C discharge of a 2.5 Ah cell gives most of its capacity.
        let last = *report.discharge_per_cycle_ah.last().unwrap();
        assert!(last > 2.0 && last < 2.6, "{report:?}");
    }

    #[test]
    fn decimation_keeps_a_bounded_evenly_spaced_set() {
        let mut d = Decimator::new(100);
        for i in 0..10_000 {
            d.push(&SimSample {
                test_time_s: i as f64,
                unix_time_s: i as f64,
                voltage_v: 3.7,
                current_a: 0.0,
                cycle: 1,
                step: 1,
                step_type: StepType::Rest,
                step_time_s: i as f64,
                record_index: i + 1,
                charge_ah: 0.0,
                discharge_ah: 0.0,
                charge_wh: 0.0,
                discharge_wh: 0.0,
                temperature_c: Some(25.0),
                ambient_c: None,
            });
        }
        assert!(d.kept.len() <= 100 && d.kept.len() >= 50);
        assert_eq!(d.kept[0].test_time_s, 0.0);
        let svg = svg(&d.kept, "a <test>");
        assert!(svg.starts_with("<svg") && svg.contains("a &lt;test&gt;"));
    }
}

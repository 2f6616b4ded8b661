//! An equivalent-circuit cell: OCV(SOC) + series resistance + one RC pair, coulomb counting and a
//! lumped thermal model. Good enough to make cutoffs, CC/CV crossover, relaxation and heating
//! behave like a real cell in every simulator; not a parameterised digital twin.
//!
//! Sign convention as everywhere in cyclerd: positive current charges the cell.

/// Which OCV curve the cell follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chemistry {
    /// NMC cathode, graphite anode: sloped curve, 3.0 V - 4.2 V.
    Nmc,
    /// LFP cathode, graphite anode: flat plateau near 3.3 V, 2.5 V - 3.65 V.
    Lfp,
}

/// (SOC, OCV / V) points, SOC ascending.
const NMC_OCV: [(f64, f64); 13] = [
    (0.00, 3.00),
    (0.03, 3.30),
    (0.08, 3.48),
    (0.15, 3.57),
    (0.25, 3.64),
    (0.35, 3.69),
    (0.45, 3.74),
    (0.55, 3.80),
    (0.65, 3.87),
    (0.75, 3.95),
    (0.85, 4.03),
    (0.95, 4.13),
    (1.00, 4.19),
];

const LFP_OCV: [(f64, f64); 11] = [
    (0.00, 2.50),
    (0.03, 2.95),
    (0.08, 3.15),
    (0.15, 3.22),
    (0.30, 3.27),
    (0.50, 3.30),
    (0.70, 3.32),
    (0.90, 3.34),
    (0.95, 3.38),
    (0.98, 3.45),
    (1.00, 3.60),
];

/// Beyond the table the voltage runs away steeply, as a real cell's does, so cutoffs are always
/// reached; V per unit SOC.
const OVERRUN_SLOPE: f64 = 20.0;

/// Parameters of one simulated cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellParams {
    pub chemistry: Chemistry,
    /// Capacity at beginning of life; defines 1C.
    pub capacity_ah: f64,
    /// Ohmic resistance: the instant voltage step when current changes.
    pub r0_ohm: f64,
    /// RC pair: the slower polarisation that relaxes during rests.
    pub r1_ohm: f64,
    pub c1_farad: f64,
    /// Heat capacity of the cell (J/K) and its heat transfer to ambient (W/K).
    pub heat_capacity_j_per_k: f64,
    pub cooling_w_per_k: f64,
    pub ambient_c: f64,
    /// The air of the chamber the cell sits in, when it is in one: then its temperature is the
    /// cell's ambient (instead of `ambient_c`) and the cell's heat goes into it.
    pub air: Option<crate::chamber::thermal::Air>,
    /// State of charge at start, 0..1.
    pub initial_soc: f64,
    /// Fraction of capacity lost per full equivalent cycle (throughput / twice the capacity),
    /// so long tests show fade. The charge that goes with the lost capacity is lost too (the
    /// state of charge is kept), as lithium lost to the SEI takes its share of the stored charge.
    pub fade_per_cycle: f64,
    /// Fraction of the charge put in that is stored (the rest feeds side reactions), 0..=1.
    /// Discharge gives back what is stored, so a cycle's coulombic efficiency (discharge Ah /
    /// charge Ah) is about this, a little less with fade.
    pub coulombic_efficiency: f64,
}

impl CellParams {
    /// A 18650-like cell of the given chemistry and capacity.
    pub fn new(chemistry: Chemistry, capacity_ah: f64) -> CellParams {
        // Resistance scales inversely with capacity, as for cells of one design in parallel.
        let scale = 2.5 / capacity_ah.max(1e-3);
        CellParams {
            chemistry,
            capacity_ah,
            r0_ohm: 0.030 * scale,
            r1_ohm: 0.015 * scale,
            c1_farad: 2000.0 / scale,
            heat_capacity_j_per_k: 45.0 / scale,
            cooling_w_per_k: 0.1 / scale,
            ambient_c: 25.0,
            air: None,
            initial_soc: 0.3,
            fade_per_cycle: 2e-4,
            coulombic_efficiency: 0.998,
        }
    }
}

/// State of one simulated cell.
#[derive(Debug, Clone)]
pub struct Cell {
    params: CellParams,
    /// Charge stored, Ah (SOC = stored / capacity); may run slightly outside 0..capacity.
    stored_ah: f64,
    /// Voltage across the RC pair.
    v_rc: f64,
    temperature_c: f64,
    /// Total |charge| moved, for fade.
    throughput_ah: f64,
}

impl Cell {
    pub fn new(params: CellParams) -> Cell {
        Cell {
            stored_ah: params.initial_soc * params.capacity_ah,
            v_rc: 0.0,
            temperature_c: params
                .air
                .as_ref()
                .map_or(params.ambient_c, |a| a.temperature_c()),
            throughput_ah: 0.0,
            params,
        }
    }

    pub fn params(&self) -> &CellParams {
        &self.params
    }

    /// Present capacity after fade.
    pub fn capacity_ah(&self) -> f64 {
        let cycles = self.throughput_ah / (2.0 * self.params.capacity_ah);
        self.params.capacity_ah * (1.0 - self.params.fade_per_cycle * cycles).max(0.5)
    }

    pub fn soc(&self) -> f64 {
        self.stored_ah / self.capacity_ah()
    }

    pub fn temperature_c(&self) -> f64 {
        self.temperature_c
    }

    /// Open-circuit voltage at the present SOC.
    pub fn ocv(&self) -> f64 {
        let table: &[(f64, f64)] = match self.params.chemistry {
            Chemistry::Nmc => &NMC_OCV,
            Chemistry::Lfp => &LFP_OCV,
        };
        interpolate(table, self.soc())
    }

    /// Terminal voltage if `current_a` flows now.
    pub fn terminal_voltage(&self, current_a: f64) -> f64 {
        self.ocv() + self.v_rc + current_a * self.params.r0_ohm
    }

    /// The current that would hold the terminals at `voltage_v` now (the CV law).
    pub fn current_for_voltage(&self, voltage_v: f64) -> f64 {
        (voltage_v - self.ocv() - self.v_rc) / self.params.r0_ohm
    }

    /// Lets `current_a` flow for `dt_s` seconds.
    pub fn step(&mut self, current_a: f64, dt_s: f64) {
        if dt_s <= 0.0 || !current_a.is_finite() {
            return;
        }
        let ah = current_a * dt_s / 3600.0;
        let before = self.capacity_ah();
        self.stored_ah += if ah > 0.0 {
            ah * self.params.coulombic_efficiency.clamp(0.0, 1.0)
        } else {
            ah
        };
        self.throughput_ah += ah.abs();
        // Fade takes its share of the stored charge with it: the SOC stays where it was.
        self.stored_ah *= self.capacity_ah() / before;
        // Exact solution of the RC pair for a constant current over dt.
        let tau = self.params.r1_ohm * self.params.c1_farad;
        let target = current_a * self.params.r1_ohm;
        self.v_rc = target + (self.v_rc - target) * (-dt_s / tau).exp();
        let heat_w = current_a * current_a * (self.params.r0_ohm + self.params.r1_ohm);
        let ambient_c = self
            .params
            .air
            .as_ref()
            .map_or(self.params.ambient_c, |a| a.temperature_c());
        let loss_w = self.params.cooling_w_per_k * (self.temperature_c - ambient_c);
        self.temperature_c += (heat_w - loss_w) * dt_s / self.params.heat_capacity_j_per_k;
        if let Some(air) = &self.params.air {
            air.add_heat_j(loss_w * dt_s);
        }
    }
}

fn interpolate(table: &[(f64, f64)], soc: f64) -> f64 {
    let (first, last) = (table[0], table[table.len() - 1]);
    if soc <= first.0 {
        return first.1 - (first.0 - soc) * OVERRUN_SLOPE;
    }
    if soc >= last.0 {
        return last.1 + (soc - last.0) * OVERRUN_SLOPE;
    }
    let i = table.partition_point(|&(s, _)| s <= soc);
    let (s0, v0) = table[i - 1];
    let (s1, v1) = table[i];
    v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(chemistry: Chemistry, soc: f64) -> Cell {
        Cell::new(CellParams {
            initial_soc: soc,
            ..CellParams::new(chemistry, 2.5)
        })
    }

    #[test]
    fn coulomb_counting_moves_soc_by_charge_over_capacity() {
        let mut c = cell(Chemistry::Nmc, 0.2);
        c.step(2.5, 1800.0);
        assert!((c.soc() - 0.7).abs() < 1e-3, "soc = {}", c.soc());
    }

    #[test]
    fn charging_raises_and_discharging_lowers_terminal_voltage_by_ir() {
        let c = cell(Chemistry::Nmc, 0.5);
        let ocv = c.ocv();
        assert!(c.terminal_voltage(2.5) > ocv);
        assert!(c.terminal_voltage(-2.5) < ocv);
        assert!((c.terminal_voltage(1.0) - ocv - c.params().r0_ohm).abs() < 1e-12);
    }

    #[test]
    fn ocv_is_monotonic_for_both_chemistries() {
        for chem in [Chemistry::Nmc, Chemistry::Lfp] {
            let mut last = f64::MIN;
            for i in -10..=110 {
                let v = cell(chem, i as f64 / 100.0).ocv();
                assert!(v > last, "{chem:?} not increasing at {i}%");
                last = v;
            }
        }
    }

    #[test]
    fn polarisation_relaxes_during_rest() {
        let mut c = cell(Chemistry::Lfp, 0.5);
        c.step(5.0, 600.0);
        let loaded = c.terminal_voltage(0.0);
        c.step(0.0, 3600.0);
        assert!(c.terminal_voltage(0.0) < loaded);
        assert!((c.terminal_voltage(0.0) - c.ocv()).abs() < 1e-3);
    }

    #[test]
    fn current_for_voltage_inverts_terminal_voltage() {
        let c = cell(Chemistry::Nmc, 0.6);
        let i = c.current_for_voltage(4.0);
        assert!((c.terminal_voltage(i) - 4.0).abs() < 1e-9);
    }

    /// Charges to 4.2 V, holds there to C/20, rests, discharges to 3.0 V, rests; returns the
    /// (charge Ah, discharge Ah) of the cycle. 1 s steps.
    fn cccv_cycle(c: &mut Cell) -> (f64, f64) {
        let (mut q_in, mut q_out) = (0.0, 0.0);
        let cap = c.params().capacity_ah;
        loop {
            let i = c.current_for_voltage(4.2).min(cap);
            if i <= cap / 20.0 {
                break;
            }
            c.step(i, 1.0);
            q_in += i / 3600.0;
        }
        c.step(0.0, 600.0);
        while c.terminal_voltage(-cap) > 3.0 {
            c.step(-cap, 1.0);
            q_out += cap / 3600.0;
        }
        c.step(0.0, 600.0);
        (q_in, q_out)
    }

    #[test]
    fn a_cycles_coulombic_efficiency_is_below_100_percent_and_above_99() {
        let mut c = cell(Chemistry::Nmc, 0.3);
        cccv_cycle(&mut c);
        for n in 2..=10 {
            let (q_in, q_out) = cccv_cycle(&mut c);
            let ce = q_out / q_in;
            assert!((0.99..1.0).contains(&ce), "cycle {n}: {ce}");
        }
    }

    #[test]
    fn capacity_fades_slowly_with_throughput_and_the_discharge_capacity_with_it() {
        let mut c = cell(Chemistry::Nmc, 0.3);
        cccv_cycle(&mut c);
        let (_, first) = cccv_cycle(&mut c);
        for _ in 0..48 {
            cccv_cycle(&mut c);
        }
        let (_, fiftieth) = cccv_cycle(&mut c);
        // 2e-4 per cycle: about 1 % in 50 cycles.
        assert!(
            fiftieth < first * 0.995 && fiftieth > first * 0.98,
            "{first} -> {fiftieth}"
        );
        assert!(c.capacity_ah() < 2.5 * 0.995);
    }

    #[test]
    fn without_side_reactions_or_fade_charge_is_conserved() {
        let mut c = Cell::new(CellParams {
            initial_soc: 0.3,
            coulombic_efficiency: 1.0,
            fade_per_cycle: 0.0,
            ..CellParams::new(Chemistry::Nmc, 2.5)
        });
        let stored = c.soc() * 2.5;
        c.step(2.0, 1800.0);
        c.step(-2.0, 1800.0);
        assert!((c.soc() * 2.5 - stored).abs() < 1e-12);
    }

    /// A 1C discharge to 3.0 V run by the engine at the demo's 500x, polled every `poll_wall_s`
    /// of wall time (so every 500 x that of cell time), the cell integrated in 0.5 s sub-steps
    /// as the simulators do: (voltage at which the step ended, voltage change over its last poll).
    fn discharge_to_cutoff_at_500x(poll_wall_s: f64) -> (f64, f64) {
        use cyclerd_protocols::{Engine, Measurement, Plan, Safety};
        let source = "protocol: d\nversion: 1\nparams: {capacity: 2.5 Ah}\nsafety:\n  voltage: [2.5 V, 4.25 V]\n  current: 5 A\nsteps:\n  - \"Discharge at 1C until 3.0 V\"\n  - \"Rest for 1 s\"\n";
        let mut engine = Engine::new(
            Plan::from_yaml(source, "d.yaml").unwrap(),
            &Safety::default(),
        )
        .unwrap();
        let mut c = cell(Chemistry::Nmc, 0.4);
        let poll_s = poll_wall_s * 500.0;
        let mut cmd = engine.start(0.0);
        let mut last_v = c.terminal_voltage(0.0);
        for n in 1..100_000 {
            let mut left = poll_s;
            while left > 0.0 {
                let dt = left.min(0.5);
                c.step(crate::stage::ideal_current(&c, &cmd), dt);
                left -= dt;
            }
            let i = crate::stage::ideal_current(&c, &cmd);
            let v = c.terminal_voltage(i);
            let u = engine.update(&Measurement {
                test_time_s: f64::from(n) * poll_s,
                voltage_v: v,
                current_a: i,
                temperature_c: Some(c.temperature_c()),
                chamber_c: None,
            });
            if u.step_changed {
                return (v, last_v - v);
            }
            last_v = v;
            cmd = u.command;
        }
        panic!("the discharge never reached its cutoff");
    }

    #[test]
    fn at_500x_a_discharge_stops_past_its_cutoff_by_at_most_one_polls_voltage_change() {
        // The bound stated in README's demo section: at most the voltage change of one poll,
        // which for this cell at 1C near 3.0 V is under 3 mV per second of cell time: 15 mV for
        // a poll every 10 ms of wall time at 500x (5 s of cell time), 30 mV for one every 20 ms.
        for (poll_wall_s, bound_v) in [(0.002, 0.003), (0.01, 0.015), (0.02, 0.030)] {
            let (v, last_change) = discharge_to_cutoff_at_500x(poll_wall_s);
            let overshoot = 3.0 - v;
            assert!(overshoot >= 0.0);
            assert!(
                overshoot <= last_change,
                "{overshoot} V past, last poll {last_change} V"
            );
            assert!(
                overshoot <= bound_v,
                "{poll_wall_s} s polls: {overshoot} V past 3.0 V"
            );
            assert!(
                last_change <= bound_v,
                "{poll_wall_s} s polls: {last_change} V a poll"
            );
        }
    }

    #[test]
    fn current_heats_the_cell() {
        let mut c = cell(Chemistry::Nmc, 0.5);
        c.step(5.0, 600.0);
        assert!(c.temperature_c() > 25.0);
    }
}

//! Samples like those of `cyclerd demo` (simulated EA PSB channels polled every 0.1 s of
//! simulated time on a scaled clock): CC-CV charge and CC discharge of a 2.5 Ah cell with
//! rests, voltage and current as the PSB's 16-bit registers give them, times with the jitter
//! of a scaled clock, capacities and energies integrated as the protocol engine does, no
//! temperature sensor, plan steps.

use crate::ingest::SampleBatch;

/// The EA PSB's register full scale, and the demo's nominal ratings.
const FULL_SCALE: f64 = 52428.0;
const NOMINAL_V: f64 = 60.0;
const NOMINAL_A: f64 = 40.0;
const CAPACITY_AH: f64 = 2.5;

/// As the PSB driver converts a register.
fn from_raw(raw: f64, nominal: f64) -> f64 {
    raw / FULL_SCALE * nominal
}

fn quantise(v: f64, nominal: f64) -> f64 {
    from_raw((v.abs() / nominal * FULL_SCALE).round(), nominal) * v.signum()
}

/// As the protocol engine integrates (`split_trapezoid`).
fn split_trapezoid(a: f64, b: f64, h: f64) -> (f64, f64) {
    if a >= 0.0 && b >= 0.0 {
        ((a + b) / 2.0 * h, 0.0)
    } else if a <= 0.0 && b <= 0.0 {
        (0.0, -(a + b) / 2.0 * h)
    } else {
        let f = a.abs() / (a.abs() + b.abs());
        let first = a.abs() * f * h / 2.0;
        let second = b.abs() * (1.0 - f) * h / 2.0;
        if a > 0.0 {
            (first, second)
        } else {
            (second, first)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Charge,
    Hold,
    RestAfterCharge,
    Discharge,
    RestAfterDischarge,
}

/// One channel's test, sample by sample.
pub struct Demo {
    rng: u64,
    start_unix: f64,
    unix: f64,
    phase: Phase,
    phase_start: f64,
    soc: f64,
    i_cv: f64,
    cycle: u32,
    step: u32,
    prev: Option<(f64, f64, f64)>,
    q: [f64; 4],
    seq: u64,
}

impl Demo {
    pub fn new(seed: u64) -> Demo {
        let start_unix = 1_733_000_000.123_456 + seed as f64;
        Demo {
            rng: 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9),
            start_unix,
            unix: start_unix,
            phase: Phase::Charge,
            phase_start: 0.0,
            soc: 0.1,
            i_cv: 0.0,
            cycle: 0,
            step: 0,
            prev: None,
            q: [0.0; 4],
            seq: 0,
        }
    }

    fn noise(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn next_phase(&mut self, phase: Phase, t: f64) {
        self.phase = phase;
        self.phase_start = t;
        self.step += 1;
        if phase == Phase::Charge {
            self.cycle += 1;
        }
    }

    /// The next `n` samples of test `test_id`.
    pub fn batch(&mut self, test_id: &str, n: usize) -> SampleBatch {
        let mut b = SampleBatch {
            test_id: test_id.into(),
            first_seq: self.seq,
            ..Default::default()
        };
        for _ in 0..n {
            // A poll every 0.1 s of simulated time, late by what the scaled clock jitters.
            self.unix += 0.1 + self.noise().abs() * 0.02;
            let t = self.unix - self.start_unix;
            let ocv = 3.0 + 1.1 * self.soc + 0.1 * (self.soc * 6.0).sin();
            let (current, phase) = match self.phase {
                Phase::Charge if ocv + 2.5 * 0.05 >= 4.2 => (2.5, Some(Phase::Hold)),
                Phase::Charge => (2.5, None),
                Phase::Hold => {
                    self.i_cv = if self.i_cv == 0.0 {
                        2.5
                    } else {
                        self.i_cv * 0.9995
                    };
                    let done = self.i_cv < CAPACITY_AH / 20.0;
                    (self.i_cv, done.then_some(Phase::RestAfterCharge))
                }
                Phase::RestAfterCharge => (
                    0.0,
                    (t - self.phase_start > 600.0).then_some(Phase::Discharge),
                ),
                Phase::Discharge if ocv - 2.5 * 0.05 <= 3.0 => {
                    (-2.5, Some(Phase::RestAfterDischarge))
                }
                Phase::Discharge => (-2.5, None),
                Phase::RestAfterDischarge => {
                    (0.0, (t - self.phase_start > 600.0).then_some(Phase::Charge))
                }
            };
            if let Some(p) = phase {
                self.i_cv = 0.0;
                self.next_phase(p, t);
            }
            let i = quantise(current + self.noise() * 0.002, NOMINAL_A);
            let v = quantise(ocv + i * 0.05 + self.noise() * 0.003, NOMINAL_V);
            if let Some((pt, pv, pi)) = self.prev {
                let hours = (t - pt) / 3600.0;
                let (q_in, q_out) = split_trapezoid(pi, i, hours);
                let (e_in, e_out) = split_trapezoid(pv * pi, v * i, hours);
                self.q[0] += q_in;
                self.q[1] += q_out;
                self.q[2] += e_in;
                self.q[3] += e_out;
                self.soc += (q_in - q_out) / CAPACITY_AH;
            }
            self.prev = Some((t, v, i));
            b.test_time_s.push(t);
            b.unix_time_s.push(self.unix);
            b.voltage_v.push(v);
            b.current_a.push(i);
            b.cycle.push(self.cycle);
            b.step.push(self.step);
            b.charge_capacity_ah.push(self.q[0]);
            b.discharge_capacity_ah.push(self.q[1]);
            b.charge_energy_wh.push(self.q[2]);
            b.discharge_energy_wh.push(self.q[3]);
            b.plan_step.push(self.step % 5);
            self.seq += 1;
        }
        b
    }
}

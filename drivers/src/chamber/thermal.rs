//! The simulated inside of a chamber: its air and how the controller moves it.
//!
//! [`Air`] is shared by a chamber simulator and the simulated cells inside it (through
//! the cell model's `CellParams::air`): cells see its temperature as their ambient and put their
//! heat into it; the chamber's [`ThermalModel`] pulls it toward the set point as a first-order
//! lag whose rate is capped by the controller's ramp limit, and lets it drift back to the room
//! when it is off. Faults for tests: a failed compressor or heater that drives the air away at a
//! fixed rate whatever the set point says.

use std::sync::{Arc, Mutex, MutexGuard};

/// Air temperature of a lab room, degC, where an idle chamber drifts to.
pub const ROOM_C: f64 = 23.0;

/// The air inside one simulated chamber; cheap to clone (all clones are the same air).
#[derive(Debug, Clone)]
pub struct Air(Arc<Mutex<AirState>>);

#[derive(Debug)]
struct AirState {
    temperature_c: f64,
    /// Heat the cells put into the air since the chamber model last took it, J.
    heat_j: f64,
}

impl PartialEq for Air {
    fn eq(&self, other: &Air) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Air {
    /// Air at `temperature_c`.
    pub fn new(temperature_c: f64) -> Air {
        Air(Arc::new(Mutex::new(AirState {
            temperature_c,
            heat_j: 0.0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, AirState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn temperature_c(&self) -> f64 {
        self.lock().temperature_c
    }

    /// A cell gives `joules` to the air (negative: takes them).
    pub fn add_heat_j(&self, joules: f64) {
        if joules.is_finite() {
            self.lock().heat_j += joules;
        }
    }

    fn take_heat_j(&self) -> f64 {
        std::mem::take(&mut self.lock().heat_j)
    }

    fn set_temperature_c(&self, temperature_c: f64) {
        self.lock().temperature_c = temperature_c;
    }
}

/// How a simulated chamber moves its air.
#[derive(Debug, Clone, PartialEq)]
pub struct ThermalParams {
    /// Time constant of the lag toward the set point while regulating, s.
    pub tau_s: f64,
    /// Fastest change the controller allows, degC per minute (the ramp limit).
    pub ramp_c_per_min: f64,
    /// Time constant of the drift to the room while off, s.
    pub idle_tau_s: f64,
    /// Heat capacity of the air and fittings, J/K: how much the cells' heat warms it.
    pub heat_capacity_j_per_k: f64,
    /// Lowest and highest set point the controller accepts, degC.
    pub range_c: (f64, f64),
}

impl Default for ThermalParams {
    /// A bench-top chamber: 3-minute lag, 3 degC/min ramp, -40..+150 degC, 20 kJ/K.
    fn default() -> Self {
        ThermalParams {
            tau_s: 180.0,
            ramp_c_per_min: 3.0,
            idle_tau_s: 1800.0,
            heat_capacity_j_per_k: 20_000.0,
            range_c: (-40.0, 150.0),
        }
    }
}

/// The controller side of a simulated chamber: set point, mode, and the air it acts on.
#[derive(Debug, Clone)]
pub struct ThermalModel {
    pub params: ThermalParams,
    air: Air,
    set_point_c: f64,
    running: bool,
    /// Clock time the model was last advanced to, s.
    t: f64,
    /// A failure driving the air at this rate (degC/s) regardless of the set point.
    runaway_c_per_s: Option<f64>,
}

impl ThermalModel {
    /// A chamber whose air starts at the room temperature, off, set to 25 degC, at clock time
    /// `now`.
    pub fn new(params: ThermalParams, air: Air, now: f64) -> ThermalModel {
        ThermalModel {
            params,
            air,
            set_point_c: 25.0,
            running: false,
            t: now,
            runaway_c_per_s: None,
        }
    }

    pub fn air(&self) -> &Air {
        &self.air
    }

    pub fn temperature_c(&self) -> f64 {
        self.air.temperature_c()
    }

    pub fn set_point_c(&self) -> f64 {
        self.set_point_c
    }

    pub fn running(&self) -> bool {
        self.running
    }

    /// Sets the set point; `Err` with the accepted range when it is outside it.
    pub fn set_set_point(&mut self, temperature_c: f64) -> Result<(), (f64, f64)> {
        let (lo, hi) = self.params.range_c;
        if !(lo..=hi).contains(&temperature_c) {
            return Err((lo, hi));
        }
        self.set_point_c = temperature_c;
        Ok(())
    }

    pub fn set_running(&mut self, running: bool) {
        self.running = running;
    }

    /// Makes the air run away at `c_per_min` (positive: heater stuck on; negative: cooling
    /// stuck on), or behave again with `None`.
    pub fn set_runaway(&mut self, c_per_min: Option<f64>) {
        self.runaway_c_per_s = c_per_min.map(|r| r / 60.0);
    }

    /// Moves the air on to clock time `now`, in steps short against the lag.
    pub fn advance(&mut self, now: f64) {
        let total = now - self.t;
        // Nothing to do for a clock that stood still, went back or is not a number.
        if total.is_nan() || total <= 0.0 {
            return;
        }
        let p = &self.params;
        let mut temperature = self.air.temperature_c();
        temperature += self.air.take_heat_j() / p.heat_capacity_j_per_k;
        let mut left = total;
        while left > 0.0 {
            let dt = left.min(p.tau_s.min(p.idle_tau_s) / 10.0).max(1e-6);
            left -= dt;
            temperature += match self.runaway_c_per_s {
                Some(rate) => rate * dt,
                None if self.running => {
                    let pull = (self.set_point_c - temperature) * (1.0 - (-dt / p.tau_s).exp());
                    let cap = p.ramp_c_per_min / 60.0 * dt;
                    pull.clamp(-cap, cap)
                }
                None => (ROOM_C - temperature) * (1.0 - (-dt / p.idle_tau_s).exp()),
            };
        }
        self.air.set_temperature_c(temperature);
        self.t = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_chamber_reaches_its_set_point_no_faster_than_its_ramp() {
        let mut m = ThermalModel::new(ThermalParams::default(), Air::new(25.0), 0.0);
        m.set_set_point(45.0).unwrap();
        m.set_running(true);
        m.advance(60.0);
        let after_a_minute = m.temperature_c();
        assert!(after_a_minute <= 25.0 + 3.0 + 1e-9, "{after_a_minute}");
        assert!(after_a_minute > 27.0, "{after_a_minute}");
        m.advance(3600.0);
        assert!(
            (m.temperature_c() - 45.0).abs() < 0.05,
            "{}",
            m.temperature_c()
        );
    }

    #[test]
    fn an_idle_chamber_drifts_to_the_room_and_cells_warm_its_air() {
        let air = Air::new(45.0);
        let mut m = ThermalModel::new(ThermalParams::default(), air.clone(), 0.0);
        m.advance(6.0 * 3600.0);
        assert!((m.temperature_c() - ROOM_C).abs() < 0.1);
        air.add_heat_j(20_000.0);
        m.advance(6.0 * 3600.0 + 1.0);
        assert!(m.temperature_c() > ROOM_C + 0.9, "{}", m.temperature_c());
    }

    #[test]
    fn set_points_outside_the_range_are_refused_and_a_runaway_ignores_the_set_point() {
        let mut m = ThermalModel::new(ThermalParams::default(), Air::new(25.0), 0.0);
        assert_eq!(m.set_set_point(200.0), Err((-40.0, 150.0)));
        m.set_running(true);
        m.set_runaway(Some(2.0));
        m.advance(600.0);
        assert!(
            (m.temperature_c() - 45.0).abs() < 1e-6,
            "{}",
            m.temperature_c()
        );
    }
}

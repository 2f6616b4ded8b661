//! The safety limits: the stricter of the plan's and the lab's, resolved once, checked against
//! the plan before it runs and against every measurement while it runs.

use super::types::Measurement;
use super::{Engine, Limits};
use crate::error::ProtocolError;
use crate::plan::{Condition, Control, Plan, PlanStep, ProfileKind, Safety};

impl Limits {
    pub(super) fn resolve(s: &Safety) -> Result<Limits, ProtocolError> {
        let need = |v: Option<f64>, what: &str, key: &str| match v {
            Some(x) if x.is_finite() => Ok(x),
            Some(_) => Err(ProtocolError::Limits(format!(
                "the {what} is not a finite number"
            ))),
            None => Err(ProtocolError::Limits(format!(
                "no {what} is set: add `{key}` under `safety` in the protocol, or set it in the lab's channel limits"
            ))),
        };
        let limits = Limits {
            voltage_min: need(s.voltage_min, "minimum voltage", "voltage: [min, max]")?,
            voltage_max: need(s.voltage_max, "maximum voltage", "voltage: [min, max]")?,
            current_max: need(s.current_max, "current limit", "current")?,
            temperature_max: s.temperature_max,
            capacity_max: s.capacity_max,
        };
        if limits.voltage_min >= limits.voltage_max {
            return Err(ProtocolError::Limits(format!(
                "the combined voltage window [{} V, {} V] is empty",
                limits.voltage_min, limits.voltage_max
            )));
        }
        if limits.current_max <= 0.0 {
            return Err(ProtocolError::Limits(
                "the current limit must be above zero".into(),
            ));
        }
        Ok(limits)
    }

    /// Rejects steps that could only fault: setpoints outside the limits, and voltage
    /// terminations the safety window would trip before they are reached.
    pub(super) fn check_plan(&self, plan: &Plan) -> Result<(), ProtocolError> {
        for step in &plan.steps {
            let PlanStep::Action(a) = step else { continue };
            let bad = |m: String| {
                Err(ProtocolError::Limits(format!(
                    "{} (\"{}\"): {m}",
                    a.path, a.description
                )))
            };
            match a.control {
                Control::Current { amps } if amps.abs() > self.current_max => {
                    return bad(format!(
                        "asks for {} A, above the current limit of {} A",
                        amps.abs(),
                        self.current_max
                    ));
                }
                Control::Voltage { volts } | Control::Cccv { volts, .. }
                    if !(self.voltage_min..=self.voltage_max).contains(&volts) =>
                {
                    return bad(format!(
                        "holds {volts} V, outside the voltage window [{} V, {} V]",
                        self.voltage_min, self.voltage_max
                    ));
                }
                Control::Cccv { amps, .. } if amps.abs() > self.current_max => {
                    return bad(format!(
                        "asks for {} A, above the current limit of {} A",
                        amps.abs(),
                        self.current_max
                    ));
                }
                Control::Resistance { ohms } if self.voltage_max / ohms > self.current_max => {
                    return bad(format!(
                        "{ohms} Ohm would draw up to {} A at {} V, above the current limit of {} A",
                        self.voltage_max / ohms,
                        self.voltage_max,
                        self.current_max
                    ));
                }
                Control::Profile { kind } => {
                    let values = a
                        .profile
                        .iter()
                        .flat_map(|p| p.points.iter().map(|(_, v)| *v));
                    for v in values {
                        let out = match kind {
                            ProfileKind::Current => v.abs() > self.current_max,
                            ProfileKind::Voltage => {
                                !(self.voltage_min..=self.voltage_max).contains(&v)
                            }
                            ProfileKind::Power => false,
                        };
                        if out {
                            return bad(format!(
                                "the profile value {v} is outside the limits (|I| <= {} A, V in [{} V, {} V])",
                                self.current_max, self.voltage_min, self.voltage_max
                            ));
                        }
                    }
                }
                Control::Chamber { temperature_c, .. }
                    if self.temperature_max.is_some_and(|max| temperature_c > max) =>
                {
                    return bad(format!(
                        "sets the chamber to {temperature_c} degC, above the temperature limit of {} degC",
                        self.temperature_max.unwrap_or(temperature_c)
                    ));
                }
                _ => {}
            }
            for t in &a.terminations {
                match t.condition {
                    Condition::VoltageAtLeast(v) if v > self.voltage_max => {
                        return bad(format!(
                            "stops at {v} V, above the maximum voltage {} V",
                            self.voltage_max
                        ));
                    }
                    Condition::VoltageAtMost(v) if v < self.voltage_min => {
                        return bad(format!(
                            "stops at {v} V, below the minimum voltage {} V",
                            self.voltage_min
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

impl Engine {
    pub(super) fn safety_violation(&self, m: &Measurement) -> Option<String> {
        let l = &self.limits;
        let s = &self.state.status;
        let reason = if m.voltage_v < l.voltage_min {
            format!(
                "voltage {} V is below the minimum {} V",
                m.voltage_v, l.voltage_min
            )
        } else if m.voltage_v > l.voltage_max {
            format!(
                "voltage {} V is above the maximum {} V",
                m.voltage_v, l.voltage_max
            )
        } else if m.current_a.abs() > l.current_max {
            format!(
                "current {} A exceeds the limit of {} A (magnitude)",
                m.current_a, l.current_max
            )
        } else if let (Some(max), Some(t)) = (l.temperature_max, m.temperature_c)
            // A NaN reading from the sensor is treated as too hot: it cannot be trusted.
            && (t > max || t.is_nan())
        {
            format!("temperature {t} degC is above the maximum {max} degC")
        } else if let Some(max) = l.capacity_max
            && s.step_charge_ah.max(s.step_discharge_ah) > max
        {
            format!(
                "step capacity {} Ah exceeds the maximum {max} Ah",
                s.step_charge_ah.max(s.step_discharge_ah)
            )
        } else {
            return None;
        };
        let step = match self.plan.steps.get(s.plan_index) {
            Some(PlanStep::Action(a)) => format!(" (in {}: \"{}\")", a.path, a.description),
            _ => String::new(),
        };
        Some(format!("{reason}{step}"))
    }
}

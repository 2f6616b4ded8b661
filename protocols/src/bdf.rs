//! The Battery Data Format (BDF 1.3) as cyclerd writes it: the column labels, one row's values
//! in column order, the step-type vocabulary and the rule that gives each step its type.
//!
//! This is the one place the labels live: the hub's exports (CSV and Parquet) and
//! `cyclerctl protocol simulate` both write [`columns`] with [`Row::values`], so a simulated
//! run and an exported test have the same header and the same derived columns.
//!
//! # Columns
//!
//! In order: [`TEST_TIME`], [`VOLTAGE`], [`CURRENT`] (positive = charging), [`UNIX_TIME`],
//! [`CYCLE_COUNT`], [`STEP_COUNT`], [`STEP_TYPE`], [`STEP_TIME`], [`RECORD_INDEX`], [`POWER`],
//! charging / discharging / net / cumulative capacity, the same four for energy, then
//! [`CELL_TEMPERATURE`] (`Temperature T1 / degC`, the channel's sensor on the cell; BDF 1.3's
//! preferred label, `Surface Temperature T1 / degC` being only an alias now) when the data has
//! one and [`AMBIENT_TEMPERATURE`] (the chamber's air) when the data has one.
//!
//! Derived columns:
//! * `Power / W` = voltage × current (so positive while charging, like the current);
//! * `Step Time / s` = test time since the first row of the current step, a step beginning
//!   wherever `Step Count` changes;
//! * `Record Index / 1` = the row's position in the file, from 1;
//! * `Net Capacity / Ah` = charging − discharging, `Cumulative Capacity / Ah` = charging +
//!   discharging (both since the test started); likewise for energy.
//!
//! # Step type
//!
//! See [`StepType`] for the vocabulary and the rule.

use crate::plan::{ActionStep, Control};

/// How a column's values are stored (Parquet: `DOUBLE`, `INT64`, UTF-8 `BYTE_ARRAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A measurement or a derived quantity: 64-bit float.
    Double,
    /// A count or an index: 64-bit integer.
    Int64,
    /// A word from a vocabulary ([`StepType`]).
    Text,
}

/// One BDF column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The header text, exactly as BDF spells it (label and unit).
    pub label: &'static str,
    /// The unit (`1` for counts); `None` for a text column.
    pub unit: Option<&'static str>,
    /// How the values are stored.
    pub kind: Kind,
    /// Whether a value may be missing (a temperature with no reading).
    pub nullable: bool,
}

const fn double(label: &'static str, unit: &'static str) -> Column {
    Column {
        label,
        unit: Some(unit),
        kind: Kind::Double,
        nullable: false,
    }
}

const fn count(label: &'static str) -> Column {
    Column {
        label,
        unit: Some("1"),
        kind: Kind::Int64,
        nullable: false,
    }
}

const fn temperature(label: &'static str) -> Column {
    Column {
        label,
        unit: Some("degC"),
        kind: Kind::Double,
        nullable: true,
    }
}

pub const TEST_TIME: Column = double("Test Time / s", "s");
pub const VOLTAGE: Column = double("Voltage / V", "V");
/// Positive = charging.
pub const CURRENT: Column = double("Current / A", "A");
pub const UNIX_TIME: Column = double("Unix Time / s", "s");
pub const CYCLE_COUNT: Column = count("Cycle Count / 1");
pub const STEP_COUNT: Column = count("Step Count / 1");
pub const STEP_TYPE: Column = Column {
    label: "Step Type",
    unit: None,
    kind: Kind::Text,
    nullable: false,
};
pub const STEP_TIME: Column = double("Step Time / s", "s");
/// The row's position, from 1.
pub const RECORD_INDEX: Column = count("Record Index / 1");
pub const POWER: Column = double("Power / W", "W");
pub const CHARGING_CAPACITY: Column = double("Charging Capacity / Ah", "Ah");
pub const DISCHARGING_CAPACITY: Column = double("Discharging Capacity / Ah", "Ah");
pub const NET_CAPACITY: Column = double("Net Capacity / Ah", "Ah");
pub const CUMULATIVE_CAPACITY: Column = double("Cumulative Capacity / Ah", "Ah");
pub const CHARGING_ENERGY: Column = double("Charging Energy / Wh", "Wh");
pub const DISCHARGING_ENERGY: Column = double("Discharging Energy / Wh", "Wh");
pub const NET_ENERGY: Column = double("Net Energy / Wh", "Wh");
pub const CUMULATIVE_ENERGY: Column = double("Cumulative Energy / Wh", "Wh");
/// The channel's sensor on the cell (BDF 1.3's preferred label).
pub const CELL_TEMPERATURE: Column = temperature("Temperature T1 / degC");
/// The thermal chamber's air.
pub const AMBIENT_TEMPERATURE: Column = temperature("Ambient Temperature / degC");

/// The columns every row has, in order.
pub const COLUMNS: [Column; 18] = [
    TEST_TIME,
    VOLTAGE,
    CURRENT,
    UNIX_TIME,
    CYCLE_COUNT,
    STEP_COUNT,
    STEP_TYPE,
    STEP_TIME,
    RECORD_INDEX,
    POWER,
    CHARGING_CAPACITY,
    DISCHARGING_CAPACITY,
    NET_CAPACITY,
    CUMULATIVE_CAPACITY,
    CHARGING_ENERGY,
    DISCHARGING_ENERGY,
    NET_ENERGY,
    CUMULATIVE_ENERGY,
];

/// The columns of a file: [`COLUMNS`], then [`CELL_TEMPERATURE`] when `cell` and
/// [`AMBIENT_TEMPERATURE`] when `ambient` (when any row has such a reading).
pub fn columns(cell: bool, ambient: bool) -> Vec<Column> {
    let mut columns = COLUMNS.to_vec();
    columns.extend(cell.then_some(CELL_TEMPERATURE));
    columns.extend(ambient.then_some(AMBIENT_TEMPERATURE));
    columns
}

/// The CSV header line (without its newline) for [`columns`].
pub fn csv_header(cell: bool, ambient: bool) -> String {
    columns(cell, ambient)
        .iter()
        .map(|c| c.label)
        .collect::<Vec<_>>()
        .join(",")
}

/// A BDF step type. The BDF vocabulary is `CC_CHG`, `CC_DCH`, `CV_CHG`, `CCCV_CHG`, `REST`,
/// `OCV`, `EIS`; where none fits, cyclerd extends it in the same style: `CV_DCH`, `CCCV_DCH`,
/// `CP_CHG`, `CP_DCH` (constant power), `CR_DCH` (discharge through a resistance) and
/// `PROFILE` (a drive cycle or anything whose current changes sign or shape freely).
///
/// # The rule
///
/// A step's type comes from the plan step it ran when that is known ([`StepType::of_action`]):
/// * rest, and a chamber step (the output is off while it waits): `REST`, or `OCV` when the
///   step is tagged `ocv`;
/// * constant current: `CC_CHG` when positive, `CC_DCH` when negative, `REST` at 0 A;
/// * constant voltage: `CV_CHG` when the target is at or above the voltage the step began at,
///   else `CV_DCH`;
/// * CC-CV: `CCCV_CHG` / `CCCV_DCH` by the sign of its current;
/// * constant power: `CP_CHG` / `CP_DCH` by sign (`REST` at 0 W); resistance: `CR_DCH`;
///   profile: `PROFILE`.
///
/// Otherwise it comes from the step's samples ([`StepType::of_samples`]), with |I| ≤ 0.1 mA
/// counting as no current:
/// * no current in any sample: `REST`;
/// * current of both signs (each in at least a tenth of the samples with current): `PROFILE`;
/// * otherwise charge or discharge by the sign, and by the shape: `CC_*` when |I| stays within
///   2 % of its largest value; `CV_*` when the voltage stays within 5 mV; `CCCV_*` when |I|
///   first holds within 2 % of its starting value and the voltage then stays within 5 mV
///   while it falls; `CP_*` when |V·I| stays within 2 %; else `PROFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepType {
    CcChg,
    CcDch,
    CvChg,
    CvDch,
    CccvChg,
    CccvDch,
    CpChg,
    CpDch,
    CrDch,
    Rest,
    Ocv,
    Profile,
}

/// Below this current magnitude (A), a sample counts as carrying no current.
const ZERO_A: f64 = 1e-4;
/// Relative band within which a current (or power) counts as constant.
const CONSTANT: f64 = 0.02;
/// Band (V) within which a voltage counts as held.
const HELD_V: f64 = 0.005;

impl StepType {
    /// The word written in the `Step Type` column.
    pub fn label(self) -> &'static str {
        match self {
            StepType::CcChg => "CC_CHG",
            StepType::CcDch => "CC_DCH",
            StepType::CvChg => "CV_CHG",
            StepType::CvDch => "CV_DCH",
            StepType::CccvChg => "CCCV_CHG",
            StepType::CccvDch => "CCCV_DCH",
            StepType::CpChg => "CP_CHG",
            StepType::CpDch => "CP_DCH",
            StepType::CrDch => "CR_DCH",
            StepType::Rest => "REST",
            StepType::Ocv => "OCV",
            StepType::Profile => "PROFILE",
        }
    }

    /// The type of a plan step, `voltage_at_start` being the cell voltage when it began (it
    /// decides the direction of a constant-voltage step; charging when unknown). See
    /// [`StepType`] for the rule.
    pub fn of_action(step: &ActionStep, voltage_at_start: Option<f64>) -> StepType {
        let signed = |x: f64, charge: StepType, discharge: StepType| {
            if x > 0.0 {
                charge
            } else if x < 0.0 {
                discharge
            } else {
                StepType::Rest
            }
        };
        match step.control {
            Control::Rest | Control::Chamber { .. } => {
                if step.tags.iter().any(|t| t.eq_ignore_ascii_case("ocv")) {
                    StepType::Ocv
                } else {
                    StepType::Rest
                }
            }
            Control::Current { amps } => signed(amps, StepType::CcChg, StepType::CcDch),
            Control::Voltage { volts } => match voltage_at_start {
                Some(v) if v > volts => StepType::CvDch,
                _ => StepType::CvChg,
            },
            Control::Cccv { amps, .. } => {
                if amps < 0.0 {
                    StepType::CccvDch
                } else {
                    StepType::CccvChg
                }
            }
            Control::Power { watts } => signed(watts, StepType::CpChg, StepType::CpDch),
            Control::Resistance { .. } => StepType::CrDch,
            Control::Profile { .. } => StepType::Profile,
        }
    }

    /// The type of a step judged from its samples, `(voltage, current)` in time order. See
    /// [`StepType`] for the rule.
    pub fn of_samples(samples: &[(f64, f64)]) -> StepType {
        let flowing: Vec<(f64, f64)> = samples
            .iter()
            .copied()
            .filter(|&(_, i)| i.abs() > ZERO_A)
            .collect();
        if flowing.is_empty() {
            return StepType::Rest;
        }
        let charging = flowing.iter().filter(|&&(_, i)| i > 0.0).count();
        let discharging = flowing.len() - charging;
        if charging.min(discharging) * 10 >= flowing.len() {
            return StepType::Profile;
        }
        let charge = charging > discharging;
        let pick = |chg: StepType, dch: StepType| if charge { chg } else { dch };
        let within = |values: &mut dyn Iterator<Item = f64>, relative: bool| {
            let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
            if relative {
                hi - lo <= CONSTANT * hi.abs() + ZERO_A
            } else {
                hi - lo <= HELD_V
            }
        };
        if within(&mut flowing.iter().map(|&(_, i)| i.abs()), true) {
            return pick(StepType::CcChg, StepType::CcDch);
        }
        if within(&mut flowing.iter().map(|&(v, _)| v), false) {
            return pick(StepType::CvChg, StepType::CvDch);
        }
        let first = flowing[0].1.abs();
        if let Some(k) = flowing
            .iter()
            .position(|&(_, i)| i.abs() < first * (1.0 - CONSTANT))
            && k > 0
            && within(&mut flowing[k..].iter().map(|&(v, _)| v), false)
        {
            return pick(StepType::CccvChg, StepType::CccvDch);
        }
        if within(&mut flowing.iter().map(|&(v, i)| (v * i).abs()), true) {
            return pick(StepType::CpChg, StepType::CpDch);
        }
        StepType::Profile
    }
}

/// One row of a BDF file: what a sample holds, its step type, and the derived columns'
/// inputs ([`Row::values`] computes the rest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub test_time_s: f64,
    pub unix_time_s: f64,
    pub voltage_v: f64,
    /// Positive = charging.
    pub current_a: f64,
    pub cycle: u32,
    pub step: u32,
    pub step_type: StepType,
    /// Test time since the step's first row (see [`Sequence`]).
    pub step_time_s: f64,
    /// From 1 (see [`Sequence`]).
    pub record_index: u64,
    /// Cumulative since the test started.
    pub charge_ah: f64,
    pub discharge_ah: f64,
    pub charge_wh: f64,
    pub discharge_wh: f64,
    pub temperature_c: Option<f64>,
    pub ambient_c: Option<f64>,
}

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Double(f64),
    Int64(i64),
    Text(&'static str),
    /// A missing reading (a nullable column).
    Null,
}

impl Row {
    /// The row's values for [`columns`]`(cell, ambient)`, in that order.
    pub fn values(&self, cell: bool, ambient: bool) -> impl Iterator<Item = Value> + use<> {
        let opt = |x: Option<f64>| x.map_or(Value::Null, Value::Double);
        let fixed = [
            Value::Double(self.test_time_s),
            Value::Double(self.voltage_v),
            Value::Double(self.current_a),
            Value::Double(self.unix_time_s),
            Value::Int64(i64::from(self.cycle)),
            Value::Int64(i64::from(self.step)),
            Value::Text(self.step_type.label()),
            Value::Double(self.step_time_s),
            Value::Int64(i64::try_from(self.record_index).unwrap_or(i64::MAX)),
            Value::Double(self.voltage_v * self.current_a),
            Value::Double(self.charge_ah),
            Value::Double(self.discharge_ah),
            Value::Double(self.charge_ah - self.discharge_ah),
            Value::Double(self.charge_ah + self.discharge_ah),
            Value::Double(self.charge_wh),
            Value::Double(self.discharge_wh),
            Value::Double(self.charge_wh - self.discharge_wh),
            Value::Double(self.charge_wh + self.discharge_wh),
        ];
        let temperatures = [
            cell.then(|| opt(self.temperature_c)),
            ambient.then(|| opt(self.ambient_c)),
        ];
        fixed.into_iter().chain(temperatures.into_iter().flatten())
    }

    /// Writes the row as one CSV line (with its newline): floats in Rust's shortest round-trip
    /// form, a missing reading as an empty cell.
    pub fn write_csv(
        &self,
        out: &mut impl std::io::Write,
        cell: bool,
        ambient: bool,
    ) -> std::io::Result<()> {
        for (i, value) in self.values(cell, ambient).enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            match value {
                Value::Double(x) => write!(out, "{x}")?,
                Value::Int64(n) => write!(out, "{n}")?,
                Value::Text(s) => out.write_all(s.as_bytes())?,
                Value::Null => {}
            }
        }
        out.write_all(b"\n")
    }
}

/// Numbers rows as they are written: `Record Index` from 1, and `Step Time` from the test time
/// of the first row of each step (a step begins where `Step Count` changes).
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    written: u64,
    /// The step of the last row and the test time of its first row.
    step: Option<(u32, f64)>,
}

impl Sequence {
    /// `(record index, step time)` of the next row.
    pub fn next(&mut self, step: u32, test_time_s: f64) -> (u64, f64) {
        self.written += 1;
        let start = match self.step {
            Some((s, start)) if s == step => start,
            _ => {
                self.step = Some((step, test_time_s));
                test_time_s
            }
        };
        (self.written, test_time_s - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(control: Control) -> ActionStep {
        ActionStep {
            control,
            ..ActionStep::default()
        }
    }

    #[test]
    fn plan_steps_get_the_bdf_type_of_their_control_and_direction() {
        let of = |c, v| StepType::of_action(&action(c), v).label();
        assert_eq!(of(Control::Rest, None), "REST");
        assert_eq!(of(Control::Current { amps: 2.5 }, None), "CC_CHG");
        assert_eq!(of(Control::Current { amps: -2.5 }, None), "CC_DCH");
        assert_eq!(of(Control::Current { amps: 0.0 }, None), "REST");
        assert_eq!(of(Control::Voltage { volts: 4.2 }, Some(4.1)), "CV_CHG");
        assert_eq!(of(Control::Voltage { volts: 3.0 }, Some(3.4)), "CV_DCH");
        let cccv = Control::Cccv {
            amps: 1.0,
            volts: 4.2,
        };
        assert_eq!(of(cccv, None), "CCCV_CHG");
        assert_eq!(of(Control::Power { watts: -5.0 }, None), "CP_DCH");
        assert_eq!(of(Control::Resistance { ohms: 2.0 }, None), "CR_DCH");
        let ocv = ActionStep {
            tags: vec!["OCV".into()],
            ..ActionStep::default()
        };
        assert_eq!(StepType::of_action(&ocv, None), StepType::Ocv);
    }

    #[test]
    fn steps_without_a_plan_step_are_typed_by_the_sign_and_shape_of_their_current() {
        let rest = [(3.7, 0.0), (3.71, 0.00005)];
        assert_eq!(StepType::of_samples(&rest), StepType::Rest);
        let cc = [(3.6, -1.0), (3.5, -1.0), (3.4, -1.001)];
        assert_eq!(StepType::of_samples(&cc), StepType::CcDch);
        let cv = [(4.2, 1.0), (4.2, 0.5), (4.201, 0.1)];
        assert_eq!(StepType::of_samples(&cv), StepType::CvChg);
        let cccv = [(4.0, 1.0), (4.1, 1.0), (4.2, 1.0), (4.2, 0.5), (4.2, 0.1)];
        assert_eq!(StepType::of_samples(&cccv), StepType::CccvChg);
        let drive = [(3.7, 1.0), (3.6, -2.0), (3.7, 0.5), (3.5, -3.0)];
        assert_eq!(StepType::of_samples(&drive), StepType::Profile);
        assert_eq!(StepType::of_samples(&[]), StepType::Rest);
    }

    #[test]
    fn record_index_counts_from_one_and_step_time_restarts_when_the_step_changes() {
        let mut seq = Sequence::default();
        assert_eq!(seq.next(1, 0.0), (1, 0.0));
        assert_eq!(seq.next(1, 10.0), (2, 10.0));
        assert_eq!(seq.next(2, 12.0), (3, 0.0));
        assert_eq!(seq.next(2, 15.5), (4, 3.5));
    }

    #[test]
    fn a_row_has_one_value_per_column_with_power_net_and_cumulative_derived() {
        let row = Row {
            test_time_s: 1.0,
            unix_time_s: 1.7e9,
            voltage_v: 4.0,
            current_a: -2.0,
            cycle: 1,
            step: 2,
            step_type: StepType::CcDch,
            step_time_s: 1.0,
            record_index: 1,
            charge_ah: 3.0,
            discharge_ah: 1.0,
            charge_wh: 12.0,
            discharge_wh: 4.0,
            temperature_c: None,
            ambient_c: Some(25.0),
        };
        for (cell, ambient) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(
                row.values(cell, ambient).count(),
                columns(cell, ambient).len()
            );
        }
        let mut csv = Vec::new();
        row.write_csv(&mut csv, true, true).unwrap();
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "1,4,-2,1700000000,1,2,CC_DCH,1,1,-8,3,1,2,4,12,4,8,16,,25\n"
        );
        assert_eq!(
            csv_header(true, false).split(',').nth(18),
            Some("Temperature T1 / degC")
        );
    }
}

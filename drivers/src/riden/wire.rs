//! Riden RD60xx Modbus facts: registers, model identification and scaling.
//!
//! Everything about the device's register map lives here, so a firmware with a different map
//! changes one table. Entries marked "unverified" are not in `riden.md`; they come from
//! open-source clients only, and the driver tolerates their absence.

/// Serial settings and unit id of a Riden.
pub const BAUD_RATE: u32 = 115_200;
pub const DEFAULT_UNIT: u8 = 1;

/// Holding registers (read with FC3, written one at a time with FC6).
pub mod reg {
    /// Model id: value / 10 is the model number (60062 -> RD6006).
    pub const MODEL_ID: u16 = 0;
    /// Serial number, u32 over 1 (high word) and 2 (low word).
    pub const SERIAL: u16 = 1;
    /// Firmware version x 100.
    pub const FIRMWARE: u16 = 3;
    /// Identity block read in one transaction (0..=3).
    pub const IDENTITY_BLOCK: u16 = MODEL_ID;
    pub const IDENTITY_BLOCK_LEN: u16 = 4;
    /// Internal temperature: 4 sign (1 = negative), 5 magnitude in degC.
    pub const INT_TEMP_SIGN: u16 = 4;
    pub const INT_TEMP: u16 = 5;
    pub const SET_VOLTAGE: u16 = 8;
    pub const SET_CURRENT: u16 = 9;
    pub const OUT_VOLTAGE: u16 = 10;
    pub const OUT_CURRENT: u16 = 11;
    /// Output power, u32 / 100 W over 12 (high) and 13 (low).
    pub const OUT_POWER: u16 = 12;
    pub const IN_VOLTAGE: u16 = 14;
    /// Front-panel keypad lock, 1 = locked (unverified: register 15 in open-source clients).
    pub const KEYPAD_LOCK: u16 = 15;
    /// Protection state: see [`super::protection`].
    pub const PROTECTION: u16 = 16;
    /// Regulation: 0 = constant voltage, 1 = constant current (value meaning unverified).
    pub const CV_CC: u16 = 17;
    /// Output enable, 1 = on.
    pub const OUTPUT: u16 = 18;
    pub const BATTERY_MODE: u16 = 32;
    pub const BATTERY_VOLTAGE: u16 = 33;
    /// External (battery) probe temperature: 34 sign (1 = negative), 35 magnitude in degC.
    pub const EXT_TEMP_SIGN: u16 = 34;
    pub const EXT_TEMP: u16 = 35;
    /// Charge, u32 / 1000 Ah over 38-39; energy, u32 / 1000 Wh over 40-41.
    pub const AH: u16 = 38;
    pub const WH: u16 = 40;
    /// Memory presets M0-M9 start here, four registers each: V, I, OVP, OCP.
    pub const PRESETS: u16 = 80;
    pub const PRESET_LEN: u16 = 4;
    pub const PRESET_COUNT: u16 = 10;
    pub const OVP: u16 = 82;
    pub const OCP: u16 = 83;
    /// One past the highest register a Riden answers.
    pub const END: u16 = PRESETS + PRESET_LEN * PRESET_COUNT;
    /// Everything one poll needs (internal temperature .. external temperature), read in one
    /// transaction: 32 registers, about 6 ms at 115200 baud.
    pub const READ_BLOCK: u16 = INT_TEMP_SIGN;
    pub const READ_BLOCK_LEN: u16 = EXT_TEMP - INT_TEMP_SIGN + 1;
}

/// Values of the protection register.
pub mod protection {
    pub const NONE: u16 = 0;
    pub const OVP: u16 = 1;
    pub const OCP: u16 = 2;
}

/// Outputs of every RD60xx model: channel `DEVICE/1` only.
pub const OUTPUTS: u32 = 1;

/// A Riden model and the scaling of its registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Model {
    /// 6006, 6012, 6018, 6024.
    pub number: u16,
    /// Raw units per volt and per ampere.
    pub voltage_per_v: f64,
    pub current_per_a: f64,
    /// Rated output; setpoints beyond these are refused.
    pub max_voltage_v: f64,
    pub max_current_a: f64,
}

/// Known models. RD6006: voltage / 100, current / 1000; RD6012, RD6018, RD6024: current / 100.
pub const MODELS: [Model; 4] = [
    Model {
        number: 6006,
        voltage_per_v: 100.0,
        current_per_a: 1000.0,
        max_voltage_v: 60.0,
        max_current_a: 6.0,
    },
    Model {
        number: 6012,
        voltage_per_v: 100.0,
        current_per_a: 100.0,
        max_voltage_v: 60.0,
        max_current_a: 12.0,
    },
    Model {
        number: 6018,
        voltage_per_v: 100.0,
        current_per_a: 100.0,
        max_voltage_v: 60.0,
        max_current_a: 18.0,
    },
    Model {
        number: 6024,
        voltage_per_v: 100.0,
        current_per_a: 100.0,
        max_voltage_v: 60.0,
        max_current_a: 24.0,
    },
];

impl Model {
    /// The model for an id register value (value / 10 = model number), if it is one we know.
    pub fn from_id(id: u16) -> Option<Model> {
        Model::from_number(id / 10)
    }

    pub fn from_number(number: u16) -> Option<Model> {
        MODELS.iter().copied().find(|m| m.number == number)
    }

    /// The id register value this model reports (the last digit is a hardware revision; the
    /// simulator reports the one seen on real units).
    pub fn id(&self) -> u16 {
        self.number * 10 + if self.number == 6006 { 2 } else { 1 }
    }

    pub fn name(&self) -> String {
        format!("RD{}", self.number)
    }

    pub fn voltage_to_raw(&self, volts: f64, round: Round) -> u16 {
        to_raw(volts, self.voltage_per_v, round)
    }

    pub fn current_to_raw(&self, amps: f64, round: Round) -> u16 {
        to_raw(amps, self.current_per_a, round)
    }

    pub fn voltage(&self, raw: u16) -> f64 {
        f64::from(raw) / self.voltage_per_v
    }

    pub fn current(&self, raw: u16) -> f64 {
        f64::from(raw) / self.current_per_a
    }

    /// Highest raw setpoints the device accepts.
    pub fn max_voltage_raw(&self) -> u16 {
        self.voltage_to_raw(self.max_voltage_v, Round::Nearest)
    }

    pub fn max_current_raw(&self) -> u16 {
        self.current_to_raw(self.max_current_a, Round::Nearest)
    }
}

/// Which way to round when converting a physical setpoint to a register value: limits are
/// rounded toward the safe side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    Down,
    Nearest,
}

/// Physical value -> raw register value at `per_unit` raw units per unit, clamped to u16.
pub fn to_raw(value: f64, per_unit: f64, round: Round) -> u16 {
    if !(value.is_finite() && per_unit > 0.0) || value <= 0.0 {
        return 0;
    }
    let raw = value * per_unit;
    let raw = match round {
        Round::Down => raw.floor(),
        Round::Nearest => raw.round(),
    };
    raw.min(f64::from(u16::MAX)) as u16
}

/// A u32 over two registers, high word first (serial, power, Ah, Wh).
pub fn u32_from(high: u16, low: u16) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

/// The two registers of a u32, high word first.
pub fn u32_to(value: u32) -> [u16; 2] {
    [(value >> 16) as u16, value as u16]
}

/// A temperature pair: sign register (1 = negative) and magnitude in degC.
pub fn temperature(sign: u16, magnitude: u16) -> f64 {
    let t = f64::from(magnitude);
    if sign == 1 { -t } else { t }
}

/// The inverse of [`temperature`], rounded to whole degrees as the device reports them.
pub fn temperature_to(celsius: f64) -> [u16; 2] {
    let magnitude = celsius.abs().round().min(f64::from(u16::MAX));
    let magnitude = if magnitude.is_finite() {
        magnitude as u16
    } else {
        0
    };
    [u16::from(celsius < 0.0 && magnitude > 0), magnitude]
}

/// The identity block (registers 0..=3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdentityRegs {
    pub model_id: u16,
    pub serial: u32,
    /// Firmware version, e.g. 1.28.
    pub firmware: f64,
}

impl IdentityRegs {
    /// Decodes [`reg::IDENTITY_BLOCK`]; `None` when the block has the wrong length.
    pub fn decode(block: &[u16]) -> Option<IdentityRegs> {
        let &[model_id, serial_high, serial_low, firmware] = block else {
            return None;
        };
        Some(IdentityRegs {
            model_id,
            serial: u32_from(serial_high, serial_low),
            firmware: f64::from(firmware) / 100.0,
        })
    }
}

/// One poll's worth of state: [`reg::READ_BLOCK`] decoded with a model's scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    pub set_voltage_raw: u16,
    pub set_current_raw: u16,
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
    pub input_voltage_v: f64,
    pub internal_temperature_c: f64,
    pub external_temperature_c: f64,
    pub keypad_locked: bool,
    /// Raw protection state ([`protection`]); anything but `NONE` is an alarm.
    pub protection: u16,
    pub constant_current: bool,
    pub output_on: bool,
    pub battery_mode: bool,
    pub battery_voltage_v: f64,
}

impl Status {
    /// Decodes [`reg::READ_BLOCK`]; `None` when the block has the wrong length.
    pub fn decode(model: &Model, block: &[u16]) -> Option<Status> {
        if block.len() != usize::from(reg::READ_BLOCK_LEN) {
            return None;
        }
        let at = |r: u16| block[usize::from(r - reg::READ_BLOCK)];
        Some(Status {
            set_voltage_raw: at(reg::SET_VOLTAGE),
            set_current_raw: at(reg::SET_CURRENT),
            voltage_v: model.voltage(at(reg::OUT_VOLTAGE)),
            current_a: model.current(at(reg::OUT_CURRENT)),
            power_w: f64::from(u32_from(at(reg::OUT_POWER), at(reg::OUT_POWER + 1))) / 100.0,
            input_voltage_v: model.voltage(at(reg::IN_VOLTAGE)),
            internal_temperature_c: temperature(at(reg::INT_TEMP_SIGN), at(reg::INT_TEMP)),
            external_temperature_c: temperature(at(reg::EXT_TEMP_SIGN), at(reg::EXT_TEMP)),
            keypad_locked: at(reg::KEYPAD_LOCK) != 0,
            protection: at(reg::PROTECTION),
            constant_current: at(reg::CV_CC) == 1,
            output_on: at(reg::OUTPUT) != 0,
            battery_mode: at(reg::BATTERY_MODE) != 0,
            battery_voltage_v: model.voltage(at(reg::BATTERY_VOLTAGE)),
        })
    }

    pub fn alarm(&self) -> bool {
        self.protection != protection::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_register_picks_the_model_and_its_scaling() {
        let rd6006 = Model::from_id(60062).unwrap();
        assert_eq!(rd6006.number, 6006);
        assert_eq!(rd6006.current(1234), 1.234);
        assert_eq!(rd6006.voltage(420), 4.2);
        let rd6018 = Model::from_id(60181).unwrap();
        assert_eq!(rd6018.current(1234), 12.34);
        assert_eq!(Model::from_id(60121).unwrap().number, 6012);
        assert_eq!(Model::from_id(12345), None);
        for m in MODELS {
            assert_eq!(Model::from_id(m.id()), Some(m));
        }
    }

    #[test]
    fn limits_round_toward_the_safe_side() {
        let m = Model::from_number(6012).unwrap();
        assert_eq!(m.current_to_raw(2.509, Round::Down), 250);
        assert_eq!(m.voltage_to_raw(4.2, Round::Down), 420);
        assert_eq!(m.voltage_to_raw(-1.0, Round::Nearest), 0);
        assert_eq!(m.voltage_to_raw(f64::NAN, Round::Nearest), 0);
        assert_eq!(m.max_voltage_raw(), 6000);
        assert_eq!(m.max_current_raw(), 1200);
    }

    #[test]
    fn split_values_round_trip() {
        assert_eq!(u32_from(0x0001, 0x86a0), 100_000);
        let [h, l] = u32_to(123_456_789);
        assert_eq!(u32_from(h, l), 123_456_789);
        let [s, t] = temperature_to(-12.4);
        assert_eq!(temperature(s, t), -12.0);
        assert_eq!(temperature_to(25.0), [0, 25]);
        assert_eq!(temperature_to(-0.2), [0, 0]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_registers_never_panics(regs in proptest::collection::vec(any::<u16>(), 0..64)) {
            if let Some(&id) = regs.first() {
                let _ = Model::from_id(id);
            }
            let _ = IdentityRegs::decode(&regs);
            for m in MODELS {
                let _ = Status::decode(&m, &regs);
                if regs.len() >= usize::from(reg::READ_BLOCK_LEN) {
                    let s = Status::decode(&m, &regs[..usize::from(reg::READ_BLOCK_LEN)]).unwrap();
                    prop_assert!(s.voltage_v.is_finite() && s.power_w >= 0.0);
                }
            }
            for pair in regs.chunks(2) {
                if let [a, b] = *pair {
                    let _ = u32_from(a, b);
                    prop_assert!(temperature(a, b).is_finite());
                }
            }
            for m in MODELS {
                for &r in &regs {
                    prop_assert!(m.voltage(r).is_finite() && m.current(r) >= 0.0);
                }
            }
        }

        #[test]
        fn scaling_round_trips_within_one_step(value in 0.0f64..6.0) {
            let m = Model::from_number(6006).unwrap();
            let raw = m.current_to_raw(value, Round::Nearest);
            prop_assert!((m.current(raw) - value).abs() <= 1.0 / m.current_per_a);
        }

        #[test]
        fn any_float_converts_without_panicking(value in any::<f64>()) {
            for m in MODELS {
                let _ = m.voltage_to_raw(value, Round::Down);
                let _ = m.current_to_raw(value, Round::Nearest);
            }
            let _ = temperature_to(value);
        }
    }
}

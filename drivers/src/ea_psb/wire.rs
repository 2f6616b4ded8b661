//! EA PSB Modbus facts: registers, coils, scaling and state bits.
//!
//! Everything about the device's register map lives here, so a firmware with a different map
//! changes one table. Entries marked "unverified" come from third-party drivers only.

/// Modbus TCP port and unit id of a PSB.
pub const DEFAULT_PORT: u16 = 502;
pub const DEFAULT_UNIT: u8 = 1;

/// Outputs of every PSB model (a master-slave bank is one output too): channel `DEVICE/1` only.
pub const OUTPUTS: u32 = 1;
/// How messages name the family's models.
pub const MODEL_NAME: &str = "EA PSB";

/// Holding registers.
pub mod reg {
    /// Device class, u16.
    pub const DEVICE_CLASS: u16 = 0;
    /// Device type, e.g. "PSB 10060-60": 20 registers, 40 ASCII characters.
    pub const DEVICE_TYPE: u16 = 1;
    /// Manufacturer: 20 registers.
    pub const MANUFACTURER: u16 = 21;
    /// Serial number: 20 registers.
    pub const SERIAL: u16 = 151;
    /// Length in registers of each identity string.
    pub const STRING_REGS: u16 = 20;
    /// Sink power setpoint (unverified).
    pub const SET_SINK_POWER: u16 = 498;
    /// Sink current setpoint (unverified: adjacent to 498 in the PSB 10000 map).
    pub const SET_SINK_CURRENT: u16 = 499;
    pub const SET_VOLTAGE: u16 = 500;
    pub const SET_CURRENT: u16 = 501;
    pub const SET_POWER: u16 = 502;
    /// Device state, u32 over 505 (high word) and 506 (low word).
    pub const STATE: u16 = 505;
    pub const ACTUAL_VOLTAGE: u16 = 507;
    pub const ACTUAL_CURRENT: u16 = 508;
    pub const ACTUAL_POWER: u16 = 509;
    /// First register of the setpoint block written in one transaction (498..=502).
    pub const SETPOINT_BLOCK: u16 = SET_SINK_POWER;
    pub const SETPOINT_BLOCK_LEN: u16 = 5;
    /// First register of the state + actual values block read in one transaction (505..=509).
    pub const READ_BLOCK: u16 = STATE;
    pub const READ_BLOCK_LEN: u16 = 5;
    /// One read of everything a poll needs, 498..=509: the setpoint block, 503-504 (a
    /// resistance setpoint and a reserved word in EA's map: unverified, never interpreted),
    /// the state and the actual values. One round trip per poll instead of two; a device that
    /// refuses the span (an exception) is read as the two blocks above from then on.
    pub const POLL_SPAN: u16 = SETPOINT_BLOCK;
    pub const POLL_SPAN_LEN: u16 = READ_BLOCK + READ_BLOCK_LEN - SETPOINT_BLOCK;
}

/// Coils: write 0xFF00 for on, 0x0000 for off.
pub mod coil {
    pub const REMOTE: u16 = 402;
    pub const OUTPUT: u16 = 405;
    /// Switches between U/I/P and U/I/R regulation.
    pub const UIR_MODE: u16 = 409;
}

/// Bits of the device state (registers 505-506 as one u32).
pub mod state {
    pub const MASTER_SLAVE: u32 = 1 << 6;
    pub const OUTPUT_ON: u32 = 1 << 7;
    pub const REMOTE: u32 = 1 << 11;
    /// The regulation is sinking current (unverified bit position): the actual current register
    /// holds a magnitude, this bit gives its direction.
    pub const SINK_MODE: u32 = 1 << 12;
    pub const ALARM: u32 = 1 << 15;
}

/// Raw value that stands for 100 % of the nominal value.
pub const FULL_SCALE: u16 = 0xCCCC;
/// Highest raw setpoint the device accepts: 102 % of nominal.
pub const MAX_SETPOINT: u16 = 0xD0E5;

/// The device's nominal ratings, which every scaled register refers to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nominal {
    pub voltage_v: f64,
    pub current_a: f64,
    pub power_w: f64,
}

/// Which way to round when converting a physical setpoint to a register value: limits are
/// rounded toward the safe side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    Down,
    Nearest,
}

/// Physical value -> raw register value, clamped to 0..=MAX_SETPOINT.
pub fn to_raw(value: f64, nominal: f64, round: Round) -> u16 {
    if !(value.is_finite() && nominal > 0.0) || value <= 0.0 {
        return 0;
    }
    let raw = value / nominal * f64::from(FULL_SCALE);
    let raw = match round {
        Round::Down => raw.floor(),
        Round::Nearest => raw.round(),
    };
    raw.min(f64::from(MAX_SETPOINT)) as u16
}

/// Raw register value -> physical value.
pub fn from_raw(raw: u16, nominal: f64) -> f64 {
    f64::from(raw) / f64::from(FULL_SCALE) * nominal
}

/// Identity strings are two ASCII characters per register, high byte first, NUL-padded.
pub fn decode_string(regs: &[u16]) -> String {
    let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// The inverse of [`decode_string`], padded to `regs` registers.
pub fn encode_string(s: &str, regs: u16) -> Vec<u16> {
    let mut bytes = s.as_bytes().to_vec();
    bytes.resize(usize::from(regs) * 2, 0);
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Nominal voltage and current from a PSB type designation such as "PSB 10060-60"
/// (series digit(s), then nominal volts, then "-" and nominal amps). Power is not in the name.
pub fn nominal_from_type(device_type: &str) -> Option<(f64, f64)> {
    let designation = device_type.split_whitespace().nth(1)?;
    let (volts_part, amps_part) = designation.split_once('-')?;
    let amps: f64 = amps_part
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    // "10060" is series 10000 + 60 V; "9080" is series 9000 + 80 V.
    let code: u32 = volts_part.parse().ok()?;
    let volts = match code {
        10000.. => code - 10000,
        9000..=9999 => code - 9000,
        _ => return None,
    };
    (volts > 0 && amps > 0.0).then_some((f64::from(volts), amps))
}

/// Splits the 505/506 pair into the state word.
pub fn state_word(high: u16, low: u16) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_is_one_hundred_percent_of_nominal() {
        assert_eq!(to_raw(60.0, 60.0, Round::Nearest), FULL_SCALE);
        assert_eq!(from_raw(FULL_SCALE, 60.0), 60.0);
        assert_eq!(to_raw(1000.0, 60.0, Round::Nearest), MAX_SETPOINT);
        assert_eq!(to_raw(-1.0, 60.0, Round::Nearest), 0);
        assert_eq!(to_raw(f64::NAN, 60.0, Round::Nearest), 0);
    }

    #[test]
    fn limits_round_toward_the_safe_side() {
        let raw = to_raw(4.25, 60.0, Round::Down);
        assert!(from_raw(raw, 60.0) <= 4.25);
        assert!(from_raw(raw + 1, 60.0) > 4.25);
    }

    #[test]
    fn identity_strings_round_trip() {
        let regs = encode_string("PSB 10060-60", reg::STRING_REGS);
        assert_eq!(regs.len(), 20);
        assert_eq!(decode_string(&regs), "PSB 10060-60");
    }

    #[test]
    fn nominal_values_come_from_the_type_designation() {
        assert_eq!(nominal_from_type("PSB 10060-60"), Some((60.0, 60.0)));
        assert_eq!(nominal_from_type("PSB 9080-120 3U"), Some((80.0, 120.0)));
        assert_eq!(nominal_from_type("PSB 10080-1000"), Some((80.0, 1000.0)));
        assert_eq!(nominal_from_type("garbage"), None);
        assert_eq!(nominal_from_type("PSB x-y"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_registers_never_panics(regs in proptest::collection::vec(any::<u16>(), 0..40)) {
            let _ = decode_string(&regs);
            if regs.len() >= 2 {
                let _ = state_word(regs[0], regs[1]);
            }
            for &r in &regs {
                prop_assert!(from_raw(r, 60.0).is_finite());
            }
        }

        #[test]
        fn type_designation_parsing_never_panics(s in "\\PC{0,40}") {
            let _ = nominal_from_type(&s);
        }

        #[test]
        fn scaling_round_trips_within_one_step(value in 0.0f64..60.0) {
            let raw = to_raw(value, 60.0, Round::Nearest);
            prop_assert!((from_raw(raw, 60.0) - value).abs() <= 60.0 / f64::from(FULL_SCALE));
        }
    }
}

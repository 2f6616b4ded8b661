//! Watlow F4T Modbus facts: the control loop's registers, the float layout, mode values and
//! alarm states.
//!
//! Everything about the controller's register map lives here, so a firmware with a different
//! map changes one table. Entries marked "assumption" are not in `chambers.md`; [`super`] says
//! where each comes from.

pub use crate::transport::modbus::{
    f32_from_low_first as decode_float, f32_to_low_first as encode_float,
};

/// Modbus TCP port and unit id of an F4T.
pub const DEFAULT_PORT: u16 = 502;
pub const DEFAULT_UNIT: u8 = 1;

/// Registers between one control loop's parameters and the next loop's.
pub const LOOP_STRIDE: u16 = 160;

/// Holding registers of control loop 1; loop n's are [`LOOP_STRIDE`] x (n - 1) above (see
/// [`Loop`]). Floats take two registers, low word first.
pub mod reg {
    /// Control mode, one register: see [`super::mode`].
    pub const MODE: u16 = 2730;
    /// Lowest set point the loop accepts, float.
    pub const RANGE_LOW: u16 = 2774;
    /// Highest set point the loop accepts, float.
    pub const RANGE_HIGH: u16 = 2776;
    /// The set point a client writes, float.
    pub const SET_POINT: u16 = 2782;
    /// The set point the loop regulates to now, float.
    pub const CURRENT_SET_POINT: u16 = 2810;
    /// Process value: the air temperature the loop measures, float.
    pub const PROCESS_VALUE: u16 = 2820;
    /// One poll reads MODE ..= the process value's high word in one transaction (assumption:
    /// the controller answers the undocumented registers between them, as the loop's
    /// parameters fill this range).
    pub const BLOCK: u16 = MODE;
    pub const BLOCK_LEN: u16 = PROCESS_VALUE + 2 - MODE;
}

/// Values of the mode register (assumption: Watlow's enumeration as open-source F4T clients
/// use it; the facts give the register only).
pub mod mode {
    /// Closed-loop control at the set point: the chamber is running.
    pub const AUTO: u16 = 10;
    /// Fixed output power, not regulating to the set point.
    pub const MANUAL: u16 = 54;
    pub const OFF: u16 = 62;
}

/// Alarm objects (assumption: not in the facts; the address and states are those open-source
/// F4T clients read, and Watlow's EZ-ZONE enumeration).
pub mod alarm {
    /// State of alarm 1, one register; alarm n's is [`STRIDE`] x (n - 1) above.
    pub const STATE: u16 = 1356;
    pub const STRIDE: u16 = 100;
    /// Alarm objects an F4T has.
    pub const COUNT: u8 = 6;
    /// States that are no alarm.
    pub const STARTUP: u16 = 88;
    pub const NONE: u16 = 61;
    pub const BLOCKED: u16 = 12;
    /// Active states: the process value is above the high or below the low alarm set point,
    /// or the alarm's input failed.
    pub const HIGH: u16 = 7;
    pub const LOW: u16 = 8;
    pub const ERROR: u16 = 28;
    /// Name of each active state, as the driver reports it.
    pub const ACTIVE: [(u16, &str); 3] = [(HIGH, "high"), (LOW, "low"), (ERROR, "error")];

    /// Register of alarm `n`'s state (1-based), if alarm `n` exists.
    pub fn state_register(n: u8) -> Option<u16> {
        (1..=COUNT)
            .contains(&n)
            .then(|| STATE + STRIDE * (u16::from(n) - 1))
    }

    /// What a state register value means: `None` for no alarm, else the alarm's description.
    /// Unknown values count as alarms: a safety input that says something unexpected is
    /// reported rather than ignored.
    pub fn describe(state: u16) -> Option<String> {
        match state {
            STARTUP | NONE | BLOCKED => None,
            _ => Some(match ACTIVE.iter().find(|(v, _)| *v == state) {
                Some((_, name)) => (*name).to_string(),
                None => format!("state {state}"),
            }),
        }
    }
}

/// One control loop: where its registers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loop {
    /// 1-based loop number.
    n: u8,
}

impl Loop {
    /// Loop `n` (1-based); `None` for 0. Every loop up to 255 fits the address space.
    pub fn new(n: u8) -> Option<Loop> {
        (n >= 1).then_some(Loop { n })
    }

    pub fn number(&self) -> u8 {
        self.n
    }

    /// Loop 1's register `reg` moved to this loop.
    pub fn at(&self, reg: u16) -> u16 {
        reg + LOOP_STRIDE * (u16::from(self.n) - 1)
    }

    /// Which of loop 1's registers `addr` of this loop is, if it is one of this loop's.
    pub fn loop_one_register(&self, addr: u16) -> Option<u16> {
        let offset = LOOP_STRIDE * (u16::from(self.n) - 1);
        addr.checked_sub(offset)
            .filter(|r| (reg::MODE..reg::MODE + LOOP_STRIDE).contains(r))
    }
}

/// One poll's worth of a loop: [`reg::BLOCK`] decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoopStatus {
    /// Raw mode ([`mode`]).
    pub mode: u16,
    /// Lowest and highest set point the loop accepts, degC.
    pub range_c: (f64, f64),
    /// The set point a client wrote, degC.
    pub set_point_c: f64,
    /// The set point in force now, degC.
    pub current_set_point_c: f64,
    /// The measured air temperature, degC.
    pub process_value_c: f64,
}

impl LoopStatus {
    /// Decodes [`reg::BLOCK`] (loop 1's addresses; any loop's block has the same layout);
    /// `None` when the block has the wrong length.
    pub fn decode(block: &[u16]) -> Option<LoopStatus> {
        if block.len() != usize::from(reg::BLOCK_LEN) {
            return None;
        }
        let float = |r: u16| {
            let i = usize::from(r - reg::BLOCK);
            f64::from(decode_float([block[i], block[i + 1]]))
        };
        Some(LoopStatus {
            mode: block[usize::from(reg::MODE - reg::BLOCK)],
            range_c: (float(reg::RANGE_LOW), float(reg::RANGE_HIGH)),
            set_point_c: float(reg::SET_POINT),
            current_set_point_c: float(reg::CURRENT_SET_POINT),
            process_value_c: float(reg::PROCESS_VALUE),
        })
    }

    /// The loop is regulating to its set point.
    pub fn running(&self) -> bool {
        self.mode == mode::AUTO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loop_sits_160_registers_above_the_last() {
        let two = Loop::new(2).unwrap();
        assert_eq!(two.at(reg::SET_POINT), 2942);
        assert_eq!(Loop::new(1).unwrap().at(reg::PROCESS_VALUE), 2820);
        assert_eq!(two.loop_one_register(2942), Some(reg::SET_POINT));
        assert_eq!(two.loop_one_register(2782), None);
        assert_eq!(Loop::new(0), None);
        assert!(Loop::new(255).is_some());
    }

    #[test]
    fn the_poll_block_decodes_floats_low_word_first() {
        let mut block = vec![0u16; usize::from(reg::BLOCK_LEN)];
        let mut put = |r: u16, v: f32| {
            let i = usize::from(r - reg::BLOCK);
            block[i..i + 2].copy_from_slice(&encode_float(v));
        };
        put(reg::RANGE_LOW, -40.0);
        put(reg::RANGE_HIGH, 150.0);
        put(reg::SET_POINT, 45.0);
        put(reg::CURRENT_SET_POINT, 44.5);
        put(reg::PROCESS_VALUE, 23.25);
        block[0] = mode::AUTO;
        let s = LoopStatus::decode(&block).unwrap();
        assert_eq!(
            s,
            LoopStatus {
                mode: mode::AUTO,
                range_c: (-40.0, 150.0),
                set_point_c: 45.0,
                current_set_point_c: 44.5,
                process_value_c: 23.25,
            }
        );
        assert!(s.running());
        assert_eq!(LoopStatus::decode(&block[1..]), None);
    }

    #[test]
    fn alarm_states_name_the_active_ones() {
        assert_eq!(alarm::describe(alarm::NONE), None);
        assert_eq!(alarm::describe(alarm::STARTUP), None);
        assert_eq!(alarm::describe(alarm::HIGH).as_deref(), Some("high"));
        assert_eq!(alarm::describe(999).as_deref(), Some("state 999"));
        assert_eq!(alarm::state_register(2), Some(1456));
        assert_eq!(alarm::state_register(0), None);
        assert_eq!(alarm::state_register(7), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_registers_never_panics(regs in proptest::collection::vec(any::<u16>(), 0..120)) {
            let _ = LoopStatus::decode(&regs);
            if regs.len() >= usize::from(reg::BLOCK_LEN) {
                let s = LoopStatus::decode(&regs[..usize::from(reg::BLOCK_LEN)]).unwrap();
                let _ = s.running();
            }
            for &r in &regs {
                let _ = alarm::describe(r);
            }
        }

        #[test]
        fn loop_addressing_never_panics(n in any::<u8>(), addr in any::<u16>()) {
            if let Some(l) = Loop::new(n) {
                prop_assert_eq!(l.loop_one_register(l.at(reg::PROCESS_VALUE)), Some(reg::PROCESS_VALUE));
                let _ = l.loop_one_register(addr);
            }
            let _ = alarm::state_register(n);
        }

        #[test]
        fn floats_round_trip(value in any::<f32>()) {
            let back = decode_float(encode_float(value));
            prop_assert!(back.to_bits() == value.to_bits());
        }
    }
}

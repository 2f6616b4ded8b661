//! What MacNet's answers mean in cyclerd's terms: result codes and transfer acknowledgements
//! as errors, readings as records; and procedure names.

use super::link::bad_reply;
use super::wire::{self, Frame, Packet, Reading, ResultKind};
use crate::DriverError;
use crate::cycler::Record;

/// A reply's channel for a message.
pub(super) fn channel_name(chan: Option<u16>) -> String {
    chan.map_or_else(|| "no channel".into(), |c| format!("channel {c}"))
}

pub(super) fn expect_ack(
    reply: &Frame,
    block: u16,
    name: &str,
    during: &'static str,
) -> Result<(), DriverError> {
    match Packet::from_frame(reply).map_err(|e| bad_reply(during, e.to_string()))? {
        Packet::Ack { block: b } if b == block => Ok(()),
        Packet::Error { code, message } => Err(DriverError::Refused {
            during,
            message: format!("the tester refused {name}: {message} (transfer error {code})"),
        }),
        other => Err(bad_reply(
            during,
            format!("expected the acknowledgement of block {block}, got {other:?}"),
        )),
    }
}

pub(super) fn refused_unless_ok(
    code: u32,
    kind: ResultKind,
    during: &'static str,
    context: &str,
) -> Result<(), DriverError> {
    if code == wire::result::OK {
        Ok(())
    } else {
        Err(DriverError::Refused {
            during,
            message: format!("{context}{}", wire::describe_result(kind, code)),
        })
    }
}

/// A logged reading as a cyclerd record.
pub(super) fn record(r: &Reading) -> Record {
    Record {
        index: u64::from(r.last_rec),
        test_time_s: f64::from(r.test_time_s),
        voltage_v: f64::from(r.voltage_v),
        current_a: r.signed_current(),
        temperature_c: None,
        step: u32::from(r.step),
        // MacNet counts cycles from 0, cyclerd from 1.
        cycle: r.cycle.saturating_add(1),
        capacity_ah: f64::from(r.capacity_ah),
        energy_wh: f64::from(r.energy_wh),
    }
}

/// The procedure name for a schedule file (`CCCV.000` -> `CCCV`), fitted to 25 bytes.
pub(super) fn procedure_name(file_name: &str) -> String {
    let stem = match file_name.rsplit_once('.') {
        Some((stem, ext)) if ext.eq_ignore_ascii_case("000") => stem,
        _ => file_name,
    };
    wire::short_name(stem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maccor::wire::stat;

    #[test]
    fn procedure_names_drop_the_extension_and_fit_the_field() {
        assert_eq!(procedure_name("CCCV.000"), "CCCV");
        assert_eq!(procedure_name("cccv"), "cccv");
        let long = procedure_name("a-very-long-procedure-name-for-a-cycle-life-test.000");
        assert!(long.len() <= wire::NAME_LEN);
    }

    #[test]
    fn records_take_the_sign_from_rf1_and_count_cycles_from_one() {
        let r = Reading {
            rf1: wire::rf1::DISCHARGE,
            rf2: 0,
            stat: stat::ACTIVE,
            last_rec: 12,
            cycle: 0,
            step: 3,
            test_time_s: 60.0,
            step_time_s: 30.0,
            capacity_ah: 0.5,
            energy_wh: 1.8,
            current_a: 2.5,
            voltage_v: 3.6,
            tester_time_ms: None,
        };
        let rec = record(&r);
        assert_eq!(rec.index, 12);
        assert_eq!(rec.current_a, -2.5);
        assert_eq!(rec.cycle, 1);
        assert_eq!(rec.step, 3);
    }
}

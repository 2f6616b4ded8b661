//! What CTI's answers mean in cyclerd's terms: result codes as errors, channel status as a
//! channel state, logged and present values as records; and schedule file names.

use super::link::bad_reply;
use super::wire::{self, ChannelInfo, DataRecord, cmd, result, status};
use crate::DriverError;
use crate::cycler::{ChannelState, Record};

/// Refuses `command`'s non-zero result `code` with a clear error: a bad channel index is a
/// configuration error, the rest are refusals with what to do.
pub(super) fn check_result(
    command: u32,
    code: u8,
    channel: u32,
    during: &'static str,
) -> Result<(), DriverError> {
    let described = result::describe(command, code);
    let hint = match code {
        result::OK => return Ok(()),
        result::BAD_CHANNEL => {
            return Err(DriverError::Identity(format!(
                "the Arbin has no channel index {channel} ({described}); CTI counts channels \
                 from 0"
            )));
        }
        result::MONITOR_BUSY => {
            "; close the dialog open in MITS Pro's Monitor & Control window, then try again"
        }
        _ if command == cmd::START => match code {
            result::START_CHANNEL_RUNNING => "; stop the test on the channel first",
            result::START_NOT_CONNECTED => "; check the unit's connection to MITS Pro",
            result::START_NO_SCHEDULE => "; the schedule was not assigned to the channel",
            _ => "",
        },
        _ => "",
    };
    Err(DriverError::Refused {
        during,
        message: format!("channel {channel}: {described}{hint}"),
    })
}

/// What a channel block says about its test.
pub(super) fn state_of(info: &ChannelInfo) -> Result<ChannelState, DriverError> {
    let Some((name, class)) = status::lookup(info.status) else {
        return Err(bad_reply(
            "reading channel status",
            format!(
                "channel {} reports status 0x{:02X}, which is not in the CTI status table",
                info.channel, info.status
            ),
        ));
    };
    Ok(match class {
        // A channel that ran no test since MITS started has no test name; one whose test was
        // stopped keeps it.
        status::Class::Free if info.test_name.is_empty() => ChannelState::Idle,
        status::Class::Free => ChannelState::Stopped,
        status::Class::Running => ChannelState::Running,
        status::Class::Paused => ChannelState::Paused,
        status::Class::Finished => ChannelState::Finished,
        status::Class::Unsafe | status::Class::Error => {
            let mut reason = format!("{name} (status 0x{:02X})", info.status);
            if !info.exit_condition.is_empty() {
                reason = format!("{reason}: {}", info.exit_condition);
            }
            ChannelState::Fault { reason }
        }
    })
}

pub(super) fn record(r: &DataRecord) -> Record {
    Record {
        index: r.index,
        test_time_s: r.test_time_s,
        voltage_v: f64::from(r.voltage_v),
        current_a: f64::from(r.current_a),
        temperature_c: Some(f64::from(r.temperature_c)).filter(|t| t.is_finite()),
        step: r.step,
        cycle: r.cycle,
        capacity_ah: f64::from(r.step_capacity_ah),
        energy_wh: f64::from(r.step_energy_wh),
    }
}

/// A record made of the present values of a channel block (the fallback), numbered `index`.
/// Capacity and energy are the test's counters (charge plus discharge), which is all the
/// block has.
pub(super) fn present_record(info: &ChannelInfo, index: u64) -> Record {
    let (step, cycle) = info.step_and_cycle();
    Record {
        index,
        test_time_s: info.test_time_s,
        voltage_v: f64::from(info.voltage_v),
        current_a: f64::from(info.current_a),
        temperature_c: info.temperature_c(),
        step,
        cycle,
        capacity_ah: f64::from(info.charge_capacity_ah) + f64::from(info.discharge_capacity_ah),
        energy_wh: f64::from(info.charge_energy_wh) + f64::from(info.discharge_energy_wh),
    }
}

/// The file name a schedule is uploaded and assigned under: the (fitted) test name first,
/// so starts of one schedule for different tests never collide, characters Windows refuses
/// replaced by `_`, fitted to the schedule field with its extension kept.
pub(super) fn schedule_file_name(test: &str, file_name: &str) -> String {
    let safe: String = format!("{test}_{file_name}")
        .chars()
        .map(|c| {
            if c.is_control() || r#"<>:"/\|?*"#.contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    match safe.rsplit_once('.') {
        Some((stem, ext)) if ext.len() <= 8 => {
            let room = wire::SCHEDULE_CHARS - 1 - ext.encode_utf16().count();
            format!("{}.{ext}", wire::fit(stem, room))
        }
        _ => wire::fit(&safe, wire::SCHEDULE_CHARS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: i16, test: &str, exit: &str) -> ChannelInfo {
        ChannelInfo {
            channel: 3,
            status,
            test_name: test.into(),
            exit_condition: exit.into(),
            ..ChannelInfo::default()
        }
    }

    #[test]
    fn statuses_map_to_states_with_their_reasons() {
        assert_eq!(
            state_of(&info(status::IDLE, "", "")).unwrap(),
            ChannelState::Idle
        );
        assert_eq!(
            state_of(&info(status::IDLE, "t", "Stopped by CTI")).unwrap(),
            ChannelState::Stopped
        );
        for code in [
            status::CHARGE,
            status::DISCHARGE,
            status::REST,
            status::RUNNING,
        ] {
            assert_eq!(
                state_of(&info(code, "t", "")).unwrap(),
                ChannelState::Running
            );
        }
        assert_eq!(
            state_of(&info(status::PAUSE, "t", "")).unwrap(),
            ChannelState::Paused
        );
        assert_eq!(
            state_of(&info(status::FINISHED, "t", "")).unwrap(),
            ChannelState::Finished
        );
        assert_eq!(
            state_of(&info(status::UNSAFE, "t", "Voltage safety")).unwrap(),
            ChannelState::Fault {
                reason: "Unsafe (status 0x08): Voltage safety".into()
            }
        );
        assert_eq!(
            state_of(&info(status::ERROR, "t", "")).unwrap(),
            ChannelState::Fault {
                reason: "Error (status 0x0E)".into()
            }
        );
        let err = state_of(&info(99, "t", "")).unwrap_err();
        assert!(err.to_string().contains("0x63"), "{err}");
    }

    #[test]
    fn result_codes_become_clear_errors() {
        let err = check_result(cmd::START, 0x10, 6, "starting the test").unwrap_err();
        assert!(matches!(err, DriverError::Identity(_)), "{err}");
        assert!(err.to_string().contains("index 6"), "{err}");
        for (code, words) in [
            (0x11, "Monitor & Control"),
            (0x12, "running or unsafe"),
            (0x13, "not connected"),
            (0x15, "no schedule is assigned"),
        ] {
            let err = check_result(cmd::START, code, 2, "starting the test").unwrap_err();
            assert!(matches!(err, DriverError::Refused { .. }), "{err}");
            assert!(err.to_string().contains(words), "{code}: {err}");
            assert!(!err.is_link_lost());
        }
        // The same code means something else for ASSIGN_SCHEDULE.
        let err = check_result(cmd::ASSIGN_SCHEDULE, 0x12, 2, "assigning").unwrap_err();
        assert!(err.to_string().contains("schedule name is empty"), "{err}");
        assert!(check_result(cmd::STOP, 0, 2, "stopping").is_ok());
    }

    #[test]
    fn schedule_file_names_are_safe_on_windows_and_fit_the_field() {
        assert_eq!(
            schedule_file_name("cell 7: a/b?", "cccv.sdu"),
            "cell 7_ a_b__cccv.sdu"
        );
        let long = schedule_file_name(&"x".repeat(300), "p.sdu");
        assert!(long.ends_with(".sdu"));
        assert!(long.encode_utf16().count() < wire::SCHEDULE_CHARS);
    }

    #[test]
    fn present_values_become_a_record_with_step_and_cycle() {
        let mut i = info(status::CHARGE, "t", "");
        i.step_and_cycle_text = "Step 4, Cycle 2".into();
        i.test_time_s = 30.0;
        i.charge_capacity_ah = 1.0;
        i.discharge_capacity_ah = 0.5;
        let r = present_record(&i, 9);
        assert_eq!((r.index, r.step, r.cycle), (9, 4, 2));
        assert_eq!(r.capacity_ah, 1.5);
        assert_eq!(r.temperature_c, None);
    }
}

//! MacNet's code tables: channel state, RF1 and RF2, command result codes with their meaning,
//! and the JSON-RPC errors a server answers with.

/// Channel state `Stat` of (4,1) and (4,7).
pub mod stat {
    pub const AVAILABLE: u16 = 0;
    pub const SELECTED: u16 = 1;
    pub const ACTIVE: u16 = 2;
    pub const SUSPENDED: u16 = 3;
    pub const COMPLETED: u16 = 4;
    pub const PROBLEM: u16 = 5;
    /// 6 to 16 are maintenance states.
    pub const MAINTENANCE_LAST: u16 = 16;
}

/// `RF1`: what the channel is doing (the open clients' tables).
pub mod rf1 {
    pub const AVAILABLE: u8 = 0;
    pub const CHARGE: u8 = 1;
    pub const DISCHARGE: u8 = 2;
    pub const REST: u8 = 4;
    pub const PROBLEM: u8 = 29;
    pub const SUSPENDED: u8 = 30;
    pub const COMPLETE: u8 = 31;

    pub const NAMES: &[(u8, &str)] = &[
        (0, "available"),
        (1, "charge"),
        (2, "discharge"),
        (3, "advance cycle"),
        (4, "rest"),
        (5, "pause"),
        (7, "end"),
        (8, "external charge"),
        (9, "external discharge"),
        (19, "pulse charge"),
        (20, "pulse discharge"),
        (21, "I/O output"),
        (22, "chamber/FRA"),
        (23, "scan"),
        (26, "subroutine"),
        (29, "problem"),
        (30, "suspended"),
        (31, "complete"),
    ];
}

/// `RF2`: why the last step ended, or what stopped the channel (the open clients' table).
pub mod rf2 {
    pub const NORMAL_END: u8 = 193;
    pub const VOLTAGE_SAFETY: u8 = 197;
    pub const ABSOLUTE_SAFETY: u8 = 253;
    pub const SUSPEND_OR_PAUSE: u8 = 192;

    pub const NAMES: &[(u8, &str)] = &[
        (0, "start of step"),
        (1, "step time"),
        (4, "current increment"),
        (5, "voltage increment"),
        (8, "amp-hours"),
        (9, "watt-hours"),
        (17, "pause step"),
        (18, "auxiliary input"),
        (128, "none"),
        (129, "step time"),
        (130, "test time"),
        (131, "cycle number"),
        (132, "current"),
        (133, "voltage"),
        (134, "power"),
        (135, "resistance"),
        (136, "amp-hours"),
        (137, "watt-hours"),
        (146, "external"),
        (147, "loop count"),
        (157, "auxiliary voltage"),
        (158, "thermocouple"),
        (159, "thermistor"),
        (160, "pressure"),
        (163, "SMBus alarm"),
        (189, "capacity safety limit"),
        (190, "voltage safety limit"),
        (191, "overcharge safety limit"),
        (192, "suspended or paused"),
        (193, "normal end"),
        (194, "timeout fault"),
        (195, "timeout fault"),
        (196, "overcharge safety"),
        (197, "voltage safety"),
        (198, "slave error"),
        (199, "operator forced step"),
        (252, "slave current control error"),
        (253, "absolute safety limit"),
        (254, "lost current control"),
        (255, "buffer full"),
    ];
}

/// A code's name from one of the tables, or "code N".
pub fn name_of(table: &[(u8, &str)], code: u8) -> String {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("code {code}"), |(_, n)| (*n).to_string())
}

/// Result codes of commands. The facts give them for (6,2); the same table serves (6,1),
/// (6,3)-(6,5) and (6,7) here.
pub mod result {
    pub const OK: u32 = 0;
    /// Two codes for a test name already in use (the open material does not tell them apart).
    pub const NAME_NOT_UNIQUE: u32 = 19;
    pub const NAME_NOT_UNIQUE_2: u32 = 20;
    pub const CHANNEL_IN_USE: u32 = 23;
    pub const NO_CHANNEL_SELECTED: u32 = 24;
    /// The simulator's code for a start naming a procedure it does not have or cannot run; a
    /// real tester's code for this is not in the public material.
    pub const SIM_PROCEDURE_UNUSABLE: u32 = 255;
}

/// Result codes of (6,8) set direct output.
pub mod direct_result {
    pub const OK: u32 = 0;
    pub const WRONG_SYSTEM_TYPE: u32 = 1;
    pub const NOT_ACTIVE: u32 = 2;
    /// Outputs must be at least 100 ms (10 ticks) apart.
    pub const TOO_FAST: u32 = 3;
    pub const NOT_DIRECT: u32 = 4;
    pub const NOT_READY: u32 = 5;
}

/// Shortest time between two direct-mode commands, s.
pub const MIN_OUTPUT_INTERVAL_S: f64 = 0.1;

/// Which result table a code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// Select, start, suspend, resume, reset, direct start.
    Command,
    /// (6,8) set direct output.
    DirectOutput,
}

/// What a non-zero result code means, in words a lab understands.
pub fn describe_result(kind: ResultKind, code: u32) -> String {
    match (kind, code) {
        (ResultKind::Command, result::NAME_NOT_UNIQUE | result::NAME_NOT_UNIQUE_2) => format!(
            "the test name is not unique on this tester (MacNet result {code}); every test \
             needs a name no earlier test or data file on the tester has"
        ),
        (ResultKind::Command, result::CHANNEL_IN_USE) => format!(
            "the channel is in use (MacNet result {code}): a test is active, suspended, \
             completed or in a problem state there; stop or reset it first"
        ),
        (ResultKind::Command, result::NO_CHANNEL_SELECTED) => format!(
            "no channel is selected (MacNet result {code}); select the channel before starting"
        ),
        (ResultKind::Command, result::SIM_PROCEDURE_UNUSABLE) => {
            format!("the tester has no usable procedure of that name (result {code})")
        }
        (ResultKind::DirectOutput, direct_result::WRONG_SYSTEM_TYPE) => {
            format!("direct mode works only on testers of system type 0 (MacNet result {code})")
        }
        (ResultKind::DirectOutput, direct_result::NOT_ACTIVE) => {
            format!(
                "the channel is not active (MacNet result {code}); it may have been suspended or reset"
            )
        }
        (ResultKind::DirectOutput, direct_result::TOO_FAST) => {
            format!("outputs were sent less than 100 ms apart (MacNet result {code})")
        }
        (ResultKind::DirectOutput, direct_result::NOT_DIRECT) => {
            format!("the channel is not in direct mode (MacNet result {code})")
        }
        (ResultKind::DirectOutput, direct_result::NOT_READY) => {
            format!("direct mode is not ready yet (MacNet result {code})")
        }
        _ => format!("MacNet result code {code}"),
    }
}

/// JSON-RPC error objects a MacNet server answers with. The texts are MacNet's; the numeric
/// codes are not in the public material, so clients match on the text.
pub mod json_error {
    pub const PARSE_ERROR: (i64, &str) = (-32700, "Parse error");
    pub const INVALID_PARAMS: (i64, &str) = (-32602, "Invalid params");
    pub const INVALID_FCLASS: (i64, &str) = (-32001, "Invalid FClass");
    pub const INVALID_FNUM: (i64, &str) = (-32002, "Invalid FNum");
    pub const MACNET_ERROR: (i64, &str) = (-32000, "MacNet error");
    pub const ILLEGAL_VALUE: (i64, &str) = (-32003, "Illegal value");
}

//! The BTS API's device facts: port, command names and answers, step types, record units and
//! the status words of a channel.

/// TCP port of the BTS API server; the same as Modbus TCP, so it stays configurable.
pub const DEFAULT_PORT: u16 = 502;
/// A reply names its request's command with this suffix (`start` -> `start_resp`).
pub const RESP_SUFFIX: &str = "_resp";
/// The `<type>` of a `connect` (login) request.
pub const LOGIN_TYPE: &str = "bfgs";
/// Answers of `connect` (`<result>`), `start` and `stop` (per channel).
pub const OK: &str = "ok";
pub const FALSE: &str = "false";
/// Most records one `download` returns.
pub const PAGE_SIZE: usize = 1000;

/// Command names.
pub mod cmd {
    pub const CONNECT: &str = "connect";
    pub const GETDEVINFO: &str = "getdevinfo";
    pub const GETCHLSTATUS: &str = "getchlstatus";
    pub const INQUIRE: &str = "inquire";
    pub const START: &str = "start";
    pub const STOP: &str = "stop";
    pub const INQUIREDF: &str = "inquiredf";
    pub const DOWNLOAD: &str = "download";
}

/// Step type names in `inquire` (`step_type`) and `download` (`steptype`).
pub mod step_type {
    pub const CC: &str = "cc";
    pub const CV: &str = "cv";
    pub const DC: &str = "dc";
    pub const REST: &str = "rest";
    /// No step (idle channel) or a type without a confirmed name.
    pub const NONE: &str = "--";
}

/// Units of logged records (`download`) and live values (`inquire`), as multipliers to SI.
/// The facts give `testtime` in ms; public captures show volt/curr/cap/eng as decimals in V,
/// A, Ah and Wh (`volt="1.226438"`; a 600 s step at `curr="1"` with `cap="0.1666..."`), unlike
/// the step file's mA and 0.1 mV.
pub mod units {
    pub const S_PER_TESTTIME: f64 = 1e-3;
    pub const V_PER_VOLT: f64 = 1.0;
    pub const A_PER_CURR: f64 = 1.0;
    pub const AH_PER_CAP: f64 = 1.0;
    pub const WH_PER_ENG: f64 = 1.0;
}

/// A channel's state as `getchlstatus` (and `inquire`'s `workstatus`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkStatus {
    Working,
    /// Not running: never started, or stopped by an operator or a `stop`.
    Stop,
    Finish,
    /// Protection tripped; the test ended.
    Protect,
    Pause,
}

const WORK_STATUS: [(WorkStatus, &str); 5] = [
    (WorkStatus::Working, "working"),
    (WorkStatus::Stop, "stop"),
    (WorkStatus::Finish, "finish"),
    (WorkStatus::Protect, "protect"),
    (WorkStatus::Pause, "pause"),
];

impl WorkStatus {
    pub fn name(self) -> &'static str {
        WORK_STATUS
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<WorkStatus> {
        WORK_STATUS
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_status_names_round_trip() {
        for (s, n) in WORK_STATUS {
            assert_eq!(s.name(), n);
            assert_eq!(WorkStatus::from_name(n), Some(s));
        }
        assert_eq!(WorkStatus::from_name("false"), None);
    }
}

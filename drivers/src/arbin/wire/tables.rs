//! CTI's code tables: commands and their feedback codes, login and upload results, channel
//! selections and need flags, aux kinds, channel status codes and the per-command result codes.

/// Command codes (requests). A feedback's code is [`feedback_code`] of its request's.
pub mod cmd {
    pub const LOGIN: u32 = 0xEEAB_0001;
    pub const CONNECT: u32 = 0xEEAB_0002;
    pub const GET_CHANNELS_INFO: u32 = 0xEEAB_0003;
    pub const ASSIGN_SCHEDULE: u32 = 0xBB21_0001;
    pub const START: u32 = 0xBB32_0004;
    pub const STOP: u32 = 0xBB31_0001;
    pub const RESUME: u32 = 0xBB31_0002;
    pub const CONTINUE: u32 = 0xBB32_0006;
    pub const JUMP: u32 = 0xBB32_0005;
    pub const SET_MV: u32 = 0xBB15_0001;
    pub const UPLOAD: u32 = 0xCC13_0003;
    /// **cyclerd extension** (not Arbin's): read logged records from an index. The group
    /// byte 0xCD is one Arbin does not use, so no real command can be mistaken for it.
    pub const GET_RECORDS: u32 = 0xCD5A_0001;
}

/// The feedback code of a request: the nibbles of the second byte swapped
/// (0xEEAB0001 -> 0xEEBA0001).
pub const fn feedback_code(command: u32) -> u32 {
    let b = (command >> 16) & 0xFF;
    let swapped = ((b & 0x0F) << 4) | (b >> 4);
    (command & !0x00FF_0000) | (swapped << 16)
}

/// LOGIN feedback results.
pub mod login_result {
    pub const SUCCESS: u32 = 1;
    pub const FAIL: u32 = 2;
    pub const ALREADY_LOGGED_IN: u32 = 3;
}

/// GET_CHANNELS_INFO selection (which channels an all-channels request lists).
pub mod selection {
    pub const ALL: i16 = 1;
    pub const RUNNING: i16 = 2;
    pub const UNSAFE: i16 = 3;
}

/// GET_CHANNELS_INFO need flags: what the feedback adds to each channel.
pub mod need {
    pub const BMS: u32 = 0x100;
    pub const SMB: u32 = 0x200;
    pub const AUX: u32 = 0x400;
}

/// The aux kinds in the order their counts and values appear in a channel block.
pub mod aux {
    pub const KINDS: usize = 12;
    pub const TEMPERATURE: usize = 1;
    pub const NAMES: [&str; KINDS] = [
        "voltage",
        "temperature",
        "pressure",
        "external",
        "flow",
        "analog out",
        "digital in",
        "digital out",
        "humidity",
        "safety",
        "pH",
        "density",
    ];
}

/// Channel status codes (i16 in the channel block) and what each means for a test.
pub mod status {
    pub const IDLE: i16 = 0x00;
    pub const CHARGE: i16 = 0x02;
    pub const DISCHARGE: i16 = 0x03;
    pub const REST: i16 = 0x04;
    pub const UNSAFE: i16 = 0x08;
    pub const ERROR: i16 = 0x0E;
    pub const FINISHED: i16 = 0x0F;
    pub const PAUSE: i16 = 0x12;
    pub const RUNNING: i16 = 0x16;

    /// What a status says about the test on the channel.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Class {
        /// No test runs (idle, calibration, a voltmeter): the channel is free.
        Free,
        Running,
        Paused,
        Finished,
        /// The channel's safety tripped.
        Unsafe,
        Error,
    }

    /// Every documented code with its name and class.
    pub const TABLE: &[(i16, &str, Class)] = &[
        (0, "Idle", Class::Free),
        (1, "Transition", Class::Running),
        (2, "Charge", Class::Running),
        (3, "Discharge", Class::Running),
        (4, "Rest", Class::Running),
        (5, "Wait", Class::Running),
        (6, "External Charge", Class::Running),
        (7, "Calibration", Class::Free),
        (8, "Unsafe", Class::Unsafe),
        (9, "Pulse", Class::Running),
        (10, "Internal Resistance", Class::Running),
        (11, "AC Impedance", Class::Running),
        (12, "ACI Cell", Class::Running),
        (13, "Test Settings", Class::Free),
        (14, "Error", Class::Error),
        (15, "Finished", Class::Finished),
        (16, "Volt Meter", Class::Free),
        (17, "Waiting for ACS", Class::Running),
        (18, "Pause", Class::Paused),
        (19, "Empty", Class::Free),
        (20, "Idle from MCU", Class::Free),
        (21, "Start", Class::Running),
        (22, "Running", Class::Running),
        (23, "Step Transfer", Class::Running),
        (24, "Resume", Class::Running),
        (25, "Go Pause", Class::Paused),
        // Still logging until the stop takes effect.
        (26, "Go Stop", Class::Running),
        (27, "Go Next Step", Class::Running),
        (28, "Online Update", Class::Running),
        (29, "DAQ Memory Unsafe", Class::Unsafe),
        (30, "ACR", Class::Running),
        (31, "Suspended", Class::Paused),
    ];

    /// The name and class of `code`, or `None` for a code not in the table.
    pub fn lookup(code: i16) -> Option<(&'static str, Class)> {
        TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|&(_, name, class)| (name, class))
    }
}

/// Result codes of command feedbacks, per command (they differ: 0x12 is "channel running" for
/// START but "schedule name empty" for ASSIGN_SCHEDULE).
pub mod result {
    pub const OK: u8 = 0;
    /// The same in every table: the channel index does not exist.
    pub const BAD_CHANNEL: u8 = 0x10;
    /// The same in every table: someone has the Monitor & Control window's dialog open.
    pub const MONITOR_BUSY: u8 = 0x11;
    pub const START_CHANNEL_RUNNING: u8 = 0x12;
    pub const START_NOT_CONNECTED: u8 = 0x13;
    pub const START_INCOMPATIBLE: u8 = 0x14;
    pub const START_NO_SCHEDULE: u8 = 0x15;
    pub const START_NO_CHANNEL_SELECTED: u8 = 0x1F;
    pub const START_NO_TEST_NAME: u8 = 0x23;
    pub const START_SAFETY_PRECHECK: u8 = 0x26;
    pub const ASSIGN_NAME_EMPTY: u8 = 0x12;
    pub const ASSIGN_NOT_FOUND: u8 = 0x13;
    pub const ASSIGN_CHANNEL_RUNNING: u8 = 0x14;
    /// Answer to a GET_RECORDS request that names a channel with no test (cyclerd extension).
    pub const RECORDS_NO_TEST: u8 = 0x12;

    pub const START: &[(u8, &str)] = &[
        (0x10, "invalid channel index"),
        (
            0x11,
            "a user has the Monitor & Control window's start/resume dialog open",
        ),
        (0x12, "the channel is running or unsafe"),
        (0x13, "the channel is not connected to its DAQ"),
        (
            0x14,
            "the schedule is not compatible with the system configuration",
        ),
        (0x15, "no schedule is assigned to the channel"),
        (0x16, "the schedule version does not match MITS"),
        (0x19, "invalid step number"),
        (0x1B, "invalid auxiliary count in the schedule"),
        (0x1C, "invalid built-in auxiliary count"),
        (0x1E, "check the Aux Test Setting tab"),
        (0x1F, "no channel selected"),
        (0x21, "the DAQ is still downloading the schedule"),
        (0x22, "database query failed"),
        (0x23, "the test name cannot be empty"),
        (0x24, "invalid step number"),
        (0x25, "invalid parallel channel number"),
        (0x26, "the schedule's safety pre-check failed"),
        (0x28, "battery simulation error"),
    ];

    pub const ASSIGN: &[(u8, &str)] = &[
        (0x10, "the channel does not exist"),
        (0x11, "the Monitor & Control window is in use"),
        (0x12, "the schedule name is empty"),
        (0x13, "no schedule of that name was found"),
        (0x14, "the channel is running"),
        (0x15, "the channel is downloading another schedule"),
        (0x16, "a batch file is open"),
        (0x17, "assign failed"),
    ];

    pub const STOP: &[(u8, &str)] = &[
        (0x10, "the channel does not exist"),
        (
            0x11,
            "someone else is controlling the Monitor & Control window",
        ),
    ];

    pub const RECORDS: &[(u8, &str)] = &[
        (0x10, "the channel does not exist"),
        (0x12, "no test has run on the channel"),
    ];

    /// The result table of `command` (empty for a command without one here).
    pub fn table(command: u32) -> &'static [(u8, &'static str)] {
        match command {
            super::cmd::START => START,
            super::cmd::ASSIGN_SCHEDULE => ASSIGN,
            super::cmd::STOP => STOP,
            super::cmd::GET_RECORDS => RECORDS,
            _ => &[],
        }
    }

    /// The feedback `code` of `command` in words, with the code itself.
    pub fn describe(command: u32, code: u8) -> String {
        match table(command).iter().find(|(c, _)| *c == code) {
            Some((_, text)) => format!("{text} (result 0x{code:02X})"),
            None => format!("result 0x{code:02X}"),
        }
    }
}

/// UPLOAD feedback results.
pub mod upload_result {
    pub const SUCCESS: u32 = 1;
    pub const FAILED: u32 = 2;
    pub const MD5_ERROR: u32 = 3;
    pub const TEST_RUNNING: u32 = 4;
    pub const EXISTS_DIFFERENT_MD5: u32 = 5;
    pub const EXISTS_SAME_MD5: u32 = 6;
    pub const EXISTS_NOT_OVERRIDDEN: u32 = 7;
    pub const USER_CANCEL: u32 = 8;
    pub const TIMEOUT: u32 = 9;
    pub const CHECK_FILE_TIMEOUT: u32 = 10;
    pub const IN_PROGRESS: u32 = 11;

    pub const TABLE: &[(u32, &str)] = &[
        (SUCCESS, "success"),
        (FAILED, "failed"),
        (MD5_ERROR, "MD5 mismatch"),
        (TEST_RUNNING, "a test is running"),
        (EXISTS_DIFFERENT_MD5, "a different file of that name exists"),
        (EXISTS_SAME_MD5, "the same file exists"),
        (
            EXISTS_NOT_OVERRIDDEN,
            "the file exists and was not overwritten",
        ),
        (USER_CANCEL, "cancelled"),
        (TIMEOUT, "timed out"),
        (CHECK_FILE_TIMEOUT, "checking the file timed out"),
        (IN_PROGRESS, "in progress"),
    ];

    pub fn describe(code: u32) -> String {
        match TABLE.iter().find(|(c, _)| *c == code) {
            Some((_, text)) => format!("{text} (result {code})"),
            None => format!("result {code}"),
        }
    }
}

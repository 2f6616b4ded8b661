//! SimServ facts and codec: framing (fields separated by the byte 0xB6, frames ended by CR),
//! one encoder and one decoder per message, the command and error-code tables. No I/O: the
//! client and the simulator share it.
//!
//! 0xB6 is `¶` in latin-1 and not valid UTF-8 on its own, so frames are bytes, and fields are
//! read as latin-1 text. Every decoder answers bad input with an error, never a panic.

/// TCP port of the controller's protocol server (shared with ASCII-2).
pub const DEFAULT_PORT: u16 = 2049;
/// Separates the fields of a frame (latin-1 `¶`).
pub const SEPARATOR: u8 = 0xB6;
/// Ends a request.
pub const CR: u8 = b'\r';
/// Ends the simulator's replies. The facts give no reply terminator: the client ends a reply
/// at CR or LF and skips empty lines, so CR, LF and CR LF all read.
pub const REPLY_END: &[u8] = b"\r\n";
/// The chamber addressed in every request (the facts' `cmd¶1¶args`).
pub const CHAMBER: u32 = 1;
/// The first field of a successful reply.
pub const SUCCESS: i64 = 1;
/// The controlled variable that is the temperature, the first argument of 11001/11002/11004
/// (1 in the vendor's example; humidity would be 2: an interpretation).
pub const TEMPERATURE: u32 = 1;
/// The longest frame the simulator or the client reads.
pub const MAX_FRAME: usize = 1024;

/// Command numbers.
pub mod cmd {
    pub const SET_SET_POINT: u32 = 11001;
    pub const GET_SET_POINT: u32 = 11002;
    pub const GET_ACTUAL: u32 = 11004;
    pub const STATUS: u32 = 10012;
    /// Argument: the variable (interpretation: the vendor example sends 1), then 1 start, 0 stop.
    pub const MANUAL_MODE: u32 = 14001;
    pub const PROGRAM_START: u32 = 19014;
    pub const PROGRAM_STOP: u32 = 19015;
    pub const INFO: u32 = 99997;
    /// Every command the codec knows.
    pub const ALL: [u32; 8] = [
        SET_SET_POINT,
        GET_SET_POINT,
        GET_ACTUAL,
        STATUS,
        MANUAL_MODE,
        PROGRAM_START,
        PROGRAM_STOP,
        INFO,
    ];
}

/// Status word of command 10012: 1 idle, 3 running, plus these.
pub mod status {
    /// Set while the chamber runs (3 = 1 + 2).
    pub const RUNNING: i64 = 2;
    pub const WARNINGS: i64 = 4;
    pub const ALARMS: i64 = 8;
    /// The word of an idle chamber without warnings or alarms.
    pub const IDLE: i64 = 1;
}

/// Failure codes, the first field of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// -5.
    UnknownCommand,
    /// -6.
    BadParameters,
    /// -8.
    ReadFailed,
}

const REFUSALS: &[(i64, Refusal, &str)] = &[
    (-5, Refusal::UnknownCommand, "unknown command"),
    (-6, Refusal::BadParameters, "bad parameters"),
    (-8, Refusal::ReadFailed, "read failed"),
];

impl Refusal {
    pub fn code(self) -> i64 {
        REFUSALS
            .iter()
            .find(|(_, r, _)| *r == self)
            .map_or(0, |(c, _, _)| *c)
    }
}

/// What a negative code means, for an operator.
pub fn refusal_meaning(code: i64) -> &'static str {
    REFUSALS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("a failure code cyclerd does not know", |(_, _, m)| m)
}

/// A frame the codec cannot read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

/// A request from the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Request {
    /// 11001: sets the set point of `variable` to `value`.
    SetSetPoint { variable: u32, value: f64 },
    /// 11002: reads the set point of `variable`.
    GetSetPoint { variable: u32 },
    /// 11004: reads the actual value of `variable`.
    GetActual { variable: u32 },
    /// 10012: reads the status word.
    Status,
    /// 14001: starts (`on`) or stops manual mode.
    ManualMode { on: bool },
    /// 19014: starts a stored program.
    ProgramStart { program: u32 },
    /// 19015: stops the running program.
    ProgramStop,
    /// 99997: describes the controller.
    Info,
}

/// Latin-1 text of a field: every byte is the character of its code.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The fields of a frame, its terminator (and anything after it) dropped.
fn fields(frame: &[u8]) -> Vec<String> {
    display(frame)
        .split(char::from(SEPARATOR))
        .map(str::to_string)
        .collect()
}

/// A frame as text for messages: latin-1, so separators show as `¶`, up to its terminator.
pub fn display(frame: &[u8]) -> String {
    let end = frame
        .iter()
        .position(|&b| b == CR || b == b'\n')
        .unwrap_or(frame.len());
    latin1(&frame[..end])
}

fn join(fields: &[String], end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        // Fields are ASCII here; anything else is written as latin-1 where it fits.
        out.extend(f.chars().map(|c| u8::try_from(c).unwrap_or(b'?')));
    }
    out.extend_from_slice(end);
    out
}

fn number(x: f64) -> String {
    format!("{x:.1}")
}

impl Request {
    fn command(&self) -> u32 {
        match self {
            Request::SetSetPoint { .. } => cmd::SET_SET_POINT,
            Request::GetSetPoint { .. } => cmd::GET_SET_POINT,
            Request::GetActual { .. } => cmd::GET_ACTUAL,
            Request::Status => cmd::STATUS,
            Request::ManualMode { .. } => cmd::MANUAL_MODE,
            Request::ProgramStart { .. } => cmd::PROGRAM_START,
            Request::ProgramStop => cmd::PROGRAM_STOP,
            Request::Info => cmd::INFO,
        }
    }

    /// The whole frame: `cmd¶1¶args...\r`.
    pub fn encode(&self) -> Vec<u8> {
        let args = match *self {
            Request::SetSetPoint { variable, value } => vec![variable.to_string(), number(value)],
            Request::GetSetPoint { variable } | Request::GetActual { variable } => {
                vec![variable.to_string()]
            }
            Request::ManualMode { on } => {
                vec![TEMPERATURE.to_string(), u8::from(on).to_string()]
            }
            Request::ProgramStart { program } => vec![program.to_string()],
            Request::Status | Request::ProgramStop | Request::Info => vec![],
        };
        let mut all = vec![self.command().to_string(), CHAMBER.to_string()];
        all.extend(args);
        join(&all, &[CR])
    }

    /// Decodes a request frame (the device side), or the refusal a controller gives it: an
    /// unknown command number is -5, a wrong chamber or argument -6.
    pub fn decode(frame: &[u8]) -> Result<Request, Refusal> {
        let fields = fields(frame);
        let command = fields[0]
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|c| cmd::ALL.contains(c))
            .ok_or(Refusal::UnknownCommand)?;
        let chamber = fields.get(1).map(|c| c.trim().parse::<u32>());
        if chamber != Some(Ok(CHAMBER)) {
            return Err(Refusal::BadParameters);
        }
        let args: Vec<&str> = fields[2..].iter().map(|a| a.trim()).collect();
        let int = |s: &str| s.parse::<u32>().map_err(|_| Refusal::BadParameters);
        let bad = Err(Refusal::BadParameters);
        match (command, &args[..]) {
            (cmd::SET_SET_POINT, [variable, value]) => Ok(Request::SetSetPoint {
                variable: int(variable)?,
                value: value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or(Refusal::BadParameters)?,
            }),
            (cmd::GET_SET_POINT, [variable]) => Ok(Request::GetSetPoint {
                variable: int(variable)?,
            }),
            (cmd::GET_ACTUAL, [variable]) => Ok(Request::GetActual {
                variable: int(variable)?,
            }),
            (cmd::STATUS, []) => Ok(Request::Status),
            (cmd::MANUAL_MODE, [variable, on]) => match (int(variable)?, *on) {
                (TEMPERATURE, "1") => Ok(Request::ManualMode { on: true }),
                (TEMPERATURE, "0") => Ok(Request::ManualMode { on: false }),
                _ => bad,
            },
            (cmd::PROGRAM_START, [program, ..]) => Ok(Request::ProgramStart {
                program: int(program)?,
            }),
            (cmd::PROGRAM_STOP, []) => Ok(Request::ProgramStop),
            (cmd::INFO, []) => Ok(Request::Info),
            // A known command with the wrong arguments.
            _ => bad,
        }
    }
}

/// Encodes a successful reply: `1¶value...`.
pub fn encode_success(values: &[String]) -> Vec<u8> {
    let mut all = vec![SUCCESS.to_string()];
    all.extend_from_slice(values);
    join(&all, REPLY_END)
}

/// Encodes a refusal: the negative code alone.
pub fn encode_refusal(refusal: Refusal) -> Vec<u8> {
    join(&[refusal.code().to_string()], REPLY_END)
}

/// Decodes a reply: the values after a `1`, or the negative code of a refusal.
pub fn decode_reply(frame: &[u8]) -> Result<Result<Vec<String>, i64>, WireError> {
    let mut fields = fields(frame);
    let code: i64 = fields[0].trim().parse().map_err(|_| {
        WireError(format!(
            "a reply without a result code: {:?}",
            display(frame)
        ))
    })?;
    match code {
        SUCCESS => Ok(Ok(fields.split_off(1))),
        c if c < 0 => Ok(Err(c)),
        c => Err(WireError(format!(
            "result code {c}, neither 1 nor a failure, in {:?}",
            display(frame)
        ))),
    }
}

/// Encodes a value reply (11002, 11004).
pub fn encode_value(value: f64) -> Vec<u8> {
    encode_success(&[number(value)])
}

/// Reads the one number of a value reply's values.
pub fn parse_value(values: &[String]) -> Result<f64, WireError> {
    match values {
        [v] => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| WireError(format!("{v:?} is not a value"))),
        _ => Err(WireError(format!("{values:?} is not one value"))),
    }
}

/// The status word of 10012, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The word as sent.
    pub word: i64,
    /// +2: the chamber runs (manual mode or a program).
    pub running: bool,
    /// +4: warnings are raised.
    pub warnings: bool,
    /// +8: alarms are raised.
    pub alarms: bool,
}

/// Encodes a 10012 reply for a chamber running or not, in alarm or not.
pub fn encode_status(running: bool, alarms: bool) -> Vec<u8> {
    let word = status::IDLE
        + if running { status::RUNNING } else { 0 }
        + if alarms { status::ALARMS } else { 0 };
    encode_success(&[word.to_string()])
}

/// Reads the status word from a 10012 reply's values.
pub fn parse_status(values: &[String]) -> Result<Status, WireError> {
    let word = match values {
        [w] => w
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|w| (0..=0xFF).contains(w)),
        _ => None,
    }
    .ok_or_else(|| WireError(format!("{values:?} is not a status word")))?;
    Ok(Status {
        word,
        running: word & status::RUNNING != 0,
        warnings: word & status::WARNINGS != 0,
        alarms: word & status::ALARMS != 0,
    })
}

/// Reads the description of a 99997 reply: its values joined by spaces, not empty.
pub fn parse_info(values: &[String]) -> Result<String, WireError> {
    let info = values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if info.is_empty() {
        return Err(WireError("an empty description".into()));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_fields_separated_by_0xb6_ended_by_cr() {
        let r = Request::SetSetPoint {
            variable: TEMPERATURE,
            value: 56.7,
        };
        assert_eq!(r.encode(), b"11001\xb61\xb61\xb656.7\r");
        assert_eq!(
            Request::ManualMode { on: true }.encode(),
            b"14001\xb61\xb61\xb61\r"
        );
        assert_eq!(Request::Status.encode(), b"10012\xb61\r");
        for r in [
            r,
            Request::GetSetPoint { variable: 1 },
            Request::GetActual { variable: 1 },
            Request::Status,
            Request::ManualMode { on: false },
            Request::ProgramStart { program: 3 },
            Request::ProgramStop,
            Request::Info,
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn unknown_commands_and_bad_arguments_are_refused_with_their_codes() {
        assert_eq!(
            Request::decode(b"12345\xb61\r"),
            Err(Refusal::UnknownCommand)
        );
        assert_eq!(Request::decode(b"hello\r"), Err(Refusal::UnknownCommand));
        assert_eq!(Request::decode(b"12345\r"), Err(Refusal::UnknownCommand));
        assert_eq!(
            Request::decode(b"11001\xb61\xb61\r"),
            Err(Refusal::BadParameters)
        );
        assert_eq!(
            Request::decode(b"11001\xb61\xb61\xb6warm\r"),
            Err(Refusal::BadParameters)
        );
        assert_eq!(
            Request::decode(b"10012\xb62\r"),
            Err(Refusal::BadParameters)
        );
        assert_eq!(Refusal::BadParameters.code(), -6);
        assert_eq!(refusal_meaning(-8), "read failed");
    }

    #[test]
    fn replies_carry_a_result_code_then_values() {
        assert_eq!(encode_value(23.4), b"1\xb623.4\r\n");
        assert_eq!(
            decode_reply(&encode_value(23.4)),
            Ok(Ok(vec!["23.4".to_string()]))
        );
        assert_eq!(
            decode_reply(&encode_refusal(Refusal::ReadFailed)),
            Ok(Err(-8))
        );
        assert_eq!(decode_reply(b"-6\xb6\r"), Ok(Err(-6)));
        assert!(decode_reply(b"0\xb61\r").is_err());
        assert!(decode_reply(b"\xb6\r").is_err());
        let s = parse_status(&["11".to_string()]).unwrap();
        assert!(s.running && s.alarms && !s.warnings);
        let Ok(Ok(values)) = decode_reply(&encode_status(false, false)) else {
            panic!()
        };
        assert_eq!(
            parse_status(&values).unwrap(),
            Status {
                word: 1,
                running: false,
                warnings: false,
                alarms: false
            }
        );
        assert_eq!(
            parse_info(&["WKL 64".into(), "SimServ".into()]).unwrap(),
            "WKL 64 SimServ"
        );
        assert!(parse_value(&["nan".to_string()]).is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Request::decode(&bytes);
            if let Ok(Ok(values)) = decode_reply(&bytes) {
                let _ = parse_value(&values);
                let _ = parse_status(&values);
                let _ = parse_info(&values);
            }
        }

        #[test]
        fn decoding_arbitrary_frames_of_fields_never_panics(
            fields in proptest::collection::vec("[-0-9.a-z]{0,6}", 0..6)
        ) {
            let frame = join(&fields, &[CR]);
            let _ = Request::decode(&frame);
            if let Ok(Ok(values)) = decode_reply(&frame) {
                let _ = parse_value(&values);
                let _ = parse_status(&values);
            }
        }

        #[test]
        fn set_points_decode_back_to_a_tenth(x in -100.0f64..200.0) {
            let r = Request::SetSetPoint { variable: TEMPERATURE, value: x };
            let Ok(Request::SetSetPoint { value, .. }) = Request::decode(&r.encode()) else {
                panic!("{:?} does not decode", r.encode());
            };
            prop_assert!((value - x).abs() <= 0.05 + 1e-9);
        }
    }
}

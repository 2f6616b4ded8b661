//! Espec P300 / SCP-220 facts and codec: framing (CR LF lines, the RS-485 address prefix), one
//! encoder and one decoder per message, the mode and `NA:` reason tables. No I/O: the client
//! and the simulator share it, so what one writes is exactly what the other reads.
//!
//! Requests are parsed strictly (the simulator refuses what a controller refuses, with the
//! `NA:` reason it would give); replies tolerantly where the facts leave room (whitespace
//! around fields, the exact text of a success reply). Every decoder answers bad input with a
//! [`WireError`] (or an [`Na`] for requests), never a panic.

/// TCP port of the controller's LAN interface.
pub const DEFAULT_PORT: u16 = 10001;
/// Serial line speed of the facts (19200 is seen too); the frame is 8N1.
pub const DEFAULT_BAUD: u32 = 9600;
/// Ends every request and every reply.
pub const TERMINATOR: &str = "\r\n";
/// Starts an error reply; the reason follows.
pub const REFUSED: &str = "NA:";
/// Starts the success reply the simulator gives to a command (the command follows). The facts
/// do not confirm it: [`acknowledges`] accepts echoes and a bare `OK` too.
pub const ACCEPTED: &str = "OK:";
/// Longest request line the simulator reads; anything longer is not this protocol.
pub const MAX_LINE: usize = 256;

/// A reply the codec cannot read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn malformed(what: &str, reply: &str) -> WireError {
    WireError(format!("{what} {reply:?}"))
}

/// What the controller is doing, as `MON?` and `MODE?` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Controller off (its panel dark, nothing regulated).
    Off,
    /// On, not regulating.
    Standby,
    /// Regulating to the constant set point.
    Constant,
    /// Running a program (paused, holding at its end, or started remotely included).
    Run,
}

/// Mode words and what they mean. The detail forms (`MODE?,DETAIL`) are from third-party
/// drivers, not the facts: uncertain, read as [`Mode::Run`].
const MODE_WORDS: &[(&str, Mode)] = &[
    ("OFF", Mode::Off),
    ("STANDBY", Mode::Standby),
    ("CONSTANT", Mode::Constant),
    ("RUN", Mode::Run),
    ("RUN PAUSE", Mode::Run),
    ("RUN END HOLD", Mode::Run),
    ("RMT RUN", Mode::Run),
    ("RMT RUN PAUSE", Mode::Run),
    ("RMT RUN END HOLD", Mode::Run),
];

impl Mode {
    /// The word the controller prints for the mode (the plain form).
    pub fn word(self) -> &'static str {
        MODE_WORDS
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("OFF", |(w, _)| w)
    }

    /// Whether the controller regulates the air in this mode.
    pub fn regulating(self) -> bool {
        matches!(self, Mode::Constant | Mode::Run)
    }
}

/// Decodes a `MODE?` reply (or the mode field of `MON?`).
pub fn parse_mode(reply: &str) -> Result<Mode, WireError> {
    let word = reply.trim();
    MODE_WORDS
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, m)| *m)
        .ok_or_else(|| malformed("an unknown mode", reply))
}

/// Encodes a `MODE?` reply.
pub fn encode_mode(mode: Mode) -> String {
    mode.word().to_string()
}

/// The modes a host may switch to with `MODE,...` (programs, `MODE,RUN n`, are not driven).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSetting {
    /// `MODE,OFF`.
    Off,
    /// `MODE,STANDBY`.
    Standby,
    /// `MODE,CONSTANT`.
    Constant,
}

impl ModeSetting {
    /// The mode the controller is in once the setting took effect.
    pub fn mode(self) -> Mode {
        match self {
            ModeSetting::Off => Mode::Off,
            ModeSetting::Standby => Mode::Standby,
            ModeSetting::Constant => Mode::Constant,
        }
    }
}

/// The `TEMP,` command's fields: set point `S`, upper `H` and lower `L` alarm limits, degC;
/// each optional, at least one given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TempSetting {
    /// `S`: the set point.
    pub set_point_c: Option<f64>,
    /// `H`: the upper alarm limit.
    pub upper_c: Option<f64>,
    /// `L`: the lower alarm limit.
    pub lower_c: Option<f64>,
}

/// A request from the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Request {
    /// `ROM?`: the controller's firmware.
    Rom,
    /// `TYPE?`: sensors, controller and highest temperature.
    Type,
    /// `MODE?`, or `MODE?,DETAIL`.
    Mode { detail: bool },
    /// `MON?` (or `MON?,DETAIL`): temperature, humidity, mode and alarm count in one reply.
    Monitor { detail: bool },
    /// `TEMP?`: process value, set point, upper and lower limit.
    Temperature,
    /// `HUMI?`: the same for humidity.
    Humidity,
    /// `ALARM?`: the alarms raised now.
    Alarms,
    /// `MODE,OFF|STANDBY|CONSTANT`.
    SetMode(ModeSetting),
    /// `TEMP, S25.0` (with optional `H..` and `L..`; the space after the comma optional).
    SetTemperature(TempSetting),
    /// `POWER,ON`.
    PowerOn,
    /// `CONSTANT SET?,TEMP|HUMI|REF|RELAY|PTC`: the constant-mode settings, as Espec's own
    /// library reads the set point (`25.0,ON`: set point, loop enabled).
    ConstantSet(ConstantItem),
    /// `TEMP PTC?`: product temperature control; refused by a chamber without it, which is
    /// how Espec's library finds out.
    TemperaturePtc,
    /// `%?`: heater outputs, % (`1,45.0`; `2,45.0,10.0` with humidity).
    HeaterOutput,
    /// `RELAY?`: the time-signal relays on now (`0` for none; relay numbers follow the first
    /// field).
    Relays,
}

/// What `CONSTANT SET?,...` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstantItem {
    /// `TEMP`: `25.0,ON`.
    Temperature,
    /// `HUMI`: `50,ON` or `..,OFF`; refused without humidity.
    Humidity,
    /// `REF`: the refrigeration setting (a capacity % or `AUTO`/`OFF`).
    Refrigeration,
    /// `RELAY`: relays on in constant mode, as `RELAY?`.
    Relays,
    /// `PTC`: product temperature control; refused without it.
    Ptc,
}

/// Requests spelled as fixed words.
const FIXED: &[(&str, Request)] = &[
    ("ROM?", Request::Rom),
    ("TYPE?", Request::Type),
    ("MODE?", Request::Mode { detail: false }),
    ("MODE?,DETAIL", Request::Mode { detail: true }),
    ("MON?", Request::Monitor { detail: false }),
    ("TEMP?", Request::Temperature),
    ("HUMI?", Request::Humidity),
    ("ALARM?", Request::Alarms),
    ("POWER,ON", Request::PowerOn),
    ("MON?,DETAIL", Request::Monitor { detail: true }),
    (
        "CONSTANT SET?,TEMP",
        Request::ConstantSet(ConstantItem::Temperature),
    ),
    (
        "CONSTANT SET?,HUMI",
        Request::ConstantSet(ConstantItem::Humidity),
    ),
    (
        "CONSTANT SET?,REF",
        Request::ConstantSet(ConstantItem::Refrigeration),
    ),
    (
        "CONSTANT SET?,RELAY",
        Request::ConstantSet(ConstantItem::Relays),
    ),
    ("CONSTANT SET?,PTC", Request::ConstantSet(ConstantItem::Ptc)),
    ("TEMP PTC?", Request::TemperaturePtc),
    ("%?", Request::HeaterOutput),
    ("RELAY?", Request::Relays),
    ("MODE,OFF", Request::SetMode(ModeSetting::Off)),
    ("MODE,STANDBY", Request::SetMode(ModeSetting::Standby)),
    ("MODE,CONSTANT", Request::SetMode(ModeSetting::Constant)),
];

/// Set points and limits go on the wire with the controller's 0.1 degC resolution.
fn tenths(x: f64) -> String {
    format!("{x:.1}")
}

impl Request {
    /// Whether the request is a command, answered by an acknowledgement rather than data.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Request::SetMode(_) | Request::SetTemperature(_) | Request::PowerOn
        )
    }

    /// The request line without address and terminator.
    pub fn encode(&self) -> String {
        if let Request::SetTemperature(t) = self {
            let fields: Vec<String> = [('S', t.set_point_c), ('H', t.upper_c), ('L', t.lower_c)]
                .into_iter()
                .filter_map(|(letter, v)| v.map(|v| format!("{letter}{}", tenths(v))))
                .collect();
            // Spelled as the facts and Espec's own library do: `TEMP, S25.0 H50.0 L-10.0`.
            return format!("TEMP, {}", fields.join(" "));
        }
        FIXED
            .iter()
            .find(|(_, r)| r == self)
            .map_or_else(String::new, |(w, _)| w.to_string())
    }

    /// Decodes a request line without address and terminator (the device side), or the
    /// reason the controller refuses it with.
    pub fn parse(body: &str) -> Result<Request, Na> {
        let body = body.trim();
        if let Some((_, r)) = FIXED.iter().find(|(w, _)| *w == body) {
            return Ok(*r);
        }
        let (head, arg) = body.split_once(',').ok_or(Na::CmdErr)?;
        match head.trim() {
            // A known command with an argument it does not take.
            "MODE" | "POWER" | "CONSTANT SET?" => Err(Na::ParaErr),
            "TEMP" => parse_temp_setting(arg).map(Request::SetTemperature),
            _ => Err(Na::CmdErr),
        }
    }
}

/// `S25.0 H50.0 L-10.0`, fields in any order, separated by spaces (or commas).
fn parse_temp_setting(arg: &str) -> Result<TempSetting, Na> {
    let mut t = TempSetting {
        set_point_c: None,
        upper_c: None,
        lower_c: None,
    };
    let mut any = false;
    for field in arg.split([' ', ',']).filter(|f| !f.is_empty()) {
        let mut chars = field.chars();
        let slot = match chars.next() {
            Some('S') => &mut t.set_point_c,
            Some('H') => &mut t.upper_c,
            Some('L') => &mut t.lower_c,
            _ => return Err(Na::ParaErr),
        };
        let value = chars
            .as_str()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(Na::ParaErr)?;
        if slot.replace(value).is_some() {
            return Err(Na::ParaErr);
        }
        any = true;
    }
    if any { Ok(t) } else { Err(Na::ParaErr) }
}

/// `ADDR,` + the request, for a controller on an RS-485 bus; the bare request otherwise.
pub fn frame(address: Option<u8>, body: &str) -> String {
    match address {
        Some(a) => format!("{a},{body}"),
        None => body.to_string(),
    }
}

/// Splits a request line into its address (a leading all-digit field; no request starts with
/// a digit) and the request. An address beyond a byte is `ADDR ERR`.
pub fn split_address(line: &str) -> Result<(Option<u8>, &str), Na> {
    match line.split_once(',') {
        Some((head, rest)) if !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) => head
            .parse()
            .map(|a| (Some(a), rest))
            .map_err(|_| Na::AddrErr),
        _ => Ok((None, line)),
    }
}

/// Why a controller refused a request: the text after `NA:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Na {
    /// `CMD ERR`: not a command the controller knows.
    CmdErr,
    /// `ADDR ERR`: the RS-485 address is wrong.
    AddrErr,
    /// `PARA ERR`: a parameter is missing or unreadable.
    ParaErr,
    /// `DATA OUT OF RANGE`: a value outside what the controller accepts.
    DataOutOfRange,
    /// `CONT NOT READY-n`: the controller cannot do that now (`n` says why).
    ContNotReady(u32),
    /// `PROTECT ON`: data protection is on at the front panel.
    ProtectOn,
    /// A reason outside the facts, kept as the controller wrote it.
    Other(String),
}

/// The fixed reasons' wire text.
const NA_WORDS: &[(&str, Na)] = &[
    ("CMD ERR", Na::CmdErr),
    ("ADDR ERR", Na::AddrErr),
    ("PARA ERR", Na::ParaErr),
    ("DATA OUT OF RANGE", Na::DataOutOfRange),
    ("PROTECT ON", Na::ProtectOn),
];
const CONT_NOT_READY: &str = "CONT NOT READY-";

impl Na {
    /// Reads the text after `NA:`.
    pub fn parse(text: &str) -> Na {
        let text = text.trim();
        if let Some((_, na)) = NA_WORDS.iter().find(|(w, _)| *w == text) {
            return na.clone();
        }
        match text.strip_prefix(CONT_NOT_READY).map(str::parse) {
            Some(Ok(n)) => Na::ContNotReady(n),
            _ => Na::Other(text.to_string()),
        }
    }

    /// The reason as the controller writes it.
    pub fn text(&self) -> String {
        match self {
            Na::ContNotReady(n) => format!("{CONT_NOT_READY}{n}"),
            Na::Other(text) => text.clone(),
            fixed => NA_WORDS
                .iter()
                .find(|(_, na)| na == fixed)
                .map_or_else(String::new, |(w, _)| w.to_string()),
        }
    }

    /// What the reason means, for an operator.
    pub fn meaning(&self) -> &'static str {
        match self {
            Na::CmdErr => "the controller does not know the command",
            Na::AddrErr => "the RS-485 address is wrong",
            Na::ParaErr => "a parameter is missing or unreadable",
            Na::DataOutOfRange => "a value is outside the range the controller accepts",
            Na::ContNotReady(_) => "the controller cannot do that in its present state",
            Na::ProtectOn => "data protection is on at the controller's front panel",
            Na::Other(_) => "a reason cyclerd does not know",
        }
    }
}

/// Encodes an error reply.
pub fn encode_refusal(na: &Na) -> String {
    format!("{REFUSED}{}", na.text())
}

/// Separates an error reply from any other: the reply itself, or the reason it gives.
pub fn check_reply(reply: &str) -> Result<&str, Na> {
    match reply.trim().strip_prefix(REFUSED) {
        Some(reason) => Err(Na::parse(reason)),
        None => Ok(reply.trim()),
    }
}

/// Encodes the simulator's success reply to the command `body`.
pub fn encode_acceptance(body: &str) -> String {
    format!("{ACCEPTED}{body}")
}

/// Whether `reply` acknowledges the command `body`: `OK:` with anything after it, a bare
/// `OK`, or the command echoed (spacing aside, with or without an address).
pub fn acknowledges(reply: &str, body: &str) -> bool {
    let reply = reply.trim();
    if reply == "OK" || reply.starts_with(ACCEPTED) {
        return true;
    }
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let echoed = match split_address(reply) {
        Ok((_, rest)) => rest,
        Err(_) => reply,
    };
    !body.is_empty() && squeeze(echoed) == squeeze(body)
}

/// A number field; not NaN or infinite.
fn number(field: &str, what: &str, reply: &str) -> Result<f64, WireError> {
    field
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| malformed(what, reply))
}

/// Decodes a `ROM?` reply: the firmware as the controller names it.
pub fn parse_rom(reply: &str) -> Result<String, WireError> {
    let rom = reply.trim();
    if rom.is_empty() {
        return Err(malformed("an empty firmware name", reply));
    }
    Ok(rom.to_string())
}

/// What `TYPE?` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeInfo {
    /// The dry-bulb (temperature) sensor.
    pub dry_sensor: String,
    /// The wet-bulb sensor, on chambers that control humidity.
    pub wet_sensor: Option<String>,
    /// The controller, e.g. `P300`.
    pub controller: String,
    /// Highest temperature of the chamber, degC.
    pub max_c: f64,
}

/// Encodes a `TYPE?` reply: `dry,[wet,]controller,max`.
pub fn encode_type(t: &TypeInfo) -> String {
    let wet = t
        .wet_sensor
        .as_ref()
        .map_or(String::new(), |w| format!("{w},"));
    format!("{},{wet}{},{}", t.dry_sensor, t.controller, tenths(t.max_c))
}

/// Decodes a `TYPE?` reply (three fields, or four with a wet-bulb sensor).
pub fn parse_type(reply: &str) -> Result<TypeInfo, WireError> {
    let fields: Vec<&str> = reply.split(',').map(str::trim).collect();
    let (dry, wet, controller, max) = match fields[..] {
        [dry, controller, max] => (dry, None, controller, max),
        [dry, wet, controller, max] => (dry, Some(wet), controller, max),
        _ => return Err(malformed("a TYPE? reply without 3 or 4 fields", reply)),
    };
    Ok(TypeInfo {
        dry_sensor: dry.to_string(),
        wet_sensor: wet.map(str::to_string),
        controller: controller.to_string(),
        max_c: number(max, "a highest temperature that is not a number in", reply)?,
    })
}

/// What `MON?` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitor {
    /// Air temperature, degC.
    pub temperature_c: f64,
    /// Relative humidity, %; the field is empty on chambers without humidity.
    pub humidity_pct: Option<f64>,
    /// What the controller is doing.
    pub mode: Mode,
    /// How many alarms are raised (`ALARM?` names them).
    pub alarms: u32,
}

/// Encodes a `MON?` reply: `23.0,45,CONSTANT,0` (`23.0,,CONSTANT,0` without humidity).
pub fn encode_monitor(m: &Monitor) -> String {
    let humidity = m.humidity_pct.map_or(String::new(), |h| format!("{h:.0}"));
    format!(
        "{},{humidity},{},{}",
        tenths(m.temperature_c),
        m.mode.word(),
        m.alarms
    )
}

/// Decodes a `MON?` reply.
pub fn parse_monitor(reply: &str) -> Result<Monitor, WireError> {
    let fields: Vec<&str> = reply.split(',').map(str::trim).collect();
    let [temperature, humidity, mode, alarms] = fields[..] else {
        return Err(malformed("a MON? reply without 4 fields", reply));
    };
    Ok(Monitor {
        temperature_c: number(temperature, "a temperature that is not a number in", reply)?,
        humidity_pct: match humidity {
            "" => None,
            h => Some(number(h, "a humidity that is not a number in", reply)?),
        },
        mode: parse_mode(mode)?,
        alarms: alarms
            .parse()
            .map_err(|_| malformed("an alarm count that is not a count in", reply))?,
    })
}

/// What `TEMP?` (degC) and `HUMI?` (%) report for their loop.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopStatus {
    /// The measured value.
    pub process: f64,
    /// The set point; `None` where the loop is switched off (written `OFF`, an interpretation
    /// for a humidity loop not in use).
    pub set_point: Option<f64>,
    /// Upper alarm limit.
    pub upper: f64,
    /// Lower alarm limit.
    pub lower: f64,
}

/// Encodes a `TEMP?` or `HUMI?` reply: `process,set point,upper,lower`.
pub fn encode_loop(l: &LoopStatus) -> String {
    let set_point = l.set_point.map_or_else(|| "OFF".to_string(), tenths);
    format!(
        "{},{set_point},{},{}",
        tenths(l.process),
        tenths(l.upper),
        tenths(l.lower)
    )
}

/// Encodes a `CONSTANT SET?,TEMP` (or `,HUMI`) reply: `25.0,ON`, the constant set point and
/// whether the loop is enabled (as Espec's own library reads it).
pub fn encode_constant_set(set_point: f64, enabled: bool) -> String {
    format!(
        "{},{}",
        tenths(set_point),
        if enabled { "ON" } else { "OFF" }
    )
}

/// Decodes a `CONSTANT SET?,TEMP` reply: the set point and whether the loop is enabled
/// (anything but `ON` is off, as Espec's library reads it; a missing flag is on).
pub fn parse_constant_set(reply: &str) -> Result<(f64, bool), WireError> {
    let mut fields = reply.split(',').map(str::trim);
    let set_point = number(fields.next().unwrap_or(""), "set point", reply)?;
    let enabled = fields.next().is_none_or(|f| f.eq_ignore_ascii_case("ON"));
    Ok((set_point, enabled))
}

/// Encodes a `%?` reply: the number of heater outputs, then each, % (dry, then wet).
pub fn encode_heater_output(outputs_pct: &[f64]) -> String {
    let mut fields = vec![outputs_pct.len().to_string()];
    fields.extend(outputs_pct.iter().map(|&p| tenths(p)));
    fields.join(",")
}

/// Decodes a `TEMP?` or `HUMI?` reply.
pub fn parse_loop(reply: &str) -> Result<LoopStatus, WireError> {
    let fields: Vec<&str> = reply.split(',').map(str::trim).collect();
    let [process, set_point, upper, lower] = fields[..] else {
        return Err(malformed("a TEMP?/HUMI? reply without 4 fields", reply));
    };
    Ok(LoopStatus {
        process: number(process, "a process value that is not a number in", reply)?,
        set_point: match set_point {
            "OFF" => None,
            s => Some(number(s, "a set point that is not a number in", reply)?),
        },
        upper: number(upper, "an upper limit that is not a number in", reply)?,
        lower: number(lower, "a lower limit that is not a number in", reply)?,
    })
}

/// Encodes an `ALARM?` reply: the count, then each alarm's code (`0` when none).
pub fn encode_alarms(codes: &[String]) -> String {
    std::iter::once(codes.len().to_string())
        .chain(codes.iter().cloned())
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes an `ALARM?` reply into the alarm codes; the count must match them.
pub fn parse_alarms(reply: &str) -> Result<Vec<String>, WireError> {
    let mut fields = reply.split(',').map(str::trim);
    let count: usize = fields
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed("an ALARM? reply without a count", reply))?;
    let codes: Vec<String> = fields.map(str::to_string).collect();
    if codes.len() != count || codes.iter().any(String::is_empty) {
        return Err(malformed(
            "an ALARM? reply whose count and codes differ",
            reply,
        ));
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_as_the_facts_spell_them_and_parse_back() {
        let set = Request::SetTemperature(TempSetting {
            set_point_c: Some(25.0),
            upper_c: None,
            lower_c: None,
        });
        assert_eq!(set.encode(), "TEMP, S25.0");
        assert_eq!(Request::parse("TEMP, S25.0"), Ok(set));
        let limits = Request::SetTemperature(TempSetting {
            set_point_c: Some(-10.0),
            upper_c: Some(50.0),
            lower_c: Some(-20.5),
        });
        assert_eq!(limits.encode(), "TEMP, S-10.0 H50.0 L-20.5");
        assert_eq!(Request::parse(&limits.encode()), Ok(limits));
        for (word, r) in FIXED {
            assert_eq!(r.encode(), *word);
            assert_eq!(Request::parse(word), Ok(*r));
        }
        assert_eq!(
            Request::SetMode(ModeSetting::Constant).encode(),
            "MODE,CONSTANT"
        );
        for s in [
            ModeSetting::Off,
            ModeSetting::Standby,
            ModeSetting::Constant,
        ] {
            assert_eq!(
                Request::parse(&Request::SetMode(s).encode()),
                Ok(Request::SetMode(s))
            );
        }
    }

    #[test]
    fn unknown_requests_and_bad_parameters_are_refused_with_the_controllers_reasons() {
        assert_eq!(Request::parse("FROB?"), Err(Na::CmdErr));
        assert_eq!(Request::parse("MODE,WARP"), Err(Na::ParaErr));
        assert_eq!(Request::parse("MODE,RUN 1"), Err(Na::ParaErr));
        assert_eq!(Request::parse("TEMP,"), Err(Na::ParaErr));
        assert_eq!(Request::parse("TEMP,X25"), Err(Na::ParaErr));
        assert_eq!(Request::parse("TEMP,Snan"), Err(Na::ParaErr));
        assert_eq!(Request::parse("TEMP,S1 S2"), Err(Na::ParaErr));
    }

    #[test]
    fn an_rs485_address_prefixes_the_request() {
        assert_eq!(frame(Some(3), "MON?"), "3,MON?");
        assert_eq!(split_address("3,MON?"), Ok((Some(3), "MON?")));
        assert_eq!(split_address("MON?"), Ok((None, "MON?")));
        assert_eq!(split_address("TEMP,S25.0"), Ok((None, "TEMP,S25.0")));
        assert_eq!(split_address("300,MON?"), Err(Na::AddrErr));
    }

    #[test]
    fn error_replies_carry_their_reason() {
        assert_eq!(check_reply("NA:DATA OUT OF RANGE"), Err(Na::DataOutOfRange));
        assert_eq!(check_reply("NA:CONT NOT READY-2"), Err(Na::ContNotReady(2)));
        assert_eq!(check_reply("NA:WHAT"), Err(Na::Other("WHAT".into())));
        assert_eq!(check_reply(" 23.0,,STANDBY,0 "), Ok("23.0,,STANDBY,0"));
        for na in [
            Na::CmdErr,
            Na::AddrErr,
            Na::ParaErr,
            Na::DataOutOfRange,
            Na::ContNotReady(3),
            Na::ProtectOn,
        ] {
            assert_eq!(check_reply(&encode_refusal(&na)), Err(na));
        }
    }

    #[test]
    fn success_replies_are_accepted_as_ok_or_as_an_echo() {
        assert!(acknowledges("OK:TEMP,S25.0", "TEMP,S25.0"));
        assert!(acknowledges("OK", "MODE,CONSTANT"));
        assert!(acknowledges("TEMP, S25.0", "TEMP,S25.0"));
        assert!(acknowledges("1,MODE,STANDBY", "MODE,STANDBY"));
        assert!(!acknowledges("MODE,OFF", "MODE,STANDBY"));
        assert!(!acknowledges("23.0,,STANDBY,0", "MODE,STANDBY"));
    }

    #[test]
    fn replies_round_trip() {
        let m = Monitor {
            temperature_c: -12.5,
            humidity_pct: Some(45.0),
            mode: Mode::Constant,
            alarms: 2,
        };
        assert_eq!(encode_monitor(&m), "-12.5,45,CONSTANT,2");
        assert_eq!(parse_monitor(&encode_monitor(&m)), Ok(m));
        let dry = Monitor {
            temperature_c: 23.0,
            humidity_pct: None,
            mode: Mode::Standby,
            alarms: 0,
        };
        assert_eq!(encode_monitor(&dry), "23.0,,STANDBY,0");
        assert_eq!(parse_monitor(&encode_monitor(&dry)), Ok(dry));
        let t = LoopStatus {
            process: 24.9,
            set_point: Some(25.0),
            upper: 150.0,
            lower: -40.0,
        };
        assert_eq!(encode_loop(&t), "24.9,25.0,150.0,-40.0");
        assert_eq!(parse_loop(&encode_loop(&t)), Ok(t));
        let ty = TypeInfo {
            dry_sensor: "T".into(),
            wet_sensor: None,
            controller: "P300".into(),
            max_c: 150.0,
        };
        assert_eq!(parse_type(&encode_type(&ty)), Ok(ty));
        assert_eq!(parse_type("T,T,S2,160.0").unwrap().controller, "S2");
        let codes = vec!["5".to_string(), "21".to_string()];
        assert_eq!(encode_alarms(&codes), "2,5,21");
        assert_eq!(parse_alarms(&encode_alarms(&codes)), Ok(codes));
        assert_eq!(parse_alarms("0"), Ok(vec![]));
        assert!(parse_alarms("2,5").is_err());
        assert_eq!(parse_mode("RUN PAUSE"), Ok(Mode::Run));
        assert_eq!(parse_mode(&encode_mode(Mode::Off)), Ok(Mode::Off));
        assert!(parse_monitor("23.0,,WARP,0").is_err());
        assert!(parse_monitor("inf,,OFF,0").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = Request::parse(&s);
            let _ = split_address(&s);
            let _ = check_reply(&s);
            let _ = acknowledges(&s, "MODE,CONSTANT");
            let _ = parse_rom(&s);
            let _ = parse_type(&s);
            let _ = parse_mode(&s);
            let _ = parse_monitor(&s);
            let _ = parse_loop(&s);
            let _ = parse_alarms(&s);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(s in "[0-9A-Z,:.? -]{0,40}") {
            let _ = Request::parse(&s);
            let _ = split_address(&s);
            let _ = check_reply(&s);
            let _ = parse_type(&s);
            let _ = parse_monitor(&s);
            let _ = parse_loop(&s);
            let _ = parse_alarms(&s);
        }

        #[test]
        fn set_points_parse_back_to_a_tenth(x in -100.0f64..200.0) {
            let r = Request::SetTemperature(TempSetting { set_point_c: Some(x), upper_c: None, lower_c: None });
            let Ok(Request::SetTemperature(t)) = Request::parse(&r.encode()) else {
                panic!("{:?} does not parse", r.encode());
            };
            prop_assert!((t.set_point_c.unwrap() - x).abs() <= 0.05 + 1e-9);
        }
    }
}

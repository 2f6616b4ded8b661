//! Quantities and durations as people write them ("2.5 Ah", "500mA", "C/20", "30 minutes"),
//! converted to SI on the way in so nothing past this module sees a prefix or a unit name.

use std::fmt;

/// The unit family of a parsed quantity, after the prefix has been folded into the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Current in A.
    Ampere,
    /// Voltage in V.
    Volt,
    /// Power in W.
    Watt,
    /// Resistance in ohm.
    Ohm,
    /// A C-rate: multiples of the nominal capacity per hour (1C = capacity / 1 h).
    CRate,
    /// Charge in Ah.
    AmpHour,
    /// Energy in Wh.
    WattHour,
    /// Temperature in degrees Celsius.
    Celsius,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Ampere => "A",
            Unit::Volt => "V",
            Unit::Watt => "W",
            Unit::Ohm => "Ohm",
            Unit::CRate => "C",
            Unit::AmpHour => "Ah",
            Unit::WattHour => "Wh",
            Unit::Celsius => "degC",
        })
    }
}

/// A number with its unit, in SI (prefixes applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    /// The value in the unit's SI base (A, V, W, ohm, C-rate, Ah, Wh, degC).
    pub value: f64,
    /// Which physical quantity this is, so callers can reject the wrong kind.
    pub unit: Unit,
}

/// A problem found while lexing a quantity or duration.
#[derive(Debug, Clone, PartialEq)]
pub struct LexError {
    /// Byte offset into the lexed text where the problem starts.
    pub offset: usize,
    /// What was expected there.
    pub message: String,
}

fn lex_error(offset: usize, message: impl Into<String>) -> LexError {
    LexError {
        offset,
        message: message.into(),
    }
}

/// Lexes an unsigned decimal number (`4`, `4.2`, `.5`, `1e-3`) at the start of `s`.
/// Returns the value and its length in bytes; `None` when `s` does not start with a number.
pub(crate) fn lex_number(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let mut n = digits(&mut i);
    if i < b.len() && b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return None;
    }
    // An exponent only counts when digits follow, so "1e" never swallows a unit letter.
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if digits(&mut j) > 0 {
            i = j;
        }
    }
    s[..i].parse::<f64>().ok().map(|v| (v, i))
}

/// Lexes a unit word (letters, plus `°` and `Ω`) at the start of `s`; returns it and its length.
pub(crate) fn lex_word(s: &str) -> (&str, usize) {
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_alphabetic() || *c == '°'))
        .map_or(s.len(), |(i, _)| i);
    (&s[..end], end)
}

/// Maps a unit word to its unit and SI scale factor.
pub(crate) fn unit_from_word(word: &str) -> Option<(Unit, f64)> {
    Some(match word {
        "A" => (Unit::Ampere, 1.0),
        "mA" => (Unit::Ampere, 1e-3),
        "V" => (Unit::Volt, 1.0),
        "mV" => (Unit::Volt, 1e-3),
        "W" => (Unit::Watt, 1.0),
        "mW" => (Unit::Watt, 1e-3),
        "kW" => (Unit::Watt, 1e3),
        "Ohm" | "ohm" | "Ω" => (Unit::Ohm, 1.0),
        "mOhm" | "mohm" | "mΩ" => (Unit::Ohm, 1e-3),
        "C" => (Unit::CRate, 1.0),
        "Ah" => (Unit::AmpHour, 1.0),
        "mAh" => (Unit::AmpHour, 1e-3),
        "Wh" => (Unit::WattHour, 1.0),
        "mWh" => (Unit::WattHour, 1e-3),
        "kWh" => (Unit::WattHour, 1e3),
        // "oC" is the legacy PyBaMM spelling ("at 25oC").
        "degC" | "°C" | "oC" => (Unit::Celsius, 1.0),
        _ => return None,
    })
}

/// Maps a duration unit word to its length in seconds.
pub(crate) fn seconds_per(word: &str) -> Option<f64> {
    Some(match word.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    })
}

const UNIT_HINT: &str = "A, V, W, Ohm, C";

/// Lexes a quantity at the start of `s`: `C/<number>`, or `<number> [spaces] <unit>`.
/// Returns the quantity and the number of bytes consumed.
pub(crate) fn lex_quantity(s: &str) -> Result<(Quantity, usize), LexError> {
    if let Some(rest) = s.strip_prefix("C/") {
        let (divisor, len) =
            lex_number(rest).ok_or_else(|| lex_error(2, "expected a number after \"C/\""))?;
        if divisor <= 0.0 || !divisor.is_finite() {
            return Err(lex_error(
                2,
                "the divisor of a C-rate must be a positive number",
            ));
        }
        let q = Quantity {
            value: 1.0 / divisor,
            unit: Unit::CRate,
        };
        return Ok((q, 2 + len));
    }
    let (value, nlen) = lex_number(s).ok_or_else(|| {
        lex_error(
            0,
            format!(
                "expected a value such as \"1.5 A\", \"4.2 V\" or \"C/2\", found {}",
                found(s)
            ),
        )
    })?;
    if !value.is_finite() {
        return Err(lex_error(0, format!("\"{}\" is too large", &s[..nlen])));
    }
    let gap = s[nlen..].len() - s[nlen..].trim_start_matches([' ', '\t']).len();
    let at = nlen + gap;
    let (word, wlen) = lex_word(&s[at..]);
    // A separate word that is not a unit ("1.5 for 1 hour") means the unit was left out.
    if word.is_empty() || (gap > 0 && unit_from_word(word).is_none()) {
        return Err(lex_error(
            at,
            format!("expected a unit ({UNIT_HINT}) after \"{}\"", &s[..nlen]),
        ));
    }
    let (unit, scale) = unit_from_word(word).ok_or_else(|| {
        lex_error(
            at,
            format!("unknown unit \"{word}\" after \"{}\"; expected one of {UNIT_HINT} (optionally with an m prefix), Ah, Wh or degC", &s[..nlen]),
        )
    })?;
    Ok((
        Quantity {
            value: value * scale,
            unit,
        },
        at + wlen,
    ))
}

/// Lexes a duration (`30 minutes`, `1h`, `10 s`) at the start of `s`; returns seconds and the
/// number of bytes consumed.
pub(crate) fn lex_duration(s: &str) -> Result<(f64, usize), LexError> {
    let (value, nlen) = lex_number(s).ok_or_else(|| {
        lex_error(
            0,
            format!(
                "expected a duration such as \"30 minutes\" or \"1 h\", found {}",
                found(s)
            ),
        )
    })?;
    let gap = s[nlen..].len() - s[nlen..].trim_start_matches([' ', '\t']).len();
    let at = nlen + gap;
    let (word, wlen) = lex_word(&s[at..]);
    if word.is_empty() {
        return Err(lex_error(
            at,
            format!("expected a time unit (s, min, h) after \"{}\"", &s[..nlen]),
        ));
    }
    let per = seconds_per(word).ok_or_else(|| {
        lex_error(
            at,
            format!("unknown time unit \"{word}\"; expected s, sec, second(s), m, min, minute(s), h, hr or hour(s)"),
        )
    })?;
    let seconds = value * per;
    if !seconds.is_finite() {
        return Err(lex_error(0, format!("\"{}\" is too large", &s[..nlen])));
    }
    Ok((seconds, at + wlen))
}

/// Parses a whole string as one quantity ("2.5 Ah"); surrounding whitespace is allowed.
pub fn parse_quantity(text: &str) -> Result<Quantity, LexError> {
    let lead = text.len() - text.trim_start().len();
    let (q, len) = lex_quantity(&text[lead..]).map_err(|e| shift(e, lead))?;
    expect_end(text, lead + len)?;
    Ok(q)
}

/// Parses a whole string as one duration ("30 minutes") into seconds.
pub fn parse_duration(text: &str) -> Result<f64, LexError> {
    let lead = text.len() - text.trim_start().len();
    let (d, len) = lex_duration(&text[lead..]).map_err(|e| shift(e, lead))?;
    expect_end(text, lead + len)?;
    Ok(d)
}

fn shift(mut e: LexError, by: usize) -> LexError {
    e.offset += by;
    e
}

fn expect_end(text: &str, at: usize) -> Result<(), LexError> {
    let rest = &text[at..];
    if rest.trim().is_empty() {
        Ok(())
    } else {
        let lead = rest.len() - rest.trim_start().len();
        Err(lex_error(
            at + lead,
            format!("unexpected {} after the value", found(rest.trim_start())),
        ))
    }
}

/// Describes the text at a position for an error message: the next word, or "the end".
pub(crate) fn found(s: &str) -> String {
    let word: String = s
        .chars()
        .take_while(|c| !c.is_whitespace())
        .take(20)
        .collect();
    if word.is_empty() {
        "the end of the text".to_owned()
    } else {
        format!("\"{word}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_prefix_scales_to_si() {
        let q = parse_quantity("500mA").unwrap();
        assert_eq!(q.unit, Unit::Ampere);
        assert!((q.value - 0.5).abs() < 1e-12);
        assert_eq!(parse_quantity(" 2.5 Ah ").unwrap().value, 2.5);
        assert_eq!(parse_quantity("60 degC").unwrap().unit, Unit::Celsius);
    }

    #[test]
    fn c_over_n_is_a_c_rate() {
        let q = parse_quantity("C/20").unwrap();
        assert_eq!(q.unit, Unit::CRate);
        assert!((q.value - 0.05).abs() < 1e-12);
        assert_eq!(parse_quantity("1C").unwrap().value, 1.0);
    }

    #[test]
    fn durations_accept_every_pybamm_spelling() {
        for (text, s) in [
            ("10 s", 10.0),
            ("10 sec", 10.0),
            ("1 second", 1.0),
            ("2 seconds", 2.0),
            ("5 m", 300.0),
            ("5 min", 300.0),
            ("1 minute", 60.0),
            ("30 minutes", 1800.0),
            ("1h", 3600.0),
            ("2 hr", 7200.0),
            ("1 hour", 3600.0),
            ("1.5 hours", 5400.0),
        ] {
            assert_eq!(parse_duration(text).unwrap(), s, "{text}");
        }
    }

    #[test]
    fn missing_unit_is_reported_where_the_unit_belongs() {
        let e = parse_quantity("1.5").unwrap_err();
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("expected a unit"), "{}", e.message);
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        assert!(parse_quantity("4.2 V volts").is_err());
        assert!(parse_quantity("1e999 V").is_err());
    }
}

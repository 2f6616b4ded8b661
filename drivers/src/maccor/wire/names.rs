//! Names that fit MacNet's fields and Windows file names, and the tester's ISO 8601 times.

use super::NAME_LEN;
use crate::civil::{civil_from_days, days_from_civil};

/// A name that fits a 25-byte MacNet field and a Windows file name, and stays unique: kept as
/// it is when it already fits (ASCII letters, digits, `-`, `_`; at most 25 bytes; not MacNet's
/// reserved `Random`), otherwise the first 16 safe characters, `-` and 8 hex digits of a hash
/// of the whole name. Deterministic, so a restarted daemon derives the same name.
pub fn short_name(name: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !name.is_empty()
        && name.len() <= NAME_LEN
        && name.chars().all(safe)
        && !name.eq_ignore_ascii_case("Random")
    {
        return name.to_string();
    }
    let prefix: String = name
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(NAME_LEN - 9)
        .collect();
    format!("{prefix}-{:08x}", fnv1a32(name.as_bytes()))
}

/// FNV-1a, 32 bits: small, stable across builds and platforms.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for ms since the epoch, as the tester writes TesterTime.
pub fn iso8601_from_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fff][Z]` (UTC assumed) back to ms since the epoch.
pub fn ms_from_iso8601(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Four-digit years as ISO 8601 writes them (a longer one would overflow the day count).
    if !(0..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let ms_frac: u64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        let v: u64 = digits.parse().ok()?;
        v * 10u64.pow(3 - digits.len() as u32)
    };
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms_frac)
}

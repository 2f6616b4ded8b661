//! Calendar dates in UTC from Unix seconds, for listings and exports (civil-from-days, no
//! time-zone database: the hub writes UTC only).

use cyclerd_proto::time::{civil_from_days, days_from_civil};

/// A Unix time broken down into its UTC calendar date and time of day, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Utc {
    /// Proleptic Gregorian year.
    year: i64,
    /// 1..=12.
    month: i64,
    /// 1..=31.
    day: i64,
    /// Milliseconds since midnight.
    ms_of_day: i64,
}

impl Utc {
    /// `None` for NaN and infinities. Rounded to the nearest millisecond: sample times are
    /// binary fractions of a second, so truncating would turn `.1` into `.099`.
    pub(crate) fn from_unix_s(unix_s: f64) -> Option<Utc> {
        if !unix_s.is_finite() {
            return None;
        }
        let ms = (unix_s * 1000.0).round() as i64;
        let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        let (year, month, day) = civil_from_days(days);
        Some(Utc {
            year,
            month,
            day,
            ms_of_day,
        })
    }

    /// `YYYY-MM-DD HH:MM:SS`, the second truncated.
    pub(crate) fn seconds(&self) -> String {
        let (h, m, s, _) = self.time();
        format!(
            "{:04}-{:02}-{:02} {h:02}:{m:02}:{s:02}",
            self.year, self.month, self.day
        )
    }

    /// `YYYY-MM-DD HH:MM:SS.fff`: what spreadsheet tools and SQL `timestamp` columns parse.
    pub(crate) fn millis(&self) -> String {
        let (h, m, s, ms) = self.time();
        format!(
            "{:04}-{:02}-{:02} {h:02}:{m:02}:{s:02}.{ms:03}",
            self.year, self.month, self.day
        )
    }

    /// `YYYYMMDD`: the date in BDF's file names.
    pub(crate) fn date_digits(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// ISO 8601 / RFC 3339, `YYYY-MM-DDTHH:MM:SS.fffZ`.
    pub(crate) fn rfc3339(&self) -> String {
        let (h, m, s, ms) = self.time();
        format!(
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z",
            self.year, self.month, self.day
        )
    }

    fn time(&self) -> (i64, i64, i64, i64) {
        let ms = self.ms_of_day;
        (
            ms / 3_600_000,
            ms % 3_600_000 / 60_000,
            ms % 60_000 / 1000,
            ms % 1000,
        )
    }
}

/// A time as people give it on the command line, as Unix seconds: an RFC 3339 date-time
/// (`2026-12-01T08:30:00Z`, `2026-12-01 08:30:00+01:00`, fractions allowed), a plain date
/// (`2026-12-01`, its midnight UTC), or Unix seconds (`1796083200`).
pub(crate) fn parse_time(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let refuse = || {
        format!(
            "{text:?} is not a time: give a date (2026-12-01, midnight UTC), an RFC 3339 time \
             (2026-12-01T08:30:00Z, or with an offset such as +01:00) or Unix seconds"
        )
    };
    if !t.contains('-') || t.starts_with('-') {
        // No date: Unix seconds (a negative number is refused by the filter's check).
        return t.parse::<f64>().map_err(|_| refuse());
    }
    let digits = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse());
        }
        s.parse().map_err(|_| refuse())
    };
    let (date, rest) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(refuse());
    }
    let (year, month, day) = (digits(y)?, digits(m)?, digits(d)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return Err(format!("{text:?}: there is no such day"));
    }
    let midnight = days_from_civil(year, month, day) as f64 * 86_400.0;
    let Some(rest) = rest else {
        return Ok(midnight);
    };
    // The time of day, then `Z` or an offset `+HH:MM` / `-HH:MM`.
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (sign, hm) = (&rest[i..i + 1], &rest[i + 1..]);
        let Some((h, m)) = hm.split_once(':') else {
            return Err(refuse());
        };
        if h.len() != 2 || m.len() != 2 {
            return Err(refuse());
        }
        let (h, m) = (digits(h)?, digits(m)?);
        if h > 23 || m > 59 {
            return Err(refuse());
        }
        let offset = h * 3600 + m * 60;
        (&rest[..i], if sign == "+" { offset } else { -offset })
    } else {
        return Err(format!(
            "{text:?}: say which time zone, e.g. {rest}Z for UTC (RFC 3339)"
        ));
    };
    let (whole, fraction) = match clock.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (clock, None),
    };
    let mut hms = whole.split(':');
    let (Some(h), Some(m), Some(s), None) = (hms.next(), hms.next(), hms.next(), hms.next()) else {
        return Err(refuse());
    };
    if h.len() != 2 || m.len() != 2 || s.len() != 2 {
        return Err(refuse());
    }
    let (h, m, s) = (digits(h)?, digits(m)?, digits(s)?);
    // 60: a leap second, as RFC 3339 allows.
    if h > 23 || m > 59 || s > 60 {
        return Err(format!("{text:?}: there is no such time of day"));
    }
    let fraction = match fraction {
        Some(f) => {
            digits(f)?;
            format!("0.{f}").parse::<f64>().map_err(|_| refuse())?
        }
        None => 0.0,
    };
    Ok(midnight + (h * 3600 + m * 60 + s - offset_s) as f64 + fraction)
}

#[cfg(test)]
mod tests {
    use super::{Utc, parse_time};

    #[test]
    fn times_parse_from_dates_rfc_3339_and_unix_seconds() {
        assert_eq!(parse_time("2026-12-01"), Ok(1_796_083_200.0));
        assert_eq!(parse_time("2026-12-01T00:00:00Z"), Ok(1_796_083_200.0));
        assert_eq!(parse_time("2026-12-01T08:30:00.25Z"), Ok(1_796_113_800.25));
        assert_eq!(parse_time("2026-12-01 09:30:00+01:00"), Ok(1_796_113_800.0));
        assert_eq!(parse_time("2026-11-30T23:00:00-01:00"), Ok(1_796_083_200.0));
        assert_eq!(parse_time("2000-02-29"), Ok(951_782_400.0));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000.0));
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000.5));
        assert_eq!(
            utc(parse_time("2026-12-01").unwrap()).seconds(),
            "2026-12-01 00:00:00"
        );
    }

    #[test]
    fn malformed_times_are_refused_with_the_forms_that_work() {
        for bad in [
            "",
            "tomorrow",
            "2026-13-01",
            "2026-02-29",
            "2026-12-1",
            "2026-12-01T08:30",
            "2026-12-01T08:30:00",
            "2026-12-01T25:00:00Z",
            "2026-12-01T08:30:00+1",
            "12/01/2026",
            "2026-12-01T08:30:00.xZ",
            "2026-12-01T08:30:00+01:00:00",
            "-2026-12-01",
        ] {
            let e = parse_time(bad).expect_err(bad);
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert!(
            parse_time("2026-12-01T08:30:00")
                .unwrap_err()
                .contains("time zone")
        );
    }

    fn utc(unix_s: f64) -> Utc {
        Utc::from_unix_s(unix_s).unwrap()
    }

    #[test]
    fn known_instants_format_in_every_style() {
        assert_eq!(utc(0.0).seconds(), "1970-01-01 00:00:00");
        assert_eq!(utc(951_827_696.5).seconds(), "2000-02-29 12:34:56");
        assert_eq!(utc(951_827_696.5).millis(), "2000-02-29 12:34:56.500");
        assert_eq!(utc(1_735_689_599.0).seconds(), "2024-12-31 23:59:59");
        assert_eq!(utc(1_700_000_000.1).rfc3339(), "2023-11-14T22:13:20.100Z");
        assert_eq!(utc(-0.001).millis(), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn non_finite_times_have_no_date() {
        assert_eq!(Utc::from_unix_s(f64::NAN), None);
        assert_eq!(Utc::from_unix_s(f64::INFINITY), None);
    }
}

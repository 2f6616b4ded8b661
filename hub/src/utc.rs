//! Calendar dates in UTC from Unix seconds, for listings and exports (civil-from-days, no
//! time-zone database: the hub writes UTC only).

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
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
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

#[cfg(test)]
mod tests {
    use super::Utc;

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

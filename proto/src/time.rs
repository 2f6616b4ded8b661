//! Calendar dates in UTC from days since 1970-01-01 and back (Howard Hinnant's
//! `civil_from_days` / `days_from_civil`, proleptic Gregorian, no time-zone database: the
//! peers write UTC only), and RFC 3339 times, for the daemon's alerts and the hub's listings.

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

/// The proleptic Gregorian `(year, month 1..=12, day 1..=31)` of `days` since 1970-01-01
/// (negative before it).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day` (month 1..=12; a
/// day past its month's end counts on into the next).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `unix_ms` (ms since 1970-01-01 UTC) as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let (days, ms) = (
        unix_ms.div_euclid(MS_PER_DAY),
        unix_ms.rem_euclid(MS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn days_since_the_epoch_are_the_gregorian_dates_around_it_and_across_leap_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(1600, 1, 1), -135_140);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds_before_and_after_the_epoch() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_100), "2023-11-14T22:13:20.100Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    proptest! {
        #[test]
        fn a_day_turned_into_its_date_and_back_is_the_same_day(
            days in -1_000_000_000i64..1_000_000_000
        ) {
            let (y, m, d) = civil_from_days(days);
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prop_assert_eq!(days_from_civil(y, m, d), days);
            // The next day is the next date: the day after, or the 1st of the next month.
            let next = civil_from_days(days + 1);
            prop_assert!(next == (y, m, d + 1) || next.2 == 1 && (next.1 == m % 12 + 1));
        }
    }
}

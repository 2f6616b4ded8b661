//! UTC calendar dates from days since 1970-01-01 and back (Howard Hinnant's algorithms), for
//! the device wire formats that write dates (Maccor's TesterTime, Neware's `atime`).
//!
//! The same as `cyclerd_proto::time`, which the daemon's alerts and the hub use: this crate
//! knows nothing about gRPC, so it does not depend on that crate for two small functions.

/// The proleptic Gregorian `(year, month 1..=12, day 1..=31)` of `days` since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
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

/// Days since 1970-01-01 of the proleptic Gregorian date `year-month-day` (month 1..=12).
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    proptest! {
        #[test]
        fn a_day_turned_into_its_date_and_back_is_the_same_day(
            days in -1_000_000_000i64..1_000_000_000
        ) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

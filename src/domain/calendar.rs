//! Proleptic Gregorian calendar rules shared by every date check (record
//! dates, the `YYMMDD` of dossier ids) and by the demo generator's date
//! arithmetic, so "is this a real date" has exactly one answer in the crate.

/// Whether `year` is a leap year.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days of `month` (1 to 12) in `year`; `None` for other months.
pub fn days_in_month(year: i32, month: u32) -> Option<u32> {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => Some(31),
        4 | 6 | 9 | 11 => Some(30),
        2 if is_leap_year(year) => Some(29),
        2 => Some(28),
        _ => None,
    }
}

/// Whether year-month-day is a real calendar date with a year from 1 to 9999
/// (the range of `interop.common.v1.Date`).
pub fn is_real_date(year: i32, month: i32, day: i32) -> bool {
    if !(1..=9999).contains(&year) {
        return false;
    }
    let (Ok(month), Ok(day)) = (u32::try_from(month), u32::try_from(day)) else {
        return false;
    };
    days_in_month(year, month).is_some_and(|n| (1..=n).contains(&day))
}

/// Days since 1970-01-01 of a date (negative before it). The date is assumed
/// real; see [`is_real_date`].
pub fn to_days(year: i32, month: u32, day: u32) -> i64 {
    // Howard Hinnant's days_from_civil: years start in March so the leap day
    // is the last day of the shifted year.
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` days after 1970-01-01; inverse of [`to_days`].
pub fn from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The arithmetic keeps day in 1..=31, month in 1..=12; the year fits i32
    // for every `days` a date of 1..=9999 produces.
    (year as i32, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2025));
    }

    #[test]
    fn real_dates_are_recognised() {
        assert!(is_real_date(2024, 2, 29));
        assert!(!is_real_date(2023, 2, 29));
        assert!(!is_real_date(2025, 4, 31));
        assert!(!is_real_date(2025, 13, 1));
        assert!(!is_real_date(2025, 0, 1));
        assert!(!is_real_date(2025, 1, 0));
        assert!(!is_real_date(0, 1, 1));
        assert!(!is_real_date(10_000, 1, 1));
        assert!(!is_real_date(2025, -1, 1));
        assert!(is_real_date(9999, 12, 31));
        assert!(is_real_date(1, 1, 1));
    }

    #[test]
    fn day_numbers_match_known_dates() {
        assert_eq!(to_days(1970, 1, 1), 0);
        assert_eq!(to_days(2000, 3, 1), 11_017);
        assert_eq!(from_days(11_017), (2000, 3, 1));
        assert_eq!(from_days(-1), (1969, 12, 31));
    }

    proptest! {
        #[test]
        fn day_numbers_round_trip(y in 1i32..=9999, m in 1u32..=12, d in 1u32..=31) {
            prop_assume!(is_real_date(y, m as i32, d as i32));
            let n = to_days(y, m, d);
            prop_assert_eq!(from_days(n), (y, m, d));
            // The next day number is the next real date.
            let (y2, m2, d2) = from_days(n + 1);
            prop_assert!(y2 == 10_000 || is_real_date(y2, m2 as i32, d2 as i32));
            prop_assert!((y2, m2, d2) > (y, m, d));
        }
    }
}

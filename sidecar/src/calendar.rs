//! UTC calendar days for the operator's views (revenue per day, the admin CLI's `--since`):
//! H. Hinnant's `civil_from_days` / `days_from_civil` (proleptic Gregorian), so no date crate.

/// `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn civil_day(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The day count since 1970-01-01 of `YYYY-MM-DD`; `None` unless a real date.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // 2026-02-30 would land in March: refuse what does not round-trip.
    (civil_day(days) == s).then_some(days)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds.
pub fn civil_time(unix: i64) -> String {
    let secs = unix.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        civil_day(unix.div_euclid(86_400)),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_dates_both_ways() {
        for (n, s) in [
            (0, "1970-01-01"),
            (59, "1970-03-01"),
            (11_016, "2000-02-29"),
            (20_427, "2025-12-05"),
            (-1, "1969-12-31"),
        ] {
            assert_eq!(civil_day(n), s);
            assert_eq!(parse_day(s), Some(n));
        }
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-01-01",
            "2026-1-01",
            "x",
            "2026-01-01x",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert_eq!(civil_time(86_400 + 3_723), "1970-01-02 01:02:03");
    }
}

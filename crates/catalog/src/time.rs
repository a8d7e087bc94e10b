//! Timestamps and dates as the API accepts them.
//!
//! Accepted: RFC 3339 (`2026-11-05T10:00:00Z`, offsets converted to UTC),
//! `2026-11-05 10:00:00` and `2026-11-05T10:00:00` (UTC), integer Unix seconds.
//! ClickHouse `DateTime` is a UInt32 of seconds and `Date` a UInt16 of days; we keep
//! both inside 1970-01-01 ..= 2105-12-31, which every server version handles.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Last second a `DateTime` may hold: 2105-12-31 23:59:59 UTC.
pub const MAX_DATETIME: i64 = 4_291_747_199;
/// Last day a `Date` may hold: 2105-12-31, in days since the epoch.
pub const MAX_DATE_DAYS: i64 = 49_672;

/// Parses a timestamp into Unix seconds (UTC), checking the `DateTime` range.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let t = text.trim();
    // The forms ingest sees in bulk, read without a general parser (hot path).
    if let Some(secs) = fast_utc(t) {
        return check_timestamp(secs);
    }
    let secs = if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        dt.timestamp()
    } else if let Some(ndt) = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
    {
        ndt.and_utc().timestamp()
    } else if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        t.parse::<i64>()
            .map_err(|_| format!("`{t}` is out of range for a timestamp"))?
    } else {
        return Err(format!(
            "`{t}` is not a timestamp; use RFC 3339 (2026-11-05T10:00:00Z), \
             `2026-11-05 10:00:00` (UTC) or Unix seconds"
        ));
    };
    check_timestamp(secs)
}

/// `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS` and the same with a `Z`: Unix
/// seconds, or `None` for anything else (which the general parser then judges).
fn fast_utc(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let b = match b.len() {
        19 => b,
        20 if b[19] == b'Z' || b[19] == b'z' => &b[..19],
        _ => return None,
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = NaiveTime::from_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(date.and_time(time).and_utc().timestamp())
}

pub fn check_timestamp(secs: i64) -> Result<i64, String> {
    if (0..=MAX_DATETIME).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!(
            "timestamp {secs} is outside 1970-01-01 00:00:00 .. 2105-12-31 23:59:59 UTC"
        ))
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let t = text.trim();
    let d = NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .map_err(|_| format!("`{t}` is not a date; use YYYY-MM-DD"))?;
    let days = date_to_days(d);
    if (0..=MAX_DATE_DAYS).contains(&days) {
        Ok(d)
    } else {
        Err(format!("date {t} is outside 1970-01-01 .. 2105-12-31"))
    }
}

pub fn date_to_days(d: NaiveDate) -> i64 {
    d.signed_duration_since(NaiveDate::default()).num_days()
}

pub fn days_to_date(days: i64) -> NaiveDate {
    NaiveDate::default() + chrono::Duration::days(days)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, the form ClickHouse prints and parses.
pub fn format_timestamp(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// RFC 3339 in UTC with a `Z`, for JSON responses.
pub fn format_rfc3339(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds, from Unix milliseconds.
pub fn format_rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A time zone for interpreting dates in export requests: `UTC`, a fixed offset
/// (`+03:00`) or an IANA name (`Europe/Berlin`).
#[derive(Debug, Clone, Copy)]
pub enum Zone {
    Fixed(chrono::FixedOffset),
    Named(chrono_tz::Tz),
}

impl Zone {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::Fixed(
                chrono::FixedOffset::east_opt(0).expect("zero offset"),
            ));
        }
        if t.starts_with('+') || t.starts_with('-') {
            let parsed = DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{t}"))
                .map_err(|_| format!("`{t}` is not an offset like +03:00"))?;
            return Ok(Zone::Fixed(*parsed.offset()));
        }
        t.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| format!("`{t}` is not a known time zone (UTC, +03:00, Europe/Berlin)"))
    }

    /// Unix seconds of local midnight starting `date` (the earliest instant if the
    /// local midnight is ambiguous, the first valid one if it falls in a DST gap).
    pub fn start_of_day(&self, date: NaiveDate) -> i64 {
        self.local_to_utc(date.and_time(NaiveTime::MIN))
    }

    pub fn local_to_utc(&self, local: NaiveDateTime) -> i64 {
        fn resolve<Z: TimeZone>(z: &Z, local: NaiveDateTime) -> i64 {
            let mut probe = local;
            // A DST gap is at most a few hours; step forward until the time exists.
            for _ in 0..(26 * 4) {
                if let Some(t) = z.from_local_datetime(&probe).earliest() {
                    return t.timestamp();
                }
                probe += chrono::Duration::minutes(15);
            }
            local.and_utc().timestamp()
        }
        match self {
            Zone::Fixed(z) => resolve(z, local),
            Zone::Named(z) => resolve(z, local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_accepted_form() {
        assert_eq!(
            parse_timestamp("2026-11-05T10:00:00Z").unwrap(),
            1_793_872_800
        );
        assert_eq!(
            parse_timestamp("2026-11-05T12:00:00+02:00").unwrap(),
            1_793_872_800
        );
        assert_eq!(
            parse_timestamp("2026-11-05 10:00:00").unwrap(),
            1_793_872_800
        );
        assert_eq!(
            parse_timestamp("2026-11-05T10:00:00").unwrap(),
            1_793_872_800
        );
        assert_eq!(parse_timestamp("1793872800").unwrap(), 1_793_872_800);
        assert_eq!(format_timestamp(1_793_872_800), "2026-11-05 10:00:00");
        assert_eq!(format_rfc3339(1_793_872_800), "2026-11-05T10:00:00Z");
    }

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        for t in [
            "2026-11-05 10:00:00",
            "2026-11-05T10:00:00",
            "2026-11-05T10:00:00Z",
            "1970-01-01 00:00:00",
            "2105-12-31 23:59:59",
            "2024-02-29 12:30:45",
        ] {
            let slow =
                NaiveDateTime::parse_from_str(&t[..19].replace('T', " "), "%Y-%m-%d %H:%M:%S")
                    .unwrap()
                    .and_utc()
                    .timestamp();
            assert_eq!(fast_utc(t), Some(slow), "{t}");
        }
        for t in [
            "2026-02-30 10:00:00",
            "2026-11-05 24:00:00",
            "2026-11-05 10:00:60",
            "2026-1-05 10:00:00",
            "2026-11-05 10:00:00+01:00",
            "２026-11-05 10:00:00",
        ] {
            assert_eq!(fast_utc(t), None, "{t}");
        }
    }

    #[test]
    fn bad_and_out_of_range_timestamps() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01 00:00:00",
            "2026-11-05 25:00:00",
            "1969-12-31T23:59:59Z",
            "2106-01-01T00:00:00Z",
            "99999999999999999999999",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(date_to_days(parse_date("1970-01-02").unwrap()), 1);
        assert_eq!(
            date_to_days(parse_date("2105-12-31").unwrap()),
            MAX_DATE_DAYS
        );
        assert!(parse_date("2106-01-01").is_err());
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("05.11.2026").is_err());
        assert_eq!(days_to_date(1).to_string(), "1970-01-02");
    }

    #[test]
    fn zones() {
        let d = parse_date("2026-07-01").unwrap();
        assert_eq!(Zone::parse("UTC").unwrap().start_of_day(d), 1_782_864_000);
        assert_eq!(
            Zone::parse("+03:00").unwrap().start_of_day(d),
            1_782_864_000 - 3 * 3600
        );
        // Berlin is UTC+2 in July.
        assert_eq!(
            Zone::parse("Europe/Berlin").unwrap().start_of_day(d),
            1_782_864_000 - 2 * 3600
        );
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert!(Zone::parse("+99:00").is_err());
    }
}

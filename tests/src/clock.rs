//! Civil dates and Unix time without a date library: what the service prints is
//! checked against arithmetic of the test's own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
pub fn rfc3339_ms(t: &str) -> i64 {
    assert!(t.len() >= 20 && t.ends_with('Z'), "RFC 3339 UTC: {t}");
    let n = |a: usize, b: usize| -> i64 { t[a..b].parse().unwrap_or_else(|_| panic!("{t}")) };
    assert_eq!(&t[10..11], "T", "{t}");
    let days = days_from_civil(n(0, 4), n(5, 7), n(8, 10));
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    let ms = if t.len() > 20 {
        assert_eq!(&t[19..20], ".", "{t}");
        n(20, t.len() - 1)
    } else {
        0
    };
    secs * 1000 + ms
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix seconds.
pub fn utc_text(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Sleeps until the wall clock is past the end of the Unix second `secs`.
pub async fn sleep_past_second(secs: i64) {
    loop {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_millis() as i64;
        let target = (secs + 1) * 1000 + 50;
        if now_ms >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis((target - now_ms) as u64)).await;
    }
}

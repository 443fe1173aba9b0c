//! Time arguments of `sluice group reset-offsets`: RFC 3339 date-times (`--to-datetime`) and
//! ISO 8601 durations `PnDTnHnMnS` or plain seconds (`--by-duration`), both to milliseconds.
//! Pure functions; no time zone database (an explicit offset is required).

use anyhow::{anyhow, bail, Result};

const MS_PER_S: i64 = 1_000;
const MS_PER_MIN: i64 = 60 * MS_PER_S;
const MS_PER_H: i64 = 60 * MS_PER_MIN;
const MS_PER_DAY: i64 = 24 * MS_PER_H;

/// `2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.250+02:00` → ms since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64> {
    let bad = || {
        anyhow!("--to-datetime {s:?}: expected RFC 3339, e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.5+02:00")
    };
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i64> {
        let part = s.get(from..to).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        bail!("--to-datetime {s:?}: no such date");
    }
    if hour > 23 || minute > 59 || second > 60 {
        bail!("--to-datetime {s:?}: no such time of day");
    }
    let mut at = 19;
    let mut fraction_ms = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(bad());
        }
        // Milliseconds: the first three digits, padded; finer digits are dropped.
        let ms_digits = &s[at + 1..at + 1 + digits.min(3)];
        fraction_ms =
            ms_digits.parse::<i64>().map_err(|_| bad())? * 10i64.pow(3 - ms_digits.len() as u32);
        at += 1 + digits;
    }
    let offset_ms = match &s[at..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(&zone[..1], "+" | "-") && &zone[3..4] == ":" => {
            let (h, m) = (num(at + 1, at + 3)?, num(at + 4, at + 6)?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (h * MS_PER_H + m * MS_PER_MIN)
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month, day);
    Ok(days * MS_PER_DAY
        + hour * MS_PER_H
        + minute * MS_PER_MIN
        + second.min(59) * MS_PER_S
        + fraction_ms
        - offset_ms)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `P1DT2H30M`, `PT10M`, `PT1.5S`, or plain seconds `3600` → milliseconds (never negative).
pub fn parse_duration_ms(s: &str) -> Result<i64> {
    let bad =
        || anyhow!("--by-duration {s:?}: expected PnDTnHnMnS (e.g. PT10M, P1DT12H) or seconds");
    if let Ok(secs) = s.parse::<u64>() {
        return i64::try_from(secs)
            .ok()
            .and_then(|v| v.checked_mul(MS_PER_S))
            .ok_or_else(bad);
    }
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or_else(bad)?;
    let (date, time) = match rest.find(['T', 't']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut total: i64 = 0;
    let mut any = false;
    let mut add = |value: f64, unit_ms: i64| -> Result<()> {
        let ms = value * unit_ms as f64;
        if !ms.is_finite() || ms > i64::MAX as f64 / 2.0 {
            return Err(bad());
        }
        total = total.checked_add(ms as i64).ok_or_else(bad)?;
        any = true;
        Ok(())
    };
    for (value, unit) in components(date).map_err(|_| bad())? {
        match unit {
            'D' => add(value, MS_PER_DAY)?,
            'W' => add(value, 7 * MS_PER_DAY)?,
            _ => return Err(bad()),
        }
    }
    if let Some(time) = time {
        let parts = components(time).map_err(|_| bad())?;
        if parts.is_empty() {
            return Err(bad());
        }
        for (value, unit) in parts {
            match unit {
                'H' => add(value, MS_PER_H)?,
                'M' => add(value, MS_PER_MIN)?,
                'S' => add(value, MS_PER_S)?,
                _ => return Err(bad()),
            }
        }
    }
    if !any {
        return Err(bad());
    }
    Ok(total)
}

/// `1D`, `2H30M15.5S` → [(1, 'D')], [(2, 'H'), (30, 'M'), (15.5, 'S')]; units upper-cased.
fn components(s: &str) -> Result<Vec<(f64, char)>, ()> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphabetic() {
            let number = &s[start..i];
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(());
            }
            out.push((
                number.parse::<f64>().map_err(|_| ())?,
                c.to_ascii_uppercase(),
            ));
            start = i + 1;
        }
    }
    if start != s.len() {
        return Err(());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_epoch_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:00:00Z").unwrap(),
            1_709_208_000_000
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T14:00:00.25+02:00").unwrap(),
            1_709_208_000_250
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29t06:30:00.123456-05:30").unwrap(),
            1_709_208_000_123
        );
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59Z").unwrap(), -1000);
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+2:00",
            "yesterday",
            "2024-01-01T00:00:00Zjunk",
        ] {
            let e = parse_rfc3339_ms(bad).unwrap_err().to_string();
            assert!(e.contains("--to-datetime"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_to_ms() {
        assert_eq!(parse_duration_ms("3600").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("PT10M").unwrap(), 600_000);
        assert_eq!(parse_duration_ms("P1DT2H3M4S").unwrap(), 93_784_000);
        assert_eq!(parse_duration_ms("P2D").unwrap(), 172_800_000);
        assert_eq!(parse_duration_ms("pt1.5s").unwrap(), 1_500);
        for bad in [
            "", "P", "PT", "-5", "P1H", "PT1D", "PT5", "10m", "P1DT", "PTM",
        ] {
            let e = parse_duration_ms(bad).unwrap_err().to_string();
            assert!(e.contains("--by-duration"), "{bad}: {e}");
        }
    }
}

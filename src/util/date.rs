//! RFC 1123 dates (`Thu, 26 Nov 2026 12:00:05 GMT`), the form of SIP's `Date` header
//! (RFC 3261 §20.17), written without allocating.

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Append the RFC 1123 date of `unix_ms` (milliseconds since the epoch) to `out`.
pub fn write_rfc1123(unix_ms: u64, out: &mut Vec<u8>) {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    out.extend_from_slice(DAYS[(days % 7) as usize].as_bytes());
    out.extend_from_slice(b", ");
    push2(out, u64::from(day));
    out.push(b' ');
    out.extend_from_slice(MONTHS[(month as usize).saturating_sub(1) % 12].as_bytes());
    out.push(b' ');
    let y = year.clamp(0, 9999) as u64;
    push2(out, y / 100);
    push2(out, y % 100);
    out.push(b' ');
    push2(out, rem / 3600);
    out.push(b':');
    push2(out, rem / 60 % 60);
    out.push(b':');
    push2(out, rem % 60);
    out.extend_from_slice(b" GMT");
}

fn push2(out: &mut Vec<u8>, v: u64) {
    out.push(b'0' + ((v / 10) % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(ms: u64) -> String {
        let mut out = Vec::new();
        write_rfc1123(ms, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(1_795_694_405_000), "Thu, 26 Nov 2026 12:00:05 GMT");
        assert_eq!(date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(4_107_542_399_000), "Sun, 28 Feb 2100 23:59:59 GMT");
    }
}

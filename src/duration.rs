//! Go-style durations as written in signoff's resources: `90s`, `2m`, `1h30m`, `500ms`.

use jiff::SignedDuration;

/// Parse a duration such as `1h30m` (units h, m, s, ms; decimals allowed).
pub fn parse(text: &str) -> Result<SignedDuration, String> {
    let bad = || format!("invalid duration {text:?}: use a number and a unit, e.g. 90s, 2m, 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total_ms: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1.0, 2)
        } else if rest.starts_with('h') {
            (3_600_000.0, 1)
        } else if rest.starts_with('m') {
            (60_000.0, 1)
        } else if rest.starts_with('s') {
            (1_000.0, 1)
        } else {
            return Err(bad());
        };
        total_ms += value * unit_ms;
        rest = &rest[len..];
    }
    Ok(SignedDuration::from_millis(total_ms.round() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        for (text, ms) in [("90s", 90_000), ("2m", 120_000), ("1h30m", 5_400_000), ("500ms", 500), ("1.5h", 5_400_000)]
        {
            assert_eq!(parse(text), Ok(SignedDuration::from_millis(ms)), "{text}");
        }
        for bad in ["", "5", "m", "5d", "1h 30m", "-5s"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }
}

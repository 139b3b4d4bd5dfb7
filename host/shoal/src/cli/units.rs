//! Parsing sizes (`64MiB`) and durations (`90s`, `5m`, `30d`) given on the
//! command line: one parser each, with the rules of each option beside it.

use std::time::Duration;

/// Parse a byte size: a number with an optional unit (B, K/KB/KiB, M/MB/MiB,
/// G/GB/GiB; all binary multiples).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 64MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}` (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The rules of one duration option.
#[derive(Clone, Copy, Debug)]
pub struct DurationRules {
    /// A bare number counts seconds (else it needs a unit).
    pub bare_is_secs: bool,
    /// Zero is a valid value.
    pub zero_ok: bool,
    /// The longest value, and how to say it in an error.
    pub max: Duration,
    /// `max` in words, e.g. "7 days".
    pub max_words: &'static str,
    /// Examples for the error of a value that is not a duration.
    pub examples: &'static str,
}

/// Parse a duration: a whole number and a unit, `ms`, `s`, `m` (or `min`),
/// `h` or `d`, within `rules`.
pub fn parse_duration_with(text: &str, rules: DurationRules) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try {})", rules.examples))?;
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "" if rules.bare_is_secs => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "`{text}` needs a unit: ms, s, m, h or d (e.g. {})",
                rules.examples
            ))
        }
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{text}` (use ms, s, m, h or d)"
            ))
        }
    };
    let ms = n
        .checked_mul(unit_ms)
        .filter(|ms| u128::from(*ms) <= rules.max.as_millis())
        .ok_or_else(|| format!("`{text}` is longer than {}", rules.max_words))?;
    if ms == 0 && !rules.zero_ok {
        return Err(format!("`{text}`: the duration must be more than zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// A wait or deadline option (`drain --timeout`, `node start --dead-after`
/// and the like): a unit is required, more than zero, at most 7 days.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_with(
        text,
        DurationRules {
            bare_is_secs: false,
            zero_ok: false,
            max: Duration::from_secs(7 * 86_400),
            max_words: "7 days",
            examples: "500ms, 90s, 5m or 1h",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("10"), Ok(10));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("5 parsecs").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3min"), Ok(Duration::from_secs(180)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("8d").unwrap_err().contains("7 days"));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("d").is_err());
    }
}

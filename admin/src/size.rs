//! Box size limits as administrators write them: bytes, or a number with `K`, `M` or `G`
//! (1024-based, as Dovecot's quota rules count; case-insensitive, an optional trailing
//! `B` or `iB` accepted).

/// Parses `10M`, `512k`, `1GiB`, `1500` into bytes.
///
/// # Errors
/// Not a whole number with an optional unit, or over 2^63 - 1 bytes.
pub fn parse(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("{text:?} is not a size (bytes, or a number with K, M or G)")),
    };
    if digits.is_empty() {
        return Err(format!("{text:?} is not a size (bytes, or a number with K, M or G)"));
    }
    let n: i64 = digits.parse().map_err(|_| format!("{text:?} is too large"))?;
    n.checked_mul(1i64 << shift).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse("1500"), Ok(1500));
        assert_eq!(parse("512k"), Ok(512 * 1024));
        assert_eq!(parse("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse("10MB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("2g"), Ok(2 << 30));
        for bad in ["", "M", "-1", "1.5M", "10 M", "10T", "ten", "99999999999G"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

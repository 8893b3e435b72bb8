//! The update records of the datagram protocol (spec/mail.md §5.2 "Datagram format"),
//! parsed without I/O: `OP SP FLAG SP VALUE SP KEY`, one per line; a datagram is a
//! transaction, so one bad record refuses the whole datagram.

use std::fmt;

use common::stats::{Flag, MAX_DATAGRAM, MAX_KEY};

/// What a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `U`: value += VALUE (the key is created at 0 first).
    Update,
    /// `S`: value := VALUE.
    Set,
    /// `R`: every key matching the pattern := 0.
    Reset,
    /// `D`: every key matching the pattern is removed.
    Delete,
}

impl Op {
    fn letter(self) -> char {
        match self {
            Op::Update => 'U',
            Op::Set => 'S',
            Op::Reset => 'R',
            Op::Delete => 'D',
        }
    }
}

/// One parsed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The operation.
    pub op: Op,
    /// The flag a created key gets.
    pub flag: Flag,
    /// The signed value (0 for `R` and `D`).
    pub value: i64,
    /// The key, or a `*`/`?` pattern for `R` and `D`.
    pub key: String,
}

impl fmt::Display for Record {
    /// The wire form, without the line end.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.op.letter(), self.flag.letter(), self.value, self.key)
    }
}

/// Why a datagram was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Over [`MAX_DATAGRAM`] bytes.
    #[error("datagram over {MAX_DATAGRAM} bytes")]
    TooBig,
    /// Not UTF-8.
    #[error("datagram is not UTF-8")]
    NotUtf8,
    /// No records at all.
    #[error("empty datagram")]
    Empty,
    /// Record `n` (from 1) is bad.
    #[error("record {0}: {1}")]
    Record(usize, &'static str),
}

/// Checks a key or pattern: 1..=255 bytes, no whitespace or control characters.
pub fn valid_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    if key.len() > MAX_KEY {
        return Err("key over 255 bytes");
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("whitespace or control character in key");
    }
    Ok(())
}

/// Parses one record line (without its line end).
///
/// # Errors
/// A description of what is wrong.
pub fn parse_record(line: &str) -> Result<Record, &'static str> {
    let mut parts = line.splitn(4, ' ');
    let op = match parts.next() {
        Some("U") => Op::Update,
        Some("S") => Op::Set,
        Some("R") => Op::Reset,
        Some("D") => Op::Delete,
        _ => return Err("unknown operation"),
    };
    let flag = parts.next().and_then(Flag::from_letter).ok_or("flag must be P or V")?;
    let value_text = parts.next().ok_or("missing value")?;
    // Only plain decimal: an optional sign and 1..=19 digits.
    let digits = value_text.strip_prefix(['-', '+']).unwrap_or(value_text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("value is not a decimal number");
    }
    let value: i64 = value_text.parse().map_err(|_| "value out of the signed 64-bit range")?;
    let key = parts.next().ok_or("missing key")?;
    valid_key(key)?;
    Ok(Record { op, flag, value, key: key.to_owned() })
}

/// Parses a whole datagram: every line a record (a final line end is optional, empty
/// lines are not allowed).
///
/// # Errors
/// [`Malformed`]: the datagram must be dropped whole.
pub fn parse_datagram(bytes: &[u8]) -> Result<Vec<Record>, Malformed> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(Malformed::TooBig);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::NotUtf8)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Err(Malformed::Empty);
    }
    text.split('\n').enumerate().map(|(i, l)| parse_record(l).map_err(|e| Malformed::Record(i + 1, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_parses() {
        let d = b"U P 1 mmsmtpd|total|connections\nU V 1 mmsmtpd|current|connections\nU V 1 mmsmtpd|who|192.0.2.7\n";
        let r = parse_datagram(d).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[2],
            Record { op: Op::Update, flag: Flag::Volatile, value: 1, key: "mmsmtpd|who|192.0.2.7".into() }
        );
        assert_eq!(r[0].to_string(), "U P 1 mmsmtpd|total|connections");
        assert_eq!(parse_record("D V 0 a|*").unwrap().op, Op::Delete);
        assert_eq!(parse_record("S P -9223372036854775808 k").unwrap().value, i64::MIN);
        assert_eq!(parse_record("U P +5 k").unwrap().value, 5);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "X P 1 k",
            "U Q 1 k",
            "U P one k",
            "U P 1",
            "U P 1 ",
            "U P 9223372036854775808 k",
            "U P 1e3 k",
            "U P 0x10 k",
            "U P - k",
            "U  P 1 k",
            "U P 1 two words",
            "U P 1 tab\tkey",
            "u P 1 k",
        ] {
            assert!(parse_record(bad).is_err(), "{bad:?}");
        }
        assert!(parse_record(&format!("U P 1 {}", "k".repeat(256))).is_err());
        assert!(parse_record(&format!("U P 1 {}", "k".repeat(255))).is_ok());
        assert_eq!(parse_datagram(b"U P 1 a\n\nU P 1 b"), Err(Malformed::Record(2, "unknown operation")));
        assert_eq!(parse_datagram(b"U P 1 a\nU P 1 \xff"), Err(Malformed::NotUtf8));
        assert_eq!(parse_datagram(b"\n"), Err(Malformed::Empty));
        assert_eq!(parse_datagram(&vec![b'a'; MAX_DATAGRAM + 1]), Err(Malformed::TooBig));
        assert_eq!(parse_datagram(b"U P 1 a\r\n"), Err(Malformed::Record(1, "whitespace or control character in key")));
    }
}

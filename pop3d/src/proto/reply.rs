//! POP3 status lines (RFC 1939 §3) with RFC 2449/3206 response codes in the text.

/// A status line: `+OK text` or `-ERR text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// `+OK` when true, `-ERR` otherwise.
    pub ok: bool,
    /// The text after the status indicator, without CRLF.
    pub text: String,
}

impl Reply {
    /// `+OK text`.
    pub fn ok(text: impl Into<String>) -> Self {
        Self { ok: true, text: text.into() }
    }

    /// `-ERR text`.
    pub fn err(text: impl Into<String>) -> Self {
        Self { ok: false, text: text.into() }
    }

    /// Appends the wire form; CR/LF in the text become spaces, the line is capped at
    /// 512 octets (RFC 2449 §4).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let status = if self.ok { "+OK" } else { "-ERR" };
        let text = common::net::clamp_line(&self.text, 512 - 7);
        if text.is_empty() {
            out.extend_from_slice(format!("{status}\r\n").as_bytes());
        } else {
            out.extend_from_slice(format!("{status} {text}\r\n").as_bytes());
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn wire() {
        assert_eq!(Reply::ok("2 320").to_bytes(), b"+OK 2 320\r\n");
        assert_eq!(Reply::err("No such message").to_bytes(), b"-ERR No such message\r\n");
        assert_eq!(Reply::ok("").to_bytes(), b"+OK\r\n");
        assert_eq!(Reply::err("a\r\nb").to_bytes(), b"-ERR a  b\r\n");
    }
}

//! SMTP replies (RFC 5321 §4.2) with RFC 3463 enhanced status codes in the text, and the
//! reply table of spec/mail.md §3.11.

/// A reply: a three-digit code and one or more text lines (multi-line when several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The RFC 5321 reply code, 200–599.
    pub code: u16,
    /// Text lines, each without the code and without CRLF.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self { code, lines: vec![text.into()] }
    }

    /// A multi-line reply (RFC 5321 §4.2.1: `code-text` lines, the last `code text`).
    pub fn multi(code: u16, lines: Vec<String>) -> Self {
        Self { code, lines }
    }

    /// Whether this is a failure (4xx or 5xx).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Whether this is the one-line reply `code text`.
    pub fn is(&self, code: u16, text: &str) -> bool {
        self.code == code && self.lines.len() == 1 && self.lines[0] == text
    }

    /// Appends the wire form to `out`. Each line is cut to fit 512 octets with its code
    /// and CRLF (RFC 5321 §4.5.3.1.5), and CR/LF inside text become spaces.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = common::net::clamp_line(line, 512 - 6);
            out.extend_from_slice(format!("{}{sep}{text}\r\n", self.code).as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
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

/// Named replies of spec/mail.md §3.11 that take no argument.
pub mod texts {
    /// `MAIL` before `HELO`/`EHLO`.
    pub const SEND_HELO_FIRST: (u16, &str) = (503, "5.5.1 Send HELO/EHLO first");
    /// `MAIL` inside a transaction.
    pub const SENDER_ALREADY: (u16, &str) = (503, "5.5.1 Sender already specified");
    /// Bad reverse-path.
    pub const BAD_SENDER: (u16, &str) = (501, "5.1.7 Bad sender address syntax");
    /// Unknown MAIL/RCPT parameter.
    pub const BAD_PARAM: (u16, &str) = (555, "5.5.4 Unsupported MAIL parameter");
    /// A MAIL parameter given twice or with a bad value.
    pub const PARAM_SYNTAX: (u16, &str) = (501, "5.5.4 Syntax error in MAIL parameters");
    /// MAIL parameters after HELO (they are ESMTP, RFC 5321 §4.1.1.2).
    pub const PARAMS_NEED_EHLO: (u16, &str) = (501, "5.5.4 MAIL parameters need EHLO");
    /// Unknown RCPT parameter.
    pub const BAD_RCPT_PARAM: (u16, &str) = (555, "5.5.4 Unsupported RCPT parameter");
    /// `SIZE=` over the limit.
    pub const SIZE_TOO_BIG: (u16, &str) = (552, "5.3.4 Message size exceeds fixed maximum");
    /// Null reverse-path from a host not in `nofrom`.
    pub const NULL_SENDER_REFUSED: (u16, &str) = (550, "5.7.1 Null sender not accepted from your host");
    /// Flood limit reached for the client's address.
    pub const FLOOD: (u16, &str) = (450, "4.7.1 Too many messages from your address, try again later");
    /// Sender accepted.
    pub const SENDER_OK: (u16, &str) = (250, "2.1.0 Sender ok");
    /// RCPT or DATA before MAIL.
    pub const NEED_MAIL: (u16, &str) = (503, "5.5.1 Need MAIL first");
    /// Bad forward-path.
    pub const BAD_RCPT: (u16, &str) = (501, "5.1.3 Bad recipient address syntax");
    /// Non-ASCII address without SMTPUTF8 (RFC 6531 §3.5).
    pub const NEED_SMTPUTF8: (u16, &str) = (553, "5.6.7 Non-ASCII address requires SMTPUTF8");
    /// Domain not served here.
    pub const RELAY_DENIED: (u16, &str) = (550, "5.7.1 Relaying denied");
    /// No such box.
    pub const USER_UNKNOWN: (u16, &str) = (550, "5.1.1 User unknown");
    /// Box over its limits.
    pub const MAILBOX_FULL: (u16, &str) = (452, "4.2.2 Mailbox full");
    /// The announced size is over the box's whole size limit: it can never fit (RFC 3463).
    pub const TOO_BIG_FOR_BOX: (u16, &str) = (552, "5.2.2 Message too big for the mailbox");
    /// Over `max_recipients`.
    pub const TOO_MANY_RCPTS: (u16, &str) = (452, "4.5.3 Too many recipients");
    /// Recipient accepted.
    pub const RCPT_OK: (u16, &str) = (250, "2.1.5 Recipient ok");
    /// DATA without an accepted RCPT.
    pub const NEED_RCPT: (u16, &str) = (503, "5.5.1 Need RCPT first");
    /// DATA in a transaction that BDAT began (RFC 3030 §2: not both in one).
    pub const DATA_AFTER_BDAT: (u16, &str) = (503, "5.5.1 BDAT began this message, DATA cannot end it");
    /// A `BDAT` line whose chunk size cannot be read; the connection is closed after it.
    pub const BDAT_SYNTAX: (u16, &str) = (501, "5.5.4 Syntax: BDAT chunk-size [LAST], closing connection");
    /// DATA go-ahead.
    pub const START_DATA: (u16, &str) = (354, "End data with <CR><LF>.<CR><LF>");
    /// Message over `max_message_size` or `max_message_lines`.
    pub const TOO_BIG: (u16, &str) = (552, "5.3.4 Message too big");
    /// Too many `Received:` fields.
    pub const TOO_MANY_HOPS: (u16, &str) = (554, "5.4.6 Too many hops, mail loop?");
    /// Bare CR or LF in the message (SMTP smuggling defence).
    pub const BARE_CR_LF: (u16, &str) = (554, "5.5.2 Bare CR or LF not allowed");
    /// Database or storage failure.
    pub const LOCAL_ERROR: (u16, &str) = (451, "4.3.0 Temporary local error, try again later");
    /// RSET, NOOP.
    pub const OK: (u16, &str) = (250, "2.0.0 Ok");
    /// VRFY.
    pub const CANNOT_VRFY: (u16, &str) = (252, "2.5.2 Cannot verify, but will accept and try delivery");
    /// EXPN, STARTTLS without TLS.
    pub const NOT_IMPLEMENTED: (u16, &str) = (502, "5.5.1 Command not implemented");
    /// Unknown verb.
    pub const UNRECOGNIZED: (u16, &str) = (500, "5.5.2 Command unrecognized");
    /// Command line over 512 octets.
    pub const LINE_TOO_LONG: (u16, &str) = (500, "5.5.2 Line too long");
    /// Arguments where none are allowed, or malformed ones.
    pub const BAD_ARGS: (u16, &str) = (501, "5.5.4 Syntax error in parameters or arguments");
    /// Empty or malformed HELO/EHLO argument.
    pub const BAD_HELO: (u16, &str) = (501, "5.5.4 Invalid HELO/EHLO argument");
    /// STARTTLS accepted.
    pub const READY_TLS: (u16, &str) = (220, "2.0.0 Ready to start TLS");
    /// STARTTLS on a TLS connection.
    pub const TLS_ACTIVE: (u16, &str) = (503, "5.5.1 TLS already active");
}

impl From<(u16, &str)> for Reply {
    fn from((code, text): (u16, &str)) -> Self {
        Reply::new(code, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(Reply::new(250, "2.0.0 Ok").to_bytes(), b"250 2.0.0 Ok\r\n");
        let m = Reply::multi(250, vec!["mx Hello".into(), "SIZE 10".into(), "PIPELINING".into()]);
        assert_eq!(m.to_bytes(), b"250-mx Hello\r\n250-SIZE 10\r\n250 PIPELINING\r\n");
        let long = Reply::new(550, "x".repeat(1000) + "\r\ninjected");
        let bytes = long.to_bytes();
        assert_eq!(bytes.len(), 512);
        assert!(!bytes[..510].contains(&b'\n'));
        assert!(Reply::from(texts::MAILBOX_FULL).is_error());
        assert!(!Reply::from(texts::START_DATA).is_error());
    }
}

//! SMTP command parsing (RFC 5321 §4.1.1, §4.1.2; RFC 1870 SIZE; RFC 6152 8BITMIME;
//! RFC 6531 SMTPUTF8; RFC 3207 STARTTLS). Pure: bytes in, [`Command`] out.

pub use common::address::Address;
use common::address::{AddressError, parse_path};

/// Longest accepted command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// The `BODY=` parameter (RFC 6152).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Body {
    /// `BODY=7BIT` or absent.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// Parameters of MAIL FROM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=` in octets (RFC 1870); 0 when absent.
    pub size: u64,
    /// `BODY=`.
    pub body: Body,
    /// `SMTPUTF8` given (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// Whether any parameter was given (they need EHLO, RFC 5321 §4.1.1.2).
    pub given: bool,
}

/// A forward-path of RCPT TO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardPath {
    /// A mailbox.
    Address(Address),
    /// `<Postmaster>` without a domain (RFC 5321 §4.5.1: must be accepted).
    Postmaster,
}

/// One parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `HELO domain`.
    Helo(String),
    /// `EHLO domain`.
    Ehlo(String),
    /// `MAIL FROM:<reverse-path> [params]`; `from` is `None` for the null path `<>`.
    Mail {
        /// The reverse-path.
        from: Option<Address>,
        /// ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<forward-path>`.
    Rcpt(ForwardPath),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help,
    /// `VRFY string`.
    Vrfy,
    /// `EXPN string`.
    Expn,
    /// `STARTTLS`.
    StartTls,
    /// `BDAT chunk-size [LAST]` (RFC 3030 §2): exactly `size` octets of the message
    /// follow the command line.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// Whether this is the last chunk of the message.
        last: bool,
    },
}

/// Why a line is not a valid command; each maps to one reply of spec/mail.md §3.11.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntaxError {
    /// Unknown verb (`500 5.5.2`).
    Unrecognized,
    /// Arguments where none are allowed (`501 5.5.4`).
    Arguments,
    /// Empty or malformed HELO/EHLO argument (`501 5.5.4`).
    Helo,
    /// Bad `MAIL FROM:` syntax (`501 5.1.7`).
    Sender,
    /// Bad `RCPT TO:` syntax (`501 5.1.3`).
    Recipient,
    /// Unknown or unimplemented MAIL parameter (`555 5.5.4`, RFC 5321 §4.1.1.11).
    MailParam,
    /// A known MAIL parameter given twice or with a malformed value (`501 5.5.4`;
    /// RFC 1870 §6: `SIZE` takes digits only).
    ParamSyntax,
    /// Any RCPT parameter: none are supported (`555 5.5.4`).
    RcptParam,
    /// Non-ASCII address without SMTPUTF8 (`553 5.6.7`).
    NeedsUtf8,
    /// A `BDAT` line whose chunk size cannot be read (`501 5.5.4`, then the connection
    /// closes: the octets that follow cannot be told from commands).
    Bdat,
}

/// Parses one command line (without its CRLF).
///
/// # Errors
/// [`SyntaxError`] saying which reply to give.
pub fn parse(line: &[u8]) -> Result<Command, SyntaxError> {
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let verb = &line[..verb_end];
    let args = line.get(verb_end + 1..).unwrap_or(&[]);
    let upper = verb.to_ascii_uppercase();
    let no_args = |c: Command| if args.iter().all(|&b| b == b' ') { Ok(c) } else { Err(SyntaxError::Arguments) };
    match upper.as_slice() {
        b"HELO" => helo_arg(args).map(Command::Helo),
        b"EHLO" => helo_arg(args).map(Command::Ehlo),
        b"MAIL" => parse_mail(args),
        b"RCPT" => parse_rcpt(args),
        b"DATA" => no_args(Command::Data),
        b"RSET" => no_args(Command::Rset),
        b"QUIT" => no_args(Command::Quit),
        b"STARTTLS" => no_args(Command::StartTls),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        // RFC 5321 §4.1.1.6, §4.1.1.7: both take a string.
        b"VRFY" if args.iter().any(|&b| b != b' ') => Ok(Command::Vrfy),
        b"EXPN" if args.iter().any(|&b| b != b' ') => Ok(Command::Expn),
        b"VRFY" | b"EXPN" => Err(SyntaxError::Arguments),
        b"BDAT" => parse_bdat(args),
        _ => Err(SyntaxError::Unrecognized),
    }
}

/// `chunk-size [SP end-marker]`: 1*DIGIT (at most 20, so it fits 64 bits), then
/// optionally `LAST` in any case (RFC 3030 §2, §4).
fn parse_bdat(args: &[u8]) -> Result<Command, SyntaxError> {
    let text = std::str::from_utf8(args).map_err(|_| SyntaxError::Bdat)?;
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 20 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(SyntaxError::Bdat)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(SyntaxError::Bdat),
    };
    if words.next().is_some() {
        return Err(SyntaxError::Bdat);
    }
    Ok(Command::Bdat { size, last })
}

/// The HELO/EHLO argument: the first word, printable, at most 255 octets. Accepted
/// leniently (any printable text), since peers' host names are often not valid domains.
fn helo_arg(args: &[u8]) -> Result<String, SyntaxError> {
    let text = std::str::from_utf8(args).map_err(|_| SyntaxError::Helo)?;
    let word = text.split(' ').find(|w| !w.is_empty()).ok_or(SyntaxError::Helo)?;
    if word.len() > 255 || word.chars().any(|c| c.is_control()) {
        return Err(SyntaxError::Helo);
    }
    Ok(word.to_owned())
}

/// Strips a case-insensitive `prefix` (`FROM:`/`TO:`) and the spaces after it.
fn after_keyword<'a>(args: &'a str, prefix: &str) -> Option<&'a str> {
    let head = args.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| args[prefix.len()..].trim_start_matches(' '))
}

fn map_addr_err(e: AddressError, syntax: SyntaxError) -> SyntaxError {
    match e {
        AddressError::NeedsUtf8 => SyntaxError::NeedsUtf8,
        _ => syntax,
    }
}

fn parse_mail(args: &[u8]) -> Result<Command, SyntaxError> {
    let args = std::str::from_utf8(args).map_err(|_| SyntaxError::Sender)?;
    let rest = after_keyword(args, "FROM:").ok_or(SyntaxError::Sender)?;
    // Parse with UTF-8 allowed, then insist on SMTPUTF8 if the path needed it.
    let path = parse_path(rest, true).map_err(|e| map_addr_err(e, SyntaxError::Sender))?;
    if path.bare_local.is_some() {
        return Err(SyntaxError::Sender);
    }
    let mut params = MailParams::default();
    let mut seen: Vec<String> = Vec::new();
    for p in path.rest.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = p.split_once('=').map_or((p, None), |(k, v)| (k, Some(v)));
        let key = key.to_ascii_uppercase();
        if seen.contains(&key) {
            return Err(SyntaxError::ParamSyntax);
        }
        match (key.as_str(), value) {
            ("SIZE", Some(v)) if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
                params.size = v.parse().unwrap_or(u64::MAX);
            }
            ("SIZE", _) => return Err(SyntaxError::ParamSyntax),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") => params.body = Body::SevenBit,
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("8BITMIME") => params.body = Body::EightBitMime,
            ("SMTPUTF8", None) => params.smtputf8 = true,
            ("SMTPUTF8", Some(_)) => return Err(SyntaxError::ParamSyntax),
            _ => return Err(SyntaxError::MailParam),
        }
        params.given = true;
        seen.push(key);
    }
    if path.address.as_ref().is_some_and(|a| !a.to_string().is_ascii()) && !params.smtputf8 {
        return Err(SyntaxError::NeedsUtf8);
    }
    Ok(Command::Mail { from: path.address, params })
}

fn parse_rcpt(args: &[u8]) -> Result<Command, SyntaxError> {
    let args = std::str::from_utf8(args).map_err(|_| SyntaxError::Recipient)?;
    let rest = after_keyword(args, "TO:").ok_or(SyntaxError::Recipient)?;
    let path = parse_path(rest, true).map_err(|e| map_addr_err(e, SyntaxError::Recipient))?;
    if !path.rest.trim_matches(' ').is_empty() {
        return Err(SyntaxError::RcptParam);
    }
    match (path.address, path.bare_local) {
        (Some(a), _) => Ok(Command::Rcpt(ForwardPath::Address(a))),
        (None, Some(local)) if local == "postmaster" => Ok(Command::Rcpt(ForwardPath::Postmaster)),
        _ => Err(SyntaxError::Recipient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse(s, true).unwrap()
    }

    #[test]
    fn table() {
        let ok: Vec<(&[u8], Command)> = vec![
            (b"HELO client.example", Command::Helo("client.example".into())),
            (b"ehlo [127.0.0.1]", Command::Ehlo("[127.0.0.1]".into())),
            (b"EHLO  spaced  extra", Command::Ehlo("spaced".into())),
            (b"MAIL FROM:<a@b.org>", Command::Mail { from: Some(a("a@b.org")), params: MailParams::default() }),
            (
                b"mail from: <A@B.org> SIZE=123 BODY=8BITMIME",
                Command::Mail {
                    from: Some(a("A@B.org")),
                    params: MailParams { size: 123, body: Body::EightBitMime, smtputf8: false, given: true },
                },
            ),
            (b"MAIL FROM:<>", Command::Mail { from: None, params: MailParams::default() }),
            (
                "MAIL FROM:<j\u{f6}@b.org> SMTPUTF8".as_bytes(),
                Command::Mail {
                    from: Some(a("j\u{f6}@b.org")),
                    params: MailParams { smtputf8: true, given: true, ..MailParams::default() },
                },
            ),
            (b"RCPT TO:<x@y.org>", Command::Rcpt(ForwardPath::Address(a("x@y.org")))),
            (b"RCPT TO:<@hop.one:x@y.org>", Command::Rcpt(ForwardPath::Address(a("x@y.org")))),
            (b"rcpt to:<Postmaster>", Command::Rcpt(ForwardPath::Postmaster)),
            (b"DATA", Command::Data),
            (b"RSET", Command::Rset),
            (b"NOOP anything goes", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"HELP MAIL", Command::Help),
            (b"VRFY bob", Command::Vrfy),
            (b"EXPN list", Command::Expn),
            (b"rcpt to:<Bob@Example.ORG>", Command::Rcpt(ForwardPath::Address(a("Bob@Example.ORG")))),
            (b"StartTLS", Command::StartTls),
            (b"BDAT 1000", Command::Bdat { size: 1000, last: false }),
            (b"bdat 0 last", Command::Bdat { size: 0, last: true }),
            (b"BDAT  42  LAST", Command::Bdat { size: 42, last: true }),
        ];
        for (line, want) in ok {
            assert_eq!(parse(line), Ok(want), "{}", String::from_utf8_lossy(line));
        }
        let bad: Vec<(&[u8], SyntaxError)> = vec![
            (b"", SyntaxError::Unrecognized),
            (b"BEER", SyntaxError::Unrecognized),
            (b"\0\xff\xfe", SyntaxError::Unrecognized),
            (b"HELO", SyntaxError::Helo),
            (b"EHLO   ", SyntaxError::Helo),
            (b"HELO a\x01b", SyntaxError::Helo),
            (b"DATA now", SyntaxError::Arguments),
            (b"QUIT please", SyntaxError::Arguments),
            (b"MAIL", SyntaxError::Sender),
            (b"MAIL TO:<a@b>", SyntaxError::Sender),
            (b"MAIL FROM:a@b.org", SyntaxError::Sender),
            (b"MAIL FROM:<a@b.org", SyntaxError::Sender),
            (b"MAIL FROM:<postmaster>", SyntaxError::Sender),
            (b"MAIL FROM:<a@b.org> SIZE=abc", SyntaxError::ParamSyntax),
            (b"MAIL FROM:<a@b.org> SIZE=", SyntaxError::ParamSyntax),
            (b"MAIL FROM:<a@b.org> SIZE=-1", SyntaxError::ParamSyntax),
            (b"MAIL FROM:<a@b.org> SIZE=10 size=20", SyntaxError::ParamSyntax),
            (b"MAIL FROM:<a@b.org> BODY=7BIT BODY=8BITMIME", SyntaxError::ParamSyntax),
            (b"VRFY", SyntaxError::Arguments),
            (b"BDAT", SyntaxError::Bdat),
            (b"BDAT -1", SyntaxError::Bdat),
            (b"BDAT 1 MORE", SyntaxError::Bdat),
            (b"BDAT 1 LAST x", SyntaxError::Bdat),
            (b"BDAT 123456789012345678901", SyntaxError::Bdat),
            (b"EXPN  ", SyntaxError::Arguments),
            (b"MAIL FROM:<a@b.org> BODY=BINARYMIME", SyntaxError::MailParam),
            (b"MAIL FROM:<a@b.org> RET=HDRS", SyntaxError::MailParam),
            (b"MAIL FROM:<a@b.org> SMTPUTF8=yes", SyntaxError::ParamSyntax),
            ("MAIL FROM:<j\u{f6}@b.org>".as_bytes(), SyntaxError::NeedsUtf8),
            (b"MAIL FROM:<a@b.org>\xff", SyntaxError::Sender),
            (b"RCPT", SyntaxError::Recipient),
            (b"RCPT TO:<>", SyntaxError::Recipient),
            (b"RCPT TO:<bob>", SyntaxError::Recipient),
            (b"RCPT TO:<x@y.org> NOTIFY=NEVER", SyntaxError::RcptParam),
            (b"RCPT TO:<x@@y.org>", SyntaxError::Recipient),
        ];
        for (line, want) in bad {
            assert_eq!(parse(line), Err(want), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn size_overflow_saturates() {
        let Ok(Command::Mail { params, .. }) = parse(b"MAIL FROM:<a@b.org> SIZE=99999999999999999999") else {
            panic!()
        };
        assert_eq!(params.size, u64::MAX);
    }
}

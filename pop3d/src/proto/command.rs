//! POP3 command parsing: RFC 1939 (USER, PASS, APOP, STAT, LIST, RETR, DELE, NOOP, RSET,
//! QUIT, TOP, UIDL), RFC 2449 (CAPA), RFC 2595 (STLS), RFC 5034 (AUTH). Pure.

/// Longest command line, CRLF included (RFC 2449 §4: 255 octets).
pub const MAX_COMMAND_LINE: usize = 255;
/// Longest SASL response line (RFC 5034 §4 lifts the command limit for them).
pub const MAX_SASL_LINE: usize = 4096;

/// One command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `USER name`.
    User(String),
    /// `PASS secret` (the rest of the line: passwords may hold spaces).
    Pass(String),
    /// `APOP name digest`: refused, passwords are one-way hashes.
    Apop,
    /// `AUTH [mechanism [initial-response]]`.
    Auth {
        /// The SASL mechanism, upper-cased; `None` asks for the list.
        mechanism: Option<String>,
        /// The initial response (base64, or `=` for an empty one).
        initial: Option<String>,
    },
    /// `CAPA`.
    Capa,
    /// `STLS`.
    Stls,
    /// `STAT`.
    Stat,
    /// `LIST [msg]`.
    List(Option<u32>),
    /// `RETR msg`.
    Retr(u32),
    /// `DELE msg`.
    Dele(u32),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// `TOP msg n`.
    Top(u32, u32),
    /// `UIDL [msg]`.
    Uidl(Option<u32>),
}

/// Why a line is not a valid command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyntaxError {
    /// Unknown keyword.
    Unknown,
    /// Known keyword, wrong or missing arguments.
    Arguments,
}

fn number(s: &str) -> Result<u32, SyntaxError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyntaxError::Arguments);
    }
    s.parse().map_err(|_| SyntaxError::Arguments)
}

/// Parses one line (without CRLF). Keywords are case-insensitive (RFC 1939 §3).
///
/// # Errors
/// [`SyntaxError`].
pub fn parse(line: &[u8]) -> Result<Command, SyntaxError> {
    let text = std::str::from_utf8(line).map_err(|_| SyntaxError::Unknown)?;
    let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let none = |c: Command| if args.is_empty() { Ok(c) } else { Err(SyntaxError::Arguments) };
    let one_num = || match args.as_slice() {
        [n] => number(n),
        _ => Err(SyntaxError::Arguments),
    };
    let opt_num = || match args.as_slice() {
        [] => Ok(None),
        [n] => number(n).map(Some),
        _ => Err(SyntaxError::Arguments),
    };
    match keyword.to_ascii_uppercase().as_str() {
        "USER" => match args.as_slice() {
            [name] if name.len() <= 255 => Ok(Command::User((*name).to_owned())),
            _ => Err(SyntaxError::Arguments),
        },
        "PASS" if !rest.is_empty() => Ok(Command::Pass(rest.to_owned())),
        "PASS" => Err(SyntaxError::Arguments),
        "APOP" => Ok(Command::Apop),
        "AUTH" => match args.as_slice() {
            [] => Ok(Command::Auth { mechanism: None, initial: None }),
            [m] => Ok(Command::Auth { mechanism: Some(m.to_ascii_uppercase()), initial: None }),
            [m, i] => Ok(Command::Auth { mechanism: Some(m.to_ascii_uppercase()), initial: Some((*i).to_owned()) }),
            _ => Err(SyntaxError::Arguments),
        },
        "CAPA" => none(Command::Capa),
        "STLS" => none(Command::Stls),
        "STAT" => none(Command::Stat),
        "LIST" => opt_num().map(Command::List),
        "RETR" => one_num().map(Command::Retr),
        "DELE" => one_num().map(Command::Dele),
        "NOOP" => none(Command::Noop),
        "RSET" => none(Command::Rset),
        "QUIT" => none(Command::Quit),
        "TOP" => match args.as_slice() {
            [m, n] => Ok(Command::Top(number(m)?, number(n)?)),
            _ => Err(SyntaxError::Arguments),
        },
        "UIDL" => opt_num().map(Command::Uidl),
        _ => Err(SyntaxError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: Vec<(&[u8], Command)> = vec![
            (b"USER bob@example.org", Command::User("bob@example.org".into())),
            (b"user bob", Command::User("bob".into())),
            (b"PASS secret with spaces", Command::Pass("secret with spaces".into())),
            (b"APOP bob 0123", Command::Apop),
            (b"AUTH", Command::Auth { mechanism: None, initial: None }),
            (b"AUTH plain", Command::Auth { mechanism: Some("PLAIN".into()), initial: None }),
            (
                b"AUTH PLAIN AGJvYgBwdw==",
                Command::Auth { mechanism: Some("PLAIN".into()), initial: Some("AGJvYgBwdw==".into()) },
            ),
            (b"CAPA", Command::Capa),
            (b"stls", Command::Stls),
            (b"STAT", Command::Stat),
            (b"LIST", Command::List(None)),
            (b"LIST 2", Command::List(Some(2))),
            (b"RETR 1", Command::Retr(1)),
            (b"DELE 4294967295", Command::Dele(u32::MAX)),
            (b"NOOP", Command::Noop),
            (b"RSET", Command::Rset),
            (b"QUIT", Command::Quit),
            (b"TOP 1 0", Command::Top(1, 0)),
            (b"UIDL", Command::Uidl(None)),
            (b"UIDL 3", Command::Uidl(Some(3))),
        ];
        for (line, want) in ok {
            assert_eq!(parse(line), Ok(want), "{}", String::from_utf8_lossy(line));
        }
        let bad: Vec<(&[u8], SyntaxError)> = vec![
            (b"", SyntaxError::Unknown),
            (b"LAST", SyntaxError::Unknown),
            (b"\xff\xfe", SyntaxError::Unknown),
            (b"USER", SyntaxError::Arguments),
            (b"USER a b", SyntaxError::Arguments),
            (b"PASS", SyntaxError::Arguments),
            (b"STAT 1", SyntaxError::Arguments),
            (b"RETR", SyntaxError::Arguments),
            (b"RETR x", SyntaxError::Arguments),
            (b"RETR -1", SyntaxError::Arguments),
            (b"RETR 4294967296", SyntaxError::Arguments),
            (b"RETR 99999999999999999999", SyntaxError::Arguments),
            (b"LIST 1 2", SyntaxError::Arguments),
            (b"TOP 1", SyntaxError::Arguments),
            (b"TOP 1 x", SyntaxError::Arguments),
            (b"AUTH PLAIN a b", SyntaxError::Arguments),
            (b"QUIT now", SyntaxError::Arguments),
        ];
        for (line, want) in bad {
            assert_eq!(parse(line), Err(want), "{}", String::from_utf8_lossy(line));
        }
    }
}

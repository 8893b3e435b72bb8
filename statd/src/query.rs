//! The query protocol of the stream socket (spec/mail.md §5.2 "Query socket"): one
//! request line, response lines, a line with a single `.` at the end. Pure: parsing
//! and answering against a [`State`].

use common::stats::Flag;

use crate::record::{Op, Record, valid_key};
use crate::state::State;

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 1024;

/// A parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `LIST <pattern>`.
    List(String),
    /// `RESET <pattern>`.
    Reset(String),
    /// `DELETE <pattern>`.
    Delete(String),
    /// `DELETE-VOLATILE`.
    DeleteVolatile,
    /// `UPDATE <key> <delta> [P|V]`.
    Update(String, i64, Flag),
    /// `SET <key> <value> [P|V]`.
    Set(String, i64, Flag),
}

/// Parses a request line (without its line end).
///
/// # Errors
/// The text for the `-ERR` reply.
pub fn parse(line: &str) -> Result<Request, String> {
    let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
    let key = |k: &str| valid_key(k).map(|()| k.to_owned()).map_err(str::to_owned);
    let number = |n: &str| n.parse::<i64>().map_err(|_| format!("not a signed 64-bit number: {n}"));
    let flag = |f: Option<&&str>| match f {
        None => Ok(Flag::Persistent),
        Some(f) => Flag::from_letter(f).ok_or_else(|| "flag must be P or V".to_owned()),
    };
    match words.as_slice() {
        [verb, rest @ ..] => match (verb.to_ascii_uppercase().as_str(), rest) {
            ("LIST", []) => Ok(Request::List("*".into())),
            ("LIST", [p]) => Ok(Request::List(key(p)?)),
            ("RESET", [p]) => Ok(Request::Reset(key(p)?)),
            ("DELETE", [p]) => Ok(Request::Delete(key(p)?)),
            ("DELETE-VOLATILE", []) => Ok(Request::DeleteVolatile),
            ("UPDATE", [k, v, f @ ..]) if f.len() <= 1 => Ok(Request::Update(key(k)?, number(v)?, flag(f.first())?)),
            ("SET", [k, v, f @ ..]) if f.len() <= 1 => Ok(Request::Set(key(k)?, number(v)?, flag(f.first())?)),
            ("LIST" | "RESET" | "DELETE" | "DELETE-VOLATILE" | "UPDATE" | "SET", _) => {
                Err(format!("wrong arguments for {verb}"))
            }
            _ => Err(format!("unknown request {verb}")),
        },
        [] => Err("empty request".into()),
    }
}

/// ISO 8601 in UTC to the second: `YYYY-MM-DDTHH:MM:SSZ`.
const SECONDS: time::format_description::well_known::Iso8601<
    {
        time::format_description::well_known::iso8601::Config::DEFAULT
            .set_time_precision(time::format_description::well_known::iso8601::TimePrecision::Second {
                decimal_digits: None,
            })
            .encode()
    },
> = time::format_description::well_known::Iso8601;

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (the epoch for a time out of range).
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&SECONDS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Answers `req` at time `now`, changing `state` for the writing requests; the answer
/// ends with the `.` line.
pub fn answer(req: Request, state: &mut State, now: i64) -> String {
    let one = |op, flag, value, key: String| vec![Record { op, flag, value, key }];
    let mut out = match req {
        Request::List(pattern) => {
            let mut out = String::new();
            for (k, e) in state.table.list(&pattern) {
                out.push_str(&format!(
                    "{} {} {} {} {k}\n",
                    e.flag.letter(),
                    format_time(e.created),
                    format_time(e.modified),
                    e.value
                ));
            }
            out
        }
        Request::Reset(p) => commit(state, &one(Op::Reset, Flag::Persistent, 0, p), now, None),
        Request::Delete(p) => commit(state, &one(Op::Delete, Flag::Persistent, 0, p), now, None),
        Request::DeleteVolatile => {
            let records = state.table.volatile_deletions();
            if records.is_empty() { "+OK 0\n".into() } else { commit(state, &records, now, None) }
        }
        Request::Update(k, v, f) => commit(state, &one(Op::Update, f, v, k.clone()), now, Some(&k)),
        Request::Set(k, v, f) => commit(state, &one(Op::Set, f, v, k.clone()), now, Some(&k)),
    };
    out.push_str(".\n");
    out
}

/// Commits and says `+OK <keys touched>`, or `+OK <value of key>` when `key` is given.
fn commit(state: &mut State, records: &[Record], now: i64, key: Option<&str>) -> String {
    match state.commit(records, now, true) {
        Ok(n) => {
            state.flush();
            match key.and_then(|k| state.table.get(k)) {
                Some(e) => format!("+OK {}\n", e.value),
                None => format!("+OK {n}\n"),
            }
        }
        Err(e) => format!("-ERR {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse("LIST"), Ok(Request::List("*".into())));
        assert_eq!(parse("list mmsmtpd|*"), Ok(Request::List("mmsmtpd|*".into())));
        assert_eq!(parse("UPDATE k -5 V"), Ok(Request::Update("k".into(), -5, Flag::Volatile)));
        assert_eq!(parse("SET k 5"), Ok(Request::Set("k".into(), 5, Flag::Persistent)));
        assert_eq!(parse("DELETE-VOLATILE"), Ok(Request::DeleteVolatile));
        assert!(parse("").is_err());
        assert!(parse("FROB").unwrap_err().contains("unknown"));
        assert!(parse("SET k five").is_err());
        assert!(parse("SET k 5 X").is_err());
        assert!(parse("RESET").is_err());
        assert!(parse(&format!("LIST {}", "k".repeat(300))).is_err());
    }

    #[test]
    fn times_are_utc_iso() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}

//! Server frames (spec/tmtp.md §4, §6): the direct replies (`tmtprev`, `registered`,
//! `info`, `ack`, `quit`, `ohi`) and the stored messages that go through the per-node
//! queues, which carry `headsum` (§4.3): CRC-32C of the frame as it would be without
//! `headsum`, i.e. the four length digits and the canonical JSON of the other fields.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::frame::prefixed;
use super::json::encode;

static CRC32C: LazyLock<crc::Crc<u32>> = LazyLock::new(|| crc::Crc::<u32>::new(&crc::CRC_32_ISCSI));

/// A header as an ordered-by-encoding map of fields.
pub type Fields = Map<String, Value>;

/// ISO 8601 in UTC to the millisecond, always three fraction digits.
const MILLIS: time::format_description::well_known::Iso8601<
    {
        time::format_description::well_known::iso8601::Config::DEFAULT
            .set_time_precision(time::format_description::well_known::iso8601::TimePrecision::Second {
                decimal_digits: std::num::NonZeroU8::new(3),
            })
            .encode()
    },
> = time::format_description::well_known::Iso8601;

/// `YYYY-MM-DDThh:mm:ss.mmmZ` (UTC, always three fraction digits) for Unix milliseconds,
/// as mnm writes `posted` (the epoch for a time out of range).
pub fn posted(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&MILLIS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// A frame header without data: four hex digits and canonical JSON.
pub fn frame(fields: &Fields) -> Vec<u8> {
    // Our own headers stay far below 64 KiB except with absurd client strings; those
    // are cut to an error frame rather than a broken one.
    prefixed(&encode(&Value::Object(fields.clone())))
        .unwrap_or_else(|_| b"0028{\"error\":\"header too long\",\"op\":\"quit\"}".to_vec())
}

/// The CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// A stored (queued) message header: `fields` plus `headsum`.
pub fn with_headsum(mut fields: Fields) -> Vec<u8> {
    fields.remove("headsum");
    let sum = crc32c(&frame(&fields));
    fields.insert("headsum".into(), Value::from(sum));
    frame(&fields)
}

/// Whether a received header's `headsum` (if any) is the CRC-32C of the frame as it
/// would be without it (spec §4.3); what clients and the tests check.
pub fn headsum_ok(head: &Fields) -> bool {
    let Some(sum) = head.get("headsum") else { return true };
    let mut without = head.clone();
    without.remove("headsum");
    sum.as_u64() == Some(u64::from(crc32c(&frame(&without))))
}

/// Builds a [`Fields`] from pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Fields {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// `{"error":<text>,"op":"quit"}`.
pub fn quit(text: &str) -> Vec<u8> {
    frame(&fields([("error", text.into()), ("op", "quit".into())]))
}

/// `{"id":..,"op":"ack"}` plus `error`, or `msgid` and `posted` for a stored message.
pub fn ack(id: &str, error: Option<&str>, stored: Option<(&str, &str)>) -> Vec<u8> {
    let mut f = fields([("id", id.into()), ("op", "ack".into())]);
    if let Some(e) = error {
        f.insert("error".into(), e.into());
    }
    if let Some((msgid, posted)) = stored {
        f.insert("msgid".into(), msgid.into());
        f.insert("posted".into(), posted.into());
    }
    frame(&f)
}

/// `{"info":"login ok","op":"info"}`, with `ohi` when someone wants this user told.
pub fn info(ohi: &[String]) -> Vec<u8> {
    let mut f = fields([("info", "login ok".into()), ("op", "info".into())]);
    if !ohi.is_empty() {
        f.insert("ohi".into(), ohi.iter().map(|u| Value::from(u.as_str())).collect());
    }
    frame(&f)
}

/// `{"from":uid,"op":"ohi","status":1|2}`.
pub fn ohi(from: &str, online: bool) -> Vec<u8> {
    frame(&fields([("from", from.into()), ("op", "ohi".into()), ("status", (if online { 1 } else { 2 }).into())]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every server frame of mnm's own passing run (spec/mnm-verify-transcript.jsonl):
    /// re-encoding its header gives the same bytes, and recomputing `headsum` gives mnm's.
    #[test]
    fn transcript_frames_reencode_byte_for_byte_with_the_same_headsum() {
        // A copy of spec/mnm-verify-transcript.jsonl (frames of one passing mnm run).
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mnm-verify-transcript.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        let (mut frames, mut sums) = (0, 0);
        for line in text.lines() {
            let rec: Value = serde_json::from_str(line).unwrap();
            if rec["dir"] != "S->C" {
                continue;
            }
            let Some(mut rest) = rec["text"].as_str().map(str::as_bytes) else { continue };
            while rest.len() >= 4 {
                let h = usize::from_str_radix(std::str::from_utf8(&rest[..4]).unwrap(), 16).unwrap();
                let header = &rest[4..4 + h];
                let v: Value = serde_json::from_slice(header).unwrap();
                assert_eq!(encode(&v), header, "canonical JSON of {}", String::from_utf8_lossy(header));
                let Value::Object(map) = v else { panic!() };
                if let Some(sum) = map.get("headsum").and_then(Value::as_u64) {
                    assert_eq!(with_headsum(map.clone()), &rest[..4 + h]);
                    let mut without = map.clone();
                    without.remove("headsum");
                    assert_eq!(u64::from(crc32c(&frame(&without))), sum);
                    sums += 1;
                }
                let datalen = map.get("datalen").and_then(Value::as_u64).unwrap_or(0) as usize;
                rest = &rest[4 + h + datalen..];
                frames += 1;
            }
        }
        assert!(frames > 100 && sums > 40, "{frames} frames, {sums} headsums");
    }

    #[test]
    fn direct_replies() {
        assert_eq!(quit("logout ok"), b"0021{\"error\":\"logout ok\",\"op\":\"quit\"}");
        assert_eq!(info(&[]), b"001f{\"info\":\"login ok\",\"op\":\"info\"}");
        assert_eq!(ohi("u1", false), b"0023{\"from\":\"u1\",\"op\":\"ohi\",\"status\":2}");
        assert_eq!(
            ack("zyx", None, Some(("18ea", "2026-11-21T19:29:03.153Z"))),
            b"004a{\"id\":\"zyx\",\"msgid\":\"18ea\",\"op\":\"ack\",\"posted\":\"2026-11-21T19:29:03.153Z\"}"
        );
        assert_eq!(posted(1_795_000_000_007), "2026-11-18T11:06:40.007Z");
    }
}

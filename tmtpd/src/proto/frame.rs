//! Frame boundaries (spec/tmtp.md §1.2): four hex digits giving the header length H
//! (8..=65535), H bytes of JSON header, then `datalen` bytes of data. Pure: the
//! connection loop hands in what it has buffered and learns what to do next.

use super::Quit;
use super::header::{Header, decode};

/// Shortest possible header, `{"op":1}`.
pub const MIN_HEADER: usize = 8;
/// Bytes needed before the length is looked at (spec/tmtp.md §1.2).
pub const MIN_FRAME: usize = 4 + MIN_HEADER;

/// What the buffered bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough yet: the buffer must hold at least this many bytes.
    Need(usize),
    /// A complete header occupying the first `len` bytes; its data follows.
    Header {
        /// The header.
        header: Box<Header>,
        /// Bytes consumed (4 + H).
        len: usize,
    },
}

/// The header length from four hex digits; anything else counts as 0 (mnm's strict
/// unsigned parse).
fn header_len(digits: &[u8]) -> usize {
    let mut n = 0usize;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return 0,
        };
        n = n * 16 + usize::from(v);
    }
    n
}

/// Looks for a frame header at the start of `buf`.
///
/// # Errors
/// [`Quit::InvalidHeaderLength`] or [`Quit::InvalidHeader`].
pub fn parse(buf: &[u8]) -> Result<Parsed, Quit> {
    if buf.len() < MIN_FRAME {
        return Ok(Parsed::Need(MIN_FRAME));
    }
    let h = header_len(&buf[..4]);
    if h < MIN_HEADER {
        return Err(Quit::InvalidHeaderLength);
    }
    if buf.len() < 4 + h {
        return Ok(Parsed::Need(4 + h));
    }
    Ok(Parsed::Header { header: Box::new(decode(&buf[4..4 + h])?), len: 4 + h })
}

/// Prefixes a header with its length as four lowercase hex digits.
///
/// # Errors
/// A header over 65535 bytes cannot be framed.
pub fn prefixed(json: &[u8]) -> Result<Vec<u8>, Quit> {
    if json.len() > 0xffff {
        return Err(Quit::InvalidHeader);
    }
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(format!("{:04x}", json.len()).as_bytes());
    out.extend_from_slice(json);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::header::Op;

    #[test]
    fn frames_are_found_whole_split_and_pipelined() {
        let one = b"0011{\"Id\":\"1\",\"Op\":0}";
        let two = b"004a{\"Node\":\"Q%P%W6BPSQWD3XQBJRMHRN55MQ7KLP4Z8GTDRT1M\",\"Op\":2,\"Uid\":\"u100002\"}";
        let mut stream = one.to_vec();
        stream.extend_from_slice(two);
        // Byte by byte: nothing until the whole header is there.
        for cut in 0..one.len() {
            assert!(matches!(parse(&stream[..cut]), Ok(Parsed::Need(_))), "cut {cut}");
        }
        let Ok(Parsed::Header { header, len }) = parse(&stream) else { panic!() };
        assert_eq!((header.op, len), (Op::TmtpRev, one.len()));
        let Ok(Parsed::Header { header, len }) = parse(&stream[len..]) else { panic!() };
        assert_eq!((header.op, header.uid.as_deref(), len), (Op::Login, Some("u100002"), two.len()));
        assert_eq!(parse(b"0011{\"Id\":\"1\""), Ok(Parsed::Need(0x15)));
    }

    #[test]
    fn bad_lengths_and_headers() {
        assert_eq!(parse(b"00z1{\"Op\":3, \"Uid\":\"noone\"}"), Err(Quit::InvalidHeaderLength));
        assert_eq!(parse(b"0007{\"op\":1}xx"), Err(Quit::InvalidHeaderLength));
        assert_eq!(parse(b"+011{\"op\":11}xxxx"), Err(Quit::InvalidHeaderLength));
        assert_eq!(parse(b"0x11{\"op\":11}xxxx"), Err(Quit::InvalidHeaderLength));
        assert_eq!(parse(b"000a{\"Op\":12f3"), Err(Quit::InvalidHeader));
        assert_eq!(parse(b"000A{\"Op\":12f3"), Err(Quit::InvalidHeader));
        assert_eq!(prefixed(b"{\"op\":\"x\"}").unwrap(), b"000a{\"op\":\"x\"}");
        assert!(prefixed(&vec![b' '; 65536]).is_err());
    }
}

//! Message transfer for RETR and TOP (RFC 1939 §3, §7): byte-stuffing of lines starting
//! with `.`, the terminating `.` line, and where TOP cuts a message. Incremental, so a
//! message is sent in chunks without a second whole copy in memory.

/// Byte-stuffs a multi-line response body fed in any number of pieces.
#[derive(Debug)]
pub struct DotStuffer {
    line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self { line_start: true }
    }
}

impl DotStuffer {
    /// A stuffer at the start of the body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `input` to `out`, doubling a `.` that starts a line.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for (i, &b) in input.iter().enumerate() {
            if self.line_start && b == b'.' {
                out.extend_from_slice(&input[start..i]);
                out.push(b'.');
                start = i;
            }
            self.line_start = b == b'\n';
        }
        out.extend_from_slice(&input[start..]);
    }

    /// Ends the body: a CRLF if the body did not end with one, then `.` CRLF.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// How many octets of `body` TOP sends with `lines` body lines: the header section, the
/// blank line after it, then at most `lines` lines (RFC 1939 §7). A message without a
/// blank line is all header and is sent whole.
pub fn top_len(body: &[u8], lines: u32) -> usize {
    let mut pos = 0;
    // The header section: up to and including the first empty line.
    loop {
        let Some(nl) = body[pos..].iter().position(|&b| b == b'\n') else {
            return body.len();
        };
        let line = &body[pos..pos + nl + 1];
        pos += nl + 1;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    for _ in 0..lines {
        match body[pos..].iter().position(|&b| b == b'\n') {
            Some(nl) => pos += nl + 1,
            None => return body.len(),
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = DotStuffer::new();
        for p in parts {
            s.push(p, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn stuffing_at_every_split() {
        let msg: &[u8] = b".starts\r\nmid.dle\r\n..two\r\n.\r\nend";
        let want: &[u8] = b"..starts\r\nmid.dle\r\n...two\r\n..\r\nend\r\n.\r\n";
        assert_eq!(stuffed(&[msg]), want);
        for i in 0..=msg.len() {
            assert_eq!(stuffed(&[&msg[..i], &msg[i..]]), want, "split {i}");
        }
        assert_eq!(stuffed(&[b""]), b".\r\n");
        assert_eq!(stuffed(&[b"a\r\n"]), b"a\r\n.\r\n");
        // Trace part then body part: the body's first line is a line start.
        assert_eq!(stuffed(&[b"Received: x\r\n", b".body\r\n"]), b"Received: x\r\n..body\r\n.\r\n");
    }

    #[test]
    fn top_cuts_after_header_and_n_lines() {
        let m = b"Subject: a\r\nFrom: b\r\n\r\none\r\ntwo\r\nthree\r\n";
        assert_eq!(&m[..top_len(m, 0)], b"Subject: a\r\nFrom: b\r\n\r\n");
        assert_eq!(&m[..top_len(m, 2)], b"Subject: a\r\nFrom: b\r\n\r\none\r\ntwo\r\n");
        assert_eq!(top_len(m, 99), m.len());
        assert_eq!(top_len(b"no blank line\r\nat all\r\n", 0), 23);
        assert_eq!(&b"\r\nbody\r\n"[..top_len(b"\r\nbody\r\n", 0)], b"\r\n");
        assert_eq!(top_len(b"", 5), 0);
        assert_eq!(top_len(b"H: x\r\n\r\nno final newline", 3), 24);
    }
}

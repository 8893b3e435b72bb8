//! Bounded line reading for line-based protocols (SMTP, POP3): a peer can never make us
//! buffer more than `max` bytes of one line (style.md P3).

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read by [`read_line`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its terminator (`CRLF`, or a bare `LF` accepted leniently).
    Complete(Vec<u8>),
    /// The line exceeded `max` bytes; it was read up to its terminator and discarded.
    TooLong,
}

/// Reads one line of at most `max` bytes, terminator included.
///
/// Returns `Ok(None)` at end of input (a partial last line is dropped: the peer left).
///
/// # Errors
/// I/O errors of the underlying reader.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(None);
        }
        let (chunk, done) = match memchr_lf(buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let n = chunk.len();
        if !too_long {
            if line.len() + n > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        r.consume(n);
        if done {
            if too_long {
                return Ok(Some(Line::TooLong));
            }
            line.pop(); // LF
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(Line::Complete(line)));
        }
    }
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn lines(input: &[u8], max: usize, cap: usize) -> Vec<Option<Line>> {
        let mut r = BufReader::with_capacity(cap, input);
        let mut out = Vec::new();
        loop {
            let l = read_line(&mut r, max).await.unwrap();
            let end = l.is_none();
            out.push(l);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_at_every_buffer_size() {
        let input = b"HELO x\r\nNOOP\nQUIT\r\npartial";
        for cap in 1..input.len() + 1 {
            assert_eq!(
                lines(input, 512, cap).await,
                vec![
                    Some(Line::Complete(b"HELO x".to_vec())),
                    Some(Line::Complete(b"NOOP".to_vec())),
                    Some(Line::Complete(b"QUIT".to_vec())),
                    None
                ],
                "buffer capacity {cap}"
            );
        }
    }

    #[tokio::test]
    async fn too_long_is_discarded_and_reading_goes_on() {
        let mut input = vec![b'A'; 600];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        for cap in [1, 7, 64, 8192] {
            let got = lines(&input, 512, cap).await;
            assert_eq!(got, vec![Some(Line::TooLong), Some(Line::Complete(b"NOOP".to_vec())), None]);
        }
        // exactly max bytes including CRLF is fine
        let mut ok = vec![b'B'; 510];
        ok.extend_from_slice(b"\r\n");
        assert_eq!(lines(&ok, 512, 16).await[0], Some(Line::Complete(vec![b'B'; 510])));
    }
}

//! The DATA receiver (RFC 5321 §4.1.1.4, §4.5.2): finds the end of data, removes
//! dot-stuffing, and enforces the message limits, fed with whatever chunks the network
//! delivers. Pure and incremental: feeding the input in any split gives the same result.
//!
//! Smuggling defence (spec/mail.md §3.3): the end of data is only `CRLF . CRLF` where
//! both line ends are real CRLF pairs (the line opened by DATA counts as after a CRLF).
//! A bare LF or bare CR anywhere marks the message bad: it is read to its real end and
//! then refused, so nothing a client hides behind `<LF>.<LF>` or `<CR><LF>.<LF>` is ever
//! taken as a new command or stored.

/// Limits for one message.
#[derive(Clone, Copy, Debug)]
pub struct DataLimits {
    /// Maximum octets after dot-unstuffing, CRLFs included.
    pub max_size: usize,
    /// Maximum number of lines.
    pub max_lines: usize,
}

/// What [`DataReceiver`] found once the end of data was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The message, CRLF line ends, unstuffed; empty when `too_big`.
    pub message: Vec<u8>,
    /// Size or line limit exceeded (the rest was read and discarded).
    pub too_big: bool,
    /// A bare CR or LF was seen.
    pub bare_line_end: bool,
}

/// Octets of buffer a receiver keeps once its held octets went to the spool: a message
/// that stayed in memory up to `[smtpd] spool_memory`'s share grew its buffer to a MiB
/// or more, and a hundred such sessions spooling the rest must not each keep that.
pub const HELD_KEPT: usize = 128 * 1024;

/// Incremental DATA parser.
#[derive(Debug)]
pub struct DataReceiver {
    limits: DataLimits,
    message: Vec<u8>,
    /// Octets of the message so far, including those already taken out
    /// ([`clear_held`](Self::clear_held)).
    size: usize,
    lines: usize,
    too_big: bool,
    bare: bool,
    /// At the start of a line (after a real CRLF, or at the start of data).
    line_start: bool,
    /// The current line began with a '.' that was removed.
    dot_line: bool,
    /// Octets of the current line after its leading dot.
    line_len: usize,
    /// A CR was seen and its successor is not yet known.
    pending_cr: bool,
}

impl DataReceiver {
    /// A receiver for a message right after the `354` reply.
    pub fn new(limits: DataLimits) -> Self {
        Self {
            limits,
            message: Vec::new(),
            size: 0,
            lines: 0,
            too_big: false,
            bare: false,
            line_start: true,
            dot_line: false,
            line_len: 0,
            pending_cr: false,
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.too_big {
            return;
        }
        if self.size + bytes.len() > self.limits.max_size {
            self.too_big = true;
            self.message = Vec::new();
            return;
        }
        self.size += bytes.len();
        self.message.extend_from_slice(bytes);
    }

    /// The octets held in memory (for the connection to spool them, issue 16).
    pub fn held(&self) -> &[u8] {
        &self.message
    }

    /// Forgets the octets held (once spooled), keeping up to [`HELD_KEPT`] octets of
    /// buffer for what follows; the message goes on after them, and
    /// [`Received::message`] holds only what came after.
    pub fn clear_held(&mut self) {
        self.message.clear();
        self.message.shrink_to(HELD_KEPT);
    }

    /// Consumes input. Returns how many bytes of `input` belong to the message (all of
    /// them unless the end of data was found) and, once the end was found, the result.
    /// Bytes after the end marker are not consumed: they are the next commands.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Received>) {
        let mut i = 0;
        while i < input.len() {
            // Inside a line with no CR pending, everything up to the next CR or LF is
            // plain message text: taken as one run.
            if !self.pending_cr && !self.line_start {
                let rest = &input[i..];
                let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                if run > 0 {
                    self.emit(&rest[..run]);
                    self.line_len += run;
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    if self.dot_line && self.line_len == 0 {
                        return (i, Some(self.finish()));
                    }
                    self.emit(b"\r\n");
                    self.lines += 1;
                    if self.lines > self.limits.max_lines && !self.too_big {
                        self.too_big = true;
                        self.message = Vec::new();
                    }
                    self.line_start = true;
                    self.dot_line = false;
                    self.line_len = 0;
                    continue;
                }
                // A CR not followed by LF.
                self.bare = true;
                self.emit(b"\r");
                self.line_len += 1;
            }
            if self.line_start {
                self.line_start = false;
                if b == b'.' {
                    self.dot_line = true;
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    // A bare LF does not end a line: nothing after it can be an end marker
                    // until a real CRLF comes.
                    self.bare = true;
                    self.emit(b"\n");
                    self.line_len += 1;
                }
                _ => {
                    self.emit(&[b]);
                    self.line_len += 1;
                }
            }
        }
        (input.len(), None)
    }

    fn finish(&mut self) -> Received {
        Received { message: std::mem::take(&mut self.message), too_big: self.too_big, bare_line_end: self.bare }
    }
}

/// BDAT message assembly (RFC 3030 §2): the chunks are the message octets as they are,
/// with no end marker and no dot-stuffing. The same limits and the same refusal of bare
/// CR or LF as DATA apply, so a message is judged alike whichever way it came; a line
/// end split across two chunks is one line end. Pure: feeding the same octets in any
/// split gives the same result.
#[derive(Debug)]
pub struct ChunkReceiver {
    limits: DataLimits,
    message: Vec<u8>,
    /// Octets of the message so far, including those already taken out.
    size: usize,
    lines: usize,
    too_big: bool,
    bare: bool,
    /// The last octet so far was a CR.
    pending_cr: bool,
}

impl ChunkReceiver {
    /// A receiver for the first chunk of a message.
    pub fn new(limits: DataLimits) -> Self {
        Self { limits, message: Vec::new(), size: 0, lines: 0, too_big: false, bare: false, pending_cr: false }
    }

    /// Appends octets of a chunk (any part of one).
    pub fn feed(&mut self, input: &[u8]) {
        // Only the CRs and LFs matter here: `next` is the first octet not yet looked at.
        let mut next = 0;
        for p in memchr::memchr2_iter(b'\r', b'\n', input) {
            if self.pending_cr && p > next {
                // The pending CR was followed by an ordinary octet.
                self.bare = true;
                self.pending_cr = false;
            }
            if input[p] == b'\n' {
                if self.pending_cr {
                    self.lines += 1;
                    self.pending_cr = false;
                } else {
                    self.bare = true;
                }
            } else {
                if self.pending_cr {
                    self.bare = true;
                }
                self.pending_cr = true;
            }
            next = p + 1;
        }
        if self.pending_cr && next < input.len() {
            self.bare = true;
            self.pending_cr = false;
        }
        if self.too_big {
            return;
        }
        if self.size + input.len() > self.limits.max_size || self.lines > self.limits.max_lines {
            self.too_big = true;
            self.message = Vec::new();
            return;
        }
        self.size += input.len();
        self.message.extend_from_slice(input);
    }

    /// The octets held in memory (see [`DataReceiver::held`]).
    pub fn held(&self) -> &[u8] {
        &self.message
    }

    /// Forgets the octets held, keeping some buffer (see [`DataReceiver::clear_held`]).
    pub fn clear_held(&mut self) {
        self.message.clear();
        self.message.shrink_to(HELD_KEPT);
    }

    /// Whether the message is already over a limit (its octets are no longer kept).
    pub fn too_big(&self) -> bool {
        self.too_big
    }

    /// Octets of the message so far (those taken out included).
    pub fn len(&self) -> usize {
        self.size
    }

    /// Whether nothing was kept so far.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The message after its last chunk; a CR at the very end is a bare one.
    pub fn finish(self) -> Received {
        Received { message: self.message, too_big: self.too_big, bare_line_end: self.bare || self.pending_cr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a [`ChunkReceiver`] as chunks cut at `cuts`.
    fn chunked(input: &[u8], cuts: &[usize], limits: DataLimits) -> Received {
        let mut r = ChunkReceiver::new(limits);
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            r.feed(&input[from..c]);
            from = c;
        }
        r.finish()
    }

    /// Once the octets held went to the spool, a receiver keeps at most [`HELD_KEPT`]
    /// of buffer (it had grown with the message), and goes on receiving after them.
    #[test]
    fn a_cleared_receiver_keeps_little_buffer() {
        let big = DataLimits { max_size: 8 << 20, max_lines: 100_000 };
        let line = [b'x'; 998];
        let mut body = Vec::new();
        while body.len() < 2 << 20 {
            body.extend_from_slice(&line);
            body.extend_from_slice(b"\r\n");
        }
        let mut data = DataReceiver::new(big);
        assert_eq!(data.feed(&body), (body.len(), None));
        assert!(data.message.capacity() > HELD_KEPT);
        data.clear_held();
        assert!(data.message.capacity() <= HELD_KEPT);
        let (_, done) = data.feed(b"tail\r\n.\r\n");
        assert_eq!(done.unwrap().message, b"tail\r\n");

        let mut chunks = ChunkReceiver::new(big);
        chunks.feed(&body);
        assert!(chunks.message.capacity() > HELD_KEPT);
        chunks.clear_held();
        assert!(chunks.message.capacity() <= HELD_KEPT);
        chunks.feed(b"tail\r\n");
        assert_eq!(chunks.finish().message, b"tail\r\n");
    }

    #[test]
    fn chunks_join_in_any_split() {
        let m = b"Subject: x\r\n\r\n.leading dot kept\r\n.\r\nstill the message\r\n";
        let whole = chunked(m, &[], LIMITS);
        assert_eq!(whole.message, m, "no unstuffing, no end marker in BDAT");
        assert!(!whole.too_big && !whole.bare_line_end);
        for a in 0..=m.len() {
            for b in a..=m.len() {
                assert_eq!(chunked(m, &[a, b], LIMITS), whole, "cut at {a}, {b}");
            }
        }
    }

    #[test]
    fn chunk_limits_and_bare_line_ends() {
        let limits = DataLimits { max_size: 10, max_lines: 2 };
        assert!(chunked(b"0123456789", &[5], limits).message.len() == 10);
        assert!(chunked(b"0123456789A", &[5], limits).too_big);
        assert!(chunked(b"a\r\nb\r\nc\r\n", &[2, 3], DataLimits { max_size: 100, max_lines: 2 }).too_big);
        for bare in [&b"a\nb\r\n"[..], b"a\rb\r\n", b"ab\r"] {
            for cut in 0..=bare.len() {
                assert!(chunked(bare, &[cut], LIMITS).bare_line_end, "{bare:?} cut at {cut}");
            }
        }
    }

    const LIMITS: DataLimits = DataLimits { max_size: 1 << 20, max_lines: 1000 };

    /// Feeds `input` split at `split`; returns the result and the unconsumed rest.
    fn run(input: &[u8], split: usize, limits: DataLimits) -> Option<(Received, Vec<u8>)> {
        let mut r = DataReceiver::new(limits);
        let mut offset = 0;
        for chunk in [&input[..split], &input[split..]] {
            let (n, done) = r.feed(chunk);
            offset += n;
            if let Some(d) = done {
                return Some((d, input[offset..].to_vec()));
            }
        }
        None
    }

    fn every_split(input: &[u8], limits: DataLimits) -> Option<(Received, Vec<u8>)> {
        let first = run(input, 0, limits);
        for split in 1..=input.len() {
            assert_eq!(run(input, split, limits), first, "split at {split}");
        }
        first
    }

    #[test]
    fn plain_message_and_pipelined_rest() {
        let (r, rest) = every_split(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n", LIMITS).unwrap();
        assert_eq!(r.message, b"Subject: x\r\n\r\nhello\r\n");
        assert!(!r.too_big && !r.bare_line_end);
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn empty_message() {
        let (r, rest) = every_split(b".\r\n", LIMITS).unwrap();
        assert_eq!(r.message, b"");
        assert!(rest.is_empty());
    }

    #[test]
    fn dot_unstuffing() {
        let (r, _) = every_split(b"..leading\r\n...\r\n.x\r\n.\r\n", LIMITS).unwrap();
        assert_eq!(r.message, b".leading\r\n..\r\nx\r\n");
    }

    #[test]
    fn smuggling_variants_do_not_end_data() {
        // Each hides an end marker and a second transaction behind bare line ends; the
        // real end comes later and the message is refused as a whole.
        let variants: &[&[u8]] = &[
            b"a\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
        ];
        for v in variants {
            let input = [*v, b"tail\r\n.\r\n"].concat();
            let (r, rest) = every_split(&input, LIMITS).unwrap_or_else(|| panic!("no end for {v:?}"));
            assert!(r.bare_line_end, "{v:?}");
            assert!(rest.is_empty(), "{v:?} left {rest:?}");
        }
    }

    #[test]
    fn no_end_without_real_crlf_dot_crlf() {
        assert!(every_split(b"a\r\n.\n", LIMITS).is_none());
        assert!(every_split(b"a\n.\r\n", LIMITS).is_none());
        assert!(every_split(b"a\r\n. \r\n", LIMITS).is_none());
    }

    #[test]
    fn binary_and_nul_are_data() {
        let (r, _) = every_split(b"\0\xff\xfe\x01\r\n.\r\n", LIMITS).unwrap();
        assert_eq!(r.message, b"\0\xff\xfe\x01\r\n");
        assert!(!r.bare_line_end);
    }

    #[test]
    fn size_limit_counts_unstuffed_octets_with_crlf() {
        let exact = DataLimits { max_size: 7, max_lines: 100 };
        let (r, _) = every_split(b"..abcd\r\n.\r\n", exact).unwrap(); // ".abcd\r\n" = 7
        assert!(!r.too_big);
        assert_eq!(r.message, b".abcd\r\n");
        let (r, rest) = every_split(b"..abcde\r\n.\r\nNOOP\r\n", exact).unwrap();
        assert!(r.too_big);
        assert!(r.message.is_empty());
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn line_limit() {
        let two = DataLimits { max_size: 1000, max_lines: 2 };
        assert!(!every_split(b"a\r\nb\r\n.\r\n", two).unwrap().0.too_big);
        assert!(every_split(b"a\r\nb\r\nc\r\n.\r\n", two).unwrap().0.too_big);
    }

    /// RFC 5321 §4.5.2 octet by octet, the plain definition the receivers' fast paths
    /// must agree with: (octets consumed, message, too big, bare line end), or `None`
    /// when the end marker never came.
    fn data_by_octet(input: &[u8], limits: DataLimits) -> Option<(usize, Vec<u8>, bool, bool)> {
        let (mut msg, mut lines, mut too_big, mut bare) = (Vec::new(), 0, false, false);
        let (mut line_start, mut dot_line, mut line_len) = (true, false, 0);
        let mut i = 0;
        let put = |msg: &mut Vec<u8>, too_big: &mut bool, b: &[u8]| {
            if !*too_big {
                if msg.len() + b.len() > limits.max_size {
                    *too_big = true;
                    msg.clear();
                } else {
                    msg.extend_from_slice(b);
                }
            }
        };
        while i < input.len() {
            let b = input[i];
            i += 1;
            if line_start && b == b'.' {
                line_start = false;
                dot_line = true;
                continue;
            }
            line_start = false;
            if b == b'\r' && input.get(i) == Some(&b'\n') {
                i += 1;
                if dot_line && line_len == 0 {
                    return Some((i, msg, too_big, bare));
                }
                put(&mut msg, &mut too_big, b"\r\n");
                lines += 1;
                if lines > limits.max_lines && !too_big {
                    too_big = true;
                    msg.clear();
                }
                (line_start, dot_line, line_len) = (true, false, 0);
                continue;
            }
            bare |= b == b'\r' || b == b'\n';
            put(&mut msg, &mut too_big, &[b]);
            line_len += 1;
        }
        None
    }

    /// Inputs rich in what matters to the receivers: CR, LF, dots, and plain runs.
    fn noisy_inputs() -> impl Iterator<Item = Vec<u8>> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..3000).map(move |_| {
            let len = (next() % 120) as usize;
            (0..len)
                .map(|_| match next() % 10 {
                    0..=2 => b'\r',
                    3..=5 => b'\n',
                    6 | 7 => b'.',
                    _ => b'a',
                })
                .collect()
        })
    }

    #[test]
    fn fast_paths_agree_with_the_octet_by_octet_definition() {
        for limits in [LIMITS, DataLimits { max_size: 30, max_lines: 4 }] {
            for input in noisy_inputs() {
                let want = data_by_octet(&input, limits);
                for split in [0, input.len() / 3, input.len() / 2, input.len()] {
                    let got = run(&input, split, limits)
                        .map(|(r, rest)| (input.len() - rest.len(), r.message, r.too_big, r.bare_line_end));
                    assert_eq!(got, want, "{input:?} split at {split}");
                }
                // BDAT: the same octets are the message as they are.
                let lines = input.windows(2).filter(|w| w == b"\r\n").count();
                let crlf_only = input.iter().enumerate().all(|(i, &b)| match b {
                    b'\r' => input.get(i + 1) == Some(&b'\n'),
                    b'\n' => i > 0 && input[i - 1] == b'\r',
                    _ => true,
                });
                let too_big = input.len() > limits.max_size || lines > limits.max_lines;
                for cut in [0, input.len() / 3, input.len() / 2, input.len()] {
                    let r = chunked(&input, &[cut], limits);
                    assert_eq!(r.bare_line_end, !crlf_only, "{input:?} cut at {cut}");
                    assert_eq!(r.too_big, too_big, "{input:?} cut at {cut}");
                    assert_eq!(r.message, if too_big { Vec::new() } else { input.clone() });
                }
            }
        }
    }
}

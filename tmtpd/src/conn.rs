//! The only TMTP code that reads bytes (style.md P1): TLS first on implicit-TLS
//! listeners, then frames (spec/tmtp.md §1.2) handed to the [`Session`], post data
//! streamed to the store in chunks, the login deadline (from accept) and the idle
//! timeout (rolling, once logged in), spec §3.3. Writing goes through the [`Link`], the
//! connection's single writer, which the node's queue shares.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Link, now_ms};
use crate::proto::Quit;
use crate::proto::frame::{Parsed, parse};
use crate::proto::header::{Header, Op};
use crate::proto::message;
use crate::session::{Body, Session, Step, Upload, check_text};

/// Post data stored per chunk (bytes).
pub(crate) const CHUNK: usize = 64 * 1024;

/// Octets asked of the socket per read while a frame head is awaited: a head and a
/// short request (ping, ack, `ohi` list) fit.
const READ_SMALL: usize = 1024;

/// How a connection ends.
enum End {
    /// Quietly (EOF, timeout, shutdown, I/O error).
    Silent,
    /// With a quit frame (if TmtpRev was seen).
    Quit(Quit),
}

/// A connection's context: the hub its sessions share (see `common::daemon`).
pub type Context = common::daemon::Context<Hub>;

/// Serves one connection; on implicit-TLS listeners the handshake comes first.
///
/// # Errors
/// The TLS handshake failed; everything later ends the connection by itself.
pub async fn serve<IO>(io: IO, peer: SocketAddr, ctx: &Context, implicit_tls: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let hub = ctx.settings.clone();
    let login_deadline = Instant::now() + hub.settings.login_timeout;
    let shutdown = ctx.shutdown.clone();
    match ctx.tls.as_ref().filter(|_| implicit_tls) {
        Some(acceptor) => {
            let stream = Box::pin(common::net::tls::handshake(acceptor, io, login_deadline)).await?;
            // Boxed: `run` keeps its argument besides what it moved out of it.
            run(Box::new(stream), peer, hub, login_deadline, shutdown).await
        }
        None => run(Box::new(io), peer, hub, login_deadline, shutdown).await,
    }
}

async fn run<S>(
    stream: S,
    peer: SocketAddr,
    hub: Arc<Hub>,
    login_deadline: Instant,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let link = Link::new(Box::new(writer), hub.settings.idle_timeout);
    let mut session = Session::new(hub.clone(), link.clone());
    let mut conn = Conn { buf: BytesMut::new(), hub: &hub, login_deadline, link: &link, shutdown: &shutdown };
    let end = conn.frames(&mut reader, &mut session).await;
    if let End::Quit(q) = end {
        if q != Quit::LogoutOk {
            tracing::info!(%peer, error = q.text(), "quit");
            hub.stats.failed("quit", q.text());
        }
        if session.rev_seen() {
            link.send(&message::quit(q.text())).await;
        }
    }
    session.finish();
    link.close().await;
    Ok(())
}

struct Conn<'a> {
    /// Octets read and not yet taken: a frame head, the data of the request being read.
    /// The connection's only read buffer: reads go straight into it, sized to what the
    /// frame needs, so a post of n bytes costs n bytes here and is handed on without a
    /// copy (issue 19: peak RSS).
    buf: BytesMut,
    hub: &'a Hub,
    login_deadline: Instant,
    link: &'a Arc<Link>,
    shutdown: &'a CancellationToken,
}

/// One read into `buf` with room for `want` more bytes (at least [`READ_SMALL`], at most
/// [`CHUNK`]): the bytes read (0 at EOF). When the client has nothing to read, an empty
/// buffer is given back whole, and one holding less than [`READ_SMALL`] bytes (a request
/// that stalled after a few bytes) is shrunk to what it holds, so that a silent client
/// holds no more than what it sent.
fn poll_fill<R: AsyncRead>(
    r: Pin<&mut R>,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
    want: usize,
) -> Poll<io::Result<usize>> {
    let want = want.clamp(READ_SMALL, CHUNK);
    if buf.capacity() - buf.len() < want.min(READ_SMALL) {
        buf.reserve(want);
    }
    match tokio_util::io::poll_read_buf(r, cx, buf) {
        Poll::Pending => {
            if buf.is_empty() {
                *buf = BytesMut::new();
            } else if buf.len() < READ_SMALL && buf.capacity() > 2 * READ_SMALL {
                *buf = BytesMut::from(&buf[..]);
            }
            Poll::Pending
        }
        ready => ready,
    }
}

/// The first `n` bytes of `buf` (which holds at least `n`), leaving the rest in `buf`.
/// A buffer of exactly `n` bytes is handed on whole, without a copy; otherwise the smaller
/// side is copied: the request when the rest is larger (many small pipelined frames then
/// cost each their own size, not the whole rest every time), else the rest (the start of
/// a pipelined next frame), and the request keeps the buffer.
fn split_request(buf: &mut BytesMut, n: usize) -> Vec<u8> {
    if buf.len() == n {
        return Vec::from(std::mem::take(buf));
    }
    if n <= buf.len() - n {
        let data = buf[..n].to_vec();
        buf.advance(n);
        return data;
    }
    let rest = BytesMut::from(&buf[n..]);
    buf.truncate(n);
    Vec::from(std::mem::replace(buf, rest))
}

impl Conn<'_> {
    fn deadline(&self, session: &Session) -> Instant {
        if session.online().is_some() { Instant::now() + self.hub.settings.idle_timeout } else { self.login_deadline }
    }

    /// Reads more bytes into the buffer, with room for `want` more (at least
    /// [`READ_SMALL`], at most [`CHUNK`]); false at EOF, timeout, shutdown or a failed
    /// link. While the client is silent an empty buffer is given back (issue 16: idle
    /// links cost next to nothing).
    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R, session: &Session, want: usize) -> bool {
        let until = self.deadline(session);
        let buf = &mut self.buf;
        let read = std::future::poll_fn(|cx| poll_fill(Pin::new(&mut *r), cx, buf, want));
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = self.link.closed.cancelled() => false,
            got = timeout_at(until, read) => matches!(got, Ok(Ok(n)) if n > 0),
        }
    }

    /// Takes exactly `n` bytes (reading as needed), or None when the connection ends;
    /// see [`split_request`] for what is copied (usually nothing: reads are sized to the
    /// request).
    async fn take<R: AsyncRead + Unpin>(&mut self, r: &mut R, session: &Session, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            let want = n - self.buf.len();
            if !self.fill(r, session, want).await {
                return None;
            }
        }
        Some(split_request(&mut self.buf, n))
    }

    /// Moves `n` data bytes into `up`, a chunk at a time as each arrives whole; false when
    /// the connection ended first.
    async fn stream<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        session: &Session,
        up: &mut Upload,
        mut n: u64,
    ) -> Result<bool, common::StoreError> {
        while n > 0 {
            let chunk = usize::try_from(n).unwrap_or(usize::MAX).min(CHUNK);
            if self.buf.is_empty() && !self.fill(r, session, chunk).await {
                return Ok(false);
            }
            let take = self.buf.len().min(chunk);
            // Collect the whole chunk (CHUNK bytes, or what is left) before writing a row.
            if take < chunk {
                if !self.fill(r, session, chunk - take).await {
                    return Ok(false);
                }
                continue;
            }
            n -= take as u64;
            up.put(self.hub, split_request(&mut self.buf, take), n == 0).await?;
        }
        Ok(true)
    }

    async fn frames<R: AsyncRead + Unpin>(&mut self, r: &mut R, session: &mut Session) -> End {
        loop {
            let h = match parse(&self.buf) {
                Err(q) => return End::Quit(q),
                Ok(Parsed::Need(n)) => {
                    while self.buf.len() < n {
                        let want = n - self.buf.len();
                        if !self.fill(r, session, want).await {
                            return End::Silent;
                        }
                    }
                    continue;
                }
                Ok(Parsed::Header { header, len }) => {
                    self.buf.advance(len);
                    header
                }
            };
            if let Err(q) = session.admit(h.op).and_then(|()| Session::before_data(&h)) {
                return End::Quit(q);
            }
            // Boxed: a request's future (the store's) is ~20 KB, and an idle link
            // should not carry it.
            let step = match Box::pin(self.request(r, session, &h)).await {
                Ok(Some(step)) => step,
                Ok(None) => return End::Silent,
                Err(e) => {
                    tracing::error!(cause = %e, "database failure; closing the link");
                    return End::Silent;
                }
            };
            match step {
                Step::Reply(bytes) => {
                    if !bytes.is_empty() && !self.link.send(&bytes).await {
                        return End::Silent;
                    }
                }
                Step::LoggedIn(bytes, key, acks) => {
                    if !self.link.send(&bytes).await {
                        return End::Silent;
                    }
                    let hub = session.hub();
                    hub.tasks.spawn(crate::queue::run(hub.clone(), key, self.link.clone(), acks));
                }
                Step::Quit(q) => return End::Quit(q),
            }
        }
    }

    /// Reads the request's data and runs it. None: the connection ended mid-data.
    async fn request<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        session: &mut Session,
        h: &Header,
    ) -> Result<Option<Step>, common::StoreError> {
        match h.op {
            Op::Post | Op::PostNotify => {
                let note_posted = now_ms();
                let post_id = self.hub.next_id().await?;
                let note_id = if h.op == Op::PostNotify { Some(self.hub.next_id().await?) } else { None };
                let total = u64::try_from(h.datalen).unwrap_or(0);
                let note_len = u64::try_from(h.notelen).unwrap_or(0).min(total);
                let post_len = total - note_len;
                if total <= CHUNK as u64 {
                    // Small enough to hold: stored whole, in one commit, after resolution.
                    let Some(mut data) = self.take(r, session, total as usize).await else { return Ok(None) };
                    // The notice (first) is copied out, the post keeps the buffer.
                    let note_data: Vec<u8> = data.drain(..note_len as usize).collect();
                    let post = Body::Whole { id: post_id, data };
                    let note = note_id.map(|id| (Body::Whole { id, data: note_data }, note_posted));
                    return Ok(Some(session.post(h, post, note).await?));
                }
                let mut post = Upload::new(post_id);
                let mut note = note_id.map(Upload::new);
                let mut complete = true;
                if let Some(n) = note.as_mut() {
                    complete = self.stream(r, session, n, note_len).await?;
                }
                if complete {
                    complete = self.stream(r, session, &mut post, post_len).await?;
                }
                if !complete {
                    post.discard(self.hub).await?;
                    if let Some(n) = &note {
                        n.discard(self.hub).await?;
                    }
                    return Ok(None);
                }
                let note = note.map(|n| (Body::Streamed(n), note_posted));
                Ok(Some(session.post(h, Body::Streamed(post), note).await?))
            }
            _ => {
                let n = usize::try_from(h.datalen).unwrap_or(0);
                let Some(data) = self.take(r, session, n).await else { return Ok(None) };
                if matches!(h.op, Op::Ping | Op::GroupInvite)
                    && let Err(q) = check_text(&data)
                {
                    return Ok(Some(Step::Quit(q)));
                }
                Ok(Some(session.handle(h, &data).await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::task::{Context, Waker};

    /// A client that sends the given pieces, one per read, then has nothing more
    /// (Pending, as a silent socket).
    struct Trickle(VecDeque<Vec<u8>>);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.0.pop_front() {
                Some(piece) => {
                    out.put_slice(&piece);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            }
        }
    }

    fn fill(r: &mut Trickle, buf: &mut BytesMut, want: usize) -> Poll<io::Result<usize>> {
        poll_fill(Pin::new(r), &mut Context::from_waker(Waker::noop()), buf, want)
    }

    #[test]
    fn a_request_that_stalls_gives_back_the_room_reserved_for_it() {
        // A post of 60 KiB announced: room for all of it is taken for the first read.
        let mut client = Trickle(VecDeque::from([b"0123456789".to_vec()]));
        let mut buf = BytesMut::new();
        assert!(matches!(fill(&mut client, &mut buf, 60 * 1024), Poll::Ready(Ok(10))));
        assert!(buf.capacity() >= 60 * 1024);
        // Then the client goes silent: what it sent is kept, the room is not.
        assert!(fill(&mut client, &mut buf, 60 * 1024 - 10).is_pending());
        assert_eq!(&buf[..], b"0123456789");
        assert!(buf.capacity() < 2 * READ_SMALL, "capacity {}", buf.capacity());
        // A silent client with nothing pending holds no buffer at all.
        let mut silent = Trickle(VecDeque::new());
        let mut buf = BytesMut::with_capacity(CHUNK);
        assert!(fill(&mut silent, &mut buf, 4).is_pending());
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn a_stalled_request_keeps_what_arrived_and_goes_on() {
        // More than READ_SMALL already in: kept as it is (it will be taken whole soon).
        let part = vec![7u8; 3 * READ_SMALL];
        let mut client = Trickle(VecDeque::from([part.clone()]));
        let mut buf = BytesMut::new();
        assert!(matches!(fill(&mut client, &mut buf, CHUNK), Poll::Ready(Ok(n)) if n == part.len()));
        assert!(fill(&mut client, &mut buf, CHUNK - part.len()).is_pending());
        assert_eq!(&buf[..], &part[..]);
        // The rest arrives after the pause and joins it.
        client.0.push_back(vec![8u8; 5]);
        assert!(matches!(fill(&mut client, &mut buf, CHUNK - part.len()), Poll::Ready(Ok(5))));
        assert_eq!(buf.len(), part.len() + 5);
        assert_eq!(&buf[part.len()..], &[8u8; 5]);
    }

    #[test]
    fn a_request_is_split_from_what_follows_it_in_order() {
        // Exactly the request: handed on whole, nothing left.
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert_eq!(split_request(&mut buf, 4), b"abcd");
        assert!(buf.is_empty());
        // Small pipelined frames in a large buffer: each comes out in turn.
        let mut buf = BytesMut::from(&b"aabbbcccc"[..]);
        assert_eq!(split_request(&mut buf, 2), b"aa");
        assert_eq!(split_request(&mut buf, 3), b"bbb");
        assert_eq!(&buf[..], b"cccc");
        // A large request followed by the start of the next frame: the rest stays.
        let mut buf = BytesMut::from(&b"0123456789xy"[..]);
        assert_eq!(split_request(&mut buf, 10), b"0123456789");
        assert_eq!(&buf[..], b"xy");
        assert_eq!(split_request(&mut buf, 0), b"");
        assert_eq!(&buf[..], b"xy");
    }
}

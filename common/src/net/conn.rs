//! What the SMTP and POP3 connection loops share (style.md P3, P4): the TLS prologue
//! ([`serve`]: implicit TLS first, or a plain pass and a second one over TLS after
//! STARTTLS/STLS), and the line I/O around a session ([`Lines`]: bounded lines under the
//! input timeout and the session deadline, replies held back while pipelined input is
//! buffered, the tarpit, shutdown at a command boundary, and the discard of input
//! pipelined in clear after STARTTLS/STLS). Each daemon keeps its own loop; only these
//! mechanics are here.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::elastic::ElasticReader;
use super::line::{Line, read_line};
use super::tls::handshake;
use super::write_out;

/// How one pass of a connection loop ended.
pub enum End<IO> {
    /// The connection is over.
    Closed,
    /// STARTTLS/STLS was accepted: the stream, for the handshake.
    StartTls(IO),
}

/// A daemon's connection loop, run once per stream (plain, then TLS).
pub trait Pass {
    /// One pass over `io` (the greeting first when `greet`); nothing goes on past
    /// `deadline` (the session timeout).
    fn run<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: IO,
        greet: bool,
        deadline: Instant,
    ) -> impl Future<Output = io::Result<End<IO>>>;
    /// The STARTTLS/STLS handshake succeeded: the session forgets what TLS resets
    /// (RFC 3207 §4.2, RFC 2595 §4).
    fn tls_started(&mut self);
}

/// Serves one connection with `pass` under `ctx`'s timeouts: with `implicit_tls`
/// (RFC 8314) the TLS handshake comes first; otherwise a plain pass, and when it ends
/// with STARTTLS/STLS the handshake and a second pass over TLS (the sessions refuse a
/// second STARTTLS/STLS, so that pass cannot ask again). A handshake gets `[limits]
/// handshake_timeout`, the whole connection the session timeout.
///
/// # Errors
/// I/O and handshake failures (they end this connection only); TLS asked for without
/// `[tls]`.
pub async fn serve<S, IO, P>(
    io: IO,
    ctx: &crate::daemon::Context<S>,
    implicit_tls: bool,
    pass: &mut P,
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    P: Pass,
{
    let deadline = Instant::now() + ctx.session_timeout;
    let handshake_deadline = || deadline.min(Instant::now() + ctx.handshake_timeout);
    let acceptor = || ctx.tls.as_ref().ok_or_else(|| io::Error::other("TLS without [tls]"));
    if implicit_tls {
        let stream = Box::pin(handshake(acceptor()?, io, handshake_deadline())).await?;
        pass.run(Box::new(stream), true, deadline).await?;
        return Ok(());
    }
    // The streams are boxed: a pass keeps its stream argument as well as the one it
    // moved into its `Lines`, and a TLS stream is over a kilobyte.
    if let End::StartTls(io) = pass.run(Box::new(io), true, deadline).await? {
        let stream = Box::pin(handshake(acceptor()?, *io, handshake_deadline())).await?;
        pass.tls_started();
        pass.run(Box::new(stream), false, deadline).await?;
    }
    Ok(())
}

/// A command line from the client.
pub enum Input {
    /// The line, without its line end.
    Line(Vec<u8>),
    /// A line over the limit (it was read to its end and dropped).
    TooLong,
}

/// A connection's line I/O: reads, and replies queued in [`Lines::out`]. While the
/// client is silent neither holds memory (issue 16): the reader's buffer is given back
/// ([`ElasticReader`]) and so is the reply buffer once written.
pub struct Lines<IO> {
    r: ElasticReader<IO>,
    /// Replies not yet written.
    pub out: Vec<u8>,
    input_timeout: Duration,
    deadline: Instant,
    /// No line read yet.
    first: bool,
    /// This connection as stress mode sees it.
    watch: crate::net::stress::Watch,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Lines<IO> {
    /// Line I/O on `io`: a client may be silent for `input_timeout` (also the write
    /// timeout), and nothing goes on past `deadline` (the session timeout). `watch`
    /// follows the connection for stress mode: reads mark it idle while they wait, and a
    /// connection closed for stress ends as on an input timeout.
    pub fn new(io: IO, input_timeout: Duration, deadline: Instant, watch: crate::net::stress::Watch) -> Self {
        Lines { r: ElasticReader::new(io), out: Vec::new(), input_timeout, deadline, first: true, watch }
    }

    /// Replaces the input timeout (POP3: a shorter one before login).
    pub fn set_input_timeout(&mut self, input_timeout: Duration) {
        self.input_timeout = input_timeout;
    }

    /// When the current read must be done: the input timeout from now (the stress
    /// timeout for a connection not logged in while stress mode is on), or the session
    /// deadline if sooner.
    pub fn read_deadline(&self) -> Instant {
        self.deadline.min(Instant::now() + self.watch.input_timeout(self.input_timeout))
    }

    /// The reader, for protocol data that is not lines (SMTP DATA).
    pub fn reader(&mut self) -> &mut ElasticReader<IO> {
        &mut self.r
    }

    /// Writes the queued replies (within the input timeout).
    ///
    /// # Errors
    /// I/O errors and write timeouts.
    pub async fn flush(&mut self) -> io::Result<()> {
        write_out(self.r.get_mut(), &mut self.out, self.input_timeout).await
    }

    /// The next line of at most `max` octets, or `None` when the connection is over:
    /// the client left; it was silent for the input timeout or the session deadline
    /// passed (`on_timeout` queues the goodbye); the daemon is stopping (`on_shutdown`
    /// queues it, at this command boundary). Queued replies go out first unless more
    /// input is already buffered (PIPELINING, RFC 2920 and RFC 2449: replies to a batch
    /// go out together); a goodbye goes out before `None`. A first line that is a PROXY
    /// protocol header ends the connection too: this peer is not in `[listen]
    /// proxy_networks`, so it may not name another client (`crate::net::proxy`).
    ///
    /// # Errors
    /// I/O errors.
    pub async fn next(
        &mut self,
        max: usize,
        shutdown: &CancellationToken,
        on_timeout: impl FnOnce(&mut Vec<u8>),
        on_shutdown: impl FnOnce(&mut Vec<u8>),
    ) -> io::Result<Option<Input>> {
        if self.r.buffer().is_empty() {
            self.flush().await?;
            // About to wait for the client: a reply buffer grown by a large answer
            // (a LIST, a RETR) is not kept.
            self.out = Vec::new();
        }
        let until = self.read_deadline();
        self.watch.idle();
        let line = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                on_shutdown(&mut self.out);
                self.flush().await?;
                return Ok(None);
            }
            () = self.watch.evicted() => {
                tracing::info!("closed in stress mode: idle before login");
                on_timeout(&mut self.out);
                self.flush().await?;
                return Ok(None);
            }
            line = timeout_at(until, read_line(&mut self.r, max)) => line,
        };
        self.watch.busy();
        match line {
            Err(_) => {
                tracing::info!("input timeout");
                on_timeout(&mut self.out);
                self.flush().await?;
                Ok(None)
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(Line::TooLong))) => Ok(Some(Input::TooLong)),
            Ok(Ok(Some(Line::Complete(l)))) => {
                let first = std::mem::replace(&mut self.first, false);
                // The v2 signature begins with an empty line; the rest is still buffered.
                let v2 = l.is_empty() && self.r.buffer().starts_with(&super::proxy::V2_SIGNATURE[2..]);
                if first && (super::proxy::looks_like_header(&l) || v2) {
                    tracing::warn!("PROXY header from a peer not in [listen] proxy_networks; closing");
                    return Ok(None);
                }
                Ok(Some(Input::Line(l)))
            }
        }
    }

    /// The tarpit after an error reply (spec/mail.md §3.2 DELAY_ON_ERROR): the replies
    /// queued so far go out, then the client waits `delay`.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn tarpit(&mut self, delay: Duration) -> io::Result<()> {
        if !delay.is_zero() {
            self.flush().await?;
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    /// Ends the connection in order: the queued replies, then the end of the stream, a
    /// TLS `close_notify` alert first on a TLS stream (RFC 8446 §6.1: without it strict
    /// clients report a truncation attack) and the TCP FIN. A client that does not read
    /// holds this up for the input timeout at most.
    ///
    /// # Errors
    /// I/O errors while sending the replies.
    pub async fn close(&mut self) -> io::Result<()> {
        self.flush().await?;
        let _ = tokio::time::timeout(self.input_timeout, self.r.get_mut().shutdown()).await;
        Ok(())
    }

    /// After the go-ahead for STARTTLS/STLS (`what`) was queued: sends it; the caller
    /// then hands the stream over for the handshake with [`Lines::into_inner`].
    /// Whatever the client pipelined after the command in clear is thrown away with the
    /// buffer, never read after the handshake (RFC 3207 §5, RFC 2595 §4, spec/mail.md
    /// §3.3). (Not one `async fn` taking `self`: that future would hold a second copy
    /// of the stream for the life of every connection.)
    ///
    /// # Errors
    /// I/O errors.
    pub async fn before_handshake(&mut self, what: &str) -> io::Result<()> {
        self.flush().await?;
        if !self.r.buffer().is_empty() {
            tracing::info!(bytes = self.r.buffer().len(), "discarded input pipelined after {what}");
        }
        Ok(())
    }

    /// The stream, for the TLS handshake; unread input is dropped.
    pub fn into_inner(self) -> IO {
        self.r.into_inner()
    }
}

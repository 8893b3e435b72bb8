//! The only SMTP code that reads and writes bytes (style.md P1, P3, P4): greet, read a
//! bounded line, hand it to the [`Session`], write the reply; DATA through the
//! [`DataReceiver`]; STARTTLS; timeouts; shutdown at command boundaries. Generic over the
//! stream so TCP, TLS and in-memory test streams share it; the mechanics it shares with
//! POP3 are in `common::net::conn`.

use std::io;
use std::net::SocketAddr;

use common::net::conn::{End, Input, Lines, Pass};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use crate::proto::command::MAX_COMMAND_LINE;
use crate::proto::data::DataReceiver;
use crate::session::{Outcome, Session, Settings};

/// A connection's context (see `common::daemon::Context`).
pub type Context = common::daemon::Context<Settings>;

/// Serves one client on a plain connection (STARTTLS possible) or, with `implicit_tls`,
/// runs the TLS handshake first. Errors are I/O errors; they end the connection only.
///
/// # Errors
/// I/O or TLS handshake failures.
pub async fn serve<IO>(io: IO, peer: SocketAddr, ctx: &Context, implicit_tls: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let session = Session::new(ctx.settings.clone(), peer.ip(), implicit_tls).with_bans(ctx.bans.clone());
    let mut smtp = Smtp { session, ctx };
    common::net::conn::serve(io, ctx, implicit_tls, &mut smtp).await
}

struct Smtp<'a> {
    session: Session,
    ctx: &'a Context,
}

impl Pass for Smtp<'_> {
    fn tls_started(&mut self) {
        self.session.tls_started();
    }

    async fn run<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: IO,
        greet: bool,
        deadline: Instant,
    ) -> io::Result<End<IO>> {
        let (session, ctx) = (&mut self.session, self.ctx);
        let mut lines = Lines::new(io, ctx.input_timeout, deadline, ctx.watch.clone());
        if greet {
            match Box::pin(session.open()).await {
                Outcome::Close(refusal) => {
                    refusal.write_to(&mut lines.out);
                    lines.close().await?;
                    return Ok(End::Closed);
                }
                Outcome::Reply(greeting) => greeting.write_to(&mut lines.out),
                _ => {}
            }
        }
        loop {
            let input = lines
                .next(
                    MAX_COMMAND_LINE,
                    &ctx.shutdown,
                    |out| session.timeout_reply().write_to(out),
                    |out| session.shutdown_reply().write_to(out),
                )
                .await?;
            let errors = session.errors();
            let outcome = match input {
                None => {
                    lines.close().await?;
                    return Ok(End::Closed);
                }
                Some(Input::TooLong) => session.line_too_long(),
                Some(Input::Line(l)) => Box::pin(session.handle_line(&l, &ctx.store)).await,
            };
            let outcome = match outcome {
                Outcome::Data(go_ahead) => {
                    go_ahead.write_to(&mut lines.out);
                    lines.flush().await?;
                    let Some(received) = Box::pin(read_data(&mut lines, session)).await? else {
                        session.timeout_reply().write_to(&mut lines.out);
                        lines.close().await?;
                        return Ok(End::Closed);
                    };
                    Box::pin(session.data_end(received, &ctx.store)).await
                }
                Outcome::Chunk(size) => {
                    if !Box::pin(read_chunk(&mut lines, session, size)).await? {
                        session.timeout_reply().write_to(&mut lines.out);
                        lines.close().await?;
                        return Ok(End::Closed);
                    }
                    Box::pin(session.chunk_end(&ctx.store)).await
                }
                other => other,
            };
            match outcome {
                // (chunk_end never asks for another chunk)
                Outcome::Chunk(_) => {}
                Outcome::Reply(reply) | Outcome::Data(reply) => {
                    // Tarpit only what counted as the client's error (see Session::count).
                    if session.errors() > errors {
                        lines.tarpit(ctx.limits.tarpit(session.errors())).await?;
                    }
                    reply.write_to(&mut lines.out);
                }
                Outcome::Close(reply) => {
                    reply.write_to(&mut lines.out);
                    lines.close().await?;
                    return Ok(End::Closed);
                }
                Outcome::StartTls(reply) => {
                    reply.write_to(&mut lines.out);
                    lines.before_handshake("STARTTLS").await?;
                    return Ok(End::StartTls(lines.into_inner()));
                }
            }
        }
    }
}

/// Reads the `size` octets of a BDAT chunk into the session. `Ok(false)` on timeout; an
/// error (including EOF) ends the connection with nothing stored.
async fn read_chunk<IO>(lines: &mut Lines<IO>, session: &mut Session, size: u64) -> io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut left = size;
    while left > 0 {
        let until = lines.read_deadline();
        let r = lines.reader();
        let Ok(buf) = timeout_at(until, r.fill_buf()).await else {
            tracing::info!("input timeout in BDAT");
            return Ok(false);
        };
        let buf = buf?;
        if buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client left during BDAT"));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        session.chunk_data(&buf[..n]);
        r.consume(n);
        session.chunk_spill().await;
        left -= n as u64;
    }
    Ok(true)
}

/// Reads the message after `354`; past `spool_threshold` octets, what arrived moves to
/// the session's spool file unless `spool_memory` has room for it (issue 16). `Ok(None)` on timeout; an error (including EOF)
/// ends the connection with nothing stored.
async fn read_data<IO>(lines: &mut Lines<IO>, session: &mut Session) -> io::Result<Option<crate::proto::data::Received>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut receiver = DataReceiver::new(session.data_limits());
    loop {
        let until = lines.read_deadline();
        let r = lines.reader();
        let Ok(buf) = timeout_at(until, r.fill_buf()).await else {
            tracing::info!("input timeout in DATA");
            return Ok(None);
        };
        let buf = buf?;
        if buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client left during DATA"));
        }
        let (used, done) = receiver.feed(buf);
        r.consume(used);
        if let Some(received) = done {
            return Ok(Some(received));
        }
        if session.spill(receiver.held()).await {
            receiver.clear_held();
        }
    }
}

//! The only POP3 code that reads and writes bytes (style.md P1, P3, P4): greet, read a
//! bounded line, hand it to the [`Session`], write the response; messages are streamed
//! in chunks with byte-stuffing; STLS; timeouts; shutdown at command boundaries.

use std::io;
use std::net::SocketAddr;

use common::net::line::{Line, read_line};
use common::net::tls::handshake;
use common::net::write_out;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::time::{Instant, timeout_at};

use crate::proto::message::DotStuffer;
use crate::session::{Outcome, Session, Settings};

/// Octets of a message written per chunk.
const CHUNK: usize = 64 * 1024;

/// A connection's context (see `common::daemon::Context`).
pub type Context = common::daemon::Context<Settings>;

enum End<IO> {
    Closed,
    StartTls(IO),
}

/// Serves one client; with `implicit_tls` (POP3S, RFC 8314) the TLS handshake comes first.
///
/// # Errors
/// I/O or TLS handshake failures; they end this connection only.
pub async fn serve<IO>(io: IO, peer: SocketAddr, ctx: &Context, implicit_tls: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session::new(ctx.settings.clone(), peer.ip(), implicit_tls);
    let served = drive(io, &mut session, ctx, implicit_tls).await;
    // However it ended: a maildrop lock still held is released.
    session.end().await;
    served
}

async fn drive<IO>(io: IO, session: &mut Session, ctx: &Context, implicit_tls: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + ctx.session_timeout;
    let handshake_deadline = || deadline.min(Instant::now() + ctx.input_timeout);
    if implicit_tls {
        let acceptor = ctx.tls.as_ref().ok_or_else(|| io::Error::other("POP3S without [tls]"))?;
        let tls = handshake(acceptor, io, handshake_deadline()).await?;
        run(tls, session, ctx, deadline, true).await?;
        return Ok(());
    }
    if let End::StartTls(io) = run(io, session, ctx, deadline, true).await? {
        let acceptor = ctx.tls.as_ref().ok_or_else(|| io::Error::other("STLS without [tls]"))?;
        let tls = handshake(acceptor, io, handshake_deadline()).await?;
        session.tls_started();
        run(tls, session, ctx, deadline, false).await?;
    }
    Ok(())
}

async fn run<IO>(io: IO, session: &mut Session, ctx: &Context, deadline: Instant, greet: bool) -> io::Result<End<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut r = BufReader::new(io);
    let mut out = Vec::with_capacity(512);
    if greet {
        session.greeting().write_to(&mut out);
    }
    loop {
        // PIPELINING (RFC 2449): responses go out when no more input is buffered.
        if r.buffer().is_empty() {
            write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
        }
        let until = deadline.min(Instant::now() + ctx.input_timeout);
        let line = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => {
                session.shutdown_reply().write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                return Ok(End::Closed);
            }
            line = timeout_at(until, read_line(&mut r, session.max_line())) => line,
        };
        let outcome = match line {
            Err(_) => {
                tracing::info!("input timeout");
                session.timeout_reply().write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                return Ok(End::Closed);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => return Ok(End::Closed),
            Ok(Ok(Some(Line::TooLong))) => session.line_too_long(),
            Ok(Ok(Some(Line::Complete(l)))) => session.handle_line(&l, &ctx.store).await,
        };
        match outcome {
            Outcome::Reply(reply) => {
                if !reply.ok {
                    // Tarpit: each error costs the client more time.
                    let delay = ctx.limits.tarpit(session.errors());
                    if !delay.is_zero() {
                        write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                        tokio::time::sleep(delay).await;
                    }
                }
                reply.write_to(&mut out);
            }
            Outcome::Lines(reply, lines) => {
                reply.write_to(&mut out);
                let mut stuffer = DotStuffer::new();
                for l in lines {
                    stuffer.push(l.as_bytes(), &mut out);
                    stuffer.push(b"\r\n", &mut out);
                }
                stuffer.finish(&mut out);
            }
            Outcome::Message(reply, message, body_len) => {
                reply.write_to(&mut out);
                let mut stuffer = DotStuffer::new();
                stuffer.push(&message.trace, &mut out);
                for chunk in message.body[..body_len].chunks(CHUNK) {
                    stuffer.push(chunk, &mut out);
                    if out.len() >= CHUNK {
                        write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                    }
                }
                stuffer.finish(&mut out);
            }
            Outcome::Continue => {
                out.extend_from_slice(b"+ \r\n");
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
            }
            Outcome::Close(reply) => {
                reply.write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                return Ok(End::Closed);
            }
            Outcome::StartTls(reply) => {
                reply.write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                // RFC 2595 §4: input sent in clear after STLS is discarded with the buffer.
                if !r.buffer().is_empty() {
                    tracing::info!(bytes = r.buffer().len(), "discarded input pipelined after STLS");
                }
                return Ok(End::StartTls(r.into_inner()));
            }
        }
    }
}

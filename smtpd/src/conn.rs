//! The only SMTP code that reads and writes bytes (style.md P1, P3, P4): greet, read a
//! bounded line, hand it to the [`Session`], write the reply; DATA through the
//! [`DataReceiver`]; STARTTLS; timeouts; shutdown at command boundaries. Generic over the
//! stream so TCP, TLS and in-memory test streams share it.

use std::io;
use std::net::SocketAddr;

use common::net::line::{Line, read_line};
use common::net::tls::handshake;
use common::net::write_out;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::time::{Instant, timeout_at};

use crate::proto::command::MAX_COMMAND_LINE;
use crate::proto::data::DataReceiver;
use crate::session::{Outcome, Session, Settings};

/// A connection's context (see `common::daemon::Context`).
pub type Context = common::daemon::Context<Settings>;

/// How a pass of the loop over one stream ended.
enum End<IO> {
    Closed,
    StartTls(IO),
}

/// Serves one client on a plain connection (STARTTLS possible) or, with `implicit_tls`,
/// runs the TLS handshake first. Errors are I/O errors; they end the connection only.
///
/// # Errors
/// I/O or TLS handshake failures.
pub async fn serve<IO>(io: IO, peer: SocketAddr, ctx: &Context, implicit_tls: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + ctx.session_timeout;
    if implicit_tls {
        let acceptor = ctx.tls.as_ref().ok_or_else(|| io::Error::other("implicit TLS without [tls]"))?;
        let tls = handshake(acceptor, io, deadline.min(Instant::now() + ctx.input_timeout)).await?;
        let mut session = Session::new(ctx.settings.clone(), peer.ip(), true);
        run(tls, &mut session, ctx, deadline, true).await?;
        return Ok(());
    }
    let mut session = Session::new(ctx.settings.clone(), peer.ip(), false);
    if let End::StartTls(io) = run(io, &mut session, ctx, deadline, true).await? {
        let acceptor = ctx.tls.as_ref().ok_or_else(|| io::Error::other("STARTTLS without [tls]"))?;
        let tls = handshake(acceptor, io, deadline.min(Instant::now() + ctx.input_timeout)).await?;
        session.tls_started();
        // The session refuses a second STARTTLS, so this pass cannot ask for TLS again.
        run(tls, &mut session, ctx, deadline, false).await?;
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
        // PIPELINING (RFC 2920): replies go out when no more input is buffered.
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
            line = timeout_at(until, read_line(&mut r, MAX_COMMAND_LINE)) => line,
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
        let outcome = match outcome {
            Outcome::Data(go_ahead) => {
                go_ahead.write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                let Some(received) = read_data(&mut r, session, ctx, deadline).await? else {
                    session.timeout_reply().write_to(&mut out);
                    write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                    return Ok(End::Closed);
                };
                session.data_end(received, &ctx.store).await
            }
            other => other,
        };
        match outcome {
            Outcome::Reply(reply) | Outcome::Data(reply) => {
                if reply.is_error() {
                    // Tarpit (spec/mail.md §3.2 DELAY_ON_ERROR): each error costs the
                    // client more time; replies already queued go out first.
                    let delay = ctx.limits.tarpit(session.errors());
                    if !delay.is_zero() {
                        write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                        tokio::time::sleep(delay).await;
                    }
                }
                reply.write_to(&mut out);
            }
            Outcome::Close(reply) => {
                reply.write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                return Ok(End::Closed);
            }
            Outcome::StartTls(reply) => {
                reply.write_to(&mut out);
                write_out(r.get_mut(), &mut out, ctx.input_timeout).await?;
                // RFC 3207 §5 / spec §3.3: whatever the client sent after STARTTLS in
                // clear is discarded, never read after the handshake. into_inner() drops
                // the read buffer with it.
                if !r.buffer().is_empty() {
                    tracing::info!(bytes = r.buffer().len(), "discarded input pipelined after STARTTLS");
                }
                return Ok(End::StartTls(r.into_inner()));
            }
        }
    }
}

/// Reads the message after `354`. `Ok(None)` on timeout; an error (including EOF) ends
/// the connection with nothing stored.
async fn read_data<IO>(
    r: &mut BufReader<IO>,
    session: &Session,
    ctx: &Context,
    deadline: Instant,
) -> io::Result<Option<crate::proto::data::Received>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut receiver = DataReceiver::new(session.data_limits());
    loop {
        let until = deadline.min(Instant::now() + ctx.input_timeout);
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
    }
}

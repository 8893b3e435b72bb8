//! The only POP3 code that reads and writes bytes (style.md P1, P3, P4): greet, read a
//! bounded line, hand it to the [`Session`], write the response; messages are streamed
//! in chunks with byte-stuffing; STLS; timeouts; shutdown at command boundaries. The
//! mechanics it shares with SMTP are in `common::net::conn`.

use std::io;
use std::net::SocketAddr;

use common::net::conn::{End, Input, Lines, Pass};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::proto::message::DotStuffer;
use crate::session::{Outcome, Session, Settings};

/// Octets of a message written per chunk.
const CHUNK: usize = 64 * 1024;

/// A connection's context (see `common::daemon::Context`).
pub type Context = common::daemon::Context<Settings>;

/// Serves one client; with `implicit_tls` (POP3S, RFC 8314) the TLS handshake comes first.
///
/// # Errors
/// I/O or TLS handshake failures; they end this connection only.
pub async fn serve<IO>(io: IO, peer: SocketAddr, ctx: &Context, implicit_tls: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let session = Session::new(ctx.settings.clone(), peer.ip(), implicit_tls).with_bans(ctx.bans.clone());
    let mut pop3 = Pop3 { session, ctx };
    let served = common::net::conn::serve(io, ctx, implicit_tls, &mut pop3).await;
    // However it ended: a maildrop lock still held is released.
    Box::pin(pop3.session.end()).await;
    served
}

struct Pop3<'a> {
    session: Session,
    ctx: &'a Context,
}

impl Pass for Pop3<'_> {
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
            session.greeting().write_to(&mut lines.out);
        }
        loop {
            // Before login a client gets `[pop3d] login_timeout`; RFC 1939's ten-minute
            // autologout is for an authenticated session.
            if session.logged_in() {
                ctx.watch.logged_in();
                lines.set_input_timeout(ctx.input_timeout);
            } else {
                lines.set_input_timeout(ctx.input_timeout.min(session.login_timeout()));
            }
            let max = session.max_line();
            let input = lines
                .next(
                    max,
                    &ctx.shutdown,
                    |out| session.timeout_reply().write_to(out),
                    |out| session.shutdown_reply().write_to(out),
                )
                .await?;
            let outcome = match input {
                None => {
                    lines.close().await?;
                    return Ok(End::Closed);
                }
                Some(Input::TooLong) => session.line_too_long(),
                Some(Input::Line(l)) => Box::pin(session.handle_line(&l, &ctx.store)).await,
            };
            match outcome {
                Outcome::Reply(reply) => {
                    if !reply.ok {
                        lines.tarpit(ctx.limits.tarpit(session.errors())).await?;
                    }
                    reply.write_to(&mut lines.out);
                }
                Outcome::Lines(reply, list) => {
                    reply.write_to(&mut lines.out);
                    let mut stuffer = DotStuffer::new();
                    for l in list {
                        stuffer.push(l.as_bytes(), &mut lines.out);
                        stuffer.push(b"\r\n", &mut lines.out);
                    }
                    stuffer.finish(&mut lines.out);
                }
                Outcome::Message(reply, message, body_len) => {
                    reply.write_to(&mut lines.out);
                    let mut stuffer = DotStuffer::new();
                    stuffer.push(&message.trace, &mut lines.out);
                    for chunk in message.body[..body_len].chunks(CHUNK) {
                        stuffer.push(chunk, &mut lines.out);
                        if lines.out.len() >= CHUNK {
                            lines.flush().await?;
                        }
                    }
                    stuffer.finish(&mut lines.out);
                }
                Outcome::Continue => {
                    lines.out.extend_from_slice(b"+ \r\n");
                    lines.flush().await?;
                }
                Outcome::Close(reply) => {
                    reply.write_to(&mut lines.out);
                    lines.close().await?;
                    return Ok(End::Closed);
                }
                Outcome::StartTls(reply) => {
                    reply.write_to(&mut lines.out);
                    lines.before_handshake("STLS").await?;
                    return Ok(End::StartTls(lines.into_inner()));
                }
            }
        }
    }
}

//! The server side of a TLS connection whose buffers follow the traffic (issue 16: ten
//! thousand idle connections, plain or after a TLS handshake, in at most 100 MB).
//!
//! tokio-rustls drives rustls's buffered connection, whose record reader keeps at least
//! 4 KiB for the life of the connection (rustls 0.23 `DeframerVecBuffer::prepare_read`
//! never shrinks below one read's worth). [`TlsStream`] drives rustls's unbuffered
//! connection instead (`rustls::server::UnbufferedServerConnection`), so the three
//! buffers are ours:
//! - the TLS octets read and not yet processed, taken when the peer sends and given back
//!   when every complete record has been processed and the peer is silent;
//! - the application data decrypted and not yet read by the session (a read whose buffer
//!   has room for whole records gets them decrypted straight into it; only what does not
//!   fit waits here);
//! - the TLS octets encrypted and not yet written to the socket.
//!
//! While a session waits for its client, a connection holds none of them: only rustls's
//! key schedule and state remain.
//!
//! Reads never write to the socket (the SMTP, POP3 and TMTP loops read and write from
//! different tasks through `tokio::io::split`, and a read that wrote would steal the
//! writer's wake-up); what processing input produces (a KeyUpdate reply, an alert) is
//! queued and goes out with the next write or flush, as with tokio-rustls.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::UnbufferedServerConnection;
use tokio_rustls::rustls::unbuffered::{AppDataRecord, ConnectionState, EncodeError, EncryptError};

/// Octets asked of the socket per read between bulk transfers (a command line, a
/// ClientHello).
const READ_SMALL: usize = 2048;
/// Octets asked of the socket per read once a read has filled [`READ_SMALL`] (bulk data:
/// two full records).
const READ_LARGE: usize = 2 * MAX_RECORD;
/// The largest TLS record on the wire: a 5-octet header and 2^14 + 2048 octets of
/// ciphertext (RFC 5246 §6.2.3; TLS 1.3 allows less, RFC 8446 §5.2).
const MAX_RECORD: usize = 5 + 16384 + 2048;
/// The most unprocessed TLS input held: a handshake message of up to 64 KiB (rustls's own
/// limit) joined across records, plus one record.
const MAX_INCOMING: usize = 0xffff + MAX_RECORD;
/// Plaintext octets encrypted per `poll_write` call (four full records).
const WRITE_CHUNK: usize = 64 * 1024;
/// Encrypted octets queued for the socket before `poll_write` waits for it to drain.
const OUTGOING_HIGH: usize = 64 * 1024;

/// A TLS server connection over `IO` (an accepted TCP stream, or the plain stream after
/// STARTTLS/STLS), made by [`accept`]. Reads give the decrypted application data and end
/// (0 octets) after the client's close_notify or the end of the stream; writes encrypt,
/// and the records go out as the socket takes them (`poll_flush` waits for all of them).
/// `poll_shutdown` sends close_notify (RFC 8446 §6.1) and shuts the stream down.
pub struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// TLS octets read and not yet processed (at most [`MAX_INCOMING`]).
    incoming: BytesMut,
    /// The last read filled [`READ_SMALL`]: the next one asks for [`READ_LARGE`].
    bulk: bool,
    /// Application data decrypted and not yet read.
    plain: BytesMut,
    /// TLS octets to write; the first `sent` of them are written.
    outgoing: Vec<u8>,
    sent: usize,
    /// The client sent close_notify, or its stream ended: reads give end of file.
    peer_closed: bool,
    /// close_notify is queued: nothing more may be written.
    closed: bool,
    /// The task waiting in `poll_read`, woken if a write processes input for it.
    reader: Option<Waker>,
}

/// What [`TlsStream::process`] is asked for.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Only to process input (handshake messages, application data, alerts).
    Input,
    /// To encrypt these octets (not empty).
    Write(&'a [u8]),
    /// To queue close_notify.
    Close,
}

/// Where [`TlsStream::process`] stopped.
enum Step {
    /// Every complete record is processed; more input is needed to go on.
    NeedInput,
    /// The octets asked for are encrypted (or close_notify is queued).
    Done(usize),
    /// The connection is closed both ways.
    Closed,
}

/// Runs the server side of a TLS handshake on `io` with `config` and gives the
/// connection once the handshake is complete and every handshake record (and the TLS 1.3
/// session tickets) is written.
///
/// # Errors
/// The handshake failed (the reason as `InvalidData`; the alert is sent when the socket
/// takes it at once), the stream ended or failed during it.
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = TlsStream {
        io,
        conn,
        incoming: BytesMut::new(),
        bulk: false,
        plain: BytesMut::new(),
        outgoing: Vec::new(),
        sent: 0,
        peer_closed: false,
        closed: false,
        reader: None,
    };
    std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl<IO> TlsStream<IO> {
    /// Octets held in the stream's own buffers now (capacity of the three): 0 while the
    /// session waits for a silent client.
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.outgoing.capacity()
    }

    /// Processes the complete records in `incoming` until rustls needs more input, or
    /// has done what `want` asks. Decrypted data goes straight to `read` while it has
    /// room for whole records (the reader's own buffer: no copy held here), the rest to
    /// `plain`; TLS output goes to `outgoing`.
    fn process(&mut self, want: Want<'_>, mut read: Option<&mut ReadBuf<'_>>) -> io::Result<Step> {
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.incoming.advance(discard);
                    self.queue_alert();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let step = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let AppDataRecord { discard: used, payload, .. } =
                            record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        discard += used;
                        match read.as_deref_mut() {
                            Some(out) if self.plain.is_empty() && out.remaining() >= payload.len() => {
                                out.put_slice(payload);
                            }
                            _ => self.plain.extend_from_slice(payload),
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append(&mut self.outgoing, 0, |out| data.encode(out).map_err(encode_error))?;
                    None
                }
                // Everything encoded is in `outgoing`; it is written by the next write,
                // flush or handshake step.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Step::NeedInput),
                ConnectionState::WriteTraffic(mut traffic) => match want {
                    Want::Input => Some(Step::NeedInput),
                    Want::Write(octets) => {
                        // Per record: header 5, content type 1, tag 16 (TLS 1.2: nonce 8).
                        let estimate = octets.len() + octets.len().div_ceil(16384) * 32;
                        append(&mut self.outgoing, estimate, |out| {
                            traffic.encrypt(octets, out).map_err(encrypt_error)
                        })?;
                        Some(Step::Done(octets.len()))
                    }
                    Want::Close => {
                        append(&mut self.outgoing, 64, |out| traffic.queue_close_notify(out).map_err(encrypt_error))?;
                        Some(Step::Done(0))
                    }
                },
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Step::Closed),
                // Early data is off (`max_early_data_size` 0), so none is offered.
                ConnectionState::ReadEarlyData(_) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS early data"));
                }
                _ => return Err(io::Error::other("unknown TLS connection state")),
            };
            self.incoming.advance(discard);
            if let Some(step) = step {
                return Ok(step);
            }
        }
    }

    /// After a processing error rustls holds the alert to send: encode it so the next
    /// write attempt sends it (best effort; the connection is over either way). rustls
    /// is given the input as it stands (its deframer remembers how far into it it got,
    /// and an empty buffer there made it index out of range).
    fn queue_alert(&mut self) {
        let status = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state {
            let _ = append(&mut self.outgoing, 0, |out| data.encode(out).map_err(encode_error));
        }
    }

    /// Gives back every buffer that holds nothing (the session is about to wait).
    fn release_idle(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = BytesMut::new();
            self.bulk = false;
        }
        if self.plain.is_empty() {
            self.plain = BytesMut::new();
        }
        if self.sent == self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Writes `outgoing` to the socket until all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads more TLS input into `incoming`: the number of octets (0 at the end of the
    /// stream). While the socket has nothing, the idle buffers are given back.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message too large")));
        }
        let want = if self.bulk { READ_LARGE } else { READ_SMALL };
        self.incoming.reserve(want.min(MAX_INCOMING - self.incoming.len()));
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.incoming) {
            Poll::Pending => {
                self.release_idle();
                Poll::Pending
            }
            Poll::Ready(Ok(n)) => {
                self.bulk = n >= READ_SMALL;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    /// Drives the handshake: processes input, writes what rustls answers, reads more.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.process(Want::Input, None) {
                Ok(Step::NeedInput | Step::Done(_)) => {}
                Ok(Step::Closed) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Err(e) => {
                    // Send the alert if the socket takes it now; the error stands.
                    let _ = self.poll_send(cx);
                    return Poll::Ready(Err(e));
                }
            }
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.peer_closed || ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended in the TLS handshake",
                )));
            }
        }
    }
}

/// Appends what `f` encodes to `out`, giving it `estimate` octets first and, when that is
/// too small, the size `f` asks for (its `Err(Ok(size))`).
fn append(
    out: &mut Vec<u8>,
    estimate: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Result<usize, io::Error>>,
) -> io::Result<()> {
    let at = out.len();
    out.resize(at + estimate, 0);
    let n = match f(&mut out[at..]) {
        Ok(n) => n,
        Err(Ok(required)) => {
            out.resize(at + required, 0);
            match f(&mut out[at..]) {
                Ok(n) => n,
                Err(Ok(_)) => {
                    out.truncate(at);
                    return Err(io::Error::other("TLS output size changed"));
                }
                Err(Err(e)) => {
                    out.truncate(at);
                    return Err(e);
                }
            }
        }
        Err(Err(e)) => {
            out.truncate(at);
            return Err(e);
        }
    };
    out.truncate(at + n);
    Ok(())
}

/// An encoding error as [`append`] takes it: the size needed, or the failure.
fn encode_error(e: EncodeError) -> Result<usize, io::Error> {
    match e {
        EncodeError::InsufficientSize(s) => Ok(s.required_size),
        e => Err(io::Error::other(e)),
    }
}

/// An encryption error as [`append`] takes it: the size needed, or the failure.
fn encrypt_error(e: EncryptError) -> Result<usize, io::Error> {
    match e {
        EncryptError::InsufficientSize(s) => Ok(s.required_size),
        e => Err(io::Error::other(e)),
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let filled = buf.filled().len();
            if let Step::Closed = this.process(Want::Input, Some(buf))? {
                this.peer_closed = true;
            }
            if buf.filled().len() > filled {
                return Poll::Ready(Ok(()));
            }
            if !this.plain.is_empty() || this.peer_closed {
                continue;
            }
            match this.poll_fill(cx) {
                Poll::Pending => {
                    if !this.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        this.reader = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    this.peer_closed = true;
                    if !this.incoming.is_empty() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "stream ended inside a TLS record",
                        )));
                    }
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.outgoing.len() - this.sent >= OUTGOING_HIGH {
            ready!(this.poll_send(cx))?;
        }
        let chunk = &data[..data.len().min(WRITE_CHUNK)];
        let (plain, peer_closed) = (this.plain.len(), this.peer_closed);
        let step = this.process(Want::Write(chunk), None);
        // Input processed on the way is the reader's: wake it if it waits.
        if (this.plain.len() > plain || this.peer_closed != peer_closed)
            && let Some(w) = this.reader.take()
        {
            w.wake();
        }
        match step? {
            Step::Done(n) => {
                // The records go out as far as the socket takes them now; `poll_flush`
                // waits for the rest.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(n))
            }
            Step::NeedInput => Poll::Ready(Err(io::Error::other("TLS handshake not complete"))),
            Step::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            this.closed = true;
            // No close_notify when the connection is already closed or broken.
            let _ = this.process(Want::Close, None);
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCert;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

    fn setup(
        versions: &[&'static tokio_rustls::rustls::SupportedProtocolVersion],
    ) -> (tempfile::TempDir, Arc<ServerConfig>, tokio_rustls::TlsConnector) {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::generate(dir.path());
        let server = crate::net::tls::load_server_config(&cert.cert, &cert.key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from(cert.der.clone())).unwrap();
        let client = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (dir, server, tokio_rustls::TlsConnector::from(Arc::new(client)))
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// Both ways at once through `tokio::io::split` (as the daemons use it), in odd-sized
    /// writes, on TLS 1.3 and TLS 1.2; then close_notify each way.
    #[tokio::test]
    async fn carries_every_octet_both_ways_and_closes_cleanly() {
        use tokio_rustls::rustls::version::{TLS12, TLS13};
        for versions in [&[&TLS13][..], &[&TLS12][..]] {
            let (_dir, server_cfg, connector) = setup(versions);
            let (client_io, server_io) = tokio::io::duplex(37 * 1024);
            let server = tokio::spawn(async move {
                let tls = accept(server_cfg, server_io).await.unwrap();
                let (mut r, mut w) = tokio::io::split(tls);
                let writer = tokio::spawn(async move {
                    let data = pattern(1_000_003, 7);
                    for piece in data.chunks(70_001) {
                        w.write_all(piece).await.unwrap();
                    }
                    w.flush().await.unwrap();
                    w
                });
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                let mut w = writer.await.unwrap();
                w.shutdown().await.unwrap();
                got
            });
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, client_io).await.unwrap();
            let (mut r, mut w) = tokio::io::split(tls);
            let sent = pattern(777_777, 11);
            let to_send = sent.clone();
            let writer = tokio::spawn(async move {
                for piece in to_send.chunks(1_000) {
                    w.write_all(piece).await.unwrap();
                }
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert!(got == pattern(1_000_003, 7), "server to client: {} octets", got.len());
            assert!(server.await.unwrap() == sent, "client to server");
        }
    }

    /// Reads into buffers larger than a record (decrypted straight into them) and smaller
    /// than one (the rest held and handed out first) give every octet in order, and a
    /// large read holds nothing of its own once it is done.
    #[tokio::test]
    async fn reads_of_every_size_keep_the_order() {
        let (_dir, server_cfg, connector) = setup(tokio_rustls::rustls::DEFAULT_VERSIONS);
        let (client_io, server_io) = tokio::io::duplex(256 * 1024);
        let sent = pattern(300_000, 5);
        let to_send = sent.clone();
        let client = tokio::spawn(async move {
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, client_io).await.unwrap();
            for piece in to_send.chunks(50_000) {
                tls.write_all(piece).await.unwrap();
                tls.flush().await.unwrap();
            }
            tls
        });
        let mut tls = accept(server_cfg, server_io).await.unwrap();
        let mut got = Vec::new();
        let mut sizes = [100usize, 40_000, 7, 20_000, 16_384].into_iter().cycle();
        while got.len() < sent.len() {
            let mut buf = vec![0u8; sizes.next().unwrap()];
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended after {} octets", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == sent, "{} octets, not in order", got.len());
        assert_eq!(tls.plain.len(), 0, "nothing left over");
        let mut one = [0u8; 1];
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), tls.read(&mut one)).await;
        assert!(waiting.is_err());
        assert_eq!(tls.buffered_capacity(), 0);
        drop(client.await.unwrap());
    }

    /// A silent client costs no buffer; one that speaks gets its data, and the buffers
    /// go again when it is silent once more.
    #[tokio::test]
    async fn holds_no_buffer_while_the_client_is_silent() {
        let (_dir, server_cfg, connector) = setup(tokio_rustls::rustls::DEFAULT_VERSIONS);
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let client = tokio::spawn(async move {
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, client_io).await.unwrap()
        });
        let mut tls = accept(server_cfg, server_io).await.unwrap();
        let mut client = client.await.unwrap();
        let mut buf = [0u8; 64];
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), tls.read(&mut buf)).await;
        assert!(waiting.is_err());
        assert_eq!(tls.buffered_capacity(), 0);
        client.write_all(&pattern(50_000, 3)).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0; 50_000];
        tls.read_exact(&mut got).await.unwrap();
        assert!(got == pattern(50_000, 3));
        tls.write_all(b"250 OK\r\n").await.unwrap();
        tls.flush().await.unwrap();
        let mut reply = [0u8; 8];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"250 OK\r\n");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), tls.read(&mut buf)).await;
        assert!(waiting.is_err());
        assert_eq!(tls.buffered_capacity(), 0);
        // The client leaves without close_notify: the read ends.
        drop(client);
        assert_eq!(tls.read(&mut buf).await.unwrap(), 0);
    }

    /// A handshake message announced larger than rustls's limit, sent record after
    /// record, ends the handshake with an error once the input held reaches its bound
    /// (or rustls refuses the length), not with the input growing without end.
    #[tokio::test]
    async fn refuses_a_handshake_message_without_end() {
        let (_dir, server_cfg, _) = setup(tokio_rustls::rustls::DEFAULT_VERSIONS);
        let (mut client, server_io) = tokio::io::duplex(256 * 1024);
        let feed = tokio::spawn(async move {
            // A ClientHello announcing 16 MiB, then records of it until the server stops.
            let mut first = vec![22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff];
            first.resize(5 + 0x4000, 0);
            if client.write_all(&first).await.is_err() {
                return;
            }
            let mut more = vec![22, 3, 1, 0x40, 0x00];
            more.resize(5 + 0x4000, 0);
            for _ in 0..64 {
                if client.write_all(&more).await.is_err() {
                    return;
                }
            }
        });
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), accept(server_cfg, server_io))
            .await
            .expect("refused, not waiting")
            .err()
            .expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        feed.abort();
    }

    /// What is not TLS ends the handshake with an error, not a hang or a panic; so does
    /// a stream that ends in the middle of it.
    #[tokio::test]
    async fn refuses_what_is_not_tls() {
        let (_dir, server_cfg, _) = setup(tokio_rustls::rustls::DEFAULT_VERSIONS);
        let (mut client, server_io) = tokio::io::duplex(4096);
        client.write_all(b"EHLO example.org\r\n").await.unwrap();
        let e = accept(server_cfg.clone(), server_io).await.err().expect("not TLS");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // The server answered with an alert record (content type 21).
        let mut alert = [0u8; 1];
        client.read_exact(&mut alert).await.unwrap();
        assert_eq!(alert[0], 21);

        let (mut client, server_io) = tokio::io::duplex(4096);
        client.write_all(&[22, 3, 1, 0, 200, 1, 0]).await.unwrap();
        drop(client);
        let e = accept(server_cfg, server_io).await.err().expect("cut short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}

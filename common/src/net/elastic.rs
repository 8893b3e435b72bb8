//! A buffered reader whose buffer follows the traffic (issue 16: idle connections must
//! cost next to nothing). tokio's `BufReader` keeps its 8 KiB for the life of the
//! connection; with ten thousand idle clients that alone is 80 MB. [`ElasticReader`]
//! holds no buffer while it waits for the peer, reads into [`SMALL`] octets when a
//! command line is expected, and into [`LARGE`] octets while a read fills the whole
//! buffer (bulk data such as SMTP DATA), falling back to small once the bulk is over.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// Octets read at a time between bulk transfers: a command line or a pipelined batch of
/// them.
pub const SMALL: usize = 1024;
/// Octets read at a time during a bulk transfer.
pub const LARGE: usize = 64 * 1024;

/// A buffered reader over `R` whose buffer is taken when data arrives and given back
/// when it has all been consumed and the peer has nothing more to send.
#[derive(Debug)]
pub struct ElasticReader<R> {
    inner: R,
    /// The octets read and not yet consumed.
    buf: BytesMut,
    /// The last read brought at least [`SMALL`] octets: more is likely on its way, so
    /// the next read gets [`LARGE`].
    bulk: bool,
}

impl<R> ElasticReader<R> {
    /// A reader over `inner`, holding no buffer yet.
    pub fn new(inner: R) -> Self {
        ElasticReader { inner, buf: BytesMut::new(), bulk: false }
    }

    /// The octets read and not yet consumed.
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// The octets of buffer held now past those consumed (0 while idle).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The underlying stream (for writing; reading from it directly skips the buffer).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The underlying stream; unread buffered octets are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ElasticReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let unread = std::task::ready!(Pin::new(&mut *this).poll_fill_buf(cx))?;
        let n = unread.len().min(out.remaining());
        out.put_slice(&unread[..n]);
        Pin::new(this).consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for ElasticReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if this.bulk {
                // Reuses the large allocation once it has all been consumed.
                this.buf.reserve(LARGE);
            } else {
                this.buf = BytesMut::with_capacity(SMALL);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
                Poll::Pending => {
                    // Nothing to read: hold no memory while the peer is silent, and
                    // start small again when it speaks.
                    this.buf = BytesMut::new();
                    this.bulk = false;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(n)) => this.bulk = n >= SMALL,
            }
        }
        Poll::Ready(Ok(&this.buf))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.buf.advance(amt.min(this.buf.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_everything_in_order_and_holds_nothing_while_idle() {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let mut r = ElasticReader::new(server);
        assert_eq!(r.capacity(), 0);
        // A command line: read into a small buffer.
        client.write_all(b"NOOP\r\nQUIT\r\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "NOOP\r\n");
        assert!((1..=SMALL).contains(&r.capacity()), "{}", r.capacity());
        assert_eq!(r.buffer(), b"QUIT\r\n");
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line, "QUIT\r\n");
        // Bulk: 200 KiB arrive; reads grow to LARGE and every octet comes through.
        let bulk: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        client.write_all(&bulk).await.unwrap();
        let mut got = vec![0; bulk.len()];
        let mut largest = 0;
        let mut at = 0;
        while at < got.len() {
            let buf = r.fill_buf().await.unwrap();
            let n = buf.len().min(got.len() - at);
            got[at..at + n].copy_from_slice(&buf[..n]);
            r.consume(n);
            at += n;
            largest = largest.max(r.capacity());
        }
        assert_eq!(got, bulk);
        assert!(largest > 32 * SMALL, "reads grew to LARGE: {largest}");
        // The peer goes quiet: a read that has to wait gives the buffer back.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), r.fill_buf()).await;
        assert!(waiting.is_err());
        assert_eq!(r.capacity(), 0);
        // And reading goes on, small again.
        client.write_all(b"more").await.unwrap();
        let mut four = [0; 4];
        r.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"more");
        assert!((1..=SMALL).contains(&r.capacity()), "{}", r.capacity());
        drop(client);
        assert!(r.fill_buf().await.unwrap().is_empty(), "end of stream");
    }
}

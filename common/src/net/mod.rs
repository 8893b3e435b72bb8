//! Transport helpers shared by the daemons: TLS setup, bounded line reading, listeners.

pub mod conn;
pub mod elastic;
pub mod gate;
pub mod line;
pub mod listener;
pub mod proxy;
pub mod shaping;
pub mod stress;
pub mod tls;
pub mod tls_stream;

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Writes all of `out` and flushes within `limit`, then clears `out`. A peer that does
/// not read its replies cannot hold the connection beyond `limit`.
///
/// # Errors
/// I/O errors, or `TimedOut` when `limit` passes.
pub async fn write_out<W: AsyncWrite + Unpin>(w: &mut W, out: &mut Vec<u8>, limit: Duration) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = tokio::time::timeout(limit, async {
        w.write_all(out).await?;
        w.flush().await
    })
    .await;
    out.clear();
    r.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timeout"))?
}

/// A reply text made safe for one protocol line: CR and LF become spaces and the text
/// is cut (on a character boundary) to `max` octets. SMTP (RFC 5321 §4.5.3.1.5) and
/// POP3 (RFC 2449 §4) both cap reply lines at 512 octets including the status and CRLF.
pub fn clamp_line(text: &str, max: usize) -> String {
    let mut out: String = text.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    let mut cut = out.len().min(max);
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    out.truncate(cut);
    out
}

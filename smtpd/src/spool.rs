//! Where a message waits between DATA (or BDAT) and its commit when it is large (issue
//! 16): the octets past `[smtpd] spool_threshold` go to a private temporary file (created
//! unnamed in `[smtpd] spool_dir`, so nothing is left behind whatever happens), so a
//! client's unfinished message costs at most the threshold in memory. At the end the
//! message is read back, under one of `[smtpd] spool_loads` permits, to be checked and
//! stored in one transaction.

use std::io;
use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// A message's octets that left memory: empty (no file) until the first [`push`](Self::push).
#[derive(Debug, Default)]
pub struct Spool {
    file: Option<tokio::fs::File>,
    /// Octets written.
    len: u64,
}

impl Spool {
    /// Octets spooled so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was spooled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `octets`, creating the file in `dir` (empty: the system's temporary
    /// directory) at the first call.
    ///
    /// # Errors
    /// The file cannot be created or written (a missing directory, a full disk).
    pub async fn push(&mut self, dir: &str, octets: &[u8]) -> io::Result<()> {
        if octets.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let dir = if dir.is_empty() { std::env::temp_dir() } else { PathBuf::from(dir) };
                let made = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir)).await??;
                self.file.insert(tokio::fs::File::from_std(made))
            }
        };
        file.write_all(octets).await?;
        self.len += octets.len() as u64;
        Ok(())
    }

    /// The whole message: the spooled octets followed by `tail` (what stayed in memory).
    ///
    /// # Errors
    /// The file cannot be read back.
    pub async fn into_message(self, tail: Vec<u8>) -> io::Result<Vec<u8>> {
        let Some(mut file) = self.file else { return Ok(tail) };
        file.flush().await?;
        file.seek(io::SeekFrom::Start(0)).await?;
        let len = usize::try_from(self.len).map_err(io::Error::other)?;
        let mut message = Vec::with_capacity(len + tail.len());
        file.read_to_end(&mut message).await?;
        if message.len() != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "spool file shorter than written"));
        }
        message.extend_from_slice(&tail);
        Ok(message)
    }
}

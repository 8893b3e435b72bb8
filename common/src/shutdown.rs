//! Graceful shutdown (style.md P5): a cancellation token that accept loops and sessions
//! watch, and a tracker that the daemon waits on with a deadline.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by a daemon's accept loops and connection tasks.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled when the daemon should stop accepting and wind sessions down.
    pub token: CancellationToken,
    /// Tracks every connection task.
    pub tracker: TaskTracker,
}

impl Shutdown {
    /// A fresh, not yet cancelled, shutdown handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels, then waits up to `grace` for every tracked task to end.
    /// Returns whether all ended in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

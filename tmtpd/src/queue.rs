//! Delivery to one online node (spec/tmtp.md §8.2): stop-and-wait, one message in
//! flight; the next only after an Ack with exactly its id; resent after `ack_timeout`
//! seconds without one, or first thing at the next login. Pending messages come from
//! the database in (priority, id) order, so a restart loses nothing and several daemons
//! may share one database (an idle queue also looks again every few seconds, for
//! messages another instance stored).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use common::store::Node;

use crate::hub::{Hub, Link};

/// How often an idle queue looks for messages it was not woken for.
const POLL: Duration = Duration::from_secs(5);
/// Pause after a database error.
const RETRY: Duration = Duration::from_secs(1);

/// The wire form of a message id.
pub fn wire_id(id: i64) -> String {
    format!("{:016x}", id as u64)
}

/// Sends message `id` (header then data chunks) while holding the link's writer.
/// False when the message is gone (acked through another path) or the link failed.
async fn send(hub: &Hub, link: &Link, id: i64) -> Result<bool, common::StoreError> {
    let Some(common::store::TmtpMessage { header, size }) = hub.store.tmtp_message(id).await? else {
        return Ok(false);
    };
    let mut w = link.writer.lock().await;
    if !link.write_locked(&mut w, &header).await {
        return Ok(false);
    }
    let mut sent = 0i64;
    let mut seq = 0i64;
    while sent < size {
        let Some(chunk) = hub.store.tmtp_chunk(id, seq).await? else {
            // A frame cannot be left half written: end the link, the message stays.
            tracing::error!(id = %wire_id(id), seq, "message data missing; closing the link");
            link.closed.cancel();
            return Ok(false);
        };
        if !link.write_locked(&mut w, &chunk).await {
            return Ok(false);
        }
        sent += chunk.len() as i64;
        seq += 1;
    }
    hub.stats
        .batch()
        .update(common::stats::Flag::Persistent, &["total", "deliveries"], 1)
        .update(common::stats::Flag::Persistent, &["total", "bytes-out"], header.len() as i64 + size)
        .send();
    Ok(true)
}

/// Runs the queue of node `key` on `link` until the link closes.
pub async fn run(hub: Arc<Hub>, key: Node, link: Arc<Link>, mut acks: mpsc::Receiver<String>) {
    let (uid, num) = (&key.uid, key.num);
    loop {
        let next = match hub.store.tmtp_next(uid, num).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(cause = %e, "queue lookup failed");
                tokio::select! {
                    () = link.closed.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        let Some(common::store::Queued { message: id, .. }) = next else {
            tokio::select! {
                () = link.closed.cancelled() => return,
                () = link.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            continue;
        };
        let want = wire_id(id);
        'resend: loop {
            match send(&hub, &link, id).await {
                Ok(true) => {}
                Ok(false) if link.closed.is_cancelled() => return,
                Ok(false) => break 'resend,
                Err(e) => {
                    tracing::error!(cause = %e, "reading a queued message failed");
                    tokio::time::sleep(RETRY).await;
                    continue 'resend;
                }
            }
            let deadline = tokio::time::Instant::now() + hub.settings.ack_timeout;
            loop {
                tokio::select! {
                    () = link.closed.cancelled() => return,
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::debug!(id = %want, "no ack; sending again");
                        continue 'resend;
                    }
                    got = acks.recv() => match got {
                        None => return,
                        Some(got) if got == want => {
                            loop {
                                match hub.store.tmtp_ack(uid, num, id).await {
                                    Ok(_) => break,
                                    Err(e) => {
                                        tracing::error!(cause = %e, "recording an ack failed; retrying");
                                        tokio::time::sleep(RETRY).await;
                                    }
                                }
                            }
                            hub.stats.batch()
                                .update(common::stats::Flag::Persistent, &["total", "acks"], 1)
                                .send();
                            break 'resend;
                        }
                        Some(other) => tracing::debug!(id = %other, "ack for a message not in flight; ignored"),
                    },
                }
            }
        }
    }
}

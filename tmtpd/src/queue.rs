//! Delivery to one online node (spec/tmtp.md §8.2): stop-and-wait, one message in
//! flight; the next only after an Ack with exactly its id; resent after `ack_timeout`
//! seconds without one, or first thing at the next login. Messages go in (priority, id)
//! order.
//!
//! A message posted while its recipient is online here is handed to this queue in
//! memory after its commit ([`Link::hand`]): its place in the order, and, up to
//! [`crate::session::HAND_MAX`] bytes, its frame, written without reading it back. The
//! database stays the record: the queue reads its node's rows in pages of [`PAGE`] at
//! login, whenever it was told the database holds more (messages stored by another
//! instance: [`Link::mark_stale`]), when it reaches the end of a page, and every
//! [`POLL`] while idle. A recipient's ack lets the next message go at once; the ack
//! itself is committed with others in one transaction ([`Hub::ack`]).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use common::store::Node;

use crate::hub::{Hub, Link, Outgoing};

/// How often an idle queue reads the database for messages it was not told about.
const POLL: Duration = Duration::from_secs(5);
/// Pause after a database error.
const RETRY: Duration = Duration::from_secs(1);
/// Queue rows read at a time.
pub const PAGE: i64 = 64;
/// Ids acked here remembered, so that a hand-off that raced the database read is not
/// delivered twice.
const RECENT: usize = 1024;

/// The wire form of a message id.
pub fn wire_id(id: i64) -> String {
    format!("{:016x}", id as u64)
}

/// Delivery order: priority byte, then id.
type Key = (u8, i64);

/// What the queue knows of its node's pending messages.
#[derive(Default)]
struct Pending {
    /// In delivery order; the frame when it is in memory.
    messages: BTreeMap<Key, Option<Arc<Outgoing>>>,
    /// The last key of the last page read when that page was full: rows beyond it may
    /// exist in the database that `messages` does not hold, so nothing past it is sent
    /// before the next read.
    horizon: Option<Key>,
    /// Ids acked by this queue lately.
    recent: VecDeque<i64>,
    recent_set: HashSet<i64>,
}

impl Pending {
    fn acked(&mut self, key: Key) {
        self.messages.remove(&key);
        if self.recent.len() == RECENT
            && let Some(old) = self.recent.pop_front()
        {
            self.recent_set.remove(&old);
        }
        self.recent.push_back(key.1);
        self.recent_set.insert(key.1);
    }

    /// Messages handed in memory since the last look: their frames when they came
    /// with them, else only their places in the order.
    fn take(&mut self, handed: Vec<Arc<Outgoing>>) {
        for m in handed {
            if !self.recent_set.contains(&m.id) {
                let key = (m.prio, m.id);
                self.messages.insert(key, m.frame.is_some().then_some(m));
            }
        }
    }

    /// Takes a page of database rows: the first page (`after` None) replaces what is
    /// known; the next page (after the horizon) replaces what is known past it. Frames in
    /// memory are kept and, past a full page, what was handed beyond it.
    fn reload(&mut self, rows: Vec<(u8, i64)>, full: bool, after: Option<Key>, pending_ack: impl Fn(i64) -> bool) {
        let last = rows.last().copied();
        let mut old = match after {
            None => std::mem::take(&mut self.messages),
            Some(a) => self.messages.split_off(&(a.0, a.1.saturating_add(1))),
        };
        for key in rows {
            if pending_ack(key.1) || self.recent_set.contains(&key.1) {
                continue;
            }
            let frame = old.remove(&key).flatten();
            self.messages.insert(key, frame);
        }
        self.horizon = if full { last } else { None };
        if let Some(h) = self.horizon {
            // Handed messages past the page are kept: the next read finds them too.
            self.messages.extend(old.into_iter().filter(|(k, f)| *k > h && f.is_some()));
        }
    }

    /// The next message to send, unless the page after the horizon must be read first.
    fn next(&self) -> Next {
        match (self.messages.first_key_value(), self.horizon) {
            (Some((k, _)), Some(h)) if *k > h => Next::Read(h),
            (None, Some(h)) => Next::Read(h),
            (Some((k, f)), _) => Next::Send(*k, f.clone()),
            (None, None) => Next::Idle,
        }
    }
}

enum Next {
    Send(Key, Option<Arc<Outgoing>>),
    /// Read the page after this key.
    Read(Key),
    Idle,
}

/// What the queue reads from the database next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    Nothing,
    /// The first page: at login, when told, every [`POLL`].
    Start,
    /// The page after a key (the horizon, reached).
    After(Key),
}

/// Chunks ([`crate::conn::CHUNK`] bytes each) read in one query while a message too large for
/// [`Hub::frames`] is written from the database.
const CHUNK_RUN: i64 = 4;

/// Sends message `id` read from the database (or from [`Hub::frames`], where a message
/// read for another node stays a while). A message that fits there is read whole and
/// kept; a larger one is written header first, then its data in runs of [`CHUNK_RUN`]
/// chunks while holding the link's writer. False when the message is gone or the link
/// failed.
async fn send_stored(hub: &Hub, link: &Link, id: i64) -> Result<bool, common::StoreError> {
    if let Some(frame) = hub.frames.get(id) {
        return Ok(sent(hub, frame.len(), link.send(&frame).await));
    }
    let Some(common::store::TmtpMessage { header, size, first }) = hub.store.tmtp_message(id).await? else {
        return Ok(false);
    };
    let total = usize::try_from(size).unwrap_or(usize::MAX).saturating_add(header.len());
    let mut data = first.into_iter().collect::<Vec<_>>();
    if hub.frames.fits(total) {
        // Whole, before taking the writer: the chunks after the first in one query.
        let have: usize = data.iter().map(Vec::len).sum();
        if (have as i64) < size {
            data.extend(hub.store.tmtp_chunks(id, data.len() as i64, size / crate::conn::CHUNK as i64 + 1).await?);
        }
        let mut frame = Vec::with_capacity(total);
        frame.extend_from_slice(&header);
        data.iter().for_each(|c| frame.extend_from_slice(c));
        if frame.len() != total {
            return Ok(missing(link, id, data.len()));
        }
        let frame: std::sync::Arc<[u8]> = frame.into();
        hub.frames.put(id, frame.clone());
        return Ok(sent(hub, total, link.send(&frame).await));
    }
    let mut w = link.writer.lock().await;
    if !link.write_locked(&mut w, &header).await {
        return Ok(false);
    }
    let (mut written, mut seq) = (0i64, 0i64);
    loop {
        for chunk in &data {
            if !link.write_locked(&mut w, chunk).await {
                return Ok(false);
            }
            written += chunk.len() as i64;
            seq += 1;
        }
        if written >= size {
            break;
        }
        data = hub.store.tmtp_chunks(id, seq, CHUNK_RUN).await?;
        if data.is_empty() {
            return Ok(missing(link, id, seq as usize));
        }
    }
    Ok(sent(hub, total, true))
}

/// A stored message whose data is short of its size: a frame cannot be left half
/// written, so the link ends; the message stays queued.
fn missing(link: &Link, id: i64, seq: usize) -> bool {
    tracing::error!(id = %wire_id(id), seq, "message data missing; closing the link");
    link.closed.cancel();
    false
}

/// Counts a delivery of `bytes` if it was `sent`; returns `sent`.
fn sent(hub: &Hub, bytes: usize, sent: bool) -> bool {
    if sent {
        count(hub, bytes as i64);
    }
    sent
}

fn count(hub: &Hub, bytes: i64) {
    hub.stats
        .batch()
        .update(common::stats::Flag::Persistent, &["total", "deliveries"], 1)
        .update(common::stats::Flag::Persistent, &["total", "bytes-out"], bytes)
        .send();
}

/// Sends one message, from memory when it is there. False when it is gone or the link
/// failed.
async fn send(hub: &Hub, link: &Link, id: i64, frame: Option<&Outgoing>) -> Result<bool, common::StoreError> {
    match frame.and_then(|m| m.frame.as_deref()) {
        Some(frame) => Ok(sent(hub, frame.len(), link.send(frame).await)),
        None => send_stored(hub, link, id).await,
    }
}

/// Runs the queue of node `key` on `link` until the link closes.
pub async fn run(hub: Arc<Hub>, key: Node, link: Arc<Link>, mut acks: mpsc::Receiver<String>) {
    let mut pending = Pending::default();
    let mut read = Read::Start;
    loop {
        pending.take(link.take_inbox());
        if link.take_stale() {
            read = Read::Start;
        }
        if read != Read::Nothing {
            let from = match read {
                Read::After(k) => Some(k),
                _ => None,
            };
            let after = from.map(|(prio, message)| common::store::Queued { prio: char::from(prio).into(), message });
            match hub.store.tmtp_queue_page(&key.uid, key.num, after.as_ref(), PAGE).await {
                Ok(rows) => {
                    let full = rows.len() as i64 >= PAGE;
                    let rows = rows.into_iter().map(|q| (q.prio.bytes().next().unwrap_or(b'M'), q.message)).collect();
                    pending.reload(rows, full, from, |id| hub.ack_pending(&key, id));
                    read = Read::Nothing;
                }
                Err(e) => {
                    tracing::error!(cause = %e, "queue lookup failed");
                    tokio::select! {
                        () = link.closed.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => continue,
                    }
                }
            }
        }
        let (k, frame) = match pending.next() {
            Next::Send(k, frame) => (k, frame),
            Next::Read(h) => {
                read = Read::After(h);
                continue;
            }
            Next::Idle => {
                tokio::select! {
                    () = link.closed.cancelled() => return,
                    () = link.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => read = Read::Start,
                }
                continue;
            }
        };
        let id = k.1;
        let want = wire_id(id);
        'resend: loop {
            match send(&hub, &link, id, frame.as_deref()).await {
                Ok(true) => {}
                Ok(false) if link.closed.is_cancelled() => return,
                Ok(false) => {
                    // Gone from the database: acked through another path.
                    pending.messages.remove(&k);
                    break 'resend;
                }
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
                            hub.ack(&key, id);
                            pending.acked(k);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn out(prio: u8, id: i64) -> Arc<Outgoing> {
        Arc::new(Outgoing { prio, id, frame: Some(vec![b'x'].into()) })
    }

    fn order(p: &Pending) -> Vec<Key> {
        p.messages.keys().copied().collect()
    }

    #[test]
    fn handed_messages_join_the_database_order() {
        let mut p = Pending::default();
        p.reload(vec![(b'M', 5), (b'M', 9)], false, None, |_| false);
        p.take(vec![out(b'E', 12), out(b'M', 10)]);
        assert_eq!(order(&p), vec![(b'E', 12), (b'M', 5), (b'M', 9), (b'M', 10)]);
        assert!(matches!(p.next(), Next::Send((b'E', 12), Some(_))));
    }

    #[test]
    fn nothing_past_a_full_page_is_sent_before_the_next_read() {
        let mut p = Pending::default();
        p.take(vec![out(b'M', 100)]);
        p.reload(vec![(b'M', 1), (b'M', 2)], true, None, |_| false);
        // The handed message stays, with its frame, but waits for the next page.
        assert_eq!(order(&p), vec![(b'M', 1), (b'M', 2), (b'M', 100)]);
        p.acked((b'M', 1));
        assert!(matches!(p.next(), Next::Send((b'M', 2), None)));
        p.acked((b'M', 2));
        assert!(matches!(p.next(), Next::Read((b'M', 2))));
        p.reload(vec![(b'M', 3), (b'M', 100)], false, Some((b'M', 2)), |_| false);
        assert!(matches!(p.next(), Next::Send((b'M', 3), None)));
        p.acked((b'M', 3));
        assert!(matches!(p.next(), Next::Send((b'M', 100), Some(_))), "the frame in memory is kept");
    }

    #[test]
    fn acked_messages_are_not_sent_again() {
        let mut p = Pending::default();
        p.reload(vec![(b'M', 1), (b'M', 2)], false, None, |_| false);
        p.acked((b'M', 1));
        // The ack is not committed yet: a read still finds the row; and a hand-off of the
        // same message that raced the read arrives late.
        p.reload(vec![(b'M', 1), (b'M', 2)], false, None, |id| id == 1);
        p.take(vec![out(b'M', 1)]);
        assert_eq!(order(&p), vec![(b'M', 2)]);
        p.acked((b'M', 2));
        assert!(matches!(p.next(), Next::Idle));
    }

    #[test]
    fn a_page_of_acks_not_yet_committed_moves_on_to_the_next() {
        // A full first page whose rows were all acked (commits pending): the queue must
        // read on after it, not read the same page again until the acks are committed.
        let mut p = Pending::default();
        p.reload(vec![(b'M', 1), (b'M', 2)], true, None, |_| true);
        assert!(matches!(p.next(), Next::Read((b'M', 2))));
        p.reload(vec![(b'M', 3)], false, Some((b'M', 2)), |_| false);
        assert!(matches!(p.next(), Next::Send((b'M', 3), None)));
        // The next page keeps what was before the horizon.
        let mut p = Pending::default();
        p.reload(vec![(b'E', 7), (b'M', 1)], true, None, |_| false);
        p.reload(vec![(b'M', 4)], false, Some((b'M', 1)), |_| false);
        assert_eq!(order(&p), vec![(b'E', 7), (b'M', 1), (b'M', 4)]);
    }
}

//! Frames of recent messages, shared by every queue of the daemon: a message posted to
//! a group goes to each of its members' nodes, most of them within moments of each
//! other, and each of those deliveries would otherwise read the same header and data
//! back from the database (spec/tmtp.md §8.2 keeps a queue per node, not per message).
//! Least recently used frames go first once the whole exceeds its byte budget. A frame
//! is the message exactly as written to a link (length digits, JSON header, data), so
//! a hit costs no database round trip at all; ids are never reused, so a frame kept
//! after its message was acked by everyone is never asked for again and simply ages
//! out.

use std::sync::{Arc, Mutex};

use hashlink::LruCache;

/// Recent frames by message id, within a budget of bytes.
pub struct Frames {
    inner: Mutex<Inner>,
    /// Budget: bytes of frames held at most.
    budget: usize,
}

struct Inner {
    lru: LruCache<i64, Arc<[u8]>>,
    /// Bytes of the frames held.
    bytes: usize,
}

impl Frames {
    /// An empty cache holding at most `budget` bytes of frames; a frame larger than
    /// 1/32 of the budget is not kept (it would push out many small ones, and a delivery
    /// that reads a message to keep it holds it whole meanwhile). A budget of 0 keeps
    /// nothing.
    pub fn new(budget: usize) -> Frames {
        Frames { inner: Mutex::new(Inner { lru: LruCache::new_unbounded(), bytes: 0 }), budget }
    }

    /// Whether a frame of `len` bytes would be kept.
    pub fn fits(&self, len: usize) -> bool {
        len > 0 && len <= self.budget / 32
    }

    /// The frame of message `id`, if held (it becomes the most recently used).
    pub fn get(&self, id: i64) -> Option<Arc<[u8]>> {
        self.lock().lru.get(&id).cloned()
    }

    /// Keeps `frame` as message `id`'s, unless it does not [`fit`](Frames::fits); the
    /// least recently used frames go until the budget holds.
    pub fn put(&self, id: i64, frame: Arc<[u8]>) {
        if !self.fits(frame.len()) {
            return;
        }
        let mut inner = self.lock();
        inner.bytes += frame.len();
        if let Some(old) = inner.lru.insert(id, frame) {
            inner.bytes -= old.len();
        }
        while inner.bytes > self.budget {
            let Some((_, old)) = inner.lru.remove_lru() else { break };
            inner.bytes -= old.len();
        }
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Arc<[u8]> {
        vec![7u8; len].into()
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let f = Frames::new(3200);
        for id in 1..=32 {
            f.put(id, frame(100));
        }
        assert_eq!(f.bytes(), 3200);
        // Using 1 makes 2 the oldest: the next frame pushes out 2, not 1.
        assert!(f.get(1).is_some());
        f.put(33, frame(100));
        assert_eq!(f.bytes(), 3200);
        assert!(f.get(2).is_none());
        assert!(f.get(1).is_some() && f.get(33).is_some() && f.get(3).is_some());
        // The same id again replaces its frame and counts its bytes once.
        f.put(33, frame(50));
        assert_eq!(f.bytes(), 3150);
        assert_eq!(f.get(33).map(|b| b.len()), Some(50));
    }

    #[test]
    fn a_frame_over_a_32nd_of_the_budget_is_not_kept() {
        let f = Frames::new(3200);
        assert!(f.fits(100) && !f.fits(101) && !f.fits(0));
        f.put(1, frame(101));
        assert!(f.get(1).is_none());
        assert_eq!(f.bytes(), 0);
        let none = Frames::new(0);
        none.put(1, frame(1));
        assert!(none.get(1).is_none());
    }
}

//! Frames of recent messages, shared by every queue of the daemon: a message posted to
//! a group goes to each of its members' nodes, most of them within moments of each
//! other, and each of those deliveries would otherwise read the same header and data
//! back from the database (spec/tmtp.md §8.2 keeps a queue per node, not per message).
//! Least recently used frames go first once the whole exceeds its byte budget. A frame
//! is the message exactly as written to a link (length digits, JSON header, data), so
//! a hit costs no database round trip at all; ids are never reused, so a frame kept
//! after its message was acked by everyone is never asked for again and simply ages
//! out.
//!
//! Small frames (at most 1/1024 of the budget: 8 KiB of the daemon's 8 MiB, the size
//! handed to online recipients in memory) have a quarter of the budget to themselves
//! and larger ones the rest, so that large ones never push out small ones: every read
//! saved costs one round trip whatever the frame's size, and one 250,000-byte post
//! would otherwise take the place of a hundred small ones. Under the 100-client TMTP
//! load with one budget for all, the queues read 1,800-2,200 messages back from the
//! database, where a budget large enough for everything read 139 (issue 19).

use std::sync::{Arc, Mutex};

use hashlink::LruCache;

/// Recent frames by message id, within a budget of bytes.
pub struct Frames {
    /// Small frames (`[0]`, within a quarter of the budget) and larger ones (`[1]`,
    /// within the rest).
    tiers: [Mutex<Tier>; 2],
    /// Budget: bytes of frames held at most.
    budget: usize,
}

struct Tier {
    lru: LruCache<i64, Arc<[u8]>>,
    /// Bytes of the frames held.
    bytes: usize,
}

impl Frames {
    /// An empty cache holding at most `budget` bytes of frames, a quarter of it for
    /// frames of at most 1/1024 of the budget; a frame larger than 1/32 of the budget is
    /// not kept (a delivery that reads a message to keep it holds it whole meanwhile). A
    /// budget of 0 keeps nothing.
    pub fn new(budget: usize) -> Frames {
        let tier = || Mutex::new(Tier { lru: LruCache::new_unbounded(), bytes: 0 });
        Frames { tiers: [tier(), tier()], budget }
    }

    /// Whether a frame of `len` bytes would be kept.
    pub fn fits(&self, len: usize) -> bool {
        len > 0 && len <= self.budget / 32
    }

    /// The frame of message `id`, if held (it becomes the most recently used).
    pub fn get(&self, id: i64) -> Option<Arc<[u8]>> {
        self.tiers.iter().find_map(|t| lock(t).lru.get(&id).cloned())
    }

    /// Keeps `frame` as message `id`'s, unless it does not [`fit`](Frames::fits); the
    /// least recently used frames of its tier go until the tier's share holds.
    pub fn put(&self, id: i64, frame: Arc<[u8]>) {
        if !self.fits(frame.len()) {
            return;
        }
        let small = frame.len() <= self.budget / 1024;
        let share = if small { self.budget / 4 } else { self.budget - self.budget / 4 };
        let mut tier = lock(&self.tiers[usize::from(!small)]);
        tier.bytes += frame.len();
        if let Some(old) = tier.lru.insert(id, frame) {
            tier.bytes -= old.len();
        }
        while tier.bytes > share {
            let Some((_, old)) = tier.lru.remove_lru() else { break };
            tier.bytes -= old.len();
        }
    }

    /// Bytes of frames held.
    pub fn bytes(&self) -> usize {
        self.tiers.iter().map(|t| lock(t).bytes).sum()
    }
}

fn lock(tier: &Mutex<Tier>) -> std::sync::MutexGuard<'_, Tier> {
    tier.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Arc<[u8]> {
        vec![7u8; len].into()
    }

    /// A cache whose small frames are those of at most 100 bytes, within 25,600 bytes.
    fn cache() -> Frames {
        Frames::new(102_400)
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let f = cache();
        for id in 1..=256 {
            f.put(id, frame(100));
        }
        assert_eq!(f.bytes(), 25_600);
        // Using 1 makes 2 the oldest: the next frame pushes out 2, not 1.
        assert!(f.get(1).is_some());
        f.put(257, frame(100));
        assert_eq!(f.bytes(), 25_600);
        assert!(f.get(2).is_none());
        assert!(f.get(1).is_some() && f.get(257).is_some() && f.get(3).is_some());
        // The same id again replaces its frame and counts its bytes once.
        f.put(257, frame(50));
        assert_eq!(f.bytes(), 25_550);
        assert_eq!(f.get(257).map(|b| b.len()), Some(50));
    }

    #[test]
    fn large_frames_never_push_out_small_ones() {
        let f = cache();
        for id in 1..=256 {
            f.put(id, frame(100));
        }
        // Larger frames share the other 76,800 bytes: 24 of 3200 bytes fit, and every
        // small frame is still there.
        for id in 1000..1100 {
            f.put(id, frame(3200));
        }
        assert!((1..=256).all(|id| f.get(id).is_some()), "a small frame was pushed out");
        assert!((1076..1100).all(|id| f.get(id).is_some()) && f.get(1075).is_none());
        assert_eq!(f.bytes(), 25_600 + 24 * 3200);
    }

    #[test]
    fn a_frame_over_a_32nd_of_the_budget_is_not_kept() {
        let f = cache();
        assert!(f.fits(3200) && !f.fits(3201) && !f.fits(0));
        f.put(1, frame(3201));
        assert!(f.get(1).is_none());
        assert_eq!(f.bytes(), 0);
        let none = Frames::new(0);
        none.put(1, frame(1));
        assert!(none.get(1).is_none());
    }
}

//! The expiry queue: a min-heap of (expires_at_ms, hold slot), so expiring due holds costs
//! O(log n) per hold and never scans all holds.
//!
//! Entries are invalidated lazily: confirming, releasing or extending a hold leaves its old entry
//! in the heap, and the entry is skipped when it comes due if the hold is no longer held or now
//! expires at another time. To keep the heap O(live holds), it is rebuilt without stale entries
//! when they outnumber live holds by `EXPIRY_QUEUE_STALE_FACTOR`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::limits::{EXPIRY_QUEUE_COMPACT_LEN_MIN, EXPIRY_QUEUE_STALE_FACTOR};

#[derive(Debug, Default, Clone)]
pub(crate) struct ExpiryQueue {
    heap: BinaryHeap<Reverse<(u64, u32)>>,
}

impl ExpiryQueue {
    pub(crate) fn push(&mut self, expires_at_ms: u64, slot: u32) {
        self.heap.push(Reverse((expires_at_ms, slot)));
    }

    /// Removes and returns the earliest entry due at `now_ms` (expires_at_ms <= now_ms).
    #[inline]
    pub(crate) fn pop_due(&mut self, now_ms: u64) -> Option<(u64, u32)> {
        match self.heap.peek() {
            Some(Reverse((expires_at_ms, _))) if *expires_at_ms <= now_ms => {
                self.heap.pop().map(|Reverse(entry)| entry)
            }
            _ => None,
        }
    }

    /// The time of the earliest entry (which may be stale).
    pub(crate) fn next_ms(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((expires_at_ms, _))| *expires_at_ms)
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether stale entries now outnumber `live` enough to make a rebuild worth it.
    #[inline]
    pub(crate) fn wants_compaction(&self, live: usize) -> bool {
        let len = self.heap.len();
        len >= EXPIRY_QUEUE_COMPACT_LEN_MIN
            && len > live.saturating_add(1).saturating_mul(EXPIRY_QUEUE_STALE_FACTOR + 1)
    }

    /// Keeps only the entries for which `is_live(expires_at_ms, slot)` holds.
    pub(crate) fn retain(&mut self, mut is_live: impl FnMut(u64, u32) -> bool) {
        self.heap.retain(|Reverse((expires_at_ms, slot))| is_live(*expires_at_ms, *slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_only_due_entries_in_order() {
        let mut queue = ExpiryQueue::default();
        queue.push(30, 3);
        queue.push(10, 1);
        queue.push(20, 2);
        assert_eq!(queue.pop_due(9), None);
        assert_eq!(queue.pop_due(20), Some((10, 1)));
        assert_eq!(queue.pop_due(20), Some((20, 2)));
        assert_eq!(queue.pop_due(20), None);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn compaction_is_wanted_only_for_large_stale_queues() {
        let mut queue = ExpiryQueue::default();
        for slot in 0..EXPIRY_QUEUE_COMPACT_LEN_MIN as u32 {
            queue.push(u64::from(slot), slot);
        }
        assert!(!queue.wants_compaction(EXPIRY_QUEUE_COMPACT_LEN_MIN));
        assert!(queue.wants_compaction(10));
        queue.retain(|_, slot| slot < 10);
        assert_eq!(queue.len(), 10);
        assert!(!queue.wants_compaction(10));
    }
}

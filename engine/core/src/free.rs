//! The free slots of a table whose records can be removed (forgotten holds, deleted
//! partitions' holds), handed out lowest first.
//!
//! Lowest first makes the slot a new record gets a function of *which* slots are free, not of
//! the order in which they were freed, so an engine restored from a snapshot (which knows the
//! free slots, not their history) hands out exactly the slots the engine that wrote it would.
//!
//! Two levels of bits: a bit per slot (set: free) and a bit per word of those (set: the word has
//! a free slot), plus the lowest summary word that may be non-zero, so finding the lowest free
//! slot reads a few words. Invariant: `summary` bit `w` is set exactly when `words[w] != 0`;
//! every summary word below `low` is zero.

#[derive(Debug, Clone, Default)]
pub(crate) struct FreeSlots {
    words: Vec<u64>,
    summary: Vec<u64>,
    /// Summary words before this one are all zero.
    low: usize,
    len: usize,
}

impl FreeSlots {
    /// How many slots are free.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Marks `slot` free. It must not be free already.
    pub(crate) fn free(&mut self, slot: u32) {
        let slot = slot as usize;
        let (word, bit) = (slot / 64, slot % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
            self.summary.resize(word / 64 + 1, 0);
        }
        assert!(self.words[word] & (1 << bit) == 0, "invariant broken: slot {slot} freed twice");
        self.words[word] |= 1 << bit;
        self.summary[word / 64] |= 1 << (word % 64);
        self.low = self.low.min(word / 64);
        self.len += 1;
    }

    /// The lowest free slot, no longer free.
    pub(crate) fn take(&mut self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        while self.summary.get(self.low).is_some_and(|&bits| bits == 0) {
            self.low += 1;
        }
        let summary = *self.summary.get(self.low)?;
        let word = self.low * 64 + summary.trailing_zeros() as usize;
        let bits = self.words[word];
        let bit = bits.trailing_zeros() as usize;
        self.words[word] = bits & !(1 << bit);
        if self.words[word] == 0 {
            self.summary[self.low] &= !(1 << (word % 64));
        }
        self.len -= 1;
        u32::try_from(word * 64 + bit).ok()
    }

    /// Whether `slot` is free.
    pub(crate) fn contains(&self, slot: u32) -> bool {
        let slot = slot as usize;
        self.words.get(slot / 64).is_some_and(|word| word & (1 << (slot % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn hands_out_the_lowest_free_slot_whatever_the_order_of_freeing() {
        let mut model = BTreeSet::new();
        let mut free = FreeSlots::default();
        // A deterministic shuffle of frees and takes over a range spanning summary words.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let slot = (state % 9_000) as u32;
            if state.is_multiple_of(3) {
                assert_eq!(free.take(), model.pop_first());
            } else if model.insert(slot) {
                free.free(slot);
            }
            assert_eq!(free.len(), model.len());
        }
        for slot in 0..9_000 {
            assert_eq!(free.contains(slot), model.contains(&slot));
        }
        while let Some(slot) = model.pop_first() {
            assert_eq!(free.take(), Some(slot));
        }
        assert_eq!(free.take(), None);
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn freeing_twice_is_a_broken_invariant() {
        let mut free = FreeSlots::default();
        free.free(3);
        free.free(3);
    }
}

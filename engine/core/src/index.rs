//! A hash index from names to dense slots, one 8-byte entry a bucket: the top 32 bits of the
//! name's hash (its tag) beside the slot. The name itself lives in the record the slot points at.
//!
//! - A lookup reads one cache line of the table for the tag and the slot, then the record, whose
//!   name it compares only when the tags are equal. A table that keeps tags and slots apart
//!   (hashbrown's control bytes and buckets) costs two misses on a large table instead of one.
//! - The bucket of an entry is its tag's top bits, so the table grows from its own entries,
//!   without reading a record or hashing a name again: growth is one sequential pass.
//! - Linear probing, at most half full (a lookup of a new name, the common case for hold ids,
//!   then reads 2.5 buckets on average). A removal shifts the entries after it back into the
//!   gap (backward-shift deletion), so there are no tombstones and lookups never slow down as
//!   holds are forgotten and ids reused.
//!
//! Invariant: every slot in the index is a record whose name hashes to the entry's tag; names
//! are unique in the index; an empty bucket ends every probe sequence.

/// The hasher of an engine's indexes: fast, randomly seeded per process. Lookups and results
/// never depend on hash order, so determinism does not depend on the seed.
pub(crate) type NameHasher = foldhash::fast::RandomState;

/// An empty bucket. No entry equals it: an entry stores its slot plus one, and slots are below
/// the engine's table limits, which are below `u32::MAX`. Zero, so a new table is zeroed memory,
/// which the allocator gets from the OS without writing it.
const EMPTY: u64 = 0;
/// Buckets of the first table.
const BUCKETS_MIN: usize = 8;

/// Buckets an old table may have and still be moved over at once when the index grows; a
/// larger one moves over a few runs at each insert.
const MIGRATE_AT_ONCE_BUCKETS_MAX: usize = 4096;
/// Old buckets moved over per insert while the index grows (at least 2: the old table has
/// twice as many buckets as entries, and must be empty before the new one is half full).
const MIGRATE_BUCKETS_PER_INSERT: usize = 8;

/// One open-addressing table: `tag << 32 | (slot + 1)` per bucket, or `EMPTY`.
#[derive(Debug, Clone)]
struct Table {
    /// The length is zero or a power of two.
    buckets: Box<[u64]>,
    /// `32 - log2(buckets.len())`: a tag's home bucket is `tag >> shift`.
    shift: u32,
}

impl Table {
    fn with_buckets(buckets: usize) -> Table {
        Table {
            buckets: vec![EMPTY; buckets].into_boxed_slice(),
            shift: 32 - buckets.trailing_zeros(),
        }
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        // `shift` is 32 only for the empty table, which no caller indexes.
        (u64::from(tag) >> self.shift) as usize
    }

    #[inline(always)]
    fn find(&self, tag: u32, is_named: &impl Fn(u32) -> bool) -> Option<u32> {
        if self.buckets.is_empty() {
            return None;
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home(tag);
        loop {
            let found = self.buckets[at];
            if found == EMPTY {
                return None;
            }
            if (found >> 32) as u32 == tag && is_named(slot_of(found)) {
                return Some(slot_of(found));
            }
            at = (at + 1) & mask;
        }
    }

    /// Puts `entry` in the first empty bucket from its home.
    #[inline]
    fn place(&mut self, entry: u64) {
        let mask = self.buckets.len() - 1;
        let mut at = self.home((entry >> 32) as u32);
        while self.buckets[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.buckets[at] = entry;
    }

    /// Removes `wanted`; the entries after it on its run move back into the gap when that
    /// brings them closer to home, so every probe sequence still ends at an empty bucket and
    /// finds what it found before.
    fn remove(&mut self, wanted: u64) -> bool {
        if self.buckets.is_empty() {
            return false;
        }
        let mask = self.buckets.len() - 1;
        let mut at = self.home((wanted >> 32) as u32);
        loop {
            match self.buckets[at] {
                EMPTY => return false,
                found if found == wanted => break,
                _ => at = (at + 1) & mask,
            }
        }
        let mut hole = at;
        let mut next = (hole + 1) & mask;
        while self.buckets[next] != EMPTY {
            let moved = self.buckets[next];
            let home = self.home((moved >> 32) as u32);
            // `moved` may fill the hole if its home is not strictly between the hole and it.
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.buckets[hole] = moved;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.buckets[hole] = EMPTY;
        true
    }
}

/// The table an index is growing out of, emptied a few runs at a time.
#[derive(Debug, Clone)]
struct Migration {
    table: Table,
    /// The next old bucket to move.
    cursor: usize,
    /// Old buckets not yet visited.
    left: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct NameIndex {
    table: Table,
    /// Entries in both tables.
    len: usize,
    /// While growing: the previous table. A whole run of it moves at a time, so a lookup that
    /// misses in the new table finds any entry still in the old one.
    old: Option<Migration>,
}

impl Default for NameIndex {
    fn default() -> Self {
        NameIndex { table: Table { buckets: Box::new([]), shift: 32 }, len: 0, old: None }
    }
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[inline]
fn entry(tag: u32, slot: u32) -> u64 {
    u64::from(tag) << 32 | (u64::from(slot) + 1)
}

/// The slot of a non-empty entry.
#[inline]
fn slot_of(entry: u64) -> u32 {
    (entry as u32).wrapping_sub(1)
}

impl NameIndex {
    /// An empty index sized for `entries` names: filling it to that many never grows it.
    pub(crate) fn with_capacity(entries: usize) -> NameIndex {
        if entries == 0 {
            return NameIndex::default();
        }
        let buckets = entries.saturating_mul(2).max(BUCKETS_MIN).next_power_of_two();
        NameIndex { table: Table::with_buckets(buckets), len: 0, old: None }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The slot of the record with this name, whose hash is `hash`: `is_named(slot)` compares a
    /// record's name with it, and is asked only of slots whose tag matches.
    #[inline(always)]
    pub(crate) fn find(&self, hash: u64, is_named: impl Fn(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        match self.table.find(tag, &is_named) {
            Some(slot) => Some(slot),
            None => self.old.as_ref().and_then(|old| old.table.find(tag, &is_named)),
        }
    }

    /// The first slot on `hash`'s probe sequence whose tag matches: almost always the record a
    /// lookup will find, if any. For prefetching it; never a substitute for [`NameIndex::find`].
    #[inline]
    pub(crate) fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Asks the CPU to fetch the bucket where a lookup of `hash` starts, so that lookups of
    /// several names (a hold's items) wait for memory at the same time rather than in turn.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let tag = tag_of(hash);
        if let Some(bucket) = self.table.buckets.get(self.table.home(tag)) {
            crate::prefetch::read(bucket);
        }
        if let Some(old) = &self.old {
            if let Some(bucket) = old.table.buckets.get(old.table.home(tag)) {
                crate::prefetch::read(bucket);
            }
        }
    }

    /// Adds `slot`, whose name (hashing to `hash`) is not in the index yet.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        assert!(slot < u32::MAX, "invariant broken: slot {slot} does not fit an entry");
        if self.old.is_some() {
            self.migrate(MIGRATE_BUCKETS_PER_INSERT);
        }
        // At most half full after the insert.
        if (self.len + 1) * 2 > self.table.buckets.len() {
            self.grow();
        }
        self.table.place(entry(tag_of(hash), slot));
        self.len += 1;
    }

    /// Removes `slot`, whose name hashes to `hash`; returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let wanted = entry(tag_of(hash), slot);
        let removed = self.table.remove(wanted)
            || self.old.as_mut().is_some_and(|old| old.table.remove(wanted));
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Every slot in the index.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        let old = self.old.iter().flat_map(|old| old.table.buckets.iter());
        self.table.buckets.iter().chain(old).copied().filter(|&entry| entry != EMPTY).map(slot_of)
    }

    /// Doubles the table. A small old table moves over at once; a large one a few runs at each
    /// later insert, so no insert pays for moving millions of entries (a stall of hundreds of
    /// milliseconds on a shard's thread at tens of millions of holds).
    #[cold]
    fn grow(&mut self) {
        if self.old.is_some() {
            // Not empty yet (cannot happen at the migration rate above): finish it first.
            self.migrate(usize::MAX);
        }
        let buckets = (self.table.buckets.len() * 2).max(BUCKETS_MIN);
        let old = std::mem::replace(&mut self.table, Table::with_buckets(buckets));
        if old.buckets.len() <= MIGRATE_AT_ONCE_BUCKETS_MAX {
            // Entries come out of the old table almost in home order (all but a wrapped run),
            // so they go into the new one in that order too: both passes stream through memory.
            for entry in old.buckets.iter().copied().filter(|&entry| entry != EMPTY) {
                self.table.place(entry);
            }
            return;
        }
        // Start right after an empty bucket (one exists: the table is at most half full), so
        // the moves below always begin at the start of a run.
        let start = old.buckets.iter().position(|&entry| entry == EMPTY).map_or(0, |at| at + 1);
        let left = old.buckets.len();
        self.old = Some(Migration { table: old, cursor: start, left });
    }

    /// Moves at least `budget` old buckets (then on to the end of the run it is in) into the
    /// new table; drops the old table once it is empty.
    fn migrate(&mut self, budget: usize) {
        let Some(old) = self.old.as_mut() else {
            return;
        };
        let mask = old.table.buckets.len() - 1;
        let mut visited = 0usize;
        while old.left > 0 {
            let entry = std::mem::replace(&mut old.table.buckets[old.cursor], EMPTY);
            old.cursor = (old.cursor + 1) & mask;
            old.left -= 1;
            visited += 1;
            if entry != EMPTY {
                self.table.place(entry);
            } else if visited >= budget {
                // Stopped on an empty bucket: no run is left half moved.
                break;
            }
        }
        if old.left == 0 {
            self.old = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|n| format!("n{n}")).collect()
    }

    /// Looks `name` up among `names` (slot = position), under `hash`.
    fn find(index: &NameIndex, names: &[String], hash: u64, name: &str) -> Option<u32> {
        index.find(hash, |slot| names[slot as usize] == name)
    }

    #[test]
    fn finds_every_name_across_growth_and_nothing_else() {
        let hasher = NameHasher::default();
        let names = names(10_000);
        let mut index = NameIndex::default();
        for (slot, name) in names.iter().enumerate() {
            let hash = hasher.hash_one(name);
            assert_eq!(find(&index, &names, hash, name), None);
            index.insert(hash, slot as u32);
        }
        assert_eq!(index.len(), names.len());
        assert_eq!(
            index.table.buckets.len(),
            32 * 1024,
            "at most half full, and no more than twice"
        );
        for (slot, name) in names.iter().enumerate() {
            let hash = hasher.hash_one(name);
            assert_eq!(find(&index, &names, hash, name), Some(slot as u32));
            // The first entry with the name's tag: the name's own, unless another name shares
            // its 32-bit tag (the hasher is seeded at random, so that happens now and then).
            let candidate = index.candidate(hash).unwrap() as usize;
            assert_eq!(tag_of(hasher.hash_one(&names[candidate])), tag_of(hash));
        }
        assert_eq!(find(&index, &names, hasher.hash_one("m1"), "m1"), None);
    }

    #[test]
    fn an_index_sized_for_its_names_never_grows() {
        let hasher = NameHasher::default();
        for count in [0usize, 1, 4, 5, 1000, 4097] {
            let mut index = NameIndex::with_capacity(count);
            let buckets = index.table.buckets.len();
            for slot in 0..count {
                index.insert(hasher.hash_one(slot), slot as u32);
            }
            assert_eq!(index.table.buckets.len(), buckets, "{count} names");
            assert!(index.old.is_none());
            for slot in 0..count {
                let hash = hasher.hash_one(slot);
                let found = index.find(hash, |other| other as usize == slot);
                assert_eq!(found, Some(slot as u32), "{count} names");
            }
        }
    }

    #[test]
    fn equal_tags_are_told_apart_by_name() {
        let names = names(100);
        let mut index = NameIndex::default();
        // Every name under the same hash: one long probe sequence that wraps around the table.
        let hash = u64::MAX;
        for slot in 0..names.len() as u32 {
            index.insert(hash, slot);
        }
        for (slot, name) in names.iter().enumerate() {
            assert_eq!(find(&index, &names, hash, name), Some(slot as u32));
        }
        assert_eq!(find(&index, &names, hash, "other"), None);
        assert_eq!(find(&index, &names, 0, "n3"), None);
        assert!(index.candidate(hash).is_some_and(|slot| (slot as usize) < names.len()));
    }

    #[test]
    fn removal_keeps_every_other_name_findable() {
        let hasher = NameHasher::default();
        let names = names(5_000);
        let mut index = NameIndex::default();
        for (slot, name) in names.iter().enumerate() {
            index.insert(hasher.hash_one(name), slot as u32);
        }
        // Remove every third name, then check all, then put them back under new slots.
        for (slot, name) in names.iter().enumerate().filter(|(slot, _)| slot % 3 == 0) {
            assert!(index.remove(hasher.hash_one(name), slot as u32));
            assert!(!index.remove(hasher.hash_one(name), slot as u32), "removed twice");
        }
        for (slot, name) in names.iter().enumerate() {
            let found = find(&index, &names, hasher.hash_one(name), name);
            assert_eq!(found, (slot % 3 != 0).then_some(slot as u32), "{name}");
        }
        assert_eq!(index.slots().count(), index.len());
        for (slot, name) in names.iter().enumerate().filter(|(slot, _)| slot % 3 == 0) {
            index.insert(hasher.hash_one(name), slot as u32);
        }
        for (slot, name) in names.iter().enumerate() {
            assert_eq!(find(&index, &names, hasher.hash_one(name), name), Some(slot as u32));
        }
    }

    #[test]
    fn removal_from_wrapped_runs_of_equal_tags() {
        let names = names(60);
        let mut index = NameIndex::default();
        // One run that wraps around the end of the table, under one hash.
        for slot in 0..names.len() as u32 {
            index.insert(u64::MAX, slot);
        }
        for slot in (0..names.len() as u32).step_by(2) {
            assert!(index.remove(u64::MAX, slot));
        }
        for (slot, name) in names.iter().enumerate() {
            let found = find(&index, &names, u64::MAX, name);
            assert_eq!(found, (slot % 2 == 1).then_some(slot as u32));
        }
        assert!(!index.remove(7, 1), "another tag is not removed");
    }

    #[test]
    fn a_large_index_grows_a_few_runs_at_a_time_and_finds_everything_meanwhile() {
        let hasher = NameHasher::default();
        let names = names(40_000);
        let hash = |name: &String| hasher.hash_one(name);
        let mut index = NameIndex::default();
        let mut migrating_seen = false;
        for (slot, name) in names.iter().enumerate() {
            index.insert(hash(name), slot as u32);
            migrating_seen |= index.old.is_some();
            // Every few inserts, everything so far is found, in whichever table it is.
            if slot % 997 == 0 {
                for (earlier, name) in names[..=slot].iter().enumerate() {
                    let removed = earlier % 5 == 2 && earlier + 2 < slot;
                    let found = find(&index, &names, hash(name), name);
                    assert_eq!(found, (!removed).then_some(earlier as u32));
                }
            }
            // Removals while growing, from either table.
            if slot % 5 == 4 {
                assert!(index.remove(hash(&names[slot - 2]), (slot - 2) as u32));
            }
        }
        assert!(migrating_seen, "the test never saw a growth in progress");
        for (slot, name) in names.iter().enumerate() {
            let removed = slot % 5 == 2 && slot + 2 < names.len();
            let found = find(&index, &names, hash(name), name);
            assert_eq!(found, (!removed).then_some(slot as u32), "{name}");
        }
        assert_eq!(index.slots().count(), index.len());
    }

    #[test]
    fn empty_index_finds_nothing() {
        let index = NameIndex::default();
        index.prefetch(7);
        assert_eq!(index.find(7, |_| unreachable!()), None);
        assert_eq!(index.candidate(7), None);
        assert_eq!(index.len(), 0);
    }
}

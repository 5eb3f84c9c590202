//! A hash index from names to dense slots that stores only the slot (4 bytes a bucket): the
//! name and its hash live in the record the slot points at, so a lookup hashes once and compares
//! against the record, and growing the table rehashes from the stored hashes without touching a
//! single name.
//!
//! Invariant: every slot in the index is a valid record whose stored hash is the hash of its
//! name; names are unique in the index.

use hashbrown::HashTable;

/// The hasher of an engine's indexes: fast, randomly seeded per process. Lookups and results
/// never depend on hash order, so determinism does not depend on the seed.
pub(crate) type NameHasher = foldhash::fast::RandomState;

#[derive(Debug, Default, Clone)]
pub(crate) struct NameIndex {
    table: HashTable<u32>,
}

impl NameIndex {
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The slot whose record has this name. `name_of(slot)` reads a record's name.
    #[inline]
    pub(crate) fn find<'a>(
        &self,
        hash: u64,
        name: &str,
        name_of: impl Fn(u32) -> &'a str,
    ) -> Option<u32> {
        self.table.find(hash, |&slot| name_of(slot) == name).copied()
    }

    /// Adds `slot`, whose name is not in the index yet. `hash_of(slot)` reads a record's stored
    /// hash (used when the table grows).
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, slot: u32, hash_of: impl Fn(u32) -> u64) {
        self.table.insert_unique(hash, slot, |&slot| hash_of(slot));
    }
}

//! A growable array stored in fixed-size chunks that can be shared copy-on-write: pushing never
//! moves what is already stored, and a snapshot of the whole array costs one reference count
//! per chunk.
//!
//! - The hold table reaches tens of millions of records. A `Vec` doubles by copying everything,
//!   a stall of hundreds of milliseconds on the shard thread at that size, and needs twice the
//!   memory while it copies; here growth allocates one more chunk (the first chunk grows by
//!   doubling up to a chunk's length, so a small table stays small).
//! - [`Clone`] shares the chunks. Writing to a shared chunk copies that chunk first
//!   (`Arc::make_mut`), so a snapshot taken on the shard thread (a clone) stays frozen while the
//!   shard goes on, and only the chunks written meanwhile are ever copied.
//!
//! Invariant: every chunk but the last holds exactly `CHUNK_LEN` records.

use std::ops::{Index, IndexMut};
use std::sync::Arc;

/// Records per chunk (a power of two, so an index splits with a shift and a mask).
pub(crate) const CHUNK_LEN: usize = 1 << 14;

#[derive(Debug)]
pub(crate) struct ChunkedVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

/// Shares every chunk: O(chunks), no record is copied.
impl<T> Clone for ChunkedVec<T> {
    fn clone(&self) -> Self {
        ChunkedVec { chunks: self.chunks.clone(), len: self.len }
    }
}

impl<T: Clone> ChunkedVec<T> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_LEN => {
                let chunk = Arc::make_mut(chunk);
                if chunk.len() == chunk.capacity() {
                    // Only the first chunk grows by doubling; later ones start whole.
                    chunk.reserve_exact(chunk.len().clamp(1, CHUNK_LEN - chunk.len()));
                }
                chunk.push(value);
            }
            _ => {
                let capacity = if self.chunks.is_empty() { 4 } else { CHUNK_LEN };
                let mut chunk = Vec::with_capacity(capacity);
                chunk.push(value);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK_LEN)?.get(index % CHUNK_LEN)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// How many chunks are shared with a clone (a snapshot still being written).
    #[cfg(test)]
    pub(crate) fn shared_chunks(&self) -> usize {
        self.chunks.iter().filter(|chunk| Arc::strong_count(chunk) > 1).count()
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK_LEN][index % CHUNK_LEN]
    }
}

impl<T: Clone> IndexMut<usize> for ChunkedVec<T> {
    /// Copies the record's chunk first if a clone shares it.
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut Arc::make_mut(&mut self.chunks[index / CHUNK_LEN])[index % CHUNK_LEN]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_chunks_and_never_moves_full_chunks() {
        let mut values = ChunkedVec::default();
        for value in 0..CHUNK_LEN + 1 {
            values.push(value);
        }
        let first = &values[0] as *const usize;
        for value in CHUNK_LEN + 1..3 * CHUNK_LEN + 7 {
            values.push(value);
        }
        assert_eq!(values.len(), 3 * CHUNK_LEN + 7);
        assert_eq!(&values[0] as *const usize, first, "a push moved a record of a full chunk");
        assert!(values.iter().copied().eq(0..3 * CHUNK_LEN + 7));
        for index in [0, CHUNK_LEN - 1, CHUNK_LEN, 2 * CHUNK_LEN + 6, 3 * CHUNK_LEN + 6] {
            assert_eq!(values[index], index);
            assert_eq!(values.get(index), Some(&index));
        }
        assert_eq!(values.get(3 * CHUNK_LEN + 7), None);
        values[CHUNK_LEN] = 42;
        assert_eq!(values[CHUNK_LEN], 42);
    }

    #[test]
    fn a_clone_stays_frozen_and_only_written_chunks_are_copied() {
        let mut values = ChunkedVec::default();
        for value in 0..3 * CHUNK_LEN {
            values.push(value);
        }
        let frozen = values.clone();
        assert_eq!(values.shared_chunks(), 3);
        values[1] = 7;
        values.push(99);
        assert_eq!(values.shared_chunks(), 2, "the written chunk and the new one are private");
        assert_eq!(frozen[1], 1);
        assert_eq!(frozen.len(), 3 * CHUNK_LEN);
        assert!(frozen.iter().copied().eq(0..3 * CHUNK_LEN));
        assert_eq!(values[1], 7);
        drop(frozen);
        assert_eq!(values.shared_chunks(), 0);
    }

    #[test]
    #[should_panic]
    fn indexing_past_the_end_panics() {
        let mut values = ChunkedVec::default();
        values.push(1u8);
        let _ = values[1];
    }
}

//! A growable array stored in fixed-size chunks: pushing never moves what is already stored.
//!
//! The engine keeps every hold for ever, so its hold table reaches tens of millions of records.
//! A `Vec` doubles by copying everything, a stall of hundreds of milliseconds on the shard thread
//! at that size, and needs twice the memory while it copies; here growth allocates one more
//! chunk, and an index costs one more load.

use std::ops::{Index, IndexMut};

/// Records per chunk (a power of two, so an index splits with a shift and a mask).
const CHUNK_LEN: usize = 1 << 14;

#[derive(Debug, Clone)]
pub(crate) struct ChunkedVec<T> {
    /// Every chunk but the last is full; each was allocated with capacity `CHUNK_LEN`.
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec { chunks: Vec::new(), len: 0 }
    }
}

impl<T> ChunkedVec<T> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_LEN => chunk.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK_LEN][index % CHUNK_LEN]
    }
}

impl<T> IndexMut<usize> for ChunkedVec<T> {
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / CHUNK_LEN][index % CHUNK_LEN]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_chunks_and_never_moves_stored_records() {
        let mut values = ChunkedVec::default();
        values.push(0usize);
        let first = &values[0] as *const usize;
        for value in 1..3 * CHUNK_LEN + 7 {
            values.push(value);
        }
        assert_eq!(values.len(), 3 * CHUNK_LEN + 7);
        assert_eq!(&values[0] as *const usize, first, "a push moved a stored record");
        assert!(values.iter().copied().eq(0..3 * CHUNK_LEN + 7));
        for index in [0, CHUNK_LEN - 1, CHUNK_LEN, 2 * CHUNK_LEN + 6, 3 * CHUNK_LEN + 6] {
            assert_eq!(values[index], index);
        }
        values[CHUNK_LEN] = 42;
        assert_eq!(values[CHUNK_LEN], 42);
    }

    #[test]
    #[should_panic]
    fn indexing_past_the_end_panics() {
        let mut values = ChunkedVec::default();
        values.push(1u8);
        let _ = values[1];
    }
}

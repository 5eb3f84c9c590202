//! What the readers of a shard share: its newest records decoded (the tail, for readers near
//! the end) and older ones in blocks (the catch-up cache, for readers behind), both bounded by
//! the memory their changes hold, so a change is read from the log and decoded once however many
//! readers it is served to.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{FeedRequest, Position, SharedChange};

/// Bytes of changes a shard's tail holds at most ([`SharedChange::footprint`]): about 100 000
/// flash-sale changes, a second or two of a busy shard.
pub(crate) const TAIL_BYTES_MAX: usize = 32 << 20;
/// Records per block of the catch-up cache, and the bytes of blocks a shard's cache holds.
pub(crate) const BLOCK_RECORDS: u64 = 1024;
pub(crate) const BLOCKS_BYTES_MAX: usize = 32 << 20;

/// The changes read from one shard: each with its position after it, and where the scan ended.
pub(crate) struct ShardRead {
    pub(crate) changes: VecDeque<(Position, Arc<SharedChange>)>,
    pub(crate) end: Position,
}

impl ShardRead {
    pub(crate) fn from(from: Position) -> ShardRead {
        ShardRead { changes: VecDeque::new(), end: from }
    }

    /// Takes the changes of record `lsn` (the one `end` is in or at) the request wants, and
    /// moves `end` past them; false when the page filled up first (`end` is then at the first
    /// change not taken).
    pub(crate) fn take(
        &mut self,
        lsn: u64,
        changes: &[Arc<SharedChange>],
        request: &FeedRequest,
    ) -> bool {
        debug_assert!(lsn >= self.end.lsn, "records are taken in order");
        let skip = if lsn == self.end.lsn { self.end.skip as usize } else { 0 };
        for (index, change) in changes.iter().enumerate().skip(skip) {
            if self.changes.len() == request.limit {
                self.end = Position { lsn, skip: index as u32 };
                return false;
            }
            if request.partition.as_ref().is_none_or(|p| *p == change.partition) {
                let after = Position { lsn, skip: index as u32 + 1 };
                self.changes.push_back((after, change.clone()));
            }
        }
        self.end = Position::at(lsn + 1);
        true
    }
}

/// The memory a record's changes hold, for the bounds.
fn footprint(changes: &[Arc<SharedChange>]) -> usize {
    changes.iter().map(|change| change.footprint()).sum::<usize>() + 32
}

/// The newest records of a shard's log with their changes decoded: consecutive LSNs up to
/// `next_lsn`, oldest first (a record without changes holds an empty list).
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub(crate) records: VecDeque<(u64, Box<[Arc<SharedChange>]>)>,
    /// The LSN after the last record held (where the next refresh reads).
    pub(crate) next_lsn: u64,
    /// The footprint of the changes held, for the bound.
    bytes: usize,
}

impl Tail {
    /// An empty tail that goes on from record `lsn`.
    pub(crate) fn at(lsn: u64) -> Tail {
        Tail { next_lsn: lsn, ..Tail::default() }
    }

    pub(crate) fn first_lsn(&self) -> u64 {
        self.records.front().map_or(self.next_lsn, |(lsn, _)| *lsn)
    }

    pub(crate) fn push(&mut self, lsn: u64, changes: Box<[Arc<SharedChange>]>) {
        assert_eq!(lsn, self.next_lsn, "a tail holds consecutive records");
        self.bytes += footprint(&changes);
        self.records.push_back((lsn, changes));
        self.next_lsn = lsn + 1;
    }

    pub(crate) fn trim(&mut self, bytes_max: usize) {
        while self.bytes > bytes_max {
            let Some((_, dropped)) = self.records.pop_front() else { break };
            self.bytes -= footprint(&dropped);
        }
    }

    /// Up to `request.limit` changes from `from` (which is at or after the first record held).
    pub(crate) fn read(&self, from: Position, request: &FeedRequest) -> ShardRead {
        let mut read = ShardRead::from(from);
        let start =
            usize::try_from(from.lsn.saturating_sub(self.first_lsn())).unwrap_or(usize::MAX);
        for (lsn, changes) in self.records.range(start.min(self.records.len())..) {
            if !read.take(*lsn, changes, request) {
                break;
            }
        }
        read
    }
}

/// Consecutive records of a shard's log from `first_lsn`, decoded.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) first_lsn: u64,
    pub(crate) records: Vec<Box<[Arc<SharedChange>]>>,
    bytes: usize,
}

impl Block {
    pub(crate) fn starting(first_lsn: u64) -> Block {
        Block { first_lsn, records: Vec::new(), bytes: 0 }
    }

    /// The LSN after the last record held.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.first_lsn + self.records.len() as u64
    }

    pub(crate) fn push(&mut self, lsn: u64, changes: Box<[Arc<SharedChange>]>) {
        assert_eq!(lsn, self.next_lsn(), "a block holds consecutive records");
        self.bytes += footprint(&changes);
        self.records.push(changes);
    }

    /// Where record `lsn` is in the block, if it holds it.
    pub(crate) fn index_of(&self, lsn: u64) -> Option<usize> {
        (self.first_lsn..self.next_lsn()).contains(&lsn).then(|| (lsn - self.first_lsn) as usize)
    }
}

/// A shard's catch-up cache: whole blocks, the most recently loaded last.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    blocks: VecDeque<Arc<Block>>,
    bytes: usize,
}

impl CatchUp {
    pub(crate) fn find(&self, lsn: u64) -> Option<Arc<Block>> {
        self.blocks.iter().find(|block| block.index_of(lsn).is_some()).cloned()
    }

    /// Caches `block`, dropping the oldest blocks beyond `bytes_max`.
    pub(crate) fn insert(&mut self, block: Arc<Block>, bytes_max: usize) {
        self.bytes += block.bytes;
        self.blocks.push_back(block);
        while self.bytes > bytes_max && self.blocks.len() > 1 {
            let Some(dropped) = self.blocks.pop_front() else { break };
            self.bytes -= dropped.bytes;
        }
    }
}

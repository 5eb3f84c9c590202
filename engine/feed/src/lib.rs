//! bookd's change feed: every change of state, in log order, read from the shards' durable logs.
//!
//! The shard writes the changes each record made into the record itself (payload version 2, see
//! `bookd_runtime::payload` and `bookd_engine::change`), so the feed is a reader of the log and
//! nothing else: it never runs on a shard's apply path, it serves only what is durable, and the
//! primary, a replay after a crash and a standby serve the same changes at the same cursors.
//!
//! - `cursor`: positions in every shard's log as one opaque string.
//! - [`Feed::read`]: a page of changes after a cursor, optionally of one partition, waiting up
//!   to a bound for the first one (long poll); changes of several shards are merged by time.
//!
//! Within a partition (one shard, one log) changes come in log order; across partitions the
//! merge by time is only a convenience.

mod cursor;
mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::change::{decode_changes_encoded, Change, ChangeDecodeError};
use bookd_runtime::{
    decode_command_changes, decode_tick, shard_of, ControlError, PayloadError, RawRead, Runtime,
    RECORD_KIND_COMMAND, RECORD_KIND_TICK,
};

pub use cursor::{Cursor, CursorError, Position, CURSOR_LENGTH_MAX};
use shared::{Block, CatchUp, ShardRead, Tail, BLOCKS_BYTES_MAX, BLOCK_RECORDS, TAIL_BYTES_MAX};

/// Most changes one page holds, and its default.
pub const FEED_LIMIT_MAX: usize = 1000;
pub const FEED_LIMIT_DEFAULT: usize = 100;
/// Longest a read waits for a first change.
pub const FEED_WAIT_MS_MAX: u64 = 30_000;
/// Log bytes asked of a shard at a time.
const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Log bytes one refresh of a shard's tail reads at most before its reader answers with what it
/// has (a partition with few changes in a busy log must not make one request read the whole
/// log), and records one read behind the tail scans at most, for the same reason.
const SCAN_BYTES_MAX: usize = 8 * 1024 * 1024;
const SCAN_RECORDS_MAX: u64 = 16 * BLOCK_RECORDS;

/// What a read asks for.
#[derive(Debug, Clone)]
pub struct FeedRequest {
    /// After this position; `None`: from the current end (only new changes).
    pub cursor: Option<Cursor>,
    /// Only this partition's changes.
    pub partition: Option<String>,
    /// 1 to [`FEED_LIMIT_MAX`].
    pub limit: usize,
    /// How long an empty answer may wait for a first change.
    pub wait: Duration,
}

/// A change as the feed holds it: decoded once and kept with its encoded form (the log's own
/// bytes), shared by every reader it is served to. Derefs to the [`Change`].
#[derive(Debug)]
pub struct SharedChange {
    change: Change,
    encoded: Box<[u8]>,
}

impl SharedChange {
    /// `change` and the bytes it was decoded from.
    pub fn new(change: Change, encoded: &[u8]) -> SharedChange {
        SharedChange { change, encoded: encoded.into() }
    }

    /// The change in the log's layout: what a CHANGES frame of the binary protocol carries.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// About how many bytes of memory the change holds: the struct, its encoded form, and the
    /// decoded strings and lists (never more than twice the encoded form, plus their headers).
    fn footprint(&self) -> usize {
        std::mem::size_of::<SharedChange>() + 3 * self.encoded.len() + 64
    }
}

impl std::ops::Deref for SharedChange {
    type Target = Change;

    fn deref(&self) -> &Change {
        &self.change
    }
}

/// One change of a page: its shard, where that shard's log goes on after it, and the change.
#[derive(Debug, Clone)]
pub struct FeedChange {
    pub shard: usize,
    pub after: Position,
    pub change: Arc<SharedChange>,
}

/// A page of changes, and the cursor to go on from (after the last one, or past what was
/// scanned when nothing matched). The cursor just after each change is
/// [`FeedPage::walk`]'s to give: changes carry only the one position that moves.
#[derive(Debug, Clone)]
pub struct FeedPage {
    /// The cursor the page was read from.
    pub from: Cursor,
    pub changes: Vec<FeedChange>,
    pub cursor: Cursor,
}

impl FeedPage {
    /// The page's changes in order, each with the cursor just after it.
    pub fn walk(&self) -> Walk<'_> {
        Walk { changes: self.changes.iter(), cursor: self.from.clone() }
    }
}

/// The changes of a page with their cursors, one cursor updated in place (not an `Iterator`:
/// each cursor lives until the next call).
#[derive(Debug)]
pub struct Walk<'p> {
    changes: std::slice::Iter<'p, FeedChange>,
    cursor: Cursor,
}

impl<'p> Walk<'p> {
    /// The next change and the cursor just after it.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<(&Cursor, &'p FeedChange)> {
        let change = self.changes.next()?;
        if let Some(position) = self.cursor.positions.get_mut(change.shard) {
            *position = change.after;
        }
        Some((&self.cursor, change))
    }
}

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FeedError {
    /// The log no longer holds records that old; `oldest` is the oldest cursor it can serve.
    #[error("the feed no longer has changes that old")]
    Expired { oldest: Cursor },
    #[error("shard {shard} cannot be read: {source}")]
    Shard {
        shard: usize,
        #[source]
        source: ControlError,
    },
    #[error("shard {shard} record {lsn}: {reason}")]
    Record { shard: usize, lsn: u64, reason: RecordProblem },
}

/// What is wrong with a record the feed read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordProblem {
    #[error("framing: {0}")]
    Framing(&'static str),
    #[error("payload: {0}")]
    Payload(#[from] PayloadError),
    #[error("changes: {0}")]
    Changes(#[from] ChangeDecodeError),
    #[error("expected record {expected}")]
    OutOfOrder { expected: u64 },
}

/// The feed's counters (for `/metrics`).
#[derive(Debug, Default)]
pub struct FeedMetrics {
    /// Readers waiting or reading now.
    pub subscribers: AtomicU64,
    /// Changes handed out.
    pub changes_sent: AtomicU64,
    /// Reads answered.
    pub reads: AtomicU64,
    /// Of the last read that served changes: log records between its last change and the
    /// durable end, summed over the shards it read, and how old its last change was (ms).
    pub lag_records: AtomicU64,
    pub lag_ms: AtomicU64,
}

impl FeedMetrics {
    /// Appends the feed's metrics in Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let metrics: [(&str, &str, &str, &AtomicU64); 5] = [
            (
                "bookd_feed_subscribers",
                "gauge",
                "Change feed reads in progress (long polls and event streams waiting).",
                &self.subscribers,
            ),
            (
                "bookd_feed_changes_sent_total",
                "counter",
                "Changes handed out by the change feed.",
                &self.changes_sent,
            ),
            ("bookd_feed_reads_total", "counter", "Change feed reads answered.", &self.reads),
            (
                "bookd_feed_lag_records",
                "gauge",
                "Log records between the last change served and the durable end.",
                &self.lag_records,
            ),
            (
                "bookd_feed_lag_ms",
                "gauge",
                "Age of the last change served when it was served, in ms.",
                &self.lag_ms,
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// The change feed of one node.
#[derive(Debug)]
pub struct Feed {
    runtime: Arc<Runtime>,
    metrics: FeedMetrics,
    /// Per shard, the newest records decoded, shared by the readers near the end.
    tails: Vec<tokio::sync::Mutex<Tail>>,
    /// Per shard, older records decoded in blocks, shared by the readers behind the tail. A
    /// block is loaded under the lock, so such readers of a shard load one block at a time: the
    /// copies the shard's thread makes for them stay a small share of its time however many
    /// fall behind.
    catch_up: Vec<tokio::sync::Mutex<CatchUp>>,
}

impl Feed {
    pub fn new(runtime: Arc<Runtime>) -> Feed {
        let tails =
            (0..runtime.shards()).map(|_| tokio::sync::Mutex::new(Tail::default())).collect();
        let catch_up =
            (0..runtime.shards()).map(|_| tokio::sync::Mutex::new(CatchUp::default())).collect();
        Feed { runtime, metrics: FeedMetrics::default(), tails, catch_up }
    }

    pub fn metrics(&self) -> &FeedMetrics {
        &self.metrics
    }

    pub fn shards(&self) -> usize {
        self.runtime.shards()
    }

    /// The current end of the feed: every shard just after its durable records.
    pub fn end(&self) -> Cursor {
        let positions = self
            .runtime
            .metrics()
            .iter()
            .map(|shard| Position::at(shard.durable_lsn.load(Ordering::Acquire).saturating_add(1)))
            .collect();
        Cursor { positions }
    }

    /// A page of changes after `request.cursor`, waiting up to `request.wait` for the first.
    pub async fn read(&self, request: &FeedRequest) -> Result<FeedPage, FeedError> {
        self.metrics.subscribers.fetch_add(1, Ordering::Relaxed);
        let page = self.read_waiting(request).await;
        self.metrics.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.metrics.reads.fetch_add(1, Ordering::Relaxed);
        if let Ok(page) = &page {
            self.metrics.changes_sent.fetch_add(page.changes.len() as u64, Ordering::Relaxed);
            if let Some(last) = page.changes.last() {
                self.note_lag(&page.cursor, last.change.at_ms);
            }
        }
        page
    }

    async fn read_waiting(&self, request: &FeedRequest) -> Result<FeedPage, FeedError> {
        let deadline = Instant::now() + request.wait;
        let mut cursor = request.cursor.clone().unwrap_or_else(|| self.end());
        loop {
            // Registered before reading, so a change made durable meanwhile wakes the wait.
            let durable = self.runtime.durable_changed().notified();
            let page = self.read_once(&cursor, request).await?;
            let now = Instant::now();
            if !page.changes.is_empty() || now >= deadline {
                return Ok(page);
            }
            // A read scans a bounded stretch of log: while durable records are left to scan, go
            // on at once; only at the end wait for a new change.
            // (Only while the scan moves, so a log that cannot be read yet is waited for.)
            let end = self.end();
            let behind = self
                .shards_read(request)
                .into_iter()
                .any(|shard| page.cursor.positions[shard].lsn < end.positions[shard].lsn);
            let moved = page.cursor != cursor;
            cursor = page.cursor;
            if behind && moved {
                continue;
            }
            let _ = tokio::time::timeout(deadline - now, durable).await;
        }
    }

    /// One pass over the shards the request reads, merged.
    async fn read_once(
        &self,
        cursor: &Cursor,
        request: &FeedRequest,
    ) -> Result<FeedPage, FeedError> {
        let shards = self.shards_read(request);
        let mut reads = Vec::with_capacity(shards.len());
        for &shard in &shards {
            let from = cursor.positions[shard];
            match self.read_shard(shard, from, request).await {
                Ok(read) => reads.push((shard, read)),
                // The oldest cursor from here: this shard at its oldest record, the others
                // where the request had them.
                Err(FeedError::Expired { oldest }) => {
                    let mut from_here = cursor.clone();
                    from_here.positions[shard] = oldest.positions[shard];
                    return Err(FeedError::Expired { oldest: from_here });
                }
                Err(error) => return Err(error),
            }
        }
        Ok(merge(cursor, reads, request.limit))
    }

    /// The shards a request reads: its partition's, or all.
    fn shards_read(&self, request: &FeedRequest) -> Vec<usize> {
        match &request.partition {
            Some(partition) => vec![shard_of(partition, self.shards())],
            None => (0..self.shards()).collect(),
        }
    }

    /// Up to `request.limit` changes of `shard` from `from`: from the shard's shared tail when
    /// `from` is in it (the common case: followers near the end), else from the log.
    async fn read_shard(
        &self,
        shard: usize,
        from: Position,
        request: &FeedRequest,
    ) -> Result<ShardRead, FeedError> {
        let mut tail = self.tails[shard].lock().await;
        // The tail serves the readers nearest the end: one ahead of it (nobody read for a while)
        // moves it there rather than wait for it to catch up; readers behind read the log.
        if tail.records.is_empty() || from.lsn > tail.next_lsn {
            *tail = Tail::at(from.lsn);
        }
        if from.lsn < tail.first_lsn() {
            drop(tail);
            return self.read_behind(shard, from, request).await;
        }
        self.refresh(shard, &mut tail).await?;
        Ok(tail.read(from, request))
    }

    /// Appends to `tail` the durable records of `shard` after it (at most [`SCAN_BYTES_MAX`] of
    /// them at a time), each decoded once for every reader, and trims it to its bound.
    async fn refresh(&self, shard: usize, tail: &mut Tail) -> Result<(), FeedError> {
        let durable = self.runtime.metrics()[shard].durable_lsn.load(Ordering::Acquire);
        let mut scanned = 0usize;
        while tail.next_lsn <= durable && scanned < SCAN_BYTES_MAX {
            let raw = self
                .runtime
                .read_raw(shard, tail.next_lsn, READ_CHUNK_BYTES)
                .await
                .map_err(|source| FeedError::Shard { shard, source })?;
            let bytes = match raw {
                RawRead::Records(bytes) if !bytes.is_empty() => bytes,
                RawRead::Records(_) => break,
                RawRead::Unavailable { first_lsn } => {
                    *tail = Tail::default();
                    return Err(FeedError::Expired { oldest: self.oldest(shard, first_lsn) });
                }
            };
            scanned += bytes.len();
            let next = tail.next_lsn;
            decode_records(shard, next, u64::MAX, &bytes, |lsn, changes| tail.push(lsn, changes))?;
        }
        tail.trim(TAIL_BYTES_MAX);
        Ok(())
    }

    /// Up to `request.limit` changes of `shard` from `from`, which is behind the shard's tail:
    /// from the blocks of the catch-up cache, scanning at most [`SCAN_RECORDS_MAX`] records.
    async fn read_behind(
        &self,
        shard: usize,
        from: Position,
        request: &FeedRequest,
    ) -> Result<ShardRead, FeedError> {
        let mut read = ShardRead::from(from);
        let mut scanned = 0u64;
        while read.changes.len() < request.limit && scanned < SCAN_RECORDS_MAX {
            let block = self.block(shard, read.end.lsn).await?;
            let Some(start) = block.index_of(read.end.lsn) else { break };
            for (at, changes) in block.records.iter().enumerate().skip(start) {
                scanned += 1;
                if !read.take(block.first_lsn + at as u64, changes, request) {
                    return Ok(read);
                }
            }
        }
        Ok(read)
    }

    /// The block of the catch-up cache holding record `lsn` of `shard`: cached, or read from the
    /// log, decoded, and cached once it is whole. A block holds the records of LSNs
    /// `[k × BLOCK_RECORDS, (k + 1) × BLOCK_RECORDS)` the log still has and are durable; one
    /// holding none means `lsn` is not durable yet.
    async fn block(&self, shard: usize, lsn: u64) -> Result<Arc<Block>, FeedError> {
        let mut cache = self.catch_up[shard].lock().await;
        if let Some(block) = cache.find(lsn) {
            return Ok(block);
        }
        let durable = self.runtime.metrics()[shard].durable_lsn.load(Ordering::Acquire);
        let natural_first = (lsn - lsn % BLOCK_RECORDS).max(1);
        let natural_last = lsn - lsn % BLOCK_RECORDS + (BLOCK_RECORDS - 1);
        let last = natural_last.min(durable);
        let mut block = Block::starting(natural_first);
        while block.next_lsn() <= last {
            let from = block.next_lsn();
            let raw = self
                .runtime
                .read_raw(shard, from, READ_CHUNK_BYTES)
                .await
                .map_err(|source| FeedError::Shard { shard, source })?;
            let bytes = match raw {
                RawRead::Records(bytes) if !bytes.is_empty() => bytes,
                RawRead::Records(_) => break,
                // Retention removed the block's start: it begins where the log does now.
                RawRead::Unavailable { first_lsn }
                    if block.records.is_empty() && first_lsn <= lsn =>
                {
                    block = Block::starting(first_lsn);
                    continue;
                }
                RawRead::Unavailable { first_lsn } => {
                    return Err(FeedError::Expired { oldest: self.oldest(shard, first_lsn) })
                }
            };
            decode_records(shard, from, last, &bytes, |lsn, changes| block.push(lsn, changes))?;
        }
        let block = Arc::new(block);
        if block.next_lsn() > natural_last {
            cache.insert(block.clone(), BLOCKS_BYTES_MAX);
        }
        Ok(block)
    }

    fn note_lag(&self, cursor: &Cursor, at_ms: u64) {
        let end = self.end();
        let records = end
            .positions
            .iter()
            .zip(&cursor.positions)
            .map(|(end, at)| end.lsn.saturating_sub(at.lsn))
            .fold(0u64, u64::saturating_add);
        self.metrics.lag_records.store(records, Ordering::Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        self.metrics.lag_ms.store(now_ms.saturating_sub(at_ms), Ordering::Relaxed);
    }

    /// `shard` at its oldest record (the caller fills in the other shards).
    fn oldest(&self, shard: usize, first_lsn: u64) -> Cursor {
        let mut oldest = self.end();
        oldest.positions[shard] = Position::at(first_lsn);
        oldest
    }
}

/// The changes a record carries (none for records of version 1, epochs and settings).
fn record_changes(kind: u8, payload: &[u8]) -> Result<Box<[Arc<SharedChange>]>, RecordProblem> {
    let section = match kind {
        RECORD_KIND_COMMAND => decode_command_changes(payload)?.1,
        RECORD_KIND_TICK => decode_tick(payload)?.changes,
        _ => None,
    };
    let Some(bytes) = section else { return Ok(Box::default()) };
    let changes = decode_changes_encoded(bytes)?;
    Ok(changes
        .into_iter()
        .map(|(change, encoded)| Arc::new(SharedChange::new(change, encoded)))
        .collect())
}

/// Decodes the framed records in `bytes`, which start at record `lsn` of `shard`, handing each
/// one up to `last` to `each` with its changes; checks that they come in LSN order.
fn decode_records(
    shard: usize,
    mut lsn: u64,
    last: u64,
    bytes: &[u8],
    mut each: impl FnMut(u64, Box<[Arc<SharedChange>]>),
) -> Result<(), FeedError> {
    let mut rest = bytes;
    while !rest.is_empty() && lsn <= last {
        let record = bookd_wal::record::decode(rest).map_err(|error| FeedError::Record {
            shard,
            lsn,
            reason: RecordProblem::Framing(error.describe()),
        })?;
        rest = &rest[record.raw.len()..];
        if record.header.lsn != lsn {
            let reason = RecordProblem::OutOfOrder { expected: lsn };
            return Err(FeedError::Record { shard, lsn: record.header.lsn, reason });
        }
        let changes = record_changes(record.header.kind, record.payload)
            .map_err(|reason| FeedError::Record { shard, lsn, reason })?;
        each(lsn, changes);
        lsn += 1;
    }
    Ok(())
}

/// Merges the shards' changes by time (then shard), at most `limit`, each with the cursor after
/// it. A shard whose changes were all taken moves to where its scan ended.
fn merge(from: &Cursor, reads: Vec<(usize, ShardRead)>, limit: usize) -> FeedPage {
    let mut positions = from.positions.clone();
    let mut reads = reads;
    let mut changes = Vec::new();
    while changes.len() < limit {
        let next = reads
            .iter()
            .enumerate()
            .filter_map(|(at, (shard, read))| read.changes.front().map(|c| (c.1.at_ms, *shard, at)))
            .min();
        let Some((_, shard, at)) = next else {
            break;
        };
        let Some((after, change)) = reads[at].1.changes.pop_front() else {
            break;
        };
        positions[shard] = after;
        changes.push(FeedChange { shard, after, change });
    }
    for (shard, read) in &reads {
        if read.changes.is_empty() {
            positions[*shard] = read.end;
        }
    }
    FeedPage { from: from.clone(), changes, cursor: Cursor { positions } }
}

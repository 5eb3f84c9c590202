//! The engine's state: partitions, resources and holds in compact tables, and the one place where
//! time advances and holds change state.
//!
//! Invariants, asserted where they change and checked whole by [`Engine::check_invariants`]:
//! - for every resource, `held + confirmed <= capacity`;
//! - a resource's `held` (`confirmed`) is the sum of its units in held (confirmed) holds;
//! - the clock only moves forward, and no hold is `Held` at or after its `expires_at_ms`
//!   once the clock has reached it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::change::{ChangeBuffer, ChangeOp};
use crate::chunked::ChunkedVec;
use crate::error::Refusal;
use crate::expiry::ExpiryQueue;
use crate::free::FreeSlots;
use crate::index::{NameHasher, NameIndex};
use crate::key::{InlineName, NameKey, ShortName, SHORT_NAME_BYTES};
use crate::limits::{
    CLOCK_MS_MAX, ENGINE_HOLDS_MAX_DEFAULT, ENGINE_PARTITIONS_MAX_DEFAULT,
    ENGINE_RESOURCES_MAX_DEFAULT, HOLD_RETENTION_MS_DEFAULT,
};
use crate::view::{HoldRef, HoldStatus, HoldView, ItemView, ResourceView};

/// A broken invariant found by [`Engine::check_invariants`]: which record, and what disagrees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("slot {slot} is neither used nor free")]
    SlotNeitherUsedNorFree { slot: usize },
    #[error("hold {hold} is in a free slot")]
    HoldInFreeSlot { hold: Arc<str> },
    #[error("hold {hold} is in a deleted partition")]
    HoldInDeletedPartition { hold: Arc<str> },
    #[error("hold {slot} names a missing partition")]
    HoldNamesMissingPartition { slot: usize },
    #[error("hold {hold} is held past its expiry")]
    HeldPastExpiry { hold: Arc<str> },
    #[error("hold {hold} names a missing resource")]
    HoldNamesMissingResource { hold: Arc<str> },
    #[error("holds_live {counted} but {held} holds are held")]
    HoldsLive { counted: u32, held: u32 },
    #[error("holds_len {counted} but {used} slots are used")]
    HoldsLen { counted: u32, used: u32 },
    #[error("deleted partition {index} is not empty")]
    DeletedPartitionNotEmpty { index: usize },
    /// `counters` and `holds` are (held, confirmed): the resource's and the sums over its holds.
    #[error(
        "resource {partition}/{resource}: counters ({}, {}) but holds say ({}, {})",
        counters.0, counters.1, holds.0, holds.1
    )]
    ResourceCounters {
        partition: Arc<str>,
        resource: Arc<str>,
        counters: (u64, u64),
        holds: (u64, u64),
    },
    #[error("resource {partition}/{resource} is oversold")]
    Oversold { partition: Arc<str>, resource: Arc<str> },
    #[error("resources_len {counted} but {resources} exist")]
    ResourcesLen { counted: u32, resources: u32 },
    #[error("memory_bytes {counted} but the records add up to {records}")]
    MemoryBytes { counted: u64, records: u64 },
    #[error("ended hold {hold} is not queued to be forgotten")]
    EndedHoldNotQueued { hold: Arc<str> },
    #[error("the retention queue is out of time order")]
    RetentionOutOfOrder,
    #[error("hold {hold} is not indexed under its id")]
    HoldNotIndexed { hold: Arc<str> },
    #[error("partition names and partitions disagree")]
    PartitionNamesDisagree,
    #[error("partition {partition} is not indexed")]
    PartitionNotIndexed { partition: Arc<str> },
    #[error("partition {partition} index sizes disagree")]
    PartitionIndexSizes { partition: Arc<str> },
    #[error("resource {partition}/{resource} is not indexed")]
    ResourceNotIndexed { partition: Arc<str>, resource: Arc<str> },
}

/// Bounds on the tables of one engine. A command that would grow a full table is refused with
/// `overloaded` and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    pub partitions_max: u32,
    pub resources_max: u32,
    pub holds_max: u32,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            partitions_max: ENGINE_PARTITIONS_MAX_DEFAULT,
            resources_max: ENGINE_RESOURCES_MAX_DEFAULT,
            holds_max: ENGINE_HOLDS_MAX_DEFAULT,
        }
    }
}

/// A partition: its resources (by dense index, by id, and in id order) and its holds by id.
#[derive(Debug, Clone)]
pub(crate) struct Partition {
    pub(crate) name: Arc<str>,
    /// By dense index; chunks shared copy-on-write with a snapshot being written.
    pub(crate) resources: ChunkedVec<Resource>,
    /// Resource id -> index into `resources`.
    pub(crate) resource_index: NameIndex,
    pub(crate) resource_order: BTreeMap<Arc<str>, u32>,
    /// Hold id -> slot in the engine's `holds`.
    pub(crate) holds: NameIndex,
    /// How many of its holds are held (a partition with any cannot be deleted).
    pub(crate) holds_live: u32,
}

impl Partition {
    pub(crate) fn new(name: Arc<str>) -> Partition {
        Partition {
            name,
            resources: ChunkedVec::default(),
            resource_index: NameIndex::default(),
            resource_order: BTreeMap::new(),
            holds: NameIndex::default(),
            holds_live: 0,
        }
    }

    /// A hold's items as replies show them: resource ids instead of indices.
    pub(crate) fn view_items(&self, items: &[HoldItem]) -> Arc<[ItemView]> {
        items
            .iter()
            .map(|item| ItemView {
                resource: self.resources[item.resource as usize].id.clone(),
                quantity: item.quantity,
            })
            .collect()
    }

    /// The index of the resource `key` names.
    #[inline]
    pub(crate) fn find_resource(&self, key: &NameKey) -> Option<u32> {
        self.resource_index.find(key.hash, |index| {
            let resource = &self.resources[index as usize];
            key.is(&resource.short_id, || &resource.id)
        })
    }

    /// The resource after `index` if it is named `name`: a guess, checked exactly.
    #[inline]
    pub(crate) fn resource_after(&self, index: u32, name: &str) -> Option<u32> {
        let next = index.checked_add(1)?;
        let record = self.resources.get(next as usize)?;
        ShortName::of(name).names(name, &record.short_id, || &record.id).then_some(next)
    }

    /// Asks the CPU for the records from the one `first` most likely names on, `len` of them
    /// (at most eight), once `first`'s bucket has arrived: a run of items created in order.
    #[inline]
    pub(crate) fn prefetch_run(&self, first: &NameKey, len: usize) {
        if let Some(index) = self.resource_index.candidate(first.hash) {
            let run = index as usize..index as usize + len.min(8);
            run.filter_map(|at| self.resources.get(at)).for_each(crate::prefetch::read);
        }
    }

    /// Asks the CPU for the index bucket where `key`'s lookup starts (see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_bucket(&self, key: &NameKey) {
        self.resource_index.prefetch(key.hash);
    }

    /// Asks the CPU for the record `key` most likely names, once its bucket has arrived.
    #[inline]
    pub(crate) fn prefetch_record(&self, key: &NameKey) {
        if let Some(record) = self
            .resource_index
            .candidate(key.hash)
            .and_then(|index| self.resources.get(index as usize))
        {
            crate::prefetch::read(record);
        }
    }
}

/// A resource: its counters and its id, whose short form is kept inline too, so the record is
/// one cache line and a lookup reads nothing else.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub(crate) struct Resource {
    pub(crate) capacity: u64,
    pub(crate) held: u64,
    pub(crate) confirmed: u64,
    pub(crate) id: Arc<str>,
    pub(crate) short_id: ShortName,
}

impl Resource {
    pub(crate) fn new(id: Arc<str>, capacity: u64, held: u64, confirmed: u64) -> Resource {
        let short_id = ShortName::of(&id);
        Resource { capacity, held, confirmed, id, short_id }
    }

    #[inline]
    pub(crate) fn available(&self) -> u64 {
        self.capacity - self.held - self.confirmed
    }

    #[inline]
    fn assert_within_capacity(&self) {
        assert!(
            self.held.checked_add(self.confirmed).is_some_and(|used| used <= self.capacity),
            "invariant broken: resource {} has held {} + confirmed {} > capacity {}",
            self.id,
            self.held,
            self.confirmed,
            self.capacity
        );
    }
}

/// A hold's items: one or two (flash-sale's one, most short stays) live in the record itself.
pub(crate) type HoldItems = smallvec::SmallVec<[HoldItem; HOLD_ITEMS_INLINE]>;
/// Items kept inside the hold's record.
pub(crate) const HOLD_ITEMS_INLINE: usize = 2;

/// `quantity` units of the resource at dense index `resource` of the hold's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HoldItem {
    pub(crate) resource: u32,
    pub(crate) quantity: u32,
}

/// A hold, in one record with no allocation of its own in the common case: an id of up to
/// [`crate::key::SHORT_NAME_BYTES`] bytes lives inline and up to two items too. Replies build
/// their views from it ([`Engine::hold_view`]).
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub(crate) expires_at_ms: u64,
    /// When a released, expired or cancelled hold ended (its expiry, for an expired one); it is
    /// forgotten the hold retention after that. Zero while the hold has not ended.
    pub(crate) ended_at_ms: u64,
    pub(crate) partition: u32,
    pub(crate) status: HoldStatus,
    /// The id, whole when it fits, else its first bytes (the whole id is in `extra`).
    pub(crate) short_id: ShortName,
    pub(crate) items: HoldItems,
    /// What few holds have: a long id, a reference.
    pub(crate) extra: Option<Box<HoldExtra>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct HoldExtra {
    pub(crate) long_id: Option<Box<str>>,
    pub(crate) reference: Option<Arc<str>>,
}

impl Hold {
    #[inline]
    pub(crate) fn new(
        partition: u32,
        id: &NameKey,
        status: HoldStatus,
        expires_at_ms: u64,
        items: HoldItems,
        reference: Option<&str>,
    ) -> Hold {
        let long = id.name.len() > SHORT_NAME_BYTES;
        let extra = (long || reference.is_some()).then(|| {
            Box::new(HoldExtra {
                long_id: long.then(|| Box::from(id.name)),
                reference: reference.map(Arc::from),
            })
        });
        Hold { expires_at_ms, ended_at_ms: 0, partition, status, short_id: id.short, items, extra }
    }

    /// The record of a free slot: no partition, nothing allocated.
    pub(crate) fn free() -> Hold {
        Hold {
            expires_at_ms: 0,
            ended_at_ms: 0,
            partition: FREE_PARTITION,
            status: HoldStatus::Released,
            short_id: ShortName::default(),
            items: HoldItems::new(),
            extra: None,
        }
    }

    /// Whether the slot holds a hold (rather than being free).
    #[inline]
    pub(crate) fn is_used(&self) -> bool {
        self.partition != FREE_PARTITION
    }

    /// The memory the state spends on this hold, as the budget counts it (see
    /// [`crate::limits::HOLD_MEMORY_BYTES`]).
    pub(crate) fn memory_bytes(&self) -> u64 {
        let extra = self.extra.as_deref();
        hold_memory_bytes(
            self.items.len(),
            extra.and_then(|extra| extra.long_id.as_deref()).map(str::len),
            extra.and_then(|extra| extra.reference.as_deref()).map(str::len),
        )
    }

    /// The hold's id.
    #[inline]
    pub(crate) fn id(&self) -> &str {
        match self.extra.as_deref().and_then(|extra| extra.long_id.as_deref()) {
            Some(long_id) => long_id,
            None => self.short_id.as_str().unwrap_or_default(),
        }
    }

    pub(crate) fn reference(&self) -> Option<&Arc<str>> {
        self.extra.as_deref().and_then(|extra| extra.reference.as_ref())
    }
}

/// The partition of a free hold slot.
pub(crate) const FREE_PARTITION: u32 = u32::MAX;

/// How many due holds one advance of the clock may expire.
#[derive(Debug, Clone, Copy)]
enum ExpiryBound {
    All,
    /// Exactly this many (a replayed tick).
    Count(u32),
    /// Until the captured changes reach this many bytes.
    Bytes(usize),
}

impl ExpiryBound {
    fn allows(self, expired: u32, changes_bytes: usize) -> bool {
        match self {
            ExpiryBound::All => true,
            ExpiryBound::Count(count) => expired < count,
            ExpiryBound::Bytes(max) => expired == 0 || changes_bytes < max,
        }
    }
}

/// Counts that describe the size of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    pub partitions: u32,
    pub resources: u32,
    pub holds: u32,
    pub holds_live: u32,
    pub expiry_queue_len: usize,
    pub clock_ms: u64,
    /// Ended holds waiting to be forgotten.
    pub retention_queue_len: usize,
    /// The memory the state uses, as the budget counts it.
    pub memory_bytes: u64,
}

/// One shard's booking state. Deterministic: the same commands with the same timestamps, in the
/// same order, give the same results and the same state. It does no I/O and reads no clock.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) limits: EngineLimits,
    pub(crate) partitions: Vec<Partition>,
    /// The names of `partitions`, by index, stored inline in one dense table: a lookup compares
    /// names there (64 KiB for a thousand hotels, which stays in cache) instead of following each
    /// partition's `Arc` to wherever its name was allocated.
    pub(crate) partition_names: Vec<InlineName>,
    /// Partition name -> index into `partitions`.
    pub(crate) partition_index: NameIndex,
    /// The partition `find_partition` found last (a hint only; any value is safe).
    pub(crate) last_partition: std::cell::Cell<u32>,
    /// The holds, by slot. A forgotten hold's slot (and a deleted partition's holds') is
    /// free until a new hold takes it, lowest first.
    pub(crate) holds: ChunkedVec<Hold>,
    pub(crate) free_holds: FreeSlots,
    /// Slots of `holds` in use.
    pub(crate) holds_len: u32,
    /// Indices of `partitions` freed by deletion, reused lowest first.
    pub(crate) free_partitions: BTreeSet<u32>,
    /// Ended holds, `(ended_at_ms, slot)`, in the order they ended (so by `ended_at_ms`): the
    /// front is forgotten first. An entry whose slot was freed by a deletion since is stale and
    /// skipped (its slot is free, or holds a hold that ended at another time).
    pub(crate) retention: VecDeque<(u64, u32)>,
    /// How long an ended hold is kept, in ms. State: set by a logged settings record.
    pub(crate) hold_retention_ms: u64,
    /// The memory the state uses, as the budget counts it (records, their names, their index
    /// entries), kept as records come and go.
    pub(crate) memory_bytes: u64,
    /// The budget: growth beyond it is refused with `storage_full`. Not state: a node's
    /// setting, unlimited while replaying a log (what was logged was accepted).
    pub(crate) memory_max_bytes: u64,
    pub(crate) expiry: ExpiryQueue,
    pub(crate) clock_ms: u64,
    pub(crate) resources_len: u32,
    pub(crate) holds_live: u32,
    pub(crate) hasher: NameHasher,
    /// Changes captured since the last drain (see `change`); `None` when capture is off. Not
    /// state: the log carries the changes, so a snapshot leaves them out.
    pub(crate) changes: Option<ChangeBuffer>,
}

#[inline]
fn units_add(a: u64, b: u64, what: &str) -> u64 {
    match a.checked_add(b) {
        Some(sum) => sum,
        None => panic!("invariant broken: {what} overflows"),
    }
}

#[inline]
fn units_sub(a: u64, b: u64, what: &str) -> u64 {
    match a.checked_sub(b) {
        Some(difference) => difference,
        None => panic!("invariant broken: {what} would go below zero"),
    }
}

impl Default for Engine {
    fn default() -> Engine {
        Engine {
            limits: EngineLimits::default(),
            partitions: Vec::new(),
            partition_names: Vec::new(),
            partition_index: NameIndex::default(),
            last_partition: std::cell::Cell::new(0),
            holds: ChunkedVec::default(),
            free_holds: FreeSlots::default(),
            holds_len: 0,
            free_partitions: BTreeSet::new(),
            retention: VecDeque::new(),
            hold_retention_ms: HOLD_RETENTION_MS_DEFAULT,
            memory_bytes: 0,
            memory_max_bytes: u64::MAX,
            expiry: ExpiryQueue::default(),
            clock_ms: 0,
            resources_len: 0,
            holds_live: 0,
            hasher: NameHasher::default(),
            changes: None,
        }
    }
}

impl Engine {
    /// An empty engine with the given table bounds.
    pub fn new(limits: EngineLimits) -> Engine {
        Engine { limits, ..Engine::default() }
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// The latest time the engine has seen, in Unix ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            partitions: self.partitions_live() as u32,
            resources: self.resources_len,
            holds: self.holds_len,
            holds_live: self.holds_live,
            expiry_queue_len: self.expiry.len(),
            clock_ms: self.clock_ms,
            retention_queue_len: self.retention.len(),
            memory_bytes: self.memory_bytes,
        }
    }

    /// Partitions that exist (not deleted).
    pub(crate) fn partitions_live(&self) -> usize {
        self.partitions.len() - self.free_partitions.len()
    }

    /// How long a released, expired or cancelled hold is kept after it ended, in ms.
    pub fn hold_retention_ms(&self) -> u64 {
        self.hold_retention_ms
    }

    /// Sets the hold retention (a logged settings record on every node, so all forget alike).
    /// Holds already past the new retention are forgotten by the next tick or command.
    pub fn set_hold_retention_ms(&mut self, hold_retention_ms: u64) {
        self.hold_retention_ms = hold_retention_ms;
    }

    /// The memory the state uses, as the budget counts it.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// Sets the memory budget. A node's setting, not state: replay runs without one.
    pub fn set_memory_max_bytes(&mut self, memory_max_bytes: u64) {
        self.memory_max_bytes = memory_max_bytes;
    }

    /// Refuses growth by `bytes` beyond the memory budget (`storage_full`, reason memory).
    #[inline]
    pub(crate) fn check_memory(&self, bytes: u64) -> Result<(), Refusal> {
        if self.memory_bytes.saturating_add(bytes) > self.memory_max_bytes {
            return Err(Refusal::StorageFull { reason: crate::error::StorageFullReason::Memory });
        }
        Ok(())
    }

    /// The earliest time at which time alone changes the state (a hold expires or is
    /// forgotten), if any; the shard logs a tick record when it is due. May be early (an
    /// entry for a hold confirmed since): such a tick changes nothing.
    pub fn next_due_ms(&self) -> Option<u64> {
        let expiry = self.expiry.next_ms();
        let forget = self
            .retention
            .front()
            .map(|&(ended_at_ms, _)| ended_at_ms.saturating_add(self.hold_retention_ms));
        match (expiry, forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the clock to `now_ms` (never backwards) and expires every hold due by then.
    /// Returns how many holds expired. The shard calls this on idle so expired units come back
    /// without waiting for the next command.
    pub fn tick(&mut self, now_ms: u64) -> u32 {
        let (_, expired) = self.advance(now_ms);
        expired
    }

    /// Advances the clock (never backwards) and expires due holds; returns the effective time
    /// and the number of holds expired.
    pub(crate) fn advance(&mut self, now_ms: u64) -> (u64, u32) {
        self.advance_bounded(now_ms, ExpiryBound::All)
    }

    /// [`Engine::advance`], expiring at most what `bound` allows: the rest stays due for the
    /// next call. Then forgets every ended hold whose retention has passed.
    fn advance_bounded(&mut self, now_ms: u64, bound: ExpiryBound) -> (u64, u32) {
        let now_ms = now_ms.min(CLOCK_MS_MAX).max(self.clock_ms);
        self.clock_ms = now_ms;
        let mut expired = 0;
        while bound.allows(expired, self.changes_pending().1) {
            let Some((expires_at_ms, slot)) = self.expiry.pop_due(now_ms) else {
                break;
            };
            let hold = &self.holds[slot as usize];
            if hold.status == HoldStatus::Held && hold.expires_at_ms == expires_at_ms {
                self.transition(slot, HoldStatus::Expired);
                self.note_hold(ChangeOp::Expire, slot);
                expired += 1;
            }
        }
        self.forget_due(now_ms);
        (now_ms, expired)
    }

    /// A tick on a node that captures changes: moves the clock to `now_ms` and expires due
    /// holds until `changes_bytes_max` bytes of changes are captured (at least one, if any is
    /// due), then forgets what is due. Returns how many expired; [`Engine::expire_exactly`]
    /// with that count repeats it. [`Engine::expiry_due`] tells whether more are due.
    pub fn expire_due(&mut self, now_ms: u64, changes_bytes_max: usize) -> u32 {
        let start = self.changes_pending().1;
        let bound = ExpiryBound::Bytes(start.saturating_add(changes_bytes_max));
        self.advance_bounded(now_ms, bound).1
    }

    /// Replays a tick of [`Engine::expire_due`]: moves the clock to `now_ms`, expires the next
    /// `count` due holds (in the same order), forgets what is due. Errs with how many were
    /// due when fewer than `count` were: the log and the state disagree.
    pub fn expire_exactly(&mut self, now_ms: u64, count: u32) -> Result<(), u32> {
        let (_, expired) = self.advance_bounded(now_ms, ExpiryBound::Count(count));
        if expired == count {
            Ok(())
        } else {
            Err(expired)
        }
    }

    /// Whether a hold is due to expire by `now_ms`. May answer yes for a hold confirmed since
    /// its entry was queued (an expiry that then changes nothing).
    pub fn expiry_due(&self, now_ms: u64) -> bool {
        self.expiry.next_ms().is_some_and(|due| due <= now_ms)
    }

    /// Forgets every ended hold whose retention has passed by `now_ms`; returns how many.
    fn forget_due(&mut self, now_ms: u64) -> u32 {
        let mut forgotten = 0;
        while let Some(&(ended_at_ms, slot)) = self.retention.front() {
            if ended_at_ms.saturating_add(self.hold_retention_ms) > now_ms {
                break;
            }
            self.retention.pop_front();
            let hold = &self.holds[slot as usize];
            if hold.is_used() && hold.status.has_ended() && hold.ended_at_ms == ended_at_ms {
                self.forget(slot);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Removes the ended hold at `slot` from its partition and frees the slot: its id may be
    /// used again.
    fn forget(&mut self, slot: u32) {
        let hold = &self.holds[slot as usize];
        assert!(hold.status.has_ended(), "invariant broken: forgetting a hold that has not ended");
        let hash = self.hash(hold.id());
        let removed = self.partitions[hold.partition as usize].holds.remove(hash, slot);
        assert!(removed, "invariant broken: a hold was not in its partition's index");
        self.release_slot(slot);
    }

    /// Frees the slot of a hold already out of its partition's index.
    fn release_slot(&mut self, slot: u32) {
        let bytes = self.holds[slot as usize].memory_bytes();
        self.memory_bytes = units_sub(self.memory_bytes, bytes, "memory_bytes");
        self.holds[slot as usize] = Hold::free();
        self.free_holds.free(slot);
        self.holds_len = u64::from(self.holds_len)
            .checked_sub(1)
            .map_or_else(|| panic!("invariant broken: holds_len below zero"), |n| n as u32);
    }

    /// The partition named `name`. The last one found is tried first: consecutive commands
    /// often name the same partition (an on-sale event, one hotel's burst), and one comparison
    /// is cheaper than hashing the name.
    pub(crate) fn find_partition(&self, name: &str) -> Option<u32> {
        let last = self.last_partition.get();
        let is = |index: u32| self.partition_names.get(index as usize).is_some_and(|n| n.is(name));
        if is(last) {
            return Some(last);
        }
        let found = self.partition_index.find(self.hash(name), is);
        if let Some(index) = found {
            self.last_partition.set(index);
        }
        found
    }

    /// Most likely the partition named `name`, for hints: the last one found if it has this
    /// name, else the first whose hash tag matches, without comparing names and without
    /// changing which partition was found last.
    #[inline]
    pub(crate) fn partition_hint(&self, name: &str) -> Option<&Partition> {
        let last = self.last_partition.get();
        if self.partition_names.get(last as usize).is_some_and(|stored| stored.is(name)) {
            return self.partitions.get(last as usize);
        }
        let index = self.partition_index.candidate(self.hash(name))?;
        self.partitions.get(index as usize)
    }

    /// The hash of a name, for the indexes.
    #[inline]
    pub(crate) fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// `name`, ready to be looked up in any index.
    #[inline]
    pub(crate) fn key<'a>(&self, name: &'a str) -> NameKey<'a> {
        NameKey { name, hash: self.hash(name), short: ShortName::of(name) }
    }

    /// The slot of the hold `id` names in partition `partition`.
    #[inline]
    pub(crate) fn find_hold_in(&self, partition: u32, id: &NameKey) -> Option<u32> {
        self.partitions[partition as usize].holds.find(id.hash, |slot| {
            let hold = &self.holds[slot as usize];
            id.is(&hold.short_id, || hold.id())
        })
    }

    /// The slot of hold `id` in `partition`, or `hold_not_found`.
    pub(crate) fn find_hold(&self, partition: &str, id: &str) -> Result<u32, Refusal> {
        let partition = self.find_partition(partition).ok_or(Refusal::HoldNotFound)?;
        self.find_hold_in(partition, &self.key(id)).ok_or(Refusal::HoldNotFound)
    }

    /// Creates a partition. The caller has checked it does not exist and the table has room.
    pub(crate) fn insert_partition(&mut self, name: &str) -> u32 {
        assert!(self.partitions_live() < self.limits.partitions_max as usize);
        let hash = self.hash(name);
        assert!(self.find_partition(name).is_none(), "invariant broken: partition inserted twice");
        let index = match self.free_partitions.pop_first() {
            Some(index) => {
                self.partitions[index as usize] = Partition::new(Arc::from(name));
                self.partition_names[index as usize] = InlineName::of(name);
                index
            }
            None => {
                self.partitions.push(Partition::new(Arc::from(name)));
                self.partition_names.push(InlineName::of(name));
                (self.partitions.len() - 1) as u32
            }
        };
        self.partition_index.insert(hash, index);
        self.memory_bytes += partition_memory_bytes(name);
        index
    }

    /// Removes partition `partition`, which has no held hold, with its resources and holds;
    /// returns how many of each were removed. Its hold slots and its index are free for reuse.
    pub(crate) fn remove_partition(&mut self, partition: u32) -> (u32, u32) {
        let part = std::mem::replace(
            &mut self.partitions[partition as usize],
            Partition::new(Arc::from("")),
        );
        assert_eq!(part.holds_live, 0, "invariant broken: deleting a partition with held holds");
        let mut holds = 0u32;
        for slot in part.holds.slots() {
            assert_eq!(
                self.holds[slot as usize].partition, partition,
                "invariant broken: a partition indexes another's hold"
            );
            self.release_slot(slot);
            holds += 1;
        }
        let resources = part.resources.len() as u32;
        let resource_bytes: u64 =
            part.resources.iter().map(|resource| resource_memory_bytes(&resource.id)).sum();
        let bytes = resource_bytes + partition_memory_bytes(&part.name);
        self.memory_bytes = units_sub(self.memory_bytes, bytes, "memory_bytes");
        self.resources_len = match self.resources_len.checked_sub(resources) {
            Some(len) => len,
            None => panic!("invariant broken: resources_len below zero"),
        };
        let removed = self.partition_index.remove(self.hash(&part.name), partition);
        assert!(removed, "invariant broken: a partition was not indexed");
        // An empty name never equals a partition's name (1..=64 bytes), so lookups skip it.
        self.partition_names[partition as usize] = InlineName::of("");
        self.free_partitions.insert(partition);
        (resources, holds)
    }

    /// Creates a resource. The caller has checked it does not exist and the table has room.
    pub(crate) fn insert_resource(&mut self, partition: u32, id: &str, capacity: u64) -> u32 {
        assert!(self.resources_len < self.limits.resources_max);
        let key = self.key(id);
        let partition = &mut self.partitions[partition as usize];
        assert!(
            partition.find_resource(&key).is_none(),
            "invariant broken: resource inserted twice"
        );
        let index = partition.resources.len() as u32;
        let id: Arc<str> = Arc::from(id);
        partition.resources.push(Resource::new(id.clone(), capacity, 0, 0));
        partition.resource_order.insert(id, index);
        partition.resource_index.insert(key.hash, index);
        self.resources_len += 1;
        self.memory_bytes += resource_memory_bytes(key.name);
        index
    }

    /// Creates a held hold and takes its units. The caller has checked that the id (whose hash
    /// is `hash`) is new in the partition and that every item fits.
    pub(crate) fn insert_hold(
        &mut self,
        partition: u32,
        id: &NameKey,
        items: HoldItems,
        expires_at_ms: u64,
        reference: Option<&str>,
    ) -> u32 {
        assert!(self.holds_len < self.limits.holds_max);
        assert!(expires_at_ms > self.clock_ms, "invariant broken: hold created already expired");
        let part = &mut self.partitions[partition as usize];
        for item in items.iter() {
            let resource = &mut part.resources[item.resource as usize];
            resource.held = units_add(resource.held, u64::from(item.quantity), "held");
            resource.assert_within_capacity();
        }
        let hold = Hold::new(partition, id, HoldStatus::Held, expires_at_ms, items, reference);
        self.memory_bytes += hold.memory_bytes();
        let slot = match self.free_holds.take() {
            Some(slot) => {
                self.holds[slot as usize] = hold;
                slot
            }
            None => {
                self.holds.push(hold);
                (self.holds.len() - 1) as u32
            }
        };
        self.holds_len += 1;
        part.holds.insert(id.hash, slot);
        part.holds_live += 1;
        self.holds_live += 1;
        self.schedule_expiry(slot, expires_at_ms);
        slot
    }

    /// Sets a held hold's expiry.
    pub(crate) fn set_expiry(&mut self, slot: u32, expires_at_ms: u64) {
        let hold = &mut self.holds[slot as usize];
        assert_eq!(hold.status, HoldStatus::Held, "invariant broken: only held holds expire");
        assert!(expires_at_ms > self.clock_ms, "invariant broken: extended into the past");
        hold.expires_at_ms = expires_at_ms;
        self.schedule_expiry(slot, expires_at_ms);
    }

    fn schedule_expiry(&mut self, slot: u32, expires_at_ms: u64) {
        self.expiry.push(expires_at_ms, slot);
        if self.expiry.wants_compaction(self.holds_live as usize) {
            let holds = &self.holds;
            self.expiry.retain(|expires_at_ms, slot| {
                let hold = &holds[slot as usize];
                hold.status == HoldStatus::Held && hold.expires_at_ms == expires_at_ms
            });
        }
    }

    /// Moves a hold to `to` and moves its units between the resource counters. Only the
    /// transitions of the contract's state diagram are possible; anything else is a bug.
    pub(crate) fn transition(&mut self, slot: u32, to: HoldStatus) {
        let hold = &mut self.holds[slot as usize];
        let from = hold.status;
        let resources = &mut self.partitions[hold.partition as usize].resources;
        for item in &hold.items {
            let quantity = u64::from(item.quantity);
            let resource = &mut resources[item.resource as usize];
            match (from, to) {
                (HoldStatus::Held, HoldStatus::Confirmed) => {
                    resource.held = units_sub(resource.held, quantity, "held");
                    resource.confirmed = units_add(resource.confirmed, quantity, "confirmed");
                }
                (HoldStatus::Held, HoldStatus::Released | HoldStatus::Expired) => {
                    resource.held = units_sub(resource.held, quantity, "held");
                }
                (HoldStatus::Confirmed, HoldStatus::Cancelled) => {
                    resource.confirmed = units_sub(resource.confirmed, quantity, "confirmed");
                }
                _ => panic!("invariant broken: no transition from {from:?} to {to:?}"),
            }
            resource.assert_within_capacity();
        }
        if from == HoldStatus::Held {
            self.partitions[hold.partition as usize].holds_live -= 1;
            self.holds_live -= 1;
        }
        hold.status = to;
        if to.has_ended() {
            hold.ended_at_ms =
                if to == HoldStatus::Expired { hold.expires_at_ms } else { self.clock_ms };
            assert!(
                self.retention.back().is_none_or(|&(last, _)| last <= hold.ended_at_ms),
                "invariant broken: holds end out of time order"
            );
            self.retention.push_back((hold.ended_at_ms, slot));
        }
    }

    pub(crate) fn resource_view(&self, partition: u32, resource: u32) -> ResourceView {
        let part = &self.partitions[partition as usize];
        let resource = &part.resources[resource as usize];
        ResourceView {
            partition: part.name.clone(),
            id: resource.id.clone(),
            capacity: resource.capacity,
            held: resource.held,
            confirmed: resource.confirmed,
        }
    }

    pub(crate) fn hold_ref(&self, slot: u32) -> HoldRef<'_> {
        let hold = &self.holds[slot as usize];
        let part = &self.partitions[hold.partition as usize];
        HoldRef {
            partition: &part.name,
            id: hold.id(),
            status: hold.status,
            expires_at_ms: hold.expires_at_ms,
            reference: hold.reference().map(|reference| &**reference),
            items: &hold.items,
            resources: &part.resources,
        }
    }

    pub(crate) fn hold_view(&self, slot: u32) -> HoldView {
        let hold = &self.holds[slot as usize];
        let part = &self.partitions[hold.partition as usize];
        HoldView {
            partition: part.name.clone(),
            id: Arc::from(hold.id()),
            status: hold.status,
            items: part.view_items(&hold.items),
            expires_at_ms: hold.expires_at_ms,
            reference: hold.reference().cloned(),
        }
    }

    /// Checks every invariant over the whole state, recomputing each resource's counters from
    /// the holds. O(size); for tests and debugging.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        self.check_counts()?;
        self.check_retention()?;
        self.check_indexes()
    }

    /// The invariants of the records themselves, in one sequential pass: slots, statuses, each
    /// resource's counters against its holds, capacities, the memory count. A snapshot restore
    /// checks these; the indexes and the retention queue it builds from the records, so they
    /// agree with them by construction (a duplicate name is refused as it is indexed).
    pub(crate) fn check_counts(&self) -> Result<(), InvariantViolation> {
        let tally = self.tally_holds()?;
        if tally.live != self.holds_live {
            return Err(InvariantViolation::HoldsLive {
                counted: self.holds_live,
                held: tally.live,
            });
        }
        let used = tally.used;
        if used != self.holds_len || self.free_holds.len() + used as usize != self.holds.len() {
            return Err(InvariantViolation::HoldsLen { counted: self.holds_len, used });
        }
        let (resources, partitions_memory_bytes) = self.check_resources(&tally.counts)?;
        if resources != self.resources_len {
            return Err(InvariantViolation::ResourcesLen {
                counted: self.resources_len,
                resources,
            });
        }
        let memory_bytes = tally.memory_bytes + partitions_memory_bytes;
        if memory_bytes != self.memory_bytes {
            return Err(InvariantViolation::MemoryBytes {
                counted: self.memory_bytes,
                records: memory_bytes,
            });
        }
        Ok(())
    }

    /// One pass over the hold slots: checks each slot and hold, and adds up what the holds
    /// count for.
    fn tally_holds(&self) -> Result<HoldTally, InvariantViolation> {
        let mut tally = HoldTally {
            counts: self.partitions.iter().map(|p| vec![(0, 0); p.resources.len()]).collect(),
            live: 0,
            used: 0,
            memory_bytes: 0,
        };
        for (slot, hold) in self.holds.iter().enumerate() {
            if !hold.is_used() {
                if !self.free_holds.contains(slot as u32) {
                    return Err(InvariantViolation::SlotNeitherUsedNorFree { slot });
                }
                continue;
            }
            self.check_used_hold(slot, hold)?;
            tally.used += 1;
            tally.memory_bytes += hold.memory_bytes();
            let counts = tally
                .counts
                .get_mut(hold.partition as usize)
                .ok_or(InvariantViolation::HoldNamesMissingPartition { slot })?;
            if hold.status == HoldStatus::Held {
                tally.live += 1;
                if hold.expires_at_ms <= self.clock_ms {
                    return Err(InvariantViolation::HeldPastExpiry { hold: hold.id().into() });
                }
            }
            add_hold_items(counts, hold)?;
        }
        Ok(tally)
    }

    /// A used slot is not free, and its hold is not in a deleted partition.
    fn check_used_hold(&self, slot: usize, hold: &Hold) -> Result<(), InvariantViolation> {
        if self.free_holds.contains(slot as u32) {
            return Err(InvariantViolation::HoldInFreeSlot { hold: hold.id().into() });
        }
        if self.free_partitions.contains(&hold.partition) {
            return Err(InvariantViolation::HoldInDeletedPartition { hold: hold.id().into() });
        }
        Ok(())
    }

    /// Checks each live partition's resources against what its holds count for (`counts`),
    /// and that deleted partitions are empty; returns the resources counted and the memory of
    /// the partitions and resources.
    fn check_resources(
        &self,
        counts: &[Vec<(u64, u64)>],
    ) -> Result<(u32, u64), InvariantViolation> {
        let mut resources = 0u32;
        let mut memory_bytes = 0u64;
        for (index, (part, counts)) in self.partitions.iter().zip(counts).enumerate() {
            if self.free_partitions.contains(&(index as u32)) {
                if !part.resources.is_empty() || part.holds.len() > 0 {
                    return Err(InvariantViolation::DeletedPartitionNotEmpty { index });
                }
                continue;
            }
            memory_bytes += partition_memory_bytes(&part.name);
            memory_bytes +=
                part.resources.iter().map(|r| resource_memory_bytes(&r.id)).sum::<u64>();
            for (resource, &(held, confirmed)) in part.resources.iter().zip(counts) {
                resources += 1;
                check_resource(part, resource, held, confirmed)?;
            }
        }
        Ok((resources, memory_bytes))
    }

    /// Every ended hold waits in the retention queue, which is in time order.
    fn check_retention(&self) -> Result<(), InvariantViolation> {
        let queued: std::collections::HashSet<(u64, u32)> =
            self.retention.iter().copied().collect();
        for (slot, hold) in self.holds.iter().enumerate() {
            if hold.is_used()
                && hold.status.has_ended()
                && !queued.contains(&(hold.ended_at_ms, slot as u32))
            {
                return Err(InvariantViolation::EndedHoldNotQueued { hold: hold.id().into() });
            }
        }
        let in_order =
            self.retention.iter().zip(self.retention.iter().skip(1)).all(|(a, b)| a.0 <= b.0);
        if !in_order {
            return Err(InvariantViolation::RetentionOutOfOrder);
        }
        Ok(())
    }

    /// Every record is found through its partition's index under its own hash, and a hold's
    /// reply items are its items.
    fn check_indexes(&self) -> Result<(), InvariantViolation> {
        let mut holds_per_partition = vec![0usize; self.partitions.len()];
        for (slot, hold) in self.holds.iter().enumerate().filter(|(_, hold)| hold.is_used()) {
            holds_per_partition[hold.partition as usize] += 1;
            if self.find_hold_in(hold.partition, &self.key(hold.id())) != Some(slot as u32) {
                return Err(InvariantViolation::HoldNotIndexed { hold: hold.id().into() });
            }
        }
        if self.partition_names.len() != self.partitions.len() {
            return Err(InvariantViolation::PartitionNamesDisagree);
        }
        for (index, part) in self.partitions.iter().enumerate() {
            if self.free_partitions.contains(&(index as u32)) {
                continue;
            }
            if self.find_partition(&part.name) != Some(index as u32) {
                return Err(InvariantViolation::PartitionNotIndexed {
                    partition: part.name.clone(),
                });
            }
        }
        for (part, holds) in self.partitions.iter().zip(holds_per_partition) {
            if part.holds.len() != holds || part.resource_index.len() != part.resources.len() {
                return Err(InvariantViolation::PartitionIndexSizes {
                    partition: part.name.clone(),
                });
            }
            for (index, resource) in part.resources.iter().enumerate() {
                if part.find_resource(&self.key(&resource.id)) != Some(index as u32)
                    || resource.short_id != ShortName::of(&resource.id)
                {
                    return Err(InvariantViolation::ResourceNotIndexed {
                        partition: part.name.clone(),
                        resource: resource.id.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// What the holds' records add up to ([`Engine::check_counts`]).
struct HoldTally {
    /// Per partition, per resource: the quantities its holds hold and confirmed.
    counts: Vec<Vec<(u64, u64)>>,
    /// Holds in the `held` state.
    live: u32,
    /// Slots in use.
    used: u32,
    /// Memory of the holds.
    memory_bytes: u64,
}

/// Adds what `hold` holds or confirmed to its partition's per-resource `counts`.
fn add_hold_items(counts: &mut [(u64, u64)], hold: &Hold) -> Result<(), InvariantViolation> {
    for item in hold.items.iter() {
        let count = counts.get_mut(item.resource as usize).ok_or_else(|| {
            InvariantViolation::HoldNamesMissingResource { hold: hold.id().into() }
        })?;
        let quantity = u64::from(item.quantity);
        match hold.status {
            HoldStatus::Held => count.0 += quantity,
            HoldStatus::Confirmed => count.1 += quantity,
            _ => {}
        }
    }
    Ok(())
}

/// A resource's counters are what its holds count for, within its capacity.
fn check_resource(
    part: &Partition,
    resource: &Resource,
    held: u64,
    confirmed: u64,
) -> Result<(), InvariantViolation> {
    if (resource.held, resource.confirmed) != (held, confirmed) {
        return Err(InvariantViolation::ResourceCounters {
            partition: part.name.clone(),
            resource: resource.id.clone(),
            counters: (resource.held, resource.confirmed),
            holds: (held, confirmed),
        });
    }
    if held + confirmed > resource.capacity {
        return Err(InvariantViolation::Oversold {
            partition: part.name.clone(),
            resource: resource.id.clone(),
        });
    }
    Ok(())
}

/// The memory the budget counts for a hold of `items` items, with a long id of that many bytes
/// (one that does not fit inline) and a reference of that many bytes: the record and its index
/// share, the items array when they do not fit in the record, and the boxed extra.
pub(crate) fn hold_memory_bytes(
    items: usize,
    long_id: Option<usize>,
    reference: Option<usize>,
) -> u64 {
    let spilled = if items > HOLD_ITEMS_INLINE { items * 8 } else { 0 };
    let extra = if long_id.is_some() || reference.is_some() {
        std::mem::size_of::<HoldExtra>() + long_id.unwrap_or(0) + reference.map_or(0, |r| 16 + r)
    } else {
        0
    };
    crate::limits::HOLD_MEMORY_BYTES + (spilled + extra) as u64
}

/// The memory the budget counts for a resource named `id`: its record, its index entry, its
/// entry in the ordered listing and its shared id.
pub(crate) fn resource_memory_bytes(id: &str) -> u64 {
    crate::limits::RESOURCE_MEMORY_BYTES + id.len() as u64
}

/// The memory the budget counts for a partition named `name` (its tables start empty).
pub(crate) fn partition_memory_bytes(name: &str) -> u64 {
    crate::limits::PARTITION_MEMORY_BYTES + name.len() as u64
}

#[cfg(test)]
mod retention_tests {
    use crate::testing::*;
    use crate::HoldStatus;

    const D: u64 = 60_000;

    #[test]
    fn an_ended_hold_is_kept_for_the_retention_then_forgotten_and_its_id_reusable() {
        let mut engine = engine_with(10);
        engine.set_hold_retention_ms(D);
        engine.apply(T0, &hold("p", "released", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "cancelled", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "expired", &[("r", 1)], Some(100))).unwrap();
        engine.apply(T0, &hold("p", "confirmed", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &hold("p", "held", &[("r", 1)], Some(86_400_000))).unwrap();
        engine.apply(T0 + 10, &release("p", "released")).unwrap();
        engine.apply(T0 + 10, &confirm("p", "cancelled")).unwrap();
        engine.apply(T0 + 20, &cancel("p", "cancelled")).unwrap();
        engine.apply(T0 + 20, &confirm("p", "confirmed")).unwrap();
        // Within the retention a repeat answers with the current state.
        engine.tick(T0 + 10 + D - 1);
        assert_eq!(
            status(engine.apply(T0 + 10 + D - 1, &release("p", "released"))),
            Ok(HoldStatus::Released)
        );
        engine.tick(T0 + 10 + D);
        assert!(engine.hold("p", "released").is_err(), "forgotten D after it ended");
        assert!(engine.hold("p", "cancelled").is_ok());
        assert!(engine.hold("p", "expired").is_ok(), "expired at T0 + 100");
        engine.tick(T0 + 100 + D);
        assert!(engine.hold("p", "cancelled").is_err());
        assert!(engine.hold("p", "expired").is_err());
        // Held and confirmed holds stay, whatever the time.
        engine.tick(T0 + 86_399_999);
        assert!(engine.hold("p", "confirmed").is_ok());
        assert!(engine.hold("p", "held").is_ok());
        assert_eq!(engine.stats().holds, 2);
        assert_eq!(engine.check_invariants(), Ok(()));
        // A forgotten id may be used again, with other items.
        engine.apply(T0 + 86_399_999, &put("p", "s", 1)).unwrap();
        let again = hold("p", "released", &[("s", 1)], None);
        assert!(engine.apply(T0 + 86_399_999, &again).is_ok());
        assert_eq!(engine.check_invariants(), Ok(()));
    }

    #[test]
    fn a_command_that_arrives_after_the_retention_meets_no_hold() {
        let mut engine = engine_with(10);
        engine.set_hold_retention_ms(D);
        engine.apply(T0, &hold("p", "h", &[("r", 1)], None)).unwrap();
        engine.apply(T0, &release("p", "h")).unwrap();
        // No tick in between: the command's own clock forgets the hold first.
        assert_eq!(engine.apply(T0 + D, &release("p", "h")).unwrap_err().code(), "hold_not_found");
        let fresh = engine.apply(T0 + D, &hold("p", "h", &[("r", 2)], None)).unwrap();
        assert!(matches!(fresh, crate::Outcome::Hold { existing: false, .. }));
    }

    #[test]
    fn forgotten_slots_are_reused_so_the_table_stays_flat() {
        let mut engine = engine_with(1_000);
        engine.set_hold_retention_ms(D);
        for round in 0..20u64 {
            let now = T0 + round * D;
            for h in 0..100 {
                let id = format!("r{round}-{h}");
                engine.apply(now, &hold("p", &id, &[("r", 1)], None)).unwrap();
                engine.apply(now, &release("p", &id)).unwrap();
            }
        }
        assert!(engine.holds.len() <= 200, "the slab grew to {}", engine.holds.len());
        assert_eq!(engine.check_invariants(), Ok(()));
    }
}

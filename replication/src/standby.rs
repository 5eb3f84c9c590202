//! The standby side: connect to the primary, say where each shard's log ends, then append the
//! primary's records verbatim (durably, through the runtime), apply them, and acknowledge the
//! synced position; install a snapshot when the primary sends one, writing each piece to disk
//! as it arrives; reconnect with backoff after a network or primary failure; on a full disk,
//! keep what fits and offer the rest again, with backoff, until there is room.
//!
//! Invariants: a standby follows no primary of a lower epoch than its own, and persists the
//! primary's epoch before it appends records of that epoch; an acknowledgement names only a
//! position that is on this node's disk; a refusal (divergence, epoch) is final: the standby
//! stops following and says why in its status, it never mixes histories; a full disk loses no
//! record and skips none (the records are retried from the durable position); a snapshot is
//! installed whole or not at all, and never held in memory whole.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bookd_runtime::{
    InstallError, RawRead, ReplicateError, Runtime, SnapshotInstall, StagedSnapshot,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::limits::{
    APPLY_BATCH_SIZE_MAX_BYTES, APPLY_QUEUE_MESSAGES_MAX, DISK_FULL_RETRY_MAX, DISK_FULL_RETRY_MIN,
    HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, PRIMARY_SILENCE_TIMEOUT, RECONNECT_BACKOFF_MAX,
    RECONNECT_BACKOFF_MIN,
};
use crate::message::{LogEnd, Message};
use crate::transport::{Connector, Transport, TransportError};
use crate::{record_crc, records_after, EpochStore, Refusal, ReplicationError};

/// What a standby knows about its primary, for status and metrics.
#[derive(Debug, Clone, Default)]
pub struct FollowStatus {
    /// `connecting`, `following`, `refused` or `stopped`.
    pub state: &'static str,
    /// The last error or refusal.
    pub error: Option<String>,
    pub primary_epoch: u64,
    /// Per shard: the position synced on this node.
    pub applied_lsns: Vec<u64>,
    /// Per shard: the primary's durable position as last heard.
    pub primary_durable_lsns: Vec<u64>,
    /// Per shard: since when this node has been behind the primary (lag in ms).
    pub behind_since: Vec<Option<Instant>>,
    /// Per shard: since when this node's disk has had no room for what the primary sends.
    pub disk_full_since: Vec<Option<Instant>>,
    pub sessions: u64,
    pub snapshots_installed: u64,
    pub last_heard: Option<Instant>,
}

/// The standby's shared state: read by status while the follower updates it.
#[derive(Debug)]
pub struct StandbyState {
    primary: String,
    /// Whether a session is established (`Relaxed`: a status flag, nothing depends on it).
    connected: AtomicBool,
    status: Mutex<FollowStatus>,
}

impl StandbyState {
    pub fn new(primary: String, shards: usize) -> StandbyState {
        StandbyState {
            primary,
            connected: AtomicBool::new(false),
            status: Mutex::new(FollowStatus {
                state: "connecting",
                applied_lsns: vec![0; shards],
                primary_durable_lsns: vec![0; shards],
                behind_since: vec![None; shards],
                disk_full_since: vec![None; shards],
                ..FollowStatus::default()
            }),
        }
    }

    pub fn primary(&self) -> &str {
        &self.primary
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, FollowStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the current status.
    pub fn status(&self) -> FollowStatus {
        self.lock().clone()
    }

    fn set_state(&self, state: &'static str, error: Option<String>) {
        let mut status = self.lock();
        status.state = state;
        if error.is_some() {
            status.error = error;
        }
    }

    fn positions(&self, shard: usize, applied: Option<u64>, primary: Option<u64>) {
        let mut status = self.lock();
        let Some(current) = status.applied_lsns.get(shard).copied() else { return };
        let applied = applied.unwrap_or(current).max(current);
        status.applied_lsns[shard] = applied;
        if let Some(primary) = primary {
            status.primary_durable_lsns[shard] = status.primary_durable_lsns[shard].max(primary);
        }
        let behind = status.primary_durable_lsns[shard] > applied;
        match (behind, status.behind_since[shard]) {
            (true, None) => status.behind_since[shard] = Some(Instant::now()),
            (false, Some(_)) => status.behind_since[shard] = None,
            _ => {}
        }
        status.last_heard = Some(Instant::now());
    }

    /// Marks `shard` as waiting for disk room; true if it was not already (a new stall).
    fn disk_full(&self, shard: usize) -> bool {
        let mut status = self.lock();
        match status.disk_full_since.get_mut(shard) {
            Some(since @ None) => {
                *since = Some(Instant::now());
                true
            }
            _ => false,
        }
    }

    /// `shard` had room again: how long it waited, if it was waiting.
    fn disk_room(&self, shard: usize) -> Option<Duration> {
        let mut status = self.lock();
        status.disk_full_since.get_mut(shard)?.take().map(|since| since.elapsed())
    }
}

/// How a follower ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEnd {
    /// Told to stop (promotion or shutdown).
    Stopped,
    /// The primary refused this standby, or this standby refused the primary: final.
    Refused(String),
}

/// Settings of a follower.
#[derive(Clone)]
pub struct FollowConfig {
    /// Ask the primary for snapshots of every shard, replacing this node's logs.
    pub reseed: bool,
    /// Persists a raised epoch (the data directory's epoch file).
    pub persist_epoch: EpochStore,
}

impl std::fmt::Debug for FollowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowConfig").field("reseed", &self.reseed).finish_non_exhaustive()
    }
}

/// Follows the primary behind `connector` until `stop` turns true or a refusal.
pub async fn follow<C: Connector>(
    runtime: Arc<Runtime>,
    connector: C,
    state: Arc<StandbyState>,
    mut config: FollowConfig,
    mut stop: watch::Receiver<bool>,
) -> FollowEnd {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut disk_backoff = DISK_FULL_RETRY_MIN;
    loop {
        if *stop.borrow() {
            break;
        }
        state.set_state("connecting", None);
        let connected = tokio::select! {
            biased;
            () = crate::stopped(&mut stop) => break,
            connected = connector.connect() => connected,
        };
        let session = match connected {
            Ok(transport) => {
                let mut session = Session { runtime: &runtime, state: &state, config: &mut config };
                session.run(transport, &mut stop).await
            }
            Err(error) => Err(ReplicationError::Transport(error)),
        };
        state.connected.store(false, Ordering::Relaxed);
        match session {
            Ok(Some(end)) => {
                state.set_state("stopped", None);
                return end;
            }
            Ok(None) => break,
            Err(ReplicationError::Refused(refusal)) => {
                return refused(&state, &connector, &refusal)
            }
            Err(error @ ReplicationError::DiskFull { .. }) => {
                // Said once per stall by the applier that met it; retried here with its own
                // backoff, since a session that heard its primary would reset the other.
                tracing::debug!(reason = %error, retry_ms = disk_backoff.as_millis() as u64, "no room for the primary's snapshot; asking again");
                state.set_state("connecting", Some(error.to_string()));
                tokio::select! {
                    biased;
                    () = crate::stopped(&mut stop) => break,
                    () = tokio::time::sleep(disk_backoff) => {}
                }
                disk_backoff = (disk_backoff * 2).min(DISK_FULL_RETRY_MAX);
                continue;
            }
            Err(error) => {
                disk_backoff = DISK_FULL_RETRY_MIN;
                backoff = lost(&state, &connector, &error, backoff);
            }
        }
        tokio::select! {
            biased;
            () = crate::stopped(&mut stop) => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
    state.set_state("stopped", None);
    FollowEnd::Stopped
}

/// A final refusal: said, shown in the status, and how the follower ends.
fn refused<C: Connector>(state: &StandbyState, connector: &C, refusal: &Refusal) -> FollowEnd {
    let reason = refusal.to_string();
    tracing::error!(primary = %connector.describe(), %reason, "not following the primary");
    state.set_state("refused", Some(reason.clone()));
    FollowEnd::Refused(reason)
}

/// A session that ended with `error`, said and shown in the status; returns the pause before
/// the next connection: `backoff`, or the shortest again if the session had been following.
fn lost<C: Connector>(
    state: &StandbyState,
    connector: &C,
    error: &ReplicationError,
    backoff: Duration,
) -> Duration {
    let followed = state.lock().last_heard.is_some_and(|heard| heard.elapsed() < backoff * 4);
    let backoff = if followed { RECONNECT_BACKOFF_MIN } else { backoff };
    tracing::warn!(primary = %connector.describe(), %error, retry_ms = backoff.as_millis() as u64, "replication connection lost; reconnecting");
    state.set_state("connecting", Some(error.to_string()));
    backoff
}

/// Where each shard's log ends on this node: position and checksum of its last record.
pub async fn log_ends(runtime: &Runtime) -> Result<Vec<LogEnd>, ReplicationError> {
    let mut ends = Vec::with_capacity(runtime.shards());
    for shard in 0..runtime.shards() {
        let last_lsn = runtime.metrics()[shard].durable_lsn.load(Ordering::Relaxed);
        let last_crc = if last_lsn == 0 {
            None
        } else {
            match runtime.read_raw(shard, last_lsn, 1).await? {
                RawRead::Records(bytes) if !bytes.is_empty() => {
                    Some(record_crc(&bytes).ok_or_else(|| {
                        ReplicationError::Runtime(format!(
                            "shard {shard}: record {last_lsn} unreadable"
                        ))
                    })?)
                }
                // The log ends at a snapshot.
                RawRead::Records(_) | RawRead::Unavailable { .. } => None,
            }
        };
        ends.push(LogEnd { last_lsn, last_crc });
    }
    Ok(ends)
}

struct Session<'a> {
    runtime: &'a Arc<Runtime>,
    state: &'a Arc<StandbyState>,
    config: &'a mut FollowConfig,
}

impl Session<'_> {
    /// `Ok(Some(Stopped))` when told to stop, `Err` on failure or refusal.
    async fn run<T: Transport>(
        &mut self,
        mut transport: T,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<FollowEnd>, ReplicationError> {
        let runtime = self.runtime;
        let shards = runtime.shards();
        let ends = log_ends(runtime).await?;
        let own_epoch = runtime.epoch();
        let reseed = self.config.reseed;
        transport
            .send(&Message::Subscribe { epoch: own_epoch, reseed, shards: ends.clone() })
            .await?;
        let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, transport.recv())
            .await
            .map_err(|_| ReplicationError::Transport(TransportError::NoHandshake("WELCOME")))??;
        let (epoch, durable_lsns) = match welcome {
            Some(Message::Welcome { epoch, durable_lsns }) => (epoch, durable_lsns),
            Some(Message::Refused { reason }) => {
                return Err(ReplicationError::Refused(Refusal::ByPrimary(reason)))
            }
            Some(other) => {
                return Err(ReplicationError::Protocol(format!(
                    "expected WELCOME, got {}",
                    other.name()
                )))
            }
            None => {
                return Err(ReplicationError::Transport(TransportError::Ended("before WELCOME")))
            }
        };
        if epoch < own_epoch {
            let refusal = Refusal::DeposedPrimary { epoch, own_epoch };
            let _ = transport.send(&Message::Refused { reason: refusal.to_string() }).await;
            return Err(ReplicationError::Refused(refusal));
        }
        if durable_lsns.len() != shards {
            return Err(ReplicationError::Protocol("WELCOME names another shard count".into()));
        }
        if epoch > own_epoch {
            // Persisted first: after a restart this node must still refuse older primaries.
            let persist = self.config.persist_epoch.clone();
            tokio::task::spawn_blocking(move || persist(epoch))
                .await
                .map_err(ReplicationError::Task)?
                .map_err(ReplicationError::PersistEpoch)?;
            runtime.raise_epoch(epoch);
        }
        {
            let mut status = self.state.lock();
            status.primary_epoch = epoch;
            status.sessions += 1;
            status.state = "following";
            status.error = None;
        }
        for (shard, end) in ends.iter().enumerate() {
            self.state.positions(shard, Some(end.last_lsn), Some(durable_lsns[shard]));
        }
        self.state.connected.store(true, Ordering::Relaxed);
        tracing::info!(epoch, reseed, "following the primary");
        let appliers = Appliers::start(runtime, self.state);
        let followed = self.follow_loop(&mut transport, &appliers, stop).await;
        appliers.stop().await;
        followed
    }

    /// Receives the primary's messages and hands them to the shards' appliers; sends an ACK
    /// whenever an applier has synced further. Returns on stop, failure or refusal.
    async fn follow_loop<T: Transport>(
        &mut self,
        transport: &mut T,
        appliers: &Appliers,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<FollowEnd>, ReplicationError> {
        let shards = self.runtime.shards();
        let shared = &appliers.shared;
        let mut acked: Vec<u64> =
            shared.synced.iter().map(|synced| synced.load(Ordering::Acquire)).collect();
        loop {
            self.send_acks(transport, appliers, &mut acked).await?;
            let received = tokio::select! {
                biased;
                () = crate::stopped(stop) => return Ok(Some(FollowEnd::Stopped)),
                () = shared.changed.notified() => continue,
                received = tokio::time::timeout(PRIMARY_SILENCE_TIMEOUT, transport.recv()) => received,
            };
            let message = received
                .map_err(|_| ReplicationError::Transport(TransportError::Silent("primary")))??;
            match message {
                None => {
                    return Err(ReplicationError::Transport(TransportError::Ended(
                        "primary closed",
                    )))
                }
                Some(Message::Records {
                    shard,
                    first_lsn,
                    last_lsn,
                    primary_durable_lsn,
                    bytes,
                }) => {
                    let index = self.shard(shard)?;
                    let work = Work::Records { first_lsn, last_lsn, primary_durable_lsn, bytes };
                    if !self.queue(transport, appliers, index, work, &mut acked, stop).await? {
                        return Ok(Some(FollowEnd::Stopped));
                    }
                }
                Some(Message::Snapshot { shard, lsn, total_bytes, offset, bytes }) => {
                    let index = self.shard(shard)?;
                    let work = Work::SnapshotPiece { lsn, total_bytes, offset, bytes };
                    if !self.queue(transport, appliers, index, work, &mut acked, stop).await? {
                        return Ok(Some(FollowEnd::Stopped));
                    }
                }
                Some(Message::Heartbeat { durable_lsns, .. }) => {
                    for (shard, durable) in durable_lsns.into_iter().enumerate().take(shards) {
                        self.state.positions(shard, None, Some(durable));
                    }
                    // Keep-alive: an idle standby still tells its primary it is there (an ACK of
                    // what shard 0 already has changes nothing).
                    let synced_lsn = shared.synced.first().map_or(0, |s| s.load(Ordering::Acquire));
                    transport.send(&Message::Ack { shard: 0, synced_lsn }).await?;
                }
                Some(Message::Refused { reason }) => {
                    return Err(ReplicationError::Transport(TransportError::Closed(reason)))
                }
                Some(other) => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected {} from the primary",
                        other.name()
                    )))
                }
            }
        }
    }

    /// Queues work for a shard's applier. While its queue is full (a slow disk, a full one, a
    /// snapshot being restored) this connection reads nothing more, but it still acknowledges
    /// what the appliers sync and tells the primary it is there, every heartbeat interval, so
    /// the primary does not take the wait for silence. False when told to stop.
    async fn queue<T: Transport>(
        &mut self,
        transport: &mut T,
        appliers: &Appliers,
        shard: usize,
        work: Work,
        acked: &mut [u64],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, ReplicationError> {
        let start = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
        let mut keepalive = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
        loop {
            tokio::select! {
                biased;
                () = crate::stopped(stop) => return Ok(false),
                permit = appliers.senders[shard].reserve() => {
                    let Ok(permit) = permit else {
                        return Err(appliers.failure(shard));
                    };
                    permit.send(work);
                    return Ok(true);
                }
                _ = keepalive.tick() => {
                    self.send_acks(transport, appliers, acked).await?;
                    let shared = &appliers.shared;
                    let synced_lsn = shared.synced.first().map_or(0, |s| s.load(Ordering::Acquire));
                    transport.send(&Message::Ack { shard: 0, synced_lsn }).await?;
                }
            }
        }
    }

    /// ACKs every shard an applier has synced further than last acknowledged; the first
    /// applier failure ends the session.
    async fn send_acks<T: Transport>(
        &mut self,
        transport: &mut T,
        appliers: &Appliers,
        acked: &mut [u64],
    ) -> Result<(), ReplicationError> {
        let shared = &appliers.shared;
        if let Some(error) = shared.failed.lock().unwrap_or_else(PoisonError::into_inner).take() {
            return Err(error);
        }
        for (shard, acked) in acked.iter_mut().enumerate() {
            let synced = shared.synced[shard].load(Ordering::Acquire);
            if synced != *acked {
                *acked = synced;
                transport.send(&Message::Ack { shard: shard as u16, synced_lsn: synced }).await?;
            }
        }
        let reseeded = shared.reseeded.iter().all(|done| done.load(Ordering::Acquire));
        if self.config.reseed && reseeded {
            tracing::info!("re-seeded every shard from the primary's snapshots");
            self.config.reseed = false;
        }
        Ok(())
    }

    fn shard(&self, shard: u16) -> Result<usize, ReplicationError> {
        let index = usize::from(shard);
        if index >= self.runtime.shards() {
            return Err(ReplicationError::Protocol(format!("message for unknown shard {shard}")));
        }
        Ok(index)
    }
}

/// Work for one shard's applier, in log order.
enum Work {
    Records {
        first_lsn: u64,
        last_lsn: u64,
        primary_durable_lsn: u64,
        bytes: Vec<u8>,
    },
    /// A piece of the primary's snapshot file.
    SnapshotPiece {
        lsn: u64,
        total_bytes: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
}

/// What the appliers tell the session.
struct ApplyShared {
    /// Per shard: the position synced on this node (`Release` by the applier after the runtime
    /// answered, `Acquire` by the session before it acknowledges it).
    synced: Vec<AtomicU64>,
    /// Per shard: a snapshot was installed in this session (`Release`/`Acquire`).
    reseeded: Vec<AtomicBool>,
    /// Set by `stop`: appliers finish the work in hand and take no more (`Release`/`Acquire`).
    stopping: AtomicBool,
    changed: Notify,
    failed: Mutex<Option<ReplicationError>>,
}

/// One task per shard applying the primary's records and snapshots, so shards apply in parallel
/// and a shard's queued messages are appended and synced together (one fsync for several).
struct Appliers {
    senders: Vec<mpsc::Sender<Work>>,
    handles: Vec<JoinHandle<()>>,
    shared: Arc<ApplyShared>,
    /// Turned true by `stop`: wakes an applier waiting for disk room.
    stop: watch::Sender<bool>,
}

impl Appliers {
    fn start(runtime: &Arc<Runtime>, state: &Arc<StandbyState>) -> Appliers {
        let shards = runtime.shards();
        let synced = state.status().applied_lsns.into_iter().map(AtomicU64::new).collect();
        let shared = Arc::new(ApplyShared {
            synced,
            reseeded: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            stopping: AtomicBool::new(false),
            changed: Notify::new(),
            failed: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        let mut senders = Vec::with_capacity(shards);
        let mut handles = Vec::with_capacity(shards);
        for shard in 0..shards {
            let (sender, receiver) = mpsc::channel(APPLY_QUEUE_MESSAGES_MAX);
            let applier = Applier {
                shard,
                runtime: runtime.clone(),
                state: state.clone(),
                shared: shared.clone(),
                stop: stopped.clone(),
                install: None,
            };
            senders.push(sender);
            handles.push(tokio::spawn(applier.run(receiver)));
        }
        Appliers { senders, handles, shared, stop }
    }

    /// Why `shard`'s applier took no more work: its failure, if it said one.
    fn failure(&self, shard: usize) -> ReplicationError {
        let failed = self.shared.failed.lock().unwrap_or_else(PoisonError::into_inner).take();
        failed
            .unwrap_or_else(|| ReplicationError::Runtime(format!("shard {shard}: applier stopped")))
    }

    /// Stops the appliers and waits for them: nothing is applied after this returns, and a
    /// snapshot being received is dropped (its staging removed).
    async fn stop(self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        drop(self.senders);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

struct Applier {
    shard: usize,
    runtime: Arc<Runtime>,
    state: Arc<StandbyState>,
    shared: Arc<ApplyShared>,
    stop: watch::Receiver<bool>,
    /// The snapshot being received, if any.
    install: Option<SnapshotInstall>,
}

impl Applier {
    async fn run(mut self, mut receiver: mpsc::Receiver<Work>) {
        let mut next: Option<Work> = None;
        loop {
            let work = match next.take() {
                Some(work) => work,
                None => match receiver.recv().await {
                    Some(work) => work,
                    None => break,
                },
            };
            if self.shared.stopping.load(Ordering::Acquire) {
                break;
            }
            let applied = match work {
                Work::Records { first_lsn, mut last_lsn, mut primary_durable_lsn, mut bytes } => {
                    // Messages queued behind this one continue it: one append and one sync.
                    while bytes.len() < APPLY_BATCH_SIZE_MAX_BYTES {
                        match receiver.try_recv() {
                            Ok(Work::Records {
                                last_lsn: last,
                                primary_durable_lsn: durable,
                                bytes: more,
                                ..
                            }) => {
                                bytes.extend_from_slice(&more);
                                last_lsn = last;
                                primary_durable_lsn = primary_durable_lsn.max(durable);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.records(first_lsn, last_lsn, primary_durable_lsn, bytes).await
                }
                Work::SnapshotPiece { lsn, total_bytes, offset, bytes } => {
                    self.snapshot_piece(lsn, total_bytes, offset, bytes).await
                }
            };
            if let Err(error) = applied {
                *self.shared.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
                self.shared.changed.notify_one();
                break;
            }
            self.shared.changed.notify_one();
        }
        // A snapshot not received whole is of no use: its staging goes (off the async runtime).
        if let Some(install) = self.install.take() {
            tracing::info!(
                shard = self.shard,
                lsn = install.lsn(),
                received = install.received_bytes(),
                total = install.total_bytes(),
                "abandoned a snapshot being received"
            );
            discard(install).await;
        }
    }

    /// Publishes a position synced on this node, for status and the next ACK.
    fn synced(&self, synced: u64, primary_durable_lsn: Option<u64>) {
        self.state.positions(self.shard, Some(synced), primary_durable_lsn);
        self.shared.synced[self.shard].store(synced, Ordering::Release);
        self.shared.changed.notify_one();
    }

    /// Waits `pause` unless told to stop first; false when stopping.
    async fn pause(&mut self, pause: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|stopping| *stopping) => false,
            () = tokio::time::sleep(pause) => true,
        }
    }

    /// The disk had no room: said once per stall, not per retry.
    fn stalled(&self, at_lsn: u64, what: &str, reason: &dyn std::fmt::Display) {
        if self.state.disk_full(self.shard) {
            tracing::warn!(shard = self.shard, lsn = at_lsn, %reason, "this standby's disk is full: {what} waits until there is room (tried again with back-off; reads are still served)");
        }
    }

    /// There was room: ends a stall, said once.
    fn room(&self, lsn: u64) {
        if let Some(waited) = self.state.disk_room(self.shard) {
            let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            tracing::info!(
                shard = self.shard,
                lsn,
                waited_ms,
                "room on the disk again: replication goes on"
            );
        }
    }

    /// Appends, syncs and applies records through the runtime. On a full disk the runtime
    /// keeps what fits; the rest is offered again after a pause (100 ms doubling to 2 s) until
    /// there is room, or the session stops (the next one resumes from the position on disk).
    async fn records(
        &mut self,
        first_lsn: u64,
        last_lsn: u64,
        primary_durable_lsn: u64,
        bytes: Vec<u8>,
    ) -> Result<(), ReplicationError> {
        let shard = self.shard;
        if self.install.is_some() {
            return Err(ReplicationError::Protocol(format!(
                "shard {shard}: records {first_lsn}..={last_lsn} in the middle of a snapshot"
            )));
        }
        let mut records = Arc::new(bytes);
        let mut pause = DISK_FULL_RETRY_MIN;
        loop {
            match self.runtime.replicate(shard, records.clone()).await {
                Ok(synced) => {
                    self.room(synced);
                    self.synced(synced, Some(primary_durable_lsn));
                    return Ok(());
                }
                Err(ReplicateError::NoSpace { durable_lsn, reason }) => {
                    self.synced(durable_lsn, Some(primary_durable_lsn));
                    self.stalled(durable_lsn, "appending the primary's records", &reason);
                    let rest = records_after(&records, durable_lsn).ok_or_else(|| {
                        ReplicationError::Runtime(format!("shard {shard}: unreadable records"))
                    })?;
                    if rest.is_empty() {
                        return Ok(());
                    }
                    if rest.len() != records.len() {
                        records = Arc::new(rest.to_vec());
                    }
                    if !self.pause(pause).await {
                        return Ok(());
                    }
                    pause = (pause * 2).min(DISK_FULL_RETRY_MAX);
                }
                Err(ReplicateError::Refused(source)) => {
                    let refusal = Refusal::Diverged { shard, first_lsn, last_lsn, source };
                    return Err(ReplicationError::Refused(refusal));
                }
                Err(ReplicateError::Failed(source)) => {
                    return Err(ReplicationError::ShardFailed { shard, source })
                }
            }
        }
    }

    /// Writes a piece of the primary's snapshot file into the staging area as it arrives (on
    /// a blocking thread); once the last is in, checks it, restores the engine from it, and
    /// has the runtime swap it in. A piece out of order ends the session (the next one starts
    /// the snapshot over); a piece at offset 0 starts a new one, dropping any in progress.
    async fn snapshot_piece(
        &mut self,
        lsn: u64,
        total_bytes: u64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<(), ReplicationError> {
        let shard = self.shard;
        if offset == 0 {
            if let Some(old) = self.install.take() {
                tracing::info!(
                    shard,
                    old_lsn = old.lsn(),
                    lsn,
                    "a new snapshot replaces the one being received"
                );
                discard(old).await;
            }
            match self.runtime.begin_install(shard, lsn, total_bytes).await {
                Ok(install) => self.install = Some(install),
                Err(error) => return Err(self.install_failed(lsn, error)),
            }
        }
        let Some(mut install) = self.install.take() else {
            return Err(ReplicationError::Protocol(format!(
                "shard {shard}: a snapshot piece at offset {offset} without its start"
            )));
        };
        if install.lsn() != lsn || install.total_bytes() != total_bytes {
            let message = format!(
                "shard {shard}: a piece of snapshot {lsn} ({total_bytes} bytes) while receiving snapshot {} ({} bytes)",
                install.lsn(),
                install.total_bytes()
            );
            discard(install).await;
            return Err(ReplicationError::Protocol(message));
        }
        let (install, written) = blocking(move || {
            let written = install.write(offset, &bytes);
            (install, written)
        })
        .await?;
        if let Err(error) = written {
            discard(install).await;
            return Err(self.install_failed(lsn, error));
        }
        if !install.is_complete() {
            self.install = Some(install);
            return Ok(());
        }
        let staged: Result<StagedSnapshot, InstallError> =
            blocking(move || install.finish()).await?;
        let installed = match staged {
            Ok(staged) => self.runtime.install_snapshot(staged).await,
            Err(error) => Err(error),
        };
        if let Err(error) = installed {
            return Err(self.install_failed(lsn, error));
        }
        self.room(lsn);
        {
            // The log was replaced: its position starts again from the snapshot.
            let mut status = self.state.lock();
            status.snapshots_installed += 1;
            status.applied_lsns[shard] = lsn;
        }
        self.synced(lsn, None);
        self.shared.reseeded[shard].store(true, Ordering::Release);
        Ok(())
    }

    /// A snapshot was not installed (the log and state are as before): a full disk is waited
    /// out by the follower, anything else ends the session and the next one starts over.
    fn install_failed(&self, lsn: u64, error: InstallError) -> ReplicationError {
        let shard = self.shard;
        match error {
            InstallError::NoSpace(source) => {
                let at = self.shared.synced[shard].load(Ordering::Acquire);
                self.stalled(at, &format!("installing the primary's snapshot {lsn}"), &source);
                ReplicationError::DiskFull { shard, lsn, source }
            }
            InstallError::Refused(source) => {
                ReplicationError::SnapshotRefused { shard, lsn, source }
            }
            InstallError::Failed(source) => ReplicationError::InstallFailed { shard, lsn, source },
        }
    }
}

/// Runs blocking file work (a snapshot piece, a restore) off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReplicationError> {
    tokio::task::spawn_blocking(work).await.map_err(ReplicationError::InstallTask)
}

/// Drops a snapshot install (removing its staging) off the async runtime.
async fn discard(install: SnapshotInstall) {
    let _ = tokio::task::spawn_blocking(move || drop(install)).await;
}

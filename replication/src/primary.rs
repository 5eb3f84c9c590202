//! The primary side: per connected standby, per shard, stream the durable records from where
//! the standby's log ends (a snapshot first when the log no longer holds them), track what it
//! has acknowledged, feed the synchronous-standby gate and log retention.
//!
//! Invariants: a standby is only streamed to after its log was checked against this log by
//! position and checksum (or it asked to be re-seeded, and gets snapshots that replace its log),
//! so histories are never mixed; only durable records are sent; per shard at most
//! `WINDOW_SIZE_MAX_BYTES` of records wait for an acknowledgement; the gate position of a shard
//! is the K-th highest position acknowledged by connected standbys, and only ever rises.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bookd_runtime::{ControlError, RawRead, Runtime};
use tokio::sync::watch;

use crate::limits::{
    HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, IN_FLIGHT_MESSAGES_MAX, POLL_INTERVAL,
    RECORDS_CHUNK_SIZE_BYTES, SNAPSHOT_CHUNK_SIZE_BYTES, STANDBY_SILENCE_TIMEOUT,
    WINDOW_SIZE_MAX_BYTES,
};
use crate::message::{LogEnd, Message};
use crate::transport::{Transport, TransportError};
use crate::{now_ms, record_crc, records_last_lsn, Refusal, ReplicationError};

/// Why this primary refuses a standby's SUBSCRIBE; the text is the REFUSED message's reason.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeRefusal {
    #[error(
        "the standby has {standby} shards, this primary {primary}: a standby needs the primary's \
         shard count"
    )]
    ShardCount { standby: usize, primary: usize },
    #[error(
        "the standby is at epoch {standby}, above this primary's epoch {primary}: this node is a \
         stale primary"
    )]
    StalePrimary { standby: u64, primary: u64 },
    #[error(
        "shard {shard}: the standby's log ends at position {lsn}, beyond this primary's log \
         (position {durable}): the histories have diverged (an old primary after a failover?); \
         restart it with --reseed to re-seed it from this primary"
    )]
    LogBeyond { shard: usize, lsn: u64, durable: u64 },
    #[error("shard {shard}: cannot read this primary's record {lsn}")]
    Unreadable { shard: usize, lsn: u64 },
    #[error(
        "shard {shard}: the standby's record at position {lsn} differs from this primary's \
         (checksum {standby_crc:08x}, primary {primary_crc:08x}): the histories have diverged \
         (an old primary after a failover?); restart it with --reseed to re-seed it from this \
         primary"
    )]
    RecordDiffers { shard: usize, lsn: u64, standby_crc: u32, primary_crc: u32 },
    /// This primary's own shards failed to answer.
    #[error(transparent)]
    Runtime(#[from] ControlError),
}

/// What the primary knows about one connected standby.
#[derive(Debug, Clone)]
struct StandbyEntry {
    id: u64,
    name: String,
    connected_at_ms: u64,
    /// Per shard: the highest position the standby has on disk.
    acked: Vec<u64>,
    /// Per shard: bytes sent and not yet acknowledged.
    lag_bytes: Vec<u64>,
    /// Per shard: when the oldest unacknowledged message was sent.
    pending_since: Vec<Option<Instant>>,
}

/// Counters of the primary side; each is independent, so `Relaxed` everywhere.
#[derive(Debug, Default)]
pub struct PrimaryMetrics {
    pub sessions_total: AtomicU64,
    pub refused_total: AtomicU64,
    pub snapshots_sent_total: AtomicU64,
    pub records_bytes_sent_total: AtomicU64,
}

/// The primary side of replication, shared by every standby connection.
pub struct Primary {
    runtime: Arc<Runtime>,
    sync_standbys: usize,
    standbys: Mutex<Vec<StandbyEntry>>,
    /// Per shard: the retention floor last given to the runtime.
    retained: Mutex<Vec<u64>>,
    next_id: AtomicU64,
    metrics: PrimaryMetrics,
    /// Bytes of snapshot per SNAPSHOT message (`Relaxed`: a setting read per snapshot).
    snapshot_piece_bytes: AtomicUsize,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("sync_standbys", &self.sync_standbys)
            .finish_non_exhaustive()
    }
}

/// One standby's view of a shard, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyShardStatus {
    pub shard: usize,
    pub acked_lsn: u64,
    pub lag_records: u64,
    pub lag_bytes: u64,
    pub lag_ms: u64,
}

/// A connected standby, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyStatus {
    pub name: String,
    pub connected_at_ms: u64,
    pub shards: Vec<StandbyShardStatus>,
}

/// How one shard is streamed to one standby.
#[derive(Debug)]
struct ShardStream {
    /// Next position to send.
    next_lsn: u64,
    acked: u64,
    needs_snapshot: bool,
    /// Messages sent, not yet acknowledged: (last position, bytes, when sent).
    in_flight: VecDeque<(u64, u64, Instant)>,
    in_flight_bytes: u64,
}

impl Primary {
    /// The primary side over `runtime`; with `sync_standbys = K > 0` it feeds the runtime's gate.
    pub fn new(runtime: Arc<Runtime>, sync_standbys: usize) -> Primary {
        let shards = runtime.shards();
        Primary {
            runtime,
            sync_standbys,
            standbys: Mutex::new(Vec::new()),
            retained: Mutex::new(vec![u64::MAX; shards]),
            next_id: AtomicU64::new(1),
            metrics: PrimaryMetrics::default(),
            snapshot_piece_bytes: AtomicUsize::new(SNAPSHOT_CHUNK_SIZE_BYTES),
        }
    }

    /// Sends snapshots in pieces of at most `bytes` (1 to `SNAPSHOT_CHUNK_SIZE_BYTES`, the
    /// default; clamped), for snapshots to span many messages in tests.
    pub fn set_snapshot_piece_bytes(&self, bytes: usize) {
        let bytes = bytes.clamp(1, SNAPSHOT_CHUNK_SIZE_BYTES);
        self.snapshot_piece_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The largest SNAPSHOT piece this primary sends.
    pub fn snapshot_piece_bytes(&self) -> usize {
        self.snapshot_piece_bytes.load(Ordering::Relaxed)
    }

    pub fn sync_standbys(&self) -> usize {
        self.sync_standbys
    }

    pub fn metrics(&self) -> &PrimaryMetrics {
        &self.metrics
    }

    fn standbys(&self) -> MutexGuard<'_, Vec<StandbyEntry>> {
        // A panic while holding this lock leaves plain numbers behind: still usable.
        self.standbys.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connected standbys, their acknowledged positions and lag.
    pub fn status(&self) -> Vec<StandbyStatus> {
        let now = Instant::now();
        let durable: Vec<u64> =
            self.runtime.metrics().iter().map(|m| m.durable_lsn.load(Ordering::Relaxed)).collect();
        self.standbys()
            .iter()
            .map(|entry| StandbyStatus {
                name: entry.name.clone(),
                connected_at_ms: entry.connected_at_ms,
                shards: (0..entry.acked.len())
                    .map(|shard| StandbyShardStatus {
                        shard,
                        acked_lsn: entry.acked[shard],
                        lag_records: durable[shard].saturating_sub(entry.acked[shard]),
                        lag_bytes: entry.lag_bytes[shard],
                        lag_ms: entry.pending_since[shard]
                            .map_or(0, |since| now.duration_since(since).as_millis() as u64),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Serves one standby until it leaves, `stop` turns true, or a refusal. `name` is for status
    /// and logs (its address).
    pub async fn serve_standby<T: Transport>(
        self: &Arc<Self>,
        mut transport: T,
        name: String,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ReplicationError> {
        self.metrics.sessions_total.fetch_add(1, Ordering::Relaxed);
        let subscribe = tokio::time::timeout(HANDSHAKE_TIMEOUT, transport.recv())
            .await
            .map_err(|_| ReplicationError::Transport(TransportError::NoHandshake("SUBSCRIBE")))??;
        let Some(Message::Subscribe { epoch, reseed, shards }) = subscribe else {
            return Err(ReplicationError::Protocol(format!(
                "expected SUBSCRIBE, got {}",
                subscribe.as_ref().map_or("end of stream", Message::name)
            )));
        };
        let streams = match self.check_subscriber(epoch, reseed, &shards).await {
            Ok(streams) => streams,
            Err(refusal) => {
                let reason = refusal.to_string();
                self.metrics.refused_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(standby = %name, %reason, "refusing a standby");
                let _ = transport.send(&Message::Refused { reason }).await;
                return Err(ReplicationError::Refused(refusal.into()));
            }
        };
        let durable_lsns = self.durable_lsns();
        transport.send(&Message::Welcome { epoch: self.runtime.epoch(), durable_lsns }).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard_count = self.runtime.shards();
        self.standbys().push(StandbyEntry {
            id,
            name: name.clone(),
            connected_at_ms: now_ms(),
            acked: streams.iter().map(|s| s.acked).collect(),
            lag_bytes: vec![0; shard_count],
            pending_since: vec![None; shard_count],
        });
        tracing::info!(standby = %name, reseed, "standby connected");
        let served = self.stream(&mut transport, id, streams, &mut stop).await;
        self.standbys().retain(|entry| entry.id != id);
        self.refresh_retention();
        tracing::info!(standby = %name, ?served, "standby disconnected");
        served
    }

    fn durable_lsns(&self) -> Vec<u64> {
        self.runtime.metrics().iter().map(|m| m.durable_lsn.load(Ordering::Relaxed)).collect()
    }

    /// The divergence rule: a standby may follow if, for every shard, its log is empty, or its
    /// last record is this log's record at that position (same checksum). A log beyond this
    /// one, or a different record there, has diverged. A position this log no longer holds
    /// cannot be checked: that shard gets a snapshot, which replaces the standby's log whole.
    async fn check_subscriber(
        &self,
        epoch: u64,
        reseed: bool,
        shards: &[LogEnd],
    ) -> Result<Vec<ShardStream>, SubscribeRefusal> {
        let own_epoch = self.runtime.epoch();
        if shards.len() != self.runtime.shards() {
            return Err(SubscribeRefusal::ShardCount {
                standby: shards.len(),
                primary: self.runtime.shards(),
            });
        }
        if epoch > own_epoch {
            return Err(SubscribeRefusal::StalePrimary { standby: epoch, primary: own_epoch });
        }
        let mut streams = Vec::with_capacity(shards.len());
        for (shard, end) in shards.iter().enumerate() {
            let fresh = |next_lsn: u64, needs_snapshot: bool| ShardStream {
                next_lsn,
                acked: next_lsn.saturating_sub(1),
                needs_snapshot,
                in_flight: VecDeque::new(),
                in_flight_bytes: 0,
            };
            if reseed {
                streams.push(fresh(1, true));
                continue;
            }
            let durable = self.runtime.metrics()[shard].durable_lsn.load(Ordering::Relaxed);
            if end.last_lsn > durable {
                return Err(SubscribeRefusal::LogBeyond { shard, lsn: end.last_lsn, durable });
            }
            if end.last_lsn == 0 {
                streams.push(fresh(1, false));
                continue;
            }
            let read = self.runtime.read_raw(shard, end.last_lsn, 1).await?;
            match (read, end.last_crc) {
                (RawRead::Unavailable { .. }, _) => {
                    tracing::warn!(
                        shard,
                        lsn = end.last_lsn,
                        "this primary no longer keeps the standby's last record, so it cannot be compared; the standby's log is replaced by a snapshot"
                    );
                    streams.push(fresh(end.last_lsn + 1, true));
                }
                (RawRead::Records(bytes), Some(crc)) => {
                    let own = record_crc(&bytes)
                        .ok_or(SubscribeRefusal::Unreadable { shard, lsn: end.last_lsn })?;
                    if own != crc {
                        return Err(SubscribeRefusal::RecordDiffers {
                            shard,
                            lsn: end.last_lsn,
                            standby_crc: crc,
                            primary_crc: own,
                        });
                    }
                    streams.push(fresh(end.last_lsn + 1, false));
                }
                // The standby's log ends at a snapshot of this position: nothing to compare.
                (RawRead::Records(_), None) => streams.push(fresh(end.last_lsn + 1, false)),
            }
        }
        Ok(streams)
    }

    async fn stream<T: Transport>(
        &self,
        transport: &mut T,
        id: u64,
        mut streams: Vec<ShardStream>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ReplicationError> {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        let runtime = self.runtime.clone();
        loop {
            // Registered before the positions are looked at: a commit in between still wakes us.
            let durable_changed = runtime.durable_changed().notified();
            tokio::pin!(durable_changed);
            durable_changed.as_mut().enable();
            for (shard, stream) in streams.iter_mut().enumerate() {
                self.pump(transport, id, shard, stream).await?;
            }
            tokio::select! {
                biased;
                () = crate::stopped(stop) => {
                    let reason = "the primary is stopping".to_string();
                    let _ = transport.send(&Message::Refused { reason }).await;
                    return Ok(());
                }
                received = transport.recv() => {
                    heard = Instant::now();
                    match received? {
                        Some(Message::Ack { shard, synced_lsn }) => {
                            let shard = usize::from(shard);
                            let Some(stream) = streams.get_mut(shard) else {
                                return Err(ReplicationError::Protocol(format!("ACK of unknown shard {shard}")));
                            };
                            self.acked(id, shard, stream, synced_lsn);
                        }
                        Some(Message::Refused { reason }) => return Err(ReplicationError::Refused(Refusal::Peer(reason))),
                        Some(other) => {
                            return Err(ReplicationError::Protocol(format!("unexpected {} from a standby", other.name())));
                        }
                        None => return Ok(()),
                    }
                }
                () = &mut durable_changed => {}
                _ = poll.tick() => {}
                _ = heartbeat.tick() => {
                    if heard.elapsed() > STANDBY_SILENCE_TIMEOUT {
                        return Err(ReplicationError::Transport(TransportError::Silent("standby")));
                    }
                    transport.send(&Message::Heartbeat { time_ms: now_ms(), durable_lsns: self.durable_lsns() }).await?;
                    self.refresh_retention();
                }
            }
        }
    }

    /// Sends what is durable and not yet sent, as far as the window allows.
    async fn pump<T: Transport>(
        &self,
        transport: &mut T,
        id: u64,
        shard: usize,
        stream: &mut ShardStream,
    ) -> Result<(), ReplicationError> {
        loop {
            if stream.needs_snapshot {
                self.send_snapshot(transport, id, shard, stream).await?;
            }
            let durable = self.runtime.metrics()[shard].durable_lsn.load(Ordering::Relaxed);
            if durable < stream.next_lsn
                || stream.in_flight_bytes >= WINDOW_SIZE_MAX_BYTES
                || stream.in_flight.len() >= IN_FLIGHT_MESSAGES_MAX
            {
                return Ok(());
            }
            let bytes = match self
                .runtime
                .read_raw(shard, stream.next_lsn, RECORDS_CHUNK_SIZE_BYTES)
                .await?
            {
                RawRead::Records(bytes) if bytes.is_empty() => return Ok(()),
                RawRead::Records(bytes) => bytes,
                RawRead::Unavailable { .. } => {
                    stream.needs_snapshot = true;
                    continue;
                }
            };
            let last_lsn = records_last_lsn(&bytes).ok_or_else(|| {
                ReplicationError::Runtime(format!("shard {shard}: unreadable records from the log"))
            })?;
            let first_lsn = stream.next_lsn;
            let size = bytes.len() as u64;
            transport
                .send(&Message::Records {
                    shard: shard as u16,
                    first_lsn,
                    last_lsn,
                    primary_durable_lsn: durable.max(last_lsn),
                    bytes,
                })
                .await?;
            self.metrics.records_bytes_sent_total.fetch_add(size, Ordering::Relaxed);
            self.sent(id, shard, stream, last_lsn, size);
        }
    }

    /// Sends the shard's newest snapshot file (a checkpoint first if there is none), piece by
    /// piece as it is read: each piece is read on a blocking thread, so neither the async
    /// runtime nor memory ever holds more than a piece. An open file stays readable if
    /// retention deletes it meanwhile. Heartbeats go on between pieces, so a long snapshot is
    /// not mistaken for silence on either side.
    async fn send_snapshot<T: Transport>(
        &self,
        transport: &mut T,
        id: u64,
        shard: usize,
        stream: &mut ShardStream,
    ) -> Result<(), ReplicationError> {
        let runtime = &self.runtime;
        let mut snapshot = runtime.latest_snapshot(shard).await?;
        if snapshot.is_none() {
            runtime.checkpoint().await?;
            snapshot = runtime.latest_snapshot(shard).await?;
        }
        let Some(source) = snapshot else {
            return Err(ReplicationError::Runtime(format!("shard {shard}: no snapshot to send")));
        };
        let (lsn, total_bytes, mut reader) = (source.lsn, source.size_bytes, source.reader);
        let piece_bytes = self.snapshot_piece_bytes() as u64;
        let mut offset = 0u64;
        let mut pieces = 0u64;
        let mut last_heartbeat = Instant::now();
        while offset < total_bytes {
            let len = (total_bytes - offset).min(piece_bytes) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut bytes = vec![0u8; len];
                let read = reader.read_exact(&mut bytes).map(|()| bytes);
                (reader, read)
            })
            .await
            .map_err(ReplicationError::Task)?;
            reader = read.0;
            let bytes = read.1.map_err(|source| ReplicationError::SnapshotRead {
                shard,
                lsn,
                offset,
                source,
            })?;
            transport
                .send(&Message::Snapshot { shard: shard as u16, lsn, total_bytes, offset, bytes })
                .await?;
            offset += len as u64;
            pieces += 1;
            if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                let durable_lsns = self.durable_lsns();
                transport.send(&Message::Heartbeat { time_ms: now_ms(), durable_lsns }).await?;
            }
        }
        self.metrics.snapshots_sent_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(shard, lsn, bytes = total_bytes, pieces, "sent a snapshot to a standby");
        stream.needs_snapshot = false;
        stream.next_lsn = lsn + 1;
        self.sent(id, shard, stream, lsn, total_bytes);
        Ok(())
    }

    fn sent(&self, id: u64, shard: usize, stream: &mut ShardStream, last_lsn: u64, bytes: u64) {
        let now = Instant::now();
        stream.next_lsn = last_lsn + 1;
        stream.in_flight.push_back((last_lsn, bytes, now));
        stream.in_flight_bytes += bytes;
        if let Some(entry) = self.standbys().iter_mut().find(|entry| entry.id == id) {
            entry.lag_bytes[shard] = stream.in_flight_bytes;
            entry.pending_since[shard].get_or_insert(now);
        }
    }

    fn acked(&self, id: u64, shard: usize, stream: &mut ShardStream, synced_lsn: u64) {
        stream.acked = stream.acked.max(synced_lsn);
        while let Some(&(last, bytes, _)) = stream.in_flight.front() {
            if last > stream.acked {
                break;
            }
            stream.in_flight.pop_front();
            stream.in_flight_bytes -= bytes;
        }
        let mut standbys = self.standbys();
        if let Some(entry) = standbys.iter_mut().find(|entry| entry.id == id) {
            entry.acked[shard] = stream.acked;
            entry.lag_bytes[shard] = stream.in_flight_bytes;
            entry.pending_since[shard] = stream.in_flight.front().map(|&(_, _, since)| since);
        }
        if self.sync_standbys > 0 {
            let mut positions: Vec<u64> = standbys.iter().map(|entry| entry.acked[shard]).collect();
            drop(standbys);
            if positions.len() >= self.sync_standbys {
                positions.sort_unstable_by(|a, b| b.cmp(a));
                self.runtime.set_replicated_lsn(shard, positions[self.sync_standbys - 1]);
            }
        }
    }

    /// Keeps, per shard, the log from the lowest position a connected standby still needs.
    fn refresh_retention(&self) {
        let shards = self.runtime.shards();
        let mut floors = vec![u64::MAX; shards];
        for entry in self.standbys().iter() {
            for (shard, floor) in floors.iter_mut().enumerate() {
                *floor = (*floor).min(entry.acked[shard] + 1);
            }
        }
        let mut retained = self.retained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (shard, floor) in floors.into_iter().enumerate() {
            if retained[shard] != floor {
                retained[shard] = floor;
                self.runtime.retain_from(shard, floor);
            }
        }
    }
}

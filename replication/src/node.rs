//! The node's replication role: primary (serves standbys) or standby (follows a primary), the
//! promotion from one to the other, and what status and metrics show about both.
//!
//! Invariant: promotion stops following first (no replicated record is applied after it), then
//! persists the new epoch (max of every epoch known + 1), then writes an epoch record in every
//! shard's log, durably, and only then accepts writes; two promotions never run at once.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bookd_runtime::{ControlError, DataDirError, Runtime};
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::primary::Primary;
use crate::standby::{follow, FollowConfig, FollowEnd, StandbyState};
use crate::transport::{Connector, Transport};
use crate::{EpochStore, ReplicationError};

pub use bookd_protocol::Role;

/// Why a promotion did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("already primary")]
    AlreadyPrimary,
    /// The new epoch could not be persisted: the node is not promoted.
    #[error(transparent)]
    PersistEpoch(DataDirError),
    /// The task persisting the epoch did not finish.
    #[error(transparent)]
    PersistTask(#[from] tokio::task::JoinError),
    /// The shards did not write their epoch records.
    #[error(transparent)]
    Runtime(#[from] ControlError),
}

const ROLE_PRIMARY: u8 = 0;
const ROLE_STANDBY: u8 = 1;

type Follower = (watch::Sender<bool>, JoinHandle<FollowEnd>);

/// A node's replication: its role, the primary side (always ready: a promoted standby serves
/// standbys too), and the follower while it is a standby.
pub struct ReplicatedNode {
    runtime: Arc<Runtime>,
    /// `ROLE_PRIMARY` or `ROLE_STANDBY`; `Release` on promotion after the node accepts writes,
    /// `Acquire` on reads.
    role: AtomicU8,
    primary: Arc<Primary>,
    standby: Option<Arc<StandbyState>>,
    follower: Mutex<Option<Follower>>,
    persist_epoch: EpochStore,
    promoting: tokio::sync::Mutex<()>,
    /// Duration of the last promotion, in µs (0: none). `Relaxed`: a figure for status.
    promotion_us: AtomicU64,
}

impl std::fmt::Debug for ReplicatedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedNode").field("role", &self.role()).finish_non_exhaustive()
    }
}

impl ReplicatedNode {
    /// A primary over `runtime`.
    pub fn primary(runtime: Arc<Runtime>, sync_standbys: usize, persist_epoch: EpochStore) -> Self {
        ReplicatedNode {
            primary: Arc::new(Primary::new(runtime.clone(), sync_standbys)),
            runtime,
            role: AtomicU8::new(ROLE_PRIMARY),
            standby: None,
            follower: Mutex::new(None),
            persist_epoch,
            promoting: tokio::sync::Mutex::new(()),
            promotion_us: AtomicU64::new(0),
        }
    }

    /// A standby over `runtime` (started not writable) that follows the primary behind
    /// `connector` once [`ReplicatedNode::start_following`] is called.
    pub fn standby(
        runtime: Arc<Runtime>,
        sync_standbys: usize,
        persist_epoch: EpochStore,
        primary_addr: String,
    ) -> Self {
        let shards = runtime.shards();
        let mut node = ReplicatedNode::primary(runtime, sync_standbys, persist_epoch);
        node.role = AtomicU8::new(ROLE_STANDBY);
        node.standby = Some(Arc::new(StandbyState::new(primary_addr, shards)));
        node
    }

    /// Starts following (a standby); call from inside a tokio runtime.
    pub fn start_following<C: Connector>(&self, connector: C, reseed: bool) {
        let Some(state) = self.standby.clone() else { return };
        let (stop_sender, stop) = watch::channel(false);
        let config = FollowConfig { reseed, persist_epoch: self.persist_epoch.clone() };
        let handle = tokio::spawn(follow(self.runtime.clone(), connector, state, config, stop));
        *self.follower.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((stop_sender, handle));
    }

    /// Stops following and waits for the follower to finish (promotion, shutdown).
    pub async fn stop_following(&self) -> Option<FollowEnd> {
        let follower =
            self.follower.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let (stop, handle) = follower?;
        let _ = stop.send(true);
        handle.await.ok()
    }

    /// Waits at most `timeout` for the follower to end by itself (a refusal), else stops it;
    /// how it ended. For tests and tools.
    pub async fn follower_end(&self, timeout: std::time::Duration) -> Option<FollowEnd> {
        let follower =
            self.follower.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let (stop, mut handle) = follower?;
        if let Ok(ended) = tokio::time::timeout(timeout, &mut handle).await {
            return ended.ok();
        }
        let _ = stop.send(true);
        handle.await.ok()
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            ROLE_STANDBY => Role::Standby,
            _ => Role::Primary,
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn primary_side(&self) -> &Arc<Primary> {
        &self.primary
    }

    pub fn standby_state(&self) -> Option<&Arc<StandbyState>> {
        self.standby.as_ref()
    }

    /// The last promotion's duration in µs (0: none yet).
    pub fn promotion_us(&self) -> u64 {
        self.promotion_us.load(Ordering::Relaxed)
    }

    /// Serves a standby that connected to this node; refused unless this node is the primary.
    pub fn serve_standby<T: Transport>(
        &self,
        mut transport: T,
        name: String,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), ReplicationError>> + Send + 'static {
        let primary = self.primary.clone();
        let role = self.role();
        async move {
            if role != Role::Primary {
                let refusal = crate::Refusal::NotPrimary;
                let reason = refusal.to_string();
                let _ = transport.send(&crate::Message::Refused { reason }).await;
                return Err(ReplicationError::Refused(refusal));
            }
            primary.serve_standby(transport, name, stop).await
        }
    }

    /// Makes this standby the primary: stop following, new epoch = max(known epochs) + 1,
    /// persisted, epoch records durable in every shard, then writable. Returns the new epoch.
    pub async fn promote(&self) -> Result<u64, PromoteError> {
        let _one_at_a_time = self.promoting.lock().await;
        if self.role() == Role::Primary {
            return Err(PromoteError::AlreadyPrimary);
        }
        let started = Instant::now();
        let ended = self.stop_following().await;
        let known = self.standby.as_ref().map_or(0, |state| state.status().primary_epoch);
        let epoch = self.runtime.epoch().max(known) + 1;
        let persist = self.persist_epoch.clone();
        tokio::task::spawn_blocking(move || persist(epoch))
            .await?
            .map_err(PromoteError::PersistEpoch)?;
        let positions = self.runtime.promote(epoch).await?;
        self.role.store(ROLE_PRIMARY, Ordering::Release);
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.promotion_us.store(elapsed_us.max(1), Ordering::Relaxed);
        tracing::info!(epoch, ?positions, ?ended, elapsed_us, "promoted to primary");
        Ok(epoch)
    }

    /// Fields for `/v1/status`: `standbys` (primary), `primary` (standby), `sync_standbys`,
    /// `last_promotion_ms`.
    pub fn status_extras(&self) -> Map<String, Value> {
        let mut extras = Map::new();
        let standbys: Vec<Value> = self
            .primary
            .status()
            .into_iter()
            .map(|standby| {
                let shards: Vec<Value> = standby
                    .shards
                    .iter()
                    .map(|shard| {
                        json!({"shard": shard.shard, "acked_lsn": shard.acked_lsn,
                               "lag_records": shard.lag_records, "lag_bytes": shard.lag_bytes,
                               "lag_ms": shard.lag_ms})
                    })
                    .collect();
                json!({"address": standby.name, "connected_at_ms": standby.connected_at_ms,
                       "shards": shards})
            })
            .collect();
        if self.role() == Role::Primary {
            extras.insert("standbys".into(), Value::Array(standbys));
            extras.insert("sync_standbys".into(), self.primary.sync_standbys().into());
        }
        if let (Role::Standby, Some(state)) = (self.role(), &self.standby) {
            extras.insert("primary".into(), standby_json(state));
        }
        let promotion_us = self.promotion_us();
        if promotion_us > 0 {
            extras.insert("last_promotion_ms".into(), json!(promotion_us as f64 / 1000.0));
        }
        extras
    }

    /// Appends the `bookd_replication_*` metrics in Prometheus text format
    /// ([`crate::metrics::METRICS`]).
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{self as m, header};
        let standbys = self.primary.status();
        let counters = self.primary.metrics();
        let gauge = |out: &mut String, doc: &m::MetricDoc, value: u64| {
            header(out, doc);
            let _ = writeln!(out, "{} {value}", doc.name);
        };
        gauge(out, &m::STANDBYS_CONNECTED, standbys.len() as u64);
        gauge(out, &m::SYNC_STANDBYS, self.primary.sync_standbys() as u64);
        header(out, &m::TIMEOUTS_TOTAL);
        for (shard, shard_metrics) in self.runtime.metrics().iter().enumerate() {
            let timeouts = shard_metrics.replication_timeouts.load(Ordering::Relaxed);
            let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {timeouts}", m::TIMEOUTS_TOTAL.name);
        }
        gauge(out, &m::SESSIONS_TOTAL, counters.sessions_total.load(Ordering::Relaxed));
        gauge(out, &m::REFUSED_TOTAL, counters.refused_total.load(Ordering::Relaxed));
        gauge(out, &m::SNAPSHOTS_SENT_TOTAL, counters.snapshots_sent_total.load(Ordering::Relaxed));
        gauge(out, &m::SENT_BYTES_TOTAL, counters.records_bytes_sent_total.load(Ordering::Relaxed));
        let per_standby: [(&m::MetricDoc, ShardFigure); 4] = [
            (&m::STANDBY_ACKED_LSN, |s| s.acked_lsn),
            (&m::LAG_RECORDS, |s| s.lag_records),
            (&m::LAG_BYTES, |s| s.lag_bytes),
            (&m::LAG_MS, |s| s.lag_ms),
        ];
        for (doc, value) in per_standby {
            header(out, doc);
            for standby in &standbys {
                for shard in &standby.shards {
                    let (name, shard_index) = (&standby.name, shard.shard);
                    let _ = writeln!(
                        out,
                        "{}{{standby=\"{name}\",shard=\"{shard_index}\"}} {}",
                        doc.name,
                        value(shard)
                    );
                }
            }
        }
        if let Some(state) = &self.standby {
            let status = state.status();
            let following = state.connected() && self.role() == Role::Standby;
            gauge(out, &m::FOLLOWING, u64::from(following));
            let shards = status.applied_lsns.len();
            let per_shard: [(&m::MetricDoc, &dyn Fn(usize) -> u64); 4] = [
                (&m::APPLIED_LSN, &|shard| status.applied_lsns[shard]),
                (&m::PRIMARY_LAG_RECORDS, &|shard| {
                    status.primary_durable_lsns[shard].saturating_sub(status.applied_lsns[shard])
                }),
                (&m::PRIMARY_LAG_MS, &|shard| {
                    status.behind_since[shard].map_or(0, |since| since.elapsed().as_millis() as u64)
                }),
                (&m::DISK_FULL, &|shard| u64::from(status.disk_full_since[shard].is_some())),
            ];
            for (doc, value) in per_shard {
                header(out, doc);
                for shard in 0..shards {
                    let _ = writeln!(out, "{}{{shard=\"{shard}\"}} {}", doc.name, value(shard));
                }
            }
        }
    }
}

/// Reads one figure of a standby's shard.
type ShardFigure = fn(&crate::primary::StandbyShardStatus) -> u64;

fn standby_json(state: &StandbyState) -> Value {
    let status = state.status();
    let shards: Vec<Value> = (0..status.applied_lsns.len())
        .map(|shard| {
            let applied = status.applied_lsns[shard];
            let primary = status.primary_durable_lsns[shard];
            let lag_ms =
                status.behind_since[shard].map_or(0, |since| since.elapsed().as_millis() as u64);
            let disk_full_ms = status.disk_full_since[shard]
                .map(|since| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX));
            json!({"shard": shard, "applied_lsn": applied, "primary_durable_lsn": primary,
                   "lag_records": primary.saturating_sub(applied), "lag_ms": lag_ms,
                   "disk_full_ms": disk_full_ms})
        })
        .collect();
    json!({
        "address": state.primary(),
        "state": status.state,
        "connected": state.connected(),
        "epoch": status.primary_epoch,
        "error": status.error,
        "snapshots_installed": status.snapshots_installed,
        "last_heard_ms_ago": status.last_heard.map(|heard| heard.elapsed().as_millis() as u64),
        "shards": shards,
    })
}

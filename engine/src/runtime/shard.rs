//! One shard: a thread that is the only writer of its partitions and of its log.
//!
//! The loop: wait for a message (or the tick interval), drain what has queued up as one batch
//! (bounded by `batch_ops_max`), stamp it once with the clock (never below the last stamp), apply
//! every op, append one log record per successful command, commit once (group commit), and only
//! then send the replies. So no reply, not even a read, ever shows state that is not yet durable.
//! A commit error is fatal: pending replies become `Unavailable` and the shard stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use super::log::{encode_command, LogError, ShardLog};
use super::metrics::ShardMetrics;
use super::op::{Op, OpResult};
use super::{Clock, FatalHook, ShardStatus};
use crate::state::Engine;

/// A message to a shard.
#[derive(Debug)]
pub(crate) enum Message {
    Ops {
        ops: Vec<Op>,
        reply: oneshot::Sender<Vec<OpResult>>,
    },
    Checkpoint {
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Status {
        reply: oneshot::Sender<ShardStatus>,
    },
    /// Finish everything queued before this message, commit, and stop.
    Stop,
}

impl Message {
    fn ops_len(&self) -> usize {
        match self {
            Message::Ops { ops, .. } => ops.len(),
            _ => 1,
        }
    }
}

/// Settings of a shard's loop.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// How long an idle shard waits before it ticks (expires due holds).
    pub tick_interval: Duration,
    /// Most ops applied in one batch before committing.
    pub batch_ops_max: usize,
    /// Take a snapshot once this many log bytes were written since the last one.
    pub snapshot_log_bytes: u64,
}

pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) engine: Engine,
    pub(crate) log: Box<dyn ShardLog>,
    pub(crate) inbox: Receiver<Message>,
    pub(crate) config: ShardConfig,
    pub(crate) clock: Clock,
    pub(crate) epoch: Arc<AtomicU64>,
    pub(crate) metrics: Arc<ShardMetrics>,
    pub(crate) fatal: FatalHook,
}

/// Replies held back until the batch is durable.
struct Batch {
    replies: Vec<(oneshot::Sender<Vec<OpResult>>, Vec<OpResult>)>,
    controls: Vec<Message>,
    ops: usize,
    appended: bool,
    stop: bool,
}

impl Shard {
    pub(crate) fn run(mut self) {
        let mut last_stamp_ms = self.engine.clock_ms();
        let mut payload = Vec::with_capacity(256);
        loop {
            let first = match self.inbox.recv_timeout(self.config.tick_interval) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            last_stamp_ms = last_stamp_ms.max((self.clock)());
            let now_ms = last_stamp_ms;
            let expired = self.engine.tick(now_ms);
            self.metrics.holds_expired.fetch_add(u64::from(expired), Ordering::Relaxed);
            let mut batch = Batch {
                replies: Vec::new(),
                controls: Vec::new(),
                ops: 0,
                appended: false,
                stop: false,
            };
            let mut next = first;
            while let Some(message) = next.take() {
                batch.ops += message.ops_len();
                if let Err(error) = self.handle(message, now_ms, &mut batch, &mut payload) {
                    return self.fail(error, batch);
                }
                if batch.ops < self.config.batch_ops_max && !batch.stop {
                    next = self.inbox.try_recv().ok();
                }
            }
            // Commit what this batch appended; on an idle tick, let a relaxed (interval) sync
            // policy catch up; before stopping, make everything durable whatever the policy.
            let lagging = self.log.durable_lsn() < self.log.last_lsn();
            let committed = if batch.stop {
                self.log.sync().map(|_| ())
            } else if batch.appended || lagging {
                self.commit()
            } else {
                Ok(())
            };
            if let Err(error) = committed {
                return self.fail(error, batch);
            }
            self.finish(batch.replies);
            let stop = batch.stop;
            for control in batch.controls {
                self.control(control);
            }
            self.after_batch(batch.ops);
            if stop {
                break;
            }
        }
        tracing::debug!(shard = self.index, "shard stopped");
    }

    fn handle(
        &mut self,
        message: Message,
        now_ms: u64,
        batch: &mut Batch,
        payload: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        match message {
            Message::Ops { ops, reply } => {
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    results.push(self.apply(op, now_ms, batch, payload)?);
                }
                batch.replies.push((reply, results));
            }
            Message::Stop => batch.stop = true,
            control => batch.controls.push(control),
        }
        Ok(())
    }

    fn apply(
        &mut self,
        op: Op,
        now_ms: u64,
        batch: &mut Batch,
        payload: &mut Vec<u8>,
    ) -> Result<OpResult, LogError> {
        let engine = &mut self.engine;
        let result = match op {
            Op::Command(command) => {
                let result = engine.apply(now_ms, &command);
                self.metrics.count_command(&command, &result);
                if result.is_ok() {
                    payload.clear();
                    encode_command(&command, payload);
                    let epoch = self.epoch.load(Ordering::Relaxed);
                    self.log.append(epoch, now_ms, payload)?;
                    self.metrics.log_records.fetch_add(1, Ordering::Relaxed);
                    self.metrics.log_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    batch.appended = true;
                }
                OpResult::Command(result)
            }
            Op::GetResource { partition, id } => {
                OpResult::Resource(engine.resource(&partition, &id))
            }
            Op::GetHold { partition, id } => OpResult::Hold(engine.hold(&partition, &id)),
            Op::ListResources { partition, query } => {
                OpResult::Page(engine.list_resources(&partition, &query))
            }
        };
        if !matches!(result, OpResult::Command(_)) {
            self.metrics.queries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(result)
    }

    fn commit(&mut self) -> Result<(), LogError> {
        let started = Instant::now();
        let durable = self.log.commit()?;
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.metrics.commit_latency_us.observe(elapsed_us);
        assert!(
            durable >= self.metrics.durable_lsn.load(Ordering::Relaxed),
            "invariant broken: durable log position went backwards"
        );
        self.metrics.durable_lsn.store(durable, Ordering::Relaxed);
        Ok(())
    }

    fn finish(&self, replies: Vec<(oneshot::Sender<Vec<OpResult>>, Vec<OpResult>)>) {
        for (reply, results) in replies {
            // A caller that gave up waiting has dropped its receiver; nothing to do.
            let _ = reply.send(results);
        }
    }

    fn control(&mut self, message: Message) {
        match message {
            Message::Checkpoint { reply } => {
                let _ = reply.send(self.snapshot().map_err(|error| error.to_string()));
            }
            Message::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Message::Ops { .. } | Message::Stop => {}
        }
    }

    fn status(&self) -> ShardStatus {
        ShardStatus {
            shard: self.index,
            last_lsn: self.log.last_lsn(),
            durable_lsn: self.log.durable_lsn(),
            clock_ms: self.engine.clock_ms(),
            stats: self.engine.stats(),
        }
    }

    /// Writes a snapshot of the state after the last durable record.
    fn snapshot(&mut self) -> Result<u64, LogError> {
        if self.log.durable_lsn() < self.log.last_lsn() {
            self.commit()?;
        }
        let lsn = self.log.last_lsn();
        let state = self.engine.to_snapshot_bytes();
        self.log.write_snapshot(lsn, &state)?;
        self.metrics.snapshots.fetch_add(1, Ordering::Relaxed);
        tracing::info!(shard = self.index, lsn, bytes = state.len(), "snapshot written");
        Ok(lsn)
    }

    fn after_batch(&mut self, ops: usize) {
        if ops > 0 {
            self.metrics.batches.fetch_add(1, Ordering::Relaxed);
            self.metrics.batch_ops.observe(ops as u64);
        }
        let stats = self.engine.stats();
        self.metrics.holds_live.store(u64::from(stats.holds_live), Ordering::Relaxed);
        self.metrics.resources.store(u64::from(stats.resources), Ordering::Relaxed);
        self.metrics.last_lsn.store(self.log.last_lsn(), Ordering::Relaxed);
        if self.log.bytes_since_snapshot() >= self.config.snapshot_log_bytes {
            if let Err(error) = self.snapshot() {
                // A failed snapshot leaves the log intact; recovery replays further. Not fatal,
                // unless it was the log's own sync that failed, which the next commit reports.
                tracing::error!(shard = self.index, %error, "snapshot failed");
            }
        }
    }

    /// The log failed: durability of the pending batch is unknown. Nobody gets a success, the
    /// node is told to stop, and this shard stops.
    fn fail(self, error: LogError, batch: Batch) {
        tracing::error!(shard = self.index, %error, "write-ahead log failed; stopping the node");
        for (reply, results) in batch.replies {
            let _ = reply.send(vec![OpResult::Unavailable; results.len()]);
        }
        (self.fatal)(format!("shard {}: {error}", self.index));
    }
}

//! The Rust client of bookd's binary protocol (docs/protocol.md) for gateway services.
//!
//! A [`Client`] is a pool of `connections` TCP connections, each driven by one task that owns
//! its socket, its pending requests and its buffers (no lock on the call path: a call is one
//! channel send and one oneshot). Calls made while a connection's task is busy (writing,
//! reading, or waiting for the server's in-flight bound) queue up and go out together as ONE
//! REQUEST frame of up to 1 000 commands (automatic batching); frames are pipelined with
//! request ids and results are matched back by id and position.
//!
//! Invariant: a caller gets exactly one answer per call: its result, or an error.
//!
//! # Retries
//! When a connection is lost before a call's result arrives, the call is sent again (up to
//! `retries` times, with exponential backoff, on any connection, within the call timeout).
//! Every command is safe to resend: a hold is idempotent by its hold id (a resent hold that had
//! taken effect answers `existing: true`), confirm/release/cancel are idempotent by the
//! contract, `put_resource` sets a value, reads read; `extend` sets the expiry to now + ttl, so
//! a resent extend only moves the expiry a little later; a resent `delete_partition` that had
//! taken effect answers `not_found`. Results (including `overloaded` and
//! `unavailable`) are never retried automatically: they are returned to the caller.

mod connection;
mod subscription;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bookd_engine::Op;
use bookd_engine::{Command, HoldView, ListQuery, ResourcePage, ResourceView};
use tokio::sync::{mpsc, oneshot};

use bookd_protocol::command::{encode_command, put_hold_ref, Opcode};
use bookd_protocol::handshake::shard_of;
use bookd_protocol::reply::Status;
use bookd_protocol::wire::{put_flag, put_str16, put_str8, put_u64, put_u8, EncodeError};
use bookd_protocol::{
    encode_op, Detail, ErrorCode, ErrorFrame, HelloOk, PartitionDeleted, Refused, Reply,
};

pub use bookd_protocol::subscribe::CursorChange;
pub use connection::connect_one;
pub use subscription::Subscription;

/// What a batch element is: an engine op (a command or a query).
pub type Request = Op;

/// The default [`ClientConfig::frames_in_flight_max`]: two frames keep the connection busy
/// (one on the wire, one being answered) and let the calls made meanwhile gather into the next.
pub const FRAMES_IN_FLIGHT_MAX_DEFAULT: usize = 2;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Connections in the pool (at least 1).
    pub connections: usize,
    /// The node's token, if it has one (`--token`).
    pub token: Option<String>,
    /// Sent in HELLO; shows up in the node's logs.
    pub client_name: String,
    /// Time to connect and complete the handshake.
    pub connect_timeout: Duration,
    /// Time a call may take, retries included; `None`: no limit. Checked every 100 ms by the
    /// connection that holds the call (no timer per call); while a connection reconnects, up to
    /// `connect_timeout` late.
    pub call_timeout: Option<Duration>,
    /// How many times a call is resent after a lost connection.
    pub retries: u32,
    /// First pause before a resend or a reconnect; doubles each time up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Most REQUEST frames one connection keeps in flight (also capped by the node's
    /// `in_flight_max`). Calls made while a connection is at this bound wait and leave together
    /// in its next frame: a small bound trades at most one round trip of added latency for much
    /// larger frames (the node's cost is mostly per frame, not per command).
    pub frames_in_flight_max: usize,
    /// Bind the connections to the node's shards (at least one per shard; `connections` is
    /// raised to the shard count if below) and send each call on a connection of the shard
    /// that owns its partition, where the node serves it without a hand-over between threads.
    /// `false`: plain connections, round robin.
    pub shard_aware: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connections: 4,
            token: None,
            client_name: "bookd-client".into(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Some(Duration::from_secs(30)),
            retries: 3,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            frames_in_flight_max: FRAMES_IN_FLIGHT_MAX_DEFAULT,
            shard_aware: true,
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The node refused the command with a contract error code and its details.
    #[error("{code}: {0}", code = .0.code)]
    Refused(Refused),
    /// The node is overloaded (a shard's queue or an engine table is full); retry later.
    #[error("overloaded: {0}")]
    Overloaded(Refused),
    /// The node could not complete the command (stopping, log failure) or could not be reached
    /// within the retries; whether a command took effect is unknown, resending is safe.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call did not complete within its timeout; whether it took effect is unknown.
    #[error("timed out")]
    Timeout,
    /// The node closed the connection with an ERROR frame (e.g. `unauthorized` at handshake).
    #[error("node refused the connection: {code}: {message}", code = .0.code, message = .0.message)]
    Server(ErrorFrame),
    /// The node sent bytes that are not the protocol, or a result of the wrong kind.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The client was dropped while the call waited.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// The contract's error code, for errors that have one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused(refused) | ClientError::Overloaded(refused) => Some(refused.code),
            ClientError::Unavailable(_) => Some(ErrorCode::Unavailable),
            ClientError::Server(frame) => Some(frame.code),
            _ => None,
        }
    }

    fn invalid(error: EncodeError) -> ClientError {
        ClientError::Refused(Refused {
            code: ErrorCode::Invalid,
            detail: Detail::Invalid { field: error.field, reason: "too long".into() },
        })
    }
}

/// A resource and whether `put_resource` created it (HTTP 201) or changed it (200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceReply {
    pub resource: ResourceView,
    pub created: bool,
}

/// A hold and whether its id already existed (HTTP 200 `"existing": true`) or it is new (201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldReply {
    pub hold: HoldView,
    pub existing: bool,
}

/// How a connection answers one call.
pub(crate) enum ReplyTo {
    One(oneshot::Sender<Result<Reply, Failure>>),
    Many(oneshot::Sender<Result<Vec<Reply>, Failure>>),
    /// Statuses only: the frame is decoded without building results when every call in it
    /// asks for this.
    Statuses(oneshot::Sender<Result<Vec<Status>, Failure>>),
}

/// Why a connection could not answer a call.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection was lost (or never made) before the result: the encoded commands come
    /// back so the caller can resend them.
    Lost(Vec<u8>),
    Error(ClientError),
}

/// One call queued on a connection: `count` encoded commands.
pub(crate) struct Call {
    pub(crate) bytes: Vec<u8>,
    pub(crate) count: u16,
    /// `None` once answered (a call that timed out stays in its frame's list until the
    /// frame's RESPONSE, whose results for it are dropped).
    pub(crate) reply: Option<ReplyTo>,
    /// When the connection answers `Timeout` instead (checked every 100 ms).
    pub(crate) deadline: Option<tokio::time::Instant>,
}

/// What the pool's connections did. Counters are `Relaxed`: statistics only, each updated by
/// one connection task per frame or write, read on their own.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// REQUEST frames sent.
    pub frames_sent: std::sync::atomic::AtomicU64,
    /// Commands in those frames (so commands per frame shows how well calls were batched).
    pub commands_sent: std::sync::atomic::AtomicU64,
    /// `write` calls on the sockets.
    pub writes: std::sync::atomic::AtomicU64,
}

struct Inner {
    stats: Arc<ClientStats>,
    queues: Vec<mpsc::UnboundedSender<Call>>,
    /// Shard-aware: per shard, the connections bound to it (indices into `queues`); empty for
    /// plain connections.
    by_shard: Vec<Vec<usize>>,
    next: AtomicUsize,
    config: ClientConfig,
    hello: HelloOk,
}

/// A pool of connections to one node. Cheap to clone; all clones share the pool, which closes
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// The connection this handle sends on ([`Client::pinned`]); `None`: round robin.
    pin: Option<usize>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connections", &self.inner.queues.len())
            .field("hello", &self.inner.hello)
            .finish()
    }
}

impl Client {
    /// Connects `config.connections` connections to `addr` (`host:port`) and completes each
    /// handshake. Fails if the first connection cannot be made or is refused (wrong token).
    /// Shard-aware ([`ClientConfig::shard_aware`]): the first connection is bound to shard 0
    /// and tells the shard count; connection `i` is bound to shard `i % shards`.
    pub async fn connect(addr: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let ask = config.shard_aware.then_some(0);
        let (stream, hello) = match connection::connect_bound(addr, &config, ask).await {
            // A node from before shard-bound connections refuses HELLO's shard: go plain.
            Err(ClientError::Server(error))
                if ask.is_some() && error.code == ErrorCode::BadRequest =>
            {
                connection::connect_bound(addr, &config, None).await?
            }
            connected => connected?,
        };
        let bound = hello.binding.is_some() && hello.shards > 0;
        let shards = if bound { usize::from(hello.shards) } else { 1 };
        let count = config.connections.max(1).max(shards);
        let config = ClientConfig { connections: count, ..config };
        let shared = Arc::new(config.clone());
        let stats = Arc::new(ClientStats::default());
        let mut queues = Vec::with_capacity(count);
        let mut by_shard = vec![Vec::new(); if bound { shards } else { 0 }];
        let mut first = Some((stream, hello));
        for index in 0..count {
            // Below `hello.shards`, a u16.
            let shard = bound.then_some((index % shards) as u16);
            let (stream, server) = match first.take() {
                Some(first) => first,
                None => connection::connect_bound(addr, &config, shard).await?,
            };
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(connection::run(
                addr.to_string(),
                shard,
                shared.clone(),
                receiver,
                stream,
                server,
                stats.clone(),
            ));
            if let Some(shard) = shard {
                by_shard[usize::from(shard)].push(index);
            }
            queues.push(sender);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                stats,
                queues,
                by_shard,
                next: AtomicUsize::new(0),
                config,
                hello,
            }),
            pin: None,
        })
    }

    /// A handle on the same pool whose calls all go to one connection (resends after a lost
    /// connection too): connection `index % connections`, or shard-aware, connection
    /// `index % n` of the `n` bound to the shard of each call's partition. Give each
    /// closed-loop caller its own pinned handle: the callers of one connection then wake
    /// together when a RESPONSE frame arrives and their next calls leave together in one
    /// frame, where round robin would scatter them into frames of one command each.
    pub fn pinned(&self, index: usize) -> Client {
        Client { inner: self.inner.clone(), pin: Some(index) }
    }

    /// Whether the connections are bound to the node's shards.
    pub fn is_shard_aware(&self) -> bool {
        !self.inner.by_shard.is_empty()
    }

    /// What the node said in its handshake (role, epoch, limits).
    pub fn hello(&self) -> &HelloOk {
        &self.inner.hello
    }

    /// Counters of the pool (frames, commands, writes).
    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Creates or changes a resource.
    pub async fn put_resource(
        &self,
        partition: &str,
        resource: &str,
        capacity: u64,
    ) -> Result<ResourceReply, ClientError> {
        let mut bytes = Vec::with_capacity(3 + partition.len() + resource.len() + 8);
        encode_ref(&mut bytes, Opcode::PutResource, partition, resource)?;
        put_u64(&mut bytes, capacity);
        match self.call_bytes(bytes).await? {
            Reply::Resource { resource, created } => Ok(ResourceReply { resource, created }),
            other => Err(unexpected(&other)),
        }
    }

    /// Takes `quantity` units of each `(resource, quantity)` item, all or nothing.
    pub async fn hold(
        &self,
        partition: &str,
        hold: &str,
        items: &[(&str, u64)],
        ttl_ms: Option<u64>,
        reference: Option<&str>,
    ) -> Result<HoldReply, ClientError> {
        let size = 24 + partition.len() + hold.len() + items.len() * 16;
        let mut bytes = Vec::with_capacity(size + reference.map_or(0, str::len));
        encode_ref(&mut bytes, Opcode::Hold, partition, hold)?;
        let count = u8::try_from(items.len()).map_err(|_| {
            ClientError::invalid(EncodeError { field: "items".into(), len: items.len() })
        })?;
        put_u8(&mut bytes, count);
        for (resource, quantity) in items {
            put_str8(&mut bytes, resource, "items.resource").map_err(ClientError::invalid)?;
            put_u64(&mut bytes, *quantity);
        }
        put_flag(&mut bytes, ttl_ms.is_some());
        if let Some(ttl_ms) = ttl_ms {
            put_u64(&mut bytes, ttl_ms);
        }
        put_flag(&mut bytes, reference.is_some());
        if let Some(reference) = reference {
            put_str16(&mut bytes, reference, "ref").map_err(ClientError::invalid)?;
        }
        match self.call_bytes(bytes).await? {
            Reply::Hold { hold, existing } => Ok(HoldReply { hold, existing }),
            other => Err(unexpected(&other)),
        }
    }

    /// Confirms a held hold.
    pub async fn confirm(&self, partition: &str, hold: &str) -> Result<HoldView, ClientError> {
        self.hold_op(Opcode::Confirm, partition, hold, None).await
    }

    /// Releases a held hold.
    pub async fn release(&self, partition: &str, hold: &str) -> Result<HoldView, ClientError> {
        self.hold_op(Opcode::Release, partition, hold, None).await
    }

    /// Cancels a confirmed hold.
    pub async fn cancel(&self, partition: &str, hold: &str) -> Result<HoldView, ClientError> {
        self.hold_op(Opcode::Cancel, partition, hold, None).await
    }

    /// Sets a held hold's expiry to now + `ttl_ms`.
    pub async fn extend(
        &self,
        partition: &str,
        hold: &str,
        ttl_ms: u64,
    ) -> Result<HoldView, ClientError> {
        self.hold_op(Opcode::Extend, partition, hold, Some(ttl_ms)).await
    }

    /// Removes `partition` with every resource and hold in it; refused with
    /// `partition_has_live_holds` while any of its holds is held, `not_found` if there is no
    /// such partition (also when a resent delete had already taken effect).
    pub async fn delete_partition(&self, partition: &str) -> Result<PartitionDeleted, ClientError> {
        let mut bytes = Vec::with_capacity(2 + partition.len());
        put_u8(&mut bytes, Opcode::DeletePartition as u8);
        put_str8(&mut bytes, partition, "partition").map_err(ClientError::invalid)?;
        match self.call_bytes(bytes).await? {
            Reply::PartitionDeleted(deleted) => Ok(deleted),
            other => Err(unexpected(&other)),
        }
    }

    /// The hold `hold` of `partition`.
    pub async fn get_hold(&self, partition: &str, hold: &str) -> Result<HoldView, ClientError> {
        self.hold_op(Opcode::GetHold, partition, hold, None).await
    }

    /// The resource `resource` of `partition`.
    pub async fn get_resource(
        &self,
        partition: &str,
        resource: &str,
    ) -> Result<ResourceView, ClientError> {
        let mut bytes = Vec::with_capacity(3 + partition.len() + resource.len());
        encode_ref(&mut bytes, Opcode::GetResource, partition, resource)?;
        match self.call_bytes(bytes).await? {
            Reply::Resource { resource, .. } => Ok(resource),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of `partition`'s resources in id order.
    pub async fn list_resources(
        &self,
        partition: &str,
        query: &ListQuery,
    ) -> Result<ResourcePage, ClientError> {
        let op = Op::ListResources { partition: partition.to_string(), query: query.clone() };
        match self.call(&op).await? {
            Reply::Page(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs one request; a refusal is an `Err`.
    pub async fn call(&self, request: &Request) -> Result<Reply, ClientError> {
        let mut bytes = Vec::with_capacity(64);
        encode_op(request, &mut bytes).map_err(ClientError::invalid)?;
        self.call_bytes(bytes).await
    }

    /// Sends `requests` as one REQUEST frame (1–1 000 of them) and returns one result per
    /// request, in order; the commands are independent, like `/v1/batch`. A request that cannot
    /// be encoded (a name over 255 bytes) gets its own `invalid` and is not sent.
    pub async fn execute(
        &self,
        requests: &[Request],
    ) -> Result<Vec<Result<Reply, ClientError>>, ClientError> {
        self.execute_encoded(requests.len(), |index, bytes| encode_op(&requests[index], bytes))
            .await
    }

    /// [`Client::execute`] for state-changing commands the caller keeps: one REQUEST frame, one
    /// result per command, in order, and no copy of the commands. For callers that batch their
    /// own callers (a gateway, the load generator) and pay for one call per frame.
    pub async fn execute_commands(
        &self,
        commands: &[&Command],
    ) -> Result<Vec<Result<Reply, ClientError>>, ClientError> {
        self.execute_encoded(commands.len(), |index, bytes| encode_command(commands[index], bytes))
            .await
    }

    /// [`Client::execute_commands`] when only the outcome matters: one status per command
    /// (success, or the error code), decoded without building the results. What a load
    /// generator needs, at a fraction of the client's CPU per command. A command that cannot be
    /// encoded fails the whole call as `invalid`.
    pub async fn execute_statuses(
        &self,
        commands: &[&Command],
    ) -> Result<Vec<Status>, ClientError> {
        let limit = bookd_protocol::limits::COMMANDS_PER_FRAME_MAX;
        if commands.is_empty() || commands.len() > limit {
            return Err(ClientError::invalid(EncodeError {
                field: "commands".into(),
                len: commands.len(),
            }));
        }
        let mut bytes = Vec::with_capacity(commands.len() * 48);
        for command in commands {
            encode_command(command, &mut bytes).map_err(ClientError::invalid)?;
        }
        let count = commands.len() as u16;
        match self.with_retries(bytes, count, AnswerKind::Statuses).await? {
            Answer::Statuses(statuses) if statuses.len() == commands.len() => Ok(statuses),
            _ => Err(ClientError::Protocol("wrong number of results".into())),
        }
    }

    /// One frame of `count` commands, command `i` appended by `encode(i, bytes)`.
    async fn execute_encoded(
        &self,
        count: usize,
        encode: impl Fn(usize, &mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Vec<Result<Reply, ClientError>>, ClientError> {
        let limit = bookd_protocol::limits::COMMANDS_PER_FRAME_MAX;
        if count == 0 || count > limit {
            return Err(ClientError::Refused(Refused {
                code: ErrorCode::Invalid,
                detail: Detail::Invalid {
                    field: "commands".into(),
                    reason: format!("a batch holds 1 to {limit} commands"),
                },
            }));
        }
        let mut bytes = Vec::with_capacity(count * 48);
        let mut local: Vec<Option<ClientError>> = Vec::with_capacity(count);
        for index in 0..count {
            local.push(encode(index, &mut bytes).err().map(ClientError::invalid));
        }
        let sent = local.iter().filter(|error| error.is_none()).count();
        let mut replies =
            if sent == 0 { Vec::new() } else { self.call_many(bytes, sent as u16).await? }
                .into_iter();
        Ok(local
            .into_iter()
            .map(|error| match error {
                Some(error) => Err(error),
                None => replies
                    .next()
                    .map_or(Err(ClientError::Protocol("too few results".into())), into_result),
            })
            .collect())
    }

    async fn hold_op(
        &self,
        opcode: Opcode,
        partition: &str,
        hold: &str,
        ttl_ms: Option<u64>,
    ) -> Result<HoldView, ClientError> {
        let mut bytes = Vec::with_capacity(11 + partition.len() + hold.len());
        encode_ref(&mut bytes, opcode, partition, hold)?;
        if let Some(ttl_ms) = ttl_ms {
            put_u64(&mut bytes, ttl_ms);
        }
        match self.call_bytes(bytes).await? {
            Reply::Hold { hold, .. } => Ok(hold),
            other => Err(unexpected(&other)),
        }
    }

    /// The connection a call of `bytes` (its encoded commands) goes to: shard-aware, one bound
    /// to the shard of its first command's partition; among the candidates the pinned one,
    /// else round robin (`Relaxed`: the counter only spreads load).
    fn queue(&self, bytes: &[u8]) -> &mpsc::UnboundedSender<Call> {
        let queues = &self.inner.queues;
        let shard = first_partition(bytes).and_then(|partition| {
            let shards = u16::try_from(self.inner.by_shard.len()).ok().filter(|&n| n > 0)?;
            let rule = self.inner.hello.binding?.rule;
            Some(usize::from(shard_of(rule, partition, shards)))
        });
        let candidates = shard.and_then(|shard| self.inner.by_shard.get(shard));
        let pick = |len: usize| match self.pin {
            Some(index) => index % len,
            None => self.inner.next.fetch_add(1, Ordering::Relaxed) % len,
        };
        match candidates.filter(|candidates| !candidates.is_empty()) {
            Some(candidates) => &queues[candidates[pick(candidates.len())]],
            None => &queues[pick(queues.len())],
        }
    }

    /// Sends one encoded command, with the timeout and the retries; a refusal is an `Err`.
    async fn call_bytes(&self, bytes: Vec<u8>) -> Result<Reply, ClientError> {
        match self.with_retries(bytes, 1, AnswerKind::One).await? {
            Answer::One(reply) => into_result(reply),
            _ => Err(ClientError::Protocol("batch answer to a single call".into())),
        }
    }

    async fn call_many(&self, bytes: Vec<u8>, count: u16) -> Result<Vec<Reply>, ClientError> {
        match self.with_retries(bytes, count, AnswerKind::Many).await? {
            Answer::Many(replies) if replies.len() == usize::from(count) => Ok(replies),
            _ => Err(ClientError::Protocol("wrong number of results".into())),
        }
    }

    async fn with_retries(
        &self,
        mut bytes: Vec<u8>,
        count: u16,
        kind: AnswerKind,
    ) -> Result<Answer, ClientError> {
        let config = &self.inner.config;
        let deadline = config.call_timeout.map(|timeout| tokio::time::Instant::now() + timeout);
        let mut attempt = 0u32;
        loop {
            // The connection enforces the deadline (one coarse check per connection, no timer
            // per call: a per-call timer was a measurable share of a closed-loop client's CPU).
            let closed = |_| ClientError::Closed;
            let queue = self.queue(&bytes);
            let answer = match kind {
                AnswerKind::One => {
                    let (sender, receiver) = oneshot::channel();
                    let call = Call { bytes, count, reply: Some(ReplyTo::One(sender)), deadline };
                    queue.send(call).map_err(|_| ClientError::Closed)?;
                    receiver.await.map_err(closed)?.map(Answer::One)
                }
                AnswerKind::Many => {
                    let (sender, receiver) = oneshot::channel();
                    let call = Call { bytes, count, reply: Some(ReplyTo::Many(sender)), deadline };
                    queue.send(call).map_err(|_| ClientError::Closed)?;
                    receiver.await.map_err(closed)?.map(Answer::Many)
                }
                AnswerKind::Statuses => {
                    let (sender, receiver) = oneshot::channel();
                    let reply = Some(ReplyTo::Statuses(sender));
                    let call = Call { bytes, count, reply, deadline };
                    queue.send(call).map_err(|_| ClientError::Closed)?;
                    receiver.await.map_err(closed)?.map(Answer::Statuses)
                }
            };
            match answer {
                Ok(answer) => return Ok(answer),
                Err(Failure::Error(error)) => return Err(error),
                Err(Failure::Lost(returned)) => {
                    if attempt >= config.retries {
                        return Err(ClientError::Unavailable(
                            "connection lost; retries exhausted".into(),
                        ));
                    }
                    attempt += 1;
                    bytes = returned;
                    let pause = backoff(config, attempt);
                    match deadline {
                        Some(deadline) if tokio::time::Instant::now() + pause >= deadline => {
                            return Err(ClientError::Timeout)
                        }
                        _ => tokio::time::sleep(pause).await,
                    }
                }
            }
        }
    }
}

enum Answer {
    One(Reply),
    Many(Vec<Reply>),
    Statuses(Vec<Status>),
}

/// Which of [`Answer`]'s forms a call wants.
#[derive(Clone, Copy)]
enum AnswerKind {
    One,
    Many,
    Statuses,
}

/// The partition of the first of encoded commands: every command starts with `u8 opcode`,
/// `str8 partition`.
fn first_partition(bytes: &[u8]) -> Option<&str> {
    let len = usize::from(*bytes.get(1)?);
    std::str::from_utf8(bytes.get(2..2 + len)?).ok()
}

/// The pause before resend or reconnect number `attempt` (1-based).
pub(crate) fn backoff(config: &ClientConfig, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    config.backoff_initial.saturating_mul(factor).min(config.backoff_max)
}

/// A result as `Ok`, an error result as the matching [`ClientError`].
pub fn into_result(reply: Reply) -> Result<Reply, ClientError> {
    match reply {
        Reply::Refused(refused) => Err(match refused.code {
            ErrorCode::Overloaded => ClientError::Overloaded(refused),
            ErrorCode::Unavailable => ClientError::Unavailable(refused.to_string()),
            _ => ClientError::Refused(refused),
        }),
        other => Ok(other),
    }
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected result kind: {reply:?}"))
}

/// Opcode, partition and one more name (the resource or hold id).
fn encode_ref(
    bytes: &mut Vec<u8>,
    opcode: Opcode,
    partition: &str,
    id: &str,
) -> Result<(), ClientError> {
    put_hold_ref(bytes, opcode, partition, id).map_err(ClientError::invalid)
}

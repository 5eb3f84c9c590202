//! One pooled connection: a task that owns the socket, the calls waiting to be sent, the
//! requests in flight and the buffers, so the call path takes no lock. It gathers every call
//! queued while it was busy into one REQUEST frame (up to 1 000 commands and the server's frame
//! limit), keeps at most the server's `in_flight_max` frames in flight, and matches RESPONSE
//! frames to calls by request id and position. On a lost connection every unanswered call gets
//! its bytes back (`Failure::Lost`) so its caller can resend it, and the task reconnects with
//! backoff. Invariant: every call queued here is answered exactly once.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{backoff, Call, ClientConfig, ClientError, ClientStats, Failure, ReplyTo};
use bookd_protocol::command::put_request_count;
use bookd_protocol::frame::{self, Kind};
use bookd_protocol::limits::{
    CLIENT_DEADLINE_CHECK_INTERVAL as DEADLINE_CHECK_INTERVAL,
    CLIENT_WRITE_BUFFER_SIZE_MAX_BYTES as WRITE_BUFFER_SIZE_MAX_BYTES, COMMANDS_PER_FRAME_MAX,
    FRAME_HEADER_SIZE_BYTES, FRAME_SIZE_CAP_BYTES, READ_CHUNK_SIZE_BYTES,
};
use bookd_protocol::reply::{decode_response, decode_statuses, Status};
use bookd_protocol::{ErrorCode, ErrorFrame, Hello, HelloOk, Reply};

/// Connects to `addr` and completes the handshake (a plain connection).
pub async fn connect_one(
    addr: &str,
    config: &ClientConfig,
) -> Result<(TcpStream, HelloOk), ClientError> {
    connect_bound(addr, config, None).await
}

/// Connects to `addr` and completes the handshake, asking for `shard` (docs/protocol.md,
/// "Shard-bound connections") when given.
pub(crate) async fn connect_bound(
    addr: &str,
    config: &ClientConfig,
    shard: Option<u16>,
) -> Result<(TcpStream, HelloOk), ClientError> {
    let io_error = |error: io::Error| ClientError::Io(Arc::new(error));
    let handshake = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        let mut buf = Vec::new();
        let start = frame::begin(&mut buf, Kind::Hello, 0);
        let token = config.token.as_deref().unwrap_or("").as_bytes();
        Hello { token, client_name: &config.client_name, shard }
            .encode(&mut buf)
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        frame::finish(&mut buf, start);
        stream.write_all(&buf).await.map_err(io_error)?;
        let mut rbuf = BytesMut::with_capacity(256);
        loop {
            match frame::parse(&rbuf, FRAME_SIZE_CAP_BYTES) {
                Err(error) => return Err(ClientError::Protocol(error.to_string())),
                Ok(Some((reply, _))) => {
                    return match reply.kind {
                        Kind::HelloOk => HelloOk::decode(reply.payload)
                            .map(|hello| (stream, hello))
                            .map_err(|error| ClientError::Protocol(error.to_string())),
                        Kind::Error => Err(match ErrorFrame::decode(reply.payload) {
                            Ok(error) => ClientError::Server(error),
                            Err(error) => ClientError::Protocol(error.to_string()),
                        }),
                        other => Err(ClientError::Protocol(format!("{other:?} before HELLO_OK"))),
                    };
                }
                Ok(None) => {
                    rbuf.reserve(256);
                    if stream.read_buf(&mut rbuf).await.map_err(io_error)? == 0 {
                        return Err(io_error(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// The calls of one frame in flight, in frame order.
type Pending = Vec<Call>;

/// How a connection ended.
enum Ended {
    /// Every handle of the client is gone: stop.
    ClientGone,
    /// The connection broke (or the node is stopping): reconnect.
    Lost,
}

/// The connection's task: serve, and after a loss reconnect with backoff (bound to the same
/// `shard`), until the client is dropped. A node that refuses the shard on a reconnect (one
/// with fewer shards, after a failover) gets this connection plain from then on: its calls are
/// still answered, forwarded by the node.
pub(crate) async fn run(
    addr: String,
    mut shard: Option<u16>,
    config: Arc<ClientConfig>,
    mut queue: mpsc::UnboundedReceiver<Call>,
    stream: TcpStream,
    hello: HelloOk,
    stats: Arc<ClientStats>,
) {
    let frames_in_flight_max = config.frames_in_flight_max.max(1);
    let mut state = State { stats, frames_in_flight_max, ..State::default() };
    let mut connected = Some((stream, hello));
    let mut failures = 0u32;
    loop {
        let (stream, hello) = match connected.take() {
            Some(connected) => connected,
            None => match connect_bound(&addr, &config, shard).await {
                Ok(connected) => {
                    failures = 0;
                    connected
                }
                Err(ClientError::Server(refused))
                    if shard.is_some() && refused.code == ErrorCode::BadRequest =>
                {
                    tracing::debug!(message = %refused.message, "the node refused the shard; reconnecting plain");
                    shard = None;
                    continue;
                }
                Err(error) => {
                    failures += 1;
                    tracing::debug!(%error, "reconnect failed");
                    // Whatever waits now is answered, so callers can retry or give up.
                    while let Ok(call) = queue.try_recv() {
                        lost(call);
                    }
                    if queue.is_closed() {
                        return;
                    }
                    tokio::time::sleep(backoff(&config, failures)).await;
                    continue;
                }
            },
        };
        let ended = state.serve(stream, hello, &mut queue).await;
        state.fail_all();
        match ended {
            Ended::ClientGone => return,
            Ended::Lost => {
                failures += 1;
                tokio::time::sleep(backoff(&config, failures)).await;
            }
        }
    }
}

#[derive(Default)]
struct State {
    stats: Arc<ClientStats>,
    /// The client's own bound on frames in flight ([`ClientConfig::frames_in_flight_max`]).
    frames_in_flight_max: usize,
    next_request_id: u64,
    pending: HashMap<u64, Pending>,
    /// Emptied `Pending` vectors, reused.
    spare: Vec<Pending>,
    /// Calls taken from the queue but not yet in a frame.
    backlog: VecDeque<Call>,
    received: Vec<Call>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    written: usize,
    replies: Vec<Reply>,
    statuses: Vec<Status>,
}

impl State {
    async fn serve(
        &mut self,
        mut stream: TcpStream,
        hello: HelloOk,
        queue: &mut mpsc::UnboundedReceiver<Call>,
    ) -> Ended {
        let (mut read, mut write) = stream.split();
        let (in_flight_max, frame_size_max, commands_max) = self.session_limits(&hello);
        self.rbuf.clear();
        self.wbuf.clear();
        self.written = 0;
        let mut queue_open = true;
        let mut ticker = tokio::time::interval(DEADLINE_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while !self.backlog.is_empty() && self.has_room(in_flight_max) {
                self.build_frame(frame_size_max, commands_max);
            }
            if !queue_open && self.backlog.is_empty() && self.pending.is_empty() {
                return Ended::ClientGone;
            }
            let may_send = queue_open && self.backlog.is_empty() && self.has_room(in_flight_max);
            let unwritten = self.written < self.wbuf.len();
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK_SIZE_BYTES / 4 {
                self.rbuf.reserve(READ_CHUNK_SIZE_BYTES);
            }
            let event = tokio::select! {
                biased;
                read = read.read_buf(&mut self.rbuf) => Event::Read(read),
                count = queue.recv_many(&mut self.received, COMMANDS_PER_FRAME_MAX), if may_send => {
                    Event::Queued(count)
                }
                written = write.write(&self.wbuf[self.written..]), if unwritten => {
                    Event::Written(written)
                }
                _ = ticker.tick() => Event::Tick,
            };
            match event {
                Event::Read(Ok(0)) | Event::Read(Err(_)) | Event::Written(Err(_)) => {
                    return Ended::Lost;
                }
                Event::Read(Ok(_)) => {
                    if let Err(ended) = self.read_frames() {
                        return ended;
                    }
                    // The callers just answered run before this task looks at the queue
                    // again, so their next calls join the next frame (batching).
                    tokio::task::yield_now().await;
                }
                Event::Tick => self.tick(queue, queue_open),
                Event::Queued(0) => queue_open = false,
                Event::Queued(_) => self.backlog.extend(self.received.drain(..)),
                Event::Written(Ok(written)) => self.wrote(written),
            }
        }
    }

    /// In flight at most, frame size at most and commands per frame at most on a connection
    /// whose node said `hello`: the lower of its limits and this client's.
    fn session_limits(&self, hello: &HelloOk) -> (usize, usize, usize) {
        let in_flight_max = (hello.in_flight_max as usize).clamp(1, self.frames_in_flight_max);
        let frame_size_max = (hello.frame_size_max_bytes as usize).min(FRAME_SIZE_CAP_BYTES);
        let commands_max =
            usize::from(hello.commands_per_frame_max).clamp(1, COMMANDS_PER_FRAME_MAX);
        (in_flight_max, frame_size_max, commands_max)
    }

    /// Whether another frame may go out: fewer than `in_flight_max` in flight, and room in the
    /// write buffer.
    fn has_room(&self, in_flight_max: usize) -> bool {
        self.pending.len() < in_flight_max
            && self.wbuf.len() - self.written < WRITE_BUFFER_SIZE_MAX_BYTES
    }

    /// The deadline check: calls still queued join the backlog (held back by the in-flight
    /// bound, they must time out too), then every call past its deadline is answered.
    fn tick(&mut self, queue: &mut mpsc::UnboundedReceiver<Call>, queue_open: bool) {
        if queue_open {
            while let Ok(call) = queue.try_recv() {
                self.backlog.push_back(call);
            }
        }
        self.expire();
    }

    /// `written` more bytes of the write buffer went out.
    fn wrote(&mut self, written: usize) {
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.written += written;
        if self.written == self.wbuf.len() {
            self.wbuf.clear();
            self.written = 0;
        }
    }

    /// Moves calls from the backlog into one REQUEST frame.
    fn build_frame(&mut self, frame_size_max: usize, commands_max: usize) {
        let request_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let start = frame::begin(&mut self.wbuf, Kind::Request, request_id);
        let count_at = self.wbuf.len();
        put_request_count(&mut self.wbuf, 1);
        let mut calls = self.spare.pop().unwrap_or_default();
        let mut count = 0usize;
        let room = frame_size_max - FRAME_HEADER_SIZE_BYTES - 2;
        let mut size = 0usize;
        while let Some(call) = self.backlog.front() {
            let fits =
                count + usize::from(call.count) <= commands_max && size + call.bytes.len() <= room;
            if !fits && count > 0 {
                break;
            }
            let Some(call) = self.backlog.pop_front() else { break };
            if !fits {
                // A single call larger than the server's limits: it cannot ever be sent.
                answer_error(
                    call,
                    ClientError::Protocol("request exceeds the node's frame limits".into()),
                );
                continue;
            }
            count += usize::from(call.count);
            size += call.bytes.len();
            self.wbuf.extend_from_slice(&call.bytes);
            calls.push(call);
        }
        if count == 0 {
            self.wbuf.truncate(start);
            self.spare.push(calls);
            return;
        }
        self.wbuf[count_at..count_at + 2].copy_from_slice(&(count as u16).to_le_bytes());
        frame::finish(&mut self.wbuf, start);
        self.pending.insert(request_id, calls);
        self.stats.frames_sent.fetch_add(1, Ordering::Relaxed);
        self.stats.commands_sent.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Answers the calls of every complete RESPONSE frame in the read buffer. A frame whose
    /// calls all want statuses only is decoded without building its results.
    fn read_frames(&mut self) -> Result<(), Ended> {
        while let Some((request_id, used, statuses_only)) = self.decode_frame()? {
            self.rbuf.advance(used);
            let Some(mut calls) = self.pending.remove(&request_id) else {
                return Err(self.broken(format!("RESPONSE to unknown request {request_id}")));
            };
            let expected: usize = calls.iter().map(|call| usize::from(call.count)).sum();
            let results = if statuses_only { self.statuses.len() } else { self.replies.len() };
            if expected != results {
                self.pending.insert(request_id, calls);
                return Err(self.broken(format!("{results} results for {expected} commands")));
            }
            if statuses_only {
                answer_statuses(&mut self.statuses, &mut calls);
            } else {
                answer_replies(&mut self.replies, &mut calls);
            }
            self.spare.push(calls);
        }
        Ok(())
    }

    /// The next complete frame in the read buffer, its results decoded into `statuses` or
    /// `replies`: its request id, its size in the buffer, and whether it was decoded as
    /// statuses only. `None` until a whole frame is there; an ERROR frame or a bad one ends the
    /// connection.
    fn decode_frame(&mut self) -> Result<Option<(u64, usize, bool)>, Ended> {
        let (frame, used) = match frame::parse(&self.rbuf, FRAME_SIZE_CAP_BYTES) {
            Ok(None) => return Ok(None),
            Err(error) => return Err(self.broken(format!("bad frame: {error}"))),
            Ok(Some(parsed)) => parsed,
        };
        match frame.kind {
            Kind::Response => {
                let statuses_only = self.wants_statuses_only(frame.request_id);
                let decoded = if statuses_only {
                    self.statuses.clear();
                    decode_statuses(frame.payload, &mut self.statuses)
                } else {
                    self.replies.clear();
                    decode_response(frame.payload, &mut self.replies)
                };
                if let Err(error) = decoded {
                    return Err(self.broken(format!("bad RESPONSE: {error}")));
                }
                Ok(Some((frame.request_id, used, statuses_only)))
            }
            Kind::Error => {
                let error = ErrorFrame::decode(frame.payload);
                Err(match error {
                    Ok(error) if error.code == ErrorCode::Unavailable => Ended::Lost,
                    Ok(error) => self.fail_pending(ClientError::Server(error)),
                    Err(error) => self.broken(format!("bad ERROR frame: {error}")),
                })
            }
            other => Err(self.broken(format!("unexpected {other:?} frame"))),
        }
    }

    /// Whether every call of request `request_id` wants statuses only (or no longer waits).
    fn wants_statuses_only(&self, request_id: u64) -> bool {
        self.pending.get(&request_id).is_some_and(|calls| {
            calls.iter().all(|call| matches!(call.reply, Some(ReplyTo::Statuses(_)) | None))
        })
    }

    /// Answers `Timeout` to every call past its deadline, waiting or in flight.
    fn expire(&mut self) {
        let now = tokio::time::Instant::now();
        for call in self.backlog.iter_mut().filter(|call| expired(call, now)) {
            answer_error_in_place(call, ClientError::Timeout);
        }
        self.backlog.retain(|call| call.reply.is_some());
        for calls in self.pending.values_mut() {
            for call in calls.iter_mut().filter(|call| expired(call, now)) {
                answer_error_in_place(call, ClientError::Timeout);
            }
        }
    }

    /// The node broke the protocol: every call in flight fails with `Protocol`.
    fn broken(&mut self, message: String) -> Ended {
        tracing::warn!(%message, "binary protocol error from the node; reconnecting");
        self.fail_pending(ClientError::Protocol(message))
    }

    fn fail_pending(&mut self, error: ClientError) -> Ended {
        for (_, calls) in self.pending.drain() {
            for call in calls {
                answer_error(call, error.clone());
            }
        }
        Ended::Lost
    }

    /// The connection is gone: every unanswered call gets its bytes back for a resend.
    fn fail_all(&mut self) {
        for (_, calls) in self.pending.drain() {
            calls.into_iter().for_each(lost);
        }
        self.backlog.drain(..).for_each(lost);
        self.received.drain(..).for_each(lost);
        self.rbuf.clear();
        self.wbuf.clear();
        self.written = 0;
    }
}

/// Hands each call its statuses, in order; a call that timed out already drops its own.
fn answer_statuses(statuses: &mut Vec<Status>, calls: &mut Pending) {
    let mut statuses = statuses.drain(..);
    for call in calls.drain(..) {
        let count = usize::from(call.count);
        match call.reply {
            Some(ReplyTo::Statuses(sender)) => {
                let _ = sender.send(Ok(statuses.by_ref().take(count).collect()));
            }
            _ => statuses.by_ref().take(count).for_each(drop),
        }
    }
}

/// Hands each call its replies, in order, as it asked for them; a call that timed out already
/// drops its own.
fn answer_replies(replies: &mut Vec<Reply>, calls: &mut Pending) {
    let mut replies = replies.drain(..);
    for call in calls.drain(..) {
        let count = usize::from(call.count);
        match call.reply {
            Some(ReplyTo::One(sender)) => {
                if let Some(reply) = replies.next() {
                    let _ = sender.send(Ok(reply));
                }
            }
            Some(ReplyTo::Many(sender)) => {
                let _ = sender.send(Ok(replies.by_ref().take(count).collect()));
            }
            Some(ReplyTo::Statuses(sender)) => {
                let batch = replies.by_ref().take(count).map(|r| r.status()).collect();
                let _ = sender.send(Ok(batch));
            }
            // Timed out already: its results are dropped.
            None => replies.by_ref().take(count).for_each(drop),
        }
    }
}

enum Event {
    Read(io::Result<usize>),
    Queued(usize),
    Written(io::Result<usize>),
    Tick,
}

fn lost(call: Call) {
    match call.reply {
        Some(ReplyTo::One(sender)) => {
            let _ = sender.send(Err(Failure::Lost(call.bytes)));
        }
        Some(ReplyTo::Many(sender)) => {
            let _ = sender.send(Err(Failure::Lost(call.bytes)));
        }
        Some(ReplyTo::Statuses(sender)) => {
            let _ = sender.send(Err(Failure::Lost(call.bytes)));
        }
        None => {}
    }
}

fn answer_error(mut call: Call, error: ClientError) {
    answer_error_in_place(&mut call, error);
}

/// Answers `call` with `error` (if not answered yet) and leaves it marked answered.
fn answer_error_in_place(call: &mut Call, error: ClientError) {
    match call.reply.take() {
        Some(ReplyTo::One(sender)) => {
            let _ = sender.send(Err(Failure::Error(error)));
        }
        Some(ReplyTo::Many(sender)) => {
            let _ = sender.send(Err(Failure::Error(error)));
        }
        Some(ReplyTo::Statuses(sender)) => {
            let _ = sender.send(Err(Failure::Error(error)));
        }
        None => {}
    }
}

/// Whether `call` is unanswered and past its deadline.
fn expired(call: &Call, now: tokio::time::Instant) -> bool {
    call.reply.is_some() && call.deadline.is_some_and(|deadline| deadline <= now)
}

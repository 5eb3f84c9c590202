//! The binary protocol server: a listener with a connection-limit semaphore and a shutdown
//! guard, and per connection one task that reads frames, runs each REQUEST frame as ONE
//! `Runtime::execute` (so a frame costs one message per shard), and writes RESPONSE frames as
//! they complete, batched into as few writes as the socket allows.
//!
//! Invariants: a connection holds at most `in_flight_max` requests in flight and stops reading
//! (backpressure) while that many are in flight or while more than `write_buffer_size_max_bytes`
//! of responses wait for the peer, so a client that stops reading costs the node at most
//! `write_buffer_size_max_bytes + in_flight_max × largest response` plus one read chunk and one
//! frame; a peer that takes no byte for `write_stall_timeout` is disconnected. A malformed
//! frame gets an ERROR frame (after the responses of requests already in flight) and the
//! connection is closed; no other connection is affected.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::{shard_of, Op, OpResult, OutcomeRef};
use bookd_feed::{Cursor, Feed, FeedError, FeedPage, FeedRequest, FEED_LIMIT_MAX};
use bookd_runtime::{Encoded, Encoder, Runtime};
use bytes::{Buf, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::http::{constant_time_eq, NodeInfo};
use bookd_protocol::codes::ErrorCode;
use bookd_protocol::command::{decode_request, CommandRef};
use bookd_protocol::frame::{self, FrameError, Kind};
use bookd_protocol::handshake::{Binding, ErrorFrame, Hello, HelloOk, ShardRule, ANY_SHARD};
use bookd_protocol::limits::{
    COMMANDS_PER_FRAME_MAX, CONNECTIONS_MAX_DEFAULT, FRAME_SIZE_CAP_BYTES,
    FRAME_SIZE_MAX_BYTES_DEFAULT, HELLO_TIMEOUT_DEFAULT, IDLE_TIMEOUT_DEFAULT,
    IN_FLIGHT_REQUESTS_MAX_DEFAULT, LENGTH_PREFIX_SIZE_BYTES, LINGER, LINGER_SIZE_MAX_BYTES,
    READ_CHUNK_SIZE_BYTES, READ_TIMEOUT_DEFAULT, TIMEOUT_CHECK_INTERVAL,
    WRITE_BUFFER_SIZE_MAX_BYTES_DEFAULT, WRITE_STALL_TIMEOUT_DEFAULT,
};
use bookd_protocol::reply::{encode_op_result, encode_outcome_ref, put_refused, Refused};
use bookd_protocol::subscribe::{decode_credit, ChangesWriter, Subscribe};
use bookd_protocol::wire::{put_u16, EncodeError};

/// Settings of the binary server.
#[derive(Debug, Clone)]
pub struct BinaryConfig {
    /// Most connections open at once; the listener stops accepting at the bound.
    pub connections_max: usize,
    /// Largest REQUEST frame accepted (the length prefix's value), at most 16 MiB.
    pub frame_size_max_bytes: usize,
    /// Most REQUEST frames in flight per connection.
    pub in_flight_max: usize,
    /// Bytes of responses buffered for a slow reader before the connection stops reading.
    pub write_buffer_size_max_bytes: usize,
    pub hello_timeout: Duration,
    /// Time a started frame has to arrive completely.
    pub read_timeout: Duration,
    /// Time a connection may stay with nothing in flight and nothing arriving.
    pub idle_timeout: Duration,
    /// Time buffered responses may wait without the socket taking a byte.
    pub write_stall_timeout: Duration,
}

impl Default for BinaryConfig {
    fn default() -> Self {
        BinaryConfig {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            frame_size_max_bytes: FRAME_SIZE_MAX_BYTES_DEFAULT,
            in_flight_max: IN_FLIGHT_REQUESTS_MAX_DEFAULT,
            write_buffer_size_max_bytes: WRITE_BUFFER_SIZE_MAX_BYTES_DEFAULT,
            hello_timeout: HELLO_TIMEOUT_DEFAULT,
            read_timeout: READ_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            write_stall_timeout: WRITE_STALL_TIMEOUT_DEFAULT,
        }
    }
}

/// Counters of the binary server. All are `Relaxed`: they are statistics, read on their own,
/// never used to order other memory.
#[derive(Debug, Default)]
pub struct BinaryMetrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub commands_total: AtomicU64,
    /// Connections closed with an ERROR frame for a malformed frame or a refused handshake.
    pub protocol_errors_total: AtomicU64,
    /// Times a connection stopped reading because of its in-flight or write-buffer bound.
    pub read_pauses_total: AtomicU64,
    /// The most response bytes any connection ever had buffered for its peer.
    pub write_buffered_bytes_max: AtomicU64,
    /// Connections closed by a timeout (hello, partial frame, idle, write stall).
    pub timeouts_total: AtomicU64,
}

impl BinaryMetrics {
    fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Takes over a connection whose first frame after the handshake is REPLICATE (a standby; see
/// docs/protocol.md, "Replication"): it gets the stream, the bytes read and not consumed (that
/// frame first) and the node's stop signal, and must end once the signal turns true.
pub trait ReplicationHook: Send + Sync + std::fmt::Debug {
    fn serve(
        &self,
        stream: TcpStream,
        buffered: Vec<u8>,
        peer: String,
        stop: watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What every binary connection needs: shared, read-only after start.
#[derive(Debug)]
pub struct BinaryApp {
    runtime: Arc<Runtime>,
    feed: Arc<Feed>,
    token: Option<String>,
    node: Arc<dyn NodeInfo>,
    config: BinaryConfig,
    metrics: BinaryMetrics,
    replication: Option<Arc<dyn ReplicationHook>>,
    /// Per shard: its bound connections and where their commands went.
    bound: Vec<BoundShard>,
}

/// The connections bound to one shard. `Relaxed` counters, as [`BinaryMetrics`].
#[derive(Debug, Default)]
pub struct BoundShard {
    /// Bound to it now (the server binds `ANY_SHARD` to the shard with the fewest).
    pub connections: AtomicU64,
    /// Commands (and reads) on its connections that it owns: applied on its thread.
    pub local_commands_total: AtomicU64,
    /// Commands on its connections that another shard owns: forwarded to that shard's queue
    /// (a client that does not route by shard).
    pub forwarded_commands_total: AtomicU64,
}

impl BinaryApp {
    /// An app over `runtime`; with `token`, a HELLO must carry it. An empty token counts as none.
    pub fn new(runtime: Arc<Runtime>, token: Option<String>, node: Arc<dyn NodeInfo>) -> Self {
        let runtime_shards = runtime.shards();
        BinaryApp {
            feed: Arc::new(Feed::new(runtime.clone())),
            runtime,
            token: token.filter(|token| !token.is_empty()),
            node,
            config: BinaryConfig::default(),
            metrics: BinaryMetrics::default(),
            replication: None,
            bound: (0..runtime_shards).map(|_| BoundShard::default()).collect(),
        }
    }

    /// The same app, serving `feed` to subscribers (the node shares one with HTTP).
    pub fn with_feed(mut self, feed: Arc<Feed>) -> Self {
        self.feed = feed;
        self
    }

    /// The same app, handing standbys' connections to `hook`.
    pub fn with_replication(mut self, hook: Arc<dyn ReplicationHook>) -> Self {
        self.replication = Some(hook);
        self
    }

    pub fn with_config(mut self, mut config: BinaryConfig) -> Self {
        config.frame_size_max_bytes = config.frame_size_max_bytes.clamp(1024, FRAME_SIZE_CAP_BYTES);
        config.in_flight_max = config.in_flight_max.clamp(1, u32::MAX as usize);
        self.config = config;
        self
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn config(&self) -> &BinaryConfig {
        &self.config
    }

    pub fn metrics(&self) -> &BinaryMetrics {
        &self.metrics
    }

    /// The connections bound to `shard`, if the node has it.
    pub fn bound(&self, shard: usize) -> Option<&BoundShard> {
        self.bound.get(shard)
    }
}

/// Serves the binary protocol on `listener` until `shutdown` resolves; then stops accepting,
/// lets every connection finish its in-flight requests and flush their responses, and returns.
pub async fn serve_binary(
    listener: TcpListener,
    app: Arc<BinaryApp>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let connections_max = app.config.connections_max;
    crate::listener::serve_connections(
        listener,
        "binary protocol",
        connections_max,
        shutdown,
        |stream, permit, stop| serve_connection(stream, app.clone(), permit, stop),
    )
    .await
}

/// Serves one connection: the handshake here, then the requests, here for a plain connection
/// or on its shard's thread for a bound one. The permit is returned last, after this
/// connection's clone of `app` is dropped, so once all permits are back the caller holds the
/// only references to the app.
async fn serve_connection(
    mut stream: TcpStream,
    app: Arc<BinaryApp>,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    BinaryMetrics::add(&app.metrics.connections_open, 1);
    BinaryMetrics::add(&app.metrics.connections_total, 1);
    let _ = stream.set_nodelay(true);
    let replication_stop = stop.clone();
    let (read, write) = stream.split();
    let mut connection = Connection::new(&app, read, write, stop.clone());
    let shaken = connection.handshake().await;
    if let (Ok(true), Some(shard)) = (&shaken, connection.bound) {
        let carried = connection.carry();
        drop(connection);
        return move_to_shard(stream, carried, shard, app, permit, stop);
    }
    let served = match shaken {
        Ok(true) => connection.serve().await,
        Ok(false) => Ok(()),
        Err(error) => Err(error),
    };
    match served {
        Ok(()) => drop(connection.close().await),
        Err(error) => tracing::debug!(%error, "binary connection ended with an error"),
    }
    let handoff = matches!(connection.closing, Some(Closing::Handoff));
    let buffered = if handoff { connection.rbuf.to_vec() } else { Vec::new() };
    drop(connection);
    if let (true, Some(hook)) = (handoff, app.replication.clone()) {
        let peer = stream.peer_addr().map_or_else(|_| "unknown".into(), |peer| peer.to_string());
        hook.serve(stream, buffered, peer, replication_stop).await;
    }
    app.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    drop(app);
    drop(permit);
}

/// What a bound connection takes to its shard's thread: the bytes read and not consumed, and
/// the bytes not yet written (the HELLO_OK).
struct Carried {
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    written: usize,
}

/// What a bound connection holds until it ends, however it ends (served to the end, or its task
/// dropped unpolled by a runtime that stopped): it counts as open and bound while this lives,
/// and returns its permit last, after its clone of the app (fields drop in order).
struct BoundConnection {
    app: Arc<BinaryApp>,
    shard: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for BoundConnection {
    fn drop(&mut self) {
        self.app.bound[self.shard].connections.fetch_sub(1, Ordering::Relaxed);
        self.app.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands a bound connection, after its handshake, to its shard's thread: the socket leaves this
/// thread's reactor and joins the shard runtime's, and the connection goes on there. If the
/// shard's runtime is gone (stopping) or the socket cannot leave, the connection is dropped, as
/// at shutdown.
fn move_to_shard(
    stream: TcpStream,
    carried: Carried,
    shard: usize,
    app: Arc<BinaryApp>,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let runtime = app.runtime.clone();
    let held = BoundConnection { app, shard, _permit: permit };
    if let Ok(stream) = stream.into_std() {
        // `None`: the runtime is gone and the task, `held` with it, is dropped here.
        let _ = runtime.spawn_on_shard(shard, serve_bound(stream, carried, held, stop));
    }
}

/// A bound connection on its shard's thread: its commands for this shard are applied on this
/// thread, the others forwarded to their shards, and every reply written from here.
async fn serve_bound(
    stream: std::net::TcpStream,
    carried: Carried,
    held: BoundConnection,
    stop: watch::Receiver<bool>,
) {
    let Ok(mut stream) = TcpStream::from_std(stream) else { return };
    let (read, write) = stream.split();
    let mut connection = Connection::new(&held.app, read, write, stop);
    connection.bound = Some(held.shard);
    connection.resume(carried);
    match connection.serve().await {
        Ok(()) => drop(connection.close().await),
        Err(error) => {
            tracing::debug!(%error, shard = held.shard, "bound binary connection ended with an error")
        }
    }
}

/// Why a connection stops reading requests for good.
#[derive(Debug)]
enum Closing {
    /// The peer closed its side.
    Eof,
    /// The node is stopping.
    Stopping,
    /// A protocol error or a timeout: this ERROR frame goes out after the in-flight responses
    /// (`unsent` is the request id it answers until it is in the write buffer).
    Error { frame: ErrorFrame, unsent: Option<u64> },
    /// A timeout or dead peer: close without waiting for anything.
    Abort,
    /// A standby's REPLICATE frame: the connection goes to replication, unread bytes with it.
    Handoff,
}

impl Closing {
    /// An ERROR frame to send once the requests in flight are answered.
    fn error(frame: ErrorFrame, request_id: u64) -> Closing {
        Closing::Error { frame, unsent: Some(request_id) }
    }
}

/// A connection timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// The peer has not taken our bytes for `write_stall_timeout`: it is dead or stuck.
    WriteStall,
    /// An incomplete frame has not completed within `read_timeout`.
    Read,
    /// Nothing happened for `idle_timeout`.
    Idle,
}

impl Timeout {
    fn as_str(self) -> &'static str {
        match self {
            Timeout::WriteStall => "write stall",
            Timeout::Read => "read (incomplete frame)",
            Timeout::Idle => "idle",
        }
    }

    /// How the connection ends on this timeout.
    fn closing(self) -> Closing {
        match self {
            Timeout::WriteStall => Closing::Abort,
            // Nothing was in flight, and nothing sent from now on is read: a client may resend
            // whatever crossed this ERROR on the wire.
            Timeout::Idle => Closing::error(
                ErrorFrame {
                    code: ErrorCode::Unavailable,
                    message: "idle timeout; reconnect".into(),
                },
                0,
            ),
            Timeout::Read => Closing::error(bad_request(format!("{} timeout", self.as_str())), 0),
        }
    }
}

/// What woke the connection loop.
enum Event {
    Done(Done),
    Changes(Result<FeedPage, FeedError>),
    Written(io::Result<usize>),
    Read(io::Result<usize>),
    Stop,
    Tick,
}

/// A frame that ends the connection: the ERROR frame and the request id it answers.
type Failed = (ErrorFrame, u64);

/// One request's answers, encoded by the shards.
struct Done {
    request_id: u64,
    answers: Encoded,
}

struct Connection<'a> {
    app: &'a BinaryApp,
    read: ReadHalf<'a>,
    write: WriteHalf<'a>,
    stop: watch::Receiver<bool>,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    written: usize,
    closing: Option<Closing>,
    /// When the bytes in `rbuf` (an incomplete frame) started to arrive.
    partial_since: Option<Instant>,
    last_activity: Instant,
    last_write_progress: Instant,
    write_buffered_max: usize,
    paused: bool,
    /// Whether a REQUEST was read (a REPLICATE frame is only taken before any).
    requested: bool,
    /// The connection's subscription to the change feed, if it opened one.
    subscription: Option<Subscription>,
    /// The subscription's read in progress.
    feed_read: Option<FeedRead<'a>>,
    /// The shard this connection is bound to (HELLO's `shard`), served on its thread.
    bound: Option<usize>,
}

/// A feed read in progress, borrowing the app's feed.
type FeedRead<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<FeedPage, FeedError>> + Send + 'a>>;

/// How long a subscription's read waits for a change before an empty CHANGES frame says the
/// subscription is alive.
const SUBSCRIPTION_HEARTBEAT: Duration = Duration::from_secs(5);
/// Most credit a subscriber may hold (more is kept at this).
const SUBSCRIPTION_CREDIT_MAX: u64 = 1 << 20;

/// A subscription: its id, where it goes on from, and how many changes may still be sent.
struct Subscription {
    request_id: u64,
    cursor: Cursor,
    partition: Option<String>,
    credit: u64,
}

/// A SUBSCRIBE or CREDIT frame, decoded out of the read buffer.
enum Control {
    Subscribe { cursor: String, partition: Option<String>, credit: u32 },
    Credit(u32),
}

impl<'a> Connection<'a> {
    fn new(
        app: &'a BinaryApp,
        read: ReadHalf<'a>,
        write: WriteHalf<'a>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let now = Instant::now();
        Connection {
            app,
            read,
            write,
            stop,
            rbuf: BytesMut::with_capacity(READ_CHUNK_SIZE_BYTES),
            wbuf: Vec::with_capacity(READ_CHUNK_SIZE_BYTES),
            written: 0,
            closing: None,
            partial_since: None,
            last_activity: now,
            last_write_progress: now,
            write_buffered_max: 0,
            paused: false,
            requested: false,
            subscription: None,
            feed_read: None,
            bound: None,
        }
    }

    /// The buffers a bound connection takes to its shard.
    fn carry(&mut self) -> Carried {
        Carried {
            rbuf: std::mem::take(&mut self.rbuf),
            wbuf: std::mem::take(&mut self.wbuf),
            written: self.written,
        }
    }

    /// Goes on from `carried`, on the shard's thread.
    fn resume(&mut self, carried: Carried) {
        self.rbuf = carried.rbuf;
        self.wbuf = carried.wbuf;
        self.written = carried.written;
        if !self.rbuf.is_empty() {
            self.partial_since = Some(Instant::now());
        }
    }

    /// Reads HELLO and answers HELLO_OK; `false` if the connection is to close (the ERROR
    /// frame, if any, is queued in `wbuf`).
    async fn handshake(&mut self) -> io::Result<bool> {
        let deadline = tokio::time::Instant::now() + self.app.config.hello_timeout;
        loop {
            match frame::parse(&self.rbuf, self.app.config.frame_size_max_bytes) {
                Err(error) => {
                    self.fail(frame_error(error), 0);
                    return Ok(false);
                }
                Ok(Some((frame, used))) => {
                    let request_id = frame.request_id;
                    let verdict = match frame.kind {
                        Kind::Hello => match Hello::decode(frame.payload) {
                            Ok(hello) => self.check_token(hello.token).map(|()| hello.shard),
                            Err(error) => Err(bad_request(format!("HELLO: {error}"))),
                        },
                        other => Err(bad_request(format!("expected HELLO, got {other:?}"))),
                    };
                    self.rbuf.advance(used);
                    return match verdict.and_then(|shard| self.bind(shard)) {
                        Ok(()) => {
                            self.hello_ok(request_id);
                            Ok(true)
                        }
                        Err(error) => {
                            self.fail(error, request_id);
                            Ok(false)
                        }
                    };
                }
                Ok(None) => {}
            }
            self.rbuf.reserve(READ_CHUNK_SIZE_BYTES);
            let read = tokio::time::timeout_at(deadline, self.read.read_buf(&mut self.rbuf)).await;
            match read {
                Err(_) => {
                    BinaryMetrics::add(&self.app.metrics.timeouts_total, 1);
                    self.closing = Some(Closing::Abort);
                    return Ok(false);
                }
                Ok(Ok(0)) => {
                    self.closing = Some(Closing::Abort);
                    return Ok(false);
                }
                Ok(read) => {
                    read?;
                }
            }
        }
    }

    fn check_token(&self, presented: &[u8]) -> Result<(), ErrorFrame> {
        match &self.app.token {
            Some(expected) if !constant_time_eq(expected.as_bytes(), presented) => {
                Err(ErrorFrame {
                    code: ErrorCode::Unauthorized,
                    message: "wrong or missing token".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The shard HELLO asks for, if any: that one, or for `ANY_SHARD` the one with the fewest
    /// bound connections. Counted as bound from here.
    fn bind(&mut self, shard: Option<u16>) -> Result<(), ErrorFrame> {
        let Some(asked) = shard else { return Ok(()) };
        let bound = &self.app.bound;
        let shard = if asked == ANY_SHARD {
            (0..bound.len())
                .min_by_key(|&shard| bound[shard].connections.load(Ordering::Relaxed))
                .unwrap_or(0)
        } else {
            usize::from(asked)
        };
        let Some(shard_bound) = bound.get(shard) else {
            let shards = bound.len();
            return Err(bad_request(format!("HELLO: no shard {asked}: the node has {shards}")));
        };
        shard_bound.connections.fetch_add(1, Ordering::Relaxed);
        self.bound = Some(shard);
        Ok(())
    }

    fn hello_ok(&mut self, request_id: u64) {
        let config = &self.app.config;
        let binding = self.bound.map(|shard| Binding {
            // Below the shard count, a u16 (HELLO asked for it by a u16).
            shard: u16::try_from(shard).unwrap_or(u16::MAX),
            rule: ShardRule::Fnv1a64Mod,
        });
        let hello = HelloOk {
            role: self.app.node.role(),
            epoch: self.app.node.epoch(&self.app.runtime),
            shards: u16::try_from(self.app.runtime.shards()).unwrap_or(u16::MAX),
            frame_size_max_bytes: config.frame_size_max_bytes as u32,
            commands_per_frame_max: COMMANDS_PER_FRAME_MAX as u16,
            in_flight_max: u32::try_from(config.in_flight_max).unwrap_or(u32::MAX),
            binding,
        };
        let start = frame::begin(&mut self.wbuf, Kind::HelloOk, request_id);
        hello.encode(&mut self.wbuf);
        frame::finish(&mut self.wbuf, start);
    }

    /// Writes `error` into the write buffer now, and stops reading.
    fn fail(&mut self, error: ErrorFrame, request_id: u64) {
        self.write_error(&error, request_id);
        self.closing = Some(Closing::Error { frame: error, unsent: None });
    }

    fn write_error(&mut self, error: &ErrorFrame, request_id: u64) {
        BinaryMetrics::add(&self.app.metrics.protocol_errors_total, 1);
        tracing::debug!(code = %error.code, message = %error.message, "binary protocol error");
        let start = frame::begin(&mut self.wbuf, Kind::Error, request_id);
        error.encode(&mut self.wbuf);
        frame::finish(&mut self.wbuf, start);
    }

    /// The main loop: until the peer closes, the node stops or a frame is malformed; then
    /// every request in flight is answered before it returns.
    async fn serve(&mut self) -> io::Result<()> {
        let runtime: &Runtime = &self.app.runtime;
        let mut in_flight = FuturesUnordered::new();
        let mut ticker = tokio::time::interval(TIMEOUT_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut yielded = false;
        let bound = self.bound.and_then(|shard| Some((shard, self.app.bound.get(shard)?)));
        loop {
            let may_read = self.start_requests(&mut in_flight, |request_id, ops| {
                count_routes(bound, &ops, runtime.shards());
                execute(runtime, request_id, ops)
            });
            if in_flight.is_empty() {
                self.write_pending_error();
            }
            let unwritten = self.written < self.wbuf.len();
            let drained = in_flight.is_empty() && !unwritten;
            if matches!(self.closing, Some(Closing::Abort)) || (self.closing.is_some() && drained) {
                return Ok(());
            }
            self.start_feed_read();
            let event = tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => Event::Done(done),
                page = poll_feed(&mut self.feed_read), if self.feed_read.is_some() => {
                    Event::Changes(page)
                }
                written = self.write.write(&self.wbuf[self.written..]), if unwritten => {
                    Event::Written(written)
                }
                read = self.read.read_buf(&mut self.rbuf), if may_read => Event::Read(read),
                _ = self.stop.wait_for(|stopping| *stopping), if self.closing.is_none() => {
                    Event::Stop
                }
                _ = ticker.tick() => Event::Tick,
            };
            let busy = !in_flight.is_empty();
            if let Event::Done(done) = event {
                self.respond(done);
                // A shard answers a whole batch at once, one reply after the other: let the
                // rest of it arrive, so their responses leave in this same write.
                if !yielded && busy {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
            } else {
                yielded &= !matches!(event, Event::Written(_));
                self.handle(event, busy)?;
            }
        }
    }

    /// Starts every complete REQUEST frame already buffered, as far as the bounds allow, with
    /// `start`; handles SUBSCRIBE and CREDIT frames on the way. Whether to read more.
    fn start_requests<F>(
        &mut self,
        in_flight: &mut FuturesUnordered<F>,
        start: impl Fn(u64, Vec<Op>) -> F,
    ) -> bool {
        if self.closing.is_some() {
            return false;
        }
        loop {
            if !self.may_start_request(in_flight.len()) {
                return false;
            }
            match self.next_request() {
                // A SUBSCRIBE or CREDIT frame: nothing to execute (a REQUEST has 1+ commands).
                Ok(Some((_, ops))) if ops.is_empty() => {}
                Ok(Some((request_id, ops))) => in_flight.push(start(request_id, ops)),
                Ok(None) => return true,
                Err((error, request_id)) => {
                    self.closing = Some(Closing::error(error, request_id));
                    return false;
                }
            }
        }
    }

    /// Handles what woke the loop, but a finished request. `busy`: requests are in flight.
    fn handle(&mut self, event: Event, busy: bool) -> io::Result<()> {
        match event {
            Event::Done(done) => self.respond(done),
            Event::Changes(page) => {
                self.feed_read = None;
                self.send_changes(page);
            }
            Event::Written(written) => self.wrote(written?)?,
            Event::Read(read) => self.read_some(read?),
            Event::Stop => self.closing = Some(Closing::Stopping),
            Event::Tick => {
                if let Some(timeout) = self.timed_out(busy || self.paused) {
                    BinaryMetrics::add(&self.app.metrics.timeouts_total, 1);
                    tracing::debug!(timeout = timeout.as_str(), "binary connection timed out");
                    self.closing = Some(timeout.closing());
                }
            }
        }
        Ok(())
    }

    /// Whether another request may start: fewer than `in_flight_max` in flight and room in the
    /// write buffer. Counts the read pauses; the read timeout runs only while reading.
    fn may_start_request(&mut self, in_flight: usize) -> bool {
        let config = &self.app.config;
        let full = in_flight >= config.in_flight_max
            || self.wbuf.len() - self.written >= config.write_buffer_size_max_bytes;
        if !full {
            self.paused = false;
            return true;
        }
        if !self.paused {
            self.paused = true;
            BinaryMetrics::add(&self.app.metrics.read_pauses_total, 1);
        }
        if self.partial_since.is_some() {
            self.partial_since = Some(Instant::now());
        }
        false
    }

    /// Once nothing is in flight, the ERROR frame a closing connection owes goes out.
    fn write_pending_error(&mut self) {
        if let Some(Closing::Error { frame, unsent }) = &mut self.closing {
            if let Some(request_id) = unsent.take() {
                let frame = frame.clone();
                self.write_error(&frame, request_id);
            }
        }
    }

    /// `written` bytes of the write buffer went out.
    fn wrote(&mut self, written: usize) -> io::Result<()> {
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.written += written;
        self.last_write_progress = Instant::now();
        self.last_activity = self.last_write_progress;
        if self.written == self.wbuf.len() {
            self.wbuf.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// `read` bytes arrived; none means the peer closed its side.
    fn read_some(&mut self, read: usize) {
        if read > 0 {
            self.last_activity = Instant::now();
            if self.partial_since.is_none() {
                self.partial_since = Some(self.last_activity);
            }
        } else if self.rbuf.is_empty() {
            self.closing = Some(Closing::Eof);
        } else {
            let message = "connection closed in the middle of a frame (truncated frame)";
            self.closing = Some(Closing::error(bad_request(message.into()), 0));
        }
    }

    /// The next complete REQUEST frame in the read buffer, decoded into engine ops (none for a
    /// SUBSCRIBE or CREDIT frame, which is handled here).
    fn next_request(&mut self) -> Result<Option<(u64, Vec<Op>)>, Failed> {
        let config = &self.app.config;
        let parsed = frame::parse(&self.rbuf, config.frame_size_max_bytes);
        let (frame, used) = match parsed {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                if self.rbuf.is_empty() {
                    self.partial_since = None;
                }
                // Room for the next read; a large frame (its length already checked against
                // the limit) grows the buffer chunk by chunk, never beyond the frame.
                if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK_SIZE_BYTES / 4 {
                    self.rbuf.reserve(READ_CHUNK_SIZE_BYTES);
                }
                return Ok(None);
            }
            Err(error) => return Err((frame_error(error), 0)),
        };
        let request_id = frame.request_id;
        let replication = self.app.replication.is_some() && self.bound.is_none();
        if frame.kind == Kind::Replicate && !self.requested && replication {
            // The frame stays in the buffer for replication; the token was checked by HELLO.
            self.closing = Some(Closing::Handoff);
            return Ok(None);
        }
        if matches!(frame.kind, Kind::Subscribe | Kind::Credit) {
            let control =
                decode_control(frame.kind, frame.payload).map_err(|error| (error, request_id))?;
            self.rbuf.advance(used);
            self.partial_since = if self.rbuf.is_empty() { None } else { Some(Instant::now()) };
            self.control(request_id, control).map_err(|error| (error, request_id))?;
            // Nothing to execute: the caller asks again for the next frame.
            return Ok(Some((request_id, Vec::new())));
        }
        if frame.kind != Kind::Request {
            return Err((bad_request(format!("unexpected {:?} frame", frame.kind)), request_id));
        }
        // The count is checked by the decoder; it only sizes the vector here (≤ 1 000). A
        // standby's writes go to its shards like any, which refuse them.
        let announced = frame.payload.first_chunk::<2>().map_or(0, |c| u16::from_le_bytes(*c));
        let mut ops = Vec::with_capacity(usize::from(announced).min(COMMANDS_PER_FRAME_MAX));
        let decoded =
            decode_request(frame.payload, |command: CommandRef<'_>| ops.push(command.to_op()));
        if let Err(error) = decoded {
            return Err((bad_request(format!("REQUEST: {error}")), request_id));
        }
        let count = ops.len();
        self.rbuf.advance(used);
        self.requested = true;
        self.partial_since = if self.rbuf.is_empty() { None } else { Some(Instant::now()) };
        let metrics = &self.app.metrics;
        BinaryMetrics::add(&metrics.requests_total, 1);
        BinaryMetrics::add(&metrics.commands_total, count as u64);
        Ok(Some((request_id, ops)))
    }

    /// Opens the subscription or adds credit to it.
    fn control(&mut self, request_id: u64, control: Control) -> Result<(), ErrorFrame> {
        let invalid =
            |message: &str| ErrorFrame { code: ErrorCode::Invalid, message: message.into() };
        match control {
            Control::Subscribe { cursor, partition, credit } => {
                if self.subscription.is_some() {
                    return Err(bad_request("a connection holds one subscription".into()));
                }
                let feed = &self.app.feed;
                let cursor = if cursor.is_empty() {
                    feed.end()
                } else {
                    Cursor::parse(&cursor, feed.shards())
                        .map_err(|_| invalid("invalid cursor: not a cursor of this feed"))?
                };
                if let Some(partition) = &partition {
                    if bookd_engine::name_problem(partition).is_some() {
                        return Err(invalid("invalid partition: not a partition name"));
                    }
                }
                let credit = u64::from(credit).min(SUBSCRIPTION_CREDIT_MAX);
                self.subscription = Some(Subscription { request_id, cursor, partition, credit });
                Ok(())
            }
            Control::Credit(more) => match &mut self.subscription {
                Some(subscription) if subscription.request_id == request_id => {
                    subscription.credit = subscription
                        .credit
                        .saturating_add(u64::from(more))
                        .min(SUBSCRIPTION_CREDIT_MAX);
                    Ok(())
                }
                _ => Err(bad_request(format!("CREDIT for no subscription {request_id}"))),
            },
        }
    }

    /// Starts the subscription's next read when it has credit, none is running, and the
    /// write buffer has room: a subscriber that reads slowly stops its own reads, nothing else.
    fn start_feed_read(&mut self) {
        let room = self.wbuf.len() - self.written < self.app.config.write_buffer_size_max_bytes;
        let Some(subscription) = &self.subscription else { return };
        if self.feed_read.is_some() || subscription.credit == 0 || !room || self.closing.is_some() {
            return;
        }
        let request = FeedRequest {
            cursor: Some(subscription.cursor.clone()),
            partition: subscription.partition.clone(),
            limit: usize::try_from(subscription.credit)
                .unwrap_or(FEED_LIMIT_MAX)
                .min(FEED_LIMIT_MAX),
            wait: SUBSCRIPTION_HEARTBEAT,
        };
        let feed: &'a Feed = &self.app.feed;
        self.feed_read = Some(Box::pin(async move { feed.read(&request).await }));
    }

    /// Writes a page of the subscription as a CHANGES frame (an empty one is a heartbeat), or
    /// the read's failure as an ERROR frame that ends the connection.
    fn send_changes(&mut self, page: Result<FeedPage, FeedError>) {
        let Some(subscription) = &mut self.subscription else { return };
        let request_id = subscription.request_id;
        match page {
            Ok(page) => {
                let start = frame::begin(&mut self.wbuf, Kind::Changes, request_id);
                if write_changes(&page, &mut self.wbuf).is_err() {
                    // Not sent: the subscription reads the page again.
                    self.wbuf.truncate(start);
                    return;
                }
                frame::finish(&mut self.wbuf, start);
                subscription.credit = subscription.credit.saturating_sub(page.changes.len() as u64);
                subscription.cursor = page.cursor;
            }
            Err(FeedError::Expired { oldest }) => {
                let error = ErrorFrame {
                    code: ErrorCode::CursorExpired,
                    message: format!("oldest cursor: {oldest}"),
                };
                self.closing = Some(Closing::error(error, request_id));
            }
            Err(error) => {
                let error = ErrorFrame { code: ErrorCode::Unavailable, message: error.to_string() };
                self.closing = Some(Closing::error(error, request_id));
            }
        }
    }

    /// Writes the RESPONSE frame of a finished request: the shards' encoded answers, copied.
    /// An answer that would take the frame past the largest frame is replaced by
    /// `payload_too_large`.
    fn respond(&mut self, done: Done) {
        let start = frame::begin(&mut self.wbuf, Kind::Response, done.request_id);
        let answers = &done.answers;
        // A request has at most `COMMANDS_PER_FRAME_MAX` commands, one answer each.
        put_u16(&mut self.wbuf, u16::try_from(answers.len()).unwrap_or(u16::MAX));
        let fits = |buf: &Vec<u8>, more: usize| {
            buf.len() + more - start <= LENGTH_PREFIX_SIZE_BYTES + FRAME_SIZE_CAP_BYTES
        };
        if fits(&self.wbuf, answers.bytes().len()) {
            self.wbuf.extend_from_slice(answers.bytes());
        } else {
            let too_large = Refused::plain(ErrorCode::PayloadTooLarge);
            for index in 0..answers.len() {
                let answer = answers.answer(index);
                if fits(&self.wbuf, answer.len()) {
                    self.wbuf.extend_from_slice(answer);
                } else {
                    put_refused(&mut self.wbuf, &too_large);
                }
            }
        }
        frame::finish(&mut self.wbuf, start);
        let buffered = self.wbuf.len() - self.written;
        if buffered > self.write_buffered_max {
            self.write_buffered_max = buffered;
            self.app.metrics.write_buffered_bytes_max.fetch_max(buffered as u64, Ordering::Relaxed);
        }
    }

    /// Which timeout, if any, has passed.
    fn timed_out(&self, busy: bool) -> Option<Timeout> {
        let config = &self.app.config;
        let now = Instant::now();
        if self.written < self.wbuf.len()
            && now.duration_since(self.last_write_progress) >= config.write_stall_timeout
        {
            return Some(Timeout::WriteStall);
        }
        if let Some(since) = self.partial_since {
            if !self.rbuf.is_empty() && now.duration_since(since) >= config.read_timeout {
                return Some(Timeout::Read);
            }
        }
        let idle = !busy && self.rbuf.is_empty() && self.written == self.wbuf.len();
        if idle && now.duration_since(self.last_activity) >= config.idle_timeout {
            return Some(Timeout::Idle);
        }
        None
    }

    /// Flushes what is buffered (unless aborting), says goodbye at shutdown, then closes
    /// lingering: our side is shut, the peer's last bytes are read and dropped for a moment,
    /// so the peer gets the ERROR frame before the connection goes away.
    async fn close(&mut self) -> io::Result<()> {
        if matches!(self.closing, Some(Closing::Abort | Closing::Handoff)) {
            return Ok(());
        }
        if matches!(self.closing, Some(Closing::Stopping)) {
            let goodbye =
                ErrorFrame { code: ErrorCode::Unavailable, message: "node stopping".into() };
            let start = frame::begin(&mut self.wbuf, Kind::Error, 0);
            goodbye.encode(&mut self.wbuf);
            frame::finish(&mut self.wbuf, start);
        }
        let stall = self.app.config.write_stall_timeout;
        let flushed = tokio::time::timeout(stall, async {
            self.write.write_all(&self.wbuf[self.written..]).await?;
            self.write.shutdown().await
        })
        .await;
        self.wbuf.clear();
        self.written = 0;
        if !matches!(flushed, Ok(Ok(()))) || matches!(self.closing, Some(Closing::Eof)) {
            return Ok(());
        }
        let mut drained = 0;
        let mut sink = [0u8; 8192];
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_SIZE_MAX_BYTES {
                match self.read.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => drained += read,
                }
            }
        })
        .await;
        Ok(())
    }
}

/// Decodes a SUBSCRIBE or CREDIT payload.
fn decode_control(kind: Kind, payload: &[u8]) -> Result<Control, ErrorFrame> {
    if kind == Kind::Credit {
        return decode_credit(payload)
            .map(Control::Credit)
            .map_err(|error| bad_request(format!("CREDIT: {error}")));
    }
    let subscribe =
        Subscribe::decode(payload).map_err(|error| bad_request(format!("SUBSCRIBE: {error}")))?;
    Ok(Control::Subscribe {
        cursor: subscribe.cursor.to_owned(),
        partition: subscribe.partition.map(str::to_owned),
        credit: subscribe.credit,
    })
}

/// A page as a CHANGES payload: each change copied in its encoded form, shared by every
/// subscriber, beside the cursor after it, written straight into the frame.
fn write_changes(page: &FeedPage, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut writer = ChangesWriter::begin(&page.cursor.to_string(), buf)?;
    let mut cursor_text = Vec::with_capacity(64);
    let mut walk = page.walk();
    while let Some((cursor, change)) = walk.next() {
        cursor_text.clear();
        cursor.write_text(&mut cursor_text);
        writer.push(&cursor_text, change.change.encoded())?;
    }
    writer.finish();
    Ok(())
}

/// The subscription's read, if one runs (else never resolves; its select arm is then off).
async fn poll_feed(read: &mut Option<FeedRead<'_>>) -> Result<FeedPage, FeedError> {
    match read {
        Some(read) => read.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Counts a bound connection's ops as its shard's own or forwarded.
fn count_routes(bound: Option<(usize, &BoundShard)>, ops: &[Op], shards: usize) {
    let Some((shard, counters)) = bound else { return };
    let local = ops.iter().filter(|op| shard_of(op.partition(), shards) == shard).count() as u64;
    BinaryMetrics::add(&counters.local_commands_total, local);
    BinaryMetrics::add(&counters.forwarded_commands_total, ops.len() as u64 - local);
}

/// Runs one request's ops as one `Runtime::execute_encoded`: one message per shard, answered
/// in the wire format on the shard threads.
async fn execute(runtime: &Runtime, request_id: u64, ops: Vec<Op>) -> Done {
    Done { request_id, answers: runtime.execute_encoded(ops, &WIRE_ANSWERS).await }
}

/// Answers in the binary protocol's format, written by the shards from their receipts.
#[derive(Debug)]
struct WireAnswers;

static WIRE_ANSWERS: WireAnswers = WireAnswers;

impl Encoder for WireAnswers {
    fn outcome(&self, outcome: &OutcomeRef<'_>, buf: &mut Vec<u8>) {
        encode_outcome_ref(outcome, buf);
    }

    fn result(&self, result: &OpResult, buf: &mut Vec<u8>) {
        encode_op_result(result, buf);
    }
}

fn bad_request(message: String) -> ErrorFrame {
    ErrorFrame { code: ErrorCode::BadRequest, message }
}

fn frame_error(error: FrameError) -> ErrorFrame {
    let code = match error {
        FrameError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::BadRequest,
    };
    ErrorFrame { code, message: error.to_string() }
}

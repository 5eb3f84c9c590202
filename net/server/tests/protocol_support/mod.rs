//! Test support for the binary protocol tests: a server on 127.0.0.1 port 0 over in-memory
//! logs (fake clock, a gate that holds commits back, a switch that fails the log), and a raw
//! frame-level connection for the malformed-input tests.
//! Invariant: nothing here talks to any address but the loopback one the server bound.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::{Engine, EngineLimits};
use bookd_protocol::frame::{self, Kind};
use bookd_protocol::limits::FRAME_SIZE_CAP_BYTES;
use bookd_protocol::{ErrorFrame, Hello, HelloOk};
use bookd_runtime::{LogError, MemoryLog, Runtime, RuntimeConfig, ShardLog};
use bookd_server::http::{NodeInfo, PrimaryNode};
use bookd_server::{serve_binary, BinaryApp, BinaryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Unix ms the fake clock starts at.
pub const T0: u64 = 1_700_000_000_000;
/// Bound on every wait in these tests (a hang fails instead of blocking CI).
pub const WAIT: Duration = Duration::from_secs(30);

/// Holds every shard's commit while closed; fails every commit while `failing`.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    failing: AtomicBool,
    waiting: AtomicU64,
}

impl Gate {
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }
}

struct GatedLog {
    inner: MemoryLog,
    gate: Arc<Gate>,
}

impl ShardLog for GatedLog {
    fn append(
        &mut self,
        kind: u8,
        epoch: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Result<u64, LogError> {
        self.inner.append(kind, epoch, timestamp_ms, payload)
    }
    fn commit(&mut self) -> Result<u64, LogError> {
        if self.gate.closed.load(Ordering::SeqCst) {
            self.gate.waiting.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + WAIT;
            while self.gate.closed.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.gate.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        if self.gate.failing.load(Ordering::SeqCst) {
            return Err(LogError::Failed("test: log failure".into()));
        }
        self.inner.commit()
    }
    fn sync(&mut self) -> Result<u64, LogError> {
        self.inner.sync()
    }
    fn last_lsn(&self) -> u64 {
        self.inner.last_lsn()
    }
    fn durable_lsn(&self) -> u64 {
        self.inner.durable_lsn()
    }
    fn bytes_since_snapshot(&self) -> u64 {
        self.inner.bytes_since_snapshot()
    }
    fn write_snapshot(&mut self, lsn: u64, state: &[u8]) -> Result<(), LogError> {
        self.inner.write_snapshot(lsn, state)
    }
}

/// How to start a test server.
pub struct Options {
    pub shards: usize,
    pub token: Option<String>,
    pub config: BinaryConfig,
    pub node: Arc<dyn NodeInfo>,
    pub queue_messages_max: usize,
    pub limits: EngineLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 2,
            token: None,
            config: BinaryConfig::default(),
            node: Arc::new(PrimaryNode),
            queue_messages_max: 4096,
            limits: EngineLimits::default(),
        }
    }
}

/// A running binary server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub clock: Arc<AtomicU64>,
    pub gate: Arc<Gate>,
    pub app: Arc<BinaryApp>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(options: Options) -> TestServer {
        let clock = Arc::new(AtomicU64::new(T0));
        let gate = Arc::new(Gate::default());
        let clock_now = clock.clone();
        let config = RuntimeConfig {
            clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
            // A failed log stops the shard (its replies become `unavailable`); the test goes on.
            fatal: Arc::new(|reason| eprintln!("fatal in test (expected when failing): {reason}")),
            queue_messages_max: options.queue_messages_max,
            ..RuntimeConfig::default()
        };
        let shards = (0..options.shards)
            .map(|_| {
                let log = GatedLog { inner: MemoryLog::default(), gate: gate.clone() };
                (Engine::new(options.limits), Box::new(log) as Box<dyn ShardLog>)
            })
            .collect();
        let runtime = Arc::new(Runtime::start(config, shards).unwrap());
        let app = Arc::new(
            BinaryApp::new(runtime, options.token, options.node).with_config(options.config),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_binary(listener, app.clone(), async {
            let _ = stopped.await;
        }));
        TestServer { addr, clock, gate, app, stop: Some(stop), task: Some(task) }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn advance_clock(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (bounded) until `serve_binary` has returned.
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.gate.open();
        self.stop();
    }
}

/// A frame as received: kind, request id, payload.
pub type Received = (Kind, u64, Vec<u8>);

/// A connection that speaks raw frames.
pub struct Raw {
    pub stream: TcpStream,
    rbuf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream, rbuf: Vec::new() }
    }

    /// Connects and completes the handshake.
    pub async fn hello(addr: SocketAddr, token: &str) -> (Raw, HelloOk) {
        let mut raw = Raw::connect(addr).await;
        let mut payload = Vec::new();
        Hello { token: token.as_bytes(), client_name: "raw" }.encode(&mut payload).unwrap();
        raw.send(Kind::Hello, 1, &payload).await;
        let (kind, id, payload) = raw.recv().await.expect("HELLO answered");
        assert_eq!((kind, id), (Kind::HelloOk, 1), "{:?}", ErrorFrame::decode(&payload));
        (raw, HelloOk::decode(&payload).unwrap())
    }

    pub async fn send(&mut self, kind: Kind, request_id: u64, payload: &[u8]) {
        let mut buf = Vec::new();
        frame::encode(&mut buf, kind, request_id, payload);
        self.send_bytes(&buf).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` once the server closed the connection.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            if let Some((frame, used)) = frame::parse(&self.rbuf, FRAME_SIZE_CAP_BYTES).unwrap() {
                let received = (frame.kind, frame.request_id, frame.payload.to_vec());
                self.rbuf.drain(..used);
                return Some(received);
            }
            let mut chunk = vec![0; 64 * 1024];
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("server answers in time");
            match read {
                Ok(0) | Err(_) => {
                    assert!(self.rbuf.is_empty(), "connection closed mid-frame");
                    return None;
                }
                Ok(read) => self.rbuf.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// Expects an ERROR frame with `code`, then the connection closed.
    pub async fn expect_error_and_close(&mut self, code: bookd_protocol::ErrorCode) -> ErrorFrame {
        let (kind, _, payload) = self.recv().await.expect("an ERROR frame");
        assert_eq!(kind, Kind::Error);
        let error = ErrorFrame::decode(&payload).unwrap();
        assert_eq!(error.code, code, "{}", error.message);
        assert!(self.recv().await.is_none(), "connection closed after the ERROR frame");
        error
    }
}

//! Test support shared by http.rs and protocol.rs: a server on 127.0.0.1 port 0 over in-memory
//! shard logs, with a fake clock and a gate that stalls the shards ([`Server`]); `http` serves
//! the HTTP API over it and adds a raw-TCP HTTP/1.1 client, `binary` serves the binary protocol
//! and adds a raw frame-level connection for the malformed-input tests.
//! Invariant: nothing here talks to any address but the loopback one the server bound.
#![allow(dead_code)]

pub mod binary;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookd_engine::{Engine, EngineLimits};
use bookd_runtime::testing::{Gate, TestLog};
use bookd_runtime::{Runtime, RuntimeConfig, ShardLog};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Unix ms the fake clock starts at.
pub const T0: u64 = 1_700_000_000_000;
/// Bound on every wait in these tests (a hang fails instead of blocking CI).
pub const WAIT: Duration = Duration::from_secs(30);

/// Where a closed [`Gate`] holds a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// At the shard's next read of the clock (each batch and each idle tick reads it once):
    /// every shard stops, idle or not, and requests queue up behind it unapplied.
    Clock,
    /// In the commit of a batch: only a shard with a write stops, after applying it and before
    /// its replies go out; the other shards go on.
    Commit,
}

/// The shards of a test server.
struct Shards {
    count: usize,
    queue_messages_max: usize,
    limits: EngineLimits,
    stall: Stall,
}

/// A running server of `App` (an HTTP or a binary app); `clock` is its fake wall clock (Unix
/// ms), `gate` can stall its shards.
pub struct Server<App> {
    pub addr: SocketAddr,
    pub clock: Arc<AtomicU64>,
    pub gate: Arc<Gate>,
    pub runtime: Arc<Runtime>,
    pub app: Arc<App>,
    /// Each shard's log, shared with the shard: its records are what the shard wrote.
    pub logs: Vec<TestLog>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl<App> Server<App> {
    /// Starts the shards, the app `app` builds over their runtime, and `serve` with it on a
    /// fresh listener until [`Server::stop`].
    async fn launch<Serve, Served>(
        shards: Shards,
        app: impl FnOnce(Arc<Runtime>) -> Arc<App>,
        serve: Serve,
    ) -> Server<App>
    where
        Serve: FnOnce(TcpListener, Arc<App>, oneshot::Receiver<()>) -> Served,
        Served: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let clock = Arc::new(AtomicU64::new(T0));
        let gate = Arc::new(Gate::default());
        let (clock_now, clock_gate, fatal_gate) = (clock.clone(), gate.clone(), gate.clone());
        let stall = shards.stall;
        let config = RuntimeConfig {
            clock: Arc::new(move || {
                if stall == Stall::Clock {
                    clock_gate.pass();
                }
                clock_now.load(Ordering::SeqCst)
            }),
            // A failed log stops the shard (its replies become `unavailable`) and the test goes
            // on; any other fatal error fails it.
            fatal: Arc::new(move |reason| {
                assert!(fatal_gate.is_failing(), "fatal in test: {reason}");
                eprintln!("fatal in test (expected when failing): {reason}");
            }),
            queue_messages_max: shards.queue_messages_max,
            ..RuntimeConfig::default()
        };
        let logs: Vec<TestLog> = (0..shards.count)
            .map(|_| match stall {
                Stall::Clock => TestLog::default(),
                Stall::Commit => TestLog::default().with_gate(gate.clone()),
            })
            .collect();
        let shard_logs = logs
            .iter()
            .map(|log| (Engine::new(shards.limits), Box::new(log.clone()) as Box<dyn ShardLog>))
            .collect();
        let runtime = Arc::new(Runtime::start(config, shard_logs).unwrap());
        let app = app(runtime.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app.clone(), stopped));
        Server { addr, clock, gate, runtime, app, logs, stop: Some(stop), task: Some(task) }
    }

    pub fn advance_clock(&self, ms: u64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    /// Asks the server to stop (in-flight requests finish); see [`Server::stopped`].
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (bounded) until the listener's serve loop has returned.
    pub async fn stopped(&mut self) -> std::io::Result<()> {
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap()
    }
}

impl<App> Drop for Server<App> {
    fn drop(&mut self) {
        self.gate.open();
        self.stop();
    }
}

/// Whether the server closes `stream` (EOF or reset) within `bound`.
pub async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // a response (e.g. 408) before the close
        }
    }
}

/// Waits until `condition` holds, polling every 5 ms, for at most `bound`.
pub async fn wait_until<F, Fut>(bound: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    condition().await
}

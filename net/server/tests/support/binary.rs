//! The binary side of the test server: [`TestServer`] serves the binary protocol over the
//! shared shards (stalled in their commits, so the gate can also fail the log), and [`Raw`] is a
//! connection that speaks raw frames, for the malformed-input tests.

use std::net::SocketAddr;
use std::sync::Arc;

use bookd_engine::EngineLimits;
use bookd_protocol::frame::{self, Kind};
use bookd_protocol::limits::FRAME_SIZE_CAP_BYTES;
use bookd_protocol::{ErrorFrame, Hello, HelloOk};
use bookd_runtime::Runtime;
use bookd_server::http::{NodeInfo, PrimaryNode, Role};
use bookd_server::{serve_binary, BinaryApp, BinaryConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Server, Shards, Stall, WAIT};

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

/// A running binary server; a closed `gate` holds every shard's commit, `gate.fail()` fails it.
pub type TestServer = Server<BinaryApp>;

impl Server<BinaryApp> {
    pub async fn start(options: Options) -> TestServer {
        let shards = Shards {
            count: options.shards,
            queue_messages_max: options.queue_messages_max,
            limits: options.limits,
            stall: Stall::Commit,
        };
        let Options { token, node, config, .. } = options;
        let app = move |runtime: Arc<Runtime>| {
            // A standby's shards refuse writes, as the node sets them up.
            runtime.set_writable(node.role() == Role::Primary);
            Arc::new(BinaryApp::new(runtime, token, node).with_config(config))
        };
        Server::launch(shards, app, |listener, app, stopped| {
            serve_binary(listener, app, async {
                let _ = stopped.await;
            })
        })
        .await
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
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
        Raw::hello_bound(addr, token, None).await
    }

    /// Connects and completes a handshake that asks for `shard` (`None`: a plain connection).
    pub async fn hello_bound(addr: SocketAddr, token: &str, shard: Option<u16>) -> (Raw, HelloOk) {
        let mut raw = Raw::connect(addr).await;
        let mut payload = Vec::new();
        Hello { token: token.as_bytes(), client_name: "raw", shard }.encode(&mut payload).unwrap();
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

//! The HTTP side of the test server: [`TestServer`] serves the HTTP API over the shared shards
//! (stalled at their clock reads), and [`Client`] is a small raw-TCP HTTP/1.1 client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bookd_engine::EngineLimits;
use bookd_runtime::Runtime;
use bookd_server::http::{
    serve_http, HttpApp, HttpConfig, NodeInfo, PrimaryNode, Role, StorageInfo,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Server, Shards, Stall, WAIT};

/// How to start a test server.
pub struct Options {
    pub shards: usize,
    pub token: Option<String>,
    pub config: HttpConfig,
    pub node: Arc<dyn NodeInfo>,
    pub queue_messages_max: usize,
    /// What `/metrics` reports as the memory budget and the data directory.
    pub storage: StorageInfo,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 2,
            token: None,
            config: HttpConfig::default(),
            node: Arc::new(PrimaryNode),
            queue_messages_max: 4096,
            storage: StorageInfo::default(),
        }
    }
}

/// A running HTTP server; a closed `gate` stops every shard at its next read of the clock.
pub type TestServer = Server<HttpApp>;

impl Server<HttpApp> {
    pub async fn start(options: Options) -> TestServer {
        let shards = Shards {
            count: options.shards,
            queue_messages_max: options.queue_messages_max,
            limits: EngineLimits::default(),
            stall: Stall::Clock,
        };
        let Options { token, node, config, storage, .. } = options;
        let app = move |runtime: Arc<Runtime>| {
            // A standby's shards refuse writes, as the node sets them up.
            runtime.set_writable(node.role() == Role::Primary);
            Arc::new(HttpApp::new(runtime, token, node).with_config(config).with_storage(storage))
        };
        Server::launch(shards, app, |listener, app, stopped| {
            serve_http(listener, app, async {
                let _ = stopped.await;
            })
        })
        .await
    }

    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
}

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("not JSON ({error}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client over raw TCP.
pub struct Client {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    pub token: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, stream: None, buffer: Vec::new(), token: None }
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_string());
        self
    }

    pub async fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str) -> Response {
        self.request("POST", path, None).await
    }

    pub async fn post_json(&mut self, path: &str, body: &Value) -> Response {
        self.request("POST", path, Some(body.to_string().as_bytes())).await
    }

    pub async fn put_json(&mut self, path: &str, body: &Value) -> Response {
        self.request("PUT", path, Some(body.to_string().as_bytes())).await
    }

    pub async fn delete(&mut self, path: &str) -> Response {
        self.request("DELETE", path, None).await
    }

    /// A request with a `Content-Length` body (or none), on the kept-alive connection.
    pub async fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method != "GET" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.exchange(&bytes).await
    }

    /// Sends `bytes` as they are and reads one response (reconnecting first if needed).
    pub async fn exchange(&mut self, bytes: &[u8]) -> Response {
        if self.stream.is_none() {
            self.stream = Some(TcpStream::connect(self.addr).await.unwrap());
            self.buffer.clear();
        }
        let stream = self.stream.as_mut().unwrap();
        stream.write_all(bytes).await.unwrap();
        let response = read_response(stream, &mut self.buffer).await;
        if response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.stream = None;
        }
        response
    }
}

/// Reads one response from `stream`; `buffer` keeps bytes read past it.
pub async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Response {
    let deadline = WAIT;
    let head_end = loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            break end;
        }
        fill(stream, buffer, deadline).await;
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    buffer.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (key, value) = line.split_once(':').unwrap();
            (key.trim().to_string(), value.trim().to_string())
        })
        .collect();
    let header = |name: &str| {
        headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    };
    let body = if let Some(length) = header("content-length") {
        let length: usize = length.parse().unwrap();
        while buffer.len() < length {
            fill(stream, buffer, deadline).await;
        }
        buffer.drain(..length).collect()
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(end) = find(buffer, b"\r\n") {
                    break end;
                }
                fill(stream, buffer, deadline).await;
            };
            let size_text = String::from_utf8(buffer[..line_end].to_vec()).unwrap();
            let size = usize::from_str_radix(size_text.trim(), 16).unwrap();
            buffer.drain(..line_end + 2);
            while buffer.len() < size + 2 {
                fill(stream, buffer, deadline).await;
            }
            body.extend(buffer.drain(..size));
            buffer.drain(..2);
            if size == 0 {
                break body;
            }
        }
    } else {
        Vec::new()
    };
    Response { status, headers, body }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>, deadline: Duration) {
    let mut chunk = [0u8; 16 * 1024];
    let read = tokio::time::timeout(deadline, stream.read(&mut chunk))
        .await
        .expect("response timed out")
        .expect("read failed");
    assert!(read > 0, "connection closed before a full response");
    buffer.extend_from_slice(&chunk[..read]);
}

//! `bookd relay`: the change feed into a NATS JetStream stream, every change exactly once and in
//! order per partition.
//!
//! The relay follows `GET /v1/changes` of a node (trying each `--http` address in turn, so it
//! follows whichever of a primary and its standbys answers: they serve the same feed with the same
//! cursors) and publishes each change to `PREFIX.<partition>` with its cursor as `Nats-Msg-Id`,
//! waiting for the stream's acknowledgement before it moves on. It starts after the last message
//! the stream holds (its `Nats-Msg-Id`), or from the oldest change the node keeps when the stream
//! is empty; JetStream drops a duplicate id within its window, which covers a publish whose
//! acknowledgement was lost in a crash.
//!
//! With `--metrics ADDR` the relay serves its own figures (`GET /metrics`, Prometheus text):
//! changes published, how old the last one was when the stream acknowledged it, and whether the
//! relay is at the end of the feed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde_json::Value;

use crate::http_client;

/// What `bookd relay` is told.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub nats_url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// The nodes' HTTP addresses, tried in turn.
    pub http: Vec<String>,
    pub token: Option<String>,
}

/// The relay's figures.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Changes the stream acknowledged.
    pub published: AtomicU64,
    /// How old the last change published was (ms since its `at_ms`) when the stream took it.
    pub lag_ms: AtomicU64,
    /// 1 when the last page read was not full: the relay is at the feed's end.
    pub caught_up: AtomicU64,
    /// Reads of the feed that failed and were retried (a node down, a failover).
    pub retries: AtomicU64,
}

impl RelayMetrics {
    /// The figures as Prometheus text.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let metrics: [(&str, &str, &str, &AtomicU64); 4] = [
            (
                "bookd_relay_published_total",
                "counter",
                "Changes published to the stream and acknowledged by it.",
                &self.published,
            ),
            (
                "bookd_relay_lag_ms",
                "gauge",
                "Age of the last change published when the stream acknowledged it, in ms.",
                &self.lag_ms,
            ),
            (
                "bookd_relay_caught_up",
                "gauge",
                "1 when the relay's last read reached the end of the feed.",
                &self.caught_up,
            ),
            (
                "bookd_relay_retries_total",
                "counter",
                "Reads of the feed that failed and were tried again (a node down, a failover).",
                &self.retries,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("the node answered {status}: {body}")]
    Node { status: u16, body: String },
    #[error("the stream's last message has no Nats-Msg-Id (not written by a relay)")]
    NoMessageId,
}

fn nats<E: std::fmt::Display>(error: E) -> RelayError {
    RelayError::Nats(error.to_string())
}

/// Changes asked of the node at a time, and how long a read waits for the first one.
const PAGE_LIMIT: usize = 1000;
const WAIT_MS: u64 = 5_000;
/// Longest pause between attempts to reach a node.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Runs the relay until an error that retrying cannot mend (NATS refusing the stream, a node
/// refusing the relay's cursor for good).
pub async fn run(config: &RelayConfig, metrics: &RelayMetrics) -> Result<(), RelayError> {
    let client = async_nats::connect(&config.nats_url).await.map_err(nats)?;
    let js = jetstream::new(client);
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    let mut cursor = last_cursor(&mut stream).await?;
    eprintln!(
        "bookd relay: stream {} from {}",
        config.stream,
        cursor.as_deref().unwrap_or("the oldest change kept")
    );
    let mut node = 0usize;
    let mut backoff = Duration::from_millis(50);
    let mut published: u64 = 0;
    let mut reported = Instant::now();
    loop {
        let addr = &config.http[node % config.http.len()];
        let page = match read_page(addr, config.token.as_deref(), cursor.as_deref()).await {
            Ok(page) => page,
            Err(Retry::Elsewhere) => {
                metrics.retries.fetch_add(1, Ordering::Relaxed);
                node += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(Retry::Never(error)) => return Err(error),
        };
        backoff = Duration::from_millis(50);
        let changes = page["changes"].as_array().cloned().unwrap_or_default();
        let mut acks = Vec::with_capacity(changes.len());
        for change in &changes {
            let id = change["cursor"].as_str().unwrap_or_default().to_string();
            let partition = change["partition"].as_str().unwrap_or_default();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            let subject = format!("{}.{}", config.subject_prefix, partition);
            let payload = Bytes::from(change.to_string());
            acks.push(js.publish_with_headers(subject, headers, payload).await.map_err(nats)?);
        }
        // Every change of the page is in the stream before the relay moves past it.
        for ack in acks {
            ack.await.map_err(nats)?;
        }
        published += changes.len() as u64;
        metrics.published.store(published, Ordering::Relaxed);
        metrics.caught_up.store(u64::from(changes.len() < PAGE_LIMIT), Ordering::Relaxed);
        if let Some(last) = changes.last().and_then(|change| change["cursor"].as_str()) {
            cursor = Some(last.to_string());
            let lag_ms = now_ms()
                .saturating_sub(changes.last().and_then(|c| c["at_ms"].as_u64()).unwrap_or(0));
            metrics.lag_ms.store(lag_ms, Ordering::Relaxed);
            if reported.elapsed() >= Duration::from_secs(10) {
                eprintln!("bookd relay: {published} changes published, lag {lag_ms} ms");
                reported = Instant::now();
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// The `Nats-Msg-Id` of the stream's last message: the cursor of the last change relayed.
async fn last_cursor(stream: &mut stream::Stream) -> Result<Option<String>, RelayError> {
    let last = stream.info().await.map_err(nats)?.state.last_sequence;
    if last == 0 {
        return Ok(None);
    }
    let message = stream.get_raw_message(last).await.map_err(nats)?;
    let id =
        message.headers.get(async_nats::header::NATS_MESSAGE_ID).ok_or(RelayError::NoMessageId)?;
    Ok(Some(id.as_str().to_string()))
}

enum Retry {
    /// The node is unreachable, stopping or not serving: try the next address.
    Elsewhere,
    Never(RelayError),
}

/// One page of the feed after `cursor` (from the oldest change kept when `None`).
async fn read_page(addr: &str, token: Option<&str>, cursor: Option<&str>) -> Result<Value, Retry> {
    let (addr, token) = (addr.to_string(), token.map(str::to_owned));
    let cursor = match cursor {
        Some(cursor) => cursor.to_string(),
        None => oldest_cursor(&addr, token.as_deref()).await?,
    };
    let path = format!("/v1/changes?cursor={cursor}&limit={PAGE_LIMIT}&wait_ms={WAIT_MS}");
    let answer = tokio::task::spawn_blocking(move || {
        http_client::request(&addr, "GET", &path, token.as_deref(), None)
    })
    .await;
    match answer {
        Ok(Ok((200, body))) => serde_json::from_str(&body).map_err(|_| Retry::Elsewhere),
        // Only what retrying cannot mend stops the relay: a cursor the node no longer serves
        // (changes were lost to retention before they were relayed), or a refused token.
        Ok(Ok((status @ (401 | 410 | 422), body))) => {
            Err(Retry::Never(RelayError::Node { status, body }))
        }
        _ => Err(Retry::Elsewhere),
    }
}

/// The oldest cursor the node serves: asked with the first position of every log, which the
/// node answers, or refuses as expired naming the oldest.
async fn oldest_cursor(addr: &str, token: Option<&str>) -> Result<String, Retry> {
    let (addr, token) = (addr.to_string(), token.map(str::to_owned));
    let answer = tokio::task::spawn_blocking(move || {
        let (status, body) =
            http_client::request(&addr, "GET", "/v1/changes", token.as_deref(), None)?;
        Ok::<_, std::io::Error>((status, body, addr, token))
    })
    .await;
    let Ok(Ok((200, body, addr, token))) = answer else { return Err(Retry::Elsewhere) };
    let end: Value = serde_json::from_str(&body).map_err(|_| Retry::Elsewhere)?;
    let shards = end["cursor"].as_str().map_or(1, |cursor| cursor.split('_').count());
    let mut oldest = format!("c{}", vec!["1.0"; shards].join("_"));
    // Each refusal moves one shard to its oldest record; at most one per shard.
    for _ in 0..=shards {
        let path = format!("/v1/changes?cursor={oldest}&limit=1");
        let (addr, token) = (addr.clone(), token.clone());
        let probe = tokio::task::spawn_blocking(move || {
            http_client::request(&addr, "GET", &path, token.as_deref(), None)
        })
        .await;
        match probe {
            Ok(Ok((200, _))) => return Ok(oldest),
            Ok(Ok((410, body))) => {
                let refused: Value = serde_json::from_str(&body).map_err(|_| Retry::Elsewhere)?;
                oldest = refused["oldest"].as_str().map(str::to_owned).ok_or(Retry::Elsewhere)?;
            }
            _ => return Err(Retry::Elsewhere),
        }
    }
    Err(Retry::Elsewhere)
}

/// Connections the metrics listener serves at once; more wait in the kernel's backlog.
const METRICS_CONNECTIONS_MAX: usize = 16;

/// Serves `GET /metrics` (anything else: 404) on `listener` until the process ends.
pub async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<RelayMetrics>) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    let connections = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                let response = if request.uri().path() == "/metrics" {
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(metrics.render())))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"not found\n")))
                };
                async move { response }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            drop(permit);
        });
    }
}

//! The public HTTP/JSON API on hyper 1.x (HTTP/1.1).
//!
//! Invariant: HTTP only maps shapes. It turns requests into engine
//! [`Op`](bookd_engine::Op)s and results into the contract's statuses and bodies; every name, limit and business rule is
//! checked by the engine, so a refused request changes nothing and gets the same `invalid`
//! error here as over any other protocol. Nothing on the request path takes a lock.
//!
//! # Entry point
//! [`serve_http`] runs the listener until its `shutdown` future resolves, then stops
//! accepting, lets in-flight requests finish and returns. [`HttpApp`] holds what requests need:
//! the [`Runtime`], the bearer token, the [`NodeInfo`] (role, epoch, status extras,
//! promotion), the [`HttpConfig`] and the HTTP layer's metrics.
//!
//! # Choices where the contract is silent
//! - A known path with a method it does not serve is `404 not_found` (the contract's error
//!   table has no 405), with an `Allow` header listing the methods it does serve.
//! - Authentication comes first: with a token set, every request but `/health` (any method)
//!   without `Authorization: Bearer <token>` is `401 unauthorized`, even for unknown paths, so
//!   the route table is not disclosed to unauthenticated clients.
//! - Request bodies: unknown fields, duplicate fields and non-object bodies are `bad_request`;
//!   `null` for an optional field (`ttl_ms`, `ref`) means absent. Routes without a body
//!   (confirm, release, cancel, delete, admin) accept an empty body or `{}`. `Content-Type`
//!   is not checked. An integral number written as `5.0` is the integer 5.
//! - Listing: an unknown or repeated query parameter is `bad_request`; a `limit` that is not a
//!   decimal integer is `invalid` (field `limit`); `after=` (empty) means from the start.
//!   Path segments and query values are percent-decoded; in queries `+` is a space.
//! - `/v1/batch`: an element that is not a valid command gets its own 400 or 422 result; an
//!   unknown `op` is `invalid` (field `op`); a field that does not belong to the element's op
//!   is `bad_request`. `delete_partition` needs no `id` and ignores one. The response is 200
//!   with a `Retry-After` header when any element was `overloaded`. On a standby the whole
//!   batch is `503 standby_read_only`.
//! - `storage_full` (507) carries `"reason"` (`memory` or `disk`); `partition_has_live_holds`
//!   (409) carries `"held"`, the partition's held holds.
//! - A body that does not arrive within the body timeout is `bad_request`, and the connection
//!   is closed; so is a connection after `413`.
//! - `OpResult::Unavailable` (node stopping, log failed) is `503 unavailable`; so is a failed
//!   checkpoint or promotion.
//! - Integers out of `u64` (negative, ≥ 2^64) where the contract wants an integer are
//!   `invalid` naming the field; numbers with a fraction are `bad_request`.
//! - Slow clients: a request head (and an idle keep-alive connection) has
//!   [`HttpConfig::header_read_timeout`], a body [`HttpConfig::body_read_timeout`], a response
//!   write that makes no progress [`HttpConfig::write_stall_timeout`]; then the connection is
//!   closed. At [`HttpConfig::connections_max`] open connections the listener stops accepting
//!   (clients wait in the kernel's backlog) instead of refusing.
//! - Requests hyper itself cannot parse (a malformed request line, a head over
//!   [`limits::HEAD_SIZE_MAX_BYTES`] or [`limits::HEADERS_MAX`] headers) get hyper's own
//!   plain 400/431 response and the connection is closed; they never reach a handler.
//! - `/admin/checkpoint` answers `{"snapshots":[{"shard","lsn"}]}`; `/admin/promote` on a
//!   standby answers `{"role":"primary","epoch":n}` after the node's promotion callback.

mod auth;
mod changes;
mod handlers;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod router;
mod server;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bookd_runtime::Runtime;

pub use auth::constant_time_eq;
pub use handlers::handle;
pub use server::serve_http;

pub use bookd_protocol::Role;
pub use bookd_replication::PromoteError;

/// The future of a promotion: the new epoch once the node accepts writes.
pub type PromoteFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, PromoteError>> + Send + 'a>>;

/// What the HTTP layer needs to know about the node around it. Replication implements it; a
/// node without replication uses [`PrimaryNode`].
pub trait NodeInfo: Send + Sync + std::fmt::Debug {
    /// The node's current role. On a standby the shards are not writable and refuse writes
    /// (`503 standby_read_only`); the node sets them up so.
    fn role(&self) -> Role;

    /// The node's epoch; by default the runtime's (which promotion raises).
    fn epoch(&self, runtime: &Runtime) -> u64 {
        runtime.epoch()
    }

    /// Fields added to `/v1/status`: standbys and their lag on a primary, the primary and the
    /// lag on a standby. Keys `role`, `epoch` and `shards` are the HTTP layer's own.
    fn status_extras(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut extras = serde_json::Map::new();
        if self.role() == Role::Primary {
            extras.insert("standbys".into(), serde_json::Value::Array(Vec::new()));
        }
        extras
    }

    /// Appends the node's own metrics (replication) to `/metrics`, Prometheus text format.
    fn render_metrics(&self, _out: &mut String) {}

    /// Turns a standby into the primary; called only when [`NodeInfo::role`] is `Standby`.
    fn promote(&self) -> PromoteFuture<'_> {
        Box::pin(async { Err(PromoteError::AlreadyPrimary) })
    }
}

/// A node without replication: always the primary.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrimaryNode;

impl NodeInfo for PrimaryNode {
    fn role(&self) -> Role {
        Role::Primary
    }
}

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most connections open at once; the listener stops accepting at the bound.
    pub connections_max: usize,
    /// Time a client has to send a request head, also when the connection waits idle for the
    /// next request (keep-alive idle timeout).
    pub header_read_timeout: Duration,
    /// Time a client has to send a request body once its head has arrived.
    pub body_read_timeout: Duration,
    /// Time a response write may make no progress (the client does not read) before the
    /// connection is closed.
    pub write_stall_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connections_max: limits::CONNECTIONS_MAX_DEFAULT,
            header_read_timeout: limits::HEADER_READ_TIMEOUT_DEFAULT,
            body_read_timeout: limits::BODY_READ_TIMEOUT_DEFAULT,
            write_stall_timeout: limits::WRITE_STALL_TIMEOUT_DEFAULT,
        }
    }
}

/// The node's storage limits as `/metrics` reports them.
#[derive(Debug, Clone)]
pub struct StorageInfo {
    /// The node's memory budget (`--memory-max`), in bytes; `u64::MAX`: no limit.
    pub memory_max_bytes: u64,
    /// The data directory, whose filesystem's free space is reported; `None` for a node
    /// without one (in-memory logs).
    pub data_dir: Option<PathBuf>,
}

impl Default for StorageInfo {
    fn default() -> Self {
        StorageInfo { memory_max_bytes: u64::MAX, data_dir: None }
    }
}

/// Everything a request needs: shared by every connection, read-only after start.
pub struct HttpApp {
    runtime: Arc<Runtime>,
    feed: Arc<bookd_feed::Feed>,
    token: Option<String>,
    node: Arc<dyn NodeInfo>,
    config: HttpConfig,
    storage: StorageInfo,
    metrics: metrics::HttpMetrics,
    /// `GET /openapi.json`'s body, for this node's token setting.
    openapi: bytes::Bytes,
}

impl std::fmt::Debug for HttpApp {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApp")
            .field("runtime", &self.runtime)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("node", &self.node)
            .field("config", &self.config)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl HttpApp {
    /// An app over `runtime`; with `token`, every route but `/health` needs
    /// `Authorization: Bearer <token>`. An empty token counts as none.
    pub fn new(runtime: Arc<Runtime>, token: Option<String>, node: Arc<dyn NodeInfo>) -> Self {
        let token = token.filter(|token| !token.is_empty());
        let shards = runtime.shards();
        HttpApp {
            feed: Arc::new(bookd_feed::Feed::new(runtime.clone())),
            runtime,
            openapi: openapi::document(token.is_some(), shards),
            token,
            node,
            config: HttpConfig::default(),
            storage: StorageInfo::default(),
            metrics: metrics::HttpMetrics::default(),
        }
    }

    /// The OpenAPI document of this node.
    pub fn openapi(&self) -> bytes::Bytes {
        self.openapi.clone()
    }

    /// The same app reporting these storage limits.
    pub fn with_storage(mut self, storage: StorageInfo) -> Self {
        self.storage = storage;
        self
    }

    /// The same app, serving `feed` (the node shares one with the binary listener).
    pub fn with_feed(mut self, feed: Arc<bookd_feed::Feed>) -> Self {
        self.feed = feed;
        self
    }

    /// The same app with other server settings.
    pub fn with_config(mut self, config: HttpConfig) -> Self {
        self.config = config;
        self
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The node's change feed.
    pub fn feed(&self) -> &Arc<bookd_feed::Feed> {
        &self.feed
    }

    pub fn node(&self) -> &Arc<dyn NodeInfo> {
        &self.node
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    pub fn storage(&self) -> &StorageInfo {
        &self.storage
    }

    pub fn metrics(&self) -> &metrics::HttpMetrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let runtime = Runtime::start(
            bookd_runtime::RuntimeConfig::default(),
            vec![(
                bookd_engine::Engine::default(),
                Box::new(bookd_runtime::MemoryLog::default()) as Box<dyn bookd_runtime::ShardLog>,
            )],
        )
        .unwrap();
        let app =
            HttpApp::new(Arc::new(runtime), Some("s3cret-token".into()), Arc::new(PrimaryNode));
        let shown = format!("{app:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

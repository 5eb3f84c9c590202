//! bookd's server: the node assembly and both of its front doors, the HTTP/JSON API over
//! hyper 1.x and the binary protocol's listener.
//! Invariant: the network layer only maps shapes; every decision about state is the engine's.
//!
//! # Layout
//! - [`http`]: the HTTP/JSON API: listener with a connection limit and graceful shutdown
//!   (`http/server.rs`), routing (`http/router.rs`), JSON request parsing and response encoding
//!   (`http/json.rs`), one handler per route (`http/handlers.rs`), bearer-token check
//!   (`http/auth.rs`), Prometheus text (`http/metrics.rs`), the OpenAPI 3.1 document
//!   (`http/openapi.rs`, `http/openapi.json`), limits (`http/limits.rs`).
//! - [`binary`]: the binary protocol's listener and per-connection loop (the codec is
//!   `bookd-protocol`'s).
//! - [`node`]: the node assembly: data directory, recovery before any port opens, shards,
//!   listeners, clean stop on SIGTERM/SIGINT.
//! - [`listener`]: the accept loop both servers share (connection limit, clean stop).
//! - [`replication`]: standbys over the binary port, the standby's TCP connector, and the
//!   replication role, status and promotion as the HTTP layer sees them.
//! - [`system`]: physical memory and free disk space, asked of the operating system.

pub mod binary;
pub mod http;
pub mod listener;
pub mod node;
pub mod replication;
pub mod system;

pub use binary::{serve_binary, BinaryApp, BinaryConfig, BinaryMetrics, BoundShard};

//! bookd's network edge: the public HTTP/JSON API over hyper 1.x.
//! Invariant: the network layer only maps shapes; every decision about state is the engine's.
//!
//! # Layout
//! - [`http`]: the HTTP/JSON API: listener with a connection limit and graceful shutdown
//!   (`http/server.rs`), routing (`http/router.rs`), JSON request parsing and response encoding
//!   (`http/json.rs`), one handler per route (`http/handlers.rs`), bearer-token check
//!   (`http/auth.rs`), Prometheus text (`http/metrics.rs`), the OpenAPI 3.1 document
//!   (`http/openapi.rs`, `http/openapi.json`), limits (`http/limits.rs`).
//! - [`node`]: the node assembly: data directory, recovery before any port opens, shards,
//!   listeners, clean stop on SIGTERM/SIGINT.
//! - [`cli`]: the `bookd` command line (`src/bin/bookd.rs` only calls it).
//! - [`bench`]: `bookd bench`: the client as a load-generator driver, the embedded node.
//! - [`listener`]: the accept loop both servers share (connection limit, clean stop).
//! - [`inspect`]: `bookd wal verify` / `bookd wal dump`.
//! - [`http_client`]: a minimal blocking HTTP client for the CLI and tests.
//! - [`protocol`]: the binary protocol (docs/protocol.md): frames, codec, server.
//! - [`client`]: the async Rust client of the binary protocol (pool, batching, retries).
//! - [`replication`]: standbys over the binary port, the standby's TCP connector, and the
//!   replication role, status and promotion as the HTTP layer sees them.
//! - [`system`]: physical memory and free disk space, asked of the operating system.

pub mod bench;
pub mod cli;
pub mod client;
pub mod http;
pub mod http_client;
pub mod inspect;
pub mod listener;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod system;

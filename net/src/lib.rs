//! bookd's network edge: the HTTP/JSON API of ../shared/CONTRACT.md over hyper 1.x.
//! Invariant: the network layer only maps shapes; every decision about state is the engine's.
//!
//! # Layout
//! - [`http`]: the HTTP/JSON API: listener with a connection limit and graceful shutdown
//!   (`http/server.rs`), routing (`http/router.rs`), JSON request parsing and response encoding
//!   (`http/json.rs`), one handler per route (`http/handlers.rs`), bearer-token check
//!   (`http/auth.rs`), Prometheus text (`http/metrics.rs`), the OpenAPI 3.1 document
//!   (`http/openapi.rs`, `http/openapi.json`), limits (`http/limits.rs`).

pub mod http;

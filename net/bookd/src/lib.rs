//! The `bookd` command line: `serve`, `standby`, `promote`, `status`, `relay`, `wal` and `bench`.
//! The binary (`src/main.rs`) only parses and calls [`cli::run`]; each subcommand calls into
//! the crates that do the work (`bookd-server` for a node, `bookd-bench` for `bench`).
//!
//! # Layout
//! - [`cli`]: flags (each with a `BOOKD_*` environment equivalent) and the subcommands.
//! - [`inspect`]: `bookd wal verify` / `bookd wal dump`.
//! - [`http_client`]: a minimal blocking HTTP client for `status`, `promote`, `relay` and tests.
//! - [`relay`]: `bookd relay`, the change feed into NATS JetStream.

pub mod cli;
pub mod http_client;
pub mod inspect;
pub mod relay;

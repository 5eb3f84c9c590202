//! bookd's workload generators: the workloads of docs/WORKLOADS.md as seeded, reusable setup
//! commands and closed-loop client state machines. Same seed, same commands, on every machine.
//!
//! The criterion benchmarks (`benches/`) apply them straight to an engine; the network load
//! generator sends them over connections. Both drive a [`ClientLoop`] the same way:
//!
//! ```
//! use bookd_bench::Workload;
//! use bookd_engine::Engine;
//!
//! let workload = Workload::FlashSale;
//! let mut engine = Engine::default();
//! for command in workload.setup() {
//!     engine.apply(0, &command).unwrap();
//! }
//! let mut client = workload.client(42, 0);
//! for _ in 0..10 {
//!     let result = engine.apply(0, client.next_command());
//!     client.on_result(&result);
//! }
//! assert_eq!(client.counters().confirmed, 5);
//! ```
//!
//! # Layout
//! - `rng`: [`SplitMix64`], the small seeded generator every random choice comes from (from
//!   bookd-testkit, the one the crates' seeded tests use).
//! - `workload`: [`Workload`], its constants, names and setup commands ([`Setup`]).
//! - `client`: [`ClientLoop`], one closed-loop client, and its [`Counters`].
//! - `in_memory`: [`EngineRun`], many clients round robin against one in-memory engine.
//! - [`bookd`]: bookd seen by the load generator: the binary-protocol client as a
//!   [`load::Driver`], and the node `bookd bench` runs against without `--addr` (embedded, or
//!   with `--pin` a `bookd serve` process on a CPU of its own).
//! - [`load`]: the network load generator of `bookd bench` (closed and open loop over a
//!   [`load::Driver`], HDR histograms, report and JSON, Redis and PostgreSQL peers, chart,
//!   `--pin`'s CPU placement and node CPU time).
//!
//! # Invariants
//! Every command a client yields is valid and names only resources its workload's setup creates;
//! hold ids are fresh (a client's prefix, then a sequence number that only grows); a client
//! yields its next command only after it was told the result of the previous one.

pub mod bookd;
mod client;
mod in_memory;
pub mod load;
mod rng;
mod workload;

pub use client::{ClientLoop, Counters, Phase};
pub use in_memory::{EngineRun, RUN_START_MS};
pub use rng::SplitMix64;
pub use workload::{Setup, Workload, HOLD_TTL_MS, SELL_OUT_SKUS, SELL_OUT_UNITS};

//! bookd's shared test scaffolding, one copy of each helper the crates' tests (and the workload
//! generator) use: [`SplitMix64`], the small seeded generator every random choice comes from,
//! and [`block_on`], which drives a future on the calling thread without an async runtime.
//!
//! No dependency on any other bookd crate, so every crate, even the WAL, can dev-depend on it.

mod block_on;
mod rng;

pub use block_on::block_on;
pub use rng::SplitMix64;

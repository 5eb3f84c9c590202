//! The seeded generator every random choice of a workload comes from; it lives in bookd-testkit,
//! where the crates' seeded tests use the same one.

pub use bookd_testkit::SplitMix64;

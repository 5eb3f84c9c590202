//! bookd benchmarks (see benches/).

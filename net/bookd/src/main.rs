//! The `bookd` binary: parses the command line and hands over to `bookd::cli`.

use clap::Parser;

/// mimalloc: the engine keeps every hold for ever, so most allocations carve fresh memory, where
/// glibc malloc spends ~100 instructions a call; mimalloc measured +26-35% engine throughput
/// (docs/PERFORMANCE.md, "Engine").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bookd::cli::run(bookd::cli::Cli::parse())
}

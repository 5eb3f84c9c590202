//! The `bookd` binary: parses the command line and hands over to `bookd_net::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    bookd_net::cli::run(bookd_net::cli::Cli::parse())
}

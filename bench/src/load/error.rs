//! [`BenchError`]: what stopped `bookd bench`, a run, a peer or a chart. Redis's, PostgreSQL's
//! and the embedded node's own failures are their modules' errors, carried as they are.

use std::path::PathBuf;

use tokio::task::JoinError;

use super::cpu::CpuError;
use super::postgres::PostgresError;
use super::redis::RedisError;
use super::windows::WindowsError;
use crate::bookd::BookdError;

/// Why a bench did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `--duration` and `--interval` do not lay out windows.
    #[error(transparent)]
    Windows(#[from] WindowsError),
    #[error("--timeout must be longer than zero")]
    ZeroTimeout,
    #[error("--rate {0} must be a positive number of commands per second")]
    Rate(f64),
    #[error("--compare: unknown system {0:?}")]
    UnknownPeer(String),
    #[error("histogram: {0}")]
    HistogramBounds(#[from] hdrhistogram::CreationError),
    #[error("histogram: {0}")]
    HistogramMerge(#[from] hdrhistogram::AdditionError),
    /// A client panicked while it held a recorder shard.
    #[error("a client panicked")]
    ClientPanicked,
    #[error("client task: {0}")]
    ClientTask(#[source] JoinError),
    #[error("setup task: {0}")]
    SetupTask(#[source] JoinError),
    /// A driver's setup was given a command other than `put_resource` (the op named).
    #[error("setup sent {0}")]
    SetupCommand(&'static str),
    /// A chart could not be drawn into `path`.
    #[error("plot {}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
    #[error("temp dir: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("no free port: {0}")]
    NoFreePort(#[source] std::io::Error),
    /// The port of the listener bound to find a free one.
    #[error(transparent)]
    PortUnknown(std::io::Error),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error(transparent)]
    Bookd(#[from] BookdError),
    /// `--pin`: the CPUs, or the node's CPU time.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// `--pin` against `--addr` without the node's process to measure.
    #[error(
        "--pin with --addr needs --node-pid PID: the node's process, whose CPU time is measured"
    )]
    PinWithoutNodePid,
    #[error("--node-pid is only for --pin")]
    NodePidWithoutPin,
    #[error(
        "--node-pid is only for a node at --addr (without --addr, --pin starts the node itself)"
    )]
    NodePidWithoutAddr,
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The program to run the node process with (`current_exe`).
    #[error("the bookd binary to run the node with: {0}")]
    CurrentExe(#[source] std::io::Error),
}

//! `bookd bench`: bookd's binary-protocol [`Client`] as a load-generator [`Driver`], and the
//! embedded node the bench runs against when no `--addr` is given (a temporary data directory,
//! durable unless `--relaxed`, ports 0, stopped and deleted at the end).
//!
//! Invariant: every closed-loop client gets a handle pinned to one connection, so the clients
//! of a connection share its frames; nothing here decides an outcome, it only maps results.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::load::{self, Answer, BenchArgs, BenchError, Driver};
use bookd_engine::Command;
use bookd_engine::Op;

use bookd_client::{Client, ClientConfig, ClientError};
use bookd_server::node::{Bound, Node, NodeConfig, NodeError};
use tokio::task::JoinError;

/// Relaxed durability of the embedded node: the log is synced every second, as Redis's
/// `appendfsync everysec`.
pub const RELAXED_SYNC_INTERVAL_MS: u64 = 1_000;

/// What went wrong with bookd: the embedded node, the connection, or the setup.
#[derive(Debug, thiserror::Error)]
pub enum BookdError {
    /// The setup's batch failed as a whole.
    #[error(transparent)]
    Setup(ClientError),
    /// A setup command failed (`command`, debug-printed).
    #[error("setup {command}: {source}")]
    SetupCommand { command: String, source: ClientError },
    #[error("embedded node: {0}")]
    OpenTask(#[source] JoinError),
    #[error("embedded node: {0}")]
    Open(#[source] NodeError),
    #[error("embedded node did not start")]
    NotStarted,
    #[error(transparent)]
    Serve(NodeError),
    #[error(transparent)]
    ServeTask(JoinError),
    #[error("{addr}: {source}")]
    Connect { addr: String, source: ClientError },
}

/// bookd seen by the load generator.
#[derive(Debug, Clone)]
pub struct BookdDriver {
    client: Client,
}

impl BookdDriver {
    pub fn new(client: Client) -> BookdDriver {
        BookdDriver { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// A client error as the bench's answer: contract refusals are refusals, a call past its
/// timeout is unanswered, the rest failures.
fn answer<T>(result: Result<T, ClientError>) -> Answer {
    match result {
        Ok(_) => Answer::Ok,
        Err(ClientError::Refused(refused)) => Answer::Refused(refused.code.as_str()),
        Err(ClientError::Timeout) => Answer::TimedOut,
        Err(error) => Answer::Failed(error.to_string()),
    }
}

impl Driver for BookdDriver {
    fn for_client(&self, client: usize) -> Self {
        BookdDriver { client: self.client.pinned(client) }
    }

    async fn execute(&self, command: &Command) -> Answer {
        let client = &self.client;
        match command {
            Command::Hold(hold) => {
                let mut items: [(&str, u64); bookd_engine::limits::HOLD_ITEMS_MAX] =
                    [("", 0); bookd_engine::limits::HOLD_ITEMS_MAX];
                let count = hold.items.len().min(items.len());
                for (slot, item) in items.iter_mut().zip(&hold.items) {
                    *slot = (item.resource.as_str(), item.quantity);
                }
                let reference = hold.reference.as_deref();
                answer(
                    client
                        .hold(&hold.partition, &hold.hold, &items[..count], hold.ttl_ms, reference)
                        .await,
                )
            }
            Command::Confirm(c) => answer(client.confirm(&c.partition, &c.hold).await),
            Command::Release(c) => answer(client.release(&c.partition, &c.hold).await),
            Command::Cancel(c) => answer(client.cancel(&c.partition, &c.hold).await),
            Command::Extend(c) => answer(client.extend(&c.partition, &c.hold, c.ttl_ms).await),
            Command::PutResource(_) => answer(client.call(&Op::Command(command.clone())).await),
            // No workload deletes; a driver still answers one faithfully.
            Command::DeletePartition(c) => answer(client.delete_partition(&c.partition).await),
        }
    }

    fn batches(&self) -> bool {
        true
    }

    /// The commands of one connection's clients as one REQUEST frame; only the statuses of
    /// the results are decoded.
    async fn execute_many(&self, commands: &[&Command]) -> Vec<Answer> {
        match self.client.execute_statuses(commands).await {
            Ok(statuses) => statuses
                .into_iter()
                .map(|status| match status {
                    Ok(()) => Answer::Ok,
                    Err(code) => Answer::Refused(code.as_str()),
                })
                .collect(),
            Err(error) => {
                let failed = match error {
                    ClientError::Timeout => Answer::TimedOut,
                    error => Answer::Failed(error.to_string()),
                };
                vec![failed; commands.len()]
            }
        }
    }

    async fn setup_batch(&self, commands: Vec<Command>) -> Result<(), BenchError> {
        let requests: Vec<Op> = commands.into_iter().map(Op::Command).collect();
        let results = self.client.execute(&requests).await.map_err(BookdError::Setup)?;
        for (request, result) in requests.iter().zip(results) {
            if let Err(source) = result {
                let command = format!("{request:?}");
                return Err(BookdError::SetupCommand { command, source }.into());
            }
        }
        Ok(())
    }

    async fn is_set_up(&self, last: &Command) -> bool {
        let Command::PutResource(put) = last else { return false };
        matches!(
            self.client.get_resource(&put.partition, &put.resource).await,
            Ok(resource) if resource.capacity == put.capacity
        )
    }
}

/// An embedded node on a temporary data directory, listening on loopback ports 0.
#[derive(Debug)]
pub struct EmbeddedNode {
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<Result<(), bookd_server::node::NodeError>>>,
    _dir: tempfile::TempDir,
}

impl EmbeddedNode {
    /// Opens and starts a node (durable, or relaxed with the log synced every second).
    pub async fn start(relaxed: bool) -> Result<EmbeddedNode, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
        let config = NodeConfig {
            data_dir: dir.path().join("data"),
            http_addr: "127.0.0.1:0".into(),
            listen_addr: "127.0.0.1:0".into(),
            sync_interval_ms: relaxed.then_some(RELAXED_SYNC_INTERVAL_MS),
            ..NodeConfig::default()
        };
        let node = tokio::task::spawn_blocking(move || Node::open(config))
            .await
            .map_err(BookdError::OpenTask)?
            .map_err(BookdError::Open)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, bound) = tokio::sync::oneshot::channel::<Bound>();
        let served = tokio::spawn(node.serve(
            async move {
                let _ = stopped.await;
            },
            move |bound| {
                let _ = ready.send(bound);
            },
        ));
        let bound = bound.await.map_err(|_| BookdError::NotStarted)?;
        Ok(EmbeddedNode { bound, stop: Some(stop), served: Some(served), _dir: dir })
    }

    /// Stops the node cleanly (in-flight commands finish, logs synced).
    pub async fn stop(mut self) -> Result<(), BookdError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.served.take() {
            Some(served) => match served.await {
                Ok(result) => result.map_err(BookdError::Serve),
                Err(error) => Err(BookdError::ServeTask(error)),
            },
            None => Ok(()),
        }
    }
}

/// The client's own call timeout past the bench's `--timeout`: the bench's timer decides
/// which commands went unanswered, the client's only frees calls it would otherwise keep.
const CALL_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// Connects a pool of `connections` to `addr` for the bench; a call without an answer
/// `timeout` after it was made is given up.
pub async fn connect(
    addr: &str,
    connections: usize,
    token: Option<String>,
    timeout: Duration,
) -> Result<BookdDriver, BookdError> {
    let config = ClientConfig {
        connections,
        token,
        client_name: "bookd-bench".into(),
        call_timeout: Some(timeout.saturating_add(CALL_TIMEOUT_SLACK)),
        ..ClientConfig::default()
    };
    let client = Client::connect(addr, config)
        .await
        .map_err(|source| BookdError::Connect { addr: addr.to_string(), source })?;
    Ok(BookdDriver::new(client))
}

/// `bookd bench`: against `--addr`, or an embedded node; prints the report (or the JSON object).
pub fn run(args: &BenchArgs) -> ExitCode {
    let tokio = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("bookd bench: cannot start the I/O runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = tokio.block_on(async {
        let (addr, node) = match &args.addr {
            Some(addr) => (addr.clone(), None),
            None => {
                let node = EmbeddedNode::start(args.relaxed).await?;
                if !args.json {
                    eprintln!(
                        "bookd: embedded node on {} ({}, temporary data directory)",
                        node.bound.binary,
                        if args.relaxed { "relaxed" } else { "durable" }
                    );
                }
                (node.bound.binary.to_string(), Some(node))
            }
        };
        let connections = args.connections as usize;
        let driver = connect(&addr, connections, args.token.clone(), args.timeout).await?;
        let out = load::bench(args, &driver).await;
        if !args.json {
            let stats = driver.client().stats();
            let frames = stats.frames_sent.load(Ordering::Relaxed);
            let commands = stats.commands_sent.load(Ordering::Relaxed);
            eprintln!(
                "bookd client: {:.1} commands per frame over the whole run",
                commands as f64 / frames.max(1) as f64
            );
        }
        drop(driver);
        if let Some(node) = node {
            node.stop().await?;
        }
        out
    });
    tokio.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bookd bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_failures_are_told_apart() {
        assert_eq!(answer::<()>(Ok(())), Answer::Ok);
        assert_eq!(answer::<()>(Err(ClientError::Timeout)), Answer::TimedOut);
        let unavailable = ClientError::Unavailable("stopping".into());
        assert!(matches!(answer::<()>(Err(unavailable)), Answer::Failed(_)));
    }
}

//! `bookd bench`: bookd's binary-protocol [`Client`] as a load-generator [`Driver`], and the
//! node the bench runs against when no `--addr` is given (a temporary data directory, durable
//! unless `--relaxed`, ports 0, stopped and deleted at the end): embedded in this process, or
//! with `--pin` a `bookd serve` process of its own ([`NodeProcess`]) on a CPU of its own.
//!
//! Invariants: every closed-loop client gets a handle pinned to one connection, so the clients
//! of a connection share its frames; nothing here decides an outcome, it only maps results; a
//! node process is reaped whatever happens (stopped at the end, killed when dropped).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::load::{self, Answer, BenchArgs, BenchError, Cores, Driver, Pinned};
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
    #[error("node process {what}: {source}")]
    Process { what: &'static str, source: std::io::Error },
    /// The node process ended before its ready line; `log` is the end of what it logged.
    #[error("node process exited before it was ready; its log: {log}")]
    ExitedEarly { log: String },
    #[error("node process printed no ready line within {} s; its log: {log}", NODE_READY_TIMEOUT.as_secs())]
    NotReady { log: String },
    #[error("node process did not stop within {} s of SIGTERM (killed)", NODE_STOP_TIMEOUT.as_secs())]
    StopTimeout,
    /// The node process did not stop cleanly; `log` is the end of what it logged.
    #[error("node process exited with {status}; its log: {log}")]
    Exited { status: ExitStatus, log: String },
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

/// How long a node process may take to print its ready line, and to stop after SIGTERM.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line read at once from a node process's stdout (its ready line is one of ~80 bytes).
const NODE_LINE_BYTES_MAX: u64 = 4_096;
/// The end of a node process's log quoted in an error.
const NODE_LOG_TAIL_BYTES: u64 = 2_048;

/// The node under test as a process of its own (`--pin` without `--addr`): `bookd serve` on a
/// temporary data directory, loopback ports 0, one shard, the embedded node's durability (the
/// `BOOKD_*` settings of this environment are not passed on, but `BOOKD_LOG`), its log in the
/// temporary directory. [`NodeProcess::stop`] stops it with SIGTERM; dropped, it is killed;
/// either way it is reaped before its directory is deleted.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// Its HTTP and binary-protocol addresses, from its ready line.
    pub http: String,
    pub binary: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Runs `program serve …` (a `bookd` binary), on CPU `cpu` only if given, and waits for
    /// its ready line.
    pub fn start(
        program: &Path,
        relaxed: bool,
        cpu: Option<usize>,
    ) -> Result<NodeProcess, BenchError> {
        let dir = tempfile::tempdir().map_err(BenchError::TempDir)?;
        let log = dir.path().join("node.log");
        let log_file = std::fs::File::create(&log)
            .map_err(|source| BookdError::Process { what: "log file", source })?;
        let mut command = std::process::Command::new(program);
        command.arg("serve").arg("--data-dir").arg(dir.path().join("data"));
        command.args(serve_flags(relaxed));
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("BOOKD_") && name_text != "BOOKD_LOG" {
                command.env_remove(&name);
            }
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file);
        if let Some(cpu) = cpu {
            load::pin_command(&mut command, cpu);
        }
        let mut child =
            command.spawn().map_err(|source| BookdError::Process { what: "spawn", source })?;
        let stdout = child.stdout.take();
        let mut node =
            NodeProcess { child, http: String::new(), binary: String::new(), log, _dir: dir };
        let Some(stdout) = stdout else {
            let source = std::io::Error::other("no stdout");
            return Err(BookdError::Process { what: "stdout", source }.into());
        };
        let (ready, readied) = std::sync::mpsc::channel();
        // Reads the ready line, then drains stdout until the process ends (so it never blocks
        // on a full pipe); ends with it.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.by_ref().take(NODE_LINE_BYTES_MAX).read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = ready.send(None);
                        return;
                    }
                    Ok(_) => {
                        if let Some(addresses) = parse_ready_line(&line) {
                            let _ = ready.send(Some(addresses));
                        }
                    }
                }
            }
        });
        match readied.recv_timeout(NODE_READY_TIMEOUT) {
            Ok(Some((http, binary))) => {
                node.http = http;
                node.binary = binary;
                Ok(node)
            }
            // Its stdout closed: it is exiting, its last words logged (reaped when dropped).
            Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(BookdError::ExitedEarly { log: node.log_tail() }.into())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(BookdError::NotReady { log: node.log_tail() }.into())
            }
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the node with SIGTERM (in-flight commands finish, logs synced) and reaps it; an
    /// exit status other than success is an error, with the end of its log.
    pub fn stop(mut self) -> Result<(), BookdError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return self.exited(status);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) takes no pointer; the pid is this process's unreaped child.
            let _ = unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + NODE_STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return self.exited(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => return Err(BookdError::StopTimeout),
                Err(source) => return Err(BookdError::Process { what: "wait", source }),
            }
        }
    }

    fn exited(&self, status: ExitStatus) -> Result<(), BookdError> {
        if status.success() {
            Ok(())
        } else {
            Err(BookdError::Exited { status, log: self.log_tail() })
        }
    }

    /// The end of the node's log, for an error.
    fn log_tail(&self) -> String {
        let mut tail = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let length = file.metadata().map_or(0, |metadata| metadata.len());
            let from = length.saturating_sub(NODE_LOG_TAIL_BYTES);
            if file.seek(SeekFrom::Start(from)).is_ok() {
                let _ = file.take(NODE_LOG_TAIL_BYTES).read_to_end(&mut tail);
            }
        }
        let tail = String::from_utf8_lossy(&tail).trim().to_string();
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }
}

impl Drop for NodeProcess {
    /// A node not stopped (an error, a panic) is killed and reaped before its directory goes.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The flags of `bookd serve` that make a node process what the embedded node is: loopback
/// ports 0, one shard (it has one CPU), durable, or relaxed with the log synced as often.
fn serve_flags(relaxed: bool) -> Vec<String> {
    let mut flags: Vec<String> =
        ["--http", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--shards", "1"]
            .into_iter()
            .map(String::from)
            .collect();
    if relaxed {
        flags.push("--sync-interval-ms".into());
        flags.push(RELAXED_SYNC_INTERVAL_MS.to_string());
    }
    flags
}

/// The addresses of `bookd ready http=ADDR binary=ADDR …` (fields in any order, more allowed).
fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let fields = line.trim().strip_prefix("bookd ready ")?;
    let (mut http, mut binary) = (None, None);
    for field in fields.split_ascii_whitespace() {
        match field.split_once('=') {
            Some(("http", addr)) if !addr.is_empty() => http = Some(addr.to_string()),
            Some(("binary", addr)) if !addr.is_empty() => binary = Some(addr.to_string()),
            _ => {}
        }
    }
    Some((http?, binary?))
}

/// `--pin`'s layout for `args`, or why it cannot be: the CPUs (the first two this process may
/// use), and whether `--node-pid` goes with `--addr`. `None` without `--pin`.
fn pin_layout(args: &BenchArgs, allowed: &[usize]) -> Result<Option<Cores>, BenchError> {
    match (args.pin, args.addr.is_some(), args.node_pid.is_some()) {
        (false, _, true) => return Err(BenchError::NodePidWithoutPin),
        (false, _, false) => return Ok(None),
        (true, true, false) => return Err(BenchError::PinWithoutNodePid),
        (true, false, true) => return Err(BenchError::NodePidWithoutAddr),
        (true, _, _) => {}
    }
    Ok(Some(load::cores(allowed)?))
}

/// The client's own call timeout past the bench's `--timeout`: the bench's timer decides
/// which commands went unanswered, the client's only frees calls it would otherwise keep.
const CALL_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

/// Connects a pool of `connections` to `addr` for the bench (bound to the node's shards when
/// `shard_aware`); a call without an answer `timeout` after it was made is given up.
pub async fn connect(
    addr: &str,
    connections: usize,
    token: Option<String>,
    timeout: Duration,
    shard_aware: bool,
) -> Result<BookdDriver, BookdError> {
    let config = ClientConfig {
        connections,
        token,
        client_name: "bookd-bench".into(),
        call_timeout: Some(timeout.saturating_add(CALL_TIMEOUT_SLACK)),
        shard_aware,
        ..ClientConfig::default()
    };
    let client = Client::connect(addr, config)
        .await
        .map_err(|source| BookdError::Connect { addr: addr.to_string(), source })?;
    Ok(BookdDriver::new(client))
}

/// `bookd bench`: against `--addr`, or an embedded node (a node process with `--pin`); prints
/// the report (or the JSON object).
pub fn run(args: &BenchArgs) -> ExitCode {
    match bench(args) {
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

/// Lays `--pin` out (the node process started on its CPU, this process pinned to the other,
/// both before the runtime starts its threads), runs the bench, stops the node.
fn bench(args: &BenchArgs) -> Result<String, BenchError> {
    let cores = if args.pin || args.node_pid.is_some() {
        pin_layout(args, &load::allowed_cpus()?)?
    } else {
        None
    };
    let mut process = None;
    let mut pinned = None;
    if let Some(cores) = cores {
        // `pin_layout` took `--node-pid` only with `--addr`, and `--addr` only with it.
        let node_pid = match args.node_pid {
            Some(pid) => {
                load::tree_cpu(pid)?;
                pid
            }
            None => {
                let program = std::env::current_exe().map_err(BenchError::CurrentExe)?;
                let node = NodeProcess::start(&program, args.relaxed, Some(cores.node))?;
                let pid = node.pid();
                if !args.json {
                    eprintln!(
                        "bookd: node process {pid} on {}, CPU {} ({}, temporary data directory, 1 shard)",
                        node.binary,
                        cores.node,
                        if args.relaxed { "relaxed" } else { "durable" }
                    );
                }
                process = Some(node);
                pid
            }
        };
        load::pin_this_process(cores.load)?;
        if !args.json {
            eprintln!("bookd bench: load generator on CPU {}", cores.load);
        }
        pinned = Some(Pinned { cores, node_pid });
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let addr = process.as_ref().map(|node| node.binary.clone());
    let result = tokio.block_on(run_against(args, addr, pinned));
    tokio.shutdown_timeout(Duration::from_secs(5));
    let out = result?;
    if let Some(node) = process {
        node.stop()?;
    }
    Ok(out)
}

/// Runs the bench against `addr` (a node process), `--addr`, or an embedded node started here.
async fn run_against(
    args: &BenchArgs,
    addr: Option<String>,
    pinned: Option<Pinned>,
) -> Result<String, BenchError> {
    let (addr, node) = match addr.or_else(|| args.addr.clone()) {
        Some(addr) => (addr, None),
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
    let shard_aware = !args.plain_connections;
    let driver = connect(&addr, connections, args.token.clone(), args.timeout, shard_aware).await?;
    let out = load::bench(args, &driver, pinned).await;
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

    #[test]
    fn ready_lines_give_both_addresses() {
        let line = "bookd ready http=127.0.0.1:41000 binary=127.0.0.1:41001\n";
        let expected = Some(("127.0.0.1:41000".to_string(), "127.0.0.1:41001".to_string()));
        assert_eq!(parse_ready_line(line), expected);
        let more = "bookd ready binary=127.0.0.1:41001 role=primary http=127.0.0.1:41000";
        assert_eq!(parse_ready_line(more), expected);
        for not_ready in [
            "",
            "bookd ready",
            "bookd ready http=1.2.3.4:5",
            "bookd ready http= binary=x:1",
            "INFO bookd ready http=a:1 binary=b:2",
        ] {
            assert_eq!(parse_ready_line(not_ready), None, "{not_ready:?}");
        }
    }

    #[test]
    fn a_node_process_is_configured_as_the_embedded_node() {
        let durable = serve_flags(false);
        assert_eq!(durable, ["--http", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--shards", "1"]);
        let relaxed = serve_flags(true);
        assert_eq!(relaxed[durable.len()..], ["--sync-interval-ms", "1000"]);
        assert_eq!(RELAXED_SYNC_INTERVAL_MS, 1_000);
    }

    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn args(flags: &[&str]) -> BenchArgs {
        let line = ["bench", "--workload", "flash-sale"].iter().chain(flags);
        Cli::try_parse_from(line).unwrap().bench
    }

    #[test]
    fn pin_is_laid_out_or_refused_with_why() {
        let two = [0, 1];
        assert_eq!(pin_layout(&args(&[]), &two).unwrap(), None);
        let pinned = pin_layout(&args(&["--pin"]), &[3, 4, 5]).unwrap();
        assert_eq!(pinned, Some(Cores { node: 3, load: 4 }));
        let at_addr = args(&["--pin", "--addr", "127.0.0.1:7070", "--node-pid", "42"]);
        assert_eq!(pin_layout(&at_addr, &two).unwrap(), Some(Cores { node: 0, load: 1 }));
        let refused = |flags: &[&str], allowed: &[usize]| {
            pin_layout(&args(flags), allowed).unwrap_err().to_string()
        };
        assert!(refused(&["--pin"], &[0]).contains("--pin needs 2 CPUs"));
        assert!(refused(&["--pin", "--addr", "127.0.0.1:7070"], &two).contains("--node-pid PID"));
        assert!(refused(&["--node-pid", "42"], &two).contains("only for --pin"));
        assert!(refused(&["--pin", "--node-pid", "42"], &two).contains("only for a node at --addr"));
        assert!(Cli::try_parse_from(["bench", "--workload", "hotel", "--node-pid", "0"]).is_err());
    }

    /// The node process's own failures come back as errors with its log, not as hangs or
    /// panics: a program that exits at once, and one that never says it is ready.
    #[test]
    fn a_node_process_that_never_gets_ready_is_an_error() {
        let exited = NodeProcess::start(Path::new("/bin/false"), false, None).unwrap_err();
        assert!(exited.to_string().contains("exited before it was ready"), "{exited}");
        let missing = NodeProcess::start(Path::new("/nonexistent/bookd"), false, None).unwrap_err();
        assert!(missing.to_string().contains("node process spawn"), "{missing}");
    }
}
